"""Family layers: stacked, bidirectional, variable-length layers (and lstm projections), on every
backend, through its own ``layer_forward`` / ``layer_backward`` or, for a backend that has only
cells, ``reference.layers.composed(backend)``.

- Agreement: every output and gradient, in float32 and float64, against reference.layers in
  float64 on the same (exactly upcast) inputs, training=False alike; gradients against central
  differences of the backend's own forward.
- Stacking is composition: two layers give what layer 0 gives, then layer 1 on layer 0's hs;
  backward likewise, layer 1's dx being layer 0's upstream gradient.
- Reversal: the reverse direction equals the forward one (with the reverse direction's params) on
  x reversed within each row's length, its hs reversed back.
- Lengths: each row equals that row alone, truncated to its length, its hs and dx past it exactly
  zero: rows never affect each other, and the weight gradients are the sum of the rows'. A gradient
  given at padded positions changes nothing, bit for bit.
- Projection (lstm): h = W_hr (o⊙tanh c) at each row's last step, |h| ≤ Σ_j |W_hr[i, j]|, and
  W_hr = [I_P 0] equals the plain lstm whose W_hh reads only the first P units (the issue's
  P = H, W_hr = I is that case; torch.nn.LSTM requires P < H, and so does the layer contract).

Tolerances: properties.asserts.layer_tolerances; where two computations of the same quantity are
compared, each is within its bound of the exact value: twice the bound (as in test_structure).
"""
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import event, given, settings, target
from hypothesis import strategies as st

import reference.layers
from reference.contract import Params

from .asserts import (assert_close, assert_dtype, assert_within, layer_tolerances, projection_bound_allowance,
                      projection_tolerance, unit_roundoff)
from .conditioning import layer_conditionings
from .backends import has_layer_backward, layer_features
from .strategies import LayerProblem, dtypes_of, layer_problems

TRUTH_DTYPE = np.dtype(np.float64)
TRUTH = reference.layers.REFERENCE
#: As for cells (test_agreement): a float64 truth is sharp where the recurrence contracts.
AGREEMENT_REGIMES = ("contracting",)
#: Structure holds in every regime; a contracting one keeps "equal up to rounding" a sharp statement.
REGIMES = ("contracting", "contracting", "pytorch_init")
#: Examples per property on a slow backend (one that declares max_test_sizes: jit.cuda under the
#: CUDA simulator), where one layer example is 10 to 40 cell calls of ~0.1 s each: with the profile's
#: 5 the family took 66 s there on the 2-core CI machine. Two, because Hypothesis' first example is
#: the smallest (T = B = L = 1); the composition these properties check is the one every fast
#: backend runs with the profile's count, and what is the slow backend's own, its cells, the
#: cell-level families check. On a GPU (no max_test_sizes) the profile's count runs.
SLOW_BACKEND_EXAMPLES = 2


@pytest.fixture(autouse=True)
def _fewer_examples_on_slow_backends(request):
    """Lower this test's Hypothesis examples on a slow backend (properties.conftest applies the
    backend's max_test_examples on top, through the same settings attribute)."""
    test = request.node.obj
    callspec = getattr(request.node, "callspec", None)
    backend = callspec.params.get("backend") if callspec else None  # parametrized, not yet in funcargs
    if getattr(test, "hypothesis", None) is None or not getattr(backend, "max_test_sizes", None):
        yield
        return
    saved = test._hypothesis_internal_use_settings
    test._hypothesis_internal_use_settings = settings(saved, max_examples=min(saved.max_examples,
                                                                              SLOW_BACKEND_EXAMPLES))
    try:
        yield
    finally:
        test._hypothesis_internal_use_settings = saved


def layers_of(backend):
    """The backend's own layers, or the composition of its cells."""
    return backend if hasattr(backend, "layer_forward") else reference.layers.composed(backend)


