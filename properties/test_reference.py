"""Example-based tests of the NumPy reference: finite differences, the PyTorch oracle,
the textbook GRU, the stable sigmoid, dtypes, T = 0, initialisation; and of reference.layers:
torch.nn's layers, finite differences, bad input, T = 0 and B = 0.

The Hypothesis families (test_<family>.py) check the same mathematics on every backend;
these pin the reference itself to independent truths.
"""
import re
import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

import reference
from reference.activations import sigmoid
from reference.conversions import textbook_gru_to_classic
from reference.layers import ProjectedParams

from .asserts import assert_close, layer_tolerances
from .strategies import LayerProblem

U64 = np.finfo(np.float64).eps / 2  # unit roundoff of float64, 2^-53
CELLS = reference.CELLS
GRAD_FIELDS = ("dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh")


def make_case(cell, T=4, B=2, I=3, H=5, dtype=np.float64, seed=0):
    """A small problem: params at PyTorch's init, unit-normal inputs and upstream gradients."""
    rng = np.random.default_rng(seed)
    params = reference.init_params(cell, I, H, dtype=dtype, seed=seed)
    lstm = cell == "lstm"

    def normal(*shape):
        return rng.standard_normal(shape).astype(dtype)

    return SimpleNamespace(
        cell=cell, params=params, x=normal(T, B, I), h0=normal(B, H), c0=normal(B, H) if lstm else None,
        dhs=normal(T, B, H), dh_n=normal(B, H), dc_n=normal(B, H) if lstm else None)


def loss_terms(case, fwd):
    """The terms of L = Σ dhs⊙hs + Σ dh_n⊙h_n (+ Σ dc_n⊙c_n), whose gradients backward returns."""
    terms = [case.dhs * fwd.hs, case.dh_n * fwd.h_n]
    if case.cell == "lstm":
        terms.append(case.dc_n * fwd.c_n)
    return terms


def loss(case, **override):
    args = dict(params=case.params, x=case.x, h0=case.h0, c0=case.c0) | override
    fwd = reference.backend.forward(case.cell, args["params"], args["x"], args["h0"], args["c0"])
    return sum(t.sum() for t in loss_terms(case, fwd))


def wrt_arrays(case):
    """Each differentiable input, by the name of its gradient, with a setter for a perturbed copy."""
    out = {"dx": ("x", None), "dh0": ("h0", None)}
    if case.cell == "lstm":
        out["dc0"] = ("c0", None)
    for p in ("w_ih", "w_hh", "b_ih", "b_hh"):
        out["d" + p] = ("params", p)
    return out


@pytest.mark.parametrize("cell", CELLS)
def test_every_gradient_matches_central_differences(cell):
    case = make_case(cell)
    fwd = reference.backend.forward(cell, case.params, case.x, case.h0, case.c0)
    grads = reference.backend.backward(cell, case.params, case.x, case.h0, case.c0, fwd,
                                       case.dhs, case.dh_n, case.dc_n)
    # Central differences with step ε: truncation error ε²/6·|L'''| and rounding error about
    # u·Σ|terms of L|/ε (each evaluation of L is exact to u·Σ|terms| up to a small factor).
    # With ε = 1e-6, |L'''| ≲ 1e2 at this init and Σ|terms| ≲ 1e2, both are ≲ 1e-8; a tolerance
    # of 10× the rounding estimate plus the truncation bound leaves a margin yet fails any real
    # gradient bug, whose error is O(|gradient|) ~ 1e-2 or more.
    eps = 1e-6
    scale = sum(np.abs(t).sum() for t in loss_terms(case, fwd))
    tol = 10 * U64 * scale / eps + eps ** 2 / 6 * 1e2
    for grad_name, (arg, field) in wrt_arrays(case).items():
        base = getattr(case, arg) if field is None else getattr(case.params, field)
        if field is None:
            numeric = central_differences(lambda bumped: loss(case, **{arg: bumped}), base, eps)
        else:
            numeric = central_differences(lambda bumped: loss(case, params=case.params._replace(**{field: bumped})),
                                          base, eps)
        assert_matches_central_differences(f"{cell} {grad_name}", getattr(grads, grad_name), numeric, tol)


