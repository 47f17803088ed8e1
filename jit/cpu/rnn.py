"""The vanilla RNN's time loops for jit.cpu (rnn_tanh, rnn_relu); twin of reference.rnn.

    h' = act(W_ih x + b_ih + W_hh h + b_hh),  act = tanh or relu (one kernel, chosen by ``relu``).

Same layout as jit.cpu.lstm: the tile's input projection first, one call per thread on a
tile of rows × units, per step the recurrent product and one fused pointwise pass into
scratch arrays (why: see jit.cpu.lstm).
"""
import numpy as np
from numba import njit

from jit.gatemath import relu, relu_grad, tanh, tanh_grad

from .kernel_options import KERNEL_OPTIONS
from .products import gate_outputs, gate_units, pack_columns, pack_gate_rows, panel_product, \
    product_output, project_inputs, store_rows
from .sync import wait_for_all


@njit(**KERNEL_OPTIONS)
def rnn_forward(x, w_ih, w_hh, bias, h0, relu_activation, hs, h_n, xw, arrivals, n_threads, b0, b1, j0, j1):
    """Fill the tile rows [b0, b1) × units [j0, j1) of hs (T, B, H) and h_n; for rnn_* hs
    doubles as the gates. bias = b_ih + b_hh (H,); xw: the tile's scratch for its input
    projection (jit.cpu.products.project_inputs).

    twin: reference.rnn.rnn_step_forward, looped over t. Threads that split the units wait
    for each other after each step (as jit.cpu.lstm.lstm_forward).
    """
    T, B, H = hs.shape
    nb, nj = b1 - b0, j1 - j0
    project_inputs(x, w_ih, H, b0, b1, j0, j1, xw)
    w_panels = pack_gate_rows(w_hh, H, j0, j1)
    a_h = gate_outputs(nb, w_panels)[0]  # [:, :nj]: h W_hhᵀ for this step, the tile's units
    bias_units = gate_units(bias, 0, H, j0, j1)
    for t in range(T):
        h_prev = h0[b0:b1] if t == 0 else hs[t - 1, b0:b1]
        panel_product(h_prev, w_panels[0], a_h)
        for b in range(nb):
            x_b, a_b = xw[0, t * nb + b], a_h[b]
            for u in range(nj):
                a = x_b[u] + bias_units[u] + a_b[u]  # affine: W_ih x + b_ih + W_hh h + b_hh
                a_b[u] = relu(a) if relu_activation else tanh(a)  # h' = act(a)
        store_rows(a_h, hs[t], b0, j0, nj)
        wait_for_all(arrivals, n_threads, t)
    h_n[b0:b1, j0:j1] = hs[T - 1, b0:b1, j0:j1]


@njit(**KERNEL_OPTIONS)
def rnn_backward(w_hh, hs, dhs, dh_n, relu_activation, da, dh0, arrivals, n_threads, b0, b1, j0, j1):
    """Fill the tile rows [b0, b1) × units [j0, j1) of da (T, B, H) = ∂L/∂(pre-activation) and dh0.

    twin: reference.rnn.rnn_step_backward, looped over reversed t (the weight gradients
    follow as GEMMs on da: jit.cpu.gemms).
    """
    T, B, H = hs.shape
    nb, nj = b1 - b0, j1 - j0
    w_panels = pack_columns(w_hh, j0, j1)  # W_hh's columns for the tile's units
    dh = product_output(nb, w_panels)  # [:, :nj]: ∂L/∂h_t from step t + 1 (from h_n at t = T − 1)
    dh[:, :nj] = dh_n[b0:b1, j0:j1]
    da_t = np.empty((nb, nj), hs.dtype)
    for t in range(T - 1, -1, -1):
        if t < T - 1:
            panel_product(da[t + 1, b0:b1], w_panels, dh)
        for b in range(nb):
            row = b0 + b
            h_b, dhs_b, dh_b, da_b = hs[t, row, j0:j1], dhs[t, row, j0:j1], dh[b], da_t[b]
            for u in range(nj):
                act_grad = relu_grad(h_b[u]) if relu_activation else tanh_grad(h_b[u])
                da_b[u] = (dh_b[u] + dhs_b[u]) * act_grad
        store_rows(da_t, da[t], b0, j0, nj)
        wait_for_all(arrivals, n_threads, T - 1 - t)
    panel_product(da[0, b0:b1], w_panels, dh)
    dh0[b0:b1, j0:j1] = dh[:, :nj]