def require(backend, *features, gradients=False):
    """Skip, naming what is missing, where the backend's layers lack a feature this property needs
    (``layer_features``) or, for ``gradients``, layer gradients (forward-only layers)."""
    missing = sorted(set(features) - layer_features(backend))
    if missing:
        pytest.skip(f"backend {backend.name}'s layers do not support {', '.join(missing)} (its layer_features)")
    if gradients and not has_layer_backward(backend):
        pytest.skip(f"backend {backend.name}'s layers are forward-only: this property checks gradients")


# ----- results as named arrays, and their comparison ----------------------------------------------

def outputs(fwd) -> dict:
    return {"hs": fwd.hs, "h_n": fwd.h_n, "c_n": fwd.c_n}


PARAM_GRADIENTS = ("dw_ih", "dw_hh", "db_ih", "db_hh", "dw_hr")


def param_gradients(k: int, per_direction) -> dict:
    """One layer-direction's parameter gradients, read by name (dw_hr None without a projection)."""
    return {f"dparams[{k}].{field}": getattr(per_direction, field, None) for field in PARAM_GRADIENTS}


def gradients(grads) -> dict:
    """dx, dh0, dc0 and every layer-direction's parameter gradients, as ``dparams[k].dw_ih``."""
    named = {"dx": grads.dx, "dh0": grads.dh0, "dc0": grads.dc0}
    for k, per_direction in enumerate(grads.dparams):
        named.update(param_gradients(k, per_direction))
    return named


def tolerance_of(tols, name: str) -> float:
    if name.startswith("dparams["):
        k, field = name[len("dparams["):].split("].")
        return tols.per_direction[int(k)].for_field(field)
    return tols.for_field(name)


def assert_named_close(actual: dict, expected: dict, tols, *, scale=1.0, context="", dtype=None) -> float:
    """assert_close on every array of ``expected`` (None must stay None); the largest error/tolerance."""
    worst = 0.0
    for name, e in expected.items():
        a = actual.get(name)
        if e is None:
            assert a is None, f"{name}: expected None; got {type(a).__name__}\n  {context}"
            continue
        if a is None:
            raise AssertionError(f"{name}: got None, expected an array of shape {np.shape(e)}\n  {context}")
        if dtype is not None:
            assert_dtype(name, a, dtype, context=context)
        tol = scale * tolerance_of(tols, name)
        assert_close(name, a, e, tol, context=context)
        if np.size(e) and tol > 0 and np.isfinite(tol):
            worst = max(worst, float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(e, np.float64)))) / tol)
    return worst


def results(problem: LayerProblem, layers, with_gradients=True) -> dict:
    """Outputs and (``with_gradients``) every gradient, by name."""
    fwd = problem.forward(layers)
    return {**outputs(fwd), **(gradients(problem.backward(layers, fwd)) if with_gradients else {})}


# ----- agreement -----------------------------------------------------------------------------------

@given(data=st.data())
def test_layers_agree_with_the_reference(backend, cell, dtype, data):
    problem = data.draw(layer_problems(backend, cell, dtype, regimes=AGREEMENT_REGIMES), label="problem")
    exact = problem.astype(TRUTH_DTYPE)
    truth_fwd = exact.forward(TRUTH)
    tols = layer_tolerances(problem, dtype).plus(layer_tolerances(problem, TRUTH_DTYPE))
    event(f"L·D = {len(problem.params)}, lengths {'given' if problem.lengths is not None else 'none'}")
    context = f"{problem.describe()}; {tols.describe()}"
    layers = layers_of(backend)

    fwd = problem.forward(layers)
    worst = assert_named_close(outputs(fwd), outputs(truth_fwd), tols, context=context, dtype=dtype)
    inference = problem.forward(layers, training=False)
    assert_named_close(outputs(inference), outputs(truth_fwd), tols, context=context + " (training=False)")
    if has_layer_backward(backend):  # forward-only layers: the outputs above are all there is to check
        truth_grads = exact.backward(TRUTH, truth_fwd)
        grads = problem.backward(layers, fwd)
        worst = max(worst, assert_named_close(gradients(grads), gradients(truth_grads), tols, context=context,
                                              dtype=dtype))
    target(worst, label="largest error / tolerance")


