"""The GRU's kernels, both forms; twin: reference.gru.

gru (PyTorch / cuDNN): ``gru_step_forward`` computes one step on one tile; r scales W_hn h + b_hn,
which stays apart from the input side. gru_classic needs r⊙h of every unit before W_hn (r⊙h), a
dependency across tiles, so each of its steps is two halves (rz, then n), two kernels per step or
two grid synchronizations in the persistent kernel; its backward likewise (n, then rz). Each form
reads forward tile, per-step kernel, persistent kernel, layer kernel (rows of different lengths: a
row past its length keeps its state; see jit.cuda.tiles.row_step), then backward in the same order.
"""
from numba import cuda

from jit.gatemath import sigmoid, sigmoid_grad, tanh, tanh_grad

from .split import KERNEL_OPTIONS as SPLIT_KERNEL_OPTIONS
from .split import (CHUNK_ROWS, SPLIT_DEPTH_PADDED, SPLIT_ROWS_PER_THREAD, SPLIT_UNITS, add_partials,
                    complete_gradients, completed_gradient, copy_state_split, element_stride, first_element,
                    gradient_before, product_phase)
from .tiles import (DEPTH, DEPTH_PADDED, ROWS, STEP_THREADS, UNITS, copy_state, gate_products, load_weight_rows,
                    place_output, previous_output, row_step, rows_times_weights, start_bptt, step_tiles, tile_origin)


# ----- gru forward ----------------------------------------------------------------------------------

@cuda.jit(device=True)
def gru_input_side(xw, t, b, j, b_hh, acc):
    """acc = what the pre-activations at (b, j) hold before h W_hhᵀ, which the caller adds: affine's
    a_x + b_hh for r and z; b_hn alone for n (W_hn h + b_hn stays apart: r scales it).
    twin: reference.gru.gru_step_forward's affine"""
    H = b_hh.shape[0] // 3
    acc[0] = xw[t, b, j] + b_hh[j]
    acc[1] = xw[t, b, H + j] + b_hh[H + j]
    acc[2] = b_hh[2 * H + j]


@cuda.jit(device=True)
def gru_update(acc, xw, t, b, j, h_prev, h_next, gates_s):
    """r, z, n = tanh(xw_n + r⊙(W_hn h + b_hn)) and h' at (b, j) from acc, stored with the gates.
    twin: reference.gru.gru_step_forward after affine"""
    H = h_next.shape[1]
    r = sigmoid(acc[0])
    z = sigmoid(acc[1])
    n = tanh(xw[t, b, 2 * H + j] + r * acc[2])
    # gru_mix: h' = (1 − z)⊙n + z⊙h
    h_next[b, j] = (h_next.dtype.type(1.0) - z) * n + z * h_prev[b, j]
    gates_s[b, j] = r
    gates_s[b, H + j] = z
    gates_s[b, 2 * H + j] = n


@cuda.jit(device=True)
def gru_step_forward(xw, lengths, s, reverse, h_prev, w_hh, b_hh, h_next, gates_s, j0, b0, h_tile, w_tile, acc):
    """One step on the tile of units j0… and rows b0…, at scan step s (each row's time step from
    row_step; a row past its length keeps its state): r, z, n = tanh(xw_n + r⊙(W_hn h + b_hn)), h'.
    twin: reference.gru.gru_step_forward"""
    B = h_prev.shape[0]
    H = h_prev.shape[1]
    j = j0 + cuda.threadIdx.x
    b = b0 + cuda.threadIdx.y
    inside = b < B and j < H
    active = False
    t = s
    if inside:
        active, t = row_step(lengths, s, reverse, b)
    for g in range(3):
        acc[g] = acc.dtype.type(0.0)
    if active:
        gru_input_side(xw, t, b, j, b_hh, acc)
    gate_products(h_prev, w_hh, 0, acc, h_tile, w_tile, j0, b0)
    if active:
        gru_update(acc, xw, t, b, j, h_prev, h_next, gates_s)
    elif inside:  # past the row's length: its state is carried unchanged
        h_next[b, j] = h_prev[b, j]


