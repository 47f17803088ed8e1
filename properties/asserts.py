"""Assertion helpers of the property suite: the tolerances, derived from the dtype and the
problem's conditioning, and the one comparison helper that reports what failed and where.

The derivation is in docs/tolerances.md; in one line each (u the dtype's unit roundoff; D, L,
A = Σ L^k from properties.conditioning):
- forward: local error per step δ = u·((I + H + 2)·pre_max·D + 10·(1 + h_max + c_max));
  states ≤ A·δ; gates ≤ δ + ‖W_hh‖·D·A·δ;
- backward: adjoint Λ = A·(‖dhs‖∞ + ‖dh_n‖∞ + ‖dc_n‖∞), |∂L/∂a| ≤ D·Λ; its error E_λ sums
  W_hhᵀ·da's rounding (G·H·u), the pointwise 10u and the Jacobian's 2·D·(1 + ‖W_hh‖)·A·δ;
  parameter gradients ≤ (T·B·u·D·Λ + D·E_λ)·T·B·v, dx ≤ (G·H·u·D·Λ + D·E_λ)·‖W_ih‖₁;
- every bound is doubled (SAFETY) for the second-order terms.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .conditioning import Conditioning, conditioning, layer_conditionings

SAFETY = 2.0


def unit_roundoff(dtype) -> float:
    return float(np.finfo(dtype).eps) / 2


@dataclass(frozen=True)
class Tolerances:
    """Largest absolute error allowed in each field of forward's and backward's results."""

    state: float  # hs, h_n, cs, c_n
    gates: float
    dx: float
    dstate: float  # dh0, dc0
    dw_ih: float
    dw_hh: float
    db: float
    cond: Conditioning
    dw_hr: float = 0.0  # a projection's W_hr (layers)

    def for_field(self, field: str) -> float:
        return {"hs": self.state, "h_n": self.state, "cs": self.state, "c_n": self.state, "gates": self.gates,
                "dx": self.dx, "dh0": self.dstate, "dc0": self.dstate, "dw_ih": self.dw_ih, "dw_hh": self.dw_hh,
                "db_ih": self.db, "db_hh": self.db, "dw_hr": self.dw_hr}[field]


def upstream_max(problem) -> float:
    """‖dhs‖∞ + ‖dh_n‖∞ + ‖dc_n‖∞: what the adjoint Λ is A times."""
    return sum(float(np.abs(a).max(initial=0.0)) for a in (problem.dhs, problem.dh_n, problem.dc_n) if a is not None)


def tolerances(problem, dtype=None) -> Tolerances:
    """Bounds on the error of a computation of ``problem`` in ``dtype`` against its exact value
    (docs/tolerances.md derives each)."""
    return cell_tolerances(conditioning(problem), unit_roundoff(dtype or problem.dtype), upstream_max(problem))


def cell_tolerances(k: Conditioning, u: float, upstream: float, *, input_error: float = 0.0,
                    w_ih_rows: float = 0.0, upstream_error: float = 0.0, extra_local: float = 0.0) -> Tolerances:
    """tolerances() from a Conditioning, the unit roundoff and the upstream bound, for a cell that
    is one layer-direction of a layer (the keywords; all zero for a cell called alone):

    - input_error: the error of every input element (the layer below's hs): it moves each
      pre-activation by ≤ ‖W_ih‖∞·input_error (w_ih_rows = ‖W_ih‖∞), the new state by D times that:
      one more local error per step; and dW_ih = Σ da xᵀ sums it T·B times;
    - upstream_error: the error of every dhs element (the layer above's dx): it enters each step's
      adjoint and grows at most A-fold, like dhs itself;
    - extra_local: rounding per step beyond the cell's own (a projection's: layer_tolerances).
    """
    A, D, L, W = k.amplification, k.sensitivity, k.lipschitz, k.w_hh
    T, B, G, H, I = k.T, k.B, k.G, k.H, k.I
    with np.errstate(over="ignore", invalid="ignore"):
        local = u * ((I + H + 2) * k.pre_max * D + 10 * (1 + k.h_max + k.c_max))
        if input_error or extra_local:
            local += D * w_ih_rows * input_error + extra_local
        state = SAFETY * A * local
        gates = SAFETY * (local + W * D * A * local)
        adjoint = A * upstream  # Λ
        adjoint_error = A * (u * (G * H + 10) * (1 + W) * D * adjoint + 2 * D * (1 + W) * A * local * adjoint)
        if upstream_error:
            adjoint_error += A * upstream_error
        da, da_error = D * adjoint, D * adjoint_error
        n = T * B

        def reduction(v, v_error=0.0, d=da, d_error=da_error):
            """Σ of n terms d·v: n·u·d rounding, d's own error, and v's error."""
            return SAFETY * ((n * u * d + d_error) * n * v + n * d * v_error)

        # dW_hr = Σ ∂L/∂h mᵀ (a projection): ∂L/∂h is the adjoint itself, |m| ≤ 1, m wrong by ≤ state.
        return Tolerances(state=state, gates=gates,
                          dx=SAFETY * (G * H * u * da + da_error) * k.w_ih_cols,
                          dstate=SAFETY * adjoint_error + SAFETY * u * adjoint,
                          dw_ih=reduction(k.x_max, input_error), dw_hh=reduction(k.h_max, state), db=reduction(1.0),
                          cond=k, dw_hr=reduction(1.0, state, adjoint, adjoint_error))


FORWARD_FIELDS = ("hs", "h_n", "c_n", "cs", "gates")
BACKWARD_FIELDS = ("dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh")


def assert_close(field: str, actual, expected, tol: float, *, context: str = "") -> None:
    """|actual − expected| ≤ tol everywhere, shapes equal, non-finite values equal.

    The failure message gives both shapes, the number of elements over the tolerance, the worst
    element's index and both values there, and ``context`` (the problem, its conditioning).
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    where = f"\n  {context}" if context else ""
    if actual.shape != expected.shape:
        raise AssertionError(f"{field}: shape {actual.shape}, expected {expected.shape}{where}")
    if actual.size == 0:
        return
    a64, e64 = actual.astype(np.float64), expected.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        error = np.abs(a64 - e64)
    same_nonfinite = (~np.isfinite(e64)) & (a64 == e64)  # ±inf where the truth is ±inf too
    error = np.where(same_nonfinite, 0.0, error)
    error = np.where(np.isnan(error), np.inf, error)  # NaN in either is an infinite error
    over = error > tol
    if not over.any():
        return
    worst = np.unravel_index(int(np.argmax(error)), error.shape)
    raise AssertionError(
        f"{field}: {int(over.sum())} of {error.size} elements differ by more than {tol:.3g} "
        f"(shape {actual.shape}, dtype {actual.dtype}); worst at index {tuple(int(i) for i in worst)}: "
        f"got {actual[worst]!r}, expected {expected[worst]!r}, |error| = {error[worst]:.3g}{where}")


#: Forward fields a backend may return as None whatever the cell (frameworks do not expose them):
#: the properties then check the fields it does return.
OPTIONAL_FIELDS = ("cs", "gates")


def assert_results_close(actual, expected, tols: Tolerances, fields, *, scale: float = 1.0,
                         context: str = "") -> Optional[float]:
    """assert_close on each field present in ``expected`` (None fields must be None in both);
    returns the largest error/tolerance ratio seen (for hypothesis.target)."""
    worst = 0.0
    for field in fields:
        e = getattr(expected, field, None)
        a = getattr(actual, field, None)
        if e is None or (a is None and field in OPTIONAL_FIELDS):
            continue
        if a is None:
            raise AssertionError(f"{field}: got None, expected an array of shape {np.shape(e)}\n  {context}")
        tol = scale * tols.for_field(field)
        assert_close(field, a, e, tol, context=context)
        if np.size(e) and tol > 0 and np.isfinite(tol):
            worst = max(worst, float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(e, np.float64)))) / tol)
    return worst


