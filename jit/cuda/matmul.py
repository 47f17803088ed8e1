"""The matrix products over all T·B rows at once: the input projection, the weight gradients, dx.

They are hoisted out of the time loops: forward projects every step's input with one product
(x W_ihᵀ + b_ih), and backward forms dW_ih = daᵀ x, dW_hh = daᵀ h, db = Σ da and dx = da W_ih
after BPTT. Kernels are typed by their arguments' dtype (numba.cuda compiles one per dtype); every
constant is made in that dtype, so float32 kernels never compute in float64.

Versions of `matmul` (docs/jit-cuda.md, "The matmul"):
1. 64×64 tiles, 4×4 outputs per thread, K step 16, one shared buffer (two syncs per K step).
2. (this one) 128×128 tiles, 8×8 outputs per thread, K step 8, two shared buffers: the next K step
   is loaded into registers while this one is multiplied (one sync per K step). Not yet timed on a GPU.
"""
import numpy as np
from numba import cuda

from .launch import TILES

TILE = TILES.matmul
WORK = TILES.matmul_work
BLOCK = TILE * WORK
KSTEP = TILES.matmul_depth
THREADS = TILE * TILE
#: Elements of each operand's shared tile that each thread loads per K step.
LOADS = BLOCK * KSTEP // THREADS
if LOADS * THREADS != BLOCK * KSTEP:
    raise ValueError(f"jit.cuda.matmul: a {BLOCK}×{KSTEP} shared tile does not split evenly over {THREADS} threads; "
                     f"expected matmul_work·matmul_depth to be a multiple of matmul (Tiles {TILES})")
#: Shared-array shapes must be literal names to numba.cuda's typing. The tiles are stored k-major
#: ([buffer][kk][i], flat); a warp that loads along k (a untransposed, b transposed) writes 32/KSTEP rows
#: of KSTEP, and the 4 padding columns put those rows on different shared-memory banks (4·kk + i).
BLOCK_PADDED = BLOCK + 4
#: One buffer of a shared tile, and both.
TILE_SIZE = KSTEP * BLOCK_PADDED
TILES_SIZE = 2 * TILE_SIZE


@cuda.jit
def matmul(a, b, c, bias, trans_a, trans_b, use_bias):
    """c = op(a) @ op(b) (+ bias on every row), op(m) = mᵀ when its flag is set.

    twin: reference.affine.affine and affine_backward's dx, dw.
    A block of TILE×TILE threads computes a BLOCK×BLOCK tile of c, each thread WORK×WORK elements
    in registers, strided by TILE (neighbouring threads write neighbouring columns: coalesced
    stores). K advances KSTEP at a time through two shared buffers: while the block multiplies one,
    each thread holds its LOADS elements of the next K step of a and of b in registers and stores
    them into the other buffer afterwards, so the global loads are in flight during the products.
    Per k, a thread reads WORK values of a's column and WORK of b's row into registers and adds their
    outer product. Every load is bounds-checked (zeros outside): no size needs to be a multiple of
    anything. Each c[m, n] is one accumulator summed in k order, then + bias[n]: the same bits on
    every call, whatever the tile sizes, and an exact zero term (a padded row) changes nothing.
    """
    DT = c.dtype
    zero = DT.type(0.0)
    a_tiles = cuda.shared.array(TILES_SIZE, DT)  # [buffer][kk][i] = op(a)[m0 + i, k0 + kk]
    b_tiles = cuda.shared.array(TILES_SIZE, DT)  # [buffer][kk][j] = op(b)[k0 + kk, n0 + j]
    acc = cuda.local.array((WORK, WORK), DT)
    a_column = cuda.local.array(WORK, DT)  # op(a)[m0 + ty + i·TILE, k]
    b_row = cuda.local.array(WORK, DT)  # op(b)[k, n0 + tx + j·TILE]
    a_next = cuda.local.array(LOADS, DT)  # this thread's share of the next K step, staged in registers
    b_next = cuda.local.array(LOADS, DT)
    # Unsigned thread and row indices (tx, ty, a_at_kk, b_at_kk): the compiler then knows each
    # shared index is ≥ 0 and drops Numba's negative-index wraparound, so a thread's WORK reads of a
    # row are one address + constant offsets. ptxas, sm_90: 162 registers (float32) and 242 (float64),
    # no spill; with signed indices and a 3-D shared array, 226 and 255 with 112 B spilled.
    tx = np.uint32(cuda.threadIdx.x)
    ty = np.uint32(cuda.threadIdx.y)
    tid = ty * TILE + tx
    m0 = cuda.blockIdx.y * BLOCK
    n0 = cuda.blockIdx.x * BLOCK
    M = c.shape[0]
    N = c.shape[1]
    K = a.shape[0] if trans_a else a.shape[1]
    steps = (K + KSTEP - 1) // KSTEP
    for i in range(WORK):
        for j in range(WORK):
            acc[i, j] = zero
    # Step s multiplies K step s from buffer s mod 2 and stages K step s + 1 into the other one;
    # s = -1 only stages K step 0. The other buffer was last read at step s - 1, which ended in a
    # syncthreads, so one sync per step keeps every read before the overwrite.
    for s in range(-1, steps):
        k_next = (s + 1) * KSTEP
        more = s + 1 < steps  # the same for every thread of the block: the syncs stay uniform
        if more:
            for r in range(LOADS):
                e = tid + r * THREADS
                # The element index that runs fastest over threads follows the operand's memory
                # order, so the loads coalesce.
                if trans_a:  # a is (K, M)
                    kk = e // BLOCK
                    i = e - kk * BLOCK
                else:
                    i = e // KSTEP
                    kk = e - i * KSTEP
                v = zero
                if m0 + i < M and k_next + kk < K:
                    v = a[k_next + kk, m0 + i] if trans_a else a[m0 + i, k_next + kk]
                a_next[r] = v
            for r in range(LOADS):
                e = tid + r * THREADS
                if trans_b:  # b is (N, K)
                    j = e // KSTEP
                    kk = e - j * KSTEP
                else:
                    kk = e // BLOCK
                    j = e - kk * BLOCK
                v = zero
                if k_next + kk < K and n0 + j < N:
                    v = b[n0 + j, k_next + kk] if trans_b else b[k_next + kk, n0 + j]
                b_next[r] = v
        if s >= 0:
            a_at = (s & 1) * TILE_SIZE + ty
            b_at = (s & 1) * TILE_SIZE + tx
            for kk in range(KSTEP):
                a_at_kk = np.uint32(a_at + kk * BLOCK_PADDED)
                b_at_kk = np.uint32(b_at + kk * BLOCK_PADDED)
                for i in range(WORK):
                    a_column[i] = a_tiles[a_at_kk + i * TILE]
                for j in range(WORK):
                    b_row[j] = b_tiles[b_at_kk + j * TILE]
                for i in range(WORK):
                    for j in range(WORK):
                        acc[i, j] += a_column[i] * b_row[j]
        if more:
            staged = ((s + 1) & 1) * TILE_SIZE
            for r in range(LOADS):
                e = tid + r * THREADS
                if trans_a:
                    kk = e // BLOCK
                    i = e - kk * BLOCK
                else:
                    i = e // KSTEP
                    kk = e - i * KSTEP
                a_tiles[staged + kk * BLOCK_PADDED + i] = a_next[r]
            for r in range(LOADS):
                e = tid + r * THREADS
                if trans_b:
                    j = e // KSTEP
                    kk = e - j * KSTEP
                else:
                    kk = e // BLOCK
                    j = e - kk * BLOCK
                b_tiles[staged + kk * BLOCK_PADDED + j] = b_next[r]
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