@cuda.jit
def gru_step_forward_kernel(xw, t, h0, hs, w_hh, b_hh, gates):
    """Step t: gru_step_forward on this block's tile, from h0 (t = 0) or hs[t − 1] into hs[t] and
    gates[t % len(gates)] (every step's, or one step's scratch). twin: reference.gru.gru_step_forward"""
    DT = hs.dtype
    h_tile = cuda.shared.array((ROWS, DEPTH), DT)
    w_tile = cuda.shared.array((3, UNITS, DEPTH_PADDED), DT)
    acc = cuda.local.array(3, DT)
    h_prev = h0 if t == 0 else hs[t - 1]
    gru_step_forward(xw, None, t, False, h_prev, w_hh, b_hh, hs[t], gates[t % gates.shape[0]], cuda.blockIdx.x * UNITS,
                     cuda.blockIdx.y * ROWS, h_tile, w_tile, acc)


@cuda.jit
def gru_layer_step_forward_kernel(xw, lengths, s, reverse, h_first, h_steps, h_last, w_hh, b_hh, gates, out):
    """Scan step s of one layer-direction over rows of different lengths: gru_step_forward on this
    block's tile, then the output of each row at its time step (out (T, B, H), zeros when padded).
    States and gates as rnn_layer_step_forward_kernel's.
    twin: reference.layers.run_direction over reference.gru.gru_step_forward"""
    DT = h_last.dtype
    h_prev = h_first if s == 0 else h_steps[(s - 1) % h_steps.shape[0]]
    h_next = h_last if s == xw.shape[0] - 1 else h_steps[s % h_steps.shape[0]]
    gates_s = gates[s % gates.shape[0]]
    h_tile = cuda.shared.array((ROWS, DEPTH), DT)
    w_tile = cuda.shared.array((3, UNITS, DEPTH_PADDED), DT)
    acc = cuda.local.array(3, DT)
    j0 = cuda.blockIdx.x * UNITS
    b0 = cuda.blockIdx.y * ROWS
    gru_step_forward(xw, lengths, s, reverse, h_prev, w_hh, b_hh, h_next, gates_s, j0, b0, h_tile, w_tile, acc)
    place_output(lengths, s, reverse, h_next, out, j0, b0)


@cuda.jit
def gru_forward_persistent_kernel(xw, h0, hs_ext, w_hh, b_hh, gates, h_n):
    """Every step in one cooperative launch (see lstm_forward_persistent_kernel): hs_ext (T + 1, B, H)
    holds h0 then h_1 … h_T; gates (T, B, 3H), or one step's scratch (1, B, 3H) in inference.
    twin: reference.backend.forward's time loop over reference.gru.gru_step_forward"""
    DT = hs_ext.dtype
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
            gru_step_forward(xw, None, t, False, hs_ext[t], w_hh, b_hh, hs_ext[t + 1], gates[t % n_g], j0, b0, h_tile,
                             w_tile, acc)
        grid.sync()
    copy_state(hs_ext[xw.shape[0]], h_n)  # by the threads that wrote h_T


@cuda.jit(**SPLIT_KERNEL_OPTIONS)
def gru_forward_split_kernel(xw, h0, hs_ext, w_hh, b_hh, gates, h_n, partial, slice_depth):
    """gru_forward_persistent_kernel's steps in two phases each, as lstm_forward_split_kernel.
    twin: reference.backend.forward's time loop over reference.gru.gru_step_forward"""
    DT = hs_ext.dtype
    w_slice = cuda.shared.array((3, SPLIT_UNITS, SPLIT_DEPTH_PADDED), DT)
    h_slice = cuda.shared.array((CHUNK_ROWS, SPLIT_DEPTH_PADDED), DT)
    sums = cuda.local.array((3, SPLIT_ROWS_PER_THREAD), DT)
    pre = cuda.local.array(3, DT)
    T = xw.shape[0]
    H = hs_ext.shape[2]
    n_g = gates.shape[0]
    copy_state_split(h0, hs_ext[0])
    for t in range(T):
        product_phase(hs_ext[t], w_hh, False, t == 0, slice_depth, partial, w_slice, h_slice, sums)
        for e in range(first_element(), hs_ext.shape[1] * H, element_stride()):
            b = e // H
            j = e - b * H
            gru_input_side(xw, t, b, j, b_hh, pre)
            add_partials(partial, b, j, H, pre)
            gru_update(pre, xw, t, b, j, hs_ext[t], hs_ext[t + 1], gates[t % n_g])
    copy_state_split(hs_ext[T], h_n)


