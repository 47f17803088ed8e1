"""jit.cuda: the numba.cuda backend of every cell (issue 5); ``jit.cuda.backend`` follows the contract.

Under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1, set by the repo-root conftest.py when no
NVIDIA driver is present) the same kernels run on the CPU, slowly: for tests, never timings.
"""
from . import backend

__all__ = ["backend"]
