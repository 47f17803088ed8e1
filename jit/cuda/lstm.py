"""The LSTM's kernels; twin: reference.lstm.

Forward: ``lstm_step_forward`` computes one step on one tile (a, the gates i, f, g, o, c', h');
the per-step kernel runs it on its block's tile, the persistent kernel on every tile of every
step, the layer kernel on rows of different lengths (a row past its length keeps h and c; see
jit.cuda.tiles.row_step). Backward, in the same order: ∂L/∂a of the four gate rows of each unit
while loading it, ∂L/∂h_{t−1} = ∂L/∂a W_hh, and ∂L/∂c_{t−1} = f⊙∂L/∂c_t.
"""
from numba import cuda

from jit.gatemath import sigmoid, sigmoid_grad, tanh, tanh_grad

from .split import KERNEL_OPTIONS as SPLIT_KERNEL_OPTIONS
from .split import (CHUNK_ROWS, SPLIT_DEPTH_PADDED, SPLIT_ROWS_PER_THREAD, SPLIT_UNITS, add_partials,
                    complete_gradients, completed_gradient, copy_state_split, element_stride, first_element,
                    gradient_before, product_phase)
from .tiles import (DEPTH, DEPTH_PADDED, ROWS, STEP_THREADS, UNITS, copy_state, gate_products, load_weight_rows,
                    place_output, previous_output, row_step, rows_times_weights, start_bptt, step_tiles, tile_origin)


# ----- forward --------------------------------------------------------------------------------------

@cuda.jit(device=True)
def lstm_input_side(xw, t, b, j, b_hh, acc):
    """acc[g] = the pre-activation of gate block g at (b, j) but for h W_hhᵀ, which the caller adds:
    affine's a = x W_ihᵀ + b_ih (xw, projected for all steps) + b_hh + h W_hhᵀ, blocks i, f, g, o.
    twin: reference.lstm.lstm_step_forward's affine"""
    H = b_hh.shape[0] // 4
    for g in range(4):
        acc[g] = xw[t, b, g * H + j] + b_hh[g * H + j]


@cuda.jit(device=True)
def lstm_update(acc, b, j, c_prev, h_next, c_next, gates_s):
    """The gates, c' and h' at (b, j) from the pre-activations acc[0:4], stored with the gates.
    twin: reference.lstm.lstm_step_forward after affine"""
    H = h_next.shape[1]
    # lstm_gates: i = σ(a_i), f = σ(a_f), g = tanh(a_g), o = σ(a_o)
    i = sigmoid(acc[0])
    f = sigmoid(acc[1])
    g = tanh(acc[2])
    o = sigmoid(acc[3])
    # lstm_cell_update: c' = f⊙c + i⊙g
    c = f * c_prev[b, j] + i * g
    c_next[b, j] = c
    # lstm_output: h' = o⊙tanh(c')
    h_next[b, j] = o * tanh(c)
    gates_s[b, j] = i
    gates_s[b, H + j] = f
    gates_s[b, 2 * H + j] = g
    gates_s[b, 3 * H + j] = o


@cuda.jit(device=True)
def lstm_step_forward(xw, lengths, s, reverse, h_prev, c_prev, w_hh, b_hh, h_next, c_next, gates_s, j0, b0, h_tile,
                      w_tile, acc):
    """One step on the tile of units j0… and rows b0…, at scan step s (each row's time step from
    row_step; a row past its length keeps h and c): a, i, f, g, o, c', h'.
    twin: reference.lstm.lstm_step_forward"""
    B = h_prev.shape[0]
    H = h_prev.shape[1]
    j = j0 + cuda.threadIdx.x
    b = b0 + cuda.threadIdx.y
    inside = b < B and j < H
    active = False
    t = s
    if inside:
        active, t = row_step(lengths, s, reverse, b)
    for g in range(4):
        acc[g] = acc.dtype.type(0.0)
    if active:
        lstm_input_side(xw, t, b, j, b_hh, acc)
    gate_products(h_prev, w_hh, 0, acc, h_tile, w_tile, j0, b0)
    if active:
        lstm_update(acc, b, j, c_prev, h_next, c_next, gates_s)
    elif inside:  # past the row's length: its state is carried unchanged
        h_next[b, j] = h_prev[b, j]
        c_next[b, j] = c_prev[b, j]