def central_differences(loss_at, base, eps):
    """(L(base + ε·e_i) − L(base − ε·e_i)) / 2ε for every element i of ``base``; loss_at(array) -> L."""
    numeric = np.zeros_like(base)
    for idx in np.ndindex(base.shape):
        values = []
        for sign in (+1, -1):
            bumped = base.copy()
            bumped[idx] += sign * eps
            values.append(loss_at(bumped))
        numeric[idx] = (values[0] - values[1]) / (2 * eps)
    return numeric


def assert_matches_central_differences(label, analytic, numeric, tol):
    err = np.abs(analytic - numeric)
    worst = np.unravel_index(np.argmax(err), err.shape)
    assert err.max() <= tol, (f"{label}: |analytic − numeric| = {err.max():.3g} > {tol:.3g} at {worst}: "
                              f"analytic {analytic[worst]!r}, numeric {numeric[worst]!r}")


def oracle_tolerance(T, B, I, H):
    """Bound on |reference − torch| relative to max(1, |value|), both in float64.

    Each step evaluates dot products of length I + H (+2 biases), exact to γ_{I+H+2} ≈ (I+H+2)·u
    relative to the sum of absolute terms; at PyTorch's init the recurrence contracts, so the
    errors of T steps add rather than grow: T·(I+H+2)·u. Weight gradients sum T·B outer-product
    terms, adding T·B·u. Summation orders differ between NumPy and torch (blocked BLAS), so both
    sides carry such an error: a factor 2. Then a factor 4 for the activations' own last-bit
    errors, and max(1, |value|) as the scale of the sums.
    """
    return 8 * (T + 1) * (I + H + 2 + B) * U64


@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
@pytest.mark.parametrize("T,B,I,H", [(1, 1, 1, 1), (6, 3, 5, 7), (17, 4, 9, 33)])
def test_reference_matches_torch_in_float64(cell, T, B, I, H):
    torch_backend = pytest.importorskip("reference.torch_backend", reason="the oracle needs torch")
    case = make_case(cell, T, B, I, H, seed=T + H)
    args = (cell, case.params, case.x, case.h0, case.c0)
    ours_f, theirs_f = reference.backend.forward(*args), torch_backend.forward(*args)
    ours_b = reference.backend.backward(*args, ours_f, case.dhs, case.dh_n, case.dc_n)
    theirs_b = torch_backend.backward(*args, theirs_f, case.dhs, case.dh_n, case.dc_n)
    tol = oracle_tolerance(T, B, I, H)
    for result_ours, result_theirs, fields in ((ours_f, theirs_f, ("hs", "h_n", "c_n", "cs", "gates")),
                                               (ours_b, theirs_b, GRAD_FIELDS)):
        for field in fields:
            a, b = getattr(result_ours, field), getattr(result_theirs, field)
            if a is None:
                assert b is None, f"{field}: reference gives None, torch gives an array"
                continue
            err = np.abs(a - b) / np.maximum(1, np.abs(a))
            assert err.max() <= tol, f"{cell} {field}: relative error {err.max():.3g} > {tol:.3g}"


def textbook_gru_forward(params, x, h0):
    """An independent textbook GRU: h' = (1 − z)⊙h + z⊙h̃, reset before the product."""
    w_r, w_z, w_n = np.split(params.w_ih, 3)
    u_r, u_z, u_n = np.split(params.w_hh, 3)
    b_r, b_z, b_n = np.split(params.b_ih, 3)
    c_r, c_z, c_n = np.split(params.b_hh, 3)
    h, hs = h0, []
    for x_t in x:
        r = 1 / (1 + np.exp(-(x_t @ w_r.T + b_r + h @ u_r.T + c_r)))
        z = 1 / (1 + np.exp(-(x_t @ w_z.T + b_z + h @ u_z.T + c_z)))
        h_tilde = np.tanh(x_t @ w_n.T + b_n + (r * h) @ u_n.T + c_n)
        h = (1 - z) * h + z * h_tilde
        hs.append(h)
    return np.stack(hs)


