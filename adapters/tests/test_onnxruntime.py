"""adapters.onnxruntime: the exact parameter conversion, agreement with the reference on fixed small
examples, bad input, the abort guard, and each finding re-checked against the installed onnxruntime.

The property suite judges the backend (``pytest properties --backend adapters.onnxruntime:backend``);
this file checks what the suite cannot see: the conversion itself, the guard, and whether each
defect in docs/findings/onnxruntime.md is present in the installed version, as FOUND_IN records.
"""
import os
import re
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

import onnxruntime  # noqa: E402

import reference  # noqa: E402
from adapters import onnxruntime as backend  # noqa: E402
from adapters.known import check_known_defects  # noqa: E402
from adapters.tests.common import expect_found, float64  # noqa: E402
from adapters.tests.common import problem as cell_problem  # noqa: E402
from reference.contract import CELLS, GATE_NAMES, NUM_GATES, Params  # noqa: E402
from reference.layers import ProjectedParams  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FINDINGS_PAGE = ROOT / "docs" / "findings" / "onnxruntime.md"
U32 = 2.0 ** -24  # float32's unit roundoff
ULP_ABOVE_1 = 2.0 ** -23  # float32's spacing just above 1


def problem(cell, T=5, B=3, I=4, H=6, seed=0):
    """float32 params (PyTorch's init), x, h0 and c0 (lstm) of a fixed small example. I = 0 (no
    input features: W_ih has no columns) is a valid call, which init_params, as torch.nn, refuses."""
    params, x, h0, c0 = cell_problem(cell, np.float32, T, B, max(I, 1), H, seed)[:4]
    return params._replace(w_ih=np.ascontiguousarray(params.w_ih[:, :I])), np.ascontiguousarray(x[:, :, :I]), h0, c0




def agreement_tolerance(T, I, H):
    """|onnxruntime − reference in float64| relative to max(1, |value|).

    Each step's pre-activations are dot products of I + H terms plus 2 biases, within
    γ_{I+H+2} ≈ (I+H+2)·u of exact relative to Σ|terms| (docs/tolerances.md); at PyTorch's init the
    recurrence contracts, so T steps add their errors: (T + 1)·(I+H+2)·u. A factor 4 covers the
    activations' own last bits (onnxruntime's GRU tanh is off by up to 5 ulps; see the findings).
    Only onnxruntime rounds in float32: the float64 reference's error is 2^29 times smaller.
    """
    return 4 * (T + 1) * (I + H + 2) * U32


def assert_agrees(field, got, truth, tol):
    got, truth = np.asarray(got, np.float64), np.asarray(truth, np.float64)
    assert got.shape == truth.shape, f"{field}: shape {got.shape}, expected {truth.shape}"
    excess = np.abs(got - truth) - tol * np.maximum(1.0, np.abs(truth))
    if excess.size and excess.max() > 0:
        worst = np.unravel_index(np.argmax(excess), excess.shape)
        pytest.fail(f"{field}[{worst}]: onnxruntime {got[worst]!r}, reference {truth[worst]!r}, "
                    f"tolerance {tol:.3g} relative to max(1, |reference|)")


# ----- the conversion ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_params_convert_to_onnx_by_gate_name_and_back_exactly(cell):
    H, I = 3, 2
    G = NUM_GATES[cell]
    # every value distinct, so a swapped block or a summed bias shows
    values = iter(np.arange(1, 2 * G * H * (I + H + 2)).astype(np.float32))
    params = Params(*(np.array([next(values) for _ in range(int(np.prod(shape)))], np.float32).reshape(shape)
                      for shape in ((G * H, I), (G * H, H), (G * H,), (G * H,))))
    onnx_names = {"rnn_tanh": "h", "rnn_relu": "h", "lstm": "iofc", "gru": "zrh", "gru_classic": "zrh"}[cell]
    ours = {"c": "g", "h": "n"} if cell != "rnn_tanh" and cell != "rnn_relu" else {}
    weights = backend.to_onnx(cell, params)
    for k, onnx_gate in enumerate(onnx_names):
        block = GATE_NAMES[cell].index(ours.get(onnx_gate, onnx_gate))  # PyTorch's block of that gate
        theirs, mine = slice(k * H, (k + 1) * H), slice(block * H, (block + 1) * H)
        np.testing.assert_array_equal(weights.W[theirs], params.w_ih[mine], err_msg=f"W, gate {onnx_gate}")
        np.testing.assert_array_equal(weights.R[theirs], params.w_hh[mine], err_msg=f"R, gate {onnx_gate}")
        np.testing.assert_array_equal(weights.B[theirs], params.b_ih[mine], err_msg=f"Wb, gate {onnx_gate}")
        np.testing.assert_array_equal(weights.B[G * H:][theirs], params.b_hh[mine], err_msg=f"Rb, gate {onnx_gate}")
    back = backend.from_onnx(cell, weights)
    for name, original, returned in zip(Params._fields, params, back):
        assert returned.dtype == original.dtype, name
        np.testing.assert_array_equal(returned, original, err_msg=f"{name} after to_onnx, from_onnx")