@cuda.jit
def lstm_step_forward_kernel(xw, t, h0, c0, hs, cs, w_hh, b_hh, gates):
    """Step t: lstm_step_forward on this block's tile, from h0, c0 (t = 0) or the states step t − 1
    wrote, into hs[t], cs[t % len(cs)] and gates[t % len(gates)]: cs holds every step's cell state
    (training) or two in turn, gates every step's (training) or one step's scratch.
    twin: reference.lstm.lstm_step_forward"""
    DT = hs.dtype
    h_tile = cuda.shared.array((ROWS, DEPTH), DT)
    w_tile = cuda.shared.array((4, UNITS, DEPTH_PADDED), DT)
    acc = cuda.local.array(4, DT)
    h_prev = h0 if t == 0 else hs[t - 1]
    c_prev = c0 if t == 0 else cs[(t - 1) % cs.shape[0]]
    lstm_step_forward(xw, None, t, False, h_prev, c_prev, w_hh, b_hh, hs[t], cs[t % cs.shape[0]],
                      gates[t % gates.shape[0]], cuda.blockIdx.x * UNITS, cuda.blockIdx.y * ROWS, h_tile, w_tile, acc)


@cuda.jit
def lstm_layer_step_forward_kernel(xw, lengths, s, reverse, h_first, h_steps, h_last, c_first, c_steps, c_last,
                                   w_hh, b_hh, gates, out):
    """Scan step s of one layer-direction over rows of different lengths: lstm_step_forward on this
    block's tile, then the output of each row at its time step (out (T, B, H), zeros when padded).
    The states h and c, and the gates, as rnn_layer_step_forward_kernel's h and gates.
    twin: reference.layers.run_direction over reference.lstm.lstm_step_forward"""
    DT = h_last.dtype
    last = xw.shape[0] - 1
    h_prev = h_first if s == 0 else h_steps[(s - 1) % h_steps.shape[0]]
    h_next = h_last if s == last else h_steps[s % h_steps.shape[0]]
    c_prev = c_first if s == 0 else c_steps[(s - 1) % c_steps.shape[0]]
    c_next = c_last if s == last else c_steps[s % c_steps.shape[0]]
    gates_s = gates[s % gates.shape[0]]
    h_tile = cuda.shared.array((ROWS, DEPTH), DT)
    w_tile = cuda.shared.array((4, UNITS, DEPTH_PADDED), DT)
    acc = cuda.local.array(4, DT)
    j0 = cuda.blockIdx.x * UNITS
    b0 = cuda.blockIdx.y * ROWS
    lstm_step_forward(xw, lengths, s, reverse, h_prev, c_prev, w_hh, b_hh, h_next, c_next, gates_s, j0, b0, h_tile,
                      w_tile, acc)
    place_output(lengths, s, reverse, h_next, out, j0, b0)


@cuda.jit
def lstm_forward_persistent_kernel(xw, h0, c0, hs_ext, c_ext, w_hh, b_hh, gates, h_n, c_n):
    """Every step in one cooperative launch instead of T: a 1-D grid of blocks shares each step's
    (units × rows) tiles, and the grid synchronizes between steps (step t + 1 reads all of h_t).

    hs_ext (T + 1, B, H) holds h0 then h_1 … h_T; c_ext holds c0 then the cell states, T + 1 of them
    (training) or two in turn (inference); gates (T, B, 4H), or one step's scratch (1, B, 4H). The
    kernel copies h0, c0 into the first slots and h_T, c_T out into h_n, c_n itself (no launch each).
    twin: reference.backend.forward's time loop over reference.lstm.lstm_step_forward"""
    DT = hs_ext.dtype
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
            lstm_step_forward(xw, None, t, False, hs_ext[t], c_ext[t % n_c], w_hh, b_hh, hs_ext[t + 1],
                              c_ext[(t + 1) % n_c], gates[t % n_g], j0, b0, h_tile, w_tile, acc)
        grid.sync()
    copy_state(hs_ext[xw.shape[0]], h_n)  # by the threads that wrote h_T
    copy_state(c_ext[xw.shape[0] % n_c], c_n)