#: Central-difference step, as test_agreement's: truncation and rounding balance near u^(1/3).
STEP = 2.0 ** -17
FD_LIMITS = {"T": 5, "B": 3, "I": 4, "H": 5}


def arguments_of(problem: LayerProblem) -> dict:
    """Every differentiable argument by its gradient's name."""
    named = {"dx": problem.x, "dh0": problem.h0, "dc0": problem.c0}
    for k, p in enumerate(problem.params):
        for field in p._fields:
            named[f"dparams[{k}].d{field}"] = getattr(p, field)
    return {name: a for name, a in named.items() if a is not None}


def moved(problem: LayerProblem, direction: dict, step: float) -> LayerProblem:
    """The problem with every argument moved by step·direction."""
    def at(name, a):
        return a + step * direction[name]
    params = tuple(type(p)(*(at(f"dparams[{k}].d{field}", getattr(p, field)) for field in p._fields))
                   for k, p in enumerate(problem.params))
    return replace(problem, params=params, x=at("dx", problem.x), h0=at("dh0", problem.h0),
                   c0=None if problem.c0 is None else at("dc0", problem.c0))


def loss(problem: LayerProblem, fwd) -> float:
    """L = Σ dhs⊙hs + Σ dh_n⊙h_n (+ Σ dc_n⊙c_n): the loss whose gradients layer_backward returns."""
    total = np.sum(problem.dhs * fwd.hs) + np.sum(problem.dh_n * fwd.h_n)
    if problem.c0 is not None:
        total += np.sum(problem.dc_n * fwd.c_n)
    return float(total)


def central_difference(layers, problem, direction, step):
    """(L(θ + εv) − L(θ − εv)) / 2ε, and the signs of hs and h_n at both points (relu's kinks)."""
    plus = moved(problem, direction, step).forward(layers, training=False)
    minus = moved(problem, direction, -step).forward(layers, training=False)
    signs = [(np.asarray(r.hs) > 0, np.asarray(r.h_n) > 0) for r in (plus, minus)]
    return (loss(problem, plus) - loss(problem, minus)) / (2 * step), signs


@pytest.mark.in_dtype("float64")
@given(data=st.data())
def test_layer_gradients_match_central_differences(backend, cell, data):
    require(backend, gradients=True)
    problem = data.draw(layer_problems(backend, cell, TRUTH_DTYPE, regimes=("contracting", "pytorch_init"),
                                       limits=FD_LIMITS), label="problem")
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="direction seed"))
    direction = {name: rng.uniform(-1, 1, a.shape) for name, a in arguments_of(problem).items()}
    layers = layers_of(backend)
    grads = gradients(problem.backward(layers, problem.forward(layers)))
    analytic_terms = {name: float(np.sum(grads[name] * v)) for name, v in direction.items()}
    analytic = sum(analytic_terms.values())

    step = STEP
    for _ in range(4):  # relu is not differentiable at 0: shrink the step until no visible unit changes side
        fd, signs = central_difference(layers, problem, direction, step)
        fd_wide, wide_signs = central_difference(layers, problem, direction, 2 * step)
        if cell != "rnn_relu" or all(np.array_equal(a, b) for s in signs[1:] + wide_signs
                                     for a, b in zip(signs[0], s)):
            break
        step /= 16
    else:
        raise AssertionError(f"every step down to {step:.3g} crosses relu's kink; {problem.describe()}")

    # As test_agreement: fd(2ε) − fd(ε) bounds the truncation; the forward's error δL enters as δL/ε;
    # the backend's gradient error enters ⟨g, v⟩ as Σ tol·‖v‖₁ (|v| ≤ 1).
    tols = layer_tolerances(problem)
    upstream = sum(float(np.abs(a).sum()) for a in (problem.dhs, problem.dh_n, problem.dc_n) if a is not None)
    rounding = 2 * max(tols.hs, tols.h_n, tols.c_n) * upstream / step
    gradient_error = sum(tolerance_of(tols, name) * float(np.abs(v).sum()) for name, v in direction.items())
    tolerance = abs(fd_wide - fd) + rounding + gradient_error + 8 * unit_roundoff(TRUTH_DTYPE) * abs(fd)
    if not abs(fd - analytic) <= tolerance:
        raise AssertionError(
            f"directional derivative: layer_backward gives {analytic!r}, central differences {fd!r} (step "
            f"{step:.3g}, with 2·step {fd_wide!r}); |difference| {abs(fd - analytic):.3g} > tolerance "
            f"{tolerance:.3g}\n  per argument ⟨gradient, direction⟩: {analytic_terms}\n  {problem.describe()}")