# ----- gru backward ---------------------------------------------------------------------------------

@cuda.jit(device=True)
def gru_da(b, r, dh, gates_s, h_prev, hn_s):
    """∂L/∂a for gate row r: (input side (r, z, n), hidden side (r, z, r⊙n)). hn_s = W_hn h + b_hn of
    this step. twin: reference.gru.gru_step_backward's da_x, da_h"""
    H = dh.shape[1]
    g = r // H
    j = r - g * H
    reset = gates_s[b, j]
    z = gates_s[b, H + j]
    n = gates_s[b, 2 * H + j]
    if g == 1:  # gru_mix_backward: ∂L/∂z = dh⊙(h − n); ·σ'
        v = dh[b, j] * (h_prev[b, j] - n) * sigmoid_grad(z)
        return v, v
    # gru_mix_backward: ∂L/∂n = dh⊙(1 − z); ·tanh'
    da_n = dh[b, j] * (dh.dtype.type(1.0) - z) * tanh_grad(n)
    if g == 0:
        v = da_n * hn_s[b, j] * sigmoid_grad(reset)
        return v, v
    return da_n, da_n * reset  # r scales W_hn h + b_hn


@cuda.jit(device=True)
def gru_step_backward(dh, gates_s, h_prev, hn_s, w_hh, dhs, lengths, s, reverse, da_x, da_h_s, dh_prev, k0, b0,
                      da_tile, w_tile):
    """∂L/∂h_{s−1} = z⊙dh + da_h W_hh (+ dhs of the step before) on the tile of columns k0… and rows
    b0…, at scan step s; the tiles of the first columns store da_x at each row's time step (zero at
    a padded position) and da_h at s (step order, as the states dW_hh pairs it with). A row past its
    length passes ∂L/∂h through: its state was carried. twin: reference.gru.gru_step_backward"""
    B = dh.shape[0]
    H = dh.shape[1]
    n_rows = 3 * H
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
                v_x = dh.dtype.type(0.0)
                if active:
                    v_x, v = gru_da(b0 + rr, r0 + q, dh, gates_s, h_prev, hn_s)
                if store:
                    da_x[t, b0 + rr, r0 + q] = v_x
                    da_h_s[b0 + rr, r0 + q] = v
            da_tile[rr, q] = v
        # affine_backward: ∂L/∂h = da_h W_hh
        load_weight_rows(w_hh, 0, r0, n_rows, w_tile, k0)
        cuda.syncthreads()
        acc = rows_times_weights(acc, da_tile, w_tile)
        cuda.syncthreads()
    if b < B and k < H:
        active, t = row_step(lengths, s, reverse, b)
        if active:
            acc += dh[b, k] * gates_s[b, H + k]  # gru_mix_backward: the z⊙h term
        else:
            acc = dh[b, k]
        output, t_before = previous_output(lengths, s, reverse, b)
        if output:  # reference.backend.backward: h_{t−1} also feeds the loss
            acc += dhs[t_before, b, k]
        dh_prev[b, k] = acc


@cuda.jit
def gru_step_backward_kernel(dh, gates, h_prev_all, hn_all, w_hh, dhs, t, da_x, da_h, dh_prev):
    """Step t: gru_step_backward on this block's tile; gates, h_prev_all (h_{t−1}), hn_all
    (W_hn h_{t−1} + b_hn) and da_h hold every step's. twin: reference.gru.gru_step_backward"""
    DT = dh.dtype
    da_tile = cuda.shared.array((ROWS, DEPTH_PADDED), DT)
    w_tile = cuda.shared.array((DEPTH, UNITS), DT)
    gru_step_backward(dh, gates[t], h_prev_all[t], hn_all[t], w_hh, dhs, None, t, False, da_x, da_h[t], dh_prev,
                      cuda.blockIdx.x * UNITS, cuda.blockIdx.y * ROWS, da_tile, w_tile)