@cuda.jit(**SPLIT_KERNEL_OPTIONS)
def lstm_forward_split_kernel(xw, h0, c0, hs_ext, c_ext, w_hh, b_hh, gates, h_n, c_n, partial, slice_depth):
    """lstm_forward_persistent_kernel's steps in two phases each (jit.cuda.split): the partial
    products of every (units, slice of k) item into partial (slices, B, 4H), a grid.sync, then the
    pointwise update of every (b, j) from xw + b_hh + the partials; the same arrays otherwise.
    twin: reference.backend.forward's time loop over reference.lstm.lstm_step_forward"""
    DT = hs_ext.dtype
    w_slice = cuda.shared.array((4, SPLIT_UNITS, SPLIT_DEPTH_PADDED), DT)
    h_slice = cuda.shared.array((CHUNK_ROWS, SPLIT_DEPTH_PADDED), DT)
    sums = cuda.local.array((4, SPLIT_ROWS_PER_THREAD), DT)
    pre = cuda.local.array(4, DT)
    T = xw.shape[0]
    H = hs_ext.shape[2]
    n_c = c_ext.shape[0]
    n_g = gates.shape[0]
    copy_state_split(h0, hs_ext[0])
    copy_state_split(c0, c_ext[0])
    for t in range(T):
        product_phase(hs_ext[t], w_hh, False, t == 0, slice_depth, partial, w_slice, h_slice, sums)
        for e in range(first_element(), hs_ext.shape[1] * H, element_stride()):
            b = e // H
            j = e - b * H
            lstm_input_side(xw, t, b, j, b_hh, pre)
            add_partials(partial, b, j, H, pre)
            lstm_update(pre, b, j, c_ext[t % n_c], hs_ext[t + 1], c_ext[(t + 1) % n_c], gates[t % n_g])
    copy_state_split(hs_ext[T], h_n)
    copy_state_split(c_ext[T % n_c], c_n)


# ----- backward -------------------------------------------------------------------------------------

@cuda.jit(device=True)
def lstm_dc_total(b, j, dh, dc, gates_t, c_t):
    """∂L/∂c_t from both paths: the next step's cell (dc) and h_t = o⊙tanh(c_t).
    twin: reference.lstm.lstm_step_backward's dc_next + dc_from_h (lstm_output_backward)"""
    H = dh.shape[1]
    return dc[b, j] + dh[b, j] * gates_t[b, 3 * H + j] * tanh_grad(tanh(c_t[b, j]))


@cuda.jit(device=True)
def lstm_da(b, r, dh, dc, gates_t, c_prev, c_t):
    """∂L/∂a for gate row r = g·H + j.
    twin: reference.lstm.lstm_step_backward, up to lstm_gates_backward"""
    H = dh.shape[1]
    g = r // H
    j = r - g * H
    if g == 3:  # lstm_output_backward: ∂L/∂o = dh⊙tanh(c'); lstm_gates_backward: ·σ'
        return dh[b, j] * tanh(c_t[b, j]) * sigmoid_grad(gates_t[b, 3 * H + j])
    dc_total = lstm_dc_total(b, j, dh, dc, gates_t, c_t)
    # lstm_cell_update_backward: ∂L/∂i = dc⊙g, ∂L/∂f = dc⊙c, ∂L/∂g = dc⊙i; lstm_gates_backward: ·σ' or ·tanh'
    if g == 0:
        return dc_total * gates_t[b, 2 * H + j] * sigmoid_grad(gates_t[b, j])
    if g == 1:
        return dc_total * c_prev[b, j] * sigmoid_grad(gates_t[b, H + j])
    return dc_total * gates_t[b, j] * tanh_grad(gates_t[b, 2 * H + j])


