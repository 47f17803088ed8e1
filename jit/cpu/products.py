"""The recurrent products of the time loops, in two paths: BLAS, and register-blocked loops.

Every step of every cell multiplies the batch rows of a thread's tile by that tile's part
of a weight matrix: ``h @ W_hhᵀ`` forward, ``da @ W_hh`` backward; both are ``a @ mᵀ`` here,
with backward passing m = the tile's columns of W_hh, transposed once per call
(transposed_columns). For few rows BLAS is slow (its call overhead, and
kernels tuned for large matrices): on this project's 2-core AMD EPYC, single-threaded,
per step (GFLOP/s, best of 3, 2026-11-27; the machine's one-core GEMM peak is about 85)

    rows × G·H × H    1×256×64  8×512×128  16×1024×256  8×4096×1024  32×2048×512
    blocked loops        28         58          50           25           70
    BLAS (OpenBLAS)      16         40          51           21           70

so the loops take over below 32 rows (jit.cpu.backend.use_small_path). A tile of four rows
of a and two rows of m keeps eight running sums in registers (vectorised along k), so each
weight is loaded once per four rows and each input once per two columns; m is read in its
stored order, row by row, keeping it hot in cache. At 8×4096×1024 m is 16 MiB, larger than
the caches, and both paths wait on memory.

The product functions write into ``out`` and allocate nothing: they run once per time step.
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
    """out (nb, N) = a (nb, K) @ m.T, m (N, K): a 4-row × 2-column tile at a time, then the rest.

    Each tile is eight dot products over k, which LLVM vectorises along k: per vector of k,
    six loads (four rows of a, two rows of m) feed eight FMAs, so the loop is bound by the
    FMA units rather than by loads (one row × one column would need two loads per FMA).
    """
    nb, K = a.shape
    N = m.shape[0]
    zero = typed_like(out[0, 0], 0.0)
    b = 0
    while b + 4 <= nb:
        n = 0
        while n + 2 <= N:
            s00, s10, s20, s30 = zero, zero, zero, zero
            s01, s11, s21, s31 = zero, zero, zero, zero
            for k in range(K):
                w0, w1 = m[n, k], m[n + 1, k]
                x0, x1, x2, x3 = a[b, k], a[b + 1, k], a[b + 2, k], a[b + 3, k]
                s00 += x0 * w0
                s10 += x1 * w0
                s20 += x2 * w0
                s30 += x3 * w0
                s01 += x0 * w1
                s11 += x1 * w1
                s21 += x2 * w1
                s31 += x3 * w1
            out[b, n], out[b + 1, n], out[b + 2, n], out[b + 3, n] = s00, s10, s20, s30
            out[b, n + 1], out[b + 1, n + 1], out[b + 2, n + 1], out[b + 3, n + 1] = s01, s11, s21, s31
            n += 2
        if n < N:  # odd N: the last column
            s0, s1, s2, s3 = zero, zero, zero, zero
            for k in range(K):
                w = m[n, k]
                s0 += a[b, k] * w
                s1 += a[b + 1, k] * w
                s2 += a[b + 2, k] * w
                s3 += a[b + 3, k] * w
            out[b, n], out[b + 1, n], out[b + 2, n], out[b + 3, n] = s0, s1, s2, s3
        b += 4
    while b < nb:  # the last nb % 4 rows, one at a time, four columns at once (five loads per four FMAs)
        n = 0
        while n + 4 <= N:
            s0, s1, s2, s3 = zero, zero, zero, zero
            for k in range(K):
                x = a[b, k]
                s0 += x * m[n, k]
                s1 += x * m[n + 1, k]
                s2 += x * m[n + 2, k]
                s3 += x * m[n + 3, k]
            out[b, n], out[b, n + 1], out[b, n + 2], out[b, n + 3] = s0, s1, s2, s3
            n += 4
        while n < N:
            s = zero
            for k in range(K):
                s += a[b, k] * m[n, k]
            out[b, n] = s
            n += 1
        b += 1


@njit(cache=True, error_model="numpy")
def times_transposed(a, m, small, out):
    """out (nb, N) = a (nb, K) @ m.T for m (N, K): blocked loops if ``small``, else BLAS."""
    if small:
        blocked_times_transposed(a, m, out)
    else:
        np.dot(a, m.T, out)


@njit(cache=True, nogil=True)
def transposed_columns(m, j0, j1):
    """m[:, j0:j1]ᵀ as a new C-contiguous (j1 − j0, N) array: backward's W_hhᵀ rows for a tile's units.

    Read in blocks of 16 rows of m, so each cache line of m is used whole while it is in
    cache (measured, 2048×512 float32: 0.9 ms, against 4.5 ms for numpy's ascontiguousarray(m.T)).
    """
    N = m.shape[0]
    out = np.empty((j1 - j0, N), m.dtype)
    for n0 in range(0, N, 16):
        n1 = min(N, n0 + 16)
        for j in range(j0, j1):
            for n in range(n0, n1):
                out[j - j0, n] = m[n, j]
    return out


@njit(cache=True, error_model="numpy")
def gate_products(a, w, H, j0, j1, small, out):
    """out[g] (nb, j1 − j0) = a (nb, K) @ w[g·H + j0 : g·H + j1]ᵀ for each gate block g of w (G·H, K).

    A tile's units [j0, j1) take the same rows of every gate block of W_hh: one product per block.
    """
    for gate in range(out.shape[0]):
        times_transposed(a, w[gate * H + j0:gate * H + j1], small, out[gate])


@njit(cache=True, error_model="numpy")
def store_gate_blocks(blocks, H, j0, j1, dest):
    """dest[:, g·H + j0 : g·H + j1] = blocks[g] for each gate block g: the inverse of gate_products' layout.

    blocks (G, nb, nj) are a tile's per-gate values; dest (nb, G·H) the tile's rows of a gates-wide output.
    """
    for gate in range(blocks.shape[0]):
        dest[:, gate * H + j0:gate * H + j1] = blocks[gate]
