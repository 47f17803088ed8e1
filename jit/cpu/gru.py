"""The GRU's time loops for jit.cpu, in both forms; twin of reference.gru.

    r, z = σ(·);  h' = (1 − z)⊙n + z⊙h
    gru:          n = tanh(W_in x + b_in + r⊙(W_hn h + b_hn))      (reset after the product)
    gru_classic:  n = tanh(W_in x + b_in + W_hn (r⊙h) + b_hn)      (reset before the product)

Same layout as jit.cpu.lstm. gru keeps hn = W_hn h + b_hn per step for backward (it is not
among the contract's gates). gru_classic's second product per step reads r⊙h of every
unit, so its kernels take rows only (a unit split would wait twice per step).
"""
import numpy as np
from numba import njit

from jit.gatemath import sigmoid, sigmoid_grad, tanh, tanh_grad, typed_like

from .kernel_options import KERNEL_OPTIONS
from .products import add_rows, gate_outputs, gate_products, gate_units, pack_columns, pack_gate_rows, \
    panel_product, product_output, project_inputs, store_gate_blocks, store_rows
from .sync import wait_for_all


@njit(**KERNEL_OPTIONS)
def gru_forward(x, w_ih, w_hh, b_ih, b_hh, h0, training, hs, gates, hns, h_n, xw,
                       arrivals, n_threads, b0, b1, j0, j1):
    """Fill the tile rows [b0, b1) × units [j0, j1) of hs (T, B, H), h_n; with training also
    of gates (T, B, 3H) and hns (T, B, H). xw: the tile's scratch for its input projection
    (jit.cpu.products.project_inputs).

    twin: reference.gru.gru_step_forward, looped over t. Threads that split the units wait
    for each other after each step (as jit.cpu.lstm.lstm_forward).
    """
    T, B, _ = x.shape
    H = h0.shape[1]
    nb, nj = b1 - b0, j1 - j0
    project_inputs(x, w_ih, H, b0, b1, j0, j1, xw)
    h = np.empty((nb, nj), x.dtype)
    w_panels = pack_gate_rows(w_hh, H, j0, j1)
    a_h = gate_outputs(nb, w_panels)  # [g, :, :nj]: h W_hhᵀ for this step, gate block g; then r, z, n
    hn_t = np.empty((nb, nj), x.dtype)
    # the r and z gates add both biases; n adds b_in outside r's product and b_hn inside
    bias_r = gate_units(b_ih, 0, H, j0, j1) + gate_units(b_hh, 0, H, j0, j1)
    bias_z = gate_units(b_ih, 1, H, j0, j1) + gate_units(b_hh, 1, H, j0, j1)
    b_in, b_hn = gate_units(b_ih, 2, H, j0, j1), gate_units(b_hh, 2, H, j0, j1)
    for t in range(T):
        h_prev = h0[b0:b1] if t == 0 else hs[t - 1, b0:b1]
        gate_products(h_prev, w_panels, a_h)
        for b in range(nb):
            row = t * nb + b
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
        store_rows(h, hs[t], b0, j0, nj)
        if training:
            store_rows(hn_t, hns[t], b0, j0, nj)
            store_gate_blocks(a_h, H, j0, j1, gates[t], b0)
        wait_for_all(arrivals, n_threads, t)
    h_n[b0:b1, j0:j1] = hs[T - 1, b0:b1, j0:j1]


@njit(**KERNEL_OPTIONS)
def gru_backward(w_hh, h0, hs, gates, hns, dhs, dh_n, da_x, da_h, dh0,
                        arrivals, n_threads, b0, b1, j0, j1):
    """Fill the tile rows [b0, b1) × units [j0, j1) of da_x (T, B, 3H) = ∂L/∂(W_ih x + b_ih),
    da_h (T, B, 3H) = ∂L/∂(W_hh h + b_hh), and dh0.

    The two differ only in the n block, where r scales the hidden term: da_h_n = r⊙da_x_n.
    twin: reference.gru.gru_step_backward, looped over reversed t.
    ∂L/∂h_t through step t + 1 is da_h[t + 1] W_hh plus the direct z⊙ term of the mix.
    """
    T, B, H = hs.shape
    nb, nj = b1 - b0, j1 - j0
    w_panels = pack_columns(w_hh, j0, j1)  # W_hh's columns for the tile's units
    dh = product_output(nb, w_panels)  # [:, :nj]: ∂L/∂h_t from step t + 1 (from h_n at t = T − 1)
    dh[:, :nj] = dh_n[b0:b1, j0:j1]
    dh_direct = np.zeros((nb, nj), hs.dtype)  # through the z⊙h term of step t + 1's mix
    dx_t = np.empty((3, nb, nj), hs.dtype)  # this step's da_x, the tile's units of each gate
    dn_h = np.empty((nb, nj), hs.dtype)  # and da_h's n block (its r and z blocks are da_x's)
    for t in range(T - 1, -1, -1):
        if t < T - 1:
            panel_product(da_h[t + 1, b0:b1], w_panels, dh)
            add_rows(dh_direct, dh, nj)
        for b in range(nb):
            row = b0 + b
            gates_row = gates[t, row]
            r_b, z_b, n_b = gate_units(gates_row, 0, H, j0, j1), gate_units(gates_row, 1, H, j0, j1), \
                gate_units(gates_row, 2, H, j0, j1)
            h_prev_b = hs[t - 1, row, j0:j1] if t > 0 else h0[row, j0:j1]
            hn_b, dhs_b, dh_b, dh_direct_b = hns[t, row, j0:j1], dhs[t, row, j0:j1], dh[b], dh_direct[b]
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
        store_gate_blocks(dx_t, H, j0, j1, da_x[t], b0)
        store_gate_blocks(dx_t[:2], H, j0, j1, da_h[t], b0)  # r and z: the same as da_x
        store_rows(dn_h, da_h[t], b0, 2 * H + j0, nj)
        wait_for_all(arrivals, n_threads, T - 1 - t)
    panel_product(da_h[0, b0:b1], w_panels, dh)
    dh0[b0:b1, j0:j1] = dh[:, :nj] + dh_direct


