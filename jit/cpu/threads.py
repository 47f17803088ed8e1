"""How many threads a jit.cpu call uses, and BLAS held to one thread while it runs.

One pool of Numba's thread count (the caller plus jit.cpu.pool's workers) does a call's
parallel work. A call below PARALLEL_MIN_MACS runs on the caller alone and makes no BLAS
call (its GEMMs are jit.cpu.products.matmul). A larger backward call holds every loaded
BLAS to one thread per caller: OpenBLAS's idle workers spin for ~0.1 s after a threaded
GEMM and took the cores from the time loops and from the caller's next call (numbers:
docs/jit-cpu.md). Forward makes no BLAS call at all.
"""
import threading
from contextlib import contextmanager

import numba
import numba.np.arraymath  # noqa: F401  (see _blas)
import numba.np.ufunc.parallel as numba_parallel
from threadpoolctl import ThreadpoolController

_blas_libraries = None


def _blas():
    """Every BLAS loaded when first asked (numpy's, and SciPy's copy that importing
    numba.np.arraymath loads where SciPy is installed: imported above, so it is in the list)."""
    global _blas_libraries
    if _blas_libraries is None:  # inspecting the loaded libraries is slow: once
        _blas_libraries = ThreadpoolController().select(user_api="blas").lib_controllers
    return _blas_libraries


_blas_hold = threading.Lock()
_blas_holders = 0  # calls inside blas_on_one_thread now, from any thread
_blas_saved = []  # each library's thread count from before the first of them entered


def _set_blas_threads(library, n: int) -> None:
    """library.set_num_threads(n), from whichever thread calls it.

    threadpoolctl lets only the first thread that ever set a pthreads OpenBLAS's count
    change it and silently ignores the others; the shared hold's first and last holders can
    be different threads, so the control is released around each change.
    """
    release = getattr(library, "clear_controlling_thread", None)  # OpenBLAS's controller only
    if release is not None:
        release(force=True)
    library.set_num_threads(n)
    if release is not None:
        release(force=True)


@contextmanager
def blas_on_one_thread():
    """Hold every loaded BLAS to one thread per caller inside the block.

    The setting is one per process, so concurrent calls share one hold: the first in saves
    each library's count and sets 1, the last out restores it
    (test_concurrent_calls_share_one_blas_hold).
    """
    global _blas_holders, _blas_saved
    libraries = _blas()
    with _blas_hold:
        if _blas_holders == 0:
            _blas_saved = [library.num_threads for library in libraries]
            for library in libraries:
                _set_blas_threads(library, 1)
        _blas_holders += 1
    try:
        yield
    finally:
        with _blas_hold:
            _blas_holders -= 1
            if _blas_holders == 0:
                for library, n_before in zip(libraries, _blas_saved):
                    _set_blas_threads(library, n_before)


def pool_threads() -> int:
    """Numba's thread count (NUMBA_NUM_THREADS, set_num_threads), read without launching
    Numba's threading layer: its omp layer, launched before torch's import, made every later
    torch call 8–10× slower. Until the layer is launched, set_num_threads was never called."""
    launched = getattr(numba_parallel, "_is_initialized", True)  # a private flag: if it goes, ask Numba
    return max(1, numba.get_num_threads() if launched else numba.config.NUMBA_NUM_THREADS)


#: Work below this many multiply-adds stays on the calling thread: a handoff to the pool
#: costs 13–30 µs while its workers spin (jit.cpu.pool), the time of ~2M multiply-adds.
PARALLEL_MIN_MACS = 1 << 21


def small_call(macs: int) -> bool:
    """Whether a call of ``macs`` multiply-adds runs on the caller alone, with no BLAS call
    (and so no BLAS thread setting to hold: 20–60 µs saved)."""
    return macs < PARALLEL_MIN_MACS


def threads_for(macs: int) -> int:
    """The threads worth using for a call of ``macs`` multiply-adds: the pool's, or the caller."""
    return 1 if small_call(macs) else pool_threads()


class call_threads:
    """``with call_threads(macs, largest_gemm_macs) as n_threads``: threads_for(macs), with BLAS
    held to one thread inside the block when the call's largest GEMM (``largest_gemm_macs``)
    reaches BLAS; a call whose GEMMs all stay under PARALLEL_MIN_MACS has nothing to hold (an
    S1 lstm backward: 3.3M in all, 0.8M at most). A class, not a generator: entered on every
    backward call, where a contextlib generator's 1.2 µs showed at S1."""

    def __init__(self, macs: int, largest_gemm_macs: int):
        self.n_threads = threads_for(macs)
        self.hold = None if small_call(largest_gemm_macs) else blas_on_one_thread()

    def __enter__(self) -> int:
        if self.hold is not None:
            self.hold.__enter__()
        return self.n_threads

    def __exit__(self, *exc_info):
        if self.hold is not None:
            return self.hold.__exit__(*exc_info)
        return None
