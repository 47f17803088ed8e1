"""The LSTM cell: one step forward and backward, one function per block of equations.

    a = W_ih x + b_ih + W_hh h + b_hh            pre-activations, blocks i, f, g, o
    i = σ(a_i)   input gate:  whether to write to the cell
    f = σ(a_f)   forget gate: whether to erase it
    g = tanh(a_g) "gate gate": what to write
    o = σ(a_o)   output gate: how much of the cell to reveal
    c' = f⊙c + i⊙g                               the additive cell path
    h' = o⊙tanh(c')

Shapes: x (B, I), h and c (B, H), params in PyTorch's layout with G = 4.
"""
from typing import NamedTuple

import numpy as np

from .activations import sigmoid, sigmoid_grad, tanh, tanh_grad
from .affine import StepGrads, affine, affine_backward


class LSTMGates(NamedTuple):
    i: np.ndarray  # (B, H) each
    f: np.ndarray
    g: np.ndarray
    o: np.ndarray


class LSTMCache(NamedTuple):
    x: np.ndarray  # (B, I)
    h_prev: np.ndarray  # (B, H)
    c_prev: np.ndarray  # (B, H)
    gate: LSTMGates
    tanh_c: np.ndarray  # (B, H) tanh(c')

    @property
    def gates(self) -> np.ndarray:
        return np.concatenate(self.gate, axis=1)  # (B, 4H) in block order i, f, g, o


def lstm_gates(a: np.ndarray) -> LSTMGates:
    a_i, a_f, a_g, a_o = np.split(a, 4, axis=1)  # (B, 4H) -> 4 × (B, H)
    return LSTMGates(i=sigmoid(a_i), f=sigmoid(a_f), g=tanh(a_g), o=sigmoid(a_o))


def lstm_cell_update(c_prev, gate: LSTMGates):
    """c' = f⊙c + i⊙g."""
    return gate.f * c_prev + gate.i * gate.g


def lstm_output(gate: LSTMGates, c_next):
    """h' = o⊙tanh(c'); returns (h', tanh(c'))."""
    tanh_c = tanh(c_next)
    return gate.o * tanh_c, tanh_c


def lstm_step_forward(x, h_prev, c_prev, params):
    """One step; returns (h_next (B, H), c_next (B, H), cache)."""
    a = affine(x, params.w_ih, params.b_ih) + affine(h_prev, params.w_hh, params.b_hh)  # (B, 4H)
    gate = lstm_gates(a)
    c_next = lstm_cell_update(c_prev, gate)
    h_next, tanh_c = lstm_output(gate, c_next)
    return h_next, c_next, LSTMCache(x, h_prev, c_prev, gate, tanh_c)


class CellUpdateGrads(NamedTuple):
    d_fc: np.ndarray  # ∂L/∂(f⊙c), the forget branch of the sum
    d_ig: np.ndarray  # ∂L/∂(i⊙g), the write branch of the sum
    dc_prev: np.ndarray
    di: np.ndarray
    df: np.ndarray
    dg: np.ndarray


def lstm_cell_update_backward(dc_next, c_prev, gate: LSTMGates) -> CellUpdateGrads:
    """Backward through c' = f⊙c + i⊙g.

    A sum hands its gradient to each term unchanged, so both branches receive dc'
    itself: this is the path that keeps the LSTM's gradient alive (with f = 1 the cell
    state's gradient crosses a step untouched, the constant error carousel).
    """
    d_fc = dc_next
    d_ig = dc_next
    return CellUpdateGrads(d_fc=d_fc, d_ig=d_ig, dc_prev=d_fc * gate.f, di=d_ig * gate.g,
                           df=d_fc * c_prev, dg=d_ig * gate.i)


def lstm_output_backward(dh_next, gate: LSTMGates, tanh_c):
    """Backward through h' = o⊙tanh(c'); returns (∂L/∂o, ∂L/∂c' from this path)."""
    do = dh_next * tanh_c
    dc_next = dh_next * gate.o * tanh_grad(tanh_c)
    return do, dc_next


def lstm_gates_backward(di, df, dg, do, gate: LSTMGates):
    """∂L/∂a (B, 4H) from the gradients of the post-activation gates."""
    return np.concatenate([di * sigmoid_grad(gate.i), df * sigmoid_grad(gate.f),
                           dg * tanh_grad(gate.g), do * sigmoid_grad(gate.o)], axis=1)


def lstm_step_backward(dh_next, dc_next, cache: LSTMCache, params):
    """Given ∂L/∂h' and ∂L/∂c' (from later steps), returns (∂L/∂h, ∂L/∂c, StepGrads)."""
    do, dc_from_h = lstm_output_backward(dh_next, cache.gate, cache.tanh_c)
    update = lstm_cell_update_backward(dc_next + dc_from_h, cache.c_prev, cache.gate)
    da = lstm_gates_backward(update.di, update.df, update.dg, do, cache.gate)  # (B, 4H)
    from_x = affine_backward(da, cache.x, params.w_ih)
    from_h = affine_backward(da, cache.h_prev, params.w_hh)
    return from_h.dx, update.dc_prev, StepGrads(from_x.dx, from_x.dw, from_h.dw, from_x.db, from_h.db)


# ----- the projected lstm (torch.nn.LSTM's proj_size) -----------------------------------------------
#
#     m  = o⊙tanh(c')          what the plain lstm outputs, (B, H)
#     h' = W_hr m              the projected output and recurrent state, (B, P), P < H
#
# The next step reads h' through W_hh (4H, P); everything else is the plain step above.


class ProjectedLSTMCache(NamedTuple):
    step: LSTMCache  # the plain step's cache, h_prev (B, P)
    m: np.ndarray  # (B, H) o⊙tanh(c'), what W_hr projects


def lstm_projection(m, w_hr):
    """h' = W_hr m: (B, H) -> (B, P)."""
    return m @ w_hr.T


def lstm_projected_step_forward(x, h_prev, c_prev, params):
    """One step with params.w_hr (P, H) and params.w_hh (4H, P); h_prev (B, P), c_prev (B, H).

    Returns (h_next (B, P), c_next (B, H), cache).
    """
    m, c_next, cache = lstm_step_forward(x, h_prev, c_prev, params)
    return lstm_projection(m, params.w_hr), c_next, ProjectedLSTMCache(cache, m)


def lstm_projected_step_backward(dh_next, dc_next, cache: ProjectedLSTMCache, params):
    """Given ∂L/∂h' (B, P) and ∂L/∂c' (B, H): returns (∂L/∂h (B, P), ∂L/∂c, StepGrads, ∂L/∂W_hr (P, H))."""
    # ∂L/∂m = dh' W_hr, ∂L/∂W_hr = dh'ᵀ m
    from_projection = affine_backward(dh_next, cache.m, params.w_hr)
    dh_prev, dc_prev, grads = lstm_step_backward(from_projection.dx, dc_next, cache.step, params)
    return dh_prev, dc_prev, grads, from_projection.dw
