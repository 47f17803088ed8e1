"""Where Numba keeps jit.cpu's compiled kernels: beside the sources, or a writable fallback.

Kernels are compiled with cache=True, so a second process loads machine code from disk
instead of compiling again. Numba writes that cache into ``__pycache__`` beside the
sources; when the package folder is read-only (a system-wide install, a container image)
that fails, so before any kernel is defined we point NUMBA_CACHE_DIR at a writable folder.
This must run before the kernel modules are imported: Numba picks each function's cache
location when @njit(cache=True) decorates it.
"""
import os
import tempfile

import numba

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def is_writable_dir(path: str) -> bool:
    """True when a file can really be created in ``path`` (creating it if missing).

    os.access is not enough: it says yes to root on a read-only mount.
    """
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
        return True
    except OSError:
        return False


def fallback_cache_dir() -> str:
    """$XDG_CACHE_HOME/cellbench/numba (default ~/.cache), else a per-user folder in the temp dir."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    preferred = os.path.join(base, "cellbench", "numba")
    if is_writable_dir(preferred):
        return preferred
    user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    return os.path.join(tempfile.gettempdir(), f"cellbench-numba-{user}")


def ensure_writable_cache_dir() -> str:
    """Choose the cache folder for jit.cpu's kernels and return it.

    An explicit NUMBA_CACHE_DIR wins; else the in-tree __pycache__ if writable; else the
    fallback, set both in the environment (for child processes) and in numba.config (for
    this one, whose config was read when numba was imported).
    """
    if numba.config.CACHE_DIR:
        return numba.config.CACHE_DIR
    in_tree = os.path.join(PACKAGE_DIR, "__pycache__")
    if is_writable_dir(in_tree):
        return in_tree
    chosen = fallback_cache_dir()
    os.makedirs(chosen, exist_ok=True)
    os.environ["NUMBA_CACHE_DIR"] = chosen
    numba.config.CACHE_DIR = chosen
    return chosen
