"""Family agreement: every backend computes the same numbers as the reference, and its gradients
are the derivatives of its forward.

- Every forward output and every gradient, in float32 and float64, against the reference run in
  float64 on the same (exactly upcast) inputs: the float64 truth. The allowed error is the bound
  of properties.asserts for the dtype under test plus the same bound for the float64 truth;
  it grows with the problem's conditioning (amplification A), so the problems are drawn mostly
  where the recurrence contracts (regime "contracting") and A stays small. With the torch
  backend selected, this is "the reference agrees with the torch oracle".
- training=False gives the same hs, h_n, c_n.
- Gradients against central finite differences of the backend's own forward, in float64, along
  one random direction through all arguments at once.
"""
import numpy as np
import pytest
from hypothesis import event, given, target
from hypothesis import strategies as st

import reference

from .asserts import (BACKWARD_FIELDS, FORWARD_FIELDS, assert_dtype, assert_results_close, tolerances,
                      unit_roundoff)
from .strategies import Problem, problems

TRUTH_DTYPE = np.dtype(np.float64)
#: Regimes in which comparing with a float64 truth is well posed (A moderate); saturating
#: biases are included: they do not amplify rounding, they only make some gates exactly 0 or 1.
AGREEMENT_REGIMES = ("contracting",)


def truth_of(problem: Problem, half: str):
    """The float64 reference's forward result, and (half "backward") its gradients."""
    exact = problem.astype(TRUTH_DTYPE)
    fwd = exact.forward(reference.backend)
    return exact, fwd, exact.backward(reference.backend, fwd) if half == "backward" else None


@given(data=st.data())
def test_forward_and_backward_agree_with_the_reference(backend, cell, dtype, half, data):
    """Every forward field, in training and inference; half "backward": every gradient too."""
    problem = data.draw(problems(backend, cell, dtype, regimes=AGREEMENT_REGIMES), label="problem")
    exact, truth_fwd, truth_grads = truth_of(problem, half)
    tols = tolerances(problem, dtype)
    truth_tols = tolerances(problem, TRUTH_DTYPE)
    both = type(tols)(**{f: getattr(tols, f) + getattr(truth_tols, f) for f in tols.__dataclass_fields__
                         if f != "cond"}, cond=tols.cond)
    event(f"amplification A {'≤ 10' if tols.cond.amplification <= 10 else '> 10'}")
    context = f"{problem.describe()}; {tols.cond.describe()}"

    fwd = problem.forward(backend)
    for field in FORWARD_FIELDS:
        if getattr(truth_fwd, field) is not None and getattr(fwd, field) is not None:
            assert_dtype(field, getattr(fwd, field), dtype, context=context)
    worst = assert_results_close(fwd, truth_fwd, both, FORWARD_FIELDS, context=context)
    inference = problem.forward(backend, training=False)
    assert_results_close(inference, truth_fwd, both, ("hs", "h_n", "c_n"), context=context + " (training=False)")
    if half == "backward":
        grads = problem.backward(backend, fwd)
        for field in BACKWARD_FIELDS:
            if getattr(truth_grads, field) is not None:
                assert_dtype(field, getattr(grads, field), dtype, context=context)
        worst = max(worst, assert_results_close(grads, truth_grads, both, BACKWARD_FIELDS, context=context))
    target(worst, label="largest error / tolerance")


# ----- finite differences ------------------------------------------------------------------------

ARGUMENTS = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")
GRADIENT_OF = {"x": "dx", "h0": "dh0", "c0": "dc0", "w_ih": "dw_ih", "w_hh": "dw_hh", "b_ih": "db_ih",
               "b_hh": "db_hh"}
#: Central-difference step: truncation ε²·|L'''|/6 and rounding u·|L|/ε balance near ε = u^(1/3) ≈ 5e-6.
STEP = 2.0 ** -17
FD_LIMITS = {"T": 6, "B": 3, "I": 4, "H": 5}


def arguments_of(problem):
    values = {"x": problem.x, "h0": problem.h0, "c0": problem.c0}
    values.update(problem.params._asdict())
    return {k: v for k, v in values.items() if v is not None}


