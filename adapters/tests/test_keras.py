"""adapters.keras: the exact parameter conversion, agreement with the reference on fixed small
examples, bad input, the import's backend checks, and each finding in docs/findings/keras.md
re-checked against the installed Keras.

The property suite judges the backend (``pytest properties --backend adapters.keras``); this file
checks what the suite cannot see: the conversion itself, and whether each finding is present in the
installed version, as FOUND_IN records. (The padding shared with adapters.flax is tested in
test_flax.py.)
"""
import importlib.util
import os
import re
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")
if importlib.util.find_spec("keras") is None:  # not importing it: Keras picks its backend then, once
    pytest.skip("keras is not installed", allow_module_level=True)

import jax  # noqa: E402

from adapters import keras as backend  # noqa: E402 (imports Keras on JAX)

import keras  # noqa: E402

import reference  # noqa: E402
from adapters.known import check_known_defects  # noqa: E402
from adapters.tests.common import expect_found, float64, oracle_tolerance, problem  # noqa: E402
from reference.contract import CELLS  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FINDINGS_PAGE = ROOT / "docs" / "findings" / "keras.md"
FIELDS = {"forward": ("hs", "h_n", "c_n"), "backward": ("dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh")}








def worst_excess(got, truth, tol) -> float:
    """max(|got − truth| − tol·max(1, |truth|)): positive where the tolerance is exceeded."""
    got, truth = np.asarray(got, np.float64), np.asarray(truth, np.float64)
    assert got.shape == truth.shape, f"shape {got.shape}, expected {truth.shape}"
    return float((np.abs(got - truth) - tol * np.maximum(1.0, np.abs(truth))).max(initial=-np.inf))


def run_both(module, cell, params, x, h0, c0, dhs, dh_n, dc_n):
    fwd = module.forward(cell, params, x, h0, c0)
    return fwd, module.backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n)


def errors_against_the_reference(cell, dtype, **sizes) -> dict:
    """{field: worst excess over the oracle tolerance} of Keras against the float64 reference."""
    params, x, h0, c0, dhs, dh_n, dc_n = problem(cell, dtype, **sizes)
    fwd, grads = run_both(backend, cell, params, x, h0, c0, dhs, dh_n, dc_n)
    truth = run_both(reference.backend, cell, *(float64(a) for a in (params, x, h0, c0, dhs, dh_n, dc_n)))
    tol = oracle_tolerance(*x.shape, h0.shape[1], dtype)
    out = {}
    for result, expected, fields in zip((fwd, grads), truth, FIELDS.values()):
        for field in fields:
            if getattr(expected, field) is not None:
                assert getattr(result, field).dtype == dtype, field
                out[field] = worst_excess(getattr(result, field), getattr(expected, field), tol)
    return out


# ----- the conversion ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_params_convert_to_keras_by_gate_and_gradients_come_back_exactly(cell):
    """kernel = W_ih^T and recurrent_kernel = W_hh^T with the gate blocks in Keras' order (GRU: z, r, h
    for PyTorch's r, z, n), bit for bit; the bias is b_ih and b_hh stacked (GRU reset_after=True) or
    their sum (the others: one rounding, as NumPy rounds it). jax.vjp through the conversion hands each
    cotangent back to the entry it came from, and a summed bias's cotangent to both b_ih and b_hh."""
    H = 4
    params = reference.init_params(cell, 3, H, dtype=np.float32, seed=1)
    kernel, recurrent, bias = backend.keras_weights(cell, *params, xp=np)
    layer = backend.make_layer(cell, 3, H, np.float32)
    assert [tuple(v.shape) for v in layer.trainable_variables] == [kernel.shape, recurrent.shape, bias.shape]
    order = backend.KERAS_GRU_BLOCKS if cell.startswith("gru") else range(reference.NUM_GATES[cell])
    for k_keras, k_torch in enumerate(order):
        cols, rows = slice(k_keras * H, (k_keras + 1) * H), slice(k_torch * H, (k_torch + 1) * H)
        np.testing.assert_array_equal(kernel[:, cols], params.w_ih[rows].T)
        np.testing.assert_array_equal(recurrent[:, cols], params.w_hh[rows].T)
        if cell == "gru":
            np.testing.assert_array_equal(bias[:, cols], np.stack([params.b_ih[rows], params.b_hh[rows]]))
        else:
            np.testing.assert_array_equal(bias[cols], params.b_ih[rows] + params.b_hh[rows])

    converted, pullback = jax.vjp(lambda *p: backend.keras_weights(cell, *p), *params)
    cotangent = [np.arange(1, a.size + 1, dtype=np.float32).reshape(a.shape) for a in converted]
    dw_ih, dw_hh, db_ih, db_hh = (np.asarray(g) for g in pullback(cotangent))
    for k_keras, k_torch in enumerate(order):
        cols, rows = slice(k_keras * H, (k_keras + 1) * H), slice(k_torch * H, (k_torch + 1) * H)
        np.testing.assert_array_equal(dw_ih[rows], cotangent[0][:, cols].T)
        np.testing.assert_array_equal(dw_hh[rows], cotangent[1][:, cols].T)
        stacked = cotangent[2][:, cols] if cell == "gru" else np.stack([cotangent[2][cols]] * 2)
        np.testing.assert_array_equal(np.stack([db_ih[rows], db_hh[rows]]), stacked)


