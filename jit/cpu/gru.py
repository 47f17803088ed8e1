"""The GRU's time loops for jit.cpu, in both forms; twin of reference.gru.

    r, z = σ(·);  h' = (1 − z)⊙n + z⊙h
    gru:          n = tanh(W_in x + b_in + r⊙(W_hn h + b_hn))      (reset after the product)
    gru_classic:  n = tanh(W_in x + b_in + W_hn (r⊙h) + b_hn)      (reset before the product)

Same layout as jit.cpu.lstm, rows of different lengths and the reverse direction of a layer
included (jit.cpu.steps). gru keeps hn = W_hn h + b_hn per step for backward (it is not
among the contract's gates). gru_classic's second product per step reads r⊙h of every
unit, so its kernels take rows only (a unit split would wait twice per step).
"""
import numpy as np
from numba import njit

from jit.gatemath import sigmoid, sigmoid_grad, tanh, tanh_grad, typed_like

from .kernel_options import KERNEL_OPTIONS
from .products import add_rows, gate_outputs, gate_products, gate_units, pack_columns, pack_gate_rows, \
    panel_product, product_output, project_tile_inputs, store_gate_blocks, store_rows
from .steps import active_rows, gather_rows, runs_direct, scatter_gate_blocks, scatter_rows, scatter_state, \
    step_times, zero_gate_padding, zero_padding, zero_steps_after
from .sync import wait_for_all


@njit(**KERNEL_OPTIONS)
def gru_forward(x, w_ih, w_hh, b_ih, b_hh, h0, training, lengths, order, reverse, hs, column0, gates, hns, h_n,
                h_state, xw, x_rows, arrivals, n_threads, b0, b1, j0, j1):
    """Fill the tile rows × units [j0, j1) of hs (T, B, ≥ column0 + H, from column column0),
    h_n; with training also of gates (T, B, 3H) and hns (T, B, H), at each row's own times;
    zeros in hs past each row's length. lengths … x_rows: as jit.cpu.lstm.lstm_forward's.

    twin: reference.gru.gru_step_forward, looped over t. Threads that split the units wait
    for each other after each step (as jit.cpu.lstm.lstm_forward).
    """
    T, B, _ = x.shape
    H = h0.shape[1]
    nb, nj = b1 - b0, j1 - j0
    direct = runs_direct(order, reverse, b0, b1) and hs.shape[2] == H
    if not direct and h_state.shape[1] < B:
        raise ValueError("gru_forward: a loop that is not direct needs h_state (2, B, H)")
    active, offsets = active_rows(lengths, order, b0, b1, T)
    steps = lengths[order[b0]] if nb else 0
    project_tile_inputs(x, w_ih, H, lengths, order, reverse, b0, b1, j0, j1, active, offsets, x_rows, xw)
    h = np.empty((nb, nj), x.dtype)
    times = np.empty(nb, np.int64)
    w_panels = pack_gate_rows(w_hh, H, j0, j1)
    a_h = gate_outputs(nb, w_panels)  # [g, :, :nj]: h W_hhᵀ for this step, gate block g; then r, z, n
    hn_t = np.empty((nb, nj), x.dtype)
    # the r and z gates add both biases; n adds b_in outside r's product and b_hn inside
    bias_r = gate_units(b_ih, 0, H, j0, j1) + gate_units(b_hh, 0, H, j0, j1)
    bias_z = gate_units(b_ih, 1, H, j0, j1) + gate_units(b_hh, 1, H, j0, j1)
    b_in, b_hn = gate_units(b_ih, 2, H, j0, j1), gate_units(b_hh, 2, H, j0, j1)
    for s in range(steps):
        n_rows = active[s]
        if direct:
            h_prev = h0[b0:b0 + n_rows] if s == 0 else hs[s - 1, b0:b0 + n_rows]
        else:
            h_prev = h_state[(s + 1) & 1, b0:b0 + n_rows]
        gate_products(h_prev, w_panels, a_h)
        for b in range(n_rows):
            row = offsets[s] + b
            x_r, x_z, x_n = xw[0, row], xw[1, row], xw[2, row]
            a_r, a_z, a_n = a_h[0, b], a_h[1, b], a_h[2, b]
            h_prev_b, h_b, hn_b = h_prev[b, j0:j1], h[b], hn_t[b]
            for u in range(nj):
                # gru_step_forward's gates: r, z = σ(·), n = tanh(W_in x + b_in + r⊙(W_hn h + b_hn))
                r = sigmoid(x_r[u] + a_r[u] + bias_r[u])
                z = sigmoid(x_z[u] + a_z[u] + bias_z[u])
                hn = a_n[u] + b_hn[u]
                n = tanh(x_n[u] + b_in[u] + r * hn)
                h_b[u] = (typed_like(z, 1.0) - z) * n + z * h_prev_b[u]  # gru_mix: h' = (1 − z)⊙n + z⊙h
                a_r[u], a_z[u], a_n[u], hn_b[u] = r, z, n, hn
        if direct:
            store_rows(h[:n_rows], hs[s], b0, j0, nj)
            if training:
                store_rows(hn_t[:n_rows], hns[s], b0, j0, nj)
                store_gate_blocks(a_h, n_rows, H, j0, j1, gates[s], b0)
        else:
            step_times(lengths, order, reverse, b0, n_rows, s, times)
            store_rows(h[:n_rows], h_state[s & 1], b0, j0, nj)
            scatter_rows(h, n_rows, hs, times, order, b0, column0 + j0, nj)
            if training:
                scatter_rows(hn_t, n_rows, hns, times, order, b0, j0, nj)
                scatter_gate_blocks(a_h, n_rows, H, j0, j1, gates, times, order, b0)
        zero_padding(hs, s, order, b0 + n_rows, b1, column0 + j0, nj)
        wait_for_all(arrivals, n_threads, s)
    zero_steps_after(hs, steps, order, b0, b1, column0 + j0, nj)
    scatter_state(h, order, b0, b1, j0, j1, h_n)


