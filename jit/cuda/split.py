"""The split-K recurrent products of the persistent time loops: every SM at work at small batches.

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

Backward (BPTT) runs the same two phases the other way round: per (b, j), ∂L/∂h_t completed with the
step before's partial sums, then ∂L/∂a of every gate of the unit once (not once per column tile, as
the tile kernels do) and what ∂L/∂h_{t−1} holds besides ∂L/∂a W_hh (dhs[t − 1], gru's z⊙∂L/∂h_t; lstm's
∂L/∂c_{t−1}); a grid.sync; then ∂L/∂a W_hh split the same way (``transposed``), its reduction over the
G·H gate rows in slices.

The sums run in another order than the tile kernels' (per slice, then across slices), so the split
path agrees with the per-step path within the rounding of a sum of H (G·H) terms, not bit for bit.
twin: reference.affine.affine's h W_hhᵀ and affine_backward's ∂L/∂a W_hh, summed in slices.
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
#: stay live across the time loop): three blocks per SM; bounded, 128, spilling 0–144 bytes.
KERNEL_OPTIONS = {} if SIMULATOR else {"launch_bounds": (SPLIT_THREADS, 4)}


def item_count(units: int, depth: int, slice_depth: int) -> int:
    """Items of a step: unit blocks × slices of the reduction (host and device: integer arithmetic)."""
    return -(-units // SPLIT_UNITS) * -(-depth // slice_depth)


@cuda.jit(device=True)
def load_weight_slice(w, transposed, j0, k0, k1, w_slice):
    """The block's slice of W (G·N, N) for units j0 … j0 + SPLIT_UNITS − 1 and reduction indices
    k0 … k1 − 1, zero outside them: forward (h W_hhᵀ) w_slice[g, u, kk] = W[g·N + j0 + u, k0 + kk];
    ``transposed`` (backward's da W_hh, one "gate") w_slice[0, u, kk] = W[k0 + kk, j0 + u]. Every
    thread of the block calls it. twin: reference.affine.affine's W_hh, affine_backward's"""
    N = w.shape[1]
    gates = w_slice.shape[0]
    tid = cuda.threadIdx.y * SPLIT_UNITS + cuda.threadIdx.x
    for e in range(tid, gates * SPLIT_UNITS * SPLIT_DEPTH, SPLIT_THREADS):
        if transposed:
            g = 0
            kk = e // SPLIT_UNITS
            u = e - kk * SPLIT_UNITS  # fastest: consecutive threads read consecutive columns, coalesced
        else:
            g = e // (SPLIT_UNITS * SPLIT_DEPTH)
            u = (e // SPLIT_DEPTH) % SPLIT_UNITS
            kk = e % SPLIT_DEPTH  # fastest: consecutive threads read consecutive k, coalesced
        if j0 + u < N and k0 + kk < k1:
            if transposed:
                w_slice[g, u, kk] = w[k0 + kk, j0 + u]
            else:
                w_slice[g, u, kk] = w[g * N + j0 + u, k0 + kk]
        else:
            w_slice[g, u, kk] = w_slice.dtype.type(0.0)


@cuda.jit(device=True)
def load_input_slice(inputs, c0, k0, k1, in_slice):
    """in_slice[r, kk] = inputs[c0 + r, k0 + kk] for k0 + kk < k1, zero outside the rows or the slice."""
    B = inputs.shape[0]
    tid = cuda.threadIdx.y * SPLIT_UNITS + cuda.threadIdx.x
    for e in range(tid, CHUNK_ROWS * SPLIT_DEPTH, SPLIT_THREADS):
        r = e // SPLIT_DEPTH
        kk = e - r * SPLIT_DEPTH
        if c0 + r < B and k0 + kk < k1:
            in_slice[r, kk] = inputs[c0 + r, k0 + kk]
        else:
            in_slice[r, kk] = in_slice.dtype.type(0.0)


@cuda.jit(device=True)
def recurrent_partials(inputs, w, transposed, first_step, slice_depth, partial, w_slice, in_slice, sums):
    """The product phase of a step, this block's items: for every row b, gate g of w_slice and unit j
    of the item, partial[s, b, g·N + j] = Σ_{k in slice s} inputs[b, k]·W[g·N + j, k] (forward: inputs
    h_{t−1} (B, H), N = H), or ``transposed`` Σ_k inputs[b, k]·W[k, j] (backward: inputs ∂L/∂a (B, G·H),
    one gate). ``slice_depth`` (a multiple of SPLIT_DEPTH) is k per item, partial.shape[0] the slices;
    ``sums`` (gates, SPLIT_ROWS_PER_THREAD) the thread's accumulators.
    twin: reference.affine.affine's h W_hhᵀ and affine_backward's da W_hh, in slices of k"""
    B = inputs.shape[0]
    K = inputs.shape[1]
    N = w.shape[1]
    gates = w_slice.shape[0]
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    unit_blocks = (N + SPLIT_UNITS - 1) // SPLIT_UNITS
    n_items = unit_blocks * partial.shape[0]
    # One item per block, one shared slice per item: W's slice stays loaded from step 0 on.
    keep = slice_depth == SPLIT_DEPTH and n_items <= cuda.gridDim.x
    for q in range(cuda.blockIdx.x, n_items, cuda.gridDim.x):
        s = q // unit_blocks
        j0 = (q - s * unit_blocks) * SPLIT_UNITS
        j = j0 + tx
        k_begin = s * slice_depth
        k_end = min(K, k_begin + slice_depth)
        for c0 in range(0, B, CHUNK_ROWS):
            for g in range(gates):
                for i in range(SPLIT_ROWS_PER_THREAD):
                    sums[g, i] = sums.dtype.type(0.0)
            for k0 in range(k_begin, k_end, SPLIT_DEPTH):
                if not keep or (first_step and c0 == 0):
                    load_weight_slice(w, transposed, j0, k0, min(k_end, k0 + SPLIT_DEPTH), w_slice)
                load_input_slice(inputs, c0, k0, min(k_end, k0 + SPLIT_DEPTH), in_slice)
                cuda.syncthreads()
                for kk in range(SPLIT_DEPTH):
                    for g in range(gates):
                        weight = w_slice[g, tx, kk]
                        for i in range(SPLIT_ROWS_PER_THREAD):
                            sums[g, i] += in_slice[ty + i * SPLIT_ROWS, kk] * weight
                cuda.syncthreads()  # before the next load overwrites the slices
            if j < N:
                for i in range(SPLIT_ROWS_PER_THREAD):
                    b = c0 + ty + i * SPLIT_ROWS
                    if b < B:
                        for g in range(gates):
                            partial[s, b, g * N + j] = sums[g, i]


@cuda.jit(device=True)
def product_phase(inputs, w, transposed, first_step, slice_depth, partial, w_slice, in_slice, sums):
    """A step's product phase between two grid.syncs: before it, every block has written its part of
    ``inputs`` (h_{t−1}, or ∂L/∂a); after it, the next phase reads any block's partial sums.
    twin: reference.affine's products, as recurrent_partials"""
    grid = cuda.cg.this_grid()
    grid.sync()
    recurrent_partials(inputs, w, transposed, first_step, slice_depth, partial, w_slice, in_slice, sums)
    grid.sync()


@cuda.jit(device=True)
def with_partials(partial, b, column, value):
    """value + partial[0, b, column] + partial[1, b, column] + …, added in slice order: the product
    phase's sum at (b, column), completed."""
    for s in range(partial.shape[0]):
        value += partial[s, b, column]
    return value


@cuda.jit(device=True)
def add_partials(partial, b, j, H, pre):
    """pre[g] += the product phase's sum at (b, g·H + j) for each gate g: the forward's pre-activations."""
    for g in range(pre.shape[0]):
        pre[g] = with_partials(partial, b, g * H + j, pre[g])


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
    """dst = src (B, H) by the whole grid, each (b, j) by the thread the pointwise phase gives it, so
    that copying out what that phase wrote needs no grid.sync. twin: reference.backend.forward's h_n copy"""
    H = dst.shape[1]
    for e in range(first_element(), dst.shape[0] * H, element_stride()):
        b = e // H
        j = e - b * H
        dst[b, j] = src[b, j]


@cuda.jit(device=True)
def completed_gradient(dh_n, dhs, partial, first, t, b, j, dh):
    """∂L/∂h_t at (b, j), into dh: at BPTT's start (``first``) dh_n + dhs[T − 1]; after it, what the
    step before left in dh (gradient_before, and the cell's direct terms) plus the product phase's sum.
    twin: reference.backend.backward's d_state[0] + dhs[t], and affine_backward's da W_hh"""
    if first:
        dh[b, j] = dh_n[b, j] + dhs[t, b, j]
    else:
        dh[b, j] = with_partials(partial, b, j, dh[b, j])


@cuda.jit(device=True)
def gradient_before(dhs, t, b, j):
    """What ∂L/∂h_{t−1} holds at (b, j) before the cell's direct terms and da W_hh: dhs[t − 1] (h_{t−1}
    is an output too), or zero before step 0 (h0 is none). twin: reference.backend.backward's dhs[t − 1]"""
    if t > 0:
        return dhs[t - 1, b, j]
    return dhs.dtype.type(0.0)


@cuda.jit(device=True)
def complete_gradients(partial, dh):
    """dh += the product phase's sums, by the whole grid: ∂L/∂h0 after the last step's product phase."""
    H = dh.shape[1]
    for e in range(first_element(), dh.shape[0] * H, element_stride()):
        b = e // H
        j = e - b * H
        dh[b, j] = with_partials(partial, b, j, dh[b, j])
