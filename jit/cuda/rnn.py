"""The vanilla RNN's kernels (rnn_tanh, rnn_relu); twin: reference.rnn.

Forward: ``rnn_step_forward`` computes one step on one tile, h' = act(xw + b_hh + W_hh h); the
per-step kernel runs it on its block's tile, the persistent kernel on every tile of every step, the
layer kernel on rows of different lengths (a row past its length keeps its state; see
jit.cuda.tiles.row_step). Backward, in the same order: ∂L/∂a while loading it, then
∂L/∂h_{t−1} = ∂L/∂a W_hh.
"""
from numba import cuda

from jit.gatemath import relu, relu_grad, tanh, tanh_grad

from .split import KERNEL_OPTIONS as SPLIT_KERNEL_OPTIONS
from .split import (CHUNK_ROWS, SPLIT_DEPTH_PADDED, SPLIT_ROWS_PER_THREAD, SPLIT_UNITS, add_partials,
                    complete_gradients, completed_gradient, copy_state_split, element_stride, first_element,
                    gradient_before, product_phase)
from .tiles import (DEPTH, DEPTH_PADDED, ROWS, STEP_THREADS, UNITS, copy_state, gate_products, load_weight_rows,
                    place_output, previous_output, row_step, rows_times_weights, start_bptt, step_tiles, tile_origin)


# ----- forward --------------------------------------------------------------------------------------

@cuda.jit(device=True)
def rnn_input_side(xw, t, b, j, b_hh, acc):
    """acc[0] = the pre-activation at (b, j) but for h W_hhᵀ, which the caller adds: affine's
    a = x W_ihᵀ + b_ih (xw, projected for all steps) + b_hh + h W_hhᵀ. twin: reference.rnn's affine"""
    acc[0] = xw[t, b, j] + b_hh[j]


@cuda.jit(device=True)
def rnn_update(acc, b, j, use_relu, h_next, gates_s):
    """h' = act(a) at (b, j), into h_next and gates_s. twin: reference.rnn.rnn_step_forward's act"""
    h = relu(acc[0]) if use_relu else tanh(acc[0])
    h_next[b, j] = h
    gates_s[b, j] = h


@cuda.jit(device=True)
def rnn_step_forward(xw, lengths, s, reverse, h_prev, w_hh, b_hh, use_relu, h_next, gates_s, j0, b0, h_tile, w_tile,
                     acc):
    """h' = act(xw + b_hh + W_hh h) on the tile of units j0… and rows b0…, at scan step s (each row's
    time step from row_step; a row past its length keeps its state); gates_s gets h' too.
    twin: reference.rnn.rnn_step_forward"""
    B = h_prev.shape[0]
    H = h_prev.shape[1]
    j = j0 + cuda.threadIdx.x
    b = b0 + cuda.threadIdx.y
    inside = b < B and j < H
    active = False
    t = s
    if inside:
        active, t = row_step(lengths, s, reverse, b)
    acc[0] = acc.dtype.type(0.0)
    if active:
        rnn_input_side(xw, t, b, j, b_hh, acc)
    gate_products(h_prev, w_hh, 0, acc, h_tile, w_tile, j0, b0)
    if active:
        rnn_update(acc, b, j, use_relu, h_next, gates_s)
    elif inside:  # past the row's length: its state is carried unchanged
        h_next[b, j] = h_prev[b, j]


@cuda.jit
def rnn_step_forward_kernel(xw, t, h0, hs, w_hh, b_hh, use_relu, gates):
    """Step t: rnn_step_forward on this block's tile, from h0 (t = 0) or hs[t − 1] into hs[t] and
    gates[t] (gates (T, B, H), or hs itself in inference). twin: reference.rnn.rnn_step_forward"""
    DT = hs.dtype
    h_tile = cuda.shared.array((ROWS, DEPTH), DT)
    w_tile = cuda.shared.array((1, UNITS, DEPTH_PADDED), DT)
    acc = cuda.local.array(1, DT)
    h_prev = h0 if t == 0 else hs[t - 1]
    rnn_step_forward(xw, None, t, False, h_prev, w_hh, b_hh, use_relu, hs[t], gates[t], cuda.blockIdx.x * UNITS,
                     cuda.blockIdx.y * ROWS, h_tile, w_tile, acc)


