"""One step's tile, as every cell's step kernels compute it: the recurrent products, and the walk
of the persistent kernels over a step's tiles.

A step kernel's block owns the tile of UNITS hidden units (threadIdx.x) × ROWS batch rows
(threadIdx.y). Forward, it forms the recurrent product of all gate rows of its units
(``gate_products``), so that the gates' pointwise update follows in registers. Backward, it forms
its columns of ∂L/∂h_{t−1} = ∂L/∂a · W_hh, computing ∂L/∂a while loading each tile of it
(``load_weight_rows``, ``rows_times_weights``). A persistent kernel walks tile q = 0, 1, … of a
step with a 1-D grid (``step_tiles``, ``tile_origin``) and synchronizes the grid between steps.

The per-step kernels take whole arrays and the step t, never a slice made on the host (each costs a
device array and numba-cuda's type dispatch): the state step t reads is h0 at t = 0, else what step
t − 1 wrote, ``hs[t − 1]`` (a cell state ring of two in inference: ``cs[(t − 1) % 2]``), chosen in
the kernel. (A device function cannot return that view: numba returns only arrays passed in.)

Kernels are typed by their arguments (numba.cuda compiles one per dtype): shared arrays and constants
take an array's dtype, never a bare Python float, which would promote float32 math to float64
(``python -m jit.cuda.lowering_check`` checks). No warp-level operation is used, so every kernel runs
unchanged under the CUDA simulator (a persistent one on a grid of one block, which walks every tile).

Rows of different lengths (jit.cuda.layers): every step function takes ``lengths, s, reverse``.
``row_step`` says whether a row runs scan step s and which time step it reads and writes then (s
forward, its length − 1 − s in reverse), computed in the kernel from the (B,) lengths; a row past
its length keeps its state. The cell kernels pass ``lengths = None`` (every row runs every step, in
time order), which numba.cuda types away: their arithmetic is the same with or without layers.
"""
from numba import cuda

from .launch import TILES

UNITS = TILES.units
ROWS = TILES.rows
DEPTH = TILES.depth
STEP_THREADS = UNITS * ROWS
# Shared-array shapes must be literal names to numba.cuda's typing (DEPTH + 1 inside the shape is
# not folded); the +1 column keeps threads that read a column of a tile on different banks.
DEPTH_PADDED = DEPTH + 1


# ----- rows of different lengths ------------------------------------------------------------------

@cuda.jit(device=True)
def row_step(lengths, s, reverse, b):
    """(whether row b runs scan step s, the time step it reads and writes): s forward, lengths[b] − 1 − s
    in reverse, so that a short row's reverse direction starts at its own last step; past the row's
    length (False, s), its padded position s. lengths None: (True, s) for every row.
    twin: reference.layers.run_rows (rows still running) and reverse_within_lengths"""
    if lengths is None:
        return True, s
    n = lengths[b]
    if s >= n:
        return False, s
    if reverse:
        return True, n - 1 - s
    return True, s


@cuda.jit(device=True)
def previous_output(lengths, s, reverse, b):
    """(whether row b's state before scan step s is one of its outputs, the time step of that output):
    the step before, if the row ran it; h0 (s = 0) is no output. BPTT adds dhs there, and only there,
    so a gradient given at a padded position is never read.
    twin: reference.backend.backward's dhs[t − 1], reference.layers.run_rows_backward's spans"""
    if s == 0:
        return False, 0
    return row_step(lengths, s - 1, reverse, b)


@cuda.jit(device=True)
def place_output(lengths, s, reverse, h_next, out, j0, b0):
    """A layer's output of scan step s, by the threads that stepped the tile of units j0… and rows
    b0…: row b's new state at its time step, or zero at its padded position. Over the T steps every
    (t, b) of out (T, B, H) is written once. twin: reference.layers.run_rows' hs[start:end, rows]
    and its zeros past each row's length"""
    B = h_next.shape[0]
    H = h_next.shape[1]
    b = b0 + cuda.threadIdx.y
    j = j0 + cuda.threadIdx.x
    if b < B and j < H:
        active, t = row_step(lengths, s, reverse, b)
        if active:
            out[t, b, j] = h_next[b, j]
        else:
            out[t, b, j] = out.dtype.type(0.0)


# ----- forward: the recurrent product of all gate rows of a block's hidden units -------------------