def moved(problem, direction, step):
    """The problem with every argument moved by step·direction."""
    args = {k: v + step * direction[k] for k, v in arguments_of(problem).items()}
    params = problem.params._replace(**{k: args[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh")})
    return Problem(problem.cell, params, args["x"], args["h0"], args.get("c0"), problem.dhs, problem.dh_n,
                   problem.dc_n, problem.regime)


def loss(problem, fwd) -> float:
    """L = Σ dhs⊙hs + Σ dh_n⊙h_n (+ Σ dc_n⊙c_n): the loss whose gradients backward returns."""
    total = np.sum(problem.dhs * fwd.hs) + np.sum(problem.dh_n * fwd.h_n)
    if problem.cell == "lstm":
        total += np.sum(problem.dc_n * fwd.c_n)
    return float(total)


def central_difference(backend, problem, direction, step):
    """(L(θ + εv) − L(θ − εv)) / 2ε, and the relu activity pattern at both points."""
    plus = moved(problem, direction, step).forward(backend, training=False)
    minus = moved(problem, direction, -step).forward(backend, training=False)
    quotient = (loss(problem, plus) - loss(problem, minus)) / (2 * step)
    return quotient, (np.asarray(plus.hs) > 0), (np.asarray(minus.hs) > 0)


@pytest.mark.needs_backward
@pytest.mark.in_dtype("float64")
@given(data=st.data())
def test_gradients_match_central_differences(backend, cell, data):
    problem = data.draw(problems(backend, cell, TRUTH_DTYPE, regimes=("contracting", "pytorch_init"),
                                 x_scales=(1.0, 0.1, 3.0), limits=FD_LIMITS), label="problem")
    seed = data.draw(st.integers(0, 2 ** 32 - 1), label="direction seed")
    rng = np.random.default_rng(seed)
    direction = {k: rng.uniform(-1, 1, v.shape) for k, v in arguments_of(problem).items()}
    grads = problem.backward(backend, problem.forward(backend))
    analytic_terms = {k: float(np.sum(getattr(grads, GRADIENT_OF[k]) * v)) for k, v in direction.items()}
    analytic = sum(analytic_terms.values())

    step = STEP
    for _ in range(4):  # relu is not differentiable at 0: shrink the step until no unit changes side
        fd, active_plus, active_minus = central_difference(backend, problem, direction, step)
        fd_wide, wide_plus, wide_minus = central_difference(backend, problem, direction, 2 * step)
        if cell != "rnn_relu" or all(np.array_equal(active_plus, a) for a in (active_minus, wide_plus, wide_minus)):
            break
        step /= 16
    else:
        raise AssertionError(f"every step down to {step:.3g} crosses relu's kink; {problem.describe()}")

    # Tolerance: fd(2ε) − fd(ε) ≈ 3·(truncation error of fd(ε)) (errors ∝ ε²), so it bounds the
    # truncation with a factor 3 to spare; the forward's error δL (≤ tolerances().state per
    # element, times Σ|upstream|) enters the quotient as δL/ε; the backend's own gradient error
    # enters ⟨g, v⟩ as Σ_field tol_field·‖v_field‖₁ (|v| ≤ 1).
    tols = tolerances(problem)
    upstream = sum(float(np.abs(a).sum()) for a in (problem.dhs, problem.dh_n, problem.dc_n) if a is not None)
    rounding = 2 * tols.state * upstream / step
    gradient_error = sum(tols.for_field(GRADIENT_OF[k]) * float(np.abs(v).sum()) for k, v in direction.items())
    tolerance = abs(fd_wide - fd) + rounding + gradient_error + 8 * unit_roundoff(TRUTH_DTYPE) * abs(fd)
    if not abs(fd - analytic) <= tolerance:
        raise AssertionError(
            f"directional derivative: backward gives {analytic!r}, central differences {fd!r} (step {step:.3g}, "
            f"with 2·step {fd_wide!r}); |difference| {abs(fd - analytic):.3g} > tolerance {tolerance:.3g}\n"
            f"  per argument ⟨gradient, direction⟩: {analytic_terms}\n  {problem.describe()}")