@cuda.jit
def gru_layer_step_backward_kernel(dh, gates, h_prev_all, hn_all, w_hh, dhs, lengths, s, reverse, da_x, da_h, dh_prev):
    """Scan step s of one layer-direction's BPTT over rows of different lengths: gru_step_backward on
    this block's tile; gates, the states read, W_hn h + b_hn and da_h (T, B, ·) in step order, whole,
    indexed here by s. twin: reference.layers.run_direction_backward over reference.gru.gru_step_backward"""
    DT = dh.dtype
    da_tile = cuda.shared.array((ROWS, DEPTH_PADDED), DT)
    w_tile = cuda.shared.array((DEPTH, UNITS), DT)
    gru_step_backward(dh, gates[s], h_prev_all[s], hn_all[s], w_hh, dhs, lengths, s, reverse, da_x, da_h[s], dh_prev,
                      cuda.blockIdx.x * UNITS, cuda.blockIdx.y * ROWS, da_tile, w_tile)


@cuda.jit
def gru_backward_persistent_kernel(dh_n, dh_pair, gates, h_prev_all, hn_all, w_hh, dhs, da_x, da_h):
    """Every step of BPTT in one cooperative launch (see lstm_backward_persistent_kernel): ∂L/∂h of the
    step being undone is in slot s % 2 of dh_pair (s = T − 1 − t), that of the step before goes to the
    other slot. twin: reference.backend.backward's time loop over reference.gru.gru_step_backward"""
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
            gru_step_backward(dh_pair[s % 2], gates[t], h_prev_all[t], hn_all[t], w_hh, dhs, None, t, False, da_x,
                              da_h[t], dh_pair[1 - s % 2], k0, b0, da_tile, w_tile)
        grid.sync()



@cuda.jit(**SPLIT_KERNEL_OPTIONS)
def gru_backward_split_kernel(dh_n, dh_pair, gates, h_prev_all, hn_all, w_hh, dhs, da_x, da_h, partial, slice_depth):
    """gru_backward_persistent_kernel's steps in two phases each (jit.cuda.split): per (b, j), ∂L/∂h_t
    completed, the three gates' da_x and da_h once, z⊙∂L/∂h_t + dhs[t − 1] into the other slot; a
    grid.sync; da_h W_hh split-K into partial; a grid.sync. The same arrays otherwise; ∂L/∂h0 ends in
    slot T % 2. twin: reference.backend.backward's time loop over reference.gru.gru_step_backward"""
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
            for g in range(3):
                v_x, v_h = gru_da(b, g * H + j, dh, gates[t], h_prev_all[t], hn_all[t])
                da_x[t, b, g * H + j] = v_x
                da_h[t, b, g * H + j] = v_h
            # gru_mix_backward: the z⊙h term of ∂L/∂h_{t−1}
            dh_pair[1 - s % 2][b, j] = dh[b, j] * gates[t][b, H + j] + gradient_before(dhs, t, b, j)
        product_phase(da_h[t], w_hh, True, s == 0, slice_depth, partial, w_slice, in_slice, sums)
    complete_gradients(partial, dh_pair[T % 2])

# ----- gru_classic forward: r, z and r⊙h; then n and h' ------------------------------------------------

@cuda.jit(device=True)
def gru_classic_step_forward_rz(xw, lengths, s, reverse, h_prev, w_hh, b_hh, gates_s, rh, j0, b0, h_tile, w_tile,
                                acc):
    """First half of a step on the tile of units j0… and rows b0…, at scan step s: r, z, and r⊙h for
    W_hn (zero for a row past its length, which the second half keeps as it was).
    twin: reference.gru.gru_classic_step_forward, up to rh"""
    B = h_prev.shape[0]
    H = h_prev.shape[1]
    j = j0 + cuda.threadIdx.x
    b = b0 + cuda.threadIdx.y
    inside = b < B and j < H
    active = False
    t = s
    if inside:
        active, t = row_step(lengths, s, reverse, b)
    # affine: a_x + a_rz, blocks r and z
    for g in range(2):
        acc[g] = acc.dtype.type(0.0)
        if active:
            acc[g] = xw[t, b, g * H + j] + b_hh[g * H + j]
    gate_products(h_prev, w_hh, 0, acc, h_tile, w_tile, j0, b0)
    if active:
        r = sigmoid(acc[0])
        gates_s[b, j] = r
        gates_s[b, H + j] = sigmoid(acc[1])
        rh[b, j] = r * h_prev[b, j]
    elif inside:
        rh[b, j] = rh.dtype.type(0.0)