@cuda.jit(device=True)
def lstm_step_backward(dh, dc, gates_s, c_prev, c_s, w_hh, dhs, lengths, s, reverse, da_x, da_h_s, dh_prev, dc_prev,
                       k0, b0, da_tile, w_tile):
    """da (4 gate rows per unit), ∂L/∂h_{s−1} = da W_hh (+ dhs of the step before) and
    ∂L/∂c_{s−1} = f⊙∂L/∂c_s on the tile of columns k0… and rows b0…, at scan step s; the tiles of
    the first columns store da at each row's time step in da_x (T, B, 4H), zero at a padded
    position, and in reverse also at s in da_h_s (dW_hh pairs it with the states in step order). A
    row past its length passes ∂L/∂h and ∂L/∂c through: its state was carried.
    twin: reference.lstm.lstm_step_backward"""
    B = dh.shape[0]
    H = dh.shape[1]
    n_rows = 4 * H
    tid = cuda.threadIdx.y * UNITS + cuda.threadIdx.x
    k = k0 + cuda.threadIdx.x
    b = b0 + cuda.threadIdx.y
    store = k0 == 0
    acc = dh.dtype.type(0.0)
    for r0 in range(0, n_rows, DEPTH):
        for e in range(tid, ROWS * DEPTH, STEP_THREADS):
            rr = e // DEPTH
            q = e - rr * DEPTH
            v = dh.dtype.type(0.0)
            if b0 + rr < B and r0 + q < n_rows:
                active, t = row_step(lengths, s, reverse, b0 + rr)
                if active:
                    v = lstm_da(b0 + rr, r0 + q, dh, dc, gates_s, c_prev, c_s)
                if store:
                    da_x[t, b0 + rr, r0 + q] = v
                    if reverse:
                        da_h_s[b0 + rr, r0 + q] = v
            da_tile[rr, q] = v
        # affine_backward: ∂L/∂h = da W_hh
        load_weight_rows(w_hh, 0, r0, n_rows, w_tile, k0)
        cuda.syncthreads()
        acc = rows_times_weights(acc, da_tile, w_tile)
        cuda.syncthreads()
    if b < B and k < H:
        active, t = row_step(lengths, s, reverse, b)
        if active:
            # lstm_cell_update_backward: ∂L/∂c = ∂L/∂c'⊙f
            dc_prev[b, k] = lstm_dc_total(b, k, dh, dc, gates_s, c_s) * gates_s[b, H + k]
        else:
            acc = dh[b, k]
            dc_prev[b, k] = dc[b, k]
        output, t_before = previous_output(lengths, s, reverse, b)
        if output:  # reference.backend.backward: h_{t−1} also feeds the loss
            acc += dhs[t_before, b, k]
        dh_prev[b, k] = acc


@cuda.jit
def lstm_step_backward_kernel(dh, dc, gates, c0, cs, w_hh, dhs, t, da, dh_prev, dc_prev):
    """Step t: lstm_step_backward on this block's tile; gates and cs (T, B, ·) hold every step's, c0
    is the cell state before step 0. twin: reference.lstm.lstm_step_backward"""
    DT = dh.dtype
    da_tile = cuda.shared.array((ROWS, DEPTH_PADDED), DT)
    w_tile = cuda.shared.array((DEPTH, UNITS), DT)
    c_prev = c0 if t == 0 else cs[t - 1]
    lstm_step_backward(dh, dc, gates[t], c_prev, cs[t], w_hh, dhs, None, t, False, da, da[t], dh_prev, dc_prev,
                       cuda.blockIdx.x * UNITS, cuda.blockIdx.y * ROWS, da_tile, w_tile)


@cuda.jit
def lstm_layer_step_backward_kernel(dh, dc, gates, c0, cs, w_hh, dhs, lengths, s, reverse, da_x, da_h, dh_prev,
                                    dc_prev):
    """Scan step s of one layer-direction's BPTT over rows of different lengths: lstm_step_backward
    on this block's tile; gates, the cell states after each step and da_h (T, B, ·) in step order,
    whole, indexed here by s, c0 the cell state before step 0.
    twin: reference.layers.run_direction_backward over reference.lstm.lstm_step_backward"""
    DT = dh.dtype
    da_tile = cuda.shared.array((ROWS, DEPTH_PADDED), DT)
    w_tile = cuda.shared.array((DEPTH, UNITS), DT)
    c_prev = c0 if s == 0 else cs[s - 1]
    lstm_step_backward(dh, dc, gates[s], c_prev, cs[s], w_hh, dhs, lengths, s, reverse, da_x, da_h[s], dh_prev, dc_prev,
                       cuda.blockIdx.x * UNITS, cuda.blockIdx.y * ROWS, da_tile, w_tile)


