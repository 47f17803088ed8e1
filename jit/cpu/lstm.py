"""The LSTM's time loops for jit.cpu, forward and backward; twin of reference.lstm.

    i, f, o = σ(a_i, a_f, a_o);  g = tanh(a_g);  c' = f⊙c + i⊙g;  h' = o⊙tanh(c')

Each kernel runs the whole time loop on one tile, rows [b0, b1) × units [j0, j1), one call
per thread (jit.cpu.tiling). Per step: the recurrent product of each gate block
(jit.cpu.products), then one fused pointwise pass, tagged with the reference functions it
fuses. The pass writes only the kernel's scratch arrays, copied to the outputs after the
step: with the outputs' stores inside, LLVM could not prove them independent of the inputs
and left the pass scalar (2.9× slower).
"""
import numpy as np
from numba import njit

from jit.gatemath import sigmoid, sigmoid_grad, tanh, tanh_grad

from .kernel_options import KERNEL_OPTIONS
from .products import gate_outputs, gate_products, gate_units, pack_columns, pack_gate_rows, \
    panel_product, product_output, project_inputs, store_gate_blocks, store_rows
from .sync import wait_for_all


@njit(**KERNEL_OPTIONS)
def lstm_forward(x, w_ih, w_hh, bias, h0, c0, training, hs, cs, gates, h_n, c_n, xw,
                        arrivals, n_threads, b0, b1, j0, j1):
    """Fill the tile's part of hs (T, B, H), h_n, c_n; with training also of cs (T, B, H)
    and gates (T, B, 4H). bias = b_ih + b_hh (4H,); xw: the tile's input projection scratch.

    twin: reference.lstm.lstm_step_forward, looped over t (reference.backend.forward).
    Step t reads h_{t-1} of every unit of its rows; threads that split the units
    (n_threads > 1) wait for each other after each step (jit.cpu.sync).
    """
    T, B, _ = x.shape
    H = h0.shape[1]
    nb, nj = b1 - b0, j1 - j0
    project_inputs(x, w_ih, H, b0, b1, j0, j1, xw)
    c = c0[b0:b1, j0:j1].copy()
    h = np.empty((nb, nj), x.dtype)
    w_panels = pack_gate_rows(w_hh, H, j0, j1)
    a_h = gate_outputs(nb, w_panels)  # [g, :, :nj]: h W_hhᵀ for this step, gate block g; then the gates
    bias_i, bias_f = gate_units(bias, 0, H, j0, j1), gate_units(bias, 1, H, j0, j1)
    bias_g, bias_o = gate_units(bias, 2, H, j0, j1), gate_units(bias, 3, H, j0, j1)
    for t in range(T):
        h_prev = h0[b0:b1] if t == 0 else hs[t - 1, b0:b1]
        gate_products(h_prev, w_panels, a_h)
        for b in range(nb):
            row = t * nb + b
            x_i, x_f, x_g, x_o = xw[0, row], xw[1, row], xw[2, row], xw[3, row]
            a_i, a_f, a_g, a_o = a_h[0, b], a_h[1, b], a_h[2, b], a_h[3, b]
            c_b, h_b = c[b], h[b]
            for u in range(nj):
                # lstm_gates: i, f, o = σ(a_i, a_f, a_o), g = tanh(a_g), a = W_ih x + W_hh h + b
                i = sigmoid(x_i[u] + bias_i[u] + a_i[u])
                f = sigmoid(x_f[u] + bias_f[u] + a_f[u])
                g = tanh(x_g[u] + bias_g[u] + a_g[u])
                o = sigmoid(x_o[u] + bias_o[u] + a_o[u])
                c_next = f * c_b[u] + i * g  # lstm_cell_update: c' = f⊙c + i⊙g
                c_b[u] = c_next
                h_b[u] = o * tanh(c_next)  # lstm_output: h' = o⊙tanh(c')
                a_i[u], a_f[u], a_g[u], a_o[u] = i, f, g, o
        store_rows(h, hs[t], b0, j0, nj)
        if training:
            store_rows(c, cs[t], b0, j0, nj)
            store_gate_blocks(a_h, H, j0, j1, gates[t], b0)
        wait_for_all(arrivals, n_threads, t)  # hs[t] complete before anyone's step t + 1
    h_n[b0:b1, j0:j1] = hs[T - 1, b0:b1, j0:j1]
    c_n[b0:b1, j0:j1] = c