@cuda.jit
def gru_classic_step_forward_rz_kernel(xw, t, h0, hs, w_hh, b_hh, gates, rh):
    """First half of step t: gru_classic_step_forward_rz on this block's tile, from h0 (t = 0) or
    hs[t − 1], into gates[t % len(gates)] and rh. twin: reference.gru.gru_classic_step_forward, up to rh"""
    DT = gates.dtype
    h_tile = cuda.shared.array((ROWS, DEPTH), DT)
    w_tile = cuda.shared.array((2, UNITS, DEPTH_PADDED), DT)
    acc = cuda.local.array(2, DT)
    h_prev = h0 if t == 0 else hs[t - 1]
    gru_classic_step_forward_rz(xw, None, t, False, h_prev, w_hh, b_hh, gates[t % gates.shape[0]], rh,
                                cuda.blockIdx.x * UNITS, cuda.blockIdx.y * ROWS, h_tile, w_tile, acc)


@cuda.jit
def gru_classic_layer_step_forward_rz_kernel(xw, lengths, s, reverse, h_first, h_steps, w_hh, b_hh, gates, rh):
    """First half of scan step s of one layer-direction over rows of different lengths:
    gru_classic_step_forward_rz on this block's tile. States and gates as
    rnn_layer_step_forward_kernel's.
    twin: reference.layers.run_direction over reference.gru.gru_classic_step_forward, up to rh"""
    DT = gates.dtype
    h_prev = h_first if s == 0 else h_steps[(s - 1) % h_steps.shape[0]]
    gates_s = gates[s % gates.shape[0]]
    h_tile = cuda.shared.array((ROWS, DEPTH), DT)
    w_tile = cuda.shared.array((2, UNITS, DEPTH_PADDED), DT)
    acc = cuda.local.array(2, DT)
    gru_classic_step_forward_rz(xw, lengths, s, reverse, h_prev, w_hh, b_hh, gates_s, rh, cuda.blockIdx.x * UNITS,
                                cuda.blockIdx.y * ROWS, h_tile, w_tile, acc)


@cuda.jit(device=True)
def gru_classic_step_forward_n(xw, lengths, s, reverse, h_prev, rh, w_hh, b_hh, h_next, gates_s, j0, b0, h_tile,
                               w_tile, acc):
    """Second half of a step on the tile of units j0… and rows b0…, at scan step s:
    n = tanh(xw_n + W_hn(r⊙h) + b_hn), h'; a row past its length keeps its state.
    twin: reference.gru.gru_classic_step_forward, from n"""
    B = h_prev.shape[0]
    H = h_prev.shape[1]
    j = j0 + cuda.threadIdx.x
    b = b0 + cuda.threadIdx.y
    inside = b < B and j < H
    active = False
    t = s
    if inside:
        active, t = row_step(lengths, s, reverse, b)
    # affine: a_x + W_hn (r⊙h) + b_hn, block n
    acc[0] = acc.dtype.type(0.0)
    if active:
        acc[0] = xw[t, b, 2 * H + j] + b_hh[2 * H + j]
    gate_products(rh, w_hh, 2 * H, acc, h_tile, w_tile, j0, b0)
    if active:
        n = tanh(acc[0])
        z = gates_s[b, H + j]
        # gru_mix: h' = (1 − z)⊙n + z⊙h
        h_next[b, j] = (h_next.dtype.type(1.0) - z) * n + z * h_prev[b, j]
        gates_s[b, 2 * H + j] = n
    elif inside:  # past the row's length: its state is carried unchanged
        h_next[b, j] = h_prev[b, j]


@cuda.jit
def gru_classic_step_forward_n_kernel(xw, t, h0, hs, rh, w_hh, b_hh, gates):
    """Second half of step t: gru_classic_step_forward_n on this block's tile, from h0 (t = 0) or
    hs[t − 1] into hs[t]. twin: reference.gru.gru_classic_step_forward, from n"""
    DT = hs.dtype
    h_tile = cuda.shared.array((ROWS, DEPTH), DT)
    w_tile = cuda.shared.array((1, UNITS, DEPTH_PADDED), DT)
    acc = cuda.local.array(1, DT)
    h_prev = h0 if t == 0 else hs[t - 1]
    gru_classic_step_forward_n(xw, None, t, False, h_prev, rh, w_hh, b_hh, hs[t], gates[t % gates.shape[0]],
                               cuda.blockIdx.x * UNITS, cuda.blockIdx.y * ROWS, h_tile, w_tile, acc)


