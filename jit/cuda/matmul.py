"""The matrix products over all T·B rows at once: the input projection, the weight gradients, dx.

They are hoisted out of the time loops: forward projects every step's input with one product
(x W_ihᵀ + b_ih), and backward forms dW_ih = daᵀ x, dW_hh = daᵀ h, db = Σ da and dx = da W_ih
after BPTT. Kernels are typed by their arguments' dtype (numba.cuda compiles one per dtype); every
constant is made in that dtype, so float32 kernels never compute in float64.
"""
from numba import cuda

from .launch import TILES

TILE = TILES.matmul
WORK = TILES.matmul_work
BLOCK = TILE * WORK
KSTEP = TILES.matmul_depth
# Shared-array shapes must be literal names to numba.cuda's typing; the +1 column keeps the threads
# that read a column of a tile on different shared-memory banks.
KSTEP_PADDED = KSTEP + 1
BLOCK_PADDED = BLOCK + 1


@cuda.jit
def matmul(a, b, c, bias, trans_a, trans_b, use_bias):
    """c = op(a) @ op(b) (+ bias on every row), op(m) = mᵀ when its flag is set.

    twin: reference.affine.affine and affine_backward's dx, dw.
    A block of TILE×TILE threads computes a BLOCK×BLOCK tile of c, each thread WORK×WORK elements
    strided by TILE (neighbouring threads write neighbouring columns); K advances KSTEP at a time
    through shared tiles. Every load is bounds-checked: no size needs to be a multiple of anything.
    """
    DT = c.dtype
    a_tile = cuda.shared.array((BLOCK, KSTEP_PADDED), DT)  # op(a)[m0 + i, k0 + kk]
    b_tile = cuda.shared.array((KSTEP, BLOCK_PADDED), DT)  # op(b)[k0 + kk, n0 + j]
    acc = cuda.local.array((WORK, WORK), DT)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tid = ty * TILE + tx
    m0 = cuda.blockIdx.y * BLOCK
    n0 = cuda.blockIdx.x * BLOCK
    M = c.shape[0]
    N = c.shape[1]
    K = a.shape[0] if trans_a else a.shape[1]
    for i in range(WORK):
        for j in range(WORK):
            acc[i, j] = DT.type(0.0)
    for k0 in range(0, K, KSTEP):
        for e in range(tid, BLOCK * KSTEP, TILE * TILE):
            # The index that runs fastest over threads follows a's memory order (coalesced).
            if trans_a:
                kk = e // BLOCK
                i = e - kk * BLOCK
            else:
                i = e // KSTEP
                kk = e - i * KSTEP
            v = DT.type(0.0)
            if m0 + i < M and k0 + kk < K:
                v = a[k0 + kk, m0 + i] if trans_a else a[m0 + i, k0 + kk]
            a_tile[i, kk] = v
        for e in range(tid, KSTEP * BLOCK, TILE * TILE):
            if trans_b:
                j = e // KSTEP
                kk = e - j * KSTEP
            else:
                kk = e // BLOCK
                j = e - kk * BLOCK
            v = DT.type(0.0)
            if k0 + kk < K and n0 + j < N:
                v = b[n0 + j, k0 + kk] if trans_b else b[k0 + kk, n0 + j]
            b_tile[kk, j] = v
        cuda.syncthreads()
        for kk in range(KSTEP):
            for i in range(WORK):
                a_value = a_tile[ty + i * TILE, kk]
                for j in range(WORK):
                    acc[i, j] += a_value * b_tile[kk, tx + j * TILE]
        cuda.syncthreads()
    for i in range(WORK):
        m = m0 + ty + i * TILE
        for j in range(WORK):
            n = n0 + tx + j * TILE
            if m < M and n < N:
                v = acc[i, j]
                if use_bias:
                    v += bias[n]
                c[m, n] = v


@cuda.jit
def column_sums(a, out):
    """out[n] = Σ_m a[m, n], in row order (deterministic). twin: reference.affine.affine_backward's db."""
    for n in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        s = out.dtype.type(0.0)
        for m in range(a.shape[0]):
            s += a[m, n]
        out[n] = s
