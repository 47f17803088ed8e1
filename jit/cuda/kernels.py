"""The numba.cuda kernels of jit.cuda, one dtype at a time: matrix product, then each cell's steps.

Order, as in reference/: the tiled matrix product and the small helpers (copies, column
sums, the finiteness check); then per cell the fused step forward kernel(s); then the
fused step backward kernel(s). Each kernel names its reference twin.

Design (issue 5):
- ``matmul``: shared-memory tiles with bounds checks; it computes the input projection
  x W_ihᵀ + b_ih of all T steps at once (hoisted out of the time loop), and after BPTT the
  weight gradients daᵀ x, daᵀ h and dx = da W_ih.
- a forward step kernel per cell: each block owns ``units`` hidden units × ``rows`` batch
  rows and computes the recurrent product for the rows of *all* gates of its units
  (``gate_products``), so the gates' pointwise update follows in registers without another
  pass over memory. gru_classic needs r before W_hn (r⊙h), a dependency across hidden
  units, so its step is two kernels (r, z; then n).
- a backward step kernel per cell, built the same way with the pointwise part moved to the
  front: while loading a tile of ∂L/∂a (the operand of the product ∂L/∂h = ∂L/∂a · W_hh), each
  block computes it from ∂L/∂h, ∂L/∂c and the stored gates; blocks of the first column tile
  also store it for the weight gradients. The product's epilogue adds what h_{t−1} receives
  directly (dhs[t−1], z⊙dh for the GRUs) and, for lstm, ∂L/∂c_{t−1}.
- every time loop also as one cooperative launch (``*_forward_persistent``,
  ``*_backward_persistent``; off by default: jit.cuda.backend.persistent): a 1-D grid of
  blocks walks each step's tiles and synchronizes between steps. The step bodies are device
  functions (``*_tile``) that the per-step kernels call with their block's tile, so both
  paths give the same bits.

Shared and local arrays need a compile-time dtype, so ``kernels_for(dtype)`` builds the set
for float32 or float64 (all arithmetic then stays in that dtype: constants are ``DT(1.0)``,
never a bare Python literal, which would promote float32 math to float64). Scalar gate math
comes from jit.gatemath, shared with jit.cpu. No warp-level operation is used, so every
kernel runs unchanged under the CUDA simulator (the persistent ones with a grid of one block,
the simulator's limit for a grid synchronization, which then walks every tile itself).
"""
import math
from functools import lru_cache
from types import SimpleNamespace

import numpy as np
from numba import cuda

from jit.gatemath import relu, relu_grad, sigmoid, sigmoid_grad, tanh, tanh_grad

from .launch import TILES

TILE = TILES.matmul
WORK = TILES.matmul_work
BLOCK = TILE * WORK
KSTEP = TILES.matmul_depth
UNITS = TILES.units
ROWS = TILES.rows
DEPTH = TILES.depth
STEP_THREADS = UNITS * ROWS
# Shared-array shapes must be literal constants to numba.cuda's typing (an expression such as
# DEPTH + 1 inside the shape is not folded), so the padded sizes get names of their own. The
# +1 column keeps threads that read a column of a tile on different shared-memory banks.
DEPTH_PADDED = DEPTH + 1
KSTEP_PADDED = KSTEP + 1
BLOCK_PADDED = BLOCK + 1