@cuda.jit
def rnn_layer_step_forward_kernel(xw, lengths, s, reverse, h_first, h_steps, h_last, w_hh, b_hh, use_relu, gates,
                                  out):
    """Scan step s of one layer-direction over rows of different lengths: rnn_step_forward on this
    block's tile, then the output of each row at its time step (out (T, B, H), zeros when padded).
    The states are given whole, indexed here by s (no per-step view made on the host): step s
    reads h_first (s = 0) or h_steps[(s − 1) % len], and writes h_steps[s % len], or h_last at the
    last step (every step's in training, two in turn in inference); gates[s % len(gates)].
    twin: reference.layers.run_direction over reference.rnn.rnn_step_forward"""
    DT = h_last.dtype
    h_prev = h_first if s == 0 else h_steps[(s - 1) % h_steps.shape[0]]
    h_next = h_last if s == xw.shape[0] - 1 else h_steps[s % h_steps.shape[0]]
    gates_s = gates[s % gates.shape[0]]
    h_tile = cuda.shared.array((ROWS, DEPTH), DT)
    w_tile = cuda.shared.array((1, UNITS, DEPTH_PADDED), DT)
    acc = cuda.local.array(1, DT)
    j0 = cuda.blockIdx.x * UNITS
    b0 = cuda.blockIdx.y * ROWS
    rnn_step_forward(xw, lengths, s, reverse, h_prev, w_hh, b_hh, use_relu, h_next, gates_s, j0, b0, h_tile, w_tile,
                     acc)
    place_output(lengths, s, reverse, h_next, out, j0, b0)


@cuda.jit
def rnn_forward_persistent_kernel(xw, h0, hs_ext, w_hh, b_hh, use_relu, gates, h_n):
    """Every step in one cooperative launch (see lstm_forward_persistent_kernel): hs_ext (T + 1, B, H)
    holds h0 then h_1 … h_T; gates (T, B, H), or one step's scratch (1, B, H) in inference.
    twin: reference.backend.forward's time loop over reference.rnn.rnn_step_forward"""
    DT = hs_ext.dtype
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
            rnn_step_forward(xw, None, t, False, hs_ext[t], w_hh, b_hh, use_relu, hs_ext[t + 1], gates[t % n_g],
                             j0, b0, h_tile, w_tile, acc)
        grid.sync()
    copy_state(hs_ext[xw.shape[0]], h_n)  # by the threads that wrote h_T


@cuda.jit(**SPLIT_KERNEL_OPTIONS)
def rnn_forward_split_kernel(xw, h0, hs_ext, w_hh, b_hh, use_relu, gates, h_n, partial, slice_depth):
    """rnn_forward_persistent_kernel's steps in two phases each, as lstm_forward_split_kernel.
    twin: reference.backend.forward's time loop over reference.rnn.rnn_step_forward"""
    DT = hs_ext.dtype
    w_slice = cuda.shared.array((1, SPLIT_UNITS, SPLIT_DEPTH_PADDED), DT)
    h_slice = cuda.shared.array((CHUNK_ROWS, SPLIT_DEPTH_PADDED), DT)
    sums = cuda.local.array((1, SPLIT_ROWS_PER_THREAD), DT)
    pre = cuda.local.array(1, DT)
    T = xw.shape[0]
    H = hs_ext.shape[2]
    n_g = gates.shape[0]
    copy_state_split(h0, hs_ext[0])
    for t in range(T):
        product_phase(hs_ext[t], w_hh, False, t == 0, slice_depth, partial, w_slice, h_slice, sums)
        for e in range(first_element(), hs_ext.shape[1] * H, element_stride()):
            b = e // H
            j = e - b * H
            rnn_input_side(xw, t, b, j, b_hh, pre)
            add_partials(partial, b, j, H, pre)
            rnn_update(pre, b, j, use_relu, hs_ext[t + 1], gates[t % n_g])
    copy_state_split(hs_ext[T], h_n)


