"""The GRU cell in its two forms: one step forward and backward for each.

Both have blocks r (reset gate: how much of h the candidate sees), z (update gate: how
much of h to keep) and n (the candidate state), G = 3, and the same final mix

    h' = (1 − z)⊙n + z⊙h            a weighted average of n and h, elementwise.

gru (PyTorch / cuDNN): the reset gate applies after the recurrent product
    r = σ(W_ir x + b_ir + W_hr h + b_hr),  z = σ(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r⊙(W_hn h + b_hn))

gru_classic (Cho et al.; Keras reset_after=False; ONNX linear_before_reset=0): before it
    n = tanh(W_in x + b_in + W_hn (r⊙h) + b_hn)

Shapes: x (B, I), h (B, H), params in PyTorch's layout with G = 3.
"""
from typing import NamedTuple

import numpy as np

from .activations import sigmoid, sigmoid_grad, tanh, tanh_grad
from .affine import StepGrads, affine, affine_backward


class GRUCache(NamedTuple):
    x: np.ndarray  # (B, I)
    h_prev: np.ndarray  # (B, H)
    r: np.ndarray  # (B, H)
    z: np.ndarray  # (B, H)
    n: np.ndarray  # (B, H)
    hn: np.ndarray  # (B, H): gru: W_hn h + b_hn;  gru_classic: r⊙h, the input of W_hn

    @property
    def gates(self) -> np.ndarray:
        return np.concatenate([self.r, self.z, self.n], axis=1)  # (B, 3H)


def _rows(w, block, H):
    """Rows of gate block 0 (r), 1 (z) or 2 (n) of a (3H, ·) weight or (3H,) bias."""
    return w[block * H:(block + 1) * H]


def gru_mix(z, n, h_prev):
    """h' = (1 − z)⊙n + z⊙h."""
    return (1 - z) * n + z * h_prev


def gru_mix_backward(dh_next, z, n, h_prev):
    """Returns (∂L/∂z, ∂L/∂n, ∂L/∂h through the z⊙h term)."""
    return dh_next * (h_prev - n), dh_next * (1 - z), dh_next * z


def gru_step_forward(x, h_prev, params):
    """One PyTorch-form step; returns (h_next (B, H), cache)."""
    H = h_prev.shape[1]
    a_x = affine(x, params.w_ih, params.b_ih)  # (B, 3H)
    a_h = affine(h_prev, params.w_hh, params.b_hh)  # (B, 3H)
    r = sigmoid(a_x[:, :H] + a_h[:, :H])
    z = sigmoid(a_x[:, H:2 * H] + a_h[:, H:2 * H])
    hn = a_h[:, 2 * H:]  # W_hn h + b_hn
    n = tanh(a_x[:, 2 * H:] + r * hn)
    return gru_mix(z, n, h_prev), GRUCache(x, h_prev, r, z, n, hn)


def gru_step_backward(dh_next, cache: GRUCache, params):
    """Given ∂L/∂h' (B, H): returns (∂L/∂h (B, H), StepGrads)."""
    dz, dn, dh_prev = gru_mix_backward(dh_next, cache.z, cache.n, cache.h_prev)
    da_n = dn * tanh_grad(cache.n)  # ∂L/∂(pre-activation of n)
    dr = da_n * cache.hn
    da_r = dr * sigmoid_grad(cache.r)
    da_z = dz * sigmoid_grad(cache.z)
    da_x = np.concatenate([da_r, da_z, da_n], axis=1)  # (B, 3H)
    da_h = np.concatenate([da_r, da_z, da_n * cache.r], axis=1)  # r scales W_hn h + b_hn
    from_x = affine_backward(da_x, cache.x, params.w_ih)
    from_h = affine_backward(da_h, cache.h_prev, params.w_hh)
    return dh_prev + from_h.dx, StepGrads(from_x.dx, from_x.dw, from_h.dw, from_x.db, from_h.db)


def gru_classic_step_forward(x, h_prev, params):
    """One classic (reset-before) step; returns (h_next (B, H), cache)."""
    H = h_prev.shape[1]
    a_x = affine(x, params.w_ih, params.b_ih)  # (B, 3H)
    a_rz = affine(h_prev, params.w_hh[:2 * H], params.b_hh[:2 * H])  # (B, 2H): W_hr h, W_hz h
    r = sigmoid(a_x[:, :H] + a_rz[:, :H])
    z = sigmoid(a_x[:, H:2 * H] + a_rz[:, H:])
    rh = r * h_prev
    n = tanh(a_x[:, 2 * H:] + affine(rh, _rows(params.w_hh, 2, H), _rows(params.b_hh, 2, H)))
    return gru_mix(z, n, h_prev), GRUCache(x, h_prev, r, z, n, rh)


def gru_classic_step_backward(dh_next, cache: GRUCache, params):
    """Given ∂L/∂h' (B, H): returns (∂L/∂h (B, H), StepGrads)."""
    H = cache.h_prev.shape[1]
    dz, dn, dh_prev = gru_mix_backward(dh_next, cache.z, cache.n, cache.h_prev)
    da_n = dn * tanh_grad(cache.n)
    from_rh = affine_backward(da_n, cache.hn, _rows(params.w_hh, 2, H))  # through W_hn (r⊙h)
    da_r = from_rh.dx * cache.h_prev * sigmoid_grad(cache.r)
    da_z = dz * sigmoid_grad(cache.z)
    da_rz = np.concatenate([da_r, da_z], axis=1)  # (B, 2H)
    from_x = affine_backward(np.concatenate([da_rz, da_n], axis=1), cache.x, params.w_ih)
    from_h = affine_backward(da_rz, cache.h_prev, params.w_hh[:2 * H])
    dh_prev = dh_prev + from_rh.dx * cache.r + from_h.dx
    dw_hh = np.concatenate([from_h.dw, from_rh.dw], axis=0)  # (3H, H) in block order r, z, n
    db_hh = np.concatenate([from_h.db, from_rh.db])
    return dh_prev, StepGrads(from_x.dx, from_x.dw, dw_hh, from_x.db, db_hh)