# ----- stacking ------------------------------------------------------------------------------------

def layer_slice(problem: LayerProblem, layers: slice, **changes) -> LayerProblem:
    """The problem restricted to the layer-directions ``layers`` (params, h0, c0, dh_n, dc_n)."""
    def take(a):
        return None if a is None else a[layers]
    return replace(problem, params=problem.params[layers], h0=take(problem.h0), c0=take(problem.c0),
                   dh_n=take(problem.dh_n), dc_n=take(problem.dc_n), **changes)


def joined(*parts):
    present = [p for p in parts if p is not None]
    return np.concatenate(present) if present else None


@given(data=st.data())
def test_stacking_is_composition(backend, cell, data):
    dtype = data.draw(dtypes_of(backend), label="dtype")
    problem = data.draw(layer_problems(backend, cell, dtype, regimes=REGIMES, layers=2), label="problem")
    layers, D = layers_of(backend), problem.num_directions
    grads_too = has_layer_backward(backend)
    whole = results(problem, layers, grads_too)

    lower = layer_slice(problem, slice(0, D))
    lower_fwd = lower.forward(layers)
    upper = layer_slice(problem, slice(D, 2 * D), x=np.asarray(lower_fwd.hs))
    upper_fwd = upper.forward(layers)
    expected = {"hs": upper_fwd.hs, "h_n": joined(lower_fwd.h_n, upper_fwd.h_n),
                "c_n": joined(lower_fwd.c_n, upper_fwd.c_n)}
    if grads_too:
        upper_grads = upper.backward(layers, upper_fwd)
        lower_grads = replace(lower, dhs=np.asarray(upper_grads.dx)).backward(layers, lower_fwd)
        expected.update({"dx": lower_grads.dx, "dh0": joined(lower_grads.dh0, upper_grads.dh0),
                         "dc0": joined(lower_grads.dc0, upper_grads.dc0)})
        for k, per_direction in enumerate(list(lower_grads.dparams) + list(upper_grads.dparams)):
            expected.update(param_gradients(k, per_direction))
    assert_named_close(whole, expected, layer_tolerances(problem), scale=2,
                       context=problem.describe() + ", layer 1 run on layer 0's hs")


# ----- reversal ------------------------------------------------------------------------------------

def reversed_rows(a, lengths):
    """Each row's first lengths[b] steps in reverse order; the steps past them as they are."""
    out = np.array(a, copy=True)
    for b, n in enumerate(lengths):
        out[:n, b] = a[:n, b][::-1]
    return out


