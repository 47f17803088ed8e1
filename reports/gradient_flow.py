"""Gradient flow through time: ‖∂L/∂h_{T−k}‖ / ‖∂L/∂h_T‖ against k, measured with the reference.

The measured form of the claim that gated cells (LSTM, GRU) keep gradients alive over
many steps where a vanilla tanh RNN loses them.

L depends on the last hidden state only (dhs = 0 except ∂L/∂h_T = g, a fixed random
direction). Then ∂L/∂h_{T−k} is exactly the dh0 of backward run on the last k steps,
x[T−k:], started from the forward states h_{T−k} (and c_{T−k}) with dh_n = g: the
truncated sequence sees the same states and the same upstream gradient, and dh0 is the
gradient with respect to its initial state. For lstm this holds c_{T−k} fixed, i.e. it
is the gradient along the hidden state alone.

Inits: PyTorch's default U(−1/√H, 1/√H) for every cell, and "gate bias at 1": lstm's
forget gate f (b_ih rows f at 1, b_hh rows f at 0, so the pre-activation bias is 1) and,
as its GRU analogue, the update gate z, whose σ is the fraction of h kept. rnn_tanh has no
gate, so it has the default init only.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

import reference
from reference.contract import GATE_NAMES

CELLS = ("rnn_tanh", "lstm", "gru")
KEEP_GATE = {"lstm": "f", "gru": "z"}  # the gate that decides how much of the old state survives


def params_for(cell, init, input_size, hidden_size, seed):
    params = reference.init_params(cell, input_size, hidden_size, dtype=np.float64, seed=seed)
    if init == "gate bias 1":
        block = GATE_NAMES[cell].index(KEEP_GATE[cell])
        rows = slice(block * hidden_size, (block + 1) * hidden_size)
        b_ih, b_hh = params.b_ih.copy(), params.b_hh.copy()
        b_ih[rows], b_hh[rows] = 1.0, 0.0
        params = params._replace(b_ih=b_ih, b_hh=b_hh)
    return params


def gradient_ratios(cell, init="default", T=60, B=16, I=32, H=64, seed=0) -> np.ndarray:
    """ratios[k] = ‖∂L/∂h_{T−k}‖ / ‖∂L/∂h_T‖ for k = 0..T (Frobenius norms over the batch)."""
    rng = np.random.default_rng(seed)
    params = params_for(cell, init, I, H, seed)
    x = rng.standard_normal((T, B, I))
    h0 = np.zeros((B, H))
    c0 = np.zeros((B, H)) if cell == "lstm" else None
    fwd = reference.backend.forward(cell, params, x, h0, c0)
    g = rng.standard_normal((B, H))
    ratios = np.empty(T + 1)
    ratios[0] = 1.0
    for k in range(1, T + 1):
        start = T - k
        h_start = h0 if start == 0 else fwd.hs[start - 1]
        c_start = None if c0 is None else (c0 if start == 0 else fwd.cs[start - 1])
        tail = reference.backend.forward(cell, params, x[start:], h_start, c_start)
        grads = reference.backend.backward(cell, params, x[start:], h_start, c_start, tail,
                                           np.zeros_like(tail.hs), g)
        ratios[k] = np.linalg.norm(grads.dh0) / np.linalg.norm(g)
    return ratios


def gradient_flow_table(T=60, **sizes) -> pd.DataFrame:
    """Long form: cell, init, k, ratio for every cell and init."""
    rows = []
    for cell in CELLS:
        for init in ("default",) + (("gate bias 1",) if cell in KEEP_GATE else ()):
            for k, ratio in enumerate(gradient_ratios(cell, init, T=T, **sizes)):
                rows.append({"cell": cell, "init": init, "k": k, "ratio": ratio})
    return pd.DataFrame(rows)


def gradient_flow_summary(table: pd.DataFrame, ks=(1, 5, 10, 20, 40)) -> pd.DataFrame:
    """The ratio at a few distances k, one row per cell and init."""
    ks = [k for k in ks if k <= table["k"].max()]
    wide = table[table["k"].isin(ks)].pivot_table(index=["cell", "init"], columns="k", values="ratio", sort=False)
    wide.columns = [f"k={k}" for k in wide.columns]
    return wide.reset_index()