def assert_dtype(field: str, array, dtype, *, context: str = "") -> None:
    if getattr(array, "dtype", None) != dtype:
        raise AssertionError(f"{field}: dtype {getattr(array, 'dtype', type(array).__name__)}, expected {dtype} "
                             f"(the dtype in is the dtype out)\n  {context}")


def assert_within(field: str, values, low, high, allowance, *, context: str = "") -> None:
    """low − allowance ≤ values ≤ high + allowance elementwise (all broadcastable), no NaN."""
    values = np.asarray(values, np.float64)
    below = values < np.asarray(low, np.float64) - allowance
    above = values > np.asarray(high, np.float64) + allowance
    bad = below | above | np.isnan(values)
    if not bad.any():
        return
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    lo = np.broadcast_to(np.asarray(low, np.float64), values.shape)[index]
    hi = np.broadcast_to(np.asarray(high, np.float64), values.shape)[index]
    al = np.broadcast_to(np.asarray(allowance, np.float64), values.shape)[index]
    raise AssertionError(
        f"{field}: {int(bad.sum())} of {values.size} values outside their bounds (shape {values.shape}); "
        f"first at index {index}: {values[index]!r} not in [{lo!r}, {hi!r}] ± {al:.3g}\n  {context}")


# ----- layers (reference.layers; properties/test_layers.py) --------------------------------------

