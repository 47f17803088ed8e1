"""The vanilla RNN cell (rnn_tanh, rnn_relu): one step forward and backward.

    h' = act(W_ih x + b_ih + W_hh h + b_hh),   act = tanh or relu,   G = 1.

Shapes: x (B, I), h (B, H), params in PyTorch's layout (see reference.contract).
"""
from typing import NamedTuple

import numpy as np

from .activations import relu, relu_grad, tanh, tanh_grad
from .affine import StepGrads, affine, affine_backward

ACTIVATIONS = {"rnn_tanh": (tanh, tanh_grad), "rnn_relu": (relu, relu_grad)}


class RNNCache(NamedTuple):
    x: np.ndarray  # (B, I)
    h_prev: np.ndarray  # (B, H)
    h_next: np.ndarray  # (B, H)
    cell: str

    @property
    def gates(self) -> np.ndarray:  # for rnn_* the "gate" is the activation output itself
        return self.h_next


def rnn_step_forward(x, h_prev, params, cell="rnn_tanh"):
    """One step h' = act(W_ih x + b_ih + W_hh h + b_hh); returns (h_next (B, H), cache)."""
    act, _ = ACTIVATIONS[cell]
    a = affine(x, params.w_ih, params.b_ih) + affine(h_prev, params.w_hh, params.b_hh)  # (B, H)
    h_next = act(a)
    return h_next, RNNCache(x, h_prev, h_next, cell)


def rnn_step_backward(dh_next, cache: RNNCache, params):
    """Given dh_next = ∂L/∂h' (B, H): returns (∂L/∂h_prev (B, H), StepGrads)."""
    _, act_grad = ACTIVATIONS[cache.cell]
    da = dh_next * act_grad(cache.h_next)  # ∂L/∂a, (B, H)
    from_x = affine_backward(da, cache.x, params.w_ih)
    from_h = affine_backward(da, cache.h_prev, params.w_hh)
    return from_h.dx, StepGrads(from_x.dx, from_x.dw, from_h.dw, from_x.db, from_h.db)
