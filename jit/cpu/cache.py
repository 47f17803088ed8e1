"""Where Numba keeps jit.cpu's compiled kernels: beside the sources, or a writable fallback.

Kernels are compiled with cache=True, so a second process loads machine code from disk
instead of compiling again. Numba writes that cache into ``__pycache__`` beside the
sources; when the package folder is read-only (a system-wide install, a container image)
that fails, so before any kernel is defined we point NUMBA_CACHE_DIR at a writable folder.
This must run before the kernel modules are imported: Numba picks each function's cache
location when @njit(cache=True) decorates it.

The kernels' machine code also depends on jit.cpu.host's vector width and register tile
(module constants, which Numba's cache key does not see): jit.cpu's functions get a cache
locator whose file names carry host.CACHE_TAG, so each width has its own files, side by
side, and a forced width never loads another's code.
"""
import glob
import hashlib
import os
import tempfile

import numba
from numba.core import caching

from .host import CACHE_TAG

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

#: Files whose functions the kernels inline (or whose options they compile with). Numba checks only the stamp of the file that
#: defines a cached kernel, so an edit here would otherwise leave stale machine code in use.
SHARED_SOURCES = (os.path.join(PACKAGE_DIR, "..", "gatemath.py"), os.path.join(PACKAGE_DIR, "products.py"),
                  os.path.join(PACKAGE_DIR, "sync.py"), os.path.join(PACKAGE_DIR, "kernel_options.py"),
                  os.path.join(PACKAGE_DIR, "host.py"), os.path.join(PACKAGE_DIR, "steps.py"))
STAMP_FILE = "cellbench-shared-sources.sha256"


def shared_sources_stamp(paths=SHARED_SOURCES) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def drop_stale_kernels(cache_dir: str, stamp: str) -> bool:
    """Delete the compiled kernels in ``cache_dir`` if they were built from other shared sources.

    Returns True when it deleted them. Only Numba's index and data files (*.nbi, *.nbc) go.
    """
    stamp_path = os.path.join(cache_dir, STAMP_FILE)
    try:
        with open(stamp_path) as f:
            if f.read().strip() == stamp:
                return False
    except OSError:
        pass
    for pattern in ("*.nbi", "*.nbc"):
        for path in glob.glob(os.path.join(cache_dir, "**", pattern), recursive=True):
            os.remove(path)
    with open(stamp_path, "w") as f:
        f.write(stamp + "\n")
    return True


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
    this one, whose config was read when numba was imported). In the folders cellbench
    chooses, kernels built from other shared sources (SHARED_SOURCES) are dropped first; a
    folder the user chose is left as it is (it may hold other projects' kernels).
    """
    if numba.config.CACHE_DIR:
        return numba.config.CACHE_DIR
    in_tree = os.path.join(PACKAGE_DIR, "__pycache__")
    if is_writable_dir(in_tree):
        drop_stale_kernels(in_tree, shared_sources_stamp())
        return in_tree
    chosen = fallback_cache_dir()
    os.makedirs(chosen, exist_ok=True)
    drop_stale_kernels(chosen, shared_sources_stamp())
    os.environ["NUMBA_CACHE_DIR"] = chosen
    numba.config.CACHE_DIR = chosen
    return chosen


def is_kernel_source(path: str) -> bool:
    """Whether ``path`` is one of jit.cpu's own modules (whose cached code depends on CACHE_TAG)."""
    return os.path.dirname(os.path.abspath(path)) == PACKAGE_DIR


class _KeyedOnTheHostTag:
    """A Numba cache locator for jit.cpu's modules only, whose files' names end in CACHE_TAG."""

    def get_disambiguator(self):
        return f"{super().get_disambiguator()}-{CACHE_TAG}"

    @classmethod
    def from_function(cls, py_func, py_file):
        return super().from_function(py_func, py_file) if is_kernel_source(py_file) else None


# Recent Numba releases name these without a leading underscore; older ones (>= 0.60) with one
_CacheImpl = getattr(caching, "CacheImpl", None) or caching._CacheImpl
_UserProvidedCacheLocator = getattr(caching, "UserProvidedCacheLocator", None) or caching._UserProvidedCacheLocator
_InTreeCacheLocator = getattr(caching, "InTreeCacheLocator", None) or caching._InTreeCacheLocator


class UserDirLocator(_KeyedOnTheHostTag, _UserProvidedCacheLocator):
    """NUMBA_CACHE_DIR (the user's, or the fallback ensure_writable_cache_dir chose)."""


class InTreeLocator(_KeyedOnTheHostTag, _InTreeCacheLocator):
    """__pycache__ beside the sources."""


def key_kernels_on_host_tag() -> None:
    """Put the two locators first in Numba's list, once (Numba asks each in turn, per function)."""
    locators = _CacheImpl._locator_classes
    if UserDirLocator not in locators:
        locators[:0] = [UserDirLocator, InTreeLocator]