@cuda.jit(device=True)
def gate_products(hin, w, row0, acc, h_tile, w_tile, j0, b0):
    """acc[g] += Σ_k hin[b, k]·w[row0 + g·H + j, k] for g < w_tile.shape[0], this thread's (b, j) =
    (b0 + threadIdx.y, j0 + threadIdx.x) in the tile of units j0… and rows b0…; hin is (B, H). The
    block loads the shared tiles together: every thread calls it, in bounds or not.

    twin: reference.affine.affine's h W_hhᵀ, for the gate rows of this tile's units."""
    gates = w_tile.shape[0]
    B = hin.shape[0]
    H = hin.shape[1]
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tid = ty * UNITS + tx
    for k0 in range(0, H, DEPTH):
        for e in range(tid, ROWS * DEPTH, STEP_THREADS):
            rr = e // DEPTH
            kk = e - rr * DEPTH
            if b0 + rr < B and k0 + kk < H:
                h_tile[rr, kk] = hin[b0 + rr, k0 + kk]
            else:
                h_tile[rr, kk] = h_tile.dtype.type(0.0)
        for e in range(tid, gates * UNITS * DEPTH, STEP_THREADS):
            g = e // (UNITS * DEPTH)
            u = (e // DEPTH) % UNITS
            kk = e % DEPTH  # fastest: consecutive threads read consecutive k, coalesced
            if j0 + u < H and k0 + kk < H:
                w_tile[g, u, kk] = w[row0 + g * H + j0 + u, k0 + kk]
            else:
                w_tile[g, u, kk] = w_tile.dtype.type(0.0)
        cuda.syncthreads()
        for g in range(gates):
            s = acc[g]
            for kk in range(DEPTH):
                s += h_tile[ty, kk] * w_tile[g, tx, kk]
            acc[g] = s
        cuda.syncthreads()


# ----- backward: this tile's columns of ∂L/∂a · W_hh ----------------------------------------------

@cuda.jit(device=True)
def load_weight_rows(w, row0, r0, n_rows, w_tile, k0):
    """w_tile[q, u] = w[row0 + r0 + q, k0 + u], zero outside n_rows rows or H columns; k0 = the tile's
    first column. Every thread of the block calls it. twin: reference.affine.affine_backward's W in dx = da W."""
    H = w.shape[1]
    tid = cuda.threadIdx.y * UNITS + cuda.threadIdx.x
    for e in range(tid, DEPTH * UNITS, STEP_THREADS):
        q = e // UNITS
        u = e - q * UNITS  # fastest: consecutive threads read consecutive columns, coalesced
        if r0 + q < n_rows and k0 + u < H:
            w_tile[q, u] = w[row0 + r0 + q, k0 + u]
        else:
            w_tile[q, u] = w_tile.dtype.type(0.0)


@cuda.jit(device=True)
def rows_times_weights(acc, da_tile, w_tile):
    """acc + Σ_q da_tile[ty, q]·w_tile[q, tx]: this thread's share of one tile of da W.
    twin: reference.affine.affine_backward's dx = da W."""
    ty = cuda.threadIdx.y
    tx = cuda.threadIdx.x
    for q in range(DEPTH):
        acc += da_tile[ty, q] * w_tile[q, tx]
    return acc


# ----- the persistent kernels' walk over a step's tiles --------------------------------------------

@cuda.jit(device=True)
def step_tiles(B, H):
    """How many (units × rows) tiles a step of B rows and H units has. twin: none (indexing)."""
    return ((H + UNITS - 1) // UNITS) * ((B + ROWS - 1) // ROWS)


@cuda.jit(device=True)
def tile_origin(q, H):
    """(j0, b0), the first unit and first row of tile q, units varying fastest. twin: none (indexing)."""
    unit_tiles = (H + UNITS - 1) // UNITS
    row_tile = q // unit_tiles
    return (q - row_tile * unit_tiles) * UNITS, row_tile * ROWS


@cuda.jit(device=True)
def copy_state(src, dst):
    """dst = src (B, H), each element by the thread that steps it: the threads of this block's tiles.
    twin: reference.backend.forward's h_n = state[0].copy() (and c_n)."""
    H = dst.shape[1]
    for q in range(cuda.blockIdx.x, step_tiles(dst.shape[0], H), cuda.gridDim.x):
        j0, b0 = tile_origin(q, H)
        b = b0 + cuda.threadIdx.y
        j = j0 + cuda.threadIdx.x
        if b < dst.shape[0] and j < H:
            dst[b, j] = src[b, j]


@cuda.jit(device=True)
def start_bptt(dh_n, dhs, lengths, reverse, dh, dc_n, use_dc_n, dc):
    """BPTT's start, by the threads of this block's tiles: ∂L/∂h_T = dh_n + dhs[T − 1] into dh (a row
    shorter than T: dh_n alone, its last output is added at its last step) and (lstm: dc not empty)
    ∂L/∂c_T = dc_n, or 0 without one, into dc. dhs (T, B, H), T ≥ 1.
    twin: reference.backend.backward's d_state[0] + dhs[t] at t = T − 1, and its zero dc_n."""
    H = dh.shape[1]
    last = dhs.shape[0] - 1
    for q in range(cuda.blockIdx.x, step_tiles(dh.shape[0], H), cuda.gridDim.x):
        j0, b0 = tile_origin(q, H)
        b = b0 + cuda.threadIdx.y
        j = j0 + cuda.threadIdx.x
        if b < dh.shape[0] and j < H:
            active, t = row_step(lengths, last, reverse, b)
            if active:
                dh[b, j] = dh_n[b, j] + dhs[t, b, j]
            else:
                dh[b, j] = dh_n[b, j]
            if dc.shape[0] > 0:
                dc[b, j] = dc_n[b, j] if use_dc_n else dc.dtype.type(0.0)


@cuda.jit
def start_bptt_kernel(dh_n, dhs, lengths, reverse, dh):
    """start_bptt of a cell without a cell state, on a 1-D grid of step tiles (the layers' BPTT)."""
    start_bptt(dh_n, dhs, lengths, reverse, dh, dh_n, False, dh_n[:0])


@cuda.jit
def lstm_start_bptt_kernel(dh_n, dhs, lengths, reverse, dh, dc_n, use_dc_n, dc):
    """start_bptt of the lstm, ∂L/∂c_T too, on a 1-D grid of step tiles (the layers' BPTT)."""
    start_bptt(dh_n, dhs, lengths, reverse, dh, dc_n, use_dc_n, dc)