def test_textbook_gru_is_gru_classic_with_z_negated():
    case = make_case("gru_classic", T=8, B=3, I=4, H=6)
    expected = textbook_gru_forward(case.params, case.x, case.h0)
    converted = textbook_gru_to_classic(case.params)
    got = reference.backend.forward("gru_classic", converted, case.x, case.h0).hs
    # σ(−a) and 1 − σ(a) differ by a few ulps; over T = 8 contracting steps with dot products of
    # length I + H = 10 the difference stays below T·(I+H+4)·u ≈ 1.2e-14 (see oracle_tolerance).
    assert np.abs(got - expected).max() <= 8 * 14 * U64 * 4
    # Without the conversion they differ: the test can fail.
    unconverted = reference.backend.forward("gru_classic", case.params, case.x, case.h0).hs
    assert np.abs(unconverted - expected).max() > 1e-3
    # The map is its own inverse, and leaves its argument alone.
    again = textbook_gru_to_classic(converted)
    for p in ("w_ih", "w_hh", "b_ih", "b_hh"):
        np.testing.assert_array_equal(getattr(again, p), getattr(case.params, p))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_stable_for_every_finite_input(dtype):
    info = np.finfo(dtype)
    a = np.array([-info.max, -1e30, -1e4, -100, -1, -info.tiny, 0, info.tiny, 1, 100, 1e4, 1e30, info.max],
                 dtype=dtype)
    # Overflow, invalid (NaN) and division warnings raise here. Underflow of e^{−|a|} to 0 is
    # the correct rounding of σ(a) for a ≪ 0 (and NumPy's default is to ignore it).
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        s = sigmoid(a)
    assert s.dtype == dtype
    assert np.all((s >= 0) & (s <= 1)) and not np.isnan(s).any()
    assert s[0] == 0 and s[-1] == 1 and s[6] == 0.5
    assert np.all(np.diff(s) >= 0)  # monotone


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_outputs_keep_the_inputs_dtype(cell, dtype):
    case = make_case(cell, dtype=dtype)
    fwd = reference.backend.forward(cell, case.params, case.x, case.h0, case.c0)
    grads = reference.backend.backward(cell, case.params, case.x, case.h0, case.c0, fwd,
                                       case.dhs, case.dh_n, case.dc_n)
    for result in (fwd, grads):
        for field in result._fields:
            value = getattr(result, field)
            assert value is None or value.dtype == dtype, f"{field} is {value.dtype}, not {np.dtype(dtype)}"


@pytest.mark.parametrize("cell", CELLS)
def test_empty_sequence_returns_the_initial_state(cell):
    case = make_case(cell, T=0)
    fwd = reference.backend.forward(cell, case.params, case.x, case.h0, case.c0)
    assert fwd.hs.shape == (0, 2, 5)
    np.testing.assert_array_equal(fwd.h_n, case.h0)
    assert fwd.h_n is not case.h0
    if cell == "lstm":
        np.testing.assert_array_equal(fwd.c_n, case.c0)
    grads = reference.backend.backward(cell, case.params, case.x, case.h0, case.c0, fwd,
                                       case.dhs, case.dh_n, case.dc_n)
    np.testing.assert_array_equal(grads.dh0, case.dh_n)
    assert grads.dx.shape == (0, 2, 3) and not grads.dw_ih.any() and not grads.db_hh.any()


def test_duck_typed_params_and_untouched_inputs():
    case = make_case("lstm")
    duck = SimpleNamespace(**case.params._asdict())
    before = {k: v.copy() for k, v in vars(case).items() if isinstance(v, np.ndarray)}
    fwd = reference.backend.forward("lstm", duck, case.x, case.h0, case.c0)
    reference.backend.backward("lstm", duck, case.x, case.h0, case.c0, fwd, case.dhs, case.dh_n, case.dc_n)
    for k, v in before.items():
        np.testing.assert_array_equal(getattr(case, k), v, err_msg=f"{k} was modified")
    np.testing.assert_array_equal(fwd.hs, reference.backend.forward("lstm", case.params, case.x, case.h0, case.c0).hs)


