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

from .conditioning import Conditioning, conditioning

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

    def for_field(self, field: str) -> float:
        return {"hs": self.state, "h_n": self.state, "cs": self.state, "c_n": self.state, "gates": self.gates,
                "dx": self.dx, "dh0": self.dstate, "dc0": self.dstate, "dw_ih": self.dw_ih, "dw_hh": self.dw_hh,
                "db_ih": self.db, "db_hh": self.db}[field]


def tolerances(problem, dtype=None) -> Tolerances:
    """Bounds on the error of a computation of ``problem`` in ``dtype`` against its exact value
    (docs/tolerances.md derives each)."""
    u = unit_roundoff(dtype or problem.dtype)
    k = conditioning(problem)
    A, D, L, W = k.amplification, k.sensitivity, k.lipschitz, k.w_hh
    T, B, G, H, I = k.T, k.B, k.G, k.H, k.I
    with np.errstate(over="ignore", invalid="ignore"):
        local = u * ((I + H + 2) * k.pre_max * D + 10 * (1 + k.h_max + k.c_max))
        state = SAFETY * A * local
        gates = SAFETY * (local + W * D * A * local)
        upstream = sum(float(np.abs(a).max(initial=0.0)) for a in (problem.dhs, problem.dh_n, problem.dc_n)
                       if a is not None)
        adjoint = A * upstream  # Λ
        adjoint_error = A * (u * (G * H + 10) * (1 + W) * D * adjoint + 2 * D * (1 + W) * A * local * adjoint)
        da, da_error = D * adjoint, D * adjoint_error
        n = T * B

        def reduction(v, v_error=0.0):
            return SAFETY * ((n * u * da + da_error) * n * v + n * da * v_error)

        return Tolerances(state=state, gates=gates,
                          dx=SAFETY * (G * H * u * da + da_error) * k.w_ih_cols,
                          dstate=SAFETY * adjoint_error + SAFETY * u * adjoint,
                          dw_ih=reduction(k.x_max), dw_hh=reduction(k.h_max, state), db=reduction(1.0), cond=k)


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


def assert_results_close(actual, expected, tols: Tolerances, fields, *, scale: float = 1.0,
                         context: str = "") -> Optional[float]:
    """assert_close on each field present in ``expected`` (None fields must be None in both);
    returns the largest error/tolerance ratio seen (for hypothesis.target)."""
    worst = 0.0
    for field in fields:
        e = getattr(expected, field, None)
        a = getattr(actual, field, None)
        if e is None:
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