# ----- agreement with the reference ----------------------------------------------------------------

#: float64 cases Keras gets right; the others are findings (checked below, and by the suite).
FLOAT64_CORRECT = ("rnn_relu",)


@pytest.mark.parametrize("cell", CELLS)
def test_float32_agrees_with_the_reference_on_a_fixed_example(cell):
    errors = errors_against_the_reference(cell, np.float32)
    assert max(errors.values()) <= 0, f"over the oracle tolerance: {errors}"


@pytest.mark.parametrize("cell", FLOAT64_CORRECT)
def test_float64_agrees_with_the_reference_where_keras_computes_in_float64(cell):
    errors = errors_against_the_reference(cell, np.float64)
    assert max(errors.values()) <= 0, f"over the oracle tolerance: {errors}"


def test_an_empty_batch_goes_to_keras_unpadded():
    params, x, h0, c0, dhs, dh_n, dc_n = problem("lstm", T=3, B=0)
    fwd, grads = run_both(backend, "lstm", params, x, h0, c0, dhs, dh_n, dc_n)
    assert fwd.hs.shape == (3, 0, 6) and grads.dc0.shape == (0, 6) and not grads.dw_hh.any()


# ----- native layers (adapters.keras.with_native_layers) -----------------------------------------------


def test_native_layers_agree_with_the_reference_on_a_fixed_example():
    """Two bidirectional lstm layers through keras.layers.Bidirectional with a mask, rows of lengths
    4, 1, 3 (not sorted), in float32: hs, h_n, c_n and every gradient against reference.layers in
    float64. Tolerance: the oracle bound of one layer (I the widest input, D·H) times 1 + ‖W_ih‖∞ per
    layer above the first (a layer's input error enters its pre-activations through W_ih)."""
    from reference import layers
    native = backend.with_native_layers
    T, B, I, H, L, D = 4, 3, 3, 4, 2, 2
    rng = np.random.default_rng(0)
    params = [reference.init_params("lstm", I if k < D else D * H, H, dtype=np.float32, seed=k) for k in range(L * D)]
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    h0, c0, dh_n, dc_n = ((0.5 * rng.standard_normal((L * D, B, H))).astype(np.float32) for _ in range(4))
    dhs = rng.standard_normal((T, B, D * H)).astype(np.float32)
    kwargs = dict(bidirectional=True, lengths=np.array([4, 1, 3]))
    fwd = native.layer_forward("lstm", params, x, h0, c0, **kwargs)
    grads = native.layer_backward("lstm", params, x, h0, c0, fwd, dhs, dh_n, dc_n, **kwargs)
    as64 = [float64(p) for p in params]
    truth = layers.forward("lstm", as64, float64(x), float64(h0), float64(c0), **kwargs)
    truth_grads = layers.backward("lstm", as64, float64(x), float64(h0), float64(c0), truth, float64(dhs),
                                  float64(dh_n), float64(dc_n), **kwargs)
    growth = 1 + max(np.abs(p.w_ih).sum(axis=1).max() for p in params)
    tol = oracle_tolerance(T, B, D * H, H, np.float32) * growth ** (L - 1)
    excess = {f: worst_excess(getattr(fwd, f), getattr(truth, f), tol) for f in ("hs", "h_n", "c_n")}
    excess.update({f: worst_excess(getattr(grads, f), getattr(truth_grads, f), tol) for f in ("dx", "dh0", "dc0")})
    for k, (got, want) in enumerate(zip(grads.dparams, truth_grads.dparams)):
        excess.update({f"dparams[{k}].{f}": worst_excess(getattr(got, f), getattr(want, f), tol)
                       for f in ("dw_ih", "dw_hh", "db_ih", "db_hh")})
    assert max(excess.values()) <= 0, f"over the tolerance {tol:.3g}: {excess}"
    np.testing.assert_array_equal(fwd.hs[1:, 1], 0, err_msg="hs past a row's length must be zero, exactly")
    assert not hasattr(backend, "layer_forward"), "the default backend's layers are composed from its cells"


# ----- bad input and the import ----------------------------------------------------------------------


def test_bad_input_raises_before_keras_runs():
    params, x, h0, *_ = problem("gru")
    with pytest.raises(TypeError, match=r"x: expected dtype float32 or float64; got float16"):
        backend.forward("gru", params, x.astype(np.float16), h0)
    with pytest.raises(ValueError, match=r"params.w_hh: expected 3·H = 18 rows for gru"):
        backend.forward("gru", params._replace(w_hh=params.w_hh[:6]), x, h0)
    with pytest.raises(TypeError, match=r"c0: expected None for gru"):
        backend.forward("gru", params, x, h0, h0)
    with pytest.raises(ValueError, match=r"x: expected finite values"):
        backend.forward("gru", params, np.full_like(x, np.inf), h0)