@njit(**KERNEL_OPTIONS)
def gru_classic_forward(x, w_ih, w_hrz, w_hn, b_ih, b_hh, h0, training, hs, gates,
                               h_n, xw, b0, b1):
    """Fill hs (T, B, H), h_n; with training also gates (T, B, 3H).

    w_hrz (2H, H) and w_hn (H, H) are the r, z and n rows of W_hh; xw: the rows' scratch for
    their input projection (jit.cpu.products.project_inputs).
    twin: reference.gru.gru_classic_step_forward, looped over t.
    """
    T, B, _ = x.shape
    H = h0.shape[1]
    nb = b1 - b0
    project_inputs(x, w_ih, H, b0, b1, 0, H, xw)
    h = h0[b0:b1].copy()
    rh = np.empty_like(h)  # r⊙h, the input of W_hn
    z_t = np.empty_like(h)
    rz_panels, n_panels = pack_gate_rows(w_hrz, H, 0, H), pack_gate_rows(w_hn, H, 0, H)
    a_rz = gate_outputs(nb, rz_panels)  # [g, :, :H]: h W_hrzᵀ, gates r and z
    a_n = gate_outputs(nb, n_panels)[0]  # [:, :H]: (r⊙h) W_hnᵀ
    for t in range(T):
        gate_products(h, rz_panels, a_rz)
        for b in range(nb):
            row, xw_row = b0 + b, t * nb + b  # the row in the outputs, and in the tile's projection
            for j in range(H):
                r = sigmoid(xw[0, xw_row, j] + b_ih[j] + a_rz[0, b, j] + b_hh[j])
                z_t[b, j] = sigmoid(xw[1, xw_row, j] + b_ih[H + j] + a_rz[1, b, j] + b_hh[H + j])
                rh[b, j] = r * h[b, j]
                if training:
                    gates[t, row, j] = r
                    gates[t, row, H + j] = z_t[b, j]
        panel_product(rh, n_panels[0], a_n)
        for b in range(nb):
            row, xw_row = b0 + b, t * nb + b
            for j in range(H):
                z = z_t[b, j]
                n = tanh(xw[2, xw_row, j] + b_ih[2 * H + j] + a_n[b, j] + b_hh[2 * H + j])
                h_next = z * h[b, j] + (typed_like(z, 1.0) - z) * n  # gru_mix: h' = z⊙h + (1 − z)⊙n
                h[b, j] = h_next
                hs[t, row, j] = h_next
                if training:
                    gates[t, row, 2 * H + j] = n
    h_n[b0:b1] = h


@njit(**KERNEL_OPTIONS)
def gru_classic_backward(w_hrz, w_hn, h0, hs, gates, dhs, dh_n, da, rhs, dh0, b0, b1):
    """Fill da (T, B, 3H) = ∂L/∂(pre-activations) (the same for the W_ih and W_hh sides),
    rhs (T, B, H) = r⊙h_prev (what W_hn multiplied, for its gradient) and dh0.

    w_hrz (2H, H) and w_hn (H, H): the r, z and n rows of W_hh.
    twin: reference.gru.gru_classic_step_backward, looped over reversed t.
    """
    T, B, H = hs.shape
    nb = b1 - b0
    rz_panels, n_panels = pack_columns(w_hrz, 0, H), pack_columns(w_hn, 0, H)
    dh = product_output(nb, rz_panels)  # [:, :H]
    dh[:, :H] = dh_n[b0:b1]
    dh_direct = np.empty((nb, H), hs.dtype)  # through z⊙h
    da_n = np.empty((nb, H), hs.dtype)
    d_rh = product_output(nb, n_panels)  # [:, :H]: ∂L/∂(r⊙h) = da_n W_hn
    da_rz = np.empty((nb, 2 * H), hs.dtype)
    for t in range(T - 1, -1, -1):
        for b in range(nb):
            row = b0 + b
            for j in range(H):
                z = gates[t, row, H + j]
                n = gates[t, row, 2 * H + j]
                h_prev = hs[t - 1, row, j] if t > 0 else h0[row, j]
                dh_total = dh[b, j] + dhs[t, row, j]
                da_n[b, j] = dh_total * (typed_like(z, 1.0) - z) * tanh_grad(n)
                da_rz[b, H + j] = dh_total * (h_prev - n) * sigmoid_grad(z)
                dh_direct[b, j] = dh_total * z
        panel_product(da_n, n_panels, d_rh)
        for b in range(nb):
            row = b0 + b
            for j in range(H):
                r = gates[t, row, j]
                h_prev = hs[t - 1, row, j] if t > 0 else h0[row, j]
                da_rz[b, j] = d_rh[b, j] * h_prev * sigmoid_grad(r)
                rhs[t, row, j] = r * h_prev
                dh_direct[b, j] += d_rh[b, j] * r
                da[t, row, j] = da_rz[b, j]
                da[t, row, H + j] = da_rz[b, H + j]
                da[t, row, 2 * H + j] = da_n[b, j]
        panel_product(da_rz, rz_panels, dh)
        add_rows(dh_direct, dh, H)
    dh0[b0:b1] = dh[:, :H]
