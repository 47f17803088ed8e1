"""jit.cuda: the numba.cuda backend of every cell; ``jit.cuda.backend`` follows the contract. Under the
CUDA simulator (set by the repo-root conftest.py without an NVIDIA driver) it runs for tests, never timings.
"""
from . import backend

__all__ = ["backend"]