@cuda.jit
def lstm_backward_persistent_kernel(dh_n, dc_n, use_dc_n, dh_pair, dc_pair, gates, cs, c0, w_hh, dhs, da):
    """Every step of BPTT in one cooperative launch, like lstm_forward_persistent_kernel. ∂L/∂h and
    ∂L/∂c of the step being undone are in slot s % 2 of dh_pair and dc_pair (s = T − 1 − t), those of
    the step before go to the other slot; the kernel starts BPTT in slot 0 itself, and h0's and c0's
    end in slot T % 2. twin: reference.backend.backward's time loop over reference.lstm.lstm_step_backward"""
    DT = dh_pair.dtype
    da_tile = cuda.shared.array((ROWS, DEPTH_PADDED), DT)
    w_tile = cuda.shared.array((DEPTH, UNITS), DT)
    grid = cuda.cg.this_grid()
    T = gates.shape[0]
    H = dh_pair.shape[2]
    start_bptt(dh_n, dhs, None, False, dh_pair[0], dc_n, use_dc_n, dc_pair[0])  # step T − 1 reads all of it
    grid.sync()
    for s in range(T):
        t = T - 1 - s
        now = s % 2
        before = 1 - now
        for q in range(cuda.blockIdx.x, step_tiles(dh_pair.shape[1], H), cuda.gridDim.x):
            k0, b0 = tile_origin(q, H)
            if t > 0:
                lstm_step_backward(dh_pair[now], dc_pair[now], gates[t], cs[t - 1], cs[t], w_hh, dhs, None, t, False,
                                   da, da[t], dh_pair[before], dc_pair[before], k0, b0, da_tile, w_tile)
            else:  # the cell state before step 0 is c0
                lstm_step_backward(dh_pair[now], dc_pair[now], gates[t], c0, cs[t], w_hh, dhs, None, t, False, da,
                                   da[t], dh_pair[before], dc_pair[before], k0, b0, da_tile, w_tile)
        grid.sync()


@cuda.jit(**SPLIT_KERNEL_OPTIONS)
def lstm_backward_split_kernel(dh_n, dc_n, use_dc_n, dh_pair, dc_pair, gates, cs, c0, w_hh, dhs, da, partial,
                               slice_depth):
    """lstm_backward_persistent_kernel's steps in two phases each (jit.cuda.split): per (b, j), ∂L/∂h_t
    completed, the four gates' da once, ∂L/∂c_{t−1} = f⊙∂L/∂c_t and dhs[t − 1] into the other slots;
    a grid.sync; da W_hh split-K into partial; a grid.sync. The same arrays otherwise; ∂L/∂h0 and
    ∂L/∂c0 end in slot T % 2. twin: reference.backend.backward's time loop over
    reference.lstm.lstm_step_backward"""
    DT = dh_pair.dtype
    w_slice = cuda.shared.array((1, SPLIT_UNITS, SPLIT_DEPTH_PADDED), DT)
    in_slice = cuda.shared.array((CHUNK_ROWS, SPLIT_DEPTH_PADDED), DT)
    sums = cuda.local.array((1, SPLIT_ROWS_PER_THREAD), DT)
    T = gates.shape[0]
    H = dh_pair.shape[2]
    for s in range(T):
        t = T - 1 - s
        now = s % 2
        dh = dh_pair[now]
        dc = dc_pair[now]
        c_prev = c0 if t == 0 else cs[t - 1]
        for e in range(first_element(), dh_pair.shape[1] * H, element_stride()):
            b = e // H
            j = e - b * H
            completed_gradient(dh_n, dhs, partial, s == 0, t, b, j, dh)
            if s == 0:  # ∂L/∂c_T = dc_n, or 0 without one
                dc[b, j] = dc_n[b, j] if use_dc_n else dc.dtype.type(0.0)
            for g in range(4):
                da[t, b, g * H + j] = lstm_da(b, g * H + j, dh, dc, gates[t], c_prev, cs[t])
            # lstm_cell_update_backward: ∂L/∂c = ∂L/∂c'⊙f
            dc_pair[1 - now][b, j] = lstm_dc_total(b, j, dh, dc, gates[t], cs[t]) * gates[t][b, H + j]
            dh_pair[1 - now][b, j] = gradient_before(dhs, t, b, j)
        product_phase(da[t], w_hh, True, s == 0, slice_depth, partial, w_slice, in_slice, sums)
    complete_gradients(partial, dh_pair[T % 2])