@cuda.jit
def gru_classic_layer_step_forward_n_kernel(xw, lengths, s, reverse, h_first, h_steps, h_last, rh, w_hh, b_hh, gates,
                                            out):
    """Second half of scan step s of one layer-direction over rows of different lengths:
    gru_classic_step_forward_n on this block's tile, then the output of each row at its time step
    (out (T, B, H), zeros when padded). States and gates as rnn_layer_step_forward_kernel's.
    twin: reference.layers.run_direction over reference.gru.gru_classic_step_forward, from n"""
    DT = h_last.dtype
    h_prev = h_first if s == 0 else h_steps[(s - 1) % h_steps.shape[0]]
    h_next = h_last if s == xw.shape[0] - 1 else h_steps[s % h_steps.shape[0]]
    gates_s = gates[s % gates.shape[0]]
    h_tile = cuda.shared.array((ROWS, DEPTH), DT)
    w_tile = cuda.shared.array((1, UNITS, DEPTH_PADDED), DT)
    acc = cuda.local.array(1, DT)
    j0 = cuda.blockIdx.x * UNITS
    b0 = cuda.blockIdx.y * ROWS
    gru_classic_step_forward_n(xw, lengths, s, reverse, h_prev, rh, w_hh, b_hh, h_next, gates_s, j0, b0, h_tile,
                               w_tile, acc)
    place_output(lengths, s, reverse, h_next, out, j0, b0)


@cuda.jit
def gru_classic_forward_persistent_kernel(xw, h0, hs_ext, w_hh, b_hh, gates, rh, h_n):
    """Every step in one cooperative launch (see lstm_forward_persistent_kernel), with two grid
    synchronizations a step: r⊙h of every unit before W_hn (r⊙h). hs_ext (T + 1, B, H) holds h0 then
    h_1 … h_T; gates (T, B, 3H), or one step's scratch (1, B, 3H) in inference.
    twin: reference.backend.forward's time loop over reference.gru.gru_classic_step_forward"""
    DT = hs_ext.dtype
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
            gru_classic_step_forward_rz(xw, None, t, False, hs_ext[t], w_hh, b_hh, gates[t % n_g], rh, j0, b0, h_tile,
                                        rz_tile, acc)
        grid.sync()
        for q in range(cuda.blockIdx.x, tiles, cuda.gridDim.x):
            j0, b0 = tile_origin(q, H)
            gru_classic_step_forward_n(xw, None, t, False, hs_ext[t], rh, w_hh, b_hh, hs_ext[t + 1], gates[t % n_g],
                                       j0, b0, h_tile, n_tile, acc)
        grid.sync()
    copy_state(hs_ext[xw.shape[0]], h_n)  # by the threads that wrote h_T


# ----- gru_classic backward: da_n and ∂L/∂(r⊙h); then da_r, da_z and ∂L/∂h_{t−1} ----------------------

@cuda.jit(device=True)
def gru_classic_step_backward_n(dh, gates_s, h_prev, w_hh, lengths, s, reverse, da_x, da_h_s, d_rh, rh_s, k0, b0,
                                da_tile, w_tile):
    """First half of a step on the tile of columns k0… and rows b0…, at scan step s: da_n, then
    ∂L/∂(r⊙h) = da_n W_hn; also stores r⊙h of this step, the input of W_hn, for ∂L/∂W_hn after the
    time loop. da_x at each row's time step, da_h at s; a row past its length has da = 0 and r⊙h = 0.
    twin: reference.gru.gru_classic_step_backward, up to from_rh"""
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
            bb = b0 + rr
            j = r0 + q
            if bb < B and j < H:
                active, t = row_step(lengths, s, reverse, bb)
                if active:
                    # gru_mix_backward: ∂L/∂n = dh⊙(1 − z); ·tanh'
                    v = dh[bb, j] * (dh.dtype.type(1.0) - gates_s[bb, H + j]) * tanh_grad(gates_s[bb, 2 * H + j])
                if store:
                    da_x[t, bb, 2 * H + j] = v
                    da_h_s[bb, 2 * H + j] = v
            da_tile[rr, q] = v
        # affine_backward: ∂L/∂(r⊙h) = da_n W_hn
        load_weight_rows(w_hh, 2 * H, r0, H, w_tile, k0)
        cuda.syncthreads()
        acc = rows_times_weights(acc, da_tile, w_tile)
        cuda.syncthreads()
    if b < B and k < H:
        d_rh[b, k] = acc
        active, t = row_step(lengths, s, reverse, b)
        if active:
            rh_s[b, k] = gates_s[b, k] * h_prev[b, k]
        else:
            rh_s[b, k] = rh_s.dtype.type(0.0)