# ----- backward -------------------------------------------------------------------------------------

@cuda.jit(device=True)
def rnn_da(b, j, dh, h_t, use_relu):
    """∂L/∂a = ∂L/∂h'·act'(a), from the output h'. twin: reference.rnn.rnn_step_backward's da"""
    return dh[b, j] * (relu_grad(h_t[b, j]) if use_relu else tanh_grad(h_t[b, j]))


@cuda.jit(device=True)
def rnn_step_backward(dh, h_s, w_hh, use_relu, dhs, lengths, s, reverse, da_x, da_h_s, dh_prev, k0, b0, da_tile,
                      w_tile):
    """da, then ∂L/∂h_{s−1} = da W_hh (+ dhs of the step before) on the tile of columns k0… and rows
    b0…, at scan step s; the tiles of the first columns store da at each row's time step in da_x
    (T, B, H), zero at a padded position, and in reverse also at s in da_h_s (dW_hh pairs it with the
    states in step order). A row past its length passes ∂L/∂h through: its state was carried.
    twin: reference.rnn.rnn_step_backward"""
    B = dh.shape[0]
    H = dh.shape[1]
    tid = cuda.threadIdx.y * UNITS + cuda.threadIdx.x
    k = k0 + cuda.threadIdx.x
    b = b0 + cuda.threadIdx.y
    store = k0 == 0
    acc = dh.dtype.type(0.0)
    for r0 in range(0, H, DEPTH):
        for e in range(tid, ROWS * DEPTH, STEP_THREADS):
            rr = e // DEPTH
            q = e - rr * DEPTH
            v = dh.dtype.type(0.0)
            if b0 + rr < B and r0 + q < H:
                active, t = row_step(lengths, s, reverse, b0 + rr)
                if active:
                    v = rnn_da(b0 + rr, r0 + q, dh, h_s, use_relu)
                if store:
                    da_x[t, b0 + rr, r0 + q] = v
                    if reverse:
                        da_h_s[b0 + rr, r0 + q] = v
            da_tile[rr, q] = v
        # affine_backward: ∂L/∂h = da W_hh
        load_weight_rows(w_hh, 0, r0, H, w_tile, k0)
        cuda.syncthreads()
        acc = rows_times_weights(acc, da_tile, w_tile)
        cuda.syncthreads()
    if b < B and k < H:
        active, t = row_step(lengths, s, reverse, b)
        if not active:
            acc = dh[b, k]
        output, t_before = previous_output(lengths, s, reverse, b)
        if output:  # reference.backend.backward: h_{t−1} also feeds the loss
            acc += dhs[t_before, b, k]
        dh_prev[b, k] = acc


@cuda.jit
def rnn_step_backward_kernel(dh, gates, w_hh, use_relu, dhs, t, da, dh_prev):
    """Step t: rnn_step_backward on this block's tile; gates (T, B, H) hold every step's h'.
    twin: reference.rnn.rnn_step_backward"""
    DT = dh.dtype
    da_tile = cuda.shared.array((ROWS, DEPTH_PADDED), DT)
    w_tile = cuda.shared.array((DEPTH, UNITS), DT)
    rnn_step_backward(dh, gates[t], w_hh, use_relu, dhs, None, t, False, da, da[t], dh_prev, cuda.blockIdx.x * UNITS,
                      cuda.blockIdx.y * ROWS, da_tile, w_tile)