def _contract_error(call):
    """(type, message) of what ``call`` raises, or None."""
    try:
        call()
    except (TypeError, ValueError) as error:
        return type(error), str(error)
    return None


@pytest.mark.parametrize("kind", ["forward", "backward"])
def test_a_remembered_signature_changes_no_verdict_of_the_contract(kind):
    """reference.contract remembers the signatures whose structure passed. Every bad-input case of
    the contract must get the same error right after a good call of its sizes and dtype as with the
    memo empty: a key that left out anything the checks read (a dtype, a shape, a field of fwd)
    would let the bad call through as a good one, and NaN in a remembered signature must still be
    found. Run on the reference, where nothing but the contract raises."""
    from properties.test_contract_errors import BACKWARD_CASES, FORWARD_CASES, good_args, trace_and_gradients
    from reference import contract
    cases = FORWARD_CASES if kind == "forward" else BACKWARD_CASES
    backend = reference.backend
    for name, (cell, make_bad, *_) in cases.items():
        for dtype in (np.float32, np.float64):
            good = good_args(cell, dtype)
            if kind == "backward":
                good |= trace_and_gradients(backend, good)
            call = getattr(backend, kind)
            run = (lambda a: (lambda: call(a["cell"], **{k: v for k, v in a.items() if k != "cell"})))
            bad = make_bad(dict(good))
            contract._passed_signatures.clear()
            cold = _contract_error(run(bad))
            assert cold is not None, f"{name}: the contract let the bad call through"
            assert _contract_error(run(good)) is None, name  # remembers the good call's signature
            assert _contract_error(run(bad)) == cold, f"{name} ({np.dtype(dtype)}): another verdict once remembered"


def test_inference_keeps_nothing_per_step_but_hs():
    case = make_case("lstm")
    fwd = reference.backend.forward("lstm", case.params, case.x, case.h0, case.c0, training=False)
    assert fwd.gates is None and fwd.cs is None and fwd.hs.shape == (4, 2, 5)


@pytest.mark.parametrize("cell", CELLS)
def test_init_params_follows_pytorch_default(cell):
    G = reference.NUM_GATES[cell]
    p = reference.init_params(cell, 7, 16, dtype=np.float32, seed=3)
    assert p.w_ih.shape == (G * 16, 7) and p.w_hh.shape == (G * 16, 16)
    assert p.b_ih.shape == p.b_hh.shape == (G * 16,)
    for a in p:
        assert a.dtype == np.float32 and np.abs(a).max() <= 1 / 4  # U(−1/√H, 1/√H), √16 = 4
    assert np.abs(p.w_hh).max() > 0.2  # the draw spans the interval, not a corner of it
    np.testing.assert_array_equal(p.w_ih, reference.init_params(cell, 7, 16, dtype=np.float32, seed=3).w_ih)


