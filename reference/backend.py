"""The NumPy reference backend: sequence functions that loop over the step functions.

This module is itself a backend (it has ``name``, ``cells``, ``forward``, ``backward``),
so ``reference.backend`` or ``--backend reference:backend`` names it.

Backward recomputes each step's cache from the states forward stored (hs, cs): it
reads only the contract's fields, so it trades one extra forward for simplicity.
"""
from functools import partial
from typing import Callable, NamedTuple

import numpy as np

from .contract import CELLS, BackwardResult, ForwardResult, check_backward_inputs, check_forward_inputs
from .gru import gru_classic_step_backward, gru_classic_step_forward, gru_step_backward, gru_step_forward
from .lstm import lstm_step_backward, lstm_step_forward
from .rnn import rnn_step_backward, rnn_step_forward

name = "reference"
cells = frozenset(CELLS)


class Step(NamedTuple):
    """A cell's step pair. The state is (h,) or, for lstm, (h, c).

    forward(x_t, *state, params) -> (*next_state, cache)
    backward(*d_next_state, cache, params) -> (*d_state, StepGrads)
    """
    forward: Callable
    backward: Callable


STEPS = {
    "rnn_tanh": Step(partial(rnn_step_forward, cell="rnn_tanh"), rnn_step_backward),
    "rnn_relu": Step(partial(rnn_step_forward, cell="rnn_relu"), rnn_step_backward),
    "lstm": Step(lstm_step_forward, lstm_step_backward),
    "gru": Step(gru_step_forward, gru_step_backward),
    "gru_classic": Step(gru_classic_step_forward, gru_classic_step_backward),
}


def forward(cell, params, x, h0, c0=None, *, training=True):
    """Run the cell over x (T, B, I) from h0 (and c0 for lstm); see reference.contract."""
    T, B, _, H, G, dtype = check_forward_inputs(cell, params, x, h0, c0)
    step = STEPS[cell]
    state = (h0, c0) if cell == "lstm" else (h0,)
    hs = np.empty((T, B, H), dtype)
    # Inference keeps nothing per step beyond hs; training keeps what backward is owed.
    cs = np.empty((T, B, H), dtype) if training and cell == "lstm" else None
    gates = np.empty((T, B, G * H), dtype) if training else None
    for t in range(T):
        *state, cache = step.forward(x[t], *state, params)
        hs[t] = state[0]
        if cs is not None:
            cs[t] = state[1]
        if gates is not None:
            gates[t] = cache.gates
    h_n = state[0].copy()  # a copy: h0 itself when T = 0, and results never alias inputs
    c_n = state[1].copy() if cell == "lstm" else None
    return ForwardResult(hs, h_n, c_n, cs, gates)


def backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n=None):
    """Backpropagation through time; returns the gradients of L given ∂L/∂hs, ∂L/∂h_n, ∂L/∂c_n."""
    T, B, _, H, _, dtype = check_backward_inputs(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n)
    step = STEPS[cell]
    lstm = cell == "lstm"
    if lstm and dc_n is None:
        dc_n = np.zeros((B, H), dtype)
    d_state = (dh_n, dc_n) if lstm else (dh_n,)
    dx = np.zeros_like(x)
    dw_ih, dw_hh = np.zeros_like(params.w_ih), np.zeros_like(params.w_hh)
    db_ih, db_hh = np.zeros_like(params.b_ih), np.zeros_like(params.b_hh)
    for t in reversed(range(T)):
        if lstm:
            prev_state = (fwd.hs[t - 1], fwd.cs[t - 1]) if t > 0 else (h0, c0)
        else:
            prev_state = (fwd.hs[t - 1],) if t > 0 else (h0,)
        *_, cache = step.forward(x[t], *prev_state, params)
        d_state = (d_state[0] + dhs[t],) + tuple(d_state[1:])  # h_t feeds the loss and step t+1
        *d_state, grads = step.backward(*d_state, cache, params)
        dx[t] = grads.dx
        dw_ih += grads.dw_ih
        dw_hh += grads.dw_hh
        db_ih += grads.db_ih
        db_hh += grads.db_hh
    dh0 = np.array(d_state[0], dtype=dtype, copy=True)
    dc0 = np.array(d_state[1], dtype=dtype, copy=True) if lstm else None
    return BackwardResult(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh)
