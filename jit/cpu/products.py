"""The recurrent products of the time loops, in two paths: BLAS, and fused loops for small sizes.

Every step of every cell needs ``h @ W_hhᵀ`` (forward) or ``da @ W_hh`` (backward) on the
few batch rows a thread owns. BLAS does this fastest once the product is large; for small
B·H its call overhead dominates, so the small path is plain loops whose innermost loop runs
along contiguous memory (an axpy, which LLVM vectorises without reassociating any sum),
keeping the weights hot in cache between steps.

Each function writes into ``out`` and allocates nothing: they run once per time step.
twin: reference.affine.affine / affine_backward (the x Wᵀ and da W terms, without bias).
"""
import numpy as np
from numba import njit


@njit(cache=True)
def hidden_times_weights(h, w, w_t, small, out):
    """out (nb, G·H) = h (nb, H) @ w.T, w (G·H, H); w_t = w.T copied C-contiguous (small path only)."""
    if small:
        out[:] = 0
        for k in range(h.shape[1]):
            for b in range(h.shape[0]):
                hk = h[b, k]
                for j in range(out.shape[1]):
                    out[b, j] += hk * w_t[k, j]
    else:
        np.dot(h, w.T, out)


@njit(cache=True)
def gate_grads_times_weights(da, w, small, out):
    """out (nb, H) = da (nb, G·H) @ w, w (G·H, H)."""
    if small:
        out[:] = 0
        for j in range(da.shape[1]):
            for b in range(da.shape[0]):
                d = da[b, j]
                for k in range(out.shape[1]):
                    out[b, k] += d * w[j, k]
    else:
        np.dot(da, w, out)


@njit(cache=True)
def transposed_copy(w, small):
    """w.T as a C-contiguous array for the small path's axpy loops; an empty stand-in otherwise."""
    if small:
        return np.ascontiguousarray(w.T)
    return np.empty((0, 0), w.dtype)
