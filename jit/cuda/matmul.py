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


@cuda.jit(device=True)
def tile_element(e, k_major):
    """(i, kk): where element e of a thread block's share of a BLOCK×KSTEP operand tile lies, i along
    the tile's rows (op(a)'s m, op(b)'s n) and kk along K. The index that runs fastest over threads
    follows the operand's memory order, (K, ·) when k_major, else (·, K), so the loads coalesce."""
    if k_major:
        kk = e // BLOCK
        return e - kk * BLOCK, kk
    i = e // KSTEP
    return i, e - i * KSTEP


@cuda.jit(device=True)
def stage_k_step(x, k_major, origin, extent, k_next, K, tid, staged, zero):
    """staged[r] = this thread's r-th element of the operand tile at (origin, k_next): x[k, origin + i]
    when k_major, else x[origin + i, k]; zero outside x (rows ≥ extent, k ≥ K)."""
    for r in range(LOADS):
        i, kk = tile_element(tid + r * THREADS, k_major)
        v = zero
        if origin + i < extent and k_next + kk < K:
            v = x[k_next + kk, origin + i] if k_major else x[origin + i, k_next + kk]
        staged[r] = v


@cuda.jit(device=True)
def store_k_step(staged, k_major, tid, tiles, buffer):
    """The elements stage_k_step loaded into shared buffer ``buffer`` of tiles, k-major ([kk][i])."""
    for r in range(LOADS):
        i, kk = tile_element(tid + r * THREADS, k_major)
        tiles[buffer + kk * BLOCK_PADDED + i] = staged[r]


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
            stage_k_step(a, trans_a, m0, M, k_next, K, tid, a_next, zero)
            stage_k_step(b, not trans_b, n0, N, k_next, K, tid, b_next, zero)
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
            store_k_step(a_next, trans_a, tid, a_tiles, staged)
            store_k_step(b_next, not trans_b, tid, b_tiles, staged)
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
