"""Backward's GEMMs after the time loop: dx, dW_ih, dW_hh and the biases' gradients from the
stored ∂L/∂(pre-activations). twin: reference.affine.affine_backward, summed over t."""
import numpy as np

from .arrays import kernel_array, transposed_kernel_array
from .pool import run_in_parallel
from .products import matmul
from .threads import small_call
from .tiling import split


def matmul_rows(a, b, n_threads: int):
    """a @ b into a new array, the result's rows shared among n_threads threads (BLAS on one each).

    Each element is one BLAS product over the whole inner dimension and the split depends only
    on the shapes and the thread count, so repeat calls give the same bits. A small product
    (threads.small_call) runs on the caller with jit.cpu.products.matmul, so a small call makes
    no BLAS call; there ``a`` may be a transposed C array (daᵀ), read in place, not copied.
    """
    if small_call(a.shape[0] * a.shape[1] * b.shape[1]):
        return matmul(a if transposed_kernel_array(a) else kernel_array(a), kernel_array(b))
    out = np.empty((a.shape[0], b.shape[1]), np.result_type(a, b))
    parts = max(1, min(n_threads, a.shape[0]))
    run_in_parallel([(np.matmul, (a[r0:r1], b, out[r0:r1])) for r0, r1 in split(a.shape[0], parts)])
    return out


def weight_grad(da, inputs, n_threads):
    """daᵀ inputs, a weight's gradient summed over steps and rows: da (T, B, G·H), inputs (T, B, K)."""
    T, B, GH = da.shape
    return matmul_rows(da.reshape(T * B, GH).T, inputs.reshape(T * B, inputs.shape[2]), n_threads)


def bias_grad(da):
    """Σ da over steps and rows."""
    return da.reshape(-1, da.shape[2]).sum(axis=0)