# ----- agreement with the reference -------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("T, B", [(1, 1), (5, 3), (7, 2)])
def test_forward_agrees_with_the_reference(cell, T, B):
    I, H = 4, 6
    params, x, h0, c0 = problem(cell, T, B, I, H, seed=T)
    got = backend.forward(cell, params, x, h0, c0)
    truth = reference.backend.forward(cell, float64(params), float64(x), float64(h0), float64(c0))
    tol = agreement_tolerance(T, I, H)
    for field in ("hs", "h_n") + (("c_n",) if cell == "lstm" else ()):
        assert getattr(got, field).dtype == np.float32, field
        assert_agrees(field, getattr(got, field), getattr(truth, field), tol)
    assert got.gates is None and got.cs is None  # onnxruntime does not expose them; nothing is recomputed
    if cell != "lstm":
        assert got.c_n is None


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("L, bidirectional, lengths", [(1, True, None), (2, True, [5, 2, 4]), (3, False, [1, 5, 3])])
def test_layer_forward_agrees_with_the_reference(cell, L, bidirectional, lengths):
    T, B, I, H = 5, 3, 4, 6
    D = 2 if bidirectional else 1
    rng = np.random.default_rng(L)
    params = [reference.init_params(cell, I if k < D else D * H, H, dtype=np.float32, seed=k) for k in range(L * D)]
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    h0 = (0.5 * rng.standard_normal((L * D, B, H))).astype(np.float32)
    c0 = (0.5 * rng.standard_normal((L * D, B, H))).astype(np.float32) if cell == "lstm" else None
    got = backend.layer_forward(cell, params, x, h0, c0, bidirectional=bidirectional, lengths=lengths)
    truth = reference.layers.forward(cell, float64(params), float64(x), float64(h0), float64(c0),
                                     bidirectional=bidirectional, lengths=lengths)
    # Layer k reads layer k−1's hs, whose error W_ih (‖W_ih‖∞ ≤ D·H/√H at PyTorch's init) passes on:
    # each layer adds its own cell bound, with I the widest input, and multiplies what came before.
    gain = max(1.0, max(float(np.abs(p.w_ih).sum(axis=1).max()) for p in params[D:]) if L > 1 else 1.0)
    tol = sum(agreement_tolerance(T, max(I, D * H), H) * gain ** k for k in range(L))
    for field in ("hs", "h_n") + (("c_n",) if cell == "lstm" else ()):
        assert_agrees(field, getattr(got, field), getattr(truth, field), tol)
    if lengths is not None:  # steps past a row's length are exact zeros, as in a padded packed sequence
        steps = np.arange(T)[:, None] >= np.asarray(lengths)[None, :]
        assert not np.asarray(got.hs)[steps].any(), "hs past a row's length must be zeros"


def test_constant_weights_give_the_results_of_weights_fed_as_inputs():
    """cell_model with weights (initializers, what the benchmark times) against the adapter's forward:
    prepacked weights may change MLAS's summation order, so within 2× the agreement bound, not bit-equal."""
    T, B, I, H = 5, 3, 4, 6
    for cell in CELLS:
        params, x, h0, c0 = problem(cell, T, B, I, H)
        session = backend.make_session(backend.cell_model(cell, I, H, backend.to_onnx(cell, params)))
        feeds = {"X": x, "initial_h": h0[None], **({"initial_c": c0[None]} if c0 is not None else {})}
        Y, Y_h, *_ = session.run(None, feeds)
        assert {i.name for i in session.get_inputs()} == set(feeds), "W, R and B must be constants"
        fwd = backend.forward(cell, params, x, h0, c0)
        assert_agrees("hs", Y[:, 0], fwd.hs, 2 * agreement_tolerance(T, I, H))
        assert_agrees("h_n", Y_h[0], fwd.h_n, 2 * agreement_tolerance(T, I, H))


