"""The LSTM's time loops for jit.cpu: forward and backward kernels; twin of reference.lstm.

    i, f, o = σ(a_i, a_f, a_o);  g = tanh(a_g);  c' = f⊙c + i⊙g;  h' = o⊙tanh(c')

The input projection xw = x W_ihᵀ (T, B, 4H) arrives precomputed as one GEMM, and the
weight gradients leave as GEMMs on the stored da (see jit.cpu.backend). Each kernel call
runs the whole time loop on the batch rows [b0, b1): rows are independent, so
jit.cpu.backend runs one call per thread with no synchronisation between steps (the
kernels release the GIL). Per step: the recurrent product and one fused pointwise pass.

error_model="numpy" on every jit.cpu kernel: Numba's default checks each float division for
zero in order to raise ZeroDivisionError, and that branch keeps LLVM from vectorising the
pointwise pass. Every denominator here is at least 1 (1 + e^{−|a|}), so nothing is lost, and
the pointwise pass runs 1.6–3× faster (measured: 57 → 19 ns per lstm unit in float32).
"""
import numpy as np
from numba import njit

from jit.gatemath import sigmoid, sigmoid_grad, tanh, tanh_grad

from .products import times_transposed


@njit(cache=True, nogil=True, error_model="numpy")
def lstm_forward_kernel(xw, w_hh, bias, h0, c0, small, training, hs, cs, gates, h_n, c_n, b0, b1):
    """Fill hs (T, B, H), h_n, c_n; with training also cs (T, B, H) and gates (T, B, 4H).

    twin: reference.lstm.lstm_step_forward, looped over t. bias = b_ih + b_hh (4H,).
    """
    T, B, _ = xw.shape
    H = h0.shape[1]
    h = h0[b0:b1].copy()
    c = c0[b0:b1].copy()
    a_h = np.empty((b1 - b0, 4 * H), xw.dtype)  # h W_hhᵀ for this step
    for t in range(T):
        times_transposed(h, w_hh, small, a_h)
        for b in range(b1 - b0):
            row = b0 + b
            for j in range(H):
                i = sigmoid(xw[t, row, j] + bias[j] + a_h[b, j])
                f = sigmoid(xw[t, row, H + j] + bias[H + j] + a_h[b, H + j])
                g = tanh(xw[t, row, 2 * H + j] + bias[2 * H + j] + a_h[b, 2 * H + j])
                o = sigmoid(xw[t, row, 3 * H + j] + bias[3 * H + j] + a_h[b, 3 * H + j])
                c_next = f * c[b, j] + i * g
                h_next = o * tanh(c_next)
                c[b, j] = c_next
                h[b, j] = h_next
                hs[t, row, j] = h_next
                if training:
                    cs[t, row, j] = c_next
                    gates[t, row, j] = i
                    gates[t, row, H + j] = f
                    gates[t, row, 2 * H + j] = g
                    gates[t, row, 3 * H + j] = o
    h_n[b0:b1] = h
    c_n[b0:b1] = c


@njit(cache=True, nogil=True, error_model="numpy")
def lstm_backward_kernel(w_hh_t, c0, cs, gates, dhs, dh_n, dc_n, small, da, dh0, dc0, b0, b1):
    """Backpropagate through time: fill da (T, B, 4H) = ∂L/∂(pre-activations), dh0 and dc0.

    w_hh_t = W_hhᵀ (H, 4H), C-contiguous. twin: reference.lstm.lstm_step_backward, looped over
    reversed t (without the weight gradients, which jit.cpu.backend takes from da as GEMMs
    after this loop).
    """
    T, B, H = cs.shape
    dh = dh_n[b0:b1].copy()
    dc = dc_n[b0:b1].copy()
    da_t = np.empty((b1 - b0, 4 * H), cs.dtype)
    for t in range(T - 1, -1, -1):
        for b in range(b1 - b0):
            row = b0 + b
            for j in range(H):
                i = gates[t, row, j]
                f = gates[t, row, H + j]
                g = gates[t, row, 2 * H + j]
                o = gates[t, row, 3 * H + j]
                c_prev = cs[t - 1, row, j] if t > 0 else c0[row, j]
                tanh_c = tanh(cs[t, row, j])
                dh_total = dh[b, j] + dhs[t, row, j]  # h_t feeds the loss and step t+1
                dc_total = dc[b, j] + dh_total * o * tanh_grad(tanh_c)
                da_t[b, j] = dc_total * g * sigmoid_grad(i)
                da_t[b, H + j] = dc_total * c_prev * sigmoid_grad(f)
                da_t[b, 2 * H + j] = dc_total * i * tanh_grad(g)
                da_t[b, 3 * H + j] = dh_total * tanh_c * sigmoid_grad(o)
                dc[b, j] = dc_total * f
        da[t, b0:b1] = da_t
        times_transposed(da_t, w_hh_t, small, dh)
    dh0[b0:b1] = dh
    dc0[b0:b1] = dc
