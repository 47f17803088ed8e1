"""The vanilla RNN's time loops for jit.cpu (rnn_tanh, rnn_relu); twin of reference.rnn.

    h' = act(W_ih x + b_ih + W_hh h + b_hh),  act = tanh or relu (one kernel, chosen by ``relu``).

Same layout as jit.cpu.lstm: the tile's input projection first, one call per thread on a
tile of rows × units, per step the recurrent product and one fused pointwise pass into
scratch arrays (why: see jit.cpu.lstm); rows of different lengths and the reverse direction
of a layer as there (jit.cpu.steps).
"""
import numpy as np
from numba import njit

from jit.gatemath import relu, relu_grad, tanh, tanh_grad

from .kernel_options import KERNEL_OPTIONS
from .products import gate_outputs, gate_units, pack_columns, pack_gate_rows, panel_product, product_output, \
    project_tile_inputs, store_rows
from .steps import active_rows, gather_rows, runs_direct, scatter_rows, scatter_state, step_times, zero_padding, \
    zero_steps_after
from .sync import wait_for_all


@njit(**KERNEL_OPTIONS)
def rnn_forward(x, w_ih, w_hh, bias, h0, relu_activation, lengths, order, reverse, hs, column0, h_n, h_state, xw,
                x_rows, arrivals, n_threads, b0, b1, j0, j1):
    """Fill the tile rows × units [j0, j1) of hs (T, B, ≥ column0 + H, from column column0) and
    h_n; zeros in hs past each row's length. For rnn_* hs doubles as the gates. bias = b_ih +
    b_hh (H,); lengths … x_rows: as jit.cpu.lstm.lstm_forward's.

    twin: reference.rnn.rnn_step_forward, looped over t. Threads that split the units wait
    for each other after each step (as jit.cpu.lstm.lstm_forward).
    """
    T, B, _ = x.shape
    H = h0.shape[1]
    nb, nj = b1 - b0, j1 - j0
    direct = runs_direct(order, reverse, b0, b1) and hs.shape[2] == H
    if not direct and h_state.shape[1] < B:
        raise ValueError("rnn_forward: a loop that is not direct needs h_state (2, B, H)")
    active, offsets = active_rows(lengths, order, b0, b1, T)
    steps = lengths[order[b0]] if nb else 0
    project_tile_inputs(x, w_ih, H, lengths, order, reverse, b0, b1, j0, j1, active, offsets, x_rows, xw)
    w_panels = pack_gate_rows(w_hh, H, j0, j1)
    a_h = gate_outputs(nb, w_panels)[0]  # [:, :nj]: h W_hhᵀ for this step, the tile's units; then h'
    bias_units = gate_units(bias, 0, H, j0, j1)
    times = np.empty(nb, np.int64)
    for s in range(steps):
        n = active[s]
        if direct:
            h_prev = h0[b0:b0 + n] if s == 0 else hs[s - 1, b0:b0 + n]
        else:
            h_prev = h_state[(s + 1) & 1, b0:b0 + n]
        panel_product(h_prev, w_panels[0], a_h)
        for b in range(n):
            x_b, a_b = xw[0, offsets[s] + b], a_h[b]
            for u in range(nj):
                a = x_b[u] + bias_units[u] + a_b[u]  # affine: W_ih x + b_ih + W_hh h + b_hh
                a_b[u] = relu(a) if relu_activation else tanh(a)  # h' = act(a)
        if direct:
            store_rows(a_h[:n], hs[s], b0, j0, nj)
        else:
            step_times(lengths, order, reverse, b0, n, s, times)
            store_rows(a_h[:n], h_state[s & 1], b0, j0, nj)
            scatter_rows(a_h, n, hs, times, order, b0, column0 + j0, nj)
        zero_padding(hs, s, order, b0 + n, b1, column0 + j0, nj)
        wait_for_all(arrivals, n_threads, s)
    zero_steps_after(hs, steps, order, b0, b1, column0 + j0, nj)
    scatter_state(a_h, order, b0, b1, j0, j1, h_n)  # a row's rows of a_h stop at its last step


@njit(**KERNEL_OPTIONS)
def rnn_backward(w_hh, hs, column0, dhs, dh_n, relu_activation, lengths, order, reverse, da, da_state, dh0,
                 arrivals, n_threads, b0, b1, j0, j1):
    """Fill the tile rows × units [j0, j1) of da (T, B, H) = ∂L/∂(pre-activation) (zeros past
    each row's length) and dh0. hs, dhs (T, B, ≥ column0 + H): this direction's from column
    column0; da_state as jit.cpu.lstm.lstm_backward's.

    twin: reference.rnn.rnn_step_backward, looped over reversed t (the weight gradients
    follow as GEMMs on da: jit.cpu.gemms).
    """
    T, B, H = da.shape
    nb, nj = b1 - b0, j1 - j0
    direct = runs_direct(order, reverse, b0, b1)
    if not direct and da_state.shape[1] < B:
        raise ValueError("rnn_backward: a loop that is not direct needs da_state (2, B, H)")
    active, _ = active_rows(lengths, order, b0, b1, T)
    steps = lengths[order[b0]] if nb else 0
    w_panels = pack_columns(w_hh, j0, j1)  # W_hh's columns for the tile's units
    dh = product_output(nb, w_panels)  # [:, :nj]: ∂L/∂h from the next step (from h_n at a row's last)
    gather_rows(dh_n, order, b0, b1, j0, j1, dh)
    da_t = np.empty((nb, nj), da.dtype)
    times = np.empty(nb, np.int64)
    for s in range(T - 1, steps - 1, -1):
        zero_padding(da, s, order, b0, b1, j0, nj)
    for s in range(steps - 1, -1, -1):
        n = active[s]
        if s < steps - 1:
            n_next = active[s + 1]
            next_da = da[s + 1, b0:b0 + n_next] if direct else da_state[(s + 1) & 1, b0:b0 + n_next]
            panel_product(next_da, w_panels, dh)
        step_times(lengths, order, reverse, b0, n, s, times)
        for b in range(n):
            row, t = order[b0 + b], times[b]
            h_b, dhs_b = hs[t, row, column0 + j0:column0 + j1], dhs[t, row, column0 + j0:column0 + j1]
            dh_b, da_b = dh[b], da_t[b]
            for u in range(nj):
                act_grad = relu_grad(h_b[u]) if relu_activation else tanh_grad(h_b[u])
                da_b[u] = (dh_b[u] + dhs_b[u]) * act_grad
        if direct:
            store_rows(da_t[:n], da[s], b0, j0, nj)
        else:
            scatter_rows(da_t, n, da, times, order, b0, j0, nj)
            store_rows(da_t[:n], da_state[s & 1], b0, j0, nj)
        zero_padding(da, s, order, b0 + n, b1, j0, nj)
        wait_for_all(arrivals, n_threads, steps - 1 - s)
    if nb:
        panel_product(da[0, b0:b1] if direct else da_state[0, b0:b1], w_panels, dh)
    scatter_state(dh, order, b0, b1, j0, j1, dh0)