@lru_cache(maxsize=None)
def kernels_for(dtype) -> SimpleNamespace:
    """Every kernel for one dtype (np.float32 or np.float64); compiled lazily, on first launch."""
    DT = np.float32 if np.dtype(dtype) == np.float32 else np.float64

    # ----- the matrix product and small helpers -------------------------------------------

    @cuda.jit
    def matmul(a, b, c, bias, trans_a, trans_b, use_bias):
        """c = op(a) @ op(b) (+ bias on every row), op(m) = mᵀ when its flag is set.

        Twin of the products in reference.affine (affine, affine_backward). A block of
        TILE×TILE threads computes a BLOCK×BLOCK tile of c, each thread WORK×WORK elements
        strided by TILE (so that neighbouring threads write neighbouring columns); K advances
        KSTEP at a time through shared tiles. Every load is bounds-checked: no size needs to
        be a multiple of anything.
        """
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
                acc[i, j] = DT(0.0)
        for k0 in range(0, K, KSTEP):
            for e in range(tid, BLOCK * KSTEP, TILE * TILE):
                # The index that runs fastest over threads follows a's memory order (coalesced).
                if trans_a:
                    kk = e // BLOCK
                    i = e - kk * BLOCK
                else:
                    i = e // KSTEP
                    kk = e - i * KSTEP
                v = DT(0.0)
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
                v = DT(0.0)
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
        """out[n] = Σ_m a[m, n], in row order (deterministic); twin of affine_backward's db."""
        for n in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            s = DT(0.0)
            for m in range(a.shape[0]):
                s += a[m, n]
            out[n] = s

    # The elementwise helpers take (R, C) arrays of any strides (a user's device array need not
    # be contiguous) and loop with a grid stride, so any grid covers any size.

    @cuda.jit
    def copy2d(src, dst):
        """dst = src."""
        C = dst.shape[1]
        for i in range(cuda.grid(1), dst.size, cuda.gridsize(1)):
            r = i // C
            dst[r, i - r * C] = src[r, i - r * C]

    @cuda.jit
    def add2d(a, b, dst):
        """dst = a + b."""
        C = dst.shape[1]
        for i in range(cuda.grid(1), dst.size, cuda.gridsize(1)):
            r = i // C
            dst[r, i - r * C] = a[r, i - r * C] + b[r, i - r * C]

    @cuda.jit
    def fill2d(dst, value):
        """dst[:] = value."""
        C = dst.shape[1]
        for i in range(cuda.grid(1), dst.size, cuda.gridsize(1)):
            r = i // C
            dst[r, i - r * C] = value

    @cuda.jit
    def count_nonfinite(flats, counts):
        """counts[s] += the number of NaN or inf in flats[s] (a tuple of 1-D arrays), s = blockIdx.y:
        every input of a call checked in one launch; grid-stride loop along x, atomic count."""
        slot = cuda.blockIdx.y
        flat = flats[slot]
        bad = 0
        for i in range(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x, flat.shape[0],
                       cuda.gridDim.x * cuda.blockDim.x):
            if not math.isfinite(flat[i]):
                bad += 1
        if bad:
            cuda.atomic.add(counts, slot, bad)

    # ----- forward: the recurrent product of all gate rows of a block's hidden units ------

    @cuda.jit(device=True)
    def gate_products(hin, w, row0, acc, h_tile, w_tile, j0, b0):
        """acc[g] += Σ_k hin[b, k]·w[row0 + g·H + j, k], for g < w_tile.shape[0], this thread's
        (b, j) = (b0 + threadIdx.y, j0 + threadIdx.x) in the tile of units j0… and rows b0….

        Twin of the W_hh h products in reference.affine.affine. Every thread of the block must
        call it (they load the shared tiles together), in bounds or not; hin is (B, H).
        """
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
                    h_tile[rr, kk] = DT(0.0)
            for e in range(tid, gates * UNITS * DEPTH, STEP_THREADS):
                g = e // (UNITS * DEPTH)
                u = (e // DEPTH) % UNITS
                kk = e % DEPTH  # fastest: consecutive threads read consecutive k, coalesced
                if j0 + u < H and k0 + kk < H:
                    w_tile[g, u, kk] = w[row0 + g * H + j0 + u, k0 + kk]
                else:
                    w_tile[g, u, kk] = DT(0.0)
            cuda.syncthreads()
            for g in range(gates):
                s = acc[g]
                for kk in range(DEPTH):
                    s += h_tile[ty, kk] * w_tile[g, tx, kk]
                acc[g] = s
            cuda.syncthreads()

    # The persistent kernels (one cooperative launch for a whole time loop) walk a step's tiles
    # with a 1-D grid: tile number q is the tile of units (or columns) j0… and rows b0….

    @cuda.jit(device=True)
    def step_tiles(B, H):
        """How many (units × rows) tiles a step of B rows and H units has."""
        return ((H + UNITS - 1) // UNITS) * ((B + ROWS - 1) // ROWS)

    @cuda.jit(device=True)
    def tile_origin(q, H):
        """(j0, b0), the first unit and first row of tile q (units vary fastest)."""
        unit_tiles = (H + UNITS - 1) // UNITS
        row_tile = q // unit_tiles
        return (q - row_tile * unit_tiles) * UNITS, row_tile * ROWS

    @cuda.jit(device=True)
    def copy_state(src, dst):
        """dst = src (B, H), each element by the thread that steps it: the threads of this block's tiles."""
        H = dst.shape[1]
        for q in range(cuda.blockIdx.x, step_tiles(dst.shape[0], H), cuda.gridDim.x):
            j0, b0 = tile_origin(q, H)
            b = b0 + cuda.threadIdx.y
            j = j0 + cuda.threadIdx.x
            if b < dst.shape[0] and j < H:
                dst[b, j] = src[b, j]

    @cuda.jit(device=True)
    def start_bptt(dh_n, dhs_last, dh, dc_n, use_dc_n, dc):
        """BPTT's start, by the threads of this block's tiles: ∂L/∂h_T = dh_n + dhs[T − 1] into dh and
        (lstm, dc not empty) ∂L/∂c_T = dc_n, or 0 without one, into dc."""
        H = dh.shape[1]
        for q in range(cuda.blockIdx.x, step_tiles(dh.shape[0], H), cuda.gridDim.x):
            j0, b0 = tile_origin(q, H)
            b = b0 + cuda.threadIdx.y
            j = j0 + cuda.threadIdx.x
            if b < dh.shape[0] and j < H:
                dh[b, j] = dh_n[b, j] + dhs_last[b, j]
                if dc.shape[0] > 0:
                    dc[b, j] = dc_n[b, j] if use_dc_n else DT(0.0)

    @cuda.jit(device=True)
    def rnn_step_forward_tile(xw_t, h_prev, w_hh, b_hh, use_relu, h_next, gates_t, j0, b0, h_tile, w_tile, acc):
        """h' = act(xw + b_hh + W_hh h); twin of reference.rnn.rnn_step_forward. gates_t gets h' too.

        On the tile of units j0… and rows b0…; every thread of the block calls it."""
        B = h_prev.shape[0]
        H = h_prev.shape[1]
        j = j0 + cuda.threadIdx.x
        b = b0 + cuda.threadIdx.y
        inside = b < B and j < H
        acc[0] = DT(0.0)
        if inside:
            acc[0] = xw_t[b, j] + b_hh[j]
        gate_products(h_prev, w_hh, 0, acc, h_tile, w_tile, j0, b0)
        if inside:
            h = relu(acc[0]) if use_relu else tanh(acc[0])
            h_next[b, j] = h
            gates_t[b, j] = h

    @cuda.jit
    def rnn_step_forward(xw_t, h_prev, w_hh, b_hh, use_relu, h_next, gates_t):
        """One step: rnn_step_forward_tile on this block's tile."""
        h_tile = cuda.shared.array((ROWS, DEPTH), DT)
        w_tile = cuda.shared.array((1, UNITS, DEPTH_PADDED), DT)
        acc = cuda.local.array(1, DT)
        rnn_step_forward_tile(xw_t, h_prev, w_hh, b_hh, use_relu, h_next, gates_t, cuda.blockIdx.x * UNITS,
                              cuda.blockIdx.y * ROWS, h_tile, w_tile, acc)

    @cuda.jit
    def rnn_forward_persistent(xw, h0, hs_ext, w_hh, b_hh, use_relu, gates, h_n):
        """Every step of reference.backend.forward for rnn (rnn_step_forward) in one cooperative launch (see
        lstm_forward_persistent): hs_ext (T + 1, B, H) holds h0 then h_1 … h_T; gates (T, B, H), or one
        step's scratch (1, B, H) in inference."""
        h_tile = cuda.shared.array((ROWS, DEPTH), DT)
        w_tile = cuda.shared.array((1, UNITS, DEPTH_PADDED), DT)
        acc = cuda.local.array(1, DT)
        grid = cuda.cg.this_grid()
        H = hs_ext.shape[2]
        n_g = gates.shape[0]
        copy_state(h0, hs_ext[0])  # the first slot; step 0 reads all of it
        grid.sync()
        for t in range(xw.shape[0]):
            for q in range(cuda.blockIdx.x, step_tiles(hs_ext.shape[1], H), cuda.gridDim.x):
                j0, b0 = tile_origin(q, H)
                rnn_step_forward_tile(xw[t], hs_ext[t], w_hh, b_hh, use_relu, hs_ext[t + 1], gates[t % n_g], j0, b0,
                                      h_tile, w_tile, acc)
            grid.sync()
        copy_state(hs_ext[xw.shape[0]], h_n)  # by the threads that wrote h_T

    @cuda.jit(device=True)
    def lstm_step_forward_tile(xw_t, h_prev, c_prev, w_hh, b_hh, h_next, c_next, gates_t, j0, b0, h_tile, w_tile,
                               acc):
        """Twin of reference.lstm.lstm_step_forward on the tile of units j0… and rows b0…:
        a = xw + b_hh + W_hh h; i, f, g, o; c'; h'. Every thread of the block calls it."""
        B = h_prev.shape[0]
        H = h_prev.shape[1]
        j = j0 + cuda.threadIdx.x
        b = b0 + cuda.threadIdx.y
        inside = b < B and j < H
        for g in range(4):
            acc[g] = DT(0.0)
            if inside:
                acc[g] = xw_t[b, g * H + j] + b_hh[g * H + j]
        gate_products(h_prev, w_hh, 0, acc, h_tile, w_tile, j0, b0)
        if inside:
            i = sigmoid(acc[0])
            f = sigmoid(acc[1])
            g = tanh(acc[2])
            o = sigmoid(acc[3])
            c = f * c_prev[b, j] + i * g
            c_next[b, j] = c
            h_next[b, j] = o * tanh(c)
            gates_t[b, j] = i
            gates_t[b, H + j] = f
            gates_t[b, 2 * H + j] = g
            gates_t[b, 3 * H + j] = o

    @cuda.jit
    def lstm_step_forward(xw_t, h_prev, c_prev, w_hh, b_hh, h_next, c_next, gates_t):
        """One step of reference.lstm.lstm_step_forward: lstm_step_forward_tile on this block's tile."""
        h_tile = cuda.shared.array((ROWS, DEPTH), DT)
        w_tile = cuda.shared.array((4, UNITS, DEPTH_PADDED), DT)
        acc = cuda.local.array(4, DT)
        lstm_step_forward_tile(xw_t, h_prev, c_prev, w_hh, b_hh, h_next, c_next, gates_t,
                       cuda.blockIdx.x * UNITS, cuda.blockIdx.y * ROWS, h_tile, w_tile, acc)

    @cuda.jit
    def lstm_forward_persistent(xw, h0, c0, hs_ext, c_ext, w_hh, b_hh, gates, h_n, c_n):
        """Every step of reference.backend.forward for lstm (lstm_step_forward) in one cooperative launch: a
        1-D grid of blocks shares the (units × rows) tiles of a step, and the grid synchronizes between
        steps (step t + 1 reads all of h_t). One launch instead of T: a call of the per-step kernels is
        bound by their launches on the host (see the README's H200 run).

        hs_ext (T + 1, B, H) holds h0 then h_1 … h_T; c_ext holds c0 then the cell states, T + 1 of them
        (training) or two in turn (inference); gates (T, B, 4H) or one step's scratch (1, B, 4H). The
        kernel copies h0 and c0 into the first slots itself, and h_T, c_T out into h_n, c_n: a launch
        each saved."""
        h_tile = cuda.shared.array((ROWS, DEPTH), DT)
        w_tile = cuda.shared.array((4, UNITS, DEPTH_PADDED), DT)
        acc = cuda.local.array(4, DT)
        grid = cuda.cg.this_grid()
        H = hs_ext.shape[2]
        n_c = c_ext.shape[0]
        n_g = gates.shape[0]
        copy_state(h0, hs_ext[0])  # the first slot; step 0 reads all of it
        copy_state(c0, c_ext[0])
        grid.sync()
        for t in range(xw.shape[0]):
            for q in range(cuda.blockIdx.x, step_tiles(hs_ext.shape[1], H), cuda.gridDim.x):
                j0, b0 = tile_origin(q, H)
                lstm_step_forward_tile(xw[t], hs_ext[t], c_ext[t % n_c], w_hh, b_hh, hs_ext[t + 1],
                                       c_ext[(t + 1) % n_c], gates[t % n_g], j0, b0, h_tile, w_tile, acc)
            grid.sync()
        copy_state(hs_ext[xw.shape[0]], h_n)  # by the threads that wrote h_T
        copy_state(c_ext[xw.shape[0] % n_c], c_n)

    @cuda.jit(device=True)
    def gru_step_forward_tile(xw_t, h_prev, w_hh, b_hh, h_next, gates_t, j0, b0, h_tile, w_tile, acc):
        """Twin of reference.gru.gru_step_forward: r, z from both products; n = tanh(xw_n + r⊙(W_hn h + b_hn)).

        On the tile of units j0… and rows b0…; every thread of the block calls it."""
        B = h_prev.shape[0]
        H = h_prev.shape[1]
        j = j0 + cuda.threadIdx.x
        b = b0 + cuda.threadIdx.y
        inside = b < B and j < H
        for g in range(3):
            acc[g] = DT(0.0)
        if inside:
            acc[0] = xw_t[b, j] + b_hh[j]
            acc[1] = xw_t[b, H + j] + b_hh[H + j]
            acc[2] = b_hh[2 * H + j]  # W_hn h + b_hn stays apart: r scales it
        gate_products(h_prev, w_hh, 0, acc, h_tile, w_tile, j0, b0)
        if inside:
            r = sigmoid(acc[0])
            z = sigmoid(acc[1])
            n = tanh(xw_t[b, 2 * H + j] + r * acc[2])
            h_next[b, j] = (DT(1.0) - z) * n + z * h_prev[b, j]
            gates_t[b, j] = r
            gates_t[b, H + j] = z
            gates_t[b, 2 * H + j] = n

    @cuda.jit
    def gru_step_forward(xw_t, h_prev, w_hh, b_hh, h_next, gates_t):
        """One step: gru_step_forward_tile on this block's tile."""
        h_tile = cuda.shared.array((ROWS, DEPTH), DT)
        w_tile = cuda.shared.array((3, UNITS, DEPTH_PADDED), DT)
        acc = cuda.local.array(3, DT)
        gru_step_forward_tile(xw_t, h_prev, w_hh, b_hh, h_next, gates_t, cuda.blockIdx.x * UNITS,
                              cuda.blockIdx.y * ROWS, h_tile, w_tile, acc)

    @cuda.jit
    def gru_forward_persistent(xw, h0, hs_ext, w_hh, b_hh, gates, h_n):
        """Every step of reference.backend.forward for gru (gru_step_forward) in one cooperative launch (see
        lstm_forward_persistent): hs_ext (T + 1, B, H) holds h0 then h_1 … h_T; gates (T, B, 3H), or one
        step's scratch (1, B, 3H) in inference."""
        h_tile = cuda.shared.array((ROWS, DEPTH), DT)
        w_tile = cuda.shared.array((3, UNITS, DEPTH_PADDED), DT)
        acc = cuda.local.array(3, DT)
        grid = cuda.cg.this_grid()
        H = hs_ext.shape[2]
        n_g = gates.shape[0]
        copy_state(h0, hs_ext[0])  # the first slot; step 0 reads all of it
        grid.sync()
        for t in range(xw.shape[0]):
            for q in range(cuda.blockIdx.x, step_tiles(hs_ext.shape[1], H), cuda.gridDim.x):
                j0, b0 = tile_origin(q, H)
                gru_step_forward_tile(xw[t], hs_ext[t], w_hh, b_hh, hs_ext[t + 1], gates[t % n_g], j0, b0,
                                      h_tile, w_tile, acc)
            grid.sync()
        copy_state(hs_ext[xw.shape[0]], h_n)  # by the threads that wrote h_T

    @cuda.jit(device=True)
    def gru_classic_step_forward_rz_tile(xw_t, h_prev, w_hh, b_hh, gates_t, rh, j0, b0, h_tile, w_tile, acc):
        """First half of reference.gru.gru_classic_step_forward: r, z, and r⊙h for W_hn.

        On the tile of units j0… and rows b0…; every thread of the block calls it."""
        B = h_prev.shape[0]
        H = h_prev.shape[1]
        j = j0 + cuda.threadIdx.x
        b = b0 + cuda.threadIdx.y
        inside = b < B and j < H
        for g in range(2):
            acc[g] = DT(0.0)
            if inside:
                acc[g] = xw_t[b, g * H + j] + b_hh[g * H + j]
        gate_products(h_prev, w_hh, 0, acc, h_tile, w_tile, j0, b0)
        if inside:
            r = sigmoid(acc[0])
            gates_t[b, j] = r
            gates_t[b, H + j] = sigmoid(acc[1])
            rh[b, j] = r * h_prev[b, j]

    @cuda.jit
    def gru_classic_step_forward_rz(xw_t, h_prev, w_hh, b_hh, gates_t, rh):
        """One step: gru_classic_step_forward_rz_tile on this block's tile."""
        h_tile = cuda.shared.array((ROWS, DEPTH), DT)
        w_tile = cuda.shared.array((2, UNITS, DEPTH_PADDED), DT)
        acc = cuda.local.array(2, DT)
        gru_classic_step_forward_rz_tile(xw_t, h_prev, w_hh, b_hh, gates_t, rh, cuda.blockIdx.x * UNITS,
                                         cuda.blockIdx.y * ROWS, h_tile, w_tile, acc)

    @cuda.jit(device=True)
    def gru_classic_step_forward_n_tile(xw_t, h_prev, rh, w_hh, b_hh, h_next, gates_t, j0, b0, h_tile, w_tile, acc):
        """Second half of reference.gru.gru_classic_step_forward: n = tanh(xw_n + W_hn(r⊙h) + b_hn), h'.

        On the tile of units j0… and rows b0…; every thread of the block calls it."""
        B = h_prev.shape[0]
        H = h_prev.shape[1]
        j = j0 + cuda.threadIdx.x
        b = b0 + cuda.threadIdx.y
        inside = b < B and j < H
        acc[0] = DT(0.0)
        if inside:
            acc[0] = xw_t[b, 2 * H + j] + b_hh[2 * H + j]
        gate_products(rh, w_hh, 2 * H, acc, h_tile, w_tile, j0, b0)
        if inside:
            n = tanh(acc[0])
            z = gates_t[b, H + j]
            h_next[b, j] = (DT(1.0) - z) * n + z * h_prev[b, j]
            gates_t[b, 2 * H + j] = n

    @cuda.jit
    def gru_classic_forward_persistent(xw, h0, hs_ext, w_hh, b_hh, gates, rh, h_n):
        """Every step of reference.backend.forward for gru_classic (gru_classic_step_forward) in one
        cooperative launch (see lstm_forward_persistent): hs_ext (T + 1, B, H) holds h0 then h_1 … h_T;
        gates (T, B, 3H), or one step's scratch (1, B, 3H) in inference. Two grid synchronizations a step:
        r⊙h of every unit before W_hn (r⊙h)."""
        h_tile = cuda.shared.array((ROWS, DEPTH), DT)
        rz_tile = cuda.shared.array((2, UNITS, DEPTH_PADDED), DT)
        n_tile = cuda.shared.array((1, UNITS, DEPTH_PADDED), DT)
        acc = cuda.local.array(2, DT)
        grid = cuda.cg.this_grid()
        H = hs_ext.shape[2]
        tiles = step_tiles(hs_ext.shape[1], H)
        n_g = gates.shape[0]
        copy_state(h0, hs_ext[0])  # the first slot; step 0 reads all of it
        grid.sync()
        for t in range(xw.shape[0]):
            for q in range(cuda.blockIdx.x, tiles, cuda.gridDim.x):
                j0, b0 = tile_origin(q, H)
                gru_classic_step_forward_rz_tile(xw[t], hs_ext[t], w_hh, b_hh, gates[t % n_g], rh, j0, b0,
                                                 h_tile, rz_tile, acc)
            grid.sync()
            for q in range(cuda.blockIdx.x, tiles, cuda.gridDim.x):
                j0, b0 = tile_origin(q, H)
                gru_classic_step_forward_n_tile(xw[t], hs_ext[t], rh, w_hh, b_hh, hs_ext[t + 1], gates[t % n_g], j0, b0,
                                                h_tile, n_tile, acc)
            grid.sync()
        copy_state(hs_ext[xw.shape[0]], h_n)  # by the threads that wrote h_T

    # ----- backward: ∂L/∂h_{t−1} = ∂L/∂a · W_hh with ∂L/∂a computed while its tile loads --------

    @cuda.jit
    def gru_classic_step_forward_n(xw_t, h_prev, rh, w_hh, b_hh, h_next, gates_t):
        """One step: gru_classic_step_forward_n_tile on this block's tile."""
        h_tile = cuda.shared.array((ROWS, DEPTH), DT)
        w_tile = cuda.shared.array((1, UNITS, DEPTH_PADDED), DT)
        acc = cuda.local.array(1, DT)
        gru_classic_step_forward_n_tile(xw_t, h_prev, rh, w_hh, b_hh, h_next, gates_t, cuda.blockIdx.x * UNITS,
                                        cuda.blockIdx.y * ROWS, h_tile, w_tile, acc)

    @cuda.jit(device=True)
    def load_weight_rows(w, row0, r0, n_rows, w_tile, k0):
        """w_tile[q, u] = w[row0 + r0 + q, k0 + u] (zero outside n_rows rows or H columns), k0 = the
        tile's first column."""
        H = w.shape[1]
        tid = cuda.threadIdx.y * UNITS + cuda.threadIdx.x
        for e in range(tid, DEPTH * UNITS, STEP_THREADS):
            q = e // UNITS
            u = e - q * UNITS  # fastest: consecutive threads read consecutive columns, coalesced
            if r0 + q < n_rows and k0 + u < H:
                w_tile[q, u] = w[row0 + r0 + q, k0 + u]
            else:
                w_tile[q, u] = DT(0.0)

    @cuda.jit(device=True)
    def rows_times_weights(acc, da_tile, w_tile):
        """acc + Σ_q da_tile[ty, q]·w_tile[q, tx]: this thread's share of one tile of da · W."""
        ty = cuda.threadIdx.y
        tx = cuda.threadIdx.x
        for q in range(DEPTH):
            acc += da_tile[ty, q] * w_tile[q, tx]
        return acc

    @cuda.jit(device=True)
    def rnn_da(b, j, dh, h_t, use_relu):
        """∂L/∂a = ∂L/∂h'·act'(a), from the output h'; twin of reference.rnn.rnn_step_backward's da."""
        return dh[b, j] * (relu_grad(h_t[b, j]) if use_relu else tanh_grad(h_t[b, j]))

    @cuda.jit(device=True)
    def rnn_step_backward_tile(dh, h_t, w_hh, use_relu, dhs_prev, use_dhs_prev, da_t, dh_prev, k0, b0, da_tile,
                               w_tile):
        """Twin of reference.rnn.rnn_step_backward: da, then ∂L/∂h_{t−1} = da W_hh (+ dhs[t−1]).

        On the tile of columns k0… and rows b0…; every thread of the block calls it."""
        B = dh.shape[0]
        H = dh.shape[1]
        tid = cuda.threadIdx.y * UNITS + cuda.threadIdx.x
        k = k0 + cuda.threadIdx.x
        b = b0 + cuda.threadIdx.y
        store = k0 == 0
        acc = DT(0.0)
        for r0 in range(0, H, DEPTH):
            for e in range(tid, ROWS * DEPTH, STEP_THREADS):
                rr = e // DEPTH
                q = e - rr * DEPTH
                v = DT(0.0)
                if b0 + rr < B and r0 + q < H:
                    v = rnn_da(b0 + rr, r0 + q, dh, h_t, use_relu)
                    if store:
                        da_t[b0 + rr, r0 + q] = v
                da_tile[rr, q] = v
            load_weight_rows(w_hh, 0, r0, H, w_tile, k0)
            cuda.syncthreads()
            acc = rows_times_weights(acc, da_tile, w_tile)
            cuda.syncthreads()
        if b < B and k < H:
            if use_dhs_prev:
                acc += dhs_prev[b, k]
            dh_prev[b, k] = acc

    @cuda.jit
    def rnn_step_backward(dh, h_t, w_hh, use_relu, dhs_prev, use_dhs_prev, da_t, dh_prev):
        """One step: rnn_step_backward_tile on this block's tile."""
        da_tile = cuda.shared.array((ROWS, DEPTH_PADDED), DT)
        w_tile = cuda.shared.array((DEPTH, UNITS), DT)
        rnn_step_backward_tile(dh, h_t, w_hh, use_relu, dhs_prev, use_dhs_prev, da_t, dh_prev,
                               cuda.blockIdx.x * UNITS, cuda.blockIdx.y * ROWS, da_tile, w_tile)

    @cuda.jit
    def rnn_backward_persistent(dh_n, dh_pair, gates, w_hh, use_relu, dhs, da):
        """Every step of reference.backend.backward's time loop for rnn (rnn_step_backward) in one cooperative
        launch (see lstm_backward_persistent): ∂L/∂h of the step being undone is in slot s % 2 of dh_pair (s
        = T − 1 − t), that of the step before goes to the other slot."""
        da_tile = cuda.shared.array((ROWS, DEPTH_PADDED), DT)
        w_tile = cuda.shared.array((DEPTH, UNITS), DT)
        grid = cuda.cg.this_grid()
        T = gates.shape[0]
        H = dh_pair.shape[2]
        start_bptt(dh_n, dhs[T - 1], dh_pair[0], dh_n, False, dh_n[:0])  # into slot 0; step T − 1 reads all of it
        grid.sync()
        for s in range(T):
            t = T - 1 - s
            for q in range(cuda.blockIdx.x, step_tiles(dh_pair.shape[1], H), cuda.gridDim.x):
                k0, b0 = tile_origin(q, H)
                rnn_step_backward_tile(dh_pair[s % 2], gates[t], w_hh, use_relu, dhs[max(t - 1, 0)], t > 0, da[t],
                                       dh_pair[1 - s % 2], k0, b0, da_tile, w_tile)
            grid.sync()

    @cuda.jit(device=True)
    def lstm_dc_total(b, j, dh, dc, gates_t, c_t):
        """∂L/∂c_t from both paths: the next step's cell (dc) and h_t = o⊙tanh(c_t)."""
        H = dh.shape[1]
        return dc[b, j] + dh[b, j] * gates_t[b, 3 * H + j] * tanh_grad(tanh(c_t[b, j]))

    @cuda.jit(device=True)
    def lstm_da(b, r, dh, dc, gates_t, c_prev, c_t):
        """∂L/∂a for gate row r = g·H + j; twin of reference.lstm.lstm_step_backward up to lstm_gates_backward."""
        H = dh.shape[1]
        g = r // H
        j = r - g * H
        if g == 3:
            return dh[b, j] * tanh(c_t[b, j]) * sigmoid_grad(gates_t[b, 3 * H + j])
        dc_total = lstm_dc_total(b, j, dh, dc, gates_t, c_t)
        if g == 0:
            return dc_total * gates_t[b, 2 * H + j] * sigmoid_grad(gates_t[b, j])
        if g == 1:
            return dc_total * c_prev[b, j] * sigmoid_grad(gates_t[b, H + j])
        return dc_total * gates_t[b, j] * tanh_grad(gates_t[b, 2 * H + j])

    @cuda.jit(device=True)
    def lstm_step_backward_tile(dh, dc, gates_t, c_prev, c_t, w_hh, dhs_prev, use_dhs_prev, da_t, dh_prev, dc_prev,
                                k0, b0, da_tile, w_tile):
        """Twin of reference.lstm.lstm_step_backward on the tile of columns k0… and rows b0…: da
        (4 gate rows per unit), da W_hh, ∂L/∂c_{t−1} = f⊙∂L/∂c_t. Tiles of the first columns store da.
        Every thread of the block calls it."""
        B = dh.shape[0]
        H = dh.shape[1]
        n_rows = 4 * H
        tid = cuda.threadIdx.y * UNITS + cuda.threadIdx.x
        k = k0 + cuda.threadIdx.x
        b = b0 + cuda.threadIdx.y
        store = k0 == 0
        acc = DT(0.0)
        for r0 in range(0, n_rows, DEPTH):
            for e in range(tid, ROWS * DEPTH, STEP_THREADS):
                rr = e // DEPTH
                q = e - rr * DEPTH
                v = DT(0.0)
                if b0 + rr < B and r0 + q < n_rows:
                    v = lstm_da(b0 + rr, r0 + q, dh, dc, gates_t, c_prev, c_t)
                    if store:
                        da_t[b0 + rr, r0 + q] = v
                da_tile[rr, q] = v
            load_weight_rows(w_hh, 0, r0, n_rows, w_tile, k0)
            cuda.syncthreads()
            acc = rows_times_weights(acc, da_tile, w_tile)
            cuda.syncthreads()
        if b < B and k < H:
            if use_dhs_prev:
                acc += dhs_prev[b, k]
            dh_prev[b, k] = acc
            dc_prev[b, k] = lstm_dc_total(b, k, dh, dc, gates_t, c_t) * gates_t[b, H + k]

    @cuda.jit
    def lstm_step_backward(dh, dc, gates_t, c_prev, c_t, w_hh, dhs_prev, use_dhs_prev, da_t, dh_prev, dc_prev):
        """One step of reference.lstm.lstm_step_backward: lstm_step_backward_tile on this block's tile."""
        da_tile = cuda.shared.array((ROWS, DEPTH_PADDED), DT)
        w_tile = cuda.shared.array((DEPTH, UNITS), DT)
        lstm_step_backward_tile(dh, dc, gates_t, c_prev, c_t, w_hh, dhs_prev, use_dhs_prev, da_t, dh_prev, dc_prev,
                                cuda.blockIdx.x * UNITS, cuda.blockIdx.y * ROWS, da_tile, w_tile)

    @cuda.jit
    def lstm_backward_persistent(dh_n, dc_n, use_dc_n, dh_pair, dc_pair, gates, cs, c0, w_hh, dhs, da):
        """Every step of reference.backend.backward's time loop for lstm (lstm_step_backward) in one
        cooperative launch, like lstm_forward_persistent: the blocks share each step's tiles, the grid
        synchronizes between steps. ∂L/∂h and ∂L/∂c of the step being undone are in slot s % 2 of dh_pair
        and dc_pair (s = T − 1 − t), those of the step before go to the other slot; the caller puts the last
        step's in slot 0 and reads h0's and c0's from slot T % 2."""
        da_tile = cuda.shared.array((ROWS, DEPTH_PADDED), DT)
        w_tile = cuda.shared.array((DEPTH, UNITS), DT)
        grid = cuda.cg.this_grid()
        T = gates.shape[0]
        H = dh_pair.shape[2]
        start_bptt(dh_n, dhs[T - 1], dh_pair[0], dc_n, use_dc_n, dc_pair[0])  # step T − 1 reads all of it
        grid.sync()
        for s in range(T):
            t = T - 1 - s
            now = s % 2
            before = 1 - now
            for q in range(cuda.blockIdx.x, step_tiles(dh_pair.shape[1], H), cuda.gridDim.x):
                k0, b0 = tile_origin(q, H)
                if t > 0:  # h_{t−1} also feeds the loss directly, unless it is h0
                    lstm_step_backward_tile(dh_pair[now], dc_pair[now], gates[t], cs[t - 1], cs[t], w_hh, dhs[t - 1],
                                            True, da[t], dh_pair[before], dc_pair[before], k0, b0, da_tile, w_tile)
                else:
                    lstm_step_backward_tile(dh_pair[now], dc_pair[now], gates[t], c0, cs[t], w_hh, dhs[0],
                                            False, da[t], dh_pair[before], dc_pair[before], k0, b0, da_tile, w_tile)
            grid.sync()

    @cuda.jit(device=True)
    def gru_da(b, r, dh, gates_t, h_prev, hn_t, da_x_t, da_h_t, store):
        """∂L/∂a for gate row r: the input side (r, z, n) and the hidden side (r, z, r⊙n): returns the latter.

        Twin of reference.gru.gru_step_backward; hn_t = W_hn h + b_hn of this step.
        """
        H = dh.shape[1]
        g = r // H
        j = r - g * H
        reset = gates_t[b, j]
        z = gates_t[b, H + j]
        n = gates_t[b, 2 * H + j]
        if g == 1:
            v = dh[b, j] * (h_prev[b, j] - n) * sigmoid_grad(z)
            if store:
                da_x_t[b, r] = v
                da_h_t[b, r] = v
            return v
        da_n = dh[b, j] * (DT(1.0) - z) * tanh_grad(n)
        if g == 0:
            v = da_n * hn_t[b, j] * sigmoid_grad(reset)
            if store:
                da_x_t[b, r] = v
                da_h_t[b, r] = v
            return v
        if store:
            da_x_t[b, r] = da_n
            da_h_t[b, r] = da_n * reset
        return da_n * reset  # r scales W_hn h + b_hn

    @cuda.jit(device=True)
    def gru_step_backward_tile(dh, gates_t, h_prev, hn_t, w_hh, dhs_prev, use_dhs_prev, da_x_t, da_h_t, dh_prev, k0,
                               b0, da_tile, w_tile):
        """Twin of reference.gru.gru_step_backward: ∂L/∂h_{t−1} = z⊙dh + da_h W_hh (+ dhs[t−1]).

        On the tile of columns k0… and rows b0…; every thread of the block calls it."""
        B = dh.shape[0]
        H = dh.shape[1]
        n_rows = 3 * H
        tid = cuda.threadIdx.y * UNITS + cuda.threadIdx.x
        k = k0 + cuda.threadIdx.x
        b = b0 + cuda.threadIdx.y
        store = k0 == 0
        acc = DT(0.0)
        for r0 in range(0, n_rows, DEPTH):
            for e in range(tid, ROWS * DEPTH, STEP_THREADS):
                rr = e // DEPTH
                q = e - rr * DEPTH
                v = DT(0.0)
                if b0 + rr < B and r0 + q < n_rows:
                    v = gru_da(b0 + rr, r0 + q, dh, gates_t, h_prev, hn_t, da_x_t, da_h_t, store)
                da_tile[rr, q] = v
            load_weight_rows(w_hh, 0, r0, n_rows, w_tile, k0)
            cuda.syncthreads()
            acc = rows_times_weights(acc, da_tile, w_tile)
            cuda.syncthreads()
        if b < B and k < H:
            acc += dh[b, k] * gates_t[b, H + k]
            if use_dhs_prev:
                acc += dhs_prev[b, k]
            dh_prev[b, k] = acc

    @cuda.jit
    def gru_step_backward(dh, gates_t, h_prev, hn_t, w_hh, dhs_prev, use_dhs_prev, da_x_t, da_h_t, dh_prev):
        """One step: gru_step_backward_tile on this block's tile."""
        da_tile = cuda.shared.array((ROWS, DEPTH_PADDED), DT)
        w_tile = cuda.shared.array((DEPTH, UNITS), DT)
        gru_step_backward_tile(dh, gates_t, h_prev, hn_t, w_hh, dhs_prev, use_dhs_prev, da_x_t, da_h_t, dh_prev,
                               cuda.blockIdx.x * UNITS, cuda.blockIdx.y * ROWS, da_tile, w_tile)

    @cuda.jit
    def gru_backward_persistent(dh_n, dh_pair, gates, h_prev_all, hn_all, w_hh, dhs, da_x, da_h):
        """Every step of reference.backend.backward's time loop for gru (gru_step_backward) in one cooperative
        launch (see lstm_backward_persistent): ∂L/∂h of the step being undone is in slot s % 2 of dh_pair (s
        = T − 1 − t), that of the step before goes to the other slot."""
        da_tile = cuda.shared.array((ROWS, DEPTH_PADDED), DT)
        w_tile = cuda.shared.array((DEPTH, UNITS), DT)
        grid = cuda.cg.this_grid()
        T = gates.shape[0]
        H = dh_pair.shape[2]
        start_bptt(dh_n, dhs[T - 1], dh_pair[0], dh_n, False, dh_n[:0])  # into slot 0; step T − 1 reads all of it
        grid.sync()
        for s in range(T):
            t = T - 1 - s
            for q in range(cuda.blockIdx.x, step_tiles(dh_pair.shape[1], H), cuda.gridDim.x):
                k0, b0 = tile_origin(q, H)
                gru_step_backward_tile(dh_pair[s % 2], gates[t], h_prev_all[t], hn_all[t], w_hh, dhs[max(t - 1, 0)],
                                       t > 0, da_x[t], da_h[t], dh_pair[1 - s % 2], k0, b0, da_tile, w_tile)
            grid.sync()

    @cuda.jit(device=True)
    def gru_classic_step_backward_n_tile(dh, gates_t, h_prev, w_hh, da_x_t, da_h_t, d_rh, rh_t, k0, b0, da_tile,
                                         w_tile):
        """First half of reference.gru.gru_classic_step_backward: da_n, then ∂L/∂(r⊙h) = da_n W_hn.

        Also stores r⊙h of this step, the input of W_hn, for ∂L/∂W_hn after the time loop.

        On the tile of columns k0… and rows b0…; every thread of the block calls it."""
        B = dh.shape[0]
        H = dh.shape[1]
        tid = cuda.threadIdx.y * UNITS + cuda.threadIdx.x
        k = k0 + cuda.threadIdx.x
        b = b0 + cuda.threadIdx.y
        store = k0 == 0
        acc = DT(0.0)
        for r0 in range(0, H, DEPTH):
            for e in range(tid, ROWS * DEPTH, STEP_THREADS):
                rr = e // DEPTH
                q = e - rr * DEPTH
                v = DT(0.0)
                bb = b0 + rr
                j = r0 + q
                if bb < B and j < H:
                    v = dh[bb, j] * (DT(1.0) - gates_t[bb, H + j]) * tanh_grad(gates_t[bb, 2 * H + j])
                    if store:
                        da_x_t[bb, 2 * H + j] = v
                        da_h_t[bb, 2 * H + j] = v
                da_tile[rr, q] = v
            load_weight_rows(w_hh, 2 * H, r0, H, w_tile, k0)
            cuda.syncthreads()
            acc = rows_times_weights(acc, da_tile, w_tile)
            cuda.syncthreads()
        if b < B and k < H:
            d_rh[b, k] = acc
            rh_t[b, k] = gates_t[b, k] * h_prev[b, k]

    @cuda.jit
    def gru_classic_step_backward_n(dh, gates_t, h_prev, w_hh, da_x_t, da_h_t, d_rh, rh_t):
        """One step: gru_classic_step_backward_n_tile on this block's tile."""
        da_tile = cuda.shared.array((ROWS, DEPTH_PADDED), DT)
        w_tile = cuda.shared.array((DEPTH, UNITS), DT)
        gru_classic_step_backward_n_tile(dh, gates_t, h_prev, w_hh, da_x_t, da_h_t, d_rh, rh_t,
                                         cuda.blockIdx.x * UNITS, cuda.blockIdx.y * ROWS, da_tile, w_tile)

    @cuda.jit(device=True)
    def gru_classic_da_rz(b, r, dh, gates_t, h_prev, d_rh):
        """∂L/∂a for row r < 2H (r or z block) of gru_classic, given ∂L/∂(r⊙h)."""
        H = dh.shape[1]
        if r < H:
            return d_rh[b, r] * h_prev[b, r] * sigmoid_grad(gates_t[b, r])
        j = r - H
        return dh[b, j] * (h_prev[b, j] - gates_t[b, 2 * H + j]) * sigmoid_grad(gates_t[b, r])

    @cuda.jit(device=True)
    def gru_classic_step_backward_rz_tile(dh, gates_t, h_prev, d_rh, w_hh, dhs_prev, use_dhs_prev, da_x_t, da_h_t,
                                          dh_prev, k0, b0, da_tile, w_tile):
        """Second half of reference.gru.gru_classic_step_backward: ∂L/∂h_{t−1} = z⊙dh + r⊙∂L/∂(r⊙h) + da_rz W_hrz.

        On the tile of columns k0… and rows b0…; every thread of the block calls it."""
        B = dh.shape[0]
        H = dh.shape[1]
        n_rows = 2 * H
        tid = cuda.threadIdx.y * UNITS + cuda.threadIdx.x
        k = k0 + cuda.threadIdx.x
        b = b0 + cuda.threadIdx.y
        store = k0 == 0
        acc = DT(0.0)
        for r0 in range(0, n_rows, DEPTH):
            for e in range(tid, ROWS * DEPTH, STEP_THREADS):
                rr = e // DEPTH
                q = e - rr * DEPTH
                v = DT(0.0)
                if b0 + rr < B and r0 + q < n_rows:
                    v = gru_classic_da_rz(b0 + rr, r0 + q, dh, gates_t, h_prev, d_rh)
                    if store:
                        da_x_t[b0 + rr, r0 + q] = v
                        da_h_t[b0 + rr, r0 + q] = v
                da_tile[rr, q] = v
            load_weight_rows(w_hh, 0, r0, n_rows, w_tile, k0)
            cuda.syncthreads()
            acc = rows_times_weights(acc, da_tile, w_tile)
            cuda.syncthreads()
        if b < B and k < H:
            acc += dh[b, k] * gates_t[b, H + k] + d_rh[b, k] * gates_t[b, k]
            if use_dhs_prev:
                acc += dhs_prev[b, k]
            dh_prev[b, k] = acc

    @cuda.jit
    def gru_classic_step_backward_rz(dh, gates_t, h_prev, d_rh, w_hh, dhs_prev, use_dhs_prev, da_x_t, da_h_t,
                                     dh_prev):
        """One step: gru_classic_step_backward_rz_tile on this block's tile."""
        da_tile = cuda.shared.array((ROWS, DEPTH_PADDED), DT)
        w_tile = cuda.shared.array((DEPTH, UNITS), DT)
        gru_classic_step_backward_rz_tile(dh, gates_t, h_prev, d_rh, w_hh, dhs_prev, use_dhs_prev, da_x_t, da_h_t,
                                          dh_prev, cuda.blockIdx.x * UNITS, cuda.blockIdx.y * ROWS, da_tile, w_tile)

    @cuda.jit
    def gru_classic_backward_persistent(dh_n, dh_pair, gates, h_prev_all, d_rh, rh_all, w_hh, dhs, da_x,
                                        da_h):
        """Every step of reference.backend.backward's time loop for gru_classic (gru_classic_step_backward) in
        one cooperative launch (see lstm_backward_persistent): ∂L/∂h of the step being undone is in slot s %
        2 of dh_pair (s = T − 1 − t), that of the step before goes to the other slot. Two grid
        synchronizations a step: ∂L/∂(r⊙h) of every unit before the r rows' da."""
        da_tile = cuda.shared.array((ROWS, DEPTH_PADDED), DT)
        w_tile = cuda.shared.array((DEPTH, UNITS), DT)
        grid = cuda.cg.this_grid()
        T = gates.shape[0]
        H = dh_pair.shape[2]
        tiles = step_tiles(dh_pair.shape[1], H)
        start_bptt(dh_n, dhs[T - 1], dh_pair[0], dh_n, False, dh_n[:0])  # into slot 0; step T − 1 reads all of it
        grid.sync()
        for s in range(T):
            t = T - 1 - s
            for q in range(cuda.blockIdx.x, tiles, cuda.gridDim.x):
                k0, b0 = tile_origin(q, H)
                gru_classic_step_backward_n_tile(dh_pair[s % 2], gates[t], h_prev_all[t], w_hh, da_x[t], da_h[t], d_rh,
                                                 rh_all[t], k0, b0, da_tile, w_tile)
            grid.sync()
            for q in range(cuda.blockIdx.x, tiles, cuda.gridDim.x):
                k0, b0 = tile_origin(q, H)
                gru_classic_step_backward_rz_tile(dh_pair[s % 2], gates[t], h_prev_all[t], d_rh, w_hh,
                                                  dhs[max(t - 1, 0)], t > 0, da_x[t], da_h[t], dh_pair[1 - s % 2],
                                                  k0, b0, da_tile, w_tile)
            grid.sync()

    return SimpleNamespace(
        dtype=np.dtype(DT), matmul=matmul, column_sums=column_sums, copy2d=copy2d, add2d=add2d, fill2d=fill2d,
        count_nonfinite=count_nonfinite,
        rnn_step_forward=rnn_step_forward, lstm_step_forward=lstm_step_forward, gru_step_forward=gru_step_forward,
        rnn_forward_persistent=rnn_forward_persistent, lstm_forward_persistent=lstm_forward_persistent,
        gru_forward_persistent=gru_forward_persistent, gru_classic_forward_persistent=gru_classic_forward_persistent,
        rnn_backward_persistent=rnn_backward_persistent, lstm_backward_persistent=lstm_backward_persistent,
        gru_backward_persistent=gru_backward_persistent,
        gru_classic_backward_persistent=gru_classic_backward_persistent,
        gru_classic_step_forward_rz=gru_classic_step_forward_rz,
        gru_classic_step_forward_n=gru_classic_step_forward_n,
        rnn_step_backward=rnn_step_backward, lstm_step_backward=lstm_step_backward,
        gru_step_backward=gru_step_backward, gru_classic_step_backward_n=gru_classic_step_backward_n,
        gru_classic_step_backward_rz=gru_classic_step_backward_rz,
    )
