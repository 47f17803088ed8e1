"""The arrays jit.cpu's kernels are compiled for, and the few copies and checks around them."""
import numpy as np
from numba import literal_unroll, njit

from reference.contract import DTYPES, numpy_all_finite

from .workspace import scratch


def kernel_array(a: np.ndarray) -> np.ndarray:
    """C-contiguous and writable (copied only if needed), so each dtype compiles one variant:
    Numba types read-only and strided arrays apart, and the kernels never write these."""
    if a.flags.c_contiguous and a.flags.writeable:
        return a
    return np.array(a, order="C", copy=True)


def transposed_kernel_array(a: np.ndarray) -> bool:
    """Whether ``a`` is the transpose of a kernel_array (F-contiguous, writable): the one other
    layout jit.cpu.products.matmul is compiled for (gemms.matmul_rows' daᵀ)."""
    return a.ndim == 2 and a.flags.f_contiguous and not a.flags.c_contiguous and a.flags.writeable


@njit(cache=True, nogil=True, error_model="numpy")
def _all_finite_values(flat):
    """No NaN or ±inf in the 1-D array ``flat``: v − v is 0 exactly when v is finite. One pass,
    no temporary; the or-reduction vectorises (2–4× faster than np.isfinite(a).all())."""
    bad = False
    for i in range(flat.size):
        v = flat[i]
        bad |= not (v - v == 0)
    return not bad


@njit(cache=True, nogil=True, error_model="numpy")
def _all_finite_flats(flats):
    """_all_finite_values over each 1-D array of the tuple ``flats``, in one call."""
    bad = False
    for flat in literal_unroll(flats):  # a tuple of mixed types (a read-only array) compiles its own loop
        for i in range(flat.size):
            v = flat[i]
            bad |= not (v - v == 0)
    return not bad


def all_finite_together(arrays) -> bool:
    """No NaN or inf in any of ``arrays`` (each of one float dtype, as reference.contract passes them):
    one compiled call for a call's arrays, 2–3 µs against 0.7 µs per array (lstm S1, Zen 4)."""
    flats = tuple([a.ravel() for a in arrays if type(a) is np.ndarray])
    if len(flats) < len(arrays) or not flats:  # a subclass or another array type: one by one
        return all(all_finite(a) for a in arrays)
    return _all_finite_flats(flats)


_COMPILED_DTYPES = frozenset(dtype.char for dtype in DTYPES)


def all_finite(a) -> bool:
    """The finiteness check of reference.contract's validation, for jit.cpu's calls. Per array
    of a call (7 in a forward, 13 in a backward), so its Python is kept short: a dtype's char
    against a set, not the dtype against DTYPES (0.3 of 0.6 µs)."""
    if type(a) is np.ndarray and a.dtype.char in _COMPILED_DTYPES and a.flags.c_contiguous:
        return _all_finite_values(a.ravel())
    return numpy_all_finite(a)


@njit(cache=True, nogil=True, error_model="numpy")
def copy_values(dest, source):
    """dest[:] = source for flat arrays, as a compiled loop rather than NumPy's copy: glibc's
    memmove runs 12× slower when the destination lies 16 bytes past the source modulo 4 KiB,
    which is where h_prev[1:] fell against hs[:-1] at S2 (120 µs of an S2 backward)."""
    for i in range(source.size):
        dest[i] = source[i]


def previous_hidden(hs, h0):
    """h_{t-1} for every t, (T, B, H): h0 then hs[:-1], in a scratch array (jit.cpu.workspace).
    hs is C-contiguous (kernel_array)."""
    h_prev = scratch("h_prev", hs.shape, hs.dtype)
    if hs.shape[0]:
        h_prev[0] = h0
        copy_values(h_prev[1:].reshape(-1), hs[:-1].reshape(-1))
    return h_prev
