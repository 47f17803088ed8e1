"""The split-K recurrent product of the persistent forward: every SM at work at small batches.

The tile kernels (jit.cuda.tiles) give each block UNITS units × ROWS rows and the whole of k: at
H = 512, B = 16 a step is 32 blocks on a GPU of 132 SMs, each walking H/DEPTH dependent loads of
W_hh, and W_hh is read once per row tile. Here a step is two phases of one cooperative launch:

1. **Partial products.** An *item* is (SPLIT_UNITS units × every gate, a slice of k). Its block
   holds that slice of W_hh in shared memory, runs every batch row through it in chunks of
   CHUNK_ROWS (each thread SPLIT_ROWS_PER_THREAD rows × every gate of its unit, so one load of W
   serves several sums), and writes its sums to ``partial[s, b, g·H + j]``, s the slice. With at
   most one item per block and a slice of SPLIT_DEPTH, the slice is loaded once, at step 0, and
   kept for every step (``keep``): W_hh stays in shared memory across the time loop where the grid
   can hold all of it (lstm H ≤ 512 on an H100, by the tile sizes of jit.cuda.launch).
2. **Pointwise** (grid-stride over (b, j), after a grid.sync): the pre-activation is the input side
   plus the partials of every slice in slice order, then the cell's own update
   (``lstm_update``, …), the same device functions the tile kernels end with.

The sums run in another order than the tile kernels' (per slice, then across slices), so the split
forward agrees with the per-step path within the rounding of a sum of H terms, not bit for bit.
twin: reference.affine.affine's h W_hhᵀ, summed in slices.
"""
from numba import cuda

from .launch import SIMULATOR, TILES

SPLIT_UNITS = TILES.split_units
SPLIT_ROWS = TILES.split_rows
SPLIT_ROWS_PER_THREAD = TILES.split_rows_per_thread
SPLIT_DEPTH = TILES.split_depth
SPLIT_THREADS = SPLIT_UNITS * SPLIT_ROWS
# Literal names for the shared and local arrays' shapes (numba.cuda folds no arithmetic there); the
# +1 column keeps the threads of a warp, which read one column of W's slice, on different banks.
CHUNK_ROWS = SPLIT_ROWS * SPLIT_ROWS_PER_THREAD
SPLIT_DEPTH_PADDED = SPLIT_DEPTH + 1

#: The split kernels' options: on a GPU, four blocks of 128 threads per SM, 528 on an H100, enough
#: for lstm H = 512's 32 unit blocks × 16 slices with W_hh kept. Unbounded, ptxas (CUDA 13, sm_90)
#: gave them 148–170 registers a thread (numba's array arguments, a pointer, shapes and strides each,
#: stay live across the time loop): three blocks per SM; bounded, 128, spilling 24–176 bytes.
KERNEL_OPTIONS = {} if SIMULATOR else {"launch_bounds": (SPLIT_THREADS, 4)}