@cuda.jit
def rnn_layer_step_backward_kernel(dh, gates, w_hh, use_relu, dhs, lengths, s, reverse, da_x, da_h, dh_prev):
    """Scan step s of one layer-direction's BPTT over rows of different lengths: rnn_step_backward on
    this block's tile; gates (the activations) and da_h (T, B, H) in step order, whole, indexed here
    by s. twin: reference.layers.run_direction_backward over reference.rnn.rnn_step_backward"""
    DT = dh.dtype
    da_tile = cuda.shared.array((ROWS, DEPTH_PADDED), DT)
    w_tile = cuda.shared.array((DEPTH, UNITS), DT)
    rnn_step_backward(dh, gates[s], w_hh, use_relu, dhs, lengths, s, reverse, da_x, da_h[s], dh_prev,
                      cuda.blockIdx.x * UNITS, cuda.blockIdx.y * ROWS, da_tile, w_tile)


@cuda.jit
def rnn_backward_persistent_kernel(dh_n, dh_pair, gates, w_hh, use_relu, dhs, da):
    """Every step of BPTT in one cooperative launch (see lstm_backward_persistent_kernel): ∂L/∂h of the
    step being undone is in slot s % 2 of dh_pair (s = T − 1 − t), that of the step before goes to the
    other slot. twin: reference.backend.backward's time loop over reference.rnn.rnn_step_backward"""
    DT = dh_pair.dtype
    da_tile = cuda.shared.array((ROWS, DEPTH_PADDED), DT)
    w_tile = cuda.shared.array((DEPTH, UNITS), DT)
    grid = cuda.cg.this_grid()
    T = gates.shape[0]
    H = dh_pair.shape[2]
    start_bptt(dh_n, dhs, None, False, dh_pair[0], dh_n, False, dh_n[:0])  # into slot 0; step T − 1 reads all of it
    grid.sync()
    for s in range(T):
        t = T - 1 - s
        for q in range(cuda.blockIdx.x, step_tiles(dh_pair.shape[1], H), cuda.gridDim.x):
            k0, b0 = tile_origin(q, H)
            rnn_step_backward(dh_pair[s % 2], gates[t], w_hh, use_relu, dhs, None, t, False, da, da[t],
                              dh_pair[1 - s % 2], k0, b0, da_tile, w_tile)
        grid.sync()


@cuda.jit(**SPLIT_KERNEL_OPTIONS)
def rnn_backward_split_kernel(dh_n, dh_pair, gates, w_hh, use_relu, dhs, da, partial, slice_depth):
    """rnn_backward_persistent_kernel's steps in two phases each (jit.cuda.split): per (b, j), ∂L/∂h_t
    completed, da once, and dhs[t − 1] into the other slot; a grid.sync; da W_hh split-K into partial;
    a grid.sync. The same arrays otherwise; ∂L/∂h0 ends in slot T % 2.
    twin: reference.backend.backward's time loop over reference.rnn.rnn_step_backward"""
    DT = dh_pair.dtype
    w_slice = cuda.shared.array((1, SPLIT_UNITS, SPLIT_DEPTH_PADDED), DT)
    in_slice = cuda.shared.array((CHUNK_ROWS, SPLIT_DEPTH_PADDED), DT)
    sums = cuda.local.array((1, SPLIT_ROWS_PER_THREAD), DT)
    T = gates.shape[0]
    H = dh_pair.shape[2]
    for s in range(T):
        t = T - 1 - s
        dh = dh_pair[s % 2]
        for e in range(first_element(), dh_pair.shape[1] * H, element_stride()):
            b = e // H
            j = e - b * H
            completed_gradient(dh_n, dhs, partial, s == 0, t, b, j, dh)
            da[t, b, j] = rnn_da(b, j, dh, gates[t], use_relu)
            dh_pair[1 - s % 2][b, j] = gradient_before(dhs, t, b, j)
        product_phase(da[t], w_hh, True, s == 0, slice_depth, partial, w_slice, in_slice, sums)
    complete_gradients(partial, dh_pair[T % 2])
