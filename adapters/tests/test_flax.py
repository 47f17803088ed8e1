"""adapters.flax (and the adapters.jax_common it shares with adapters.keras): the exact parameter
conversion, the padding of small shapes, agreement with the reference on fixed small examples, bad
input, JAX's 64-bit mode left as it was, and the finding in docs/findings/flax.md re-checked
against the installed Flax.

The property suite judges the backend (``pytest properties --backend adapters.flax``); this file
checks what the suite cannot see: the conversion itself, the padding, and whether each finding is
present in the installed version, as FOUND_IN records.
"""
import re
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flax")

import flax  # noqa: E402
import jax  # noqa: E402

import reference  # noqa: E402
from adapters import flax as backend  # noqa: E402
from adapters import jax_common  # noqa: E402
from adapters.known import check_known_defects  # noqa: E402
from adapters.tests.common import expect_found, float64, oracle_tolerance, problem  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FINDINGS_PAGE = ROOT / "docs" / "findings" / "flax.md"
DTYPES = (np.float32, np.float64)








def assert_agrees(field, got, truth, tol):
    got, truth = np.asarray(got, np.float64), np.asarray(truth, np.float64)
    assert got.shape == truth.shape, f"{field}: shape {got.shape}, expected {truth.shape}"
    excess = np.abs(got - truth) - tol * np.maximum(1.0, np.abs(truth))
    if excess.size and excess.max() > 0:
        worst = np.unravel_index(np.argmax(excess), excess.shape)
        pytest.fail(f"{field}[{worst}]: {got[worst]!r}, reference {truth[worst]!r}, tolerance {tol:.3g} "
                    f"relative to max(1, |reference|)")


def run_both(module, cell, params, x, h0, c0, dhs, dh_n, dc_n):
    fwd = module.forward(cell, params, x, h0, c0)
    return fwd, module.backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n)


FIELDS = {"forward": ("hs", "h_n", "c_n"), "backward": ("dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh")}


