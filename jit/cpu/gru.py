"""The GRU's time loops for jit.cpu, in both forms; twin of reference.gru.

    r, z = σ(·);  h' = (1 − z)⊙n + z⊙h
    gru:          n = tanh(W_in x + b_in + r⊙(W_hn h + b_hn))      (reset after the product)
    gru_classic:  n = tanh(W_in x + b_in + W_hn (r⊙h) + b_hn)      (reset before the product)

Same layout as jit.cpu.lstm, error_model="numpy" included (why: see there). gru keeps
hn = W_hn h + b_hn per step for backward (it is not among the contract's gates);
gru_classic needs two products per step, the second on r⊙h.
"""
import numpy as np
from numba import njit

from jit.gatemath import sigmoid, sigmoid_grad, tanh, tanh_grad, typed_like

from .products import times_transposed


@njit(cache=True, nogil=True, error_model="numpy")
def gru_forward_kernel(xw, w_hh, b_ih, b_hh, h0, small, training, hs, gates, hns, h_n, b0, b1):
    """Fill hs (T, B, H), h_n; with training also gates (T, B, 3H) and hns (T, B, H).

    twin: reference.gru.gru_step_forward, looped over t.
    """
    T, B, _ = xw.shape
    H = h0.shape[1]
    h = h0[b0:b1].copy()
    a_h = np.empty((b1 - b0, 3 * H), xw.dtype)  # h W_hhᵀ for this step
    for t in range(T):
        times_transposed(h, w_hh, small, a_h)
        for b in range(b1 - b0):
            row = b0 + b
            for j in range(H):
                r = sigmoid(xw[t, row, j] + b_ih[j] + a_h[b, j] + b_hh[j])
                z = sigmoid(xw[t, row, H + j] + b_ih[H + j] + a_h[b, H + j] + b_hh[H + j])
                hn = a_h[b, 2 * H + j] + b_hh[2 * H + j]
                n = tanh(xw[t, row, 2 * H + j] + b_ih[2 * H + j] + r * hn)
                h_next = (typed_like(z, 1.0) - z) * n + z * h[b, j]
                h[b, j] = h_next
                hs[t, row, j] = h_next
                if training:
                    gates[t, row, j] = r
                    gates[t, row, H + j] = z
                    gates[t, row, 2 * H + j] = n
                    hns[t, row, j] = hn
    h_n[b0:b1] = h


@njit(cache=True, nogil=True, error_model="numpy")
def gru_backward_kernel(w_hh_t, h0, hs, gates, hns, dhs, dh_n, small, da_x, da_h, dh0, b0, b1):
    """Fill da_x (T, B, 3H) = ∂L/∂(W_ih x + b_ih), da_h (T, B, 3H) = ∂L/∂(W_hh h + b_hh), dh0.

    The two differ only in the n block, where r scales the hidden term: da_h_n = r⊙da_x_n.
    w_hh_t = W_hhᵀ (H, 3H), C-contiguous. twin: reference.gru.gru_step_backward, reversed t.
    """
    T, B, H = hs.shape
    dh = dh_n[b0:b1].copy()
    dh_direct = np.empty_like(dh)  # through the z⊙h term of the mix
    da_t = np.empty((b1 - b0, 3 * H), hs.dtype)
    for t in range(T - 1, -1, -1):
        for b in range(b1 - b0):
            row = b0 + b
            for j in range(H):
                r = gates[t, row, j]
                z = gates[t, row, H + j]
                n = gates[t, row, 2 * H + j]
                h_prev = hs[t - 1, row, j] if t > 0 else h0[row, j]
                dh_total = dh[b, j] + dhs[t, row, j]
                da_n = dh_total * (typed_like(z, 1.0) - z) * tanh_grad(n)
                da_r = da_n * hns[t, row, j] * sigmoid_grad(r)
                da_z = dh_total * (h_prev - n) * sigmoid_grad(z)
                dh_direct[b, j] = dh_total * z
                da_x[t, row, j] = da_r
                da_x[t, row, H + j] = da_z
                da_x[t, row, 2 * H + j] = da_n
                da_t[b, j] = da_r
                da_t[b, H + j] = da_z
                da_t[b, 2 * H + j] = da_n * r
        da_h[t, b0:b1] = da_t
        times_transposed(da_t, w_hh_t, small, dh)
        dh += dh_direct
    dh0[b0:b1] = dh


@njit(cache=True, nogil=True, error_model="numpy")
def gru_classic_forward_kernel(xw, w_hrz, w_hn, b_ih, b_hh, h0, small, training, hs, gates,
                               h_n, b0, b1):
    """Fill hs (T, B, H), h_n; with training also gates (T, B, 3H).

    w_hrz (2H, H) and w_hn (H, H) are the r, z and n rows of W_hh.
    twin: reference.gru.gru_classic_step_forward, looped over t.
    """
    T, B, _ = xw.shape
    H = h0.shape[1]
    nb = b1 - b0
    h = h0[b0:b1].copy()
    rh = np.empty_like(h)  # r⊙h, the input of W_hn
    z_t = np.empty_like(h)
    a_rz = np.empty((nb, 2 * H), xw.dtype)  # h W_hrzᵀ
    a_n = np.empty((nb, H), xw.dtype)  # (r⊙h) W_hnᵀ
    for t in range(T):
        times_transposed(h, w_hrz, small, a_rz)
        for b in range(nb):
            row = b0 + b
            for j in range(H):
                r = sigmoid(xw[t, row, j] + b_ih[j] + a_rz[b, j] + b_hh[j])
                z_t[b, j] = sigmoid(xw[t, row, H + j] + b_ih[H + j] + a_rz[b, H + j] + b_hh[H + j])
                rh[b, j] = r * h[b, j]
                if training:
                    gates[t, row, j] = r
                    gates[t, row, H + j] = z_t[b, j]
        times_transposed(rh, w_hn, small, a_n)
        for b in range(nb):
            row = b0 + b
            for j in range(H):
                z = z_t[b, j]
                n = tanh(xw[t, row, 2 * H + j] + b_ih[2 * H + j] + a_n[b, j] + b_hh[2 * H + j])
                h_next = z * h[b, j] + (typed_like(z, 1.0) - z) * n
                h[b, j] = h_next
                hs[t, row, j] = h_next
                if training:
                    gates[t, row, 2 * H + j] = n
    h_n[b0:b1] = h


@njit(cache=True, nogil=True, error_model="numpy")
def gru_classic_backward_kernel(w_hrz_t, w_hn_t, h0, hs, gates, dhs, dh_n, small, da, rhs, dh0, b0, b1):
    """Fill da (T, B, 3H) = ∂L/∂(pre-activations) (the same for the W_ih and W_hh sides),
    rhs (T, B, H) = r⊙h_prev (what W_hn multiplied, for its gradient) and dh0.

    w_hrz_t (H, 2H) and w_hn_t (H, H): the transposed r, z and n rows of W_hh, C-contiguous.
    twin: reference.gru.gru_classic_step_backward, looped over reversed t.
    """
    T, B, H = hs.shape
    nb = b1 - b0
    dh = dh_n[b0:b1].copy()
    dh_direct = np.empty_like(dh)  # through z⊙h
    da_n = np.empty_like(dh)
    d_rh = np.empty_like(dh)  # ∂L/∂(r⊙h) = da_n W_hn
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
        times_transposed(da_n, w_hn_t, small, d_rh)
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
        times_transposed(da_rz, w_hrz_t, small, dh)
        dh += dh_direct
    dh0[b0:b1] = dh
