"""A minimal cellbench backend: every cell, on the reference's step functions.

Copy it and put your kernel where the step loops are; keep the contract's checks first and the
results' field names. Verify it with `cellbench verify --backend MODULE:backend`.
"""
from types import SimpleNamespace

import numpy as np
from reference.backend import STEPS  # cell -> (step forward, step backward), the reference's twins
from reference.contract import (CELLS, BackwardResult, ForwardResult, check_backward_inputs,
                                check_forward_inputs)


def forward(cell, params, x, h0, c0=None, *, training=True):
    T, B, _, H, G, dtype = check_forward_inputs(cell, params, x, h0, c0)  # raises before any work
    lstm, step = cell == "lstm", STEPS[cell]
    state = (h0, c0) if lstm else (h0,)
    hs, gates = np.empty((T, B, H), dtype), np.empty((T, B, G * H), dtype)
    cs = np.empty((T, B, H), dtype) if lstm else None
    for t in range(T):
        *state, cache = step.forward(x[t], *state, params)
        hs[t], gates[t] = state[0], cache.gates
        if lstm:
            cs[t] = state[1]
    return ForwardResult(hs, state[0].copy(), state[1].copy() if lstm else None, cs, gates)


def backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n=None):
    T, B, _, H, _, dtype = check_backward_inputs(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n)
    lstm, step = cell == "lstm", STEPS[cell]
    d_state = (dh_n, np.zeros((B, H), dtype) if dc_n is None else dc_n) if lstm else (dh_n,)
    dx = np.zeros_like(x)
    sums = [np.zeros_like(a) for a in (params.w_ih, params.w_hh, params.b_ih, params.b_hh)]
    for t in reversed(range(T)):  # BPTT, rebuilding each step's cache from the stored states
        h_before = fwd.hs[t - 1] if t else h0
        before = (h_before, fwd.cs[t - 1] if t else c0) if lstm else (h_before,)
        *_, cache = step.forward(x[t], *before, params)
        *d_state, grads = step.backward(d_state[0] + dhs[t], *d_state[1:], cache, params)
        dx[t] = grads.dx
        for total, part in zip(sums, (grads.dw_ih, grads.dw_hh, grads.db_ih, grads.db_hh)):
            total += part
    dc0 = np.array(d_state[1], dtype) if lstm else None
    return BackwardResult(dx, np.array(d_state[0], dtype), dc0, *sums)


backend = SimpleNamespace(name="minimal", cells=frozenset(CELLS), forward=forward, backward=backward)