@dataclass(frozen=True)
class LayerTolerances:
    """Largest absolute error allowed in each field of a layer forward's and backward's results."""

    hs: float
    h_n: float
    c_n: float
    dx: float
    dh0: float
    dc0: float
    per_direction: tuple  # Tolerances of each layer-direction, in params' order: its dw_ih, dw_hh, db, dw_hr

    def for_field(self, field: str) -> float:
        return {"hs": self.hs, "h_n": self.h_n, "c_n": self.c_n, "dx": self.dx, "dh0": self.dh0,
                "dc0": self.dc0}[field]

    def plus(self, other: "LayerTolerances") -> "LayerTolerances":
        """Both bounds added: two computations, each within its bound of the exact value."""
        def add(a, b):
            return type(a)(**{f: getattr(a, f) + getattr(b, f) for f in a.__dataclass_fields__ if f != "cond"},
                           cond=a.cond)
        return LayerTolerances(self.hs + other.hs, self.h_n + other.h_n, self.c_n + other.c_n, self.dx + other.dx,
                               self.dh0 + other.dh0, self.dc0 + other.dc0,
                               tuple(add(a, b) for a, b in zip(self.per_direction, other.per_direction)))

    def describe(self) -> str:
        worst = max(self.per_direction, key=lambda t: t.cond.amplification)
        return f"layer-directions' worst: {worst.cond.describe()}"


def projection_local_error(k: Conditioning, w_hr, u: float) -> float:
    """A projection's rounding per step, beyond the lstm's own local error: h = W_hr m sums H terms
    |W_hr||m| ≤ ‖W_hr‖∞ (H·u·‖W_hr‖∞), and the pointwise rounding of m, counted once in the local
    error, reaches h multiplied by up to ‖W_hr‖∞."""
    rows = float(np.abs(np.asarray(w_hr, np.float64)).sum(axis=1).max(initial=0.0))
    return u * (max(0.0, rows - 1) * 10 * (1 + k.h_max + k.c_max) + k.H * rows)