@njit(**KERNEL_OPTIONS)
def gru_backward(w_hh, h0, hs, column0, gates, hns, dhs, dh_n, lengths, order, reverse, da_x, da_h, da_state, dh0,
                 arrivals, n_threads, b0, b1, j0, j1):
    """Fill the tile rows × units [j0, j1) of da_x (T, B, 3H) = ∂L/∂(W_ih x + b_ih),
    da_h (T, B, 3H) = ∂L/∂(W_hh h + b_hh) (both zeros past each row's length), and dh0.
    hs, dhs: this direction's from column column0; da_state (2, B, 3H): the buffer of the next
    product's rows (da_h's) when the loop is not direct (jit.cpu.steps).

    The two differ only in the n block, where r scales the hidden term: da_h_n = r⊙da_x_n.
    twin: reference.gru.gru_step_backward, looped over reversed t.
    ∂L/∂h through the next step is its da_h W_hh plus the direct z⊙ term of its mix.
    """
    T, B, H = hns.shape
    nb, nj = b1 - b0, j1 - j0
    direct = runs_direct(order, reverse, b0, b1)
    if not direct and da_state.shape[1] < B:
        raise ValueError("gru_backward: a loop that is not direct needs da_state (2, B, 3H)")
    active, _ = active_rows(lengths, order, b0, b1, T)
    steps = lengths[order[b0]] if nb else 0
    w_panels = pack_columns(w_hh, j0, j1)  # W_hh's columns for the tile's units
    dh = product_output(nb, w_panels)  # [:, :nj]: ∂L/∂h from the next step (from h_n at a row's last)
    gather_rows(dh_n, order, b0, b1, j0, j1, dh)
    dh_direct = np.zeros((nb, nj), hns.dtype)  # through the z⊙h term of the next step's mix
    dx_t = np.empty((3, nb, nj), hns.dtype)  # this step's da_x, the tile's units of each gate
    dn_h = np.empty((nb, nj), hns.dtype)  # and da_h's n block (its r and z blocks are da_x's)
    times = np.empty(nb, np.int64)
    for s in range(T - 1, steps - 1, -1):
        zero_gate_padding(da_x, s, order, b0, b1, H, j0, j1, 3)
        zero_gate_padding(da_h, s, order, b0, b1, H, j0, j1, 3)
    for s in range(steps - 1, -1, -1):
        n_rows = active[s]
        if s < steps - 1:
            n_next = active[s + 1]
            next_da = da_h[s + 1, b0:b0 + n_next] if direct else da_state[(s + 1) & 1, b0:b0 + n_next]
            panel_product(next_da, w_panels, dh)
            add_rows(dh_direct[:n_next], dh, nj)
        step_times(lengths, order, reverse, b0, n_rows, s, times)
        for b in range(n_rows):
            row, t = order[b0 + b], times[b]
            gates_row = gates[t, row]
            r_b, z_b, n_b = gate_units(gates_row, 0, H, j0, j1), gate_units(gates_row, 1, H, j0, j1), \
                gate_units(gates_row, 2, H, j0, j1)
            if s == 0:
                h_prev_b = h0[row, j0:j1]
            else:
                h_prev_b = hs[t + 1 if reverse else t - 1, row, column0 + j0:column0 + j1]
            hn_b, dhs_b = hns[t, row, j0:j1], dhs[t, row, column0 + j0:column0 + j1]
            dh_b, dh_direct_b = dh[b], dh_direct[b]
            da_r, da_z, da_n, dn_h_b = dx_t[0, b], dx_t[1, b], dx_t[2, b], dn_h[b]
            for u in range(nj):
                r, z, n = r_b[u], z_b[u], n_b[u]
                dh_total = dh_b[u] + dhs_b[u]
                # gru_mix_backward: dn = dh⊙(1 − z), dz = dh⊙(h − n), dh_prev = dh⊙z
                dn = dh_total * (typed_like(z, 1.0) - z) * tanh_grad(n)
                da_r[u] = dn * hn_b[u] * sigmoid_grad(r)
                da_z[u] = dh_total * (h_prev_b[u] - n) * sigmoid_grad(z)
                da_n[u] = dn
                dh_direct_b[u] = dh_total * z
                dn_h_b[u] = dn * r
        if direct:
            store_gate_blocks(dx_t, n_rows, H, j0, j1, da_x[s], b0)
            store_gate_blocks(dx_t[:2], n_rows, H, j0, j1, da_h[s], b0)  # r and z: the same as da_x
            store_rows(dn_h[:n_rows], da_h[s], b0, 2 * H + j0, nj)
        else:
            scatter_gate_blocks(dx_t, n_rows, H, j0, j1, da_x, times, order, b0)
            scatter_gate_blocks(dx_t[:2], n_rows, H, j0, j1, da_h, times, order, b0)
            scatter_rows(dn_h, n_rows, da_h, times, order, b0, 2 * H + j0, nj)
            store_gate_blocks(dx_t[:2], n_rows, H, j0, j1, da_state[s & 1], b0)
            store_rows(dn_h[:n_rows], da_state[s & 1], b0, 2 * H + j0, nj)
        zero_gate_padding(da_x, s, order, b0 + n_rows, b1, H, j0, j1, 3)
        zero_gate_padding(da_h, s, order, b0 + n_rows, b1, H, j0, j1, 3)
        wait_for_all(arrivals, n_threads, steps - 1 - s)
    if nb:
        panel_product(da_h[0, b0:b1] if direct else da_state[0, b0:b1], w_panels, dh)
        add_rows(dh_direct, dh, nj)
    scatter_state(dh, order, b0, b1, j0, j1, dh0)