def test_the_benchmark_times_session_run_and_skips_what_the_adapter_cannot_do():
    from reports import matrix
    from reports.benchmarks import bench_cells
    config = matrix.Config("tiny", 4, 2, 3, 5)
    inputs = bench_cells.as_dtype(bench_cells.case_inputs("lstm", config), "float32")
    call, to_numpy = bench_cells.FRAMEWORK_CALLS[backend.name]("lstm", "inference", inputs)
    got = to_numpy(call())
    want = bench_cells.compared_arrays("inference", (backend.forward("lstm", *inputs[:4]),))
    for key in ("hs", "h_n"):
        assert_agrees(key, got[key], want[key], 2 * agreement_tolerance(config.T, config.I, config.H))
    training = matrix.Case(backend.name, "lstm", config, "training", "float32")
    float64_case = matrix.Case(backend.name, "lstm", config, "inference", "float64")
    assert "forward only" in bench_cells.unsupported(backend, training)
    assert "float64" in bench_cells.unsupported(backend, float64_case)
    assert bench_cells.unsupported(backend, training._replace(mode="inference")) is None


# ----- bad input ---------------------------------------------------------------------------------------------


def test_float64_is_rejected_naming_the_argument():
    params, x, h0, _ = problem("gru")
    with pytest.raises(TypeError, match=r"x: expected dtype float32 .*no float64 kernels.*got float64"):
        backend.forward("gru", float64(params), float64(x), float64(h0))
    with pytest.raises(TypeError, match=r"x: expected dtype float32"):
        backend.layer_forward("gru", [float64(params)], float64(x), float64(h0)[None])


def test_bad_input_is_rejected_by_the_shared_checks_before_onnxruntime_runs():
    params, x, h0, c0 = problem("lstm")
    with pytest.raises(TypeError, match="c0"):
        backend.forward("lstm", params, x, h0)
    with pytest.raises(TypeError, match="dtypes must not be mixed"):
        backend.forward("lstm", params, x, h0.astype(np.float64), c0)
    with pytest.raises(ValueError, match="params.w_hh"):
        backend.forward("gru", params, x, h0)
    with pytest.raises(ValueError, match="cell"):
        backend.forward("lstm_peephole", params, x, h0, c0)
    with pytest.raises(ValueError, match="x: expected finite values"):
        backend.forward("lstm", params, np.full_like(x, np.nan), h0, c0)


def test_a_projection_is_refused_with_a_value_error():
    rng = np.random.default_rng(0)
    H, P, I, B, T = 6, 3, 4, 2, 3
    p = reference.init_params("lstm", I, H, dtype=np.float32)
    projected = ProjectedParams(p.w_ih, p.w_hh[:, :P].copy(), p.b_ih, p.b_hh,
                                rng.standard_normal((P, H)).astype(np.float32))
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    with pytest.raises(ValueError, match=r"params\[0\]\.w_hr: expected no projection .*proj_size"):
        backend.layer_forward("lstm", [projected], x, np.zeros((1, B, P), np.float32), np.zeros((1, B, H), np.float32))
    assert "projection" not in backend.layer_features


def test_declared_capabilities():
    assert backend.name == "onnxruntime" and backend.cells == frozenset(CELLS)
    assert backend.dtypes == frozenset({np.dtype(np.float32)}) and backend.backward is None
    assert not hasattr(backend, "layer_backward")
    defects = check_known_defects(backend.known_defects)
    assert {d.finding for d in defects} <= set(backend.FOUND_IN), "every declared defect is a finding"


# ----- the guard against aborts ------------------------------------------------------------------------------