@njit(**KERNEL_OPTIONS)
def lstm_backward(w_hh, c0, cs, gates, dhs, dh_n, dc_n, da, dh0, dc0,
                         arrivals, n_threads, b0, b1, j0, j1):
    """Backpropagate through time: fill the tile's part of da (T, B, 4H) = ∂L/∂(pre-activations),
    dh0 and dc0.

    twin: reference.lstm.lstm_step_backward, looped over reversed t (the weight gradients
    follow as GEMMs on da: jit.cpu.gemms). ∂L/∂h_t through step t + 1 is da[t + 1] W_hh, over
    every gate of every unit; threads that split the units wait after each step.
    """
    T, B, H = cs.shape
    nb, nj = b1 - b0, j1 - j0
    w_panels = pack_columns(w_hh, j0, j1)  # W_hh's columns for the tile's units
    dh = product_output(nb, w_panels)  # [:, :nj]: ∂L/∂h_t from step t + 1 (from h_n at t = T − 1)
    dh[:, :nj] = dh_n[b0:b1, j0:j1]
    dc = dc_n[b0:b1, j0:j1].copy()
    da_t = np.empty((4, nb, nj), cs.dtype)  # this step's da, the tile's units of each gate
    for t in range(T - 1, -1, -1):
        if t < T - 1:
            panel_product(da[t + 1, b0:b1], w_panels, dh)
        for b in range(nb):
            row = b0 + b
            gates_row = gates[t, row]
            i_b, f_b = gate_units(gates_row, 0, H, j0, j1), gate_units(gates_row, 1, H, j0, j1)
            g_b, o_b = gate_units(gates_row, 2, H, j0, j1), gate_units(gates_row, 3, H, j0, j1)
            c_b = cs[t, row, j0:j1]
            c_prev_b = cs[t - 1, row, j0:j1] if t > 0 else c0[row, j0:j1]
            dhs_b, dh_b, dc_b = dhs[t, row, j0:j1], dh[b], dc[b]
            da_i, da_f, da_g, da_o = da_t[0, b], da_t[1, b], da_t[2, b], da_t[3, b]
            for u in range(nj):
                i, f, g, o = i_b[u], f_b[u], g_b[u], o_b[u]
                tanh_c = tanh(c_b[u])
                dh_total = dh_b[u] + dhs_b[u]  # h_t feeds the loss and step t+1
                # lstm_output_backward: dc += dh⊙o⊙tanh'(c), do = dh⊙tanh(c)
                dc_total = dc_b[u] + dh_total * o * tanh_grad(tanh_c)
                # lstm_cell_update_backward and lstm_gates_backward: da = d(gate) ⊙ act'(gate)
                da_i[u] = dc_total * g * sigmoid_grad(i)
                da_f[u] = dc_total * c_prev_b[u] * sigmoid_grad(f)
                da_g[u] = dc_total * i * tanh_grad(g)
                da_o[u] = dh_total * tanh_c * sigmoid_grad(o)
                dc_b[u] = dc_total * f  # the additive path: ∂c'/∂c = f
        store_gate_blocks(da_t, H, j0, j1, da[t], b0)
        wait_for_all(arrivals, n_threads, T - 1 - t)  # da[t] complete before anyone reads it
    panel_product(da[0, b0:b1], w_panels, dh)
    dh0[b0:b1, j0:j1] = dh[:, :nj]
    dc0[b0:b1, j0:j1] = dc