@pytest.mark.parametrize("setup, message", [
    ("os.environ['KERAS_BACKEND'] = 'numpy'", "KERAS_BACKEND is 'numpy'"),
    ("os.environ['KERAS_BACKEND'] = 'numpy'; import keras", "already imported with backend 'numpy'"),
])
def test_keras_on_another_backend_is_an_import_error_saying_so(setup, message):
    code = f"import os; {setup}\ntry:\n    import adapters.keras\nexcept ImportError as e:\n    print(e)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"})
    assert message in done.stdout, done.stdout + done.stderr[-500:]


def test_declared_capabilities():
    assert backend.name == "keras" and backend.cells == frozenset(CELLS)
    assert backend.dtypes == frozenset({np.dtype(np.float32), np.dtype(np.float64)})
    assert keras.backend.backend() == "jax"
    defects = check_known_defects(backend.known_defects)
    assert {d.finding for d in defects} == set(backend.FOUND_IN), "every finding is declared, and only those"


# ----- the findings, against the installed version -----------------------------------------------------------

INSTALLED = keras.__version__
expect = partial(expect_found, "keras", INSTALLED, backend.FOUND_IN, FINDINGS_PAGE)




def test_finding_float64_tanh_in_float32():
    """Float64 lstm, gru and gru_classic exceed the float64 oracle bound (~1e-13 here) by float32's
    rounding (~1e-8); rnn_relu, which has no tanh, does not."""
    wrong = {cell: max(errors_against_the_reference(cell, np.float64).values()) > 0
             for cell in ("lstm", "gru", "gru_classic")}
    assert len(set(wrong.values())) == 1, f"some float64 cells are right, others not: {wrong}"
    expect("keras-float64-tanh-in-float32", wrong["lstm"])


def test_finding_simplernn_float64_typeerror():
    try:
        backend.forward("rnn_tanh", *problem("rnn_tanh", np.float64)[:3])
        present = False
    except TypeError as error:
        assert "carry" in str(error), error
        present = True
    expect("keras-simplernn-float64-typeerror", present)


def test_finding_zero_steps_indexerror():
    raised = []
    for cell in ("rnn_relu", "lstm", "gru_classic"):
        params, x, h0, c0, *_ = problem(cell, T=0)
        try:
            fwd = backend.forward(cell, params, x, h0, c0)
            raised.append(False)
            np.testing.assert_array_equal(fwd.h_n, h0)
        except IndexError:
            raised.append(True)
    assert len(set(raised)) == 1, f"T = 0 raises for some cells, not others: {raised}"
    expect("keras-zero-steps-indexerror", raised[0])


def test_the_findings_page_and_reproducers_agree_with_found_in():
    """Each finding's section lists FOUND_IN's versions and names a reproducer; each reproducer runs to
    its end and prints PRESENT exactly where FOUND_IN lists the installed version. They run one after
    the other in one child process (most of each one's time is importing Keras)."""
    text = FINDINGS_PAGE.read_text(encoding="utf-8")
    scripts = {}
    for finding, versions in backend.FOUND_IN.items():
        match = re.search(rf'<a id="{re.escape(finding)}"></a>(.*?)(?=<a id=|\Z)', text, re.S)
        assert match, f"{FINDINGS_PAGE.name}: no section with anchor {finding}"
        section = match.group(1)
        listed = re.search(r"Versions with it: (.*)", section)
        assert listed and {v.strip(" `.") for v in listed.group(1).split(",")} == set(versions), \
            f"{finding}: the page's 'Versions with it' line must list {versions}"
        named = re.findall(r"docs/findings/(keras_\w+\.py)", section)
        assert named, f"{finding}: its section names no reproducer"
        scripts.update((script, finding) for script in named)
    code = ("import runpy, sys\nfor path in sys.argv[1:]:\n"
            "    print('=== ' + path, flush=True)\n    runpy.run_path(path, run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", code] + [str(FINDINGS_PAGE.parent / s) for s in scripts], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"})
    assert done.returncode == 0, f"exit {done.returncode}; {done.stderr[-500:]}"
    outputs = dict(re.findall(r"^=== [^\n]*/(keras_\w+\.py)\n(.*?)(?=^=== |\Z)", done.stdout, re.S | re.M))
    for script, finding in scripts.items():
        assert script in outputs, f"{script} printed nothing: {done.stdout[-500:]}"
        verdict = outputs[script].strip().splitlines()[-1]
        expected = "PRESENT" if INSTALLED in backend.FOUND_IN[finding] else "ABSENT"
        assert verdict == expected, f"{script} says {verdict} in keras {INSTALLED}; FOUND_IN[{finding!r}] " \
                                    f"lists {backend.FOUND_IN[finding]}"
