"""The recurrent products of the time loops, in two paths: BLAS, and register-blocked loops.

Every step of every cell multiplies the few batch rows a thread owns by a weight matrix:
``h @ W_hhᵀ`` forward, ``da @ W_hh`` backward; both are ``a @ mᵀ`` here, with backward
passing m = W_hhᵀ copied once per call. For few rows BLAS is slow (its call overhead, and
kernels tuned for large matrices): on this project's 2-core AMD EPYC, single-threaded,
per step (GFLOP/s)

    rows × G·H × H    1×256×64  8×512×128  16×1024×256  8×4096×1024  32×2048×512
    blocked loops        25         42          39           55           49
    BLAS (OpenBLAS)      21         18          29           16           52

so the loops take over below 32 rows (jit.cpu.backend.use_small_path). They keep four rows'
running sums in registers while one row of m streams past, so each weight is loaded once per
four rows, and they read m in its stored order, row by row, keeping it hot in cache.

Each function writes into ``out`` and allocates nothing: they run once per time step.
twin: reference.affine.affine / affine_backward (the x Wᵀ and da W terms, without bias).
"""
import numpy as np
from numba import njit

from jit.gatemath import typed_like


# fastmath: only reassociation (and FMA contraction), so that LLVM may vectorise the sums
# over k; that is another summation order, fixed at compile time, so results stay
# deterministic. properties/test_jit_cpu.py::test_small_path_and_blas_path_agree bounds the
# difference from BLAS's order.
@njit(cache=True, fastmath={"reassoc", "contract"}, error_model="numpy")
def blocked_times_transposed(a, m, out):
    """out (nb, N) = a (nb, K) @ m.T, m (N, K): four rows of a at a time, then the rest."""
    nb, K = a.shape
    N = m.shape[0]
    zero = typed_like(out[0, 0], 0.0)
    b = 0
    while b + 4 <= nb:
        for n in range(N):
            s0, s1, s2, s3 = zero, zero, zero, zero
            for k in range(K):
                w = m[n, k]
                s0 += a[b, k] * w
                s1 += a[b + 1, k] * w
                s2 += a[b + 2, k] * w
                s3 += a[b + 3, k] * w
            out[b, n] = s0
            out[b + 1, n] = s1
            out[b + 2, n] = s2
            out[b + 3, n] = s3
        b += 4
    while b < nb:
        for n in range(N):
            s = zero
            for k in range(K):
                s += a[b, k] * m[n, k]
            out[b, n] = s
        b += 1


@njit(cache=True, error_model="numpy")
def times_transposed(a, m, small, out):
    """out (nb, N) = a (nb, K) @ m.T for m (N, K): blocked loops if ``small``, else BLAS."""
    if small:
        blocked_times_transposed(a, m, out)
    else:
        np.dot(a, m.T, out)