# ----- the conversion ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", sorted(backend.cells))
def test_params_convert_to_flax_by_gate_and_gradients_come_back_exactly(cell):
    """Every flax kernel is its gate block of w_ih or w_hh transposed, bit for bit; a bias is its block
    of b_ih or b_hh, or their sum where flax has one bias (the sum rounded once, as NumPy rounds it).
    jax.vjp through the conversion hands each cotangent back to the entry it came from, and a summed
    bias's cotangent to both b_ih and b_hh."""
    params = reference.init_params(cell, 3, 4, dtype=np.float32, seed=1)
    converted = backend.flax_params(cell, *params)
    H = 4
    block = {gate: slice(k * H, (k + 1) * H) for k, gate in enumerate(reference.GATE_NAMES[cell])}
    if cell.startswith("rnn_"):
        expected = {"i": {"kernel": params.w_ih.T, "bias": params.b_ih + params.b_hh}, "h": {"kernel": params.w_hh.T}}
    elif cell == "lstm":
        expected = {}
        for gate in "ifgo":
            expected["i" + gate] = {"kernel": params.w_ih[block[gate]].T}
            expected["h" + gate] = {"kernel": params.w_hh[block[gate]].T,
                                    "bias": params.b_ih[block[gate]] + params.b_hh[block[gate]]}
    else:
        expected = {"ir": {"kernel": params.w_ih[block["r"]].T, "bias": params.b_ih[block["r"]] + params.b_hh[block["r"]]},
                    "iz": {"kernel": params.w_ih[block["z"]].T, "bias": params.b_ih[block["z"]] + params.b_hh[block["z"]]},
                    "in": {"kernel": params.w_ih[block["n"]].T, "bias": params.b_ih[block["n"]]},
                    "hr": {"kernel": params.w_hh[block["r"]].T}, "hz": {"kernel": params.w_hh[block["z"]].T},
                    "hn": {"kernel": params.w_hh[block["n"]].T, "bias": params.b_hh[block["n"]]}}
    assert jax.tree_util.tree_structure(converted) == jax.tree_util.tree_structure(expected)
    for got, want in zip(jax.tree_util.tree_leaves(converted), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_array_equal(np.asarray(got), want)

    converted, pullback = jax.vjp(lambda *p: backend.flax_params(cell, *p), *params)
    cotangent = jax.tree_util.tree_map(lambda a: np.arange(1, a.size + 1, dtype=np.float32).reshape(a.shape),
                                       converted)
    grads = pullback(cotangent)
    # the same numbering pushed back by hand: each flax entry's cotangent to the torch entry it holds
    back = [np.zeros_like(p) for p in params]
    for name, leaves in cotangent.items():
        rows = block[name[1]] if len(name) == 2 else slice(None)
        back[0 if name[0] == "i" else 1][rows] += np.asarray(leaves["kernel"]).T
        if "bias" in leaves:
            summed = cell.startswith("rnn_") or cell == "lstm" or name in ("ir", "iz")
            for k in ((2, 3) if summed else ((2,) if name[0] == "i" else (3,))):
                back[k][rows] += np.asarray(leaves["bias"])
    for name, got, want in zip(("dw_ih", "dw_hh", "db_ih", "db_hh"), grads, back):
        np.testing.assert_array_equal(np.asarray(got), want, err_msg=name)


@pytest.mark.parametrize("G, H, H_pad, cols", [(4, 3, 8, 5), (3, 8, 8, None), (1, 1, 8, 8)])
def test_padding_gate_blocks_round_trips_exactly_and_pads_with_zeros(G, H, H_pad, cols):
    rng = np.random.default_rng(0)
    for shape in ((G * H, 2), (G * H,)):
        a = rng.standard_normal(shape)
        padded = jax_common.pad_blocks(a, G, H, H_pad, cols if a.ndim == 2 else None)
        assert padded.shape[0] == G * H_pad
        np.testing.assert_array_equal(jax_common.unpad_blocks(padded, G, H, H_pad, 2 if a.ndim == 2 else None), a)
        assert np.count_nonzero(padded) == np.count_nonzero(a)  # everything added is zero


def test_padded_sizes():
    assert [jax_common.padded_size(n) for n in (0, 1, 5, 8, 9, 300)] == [0, 8, 8, 8, 9, 300]


@pytest.mark.parametrize("cell, dtype", [("lstm", np.float32), ("gru", np.float64)])
def test_padding_small_shapes_leaves_every_result_as_the_exact_shapes_give_it(cell, dtype, monkeypatch):
    """The padded call (B, I, H run at 8) against the same call at its own shapes
    (CELLBENCH_JAX_EXACT_SHAPES=1): each is within the oracle bound of the exact value, so they agree
    within twice it (a dot product over 8 instead of 5 terms may sum in another order)."""
    T, B, I, H = 4, 2, 5, 3
    args = problem(cell, dtype, T=T, B=B, I=I, H=H)
    padded = run_both(backend, cell, *args)
    monkeypatch.setenv(jax_common.EXACT_SHAPES_ENV, "1")
    exact = run_both(backend, cell, *args)
    tol = 2 * oracle_tolerance(T, B, I, H, dtype)
    for result_padded, result_exact, fields in zip(padded, exact, FIELDS.values()):
        for field in fields:
            if getattr(result_exact, field) is not None:
                assert_agrees(field, getattr(result_padded, field), getattr(result_exact, field), tol)


# ----- agreement with the reference ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("cell", sorted(backend.cells))
def test_forward_and_backward_agree_with_the_reference_on_a_fixed_example(cell, dtype):
    params, x, h0, c0, dhs, dh_n, dc_n = problem(cell, dtype)
    fwd, grads = run_both(backend, cell, params, x, h0, c0, dhs, dh_n, dc_n)
    truth = run_both(reference.backend, cell, *(float64(a) for a in (params, x, h0, c0, dhs, dh_n, dc_n)))
    assert fwd.gates is None and fwd.cs is None, "flax exposes no gates: the adapter must not make them up"
    tol = oracle_tolerance(*x.shape, h0.shape[1], dtype)
    for result, expected, fields in zip((fwd, grads), truth, FIELDS.values()):
        for field in fields:
            if getattr(expected, field) is None:
                assert getattr(result, field) is None, field
                continue
            assert getattr(result, field).dtype == dtype, field
            assert_agrees(field, getattr(result, field), getattr(expected, field), tol)


def test_zero_steps_and_an_empty_batch_go_to_flax_unpadded():
    params, x, h0, c0, dhs, dh_n, dc_n = problem("lstm", T=0, B=2)
    fwd, grads = run_both(backend, "lstm", params, x, h0, c0, dhs, dh_n, dc_n)
    np.testing.assert_array_equal(fwd.h_n, h0)
    np.testing.assert_array_equal(grads.dc0, dc_n)
    params, x, h0, c0, dhs, dh_n, dc_n = problem("gru", T=3, B=0)
    fwd, grads = run_both(backend, "gru", params, x, h0, c0, dhs, dh_n, dc_n)
    assert fwd.hs.shape == (3, 0, 6) and not grads.dw_hh.any()


def test_float64_calls_leave_jax_64_bit_mode_as_the_process_has_it():
    before = jax.config.jax_enable_x64
    args = problem("rnn_tanh", np.float64)
    run_both(backend, "rnn_tanh", *args)
    assert jax.config.jax_enable_x64 == before


# ----- bad input -----------------------------------------------------------------------------------


def test_bad_input_raises_before_flax_runs():
    params, x, h0, _, *_ = problem("gru")
    with pytest.raises(ValueError, match=r"cell: expected one of gru, lstm, rnn_relu, rnn_tanh; got 'gru_classic'"):
        backend.forward("gru_classic", params, x, h0)
    with pytest.raises(TypeError, match=r"x: expected dtype float32 or float64; got int64"):
        backend.forward("gru", params, x.astype(np.int64), h0)
    with pytest.raises(TypeError, match=r"params.w_ih: expected dtype float64 like x"):
        backend.forward("gru", params, x.astype(np.float64), h0.astype(np.float64))
    with pytest.raises(ValueError, match=r"h0: expected finite values"):
        backend.forward("gru", params, x, np.full_like(h0, np.nan))
    with pytest.raises(ValueError, match=r"dhs: expected shape"):
        fwd = backend.forward("gru", params, x, h0)
        backend.backward("gru", params, x, h0, None, fwd, np.zeros((1, 1, 1), np.float32), h0)


def test_declared_capabilities():
    assert backend.name == "flax" and backend.cells == frozenset({"rnn_tanh", "rnn_relu", "lstm", "gru"})
    assert backend.dtypes == frozenset({np.dtype(np.float32), np.dtype(np.float64)})
    assert all(backend.max_test_sizes[d] <= jax_common.SMALL for d in "BIH")
    assert check_known_defects(backend.known_defects) == (), "flax.linen passes every property"
    assert set(backend.FOUND_IN) == {"flax-nnx-grucell-no-b-hn", "flax-linen-dense-zero-size"}


# ----- the finding, against the installed version ------------------------------------------------------

INSTALLED = flax.__version__
expect = partial(expect_found, "flax", INSTALLED, backend.FOUND_IN, FINDINGS_PAGE)




def test_finding_nnx_grucell_has_no_b_hn():
    from flax import nnx
    cell = nnx.GRUCell(3, 4, rngs=nnx.Rngs(0))
    expect("flax-nnx-grucell-no-b-hn", getattr(cell.dense_h, "bias", None) is None)


def test_finding_linen_dense_zero_size():
    """Through the adapter: a cell with no input features (I = 0), which the contract accepts."""
    params, x, h0, c0 = (problem("lstm", np.float32, T=3, B=2, I=1, H=4, seed=0))[:4]
    params = params._replace(w_ih=np.ascontiguousarray(params.w_ih[:, :0]))
    try:
        backend.forward("lstm", params, np.ascontiguousarray(x[:, :, :0]), h0, c0)
        present = False
    except ZeroDivisionError:
        present = True
    expect("flax-linen-dense-zero-size", present)


def test_the_findings_page_and_reproducer_agree_with_found_in():
    text = FINDINGS_PAGE.read_text(encoding="utf-8")
    for finding, versions in backend.FOUND_IN.items():
        match = re.search(rf'<a id="{re.escape(finding)}"></a>(.*?)(?=<a id=|\Z)', text, re.S)
        assert match, f"{FINDINGS_PAGE.name}: no section with anchor {finding}"
        listed = re.search(r"Versions with it: (.*)", match.group(1))
        assert listed and {v.strip(" `.") for v in listed.group(1).split(",")} == set(versions), \
            f"{finding}: the page's 'Versions with it' line must list {versions}"
        scripts = re.findall(r"docs/findings/(flax_\w+\.py)", match.group(1))
        assert scripts, f"{finding}: its section names no reproducer"
        for script in scripts:
            done = subprocess.run([sys.executable, str(FINDINGS_PAGE.parent / script)], cwd=ROOT,
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"{script}: exit {done.returncode}; {done.stderr[-500:]}"
            verdict = done.stdout.strip().splitlines()[-1]
            assert verdict == ("PRESENT" if INSTALLED in versions else "ABSENT"), \
                f"{script} says {verdict} in flax {INSTALLED}; FOUND_IN[{finding!r}] lists {versions}"


# ----- native layers -------------------------------------------------------------------------------


def layer_problem(cell, dtype, L=2, bidirectional=True, T=4, B=3, I=3, H=4, seed=0):
    """Per-layer-direction params (PyTorch's init), x, h0, c0 and upstream gradients of a fixed example."""
    rng = np.random.default_rng(seed)
    D = 2 if bidirectional else 1
    params = [reference.init_params(cell, I if k < D else D * H, H, dtype=dtype, seed=seed + k) for k in range(L * D)]
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = (0.5 * rng.standard_normal((L * D, B, H))).astype(dtype)
    c0 = (0.5 * rng.standard_normal((L * D, B, H))).astype(dtype) if cell == "lstm" else None
    dhs = rng.standard_normal((T, B, D * H)).astype(dtype)
    dh_n = rng.standard_normal((L * D, B, H)).astype(dtype)
    dc_n = rng.standard_normal((L * D, B, H)).astype(dtype) if cell == "lstm" else None
    return params, x, h0, c0, dhs, dh_n, dc_n


def layer_tolerance(params, T, B, H, D, dtype):
    """The oracle bound of one layer (with I the widest layer input, D·H) compounded through the layers:
    layer k's input error, the bound of the layer below, enters its pre-activations times ‖W_ih‖∞ and
    then contracts like its own rounding, so each layer multiplies the bound by 1 + ‖W_ih‖∞."""
    L = len(params) // D
    growth = 1 + max(np.abs(p.w_ih).sum(axis=1).max() for p in params)
    return oracle_tolerance(T, B, max(params[0].w_ih.shape[1], D * H), H, dtype) * growth ** (L - 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_native_layers_agree_with_the_reference_on_a_fixed_example(cell, dtype):
    """Two bidirectional layers through flax.linen.Bidirectional with seq_lengths, rows of lengths
    4, 1, 3 (not sorted): hs, h_n, c_n and every gradient against reference.layers in float64."""
    from reference import layers
    params, x, h0, c0, dhs, dh_n, dc_n = layer_problem(cell, dtype)
    lengths = np.array([4, 1, 3])
    kwargs = dict(bidirectional=True, lengths=lengths)
    fwd = backend.layer_forward(cell, params, x, h0, c0, **kwargs)
    grads = backend.layer_backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n, **kwargs)
    as64 = [float64(p) for p in params]
    truth = layers.forward(cell, as64, *(float64(a) for a in (x, h0, c0)), **kwargs)
    truth_grads = layers.backward(cell, as64, *(float64(a) for a in (x, h0, c0)), truth,
                                  *(float64(a) for a in (dhs, dh_n, dc_n)), **kwargs)
    tol = layer_tolerance(params, *x.shape[:2], 4, 2, dtype)
    for field in ("hs", "h_n", "c_n"):
        if getattr(truth, field) is not None:
            assert_agrees(field, getattr(fwd, field), getattr(truth, field), tol)
    np.testing.assert_array_equal(fwd.hs[1:, 1], 0, err_msg="hs past a row's length must be zero, exactly")
    for field in ("dx", "dh0", "dc0"):
        if getattr(truth_grads, field) is not None:
            assert_agrees(field, getattr(grads, field), getattr(truth_grads, field), tol)
    for k, (got, want) in enumerate(zip(grads.dparams, truth_grads.dparams)):
        for field in ("dw_ih", "dw_hh", "db_ih", "db_hh"):
            assert_agrees(f"dparams[{k}].{field}", getattr(got, field), getattr(want, field), tol)


def test_native_layers_refuse_a_projection_with_a_value_error():
    from reference.layers import ProjectedParams
    params, x, h0, c0, *_ = layer_problem("lstm", np.float32, L=1, bidirectional=False)
    P = 2
    projected = [ProjectedParams(p.w_ih, p.w_hh[:, :P].copy(), p.b_ih, p.b_hh, np.ones((P, 4), np.float32))
                 for p in params]
    with pytest.raises(ValueError, match=r"params\[0\]\.w_hr: expected no projection"):
        backend.layer_forward("lstm", projected, x, h0[:, :, :P].copy(), c0)
    assert backend.layer_features == frozenset({"bidirectional", "lengths"})