def item_count(H: int, slice_depth: int) -> int:
    """Items of a step: unit blocks × slices of k (host and device: plain integer arithmetic)."""
    return -(-H // SPLIT_UNITS) * -(-H // slice_depth)


@cuda.jit(device=True)
def load_weight_slice(w_hh, j0, k0, k1, w_slice):
    """w_slice[g, u, kk] = W_hh[g·H + j0 + u, k0 + kk] for k0 + kk < k1, zero outside the units or
    the slice. Every thread of the block calls it. twin: reference.affine.affine's W_hh"""
    H = w_hh.shape[1]
    gates = w_slice.shape[0]
    tid = cuda.threadIdx.y * SPLIT_UNITS + cuda.threadIdx.x
    for e in range(tid, gates * SPLIT_UNITS * SPLIT_DEPTH, SPLIT_THREADS):
        g = e // (SPLIT_UNITS * SPLIT_DEPTH)
        u = (e // SPLIT_DEPTH) % SPLIT_UNITS
        kk = e % SPLIT_DEPTH  # fastest: consecutive threads read consecutive k, coalesced
        if j0 + u < H and k0 + kk < k1:
            w_slice[g, u, kk] = w_hh[g * H + j0 + u, k0 + kk]
        else:
            w_slice[g, u, kk] = w_slice.dtype.type(0.0)


@cuda.jit(device=True)
def load_state_slice(h_prev, c0, k0, k1, h_slice):
    """h_slice[r, kk] = h_prev[c0 + r, k0 + kk] for k0 + kk < k1, zero outside the rows or the slice."""
    B = h_prev.shape[0]
    tid = cuda.threadIdx.y * SPLIT_UNITS + cuda.threadIdx.x
    for e in range(tid, CHUNK_ROWS * SPLIT_DEPTH, SPLIT_THREADS):
        r = e // SPLIT_DEPTH
        kk = e - r * SPLIT_DEPTH
        if c0 + r < B and k0 + kk < k1:
            h_slice[r, kk] = h_prev[c0 + r, k0 + kk]
        else:
            h_slice[r, kk] = h_slice.dtype.type(0.0)


@cuda.jit(device=True)
def recurrent_partials(h_prev, w_hh, first_step, slice_depth, partial, w_slice, h_slice, sums):
    """Phase 1 of a step, this block's items: partial[s, b, g·H + j] = Σ_{k in slice s} h_prev[b, k]·
    W_hh[g·H + j, k] for every row b and gate g of the item's units j. ``slice_depth`` (a multiple of
    SPLIT_DEPTH) is k per item, partial.shape[0] the slices. ``sums`` (gates, SPLIT_ROWS_PER_THREAD)
    is the thread's local accumulator. twin: reference.affine.affine's h W_hhᵀ, in slices of k"""
    B = h_prev.shape[0]
    H = h_prev.shape[1]
    gates = w_slice.shape[0]
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    unit_blocks = (H + SPLIT_UNITS - 1) // SPLIT_UNITS
    n_items = unit_blocks * partial.shape[0]
    # One item per block, one shared slice per item: W's slice stays loaded from step 0 on.
    keep = slice_depth == SPLIT_DEPTH and n_items <= cuda.gridDim.x
    for q in range(cuda.blockIdx.x, n_items, cuda.gridDim.x):
        s = q // unit_blocks
        j0 = (q - s * unit_blocks) * SPLIT_UNITS
        j = j0 + tx
        k_begin = s * slice_depth
        k_end = min(H, k_begin + slice_depth)
        for c0 in range(0, B, CHUNK_ROWS):
            for g in range(gates):
                for i in range(SPLIT_ROWS_PER_THREAD):
                    sums[g, i] = sums.dtype.type(0.0)
            for k0 in range(k_begin, k_end, SPLIT_DEPTH):
                if not keep or (first_step and c0 == 0):
                    load_weight_slice(w_hh, j0, k0, min(k_end, k0 + SPLIT_DEPTH), w_slice)
                load_state_slice(h_prev, c0, k0, min(k_end, k0 + SPLIT_DEPTH), h_slice)
                cuda.syncthreads()
                for kk in range(SPLIT_DEPTH):
                    for g in range(gates):
                        w = w_slice[g, tx, kk]
                        for i in range(SPLIT_ROWS_PER_THREAD):
                            sums[g, i] += h_slice[ty + i * SPLIT_ROWS, kk] * w
                cuda.syncthreads()  # before the next load overwrites the slices
            if j < H:
                for i in range(SPLIT_ROWS_PER_THREAD):
                    b = c0 + ty + i * SPLIT_ROWS
                    if b < B:
                        for g in range(gates):
                            partial[s, b, g * H + j] = sums[g, i]


@cuda.jit(device=True)
def add_partials(partial, b, j, H, pre):
    """pre[g] += partial[s, b, g·H + j] for s = 0, 1, … in turn: phase 2's recurrent product."""
    for s in range(partial.shape[0]):
        for g in range(pre.shape[0]):
            pre[g] += partial[s, b, g * H + j]


@cuda.jit(device=True)
def first_element():
    """This thread's first (b, j) element of a grid-stride walk over a step's B·H elements."""
    return cuda.blockIdx.x * SPLIT_THREADS + cuda.threadIdx.y * SPLIT_UNITS + cuda.threadIdx.x


@cuda.jit(device=True)
def element_stride():
    """The stride of that walk: every thread of the grid."""
    return cuda.gridDim.x * SPLIT_THREADS


@cuda.jit(device=True)
def copy_state_split(src, dst):
    """dst = src (B, H) by the whole grid, grid-stride. twin: reference.backend.forward's h_n copy"""
    H = dst.shape[1]
    for e in range(first_element(), dst.shape[0] * H, element_stride()):
        b = e // H
        j = e - b * H
        dst[b, j] = src[b, j]