@pytest.mark.parametrize("cell, T, B, I, finding", [
    ("lstm", 3, 0, 4, "onnxruntime-lstm-empty-batch-abort"),
    ("gru", 0, 2, 4, "onnxruntime-gru-empty-abort"),
    ("gru_classic", 3, 0, 4, "onnxruntime-gru-empty-abort"),
    ("gru", 3, 2, 0, "onnxruntime-gru-empty-abort"),
])
def test_the_guard_names_the_finding_instead_of_aborting(cell, T, B, I, finding, monkeypatch):
    monkeypatch.delenv(backend.UNGUARDED, raising=False)
    params, x, h0, c0 = problem(cell, T=T, B=B, I=I)
    with pytest.raises(RuntimeError, match=f"finding {finding}"):
        backend.forward(cell, params, x, h0, c0)
    with pytest.raises(RuntimeError, match=f"finding {finding}"):
        backend.layer_forward(cell, [params, params], x, np.stack([h0, h0]), None if c0 is None else np.stack([c0, c0]),
                              bidirectional=True)


def test_inputs_that_do_not_abort_pass_the_guard():
    params, x, h0, _ = problem("rnn_tanh", T=3, B=0)  # RNN with B = 0 returns, as it should
    fwd = backend.forward("rnn_tanh", params, x, h0)
    assert fwd.hs.shape == (3, 0, 6) and fwd.h_n.shape == (0, 6)
    for cell in ("rnn_tanh", "lstm"):  # without inputs (I = 0) RNN and LSTM return, and are right
        params, x, h0, c0 = problem(cell, T=3, B=2, I=0)
        fwd = backend.forward(cell, params, x, h0, c0)
        truth = reference.backend.forward(cell, *(float64(a) for a in (params, x, h0, c0)))
        assert_agrees(f"{cell} hs, I = 0", fwd.hs, truth.hs, agreement_tolerance(3, 0, 6))


# ----- the findings, against the installed version -----------------------------------------------------------

INSTALLED = onnxruntime.__version__
expect = partial(expect_found, "onnxruntime", INSTALLED, backend.FOUND_IN, FINDINGS_PAGE)




def test_finding_gru_tanh_overshoot():
    """h = n = tanh(a) with z = 0 and h0 = 0: onnxruntime's GRU gives 1.0000005 for a ≥ 10."""
    a = np.float32([8.0, 9.0, 9.82045174, 10.0, 20.0, 1000.0, -10.0])
    worst = 0.0
    for cell in ("gru", "gru_classic"):
        params = Params(np.float32([[0], [0], [1]]), np.zeros((3, 1), np.float32), np.float32([0, -100, 0]),
                        np.zeros(3, np.float32))  # a_z = −100: z = 0; a_n = x
        fwd = backend.forward(cell, params, a.reshape(1, -1, 1), np.zeros((a.size, 1), np.float32))
        worst = max(worst, float(np.abs(fwd.hs).max()))
    expect("onnxruntime-gru-tanh-overshoot", worst > 1.0)


def test_finding_lstm_tanh_overshoot():
    """h = o·tanh(c) with i = 0, f = 1: tanh of c in (8.1, 9) and σ of a_o near 17.5 exceed 1."""
    c = np.arange(np.float32(8.4).view(np.int32), np.float32(8.5).view(np.int32), dtype=np.int32).view(np.float32)
    params = Params(np.float32([[0], [0], [0], [1]]), np.zeros((4, 1), np.float32),
                    np.float32([-100, 100, 0, 0]), np.zeros(4, np.float32))  # i = 0, f = 1, g = 0, a_o = x
    a_o = np.concatenate([np.full(c.size, 100, np.float32), np.float32([17.482065])])
    c0 = np.concatenate([c, np.float32([20.0])])
    fwd = backend.forward("lstm", params, a_o.reshape(1, -1, 1), np.zeros((a_o.size, 1), np.float32),
                          c0.reshape(-1, 1))
    np.testing.assert_array_equal(fwd.c_n.ravel(), c0, err_msg="the setup needs c = c0 (i = 0, f = 1)")
    expect("onnxruntime-lstm-tanh-overshoot", bool((np.abs(fwd.hs) > 1).any()))


