"""jit.cpu: the Numba CPU backend. ``jit.cpu.backend`` follows the contract (see README).

The cache folder is settled first, because the kernel modules compile with cache=True.
"""
from .cache import ensure_writable_cache_dir, key_kernels_on_host_tag

CACHE_DIR = ensure_writable_cache_dir()
key_kernels_on_host_tag()

from . import backend  # noqa: E402  (after the cache folder is chosen)

__all__ = ["backend", "CACHE_DIR"]