@cuda.jit
def gru_classic_step_backward_n_kernel(dh, gates, h_prev_all, w_hh, t, da_x, da_h, d_rh, rh_all):
    """First half of step t: gru_classic_step_backward_n on this block's tile; gates, h_prev_all,
    da_h and rh_all hold every step's. twin: reference.gru.gru_classic_step_backward, up to from_rh"""
    DT = dh.dtype
    da_tile = cuda.shared.array((ROWS, DEPTH_PADDED), DT)
    w_tile = cuda.shared.array((DEPTH, UNITS), DT)
    gru_classic_step_backward_n(dh, gates[t], h_prev_all[t], w_hh, None, t, False, da_x, da_h[t], d_rh, rh_all[t],
                                cuda.blockIdx.x * UNITS, cuda.blockIdx.y * ROWS, da_tile, w_tile)


@cuda.jit
def gru_classic_layer_step_backward_n_kernel(dh, gates, h_prev_all, w_hh, lengths, s, reverse, da_x, da_h, d_rh,
                                             rh_all):
    """First half of scan step s of one layer-direction's BPTT over rows of different lengths:
    gru_classic_step_backward_n on this block's tile; gates, the states read, da_h and r⊙h (T, B, ·)
    in step order, whole, indexed here by s.
    twin: reference.layers.run_direction_backward over reference.gru.gru_classic_step_backward, up to from_rh"""
    DT = dh.dtype
    da_tile = cuda.shared.array((ROWS, DEPTH_PADDED), DT)
    w_tile = cuda.shared.array((DEPTH, UNITS), DT)
    gru_classic_step_backward_n(dh, gates[s], h_prev_all[s], w_hh, lengths, s, reverse, da_x, da_h[s], d_rh, rh_all[s],
                                cuda.blockIdx.x * UNITS, cuda.blockIdx.y * ROWS, da_tile, w_tile)


@cuda.jit(device=True)
def gru_classic_da_rz(b, r, dh, gates_s, h_prev, d_rh):
    """∂L/∂a for row r < 2H (the r or z block), given ∂L/∂(r⊙h).
    twin: reference.gru.gru_classic_step_backward's da_r, da_z"""
    H = dh.shape[1]
    if r < H:  # ∂L/∂r = ∂L/∂(r⊙h)⊙h; ·σ'
        return d_rh[b, r] * h_prev[b, r] * sigmoid_grad(gates_s[b, r])
    j = r - H  # gru_mix_backward: ∂L/∂z = dh⊙(h − n); ·σ'
    return dh[b, j] * (h_prev[b, j] - gates_s[b, 2 * H + j]) * sigmoid_grad(gates_s[b, r])


@cuda.jit(device=True)
def gru_classic_step_backward_rz(dh, gates_s, h_prev, d_rh, w_hh, dhs, lengths, s, reverse, da_x, da_h_s, dh_prev,
                                 k0, b0, da_tile, w_tile):
    """Second half of a step on the tile of columns k0… and rows b0…, at scan step s:
    ∂L/∂h_{s−1} = z⊙dh + r⊙∂L/∂(r⊙h) + da_rz W_hrz (+ dhs of the step before); a row past its length
    passes ∂L/∂h through. twin: reference.gru.gru_classic_step_backward, from da_r"""
    B = dh.shape[0]
    H = dh.shape[1]
    n_rows = 2 * H
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
                    v = gru_classic_da_rz(b0 + rr, r0 + q, dh, gates_s, h_prev, d_rh)
                if store:
                    da_x[t, b0 + rr, r0 + q] = v
                    da_h_s[b0 + rr, r0 + q] = v
            da_tile[rr, q] = v
        # affine_backward: ∂L/∂h = da_rz W_hrz
        load_weight_rows(w_hh, 0, r0, n_rows, w_tile, k0)
        cuda.syncthreads()
        acc = rows_times_weights(acc, da_tile, w_tile)
        cuda.syncthreads()
    if b < B and k < H:
        active, t = row_step(lengths, s, reverse, b)
        if active:
            acc += dh[b, k] * gates_s[b, H + k] + d_rh[b, k] * gates_s[b, k]  # gru_mix_backward's z⊙dh; r⊙∂L/∂(r⊙h)
        else:
            acc = dh[b, k]
        output, t_before = previous_output(lengths, s, reverse, b)
        if output:  # reference.backend.backward: h_{t−1} also feeds the loss
            acc += dhs[t_before, b, k]
        dh_prev[b, k] = acc