@njit(**KERNEL_OPTIONS)
def gru_classic_forward(x, w_ih, w_hrz, w_hn, b_ih, b_hh, h0, training, lengths, order, reverse, hs, column0,
                        gates, h_n, xw, x_rows, b0, b1):
    """Fill hs (T, B, ≥ column0 + H, from column column0), h_n; with training also gates
    (T, B, 3H), at each row's own times; zeros in hs past each row's length.

    w_hrz (2H, H) and w_hn (H, H) are the r, z and n rows of W_hh; lengths … x_rows: as
    jit.cpu.lstm.lstm_forward's (every unit: this kernel's tiles are rows).
    twin: reference.gru.gru_classic_step_forward, looped over t.
    """
    T, B, _ = x.shape
    H = h0.shape[1]
    nb = b1 - b0
    active, offsets = active_rows(lengths, order, b0, b1, T)
    steps = lengths[order[b0]] if nb else 0
    project_tile_inputs(x, w_ih, H, lengths, order, reverse, b0, b1, 0, H, active, offsets, x_rows, xw)
    h = np.empty((nb, H), x.dtype)  # the rows' state, in position order
    gather_rows(h0, order, b0, b1, 0, H, h)
    rh = np.empty_like(h)  # r⊙h, the input of W_hn
    z_t = np.empty_like(h)
    rz_panels, n_panels = pack_gate_rows(w_hrz, H, 0, H), pack_gate_rows(w_hn, H, 0, H)
    a_rz = gate_outputs(nb, rz_panels)  # [g, :, :H]: h W_hrzᵀ, gates r and z
    a_n = gate_outputs(nb, n_panels)[0]  # [:, :H]: (r⊙h) W_hnᵀ
    times = np.empty(nb, np.int64)
    for s in range(steps):
        n_rows = active[s]
        step_times(lengths, order, reverse, b0, n_rows, s, times)
        gate_products(h[:n_rows], rz_panels, a_rz)
        for b in range(n_rows):
            row, t, xw_row = order[b0 + b], times[b], offsets[s] + b  # the row, its time, its projection
            for j in range(H):
                r = sigmoid(xw[0, xw_row, j] + b_ih[j] + a_rz[0, b, j] + b_hh[j])
                z_t[b, j] = sigmoid(xw[1, xw_row, j] + b_ih[H + j] + a_rz[1, b, j] + b_hh[H + j])
                rh[b, j] = r * h[b, j]
                if training:
                    gates[t, row, j] = r
                    gates[t, row, H + j] = z_t[b, j]
        panel_product(rh[:n_rows], n_panels[0], a_n)
        for b in range(n_rows):
            row, t, xw_row = order[b0 + b], times[b], offsets[s] + b
            for j in range(H):
                z = z_t[b, j]
                n = tanh(xw[2, xw_row, j] + b_ih[2 * H + j] + a_n[b, j] + b_hh[2 * H + j])
                h_next = z * h[b, j] + (typed_like(z, 1.0) - z) * n  # gru_mix: h' = z⊙h + (1 − z)⊙n
                h[b, j] = h_next
                hs[t, row, column0 + j] = h_next
                if training:
                    gates[t, row, 2 * H + j] = n
        zero_padding(hs, s, order, b0 + n_rows, b1, column0, H)
    zero_steps_after(hs, steps, order, b0, b1, column0, H)
    scatter_state(h, order, b0, b1, 0, H, h_n)


