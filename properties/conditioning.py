"""A-priori bounds of a cell problem: how large its pre-activations and states can get, and how
much one step can amplify a perturbation of the state (D, L, A = Σ L^k). properties.asserts builds
the tolerances from them; the gate-range properties use the pre-activation bound.

Computed in float64 from the problem's own params and inputs, before any backend runs, with the
∞-norm (and the 1-norm where backward needs the transpose); σ' ≤ 1/4, tanh' ≤ 1, relu' ≤ 1.
Derivations: docs/tolerances.md.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple, Optional

import numpy as np

from reference.contract import NUM_GATES


@dataclass(frozen=True)
class Conditioning:
    T: int
    B: int
    I: int
    H: int
    G: int
    x_max: float  # ‖x‖∞
    h_max: float  # bound on every |h_t|, h0 included
    c_max: float  # bound on every |c_t| (lstm), else 0
    pre_max: float  # bound on Σ |terms| of every pre-activation: |W_ih||x| + |W_hh||h| + |b_ih| + |b_hh|
    gate_max: float  # σ(pre_max): the largest value a σ gate (f, z) can take
    w_hh: float  # max(‖W_hh‖∞, ‖W_hh‖₁)
    w_ih_cols: float  # ‖W_ih‖₁ (largest absolute column sum): dx = da W_ih
    sensitivity: float  # D: |Δ new state| ≤ D·|Δ pre-activations|, the same D bounds |∂L/∂a| ≤ D·|∂L/∂state|
    lipschitz: float  # L: |Δ state_t| ≤ L·|Δ state_{t−1}| (and the transposed Jacobian too)
    amplification: float  # A = Σ_{k<T} L^k: a perturbation injected at every step grows at most A-fold

    def describe(self) -> str:
        return (f"pre-activations ≤ {self.pre_max:.3g}, |h| ≤ {self.h_max:.3g}"
                + (f", |c| ≤ {self.c_max:.3g}" if self.c_max else "")
                + f", step Lipschitz L ≤ {self.lipschitz:.3g}, amplification A = {self.amplification:.3g}")


def sigmoid(a: float) -> float:
    return float(1 / (1 + np.exp(-a))) if a > -700 else 0.0


def geometric_sum(ratio: float, terms: int) -> float:
    """Σ_{k<terms} ratio^k, inf when it overflows."""
    if terms <= 0:
        return 0.0
    if abs(ratio - 1) < 1e-12:
        return float(terms)
    with np.errstate(over="ignore"):
        return float((np.float64(ratio) ** terms - 1) / (ratio - 1))


def conditioning(problem) -> Conditioning:
    cell = problem.cell
    w_ih, w_hh, b_ih, b_hh = (np.abs(np.asarray(a, np.float64)) for a in problem.params)
    x = np.asarray(problem.x, np.float64)
    T, B, I = x.shape
    H = problem.h0.shape[1]
    G = NUM_GATES[cell]
    x_max = float(np.abs(x).max(initial=0.0))
    h0_max = float(np.abs(problem.h0).max(initial=0.0))
    input_part = float((w_ih.sum(axis=1) * x_max + b_ih + b_hh).max(initial=0.0))  # |W_ih||x| + |b| per row
    rows_hh = float(w_hh.sum(axis=1).max(initial=0.0))
    w_norm = max(rows_hh, float(w_hh.sum(axis=0).max(initial=0.0)))
    w_ih_cols = float(w_ih.sum(axis=0).max(initial=0.0))

    if cell == "rnn_relu":
        # h_t ≤ ‖W_hh‖∞ h_{t−1} + input_part: no bound from the activation, only this recursion.
        h_max = h0_max
        with np.errstate(over="ignore"):
            for _ in range(T):
                h_max = max(h_max, rows_hh * h_max + input_part)
    else:
        h_max = max(h0_max, 1.0)  # tanh, o⊙tanh(c) and the GRU's average of n and h stay within 1
    pre_max = input_part + rows_hh * h_max
    gate_max = sigmoid(pre_max)
    c_max = 0.0
    if cell == "lstm":
        c0_max = float(np.abs(problem.c0).max(initial=0.0))
        # |c_t| ≤ f|c_{t−1}| + 1 with f ≤ gate_max: at most c0 + T, and at most max(c0, 1/(1 − gate_max)).
        c_max = min(c0_max + T, max(c0_max, 1 / (1 - gate_max))) if gate_max < 1 else c0_max + T

    # D and L, from one step's derivatives (f, z ≤ gate_max; the other factors ≤ 1):
    if cell in ("rnn_tanh", "rnn_relu"):
        sensitivity, carried = 1.0, 0.0  # h' = act(a)
    elif cell == "lstm":
        # dc' = c df + g di + i dg, dh' = tanh(c') do + o tanh'(c') dc':
        # |dh'|, |dc'| ≤ (¼ c_max + ¼ + 1 + ¼)|da|; the state carries f|dc| ≤ gate_max|dc|.
        sensitivity, carried = c_max / 4 + 1.5, gate_max
    elif cell == "gru":
        # dh' = (h − n) dz + (1 − z) dn + z dh, dn = tanh'·(da_n + (W_hn h + b_hn) dr):
        m_hn = rows_hh * h_max + float(b_hh.max(initial=0.0))
        sensitivity, carried = (h_max + 1) / 4 + 1 + m_hn / 4, gate_max
    else:  # gru_classic: dn = tanh'·(da_n + W_hn (h dr)), |W_hn (h dr)| ≤ ‖W_hh‖ h_max ¼|da_r|
        sensitivity, carried = (h_max + 1) / 4 + 1 + w_norm * h_max / 4, gate_max
    lipschitz = carried + w_norm * sensitivity  # the pre-activations move by ‖W_hh‖·|Δh|
    return Conditioning(T=T, B=B, I=I, H=H, G=G, x_max=x_max, h_max=h_max, c_max=c_max, pre_max=pre_max,
                        gate_max=gate_max, w_hh=w_norm, w_ih_cols=w_ih_cols, sensitivity=sensitivity,
                        lipschitz=lipschitz, amplification=geometric_sum(lipschitz, T))


# ----- layers ------------------------------------------------------------------------------------

class CellView(NamedTuple):
    """What conditioning() reads of a cell problem: one layer-direction of a layer problem."""

    cell: str
    params: tuple  # (w_ih, w_hh, b_ih, b_hh)
    x: np.ndarray  # (T, B, I); only its size and largest |value| are read
    h0: np.ndarray
    c0: Optional[np.ndarray]


def projected_conditioning(view: CellView, w_hr) -> Conditioning:
    """An lstm whose output is projected, h = W_hr m with m = o⊙tanh(c), |m| ≤ 1, W_hr (P, H), P < H.

    conditioning() of the same lstm with ‖h0‖∞ raised to ‖W_hr‖∞ (|h| = |W_hr m| ≤ ‖W_hr‖∞ after
    the first step), then, with w = max(‖W_hr‖∞, ‖W_hr‖₁) and s = max(1, w):
    - H is the cell's H: it bounds the recurrent product's length P + I + 2 and is the G·H of W_hhᵀ;
    - D_P = s·D: the pre-activations move m (and c) by ≤ D, then h = W_hr m by ≤ w times that;
      transposed, ∂L/∂m = W_hrᵀ ∂L/∂h by ≤ ‖W_hr‖₁;
    - L_P = s·gate_max + ‖W_hh‖·D_P: |Δc'| ≤ f|Δc| + …, |Δm| ≤ |Δc'| + ¼|Δa|, |Δh'| ≤ w|Δm|.
    """
    w_hr = np.abs(np.asarray(w_hr, np.float64))
    rows = float(w_hr.sum(axis=1).max(initial=0.0))
    w = max(rows, float(w_hr.sum(axis=0).max(initial=0.0)))
    h0_max = float(np.abs(view.h0).max(initial=0.0))
    k = conditioning(view._replace(h0=np.full(view.h0.shape, max(h0_max, rows))))
    scale = max(1.0, w)
    sensitivity = scale * k.sensitivity
    lipschitz = scale * k.gate_max + k.w_hh * sensitivity
    return replace(k, H=w_hr.shape[1], sensitivity=sensitivity, lipschitz=lipschitz,
                   amplification=geometric_sum(lipschitz, k.T))


def direction_conditioning(cell, params, x_max: float, x_shape, h0, c0) -> Conditioning:
    """One layer-direction as a cell problem whose input is bounded by x_max (its input is the layer
    below's hs for every layer but the first); params may carry w_hr (a projection)."""
    view = CellView(cell, (params.w_ih, params.w_hh, params.b_ih, params.b_hh),
                    np.broadcast_to(np.float64(x_max), x_shape), h0, c0)
    w_hr = getattr(params, "w_hr", None)
    return conditioning(view) if w_hr is None else projected_conditioning(view, w_hr)


def layer_conditionings(problem) -> list:
    """A Conditioning per layer-direction, in params' order (properties.strategies.LayerProblem).

    Layer 0 reads x; layer k reads layer k−1's hs, bounded a priori by that layer's h_max, which
    is all conditioning() needs of an input. The reverse direction reads the same values in
    another order, and a shorter row only drops steps: T bounds both.
    """
    T, B, I = problem.x.shape
    D = problem.num_directions
    x_max = float(np.abs(problem.x).max(initial=0.0))
    conds = []
    for layer in range(problem.num_layers):
        width = I if layer == 0 else D * problem.h0.shape[2]
        this_layer = [direction_conditioning(problem.cell, problem.params[k], x_max, (T, B, width), problem.h0[k],
                                             None if problem.c0 is None else problem.c0[k])
                      for k in range(layer * D, (layer + 1) * D)]
        conds += this_layer
        x_max = max(c.h_max for c in this_layer)
    return conds