@given(data=st.data())
def test_the_reverse_direction_is_the_forward_one_on_reversed_rows(backend, cell, data):
    require(backend, "bidirectional")
    dtype = data.draw(dtypes_of(backend), label="dtype")
    problem = data.draw(layer_problems(backend, cell, dtype, regimes=REGIMES, layers=1, bidirectional=True,
                                       lengths="given"), label="problem")
    layers, lengths, H_out = layers_of(backend), problem.row_lengths(), problem.h0.shape[2]
    grads_too = has_layer_backward(backend)
    whole = results(problem, layers, grads_too)

    def one_direction(k, **changes):
        return layer_slice(problem, slice(k, k + 1), bidirectional=False, **changes)
    forward = one_direction(0, dhs=np.ascontiguousarray(problem.dhs[..., :H_out]))
    reverse = one_direction(1, x=reversed_rows(problem.x, lengths),
                            dhs=reversed_rows(np.ascontiguousarray(problem.dhs[..., H_out:]), lengths))
    f_fwd, r_fwd = forward.forward(layers), reverse.forward(layers)
    expected = {"hs": np.concatenate([f_fwd.hs, reversed_rows(r_fwd.hs, lengths)], axis=2),
                "h_n": joined(f_fwd.h_n, r_fwd.h_n), "c_n": joined(f_fwd.c_n, r_fwd.c_n)}
    if grads_too:
        f_grads, r_grads = forward.backward(layers, f_fwd), reverse.backward(layers, r_fwd)
        expected.update({"dx": np.asarray(f_grads.dx) + reversed_rows(r_grads.dx, lengths),
                         "dh0": joined(f_grads.dh0, r_grads.dh0), "dc0": joined(f_grads.dc0, r_grads.dc0)})
        for k, per_direction in enumerate((f_grads.dparams[0], r_grads.dparams[0])):
            expected.update(param_gradients(k, per_direction))
    assert_named_close(whole, expected, layer_tolerances(problem), scale=2,
                       context=problem.describe() + ", reverse direction run forward on each row reversed")


# ----- lengths -------------------------------------------------------------------------------------

@given(data=st.data())
def test_each_row_is_itself_alone_truncated_then_padded_with_zeros(backend, cell, data):
    require(backend, "lengths")
    dtype = data.draw(dtypes_of(backend), label="dtype")
    problem = data.draw(layer_problems(backend, cell, dtype, regimes=REGIMES, lengths="short"), label="problem")
    layers, lengths = layers_of(backend), problem.row_lengths()
    grads_too = has_layer_backward(backend)
    whole = results(problem, layers, grads_too)
    tols = layer_tolerances(problem)
    sums = {}
    for b, n in enumerate(lengths):
        def steps(a):  # (T, B, ·) -> (n, 1, ·): the row's own steps
            return np.ascontiguousarray(a[:n, b:b + 1])

        def state(a):  # (L·D, B, ·) -> (L·D, 1, ·)
            return None if a is None else np.ascontiguousarray(a[:, b:b + 1])
        alone = replace(problem, x=steps(problem.x), h0=state(problem.h0), c0=state(problem.c0), lengths=None,
                        dhs=steps(problem.dhs), dh_n=state(problem.dh_n), dc_n=state(problem.dc_n))
        got = results(alone, layers, grads_too)
        context = f"{problem.describe()}, row {b} (length {n}) alone"
        for name in ("hs", "dx") if grads_too else ("hs",):
            np.testing.assert_array_equal(np.asarray(whole[name])[n:, b], 0, err_msg=(
                f"{name} past row {b}'s length {n} must be zeros; {context}"))
        in_batch = {name: None if whole[name] is None else np.asarray(whole[name])[:n, b:b + 1]
                    for name in ("hs", "dx") if name in whole}
        in_batch.update({name: None if whole[name] is None else np.asarray(whole[name])[:, b:b + 1]
                         for name in ("h_n", "c_n", "dh0", "dc0") if name in whole})
        assert_named_close(in_batch, {name: got[name] for name in in_batch}, tols, scale=2, context=context)
        for name, value in got.items():
            if name.startswith("dparams[") and value is not None:
                sums[name] = sums.get(name, 0) + np.asarray(value, np.float64)
    assert_named_close({name: whole[name] for name in sums}, sums, tols, scale=2,
                       context=problem.describe() + ": weight gradients against the sum of the rows' alone")


