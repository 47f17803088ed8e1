"""Backward's GEMMs after the time loop: dx, dW_ih, dW_hh and the biases' gradients from the
stored ∂L/∂(pre-activations). twin: reference.affine.affine_backward, summed over t."""
import numpy as np
from numba import njit

from .arrays import kernel_array, transposed_kernel_array
from .host import L2_BYTES
from .pool import run_in_parallel
from .products import PANEL_GROUP, matmul, matmul_into
from .threads import small_call
from .tiling import split


#: The bytes of a panel row at 64-byte vectors (two vectors), whatever the host's width: the
#: choice between the panel kernel and BLAS must not depend on the width, whose two code paths
#: give the same bits (test_the_property_suite_passes_at_the_other_vector_width).
PANEL_ROW_BYTES = 128


def panel_kernel_wins(K: int) -> bool:
    """Whether a large GEMM with inner dimension K runs on the panel kernel: where a group of
    PANEL_GROUP panels of K rows, at 64-byte vectors, fits one core's L2 (the panel kernel packs
    no block of K; past that, a BLAS that blocks K wins). Zen 4, two threads, backward's dx:
    0.91–0.96× one thread of OpenBLAS per row block at S2, M and L1 with 64-byte vectors; held
    to 32-byte vectors, against OpenBLAS's Haswell kernels, level (0.98–1.07×)."""
    return PANEL_GROUP * K * PANEL_ROW_BYTES <= L2_BYTES


@njit(cache=True, nogil=True, error_model="numpy")
def matmul_row_range(a, b, r0, r1, out):
    """out[r0:r1] = a[r0:r1] @ b: one thread's rows of matmul_rows."""
    matmul_into(a[r0:r1], b, out[r0:r1])


def matmul_rows(a, b, n_threads: int):
    """a @ b into a new array, the result's rows shared among n_threads threads.

    Each element is one dot product over the whole inner dimension and the split depends only
    on the shapes and the thread count, so repeat calls give the same bits. A small product
    (threads.small_call) runs on the caller, where ``a`` may be a transposed C array (daᵀ),
    read in place, not copied. Otherwise each thread takes some rows: with the panel kernel
    (jit.cpu.products.matmul_into, b packed by each thread) where ``a`` is C-contiguous and
    panel_kernel_wins, its bits independent of the split; else with BLAS on one thread. (daᵀ goes
    to BLAS: read in place, its rows a page apart, the panel kernel was 7% slower at L1 and level
    at M on two threads; docs/perf-log.md.)
    """
    if small_call(a.shape[0] * a.shape[1] * b.shape[1]):
        return matmul(a if transposed_kernel_array(a) else kernel_array(a), kernel_array(b))
    out = np.empty((a.shape[0], b.shape[1]), np.result_type(a, b))
    rows = split(a.shape[0], max(1, min(n_threads, a.shape[0])))
    if a.flags.c_contiguous and a.flags.writeable and panel_kernel_wins(a.shape[1]):
        b = kernel_array(b)
        run_in_parallel([(matmul_row_range, (a, b, r0, r1, out)) for r0, r1 in rows])
    else:
        run_in_parallel([(np.matmul, (a[r0:r1], b, out[r0:r1])) for r0, r1 in rows])
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def gradients_on_the_caller(da, da_h, same, x, w_ih, h_prev):
    """(dx, dW_ih, dW_hh, db_ih, db_hh) of a call whose GEMMs all stay on the caller
    (threads.small_call), in one compiled call: the products and sums that matmul_rows, weight_grad
    and bias_grad make, in the same order, so the same bits; their Python took 6.4 of 53.6 µs at
    lstm S1 (Zen 4). da_h: what W_hh's gradient multiplies (da itself when ``same``); x, w_ih and
    h_prev C-contiguous."""
    T, B, GH = da.shape
    rows = T * B
    a = da.reshape(rows, GH)
    a_h = da_h.reshape(rows, GH)
    dx = matmul(a, w_ih).reshape(T, B, w_ih.shape[1])
    dw_ih = matmul(a.T, x.reshape(rows, x.shape[2]))
    dw_hh = matmul(a_h.T, h_prev.reshape(rows, h_prev.shape[2]))
    db_ih = _column_sums(a)
    db_hh = db_ih.copy() if same else _column_sums(a_h)
    return dx, dw_ih, dw_hh, db_ih, db_hh


def weight_grad(da, inputs, n_threads):
    """daᵀ inputs, a weight's gradient summed over steps and rows: da (T, B, G·H), inputs (T, B, K)."""
    T, B, GH = da.shape
    return matmul_rows(da.reshape(T * B, GH).T, inputs.reshape(T * B, inputs.shape[2]), n_threads)


def bias_grad(da):
    """Σ da over steps and rows (sizes spelled out: with H = 0, reshape(-1, 0) is ambiguous)."""
    T, B, GH = da.shape
    return _column_sums(da.reshape(T * B, GH))


@njit(cache=True, nogil=True, error_model="numpy")
def _column_sums(a):
    """a.sum(axis=0) of a C-contiguous (M, N) array, rows added in order as NumPy adds them, as one
    compiled loop: NumPy's reduction took 3.0 µs of an S1 lstm backward (50 × 256), this 1.6 µs (lstm M:
    161 against 89 µs; Zen 4). Same bits."""
    out = np.zeros(a.shape[1], a.dtype)
    for r in range(a.shape[0]):
        row = a[r]
        for c in range(a.shape[1]):
            out[c] += row[c]
    return out