@cuda.jit
def gru_classic_step_backward_rz_kernel(dh, gates, h_prev_all, d_rh, w_hh, dhs, t, da_x, da_h, dh_prev):
    """Second half of step t: gru_classic_step_backward_rz on this block's tile; gates, h_prev_all
    and da_h hold every step's. twin: reference.gru.gru_classic_step_backward, from da_r"""
    DT = dh.dtype
    da_tile = cuda.shared.array((ROWS, DEPTH_PADDED), DT)
    w_tile = cuda.shared.array((DEPTH, UNITS), DT)
    gru_classic_step_backward_rz(dh, gates[t], h_prev_all[t], d_rh, w_hh, dhs, None, t, False, da_x, da_h[t],
                                 dh_prev, cuda.blockIdx.x * UNITS, cuda.blockIdx.y * ROWS, da_tile, w_tile)


@cuda.jit
def gru_classic_layer_step_backward_rz_kernel(dh, gates, h_prev_all, d_rh, w_hh, dhs, lengths, s, reverse, da_x, da_h,
                                              dh_prev):
    """Second half of scan step s of one layer-direction's BPTT over rows of different lengths:
    gru_classic_step_backward_rz on this block's tile; per-step arrays as the first half's.
    twin: reference.layers.run_direction_backward over reference.gru.gru_classic_step_backward, from da_r"""
    DT = dh.dtype
    da_tile = cuda.shared.array((ROWS, DEPTH_PADDED), DT)
    w_tile = cuda.shared.array((DEPTH, UNITS), DT)
    gru_classic_step_backward_rz(dh, gates[s], h_prev_all[s], d_rh, w_hh, dhs, lengths, s, reverse, da_x, da_h[s],
                                 dh_prev, cuda.blockIdx.x * UNITS, cuda.blockIdx.y * ROWS, da_tile, w_tile)


@cuda.jit
def gru_classic_backward_persistent_kernel(dh_n, dh_pair, gates, h_prev_all, d_rh, rh_all, w_hh, dhs, da_x, da_h):
    """Every step of BPTT in one cooperative launch (see lstm_backward_persistent_kernel), with two grid
    synchronizations a step: ∂L/∂(r⊙h) of every unit before the r rows' da. ∂L/∂h of the step being
    undone is in slot s % 2 of dh_pair (s = T − 1 − t), that of the step before goes to the other slot.
    twin: reference.backend.backward's time loop over reference.gru.gru_classic_step_backward"""
    DT = dh_pair.dtype
    da_tile = cuda.shared.array((ROWS, DEPTH_PADDED), DT)
    w_tile = cuda.shared.array((DEPTH, UNITS), DT)
    grid = cuda.cg.this_grid()
    T = gates.shape[0]
    H = dh_pair.shape[2]
    tiles = step_tiles(dh_pair.shape[1], H)
    start_bptt(dh_n, dhs, None, False, dh_pair[0], dh_n, False, dh_n[:0])  # into slot 0; step T − 1 reads all of it
    grid.sync()
    for s in range(T):
        t = T - 1 - s
        for q in range(cuda.blockIdx.x, tiles, cuda.gridDim.x):
            k0, b0 = tile_origin(q, H)
            gru_classic_step_backward_n(dh_pair[s % 2], gates[t], h_prev_all[t], w_hh, None, t, False, da_x, da_h[t],
                                        d_rh, rh_all[t], k0, b0, da_tile, w_tile)
        grid.sync()
        for q in range(cuda.blockIdx.x, tiles, cuda.gridDim.x):
            k0, b0 = tile_origin(q, H)
            gru_classic_step_backward_rz(dh_pair[s % 2], gates[t], h_prev_all[t], d_rh, w_hh, dhs, None, t, False,
                                         da_x, da_h[t], dh_pair[1 - s % 2], k0, b0, da_tile, w_tile)
        grid.sync()