@given(data=st.data())
def test_a_gradient_at_padded_positions_changes_nothing(backend, cell, data):
    require(backend, "lengths", gradients=True)
    dtype = data.draw(dtypes_of(backend), label="dtype")
    problem = data.draw(layer_problems(backend, cell, dtype, lengths="short"), label="problem")
    scale = data.draw(st.sampled_from((1.0, 1e3)), label="padded gradient scale")
    T = problem.x.shape[0]
    padded = np.arange(T)[:, None] >= problem.row_lengths()[None, :]  # (T, B)
    noise = np.random.default_rng(0).standard_normal(problem.dhs.shape) * scale
    noisy = replace(problem, dhs=np.where(padded[..., None], noise, problem.dhs).astype(dtype))
    layers = layers_of(backend)
    fwd = problem.forward(layers)
    clean, changed = gradients(problem.backward(layers, fwd)), gradients(noisy.backward(layers, fwd))
    for name, value in clean.items():
        if value is not None:
            np.testing.assert_array_equal(changed[name], value, err_msg=(
                f"{name} changed when dhs changed at padded positions only; {problem.describe()}"))


# ----- projection ----------------------------------------------------------------------------------

def sigmoid(a):
    return 1 / (1 + np.exp(-a))


@pytest.mark.cells("lstm")
@given(data=st.data())
def test_the_projection_is_w_hr_times_o_tanh_c(backend, cell, data):
    """At each row's last step, in each direction of one layer: h_n = W_hr (o⊙tanh c_n), with o
    recomputed in float64 from x and the backend's own previous h (in hs, or h0)."""
    require(backend, "projection")
    dtype = data.draw(dtypes_of(backend), label="dtype")
    problem = data.draw(layer_problems(backend, cell, dtype, regimes=REGIMES, layers=1, projection=True),
                        label="problem")
    fwd = problem.forward(layers_of(backend))
    hs, h_n, c_n = (np.asarray(a, np.float64) for a in (fwd.hs, fwd.h_n, fwd.c_n))
    x, h0 = np.asarray(problem.x, np.float64), np.asarray(problem.h0, np.float64)
    P, lengths = problem.proj_size, problem.row_lengths()
    conds = layer_conditionings(problem)
    for k, p in enumerate(problem.params):
        w_ih, w_hh, b_ih, b_hh, w_hr = (np.asarray(a, np.float64) for a in p)
        H = w_hr.shape[1]
        out = slice(k * P, (k + 1) * P)
        # The last step of row b: t = n − 1 forward, t = 0 in reverse; the step before it, t ∓ 1.
        last = lengths - 1 if k == 0 else np.zeros_like(lengths)
        before = last - 1 if k == 0 else np.ones_like(lengths)
        rows = np.arange(len(lengths))
        h_prev = np.where((lengths > 1)[:, None], hs[np.minimum(before, hs.shape[0] - 1), rows, out], h0[k])
        a_o = x[last, rows] @ w_ih[3 * H:].T + b_ih[3 * H:] + h_prev @ w_hh[3 * H:].T + b_hh[3 * H:]
        expected = (sigmoid(a_o) * np.tanh(c_n[k])) @ w_hr.T
        tol = projection_tolerance(conds[k], w_hr, unit_roundoff(dtype) + unit_roundoff(TRUTH_DTYPE))
        assert_close(f"h_n[{k}] against W_hr (o⊙tanh c_n[{k}])", h_n[k], expected, tol,
                     context=problem.describe())


@pytest.mark.cells("lstm")
@given(data=st.data())
def test_projected_outputs_are_bounded_by_w_hr_row_sums(backend, cell, data):
    require(backend, "projection")
    dtype = data.draw(dtypes_of(backend), label="dtype")
    problem = data.draw(layer_problems(backend, cell, dtype, regimes=("wide", "pytorch_init", "saturating"),
                                       x_scales=(1.0, 10.0, 1e3), projection=True), label="problem")
    fwd = problem.forward(layers_of(backend))
    P, D = problem.proj_size, problem.num_directions
    u = unit_roundoff(dtype)
    top = len(problem.params) - D
    for k, p in enumerate(problem.params):
        H = p.w_hr.shape[1]
        bound = np.abs(np.asarray(p.w_hr, np.float64)).sum(axis=1)  # (P,): |Σ_j W_hr[i, j] m_j| with |m_j| ≤ 1
        allowance = projection_bound_allowance(H, p.w_hr, u)
        values = [("h_n", np.asarray(fwd.h_n)[k])]
        if k >= top:
            values.append(("hs", np.asarray(fwd.hs)[..., (k - top) * P:(k - top + 1) * P]))
        for name, v in values:
            assert_within(f"{name} of layer-direction {k}", np.abs(v), 0.0, bound, allowance,
                          context=problem.describe())


