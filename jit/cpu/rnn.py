"""The vanilla RNN's time loops for jit.cpu (rnn_tanh, rnn_relu); twin of reference.rnn.

    h' = act(W_ih x + b_ih + W_hh h + b_hh),  act = tanh or relu (one kernel, chosen by ``relu``).

Same layout as jit.cpu.lstm: xw = x W_ihᵀ arrives precomputed, one call per thread on the
batch rows [b0, b1), per step the recurrent product and one fused pointwise pass;
error_model="numpy" (why: see jit.cpu.lstm).
"""
import numpy as np
from numba import njit

from jit.gatemath import relu, relu_grad, tanh, tanh_grad

from .products import times_transposed


@njit(cache=True, nogil=True, error_model="numpy")
def rnn_forward_kernel(xw, w_hh, bias, h0, relu_activation, small, hs, h_n, b0, b1):
    """Fill hs (T, B, H) and h_n; for rnn_* hs doubles as the gates. bias = b_ih + b_hh (H,).

    twin: reference.rnn.rnn_step_forward, looped over t.
    """
    T, B, H = xw.shape
    h = h0[b0:b1].copy()
    a_h = np.empty((b1 - b0, H), xw.dtype)  # h W_hhᵀ for this step
    for t in range(T):
        times_transposed(h, w_hh, small, a_h)
        for b in range(b1 - b0):
            row = b0 + b
            for j in range(H):
                a = xw[t, row, j] + bias[j] + a_h[b, j]
                h_next = relu(a) if relu_activation else tanh(a)
                h[b, j] = h_next
                hs[t, row, j] = h_next
    h_n[b0:b1] = h


@njit(cache=True, nogil=True, error_model="numpy")
def rnn_backward_kernel(w_hh_t, hs, dhs, dh_n, relu_activation, small, da, dh0, b0, b1):
    """Fill da (T, B, H) = ∂L/∂(pre-activation) and dh0.

    w_hh_t = W_hhᵀ (H, H), C-contiguous. twin: reference.rnn.rnn_step_backward, looped over
    reversed t (weight gradients follow as GEMMs on da in jit.cpu.backend).
    """
    T, B, H = hs.shape
    dh = dh_n[b0:b1].copy()
    da_t = np.empty((b1 - b0, H), hs.dtype)
    for t in range(T - 1, -1, -1):
        for b in range(b1 - b0):
            row = b0 + b
            for j in range(H):
                h_t = hs[t, row, j]
                act_grad = relu_grad(h_t) if relu_activation else tanh_grad(h_t)
                da_t[b, j] = (dh[b, j] + dhs[t, row, j]) * act_grad
        da[t, b0:b1] = da_t
        times_transposed(da_t, w_hh_t, small, dh)
    dh0[b0:b1] = dh