def test_finding_zero_steps_zero_state():
    wrong = []
    for cell in ("rnn_tanh", "rnn_relu", "lstm"):
        params, x, h0, c0 = problem(cell, T=0, B=2)
        fwd = backend.forward(cell, params, x, h0, c0)
        assert fwd.hs.shape == (0, 2, 6)
        wrong.append(not np.array_equal(fwd.h_n, h0))
        if cell == "lstm":
            wrong.append(not np.array_equal(fwd.c_n, c0))
    assert len(set(wrong)) == 1, f"some cells return the initial state with T = 0, others not: {wrong}"
    expect("onnxruntime-zero-steps-zero-state", wrong[0])


ABORT_CHILD = """
import numpy as np, reference
from adapters import onnxruntime as backend
cell, T, B, I = {cell!r}, {T}, {B}, {I}
params = reference.init_params(cell, 3, 4, dtype=np.float32)
params = params._replace(w_ih=np.ascontiguousarray(params.w_ih[:, :I]))  # I = 0: no input features
x, h0 = np.zeros((T, B, I), np.float32), np.zeros((B, 4), np.float32)
backend.forward(cell, params, x, h0, h0.copy() if cell == "lstm" else None)
"""


def dies_by_abort(cell, T, B, I=3) -> bool:
    """Run the unguarded call in a child process: True when onnxruntime aborted it (SIGABRT)."""
    env = dict(os.environ, **{backend.UNGUARDED: "1"})
    done = subprocess.run([sys.executable, "-c", ABORT_CHILD.format(cell=cell, T=T, B=B, I=I)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, -signal.SIGABRT), \
        f"{cell} T={T} B={B} I={I}: exit {done.returncode}, {done.stderr[-500:]}"
    return done.returncode == -signal.SIGABRT


def test_finding_lstm_empty_batch_abort():
    expect("onnxruntime-lstm-empty-batch-abort", dies_by_abort("lstm", 2, 0))


def test_finding_gru_empty_abort():
    cases = (("gru", 0, 2, 3), ("gru_classic", 2, 0, 3), ("gru", 2, 2, 0))
    aborts = [dies_by_abort(*case) for case in cases]
    assert len(set(aborts)) == 1, f"GRU aborts with T = 0, with B = 0 and with I = 0 differ: {aborts}"
    expect("onnxruntime-gru-empty-abort", aborts[0])


def test_the_findings_page_has_a_section_per_finding_with_its_versions_and_reproducer():
    text = FINDINGS_PAGE.read_text(encoding="utf-8")
    for finding, versions in backend.FOUND_IN.items():
        match = re.search(rf'<a id="{re.escape(finding)}"></a>(.*?)(?=<a id=|\Z)', text, re.S)
        assert match, f"{FINDINGS_PAGE.name}: no section with anchor {finding}"
        section = match.group(1)
        listed = re.search(r"Versions with it: (.*)", section)
        assert listed and {v.strip(" `.") for v in listed.group(1).split(",")} == set(versions), \
            f"{finding}: the page's 'Versions with it' line must list {versions}"
        for defect in (d for d in backend.known_defects if d.finding == finding):
            assert all(test in section for test in defect.tests), f"{finding}: name the tests it fails"
        scripts = re.findall(r"docs/findings/(onnxruntime_\w+\.py)", section)
        assert scripts and all((FINDINGS_PAGE.parent / s).is_file() for s in scripts), f"{finding}: {scripts}"


def test_each_reproducer_runs_alone_and_reports_what_the_adapter_sees():
    """Every docs/findings/onnxruntime_*.py exits 0 and prints PRESENT exactly where FOUND_IN lists the
    installed version. They run at once (each is a few seconds of onnxruntime, some in child processes)."""
    scripts = sorted(FINDINGS_PAGE.parent.glob("onnxruntime_*.py"))
    assert scripts
    running = {script: subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True) for script in scripts}
    for script, process in running.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, f"{script.name}: exit {process.returncode}; {err[-500:]}"
        finding = re.search(r"cellbench finding (onnxruntime-[\w-]+)", script.read_text(encoding="utf-8")).group(1)
        verdict = out.strip().splitlines()[-1]
        assert verdict in ("PRESENT", "ABSENT"), f"{script.name} ended with {verdict!r}"
        listed = INSTALLED in backend.FOUND_IN[finding]
        assert (verdict == "PRESENT") == listed, \
            f"{script.name} says {verdict} in onnxruntime {INSTALLED}; FOUND_IN[{finding!r}] lists " \
            f"{backend.FOUND_IN[finding]}"
