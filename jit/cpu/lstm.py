"""The LSTM's time loops for jit.cpu, forward and backward; twin of reference.lstm.

    i, f, o = σ(a_i, a_f, a_o);  g = tanh(a_g);  c' = f⊙c + i⊙g;  h' = o⊙tanh(c')

Each kernel runs the whole time loop on one tile, rows [b0, b1) × units [j0, j1), one call
per thread (jit.cpu.tiling). Per step: the recurrent product of each gate block
(jit.cpu.products), then one fused pointwise pass, tagged with the reference functions it
fuses. The pass writes only the kernel's scratch arrays, copied to the outputs after the
step: with the outputs' stores inside, LLVM could not prove them independent of the inputs
and left the pass scalar (2.9× slower).

The same kernels run a cell's call and one direction of a layer (jit.cpu.layers): rows of
different lengths, run longest first, and the reverse direction, which starts each row at
its own last step (jit.cpu.steps). A layer's hs holds both directions side by side, this
one's from column column0.
"""
import numpy as np
from numba import njit

from jit.gatemath import sigmoid, sigmoid_grad, tanh, tanh_grad

from .kernel_options import KERNEL_OPTIONS
from .products import gate_outputs, gate_products, gate_units, pack_columns, pack_gate_rows, \
    panel_product, product_output, project_tile_inputs, store_gate_blocks, store_rows
from .steps import active_rows, gather_rows, runs_direct, scatter_gate_blocks, scatter_rows, scatter_state, \
    step_times, zero_gate_padding, zero_padding, zero_steps_after
from .sync import wait_for_all


@njit(**KERNEL_OPTIONS)
def lstm_forward(x, w_ih, w_hh, bias, h0, c0, training, lengths, order, reverse, hs, column0, cs, gates,
                 h_n, c_n, h_state, xw, x_rows, arrivals, n_threads, b0, b1, j0, j1):
    """Fill the tile's part of hs (T, B, ≥ column0 + H, from column column0), h_n, c_n; with
    training also of cs (T, B, H) and gates (T, B, 4H), at each row's own times; zeros in hs
    past each row's length. bias = b_ih + b_hh (4H,); lengths, order, reverse and the tile's
    positions b0 … b1 − 1: jit.cpu.steps; h_state (2, B, H): the state buffer of a loop that
    is not direct; xw, x_rows: the tile's input projection scratch (products.project_tile_inputs).

    twin: reference.lstm.lstm_step_forward, looped over t (reference.backend.forward).
    Step s reads h of every unit of its rows; threads that split the units (n_threads > 1)
    wait for each other after each step (jit.cpu.sync).
    """
    T, B, _ = x.shape
    H = h0.shape[1]
    nb, nj = b1 - b0, j1 - j0
    direct = runs_direct(order, reverse, b0, b1) and hs.shape[2] == H
    if not direct and h_state.shape[1] < B:
        raise ValueError("lstm_forward: a loop that is not direct needs h_state (2, B, H)")
    active, offsets = active_rows(lengths, order, b0, b1, T)
    steps = lengths[order[b0]] if nb else 0  # the tile's longest row
    project_tile_inputs(x, w_ih, H, lengths, order, reverse, b0, b1, j0, j1, active, offsets, x_rows, xw)
    c = np.empty((nb, nj), x.dtype)
    gather_rows(c0, order, b0, b1, j0, j1, c)
    h = np.empty((nb, nj), x.dtype)
    times = np.empty(nb, np.int64)
    w_panels = pack_gate_rows(w_hh, H, j0, j1)
    a_h = gate_outputs(nb, w_panels)  # [g, :, :nj]: h W_hhᵀ for this step, gate block g; then the gates
    bias_i, bias_f = gate_units(bias, 0, H, j0, j1), gate_units(bias, 1, H, j0, j1)
    bias_g, bias_o = gate_units(bias, 2, H, j0, j1), gate_units(bias, 3, H, j0, j1)
    for s in range(steps):
        n = active[s]
        if direct:
            h_prev = h0[b0:b0 + n] if s == 0 else hs[s - 1, b0:b0 + n]
        else:
            h_prev = h_state[(s + 1) & 1, b0:b0 + n]
        gate_products(h_prev, w_panels, a_h)
        for b in range(n):
            row = offsets[s] + b
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
        if direct:
            store_rows(h[:n], hs[s], b0, j0, nj)
            zero_padding(hs, s, order, b0 + n, b1, column0 + j0, nj)
            if training:
                store_rows(c[:n], cs[s], b0, j0, nj)
                store_gate_blocks(a_h, n, H, j0, j1, gates[s], b0)
        else:
            step_times(lengths, order, reverse, b0, n, s, times)
            store_rows(h[:n], h_state[s & 1], b0, j0, nj)
            scatter_rows(h, n, hs, times, order, b0, column0 + j0, nj)
            zero_padding(hs, s, order, b0 + n, b1, column0 + j0, nj)
            if training:
                scatter_rows(c, n, cs, times, order, b0, j0, nj)
                scatter_gate_blocks(a_h, n, H, j0, j1, gates, times, order, b0)
        wait_for_all(arrivals, n_threads, s)  # step s's h complete before anyone's step s + 1
    zero_steps_after(hs, steps, order, b0, b1, column0 + j0, nj)
    scatter_state(h, order, b0, b1, j0, j1, h_n)  # each row's h and c at its last step
    scatter_state(c, order, b0, b1, j0, j1, c_n)