@njit(**KERNEL_OPTIONS)
def gru_classic_backward(w_hrz, w_hn, h0, hs, column0, gates, dhs, dh_n, lengths, order, reverse, da, rhs, dh0,
                         b0, b1):
    """Fill da (T, B, 3H) = ∂L/∂(pre-activations) (the same for the W_ih and W_hh sides),
    rhs (T, B, H) = r⊙h_prev (what W_hn multiplied, for its gradient), both zeros past each
    row's length, and dh0. hs, dhs: this direction's from column column0.

    w_hrz (2H, H) and w_hn (H, H): the r, z and n rows of W_hh.
    twin: reference.gru.gru_classic_step_backward, looped over reversed t.
    """
    T, B, H = rhs.shape
    nb = b1 - b0
    active, _ = active_rows(lengths, order, b0, b1, T)
    steps = lengths[order[b0]] if nb else 0
    rz_panels, n_panels = pack_columns(w_hrz, 0, H), pack_columns(w_hn, 0, H)
    dh = product_output(nb, rz_panels)  # [:, :H], in position order
    gather_rows(dh_n, order, b0, b1, 0, H, dh)
    dh_direct = np.empty((nb, H), hs.dtype)  # through z⊙h
    da_n = np.empty((nb, H), hs.dtype)
    d_rh = product_output(nb, n_panels)  # [:, :H]: ∂L/∂(r⊙h) = da_n W_hn
    da_rz = np.empty((nb, 2 * H), hs.dtype)
    times = np.empty(nb, np.int64)
    for s in range(T - 1, steps - 1, -1):
        zero_padding(da, s, order, b0, b1, 0, 3 * H)
        zero_padding(rhs, s, order, b0, b1, 0, H)
    for s in range(steps - 1, -1, -1):
        n_rows = active[s]
        step_times(lengths, order, reverse, b0, n_rows, s, times)
        for b in range(n_rows):
            row, t = order[b0 + b], times[b]
            t_prev = t + 1 if reverse else t - 1
            for j in range(H):
                z = gates[t, row, H + j]
                n = gates[t, row, 2 * H + j]
                h_prev = hs[t_prev, row, column0 + j] if s > 0 else h0[row, j]
                dh_total = dh[b, j] + dhs[t, row, column0 + j]
                da_n[b, j] = dh_total * (typed_like(z, 1.0) - z) * tanh_grad(n)
                da_rz[b, H + j] = dh_total * (h_prev - n) * sigmoid_grad(z)
                dh_direct[b, j] = dh_total * z
        panel_product(da_n[:n_rows], n_panels, d_rh)
        for b in range(n_rows):
            row, t = order[b0 + b], times[b]
            t_prev = t + 1 if reverse else t - 1
            for j in range(H):
                r = gates[t, row, j]
                h_prev = hs[t_prev, row, column0 + j] if s > 0 else h0[row, j]
                da_rz[b, j] = d_rh[b, j] * h_prev * sigmoid_grad(r)
                rhs[t, row, j] = r * h_prev
                dh_direct[b, j] += d_rh[b, j] * r
                da[t, row, j] = da_rz[b, j]
                da[t, row, H + j] = da_rz[b, H + j]
                da[t, row, 2 * H + j] = da_n[b, j]
        zero_padding(da, s, order, b0 + n_rows, b1, 0, 3 * H)
        zero_padding(rhs, s, order, b0 + n_rows, b1, 0, H)
        panel_product(da_rz[:n_rows], rz_panels, dh)
        add_rows(dh_direct[:n_rows], dh, H)
    scatter_state(dh, order, b0, b1, 0, H, dh0)