def layer_tolerances(problem, dtype=None) -> LayerTolerances:
    """Bounds on the error of a layer computation of ``problem`` (a LayerProblem) in ``dtype``.

    Each layer-direction is a cell (cell_tolerances, with its layer_conditionings entry):
    - forward, bottom-up: layer k's input is layer k−1's hs, wrong by at most that layer's state
      bound (the larger of its directions): cell_tolerances' input_error;
    - backward, top-down: the upstream gradient of layer k−1's hs is the sum over layer k's
      directions of their dx, bounded by Σ D·Λ·‖W_ih‖₁ and wrong by Σ of their dx bounds:
      cell_tolerances' upstream and upstream_error; the top layer's is the caller's dhs;
    - the reverse direction is a cell on reversed rows (the same bounds); shorter rows drop steps;
    - dx of the layer input sums both directions': their bounds add.
    """
    u = unit_roundoff(dtype or problem.dtype)
    conds = layer_conditionings(problem)
    L, D, H_out = problem.num_layers, problem.num_directions, problem.h0.shape[2]

    def directions(layer):
        return range(layer * D, (layer + 1) * D)

    def largest(a):
        return float(np.abs(a).max(initial=0.0)) if a is not None else 0.0

    def w_ih_rows(k):
        return float(np.abs(np.asarray(problem.params[k].w_ih, np.float64)).sum(axis=1).max(initial=0.0))

    def extra_local(k):
        w_hr = getattr(problem.params[k], "w_hr", None)
        return 0.0 if w_hr is None else projection_local_error(conds[k], w_hr, u)

    input_error = [0.0] * L
    for layer in range(L - 1):
        input_error[layer + 1] = max(cell_tolerances(conds[k], u, 0.0, input_error=input_error[layer],
                                                     w_ih_rows=w_ih_rows(k), extra_local=extra_local(k)).state
                                     for k in directions(layer))
    per_direction = [None] * (L * D)
    above, above_error = None, 0.0  # the gradient of this layer's hs from the layer above: bound, error
    for layer in reversed(range(L)):
        magnitude, error = 0.0, 0.0
        for k in directions(layer):
            block = slice((k % D) * H_out, (k % D + 1) * H_out)
            dhs = largest(problem.dhs[..., block]) if above is None else above
            upstream = dhs + largest(problem.dh_n[k]) + largest(None if problem.dc_n is None else problem.dc_n[k])
            per_direction[k] = cell_tolerances(conds[k], u, upstream, input_error=input_error[layer],
                                               w_ih_rows=w_ih_rows(k), upstream_error=above_error,
                                               extra_local=extra_local(k))
            # |dx| ≤ ‖W_ih‖₁·|∂L/∂a| ≤ ‖W_ih‖₁·D·A·upstream
            with np.errstate(over="ignore", invalid="ignore"):
                magnitude += conds[k].w_ih_cols * conds[k].sensitivity * conds[k].amplification * upstream
            error += per_direction[k].dx
        above, above_error = magnitude, error
    top, every = [per_direction[k] for k in directions(L - 1)], per_direction
    return LayerTolerances(hs=max(t.state for t in top), h_n=max(t.state for t in every),
                           c_n=max(t.state for t in every), dx=sum(per_direction[k].dx for k in directions(0)),
                           dh0=max(t.dstate for t in every), dc0=max(t.dstate for t in every),
                           per_direction=tuple(per_direction))


def projection_tolerance(k: Conditioning, w_hr, u: float) -> float:
    """|h − W_hr (o⊙tanh c)| at a step, with o recomputed from the backend's own x_t and stored
    h_{t−1}, and c its stored c_t: a_o sums I + P + 2 < I + H + 2 terms (≤ (I + H + 2)·u·pre_max) and
    moves by ≤ ‖W_hh‖·u·h_max if the stored h_{t−1} is a rounding of the one used; σ' ≤ ¼; tanh(c)
    moves by ≤ u·c_max if the stored c is rounded; the activations and the product add ≤ 10u. So m
    is within δ_m = u·((I + H + 2)·pre_max/4 + ‖W_hh‖·h_max/4 + c_max + 10), and h = W_hr m within
    ‖W_hr‖∞·δ_m + H·u·‖W_hr‖∞ (its H-term sum); doubled (SAFETY)."""
    rows = float(np.abs(np.asarray(w_hr, np.float64)).sum(axis=1).max(initial=0.0))
    m_error = u * ((k.I + k.H + 2) * k.pre_max / 4 + k.w_hh * k.h_max / 4 + k.c_max + 10)
    return SAFETY * rows * (m_error + k.H * u)


def projection_bound_allowance(H: int, w_hr, u: float):
    """(P,) rounding allowed over |h| ≤ Σ_j |W_hr[i, j]|: |m| ≤ 1 + 3u (o, tanh and their product),
    and the H-term sum adds ≤ H·u·Σ|W_hr||m|; doubled (SAFETY)."""
    return SAFETY * u * (H + 3) * np.abs(np.asarray(w_hr, np.float64)).sum(axis=1)