def test_torch_backend_says_how_to_install_torch_when_missing():
    code = ("import sys; sys.modules['torch'] = None\n"
            "try:\n    import reference.torch_backend\n"
            "except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install torch" in out


# ----- layers (reference.layers) ----------------------------------------------------------------------

def make_layer_case(cell, *, layers=2, bidirectional=True, lengths=None, proj_size=None, T=5, B=3, I=3, H=4,
                    dtype=np.float64, seed=0) -> LayerProblem:
    """A small layer problem: every layer-direction's params at PyTorch's init (W_hr too, U(−1/√H, 1/√H)),
    unit-normal inputs and upstream gradients."""
    rng = np.random.default_rng(seed)
    D = 2 if bidirectional else 1
    H_out = proj_size or H
    params = []
    for k in range(layers * D):
        p = reference.init_params(cell, I if k < D else D * H_out, H, dtype=dtype, seed=seed + k)
        if proj_size:
            w_hr = rng.uniform(-1 / np.sqrt(H), 1 / np.sqrt(H), (proj_size, H)).astype(dtype)
            p = ProjectedParams(p.w_ih, np.ascontiguousarray(p.w_hh[:, :proj_size]), p.b_ih, p.b_hh, w_hr)
        params.append(p)

    def normal(*shape):
        return rng.standard_normal(shape).astype(dtype)
    lstm = cell == "lstm"
    return LayerProblem(cell=cell, params=tuple(params), x=normal(T, B, I), h0=normal(layers * D, B, H_out),
                        c0=normal(layers * D, B, H) if lstm else None,
                        lengths=None if lengths is None else np.array(lengths), bidirectional=bidirectional,
                        dhs=normal(T, B, D * H_out), dh_n=normal(layers * D, B, H_out),
                        dc_n=normal(layers * D, B, H) if lstm else None)


def layer_results(problem, layers) -> dict:
    """Every output and gradient of a layer call, by name (dparams[k].dw_ih for the parameters)."""
    fwd = problem.forward(layers)
    grads = problem.backward(layers, fwd)
    named = {"hs": fwd.hs, "h_n": fwd.h_n, "c_n": fwd.c_n, "dx": grads.dx, "dh0": grads.dh0, "dc0": grads.dc0}
    for k, per_direction in enumerate(grads.dparams):
        named.update({f"dparams[{k}].{f}": getattr(per_direction, f, None)
                      for f in ("dw_ih", "dw_hh", "db_ih", "db_hh", "dw_hr")})
    return named


LAYER_CASES = {
    "2 layers": dict(layers=2, bidirectional=False),
    "bidirectional": dict(layers=1, bidirectional=True),
    "bidirectional with lengths": dict(layers=1, bidirectional=True, lengths=[1, 5, 3]),
    "2 layers, bidirectional, lengths": dict(layers=2, bidirectional=True, lengths=[5, 2, 4]),
}
PROJECTED_CASES = {
    "projected, 2 layers, bidirectional, lengths": dict(layers=2, bidirectional=True, lengths=[3, 5, 1], proj_size=2),
    "projected, 1 layer": dict(layers=1, bidirectional=False, proj_size=3),
}


@pytest.mark.parametrize("cell, case", [(c, name) for c in ("rnn_tanh", "rnn_relu", "lstm", "gru")
                                        for name in LAYER_CASES] + [("lstm", name) for name in PROJECTED_CASES])
def test_reference_layers_match_torch_in_float64(cell, case):
    """reference.layers against torch.nn.RNN/LSTM/GRU (packed sequences for lengths), every output and
    gradient; torch has no gru_classic, whose layers test_every_layer_gradient_matches_central_differences
    pins instead. Each is within properties.asserts.layer_tolerances of the exact value: 2× that bound."""
    torch_backend = pytest.importorskip("reference.torch_backend", reason="the oracle needs torch")
    problem = make_layer_case(cell, **{**LAYER_CASES, **PROJECTED_CASES}[case])
    ours, theirs = layer_results(problem, reference.layers.REFERENCE), layer_results(problem, torch_backend)
    tols = layer_tolerances(problem)
    for name, value in ours.items():
        if value is None:
            assert theirs[name] is None, f"{name}: reference gives None, torch an array"
            continue
        if name.startswith("dparams["):
            k, field = name[len("dparams["):].split("].")
            tol = tols.per_direction[int(k)].for_field(field)
        else:
            tol = tols.for_field(name)
        assert_close(name, theirs[name], value, 2 * tol, context=problem.describe())


@pytest.mark.parametrize("cell", CELLS)
def test_every_layer_gradient_matches_central_differences(cell):
    """Every element of every gradient of reference.layers, 2 layers, bidirectional, with lengths (and
    for lstm a projection), against central differences; the tolerance is the cells' (above):
    10·u·Σ|terms of L|/ε for rounding plus ε²/6·10² for truncation."""
    problem = make_layer_case(cell, T=3, B=2, I=2, H=3, lengths=[3, 1], proj_size=2 if cell == "lstm" else None)
    layers = reference.layers.REFERENCE
    fwd = problem.forward(layers)
    grads = layer_results(problem, layers)

    def loss(p):
        out = p.forward(layers, training=False)
        terms = [p.dhs * out.hs, p.dh_n * out.h_n] + ([p.dc_n * out.c_n] if cell == "lstm" else [])
        return sum(float(t.sum()) for t in terms), sum(float(np.abs(t).sum()) for t in terms)

    eps = 1e-6
    tol = 10 * U64 * loss(problem)[1] / eps + eps ** 2 / 6 * 1e2
    arguments = {"dx": ("x", None), "dh0": ("h0", None), "dc0": ("c0", None)}
    arguments.update({f"dparams[{k}].d{f}": ("params", (k, f))
                      for k, p in enumerate(problem.params) for f in p._fields})
    for name, (arg, where) in arguments.items():
        base = getattr(problem, arg) if where is None else getattr(problem.params[where[0]], where[1])
        if base is None:
            continue

        def moved(bumped):
            if where is None:
                return replace(problem, **{arg: bumped})
            params = list(problem.params)
            params[where[0]] = params[where[0]]._replace(**{where[1]: bumped})
            return replace(problem, params=tuple(params))
        numeric = central_differences(lambda bumped: loss(moved(bumped))[0], base, eps)
        assert_matches_central_differences(f"{cell} {name}", grads[name], numeric, tol)
    assert fwd.hs.shape == (3, 2, 2 * (2 if cell == "lstm" else 3))


def layer_implementations(own_kernels=False):
    """reference.layers, the composition of reference.backend's cells, and the torch oracle's layers;
    with ``own_kernels`` also jit.cpu's and jit.cuda's native layers (under the simulator without a
    GPU), whose own code paths must reject the same bad input before any kernel runs."""
    found = [reference.layers.REFERENCE, reference.layers.composed(reference.backend)]
    try:
        import reference.torch_backend as torch_backend
        found.append(torch_backend)
    except ImportError:
        pass
    if own_kernels:
        from properties.backends import available
        found += [b for name, b in available().items() if name in ("jit.cpu", "jit.cuda")]
    return found


def bad_layer_calls():
    """(what is wrong, the arguments of forward, the error, a word the message must contain)."""
    case = make_layer_case("lstm", layers=2, bidirectional=True, lengths=[2, 5, 4], proj_size=2)
    good = dict(cell="lstm", params=list(case.params), x=case.x, h0=case.h0, c0=case.c0, bidirectional=True,
                lengths=case.lengths)
    gru = make_layer_case("gru", layers=1, bidirectional=False)
    p0 = case.params[0]
    nan_bias = case.params[1].b_hh.copy()
    nan_bias[0] = np.nan
    return [
        ("one Params, not a list", {**good, "params": case.params[0]}, TypeError, "params"),
        ("3 objects for D = 2", {**good, "params": list(case.params[:3])}, ValueError, "params"),
        ("bidirectional not a bool", {**good, "bidirectional": "yes"}, TypeError, "bidirectional"),
        ("h0 for 1 layer", {**good, "h0": case.h0[:2]}, ValueError, "h0"),
        ("no c0 for lstm", {**good, "c0": None}, TypeError, "c0"),
        ("W_hr on a gru", dict(cell="gru", params=[ProjectedParams(*gru.params[0], w_hr=np.eye(2, 4))], x=gru.x,
                               h0=gru.h0, c0=None, bidirectional=False, lengths=None), TypeError, "params[0].w_hr"),
        ("P = H", {**good, "params": [p._replace(w_hr=np.eye(4), w_hh=np.zeros((16, 4))) for p in case.params],
                   "h0": np.zeros((4, 3, 4))}, ValueError, "params[0].w_hr"),
        ("layer 1 reading I, not D·P", {**good, "params": list(case.params[:2]) + [
            case.params[2]._replace(w_ih=np.zeros((16, 3)))] + list(case.params[3:])}, ValueError, "params[2].w_ih"),
        ("a length of 0", {**good, "lengths": [0, 5, 4]}, ValueError, "lengths"),
        ("a length past T", {**good, "lengths": [2, 6, 4]}, ValueError, "lengths"),
        ("lengths not integers", {**good, "lengths": [2.0, 5.0, 4.0]}, TypeError, "lengths"),
        ("2 lengths for 3 rows", {**good, "lengths": [2, 5]}, ValueError, "lengths"),
        ("NaN in a bias", {**good, "params": [case.params[0], case.params[1]._replace(b_hh=nan_bias)]
                           + list(case.params[2:])}, ValueError, "params[1].b_hh"),
        ("a float32 weight among float64", {**good, "params": [p0._replace(w_hr=p0.w_hr.astype(np.float32))]
                                            + list(case.params[1:])}, TypeError, "params[0].w_hr"),
    ]


@pytest.mark.parametrize("implementation", layer_implementations(own_kernels=True), ids=lambda impl: impl.name)
@pytest.mark.parametrize("what, call, error, word", bad_layer_calls(), ids=[c[0] for c in bad_layer_calls()])
def test_bad_layer_input_raises_naming_the_argument(implementation, what, call, error, word):
    call = dict(call)
    with pytest.raises(error, match=re.escape(word)):
        implementation.layer_forward(call.pop("cell"), call.pop("params"), call.pop("x"), call.pop("h0"),
                                     call.pop("c0"), **call)


@pytest.mark.parametrize("implementation", layer_implementations(own_kernels=True), ids=lambda impl: impl.name)
def test_bad_layer_backward_input_raises_naming_the_argument(implementation):
    case = make_layer_case("gru", layers=2, bidirectional=True, lengths=[2, 5, 4])
    fwd = case.forward(implementation)
    with pytest.raises(ValueError, match="dhs"):
        replace(case, dhs=case.dhs[:, :, :2]).backward(implementation, fwd)
    with pytest.raises(TypeError, match="dc_n"):
        replace(case, dc_n=np.zeros_like(case.dh_n)).backward(implementation, fwd)
    if implementation.name not in (reference.layers.REFERENCE.name, "jit.cpu", "jit.cuda"):
        return  # the composition and torch recompute forward: they read no trace
    with pytest.raises(ValueError, match="fwd"):  # backward reads what forward(training=True) kept
        case.backward(implementation, case.forward(implementation, training=False))


@pytest.mark.parametrize("implementation", layer_implementations(), ids=lambda impl: impl.name)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_empty_layer_calls(implementation, cell):
    """T = 0 returns the initial states (and dh0 = dh_n); B = 0 gives empty results, zero weight gradients."""
    problem = make_layer_case(cell, layers=2, bidirectional=True, proj_size=2 if cell == "lstm" else None)
    for empty, rows in ((replace(problem, x=problem.x[:0], dhs=problem.dhs[:0]), 3),
                        (replace(problem, x=problem.x[:, :0], h0=problem.h0[:, :0], lengths=np.zeros(0, np.int64),
                                 c0=None if problem.c0 is None else problem.c0[:, :0], dhs=problem.dhs[:, :0],
                                 dh_n=problem.dh_n[:, :0], dc_n=None if problem.dc_n is None else problem.dc_n[:, :0]),
                         0)):
        got = layer_results(empty, implementation)
        assert got["hs"].shape == empty.dhs.shape and got["dx"].shape == empty.x.shape
        np.testing.assert_array_equal(got["h_n"], empty.h0)
        np.testing.assert_array_equal(got["dh0"], empty.dh_n)
        if cell == "lstm":
            np.testing.assert_array_equal(got["c_n"], empty.c0)
            np.testing.assert_array_equal(got["dc0"], empty.dc_n)
        for name, value in got.items():
            if name.startswith("dparams[") and value is not None:
                assert not np.any(value), f"{name} must be zero with {'T' if rows else 'B'} = 0"