@njit(**KERNEL_OPTIONS)
def lstm_backward(w_hh, c0, cs, gates, dhs, column0, dh_n, dc_n, lengths, order, reverse, da, da_state, dh0, dc0,
                  arrivals, n_threads, b0, b1, j0, j1):
    """Backpropagate through time: fill the tile's part of da (T, B, 4H) = ∂L/∂(pre-activations)
    (zeros past each row's length), dh0 and dc0. dhs (T, B, ≥ column0 + H): ∂L/∂hs, this
    direction's from column column0, never read past a row's length; da_state (2, B, 4H): the
    buffer of the next product's rows when the loop is not direct (jit.cpu.steps).

    twin: reference.lstm.lstm_step_backward, looped over reversed t (the weight gradients
    follow as GEMMs on da: jit.cpu.gemms). ∂L/∂h through the next step is that step's da W_hh,
    over every gate of every unit; threads that split the units wait after each step. A row
    enters at its last step with dh_n, dc_n.
    """
    T, B, H = cs.shape
    nb, nj = b1 - b0, j1 - j0
    direct = runs_direct(order, reverse, b0, b1)
    if not direct and da_state.shape[1] < B:
        raise ValueError("lstm_backward: a loop that is not direct needs da_state (2, B, 4H)")
    active, _ = active_rows(lengths, order, b0, b1, T)
    steps = lengths[order[b0]] if nb else 0
    w_panels = pack_columns(w_hh, j0, j1)  # W_hh's columns for the tile's units
    dh = product_output(nb, w_panels)  # [:, :nj]: ∂L/∂h from the next step (from h_n at a row's last)
    gather_rows(dh_n, order, b0, b1, j0, j1, dh)
    dc = np.empty((nb, nj), cs.dtype)
    gather_rows(dc_n, order, b0, b1, j0, j1, dc)
    da_t = np.empty((4, nb, nj), cs.dtype)  # this step's da, the tile's units of each gate
    times = np.empty(nb, np.int64)
    for s in range(T - 1, steps - 1, -1):  # steps no row of the tile runs
        zero_gate_padding(da, s, order, b0, b1, H, j0, j1, 4)
    for s in range(steps - 1, -1, -1):
        n = active[s]
        if s < steps - 1:
            n_next = active[s + 1]
            next_da = da[s + 1, b0:b0 + n_next] if direct else da_state[(s + 1) & 1, b0:b0 + n_next]
            panel_product(next_da, w_panels, dh)
        step_times(lengths, order, reverse, b0, n, s, times)
        for b in range(n):
            row, t = order[b0 + b], times[b]
            gates_row = gates[t, row]
            i_b, f_b = gate_units(gates_row, 0, H, j0, j1), gate_units(gates_row, 1, H, j0, j1)
            g_b, o_b = gate_units(gates_row, 2, H, j0, j1), gate_units(gates_row, 3, H, j0, j1)
            c_b = cs[t, row, j0:j1]
            if s == 0:
                c_prev_b = c0[row, j0:j1]
            else:
                c_prev_b = cs[t + 1 if reverse else t - 1, row, j0:j1]
            dhs_b, dh_b, dc_b = dhs[t, row, column0 + j0:column0 + j1], dh[b], dc[b]
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
        if direct:
            store_gate_blocks(da_t, n, H, j0, j1, da[s], b0)
        else:
            scatter_gate_blocks(da_t, n, H, j0, j1, da, times, order, b0)
            store_gate_blocks(da_t, n, H, j0, j1, da_state[s & 1], b0)
        zero_gate_padding(da, s, order, b0 + n, b1, H, j0, j1, 4)
        wait_for_all(arrivals, n_threads, steps - 1 - s)  # step s's da complete before anyone reads it
    if nb:
        first_da = da[0, b0:b1] if direct else da_state[0, b0:b1]
        panel_product(first_da, w_panels, dh)
    scatter_state(dh, order, b0, b1, j0, j1, dh0)
    scatter_state(dc, order, b0, b1, j0, j1, dc0)