def identity_projected(problem: LayerProblem) -> LayerProblem:
    """The problem with every W_hr = [I_P 0]."""
    P, H = problem.params[0].w_hr.shape
    return replace(problem, params=tuple(p._replace(w_hr=np.eye(P, H, dtype=problem.dtype)) for p in problem.params))


def as_plain_lstm(problem: LayerProblem) -> LayerProblem:
    """The plain lstm that a projection by [I_P 0] is: every W_hh reads the first P of H units (zero
    columns beyond), so does every W_ih above layer 0 in each direction's block, and h0, dhs, dh_n
    are zero beyond P."""
    P, H = problem.params[0].w_hr.shape
    D = problem.num_directions

    def widened(a, blocks):  # (..., blocks·P) -> (..., blocks·H), block d's first P entries
        out = np.zeros(a.shape[:-1] + (blocks * H,), a.dtype)
        for d in range(blocks):
            out[..., d * H:d * H + P] = a[..., d * P:(d + 1) * P]
        return out
    params = tuple(Params(p.w_ih if k < D else widened(p.w_ih, D), widened(p.w_hh, 1), p.b_ih, p.b_hh)
                   for k, p in enumerate(problem.params))
    return replace(problem, params=params, h0=widened(problem.h0, 1), dhs=widened(problem.dhs, D),
                   dh_n=widened(problem.dh_n, 1))


@pytest.mark.cells("lstm")
@given(data=st.data())
def test_an_identity_projection_is_the_plain_lstm(backend, cell, data):
    require(backend, "projection")
    dtype = data.draw(dtypes_of(backend), label="dtype")
    problem = identity_projected(data.draw(layer_problems(backend, cell, dtype, regimes=REGIMES, projection=True),
                                           label="problem"))
    plain = as_plain_lstm(problem)
    layers = layers_of(backend)
    P, H = problem.params[0].w_hr.shape
    D = problem.num_directions
    grads_too = has_layer_backward(backend)
    projected, unprojected = results(problem, layers, grads_too), results(plain, layers, grads_too)
    first_p = np.concatenate([np.arange(d * H, d * H + P) for d in range(D)])  # units the projection keeps
    expected = {"hs": np.asarray(unprojected["hs"])[..., first_p], "h_n": np.asarray(unprojected["h_n"])[..., :P],
                "c_n": unprojected["c_n"]}
    if grads_too:
        expected.update({"dx": unprojected["dx"], "dh0": np.asarray(unprojected["dh0"])[..., :P],
                         "dc0": unprojected["dc0"]})
    for k in range(len(problem.params) if grads_too else 0):
        dw_ih = np.asarray(unprojected[f"dparams[{k}].dw_ih"])
        expected.update({f"dparams[{k}].dw_ih": dw_ih if k < D else dw_ih[:, first_p],  # above layer 0: kept units
                         f"dparams[{k}].dw_hh": np.asarray(unprojected[f"dparams[{k}].dw_hh"])[:, :P],
                         f"dparams[{k}].db_ih": unprojected[f"dparams[{k}].db_ih"],
                         f"dparams[{k}].db_hh": unprojected[f"dparams[{k}].db_hh"]})
    tols = layer_tolerances(problem).plus(layer_tolerances(plain))
    assert_named_close({name: projected[name] for name in expected}, expected, tols,
                       context=problem.describe() + ", W_hr = [I_P 0] against the plain lstm")
