import numpy as np
from reference.backend import STEPS  # cell -> the reference's step pair: put your kernel here instead
from reference.contract import CELLS, BackwardResult, ForwardResult, check_backward_inputs, check_forward_inputs

name, cells = "minimal", frozenset(CELLS)  # optional: dtypes = {...}; backward = None if forward only


def forward(cell, params, x, h0, c0=None, *, training=True):
    T, B, _, H, _, dtype = check_forward_inputs(cell, params, x, h0, c0)  # raises before any work
    lstm, state, states = cell == "lstm", ((h0, c0) if cell == "lstm" else (h0,)), []
    for t in range(T):
        *state, _ = STEPS[cell].forward(x[t], *state, params)
        states.append(state)
    hs, cs = (np.array([s[k] for s in states], dtype).reshape(T, B, H) for k in (0, -1))
    return ForwardResult(hs, state[0].copy(), state[1].copy() if lstm else None, cs if lstm else None, gates=None)


def backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n=None):
    lstm = cell == "lstm"
    T, B, _, H, _, dtype = check_backward_inputs(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n,
                                                 fwd_fields=("hs", "cs") if lstm else ("hs",))
    d_state = (dh_n, np.zeros((B, H), dtype) if dc_n is None else dc_n) if lstm else (dh_n,)
    names = ("w_ih", "w_hh", "b_ih", "b_hh")
    dx, sums = np.zeros_like(x), [np.zeros_like(getattr(params, n)) for n in names]
    for t in reversed(range(T)):  # BPTT, each step's cache rebuilt from the states forward kept
        before = ((fwd.hs[t - 1], fwd.cs[t - 1]) if lstm else (fwd.hs[t - 1],)) if t else ((h0, c0) if lstm else (h0,))
        *_, cache = STEPS[cell].forward(x[t], *before, params)
        *d_state, grads = STEPS[cell].backward(d_state[0] + dhs[t], *d_state[1:], cache, params)
        dx[t], sums = grads.dx, [total + getattr(grads, "d" + n) for total, n in zip(sums, names)]
    return BackwardResult(dx, np.array(d_state[0], dtype), np.array(d_state[1], dtype) if lstm else None, *sums)
