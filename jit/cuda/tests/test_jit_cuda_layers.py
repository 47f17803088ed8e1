"""Tests of jit.cuda's native layers (jit.cuda.layers) that the layer property family cannot reach:
bits against jit.cuda's own cell kernels (rows of different lengths in both directions, and lengths
all T against no lengths), the launches of one layer call, data left on the device, and the calls
answered without a kernel.

Sizes cross the step kernels' tiles (B = rows + 1, H past units and depth), as in test_jit_cuda.py.
Under the CUDA simulator each step kernel costs ~0.1 s, so the layers stay at T = 3.
"""
import numpy as np
import pytest

import reference
import reference.layers
from reference.contract import CELLS

cuda_backend = pytest.importorskip("jit.cuda").backend
if not cuda_backend.available():
    pytest.skip("jit.cuda: no CUDA GPU and the CUDA simulator is off (NUMBA_ENABLE_CUDASIM=0)",
                allow_module_level=True)

from numba import cuda  # noqa: E402  (after the availability check: numba.cuda is usable)

from jit.cuda import layers as cuda_layers  # noqa: E402
from jit.cuda.device_arrays import DeviceArray  # noqa: E402
from jit.cuda.launch import TILES  # noqa: E402

T, B, I = 3, TILES.rows + 1, 4
H = max(TILES.units, TILES.depth) + 3
#: Every row length from 1 to T, unsorted: one row stops after its first step.
LENGTHS = np.array([2, T, 1][:B] + [T] * max(0, B - 3))


def layer_problem(cell, dtype, layers=1, directions=1, seed=0):
    """params (per layer-direction), x, h0, c0 and the upstream gradients of a layer call."""
    rng = np.random.default_rng(seed)
    params = [reference.init_params(cell, I if k < directions else directions * H, H, dtype=dtype, seed=seed + k)
              for k in range(layers * directions)]
    LD = layers * directions
    lstm = cell == "lstm"

    def draw(*shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(dtype)
    return dict(params=params, x=draw(T, B, I), h0=draw(LD, B, H, scale=0.5),
                c0=draw(LD, B, H, scale=0.5) if lstm else None, dhs=draw(T, B, directions * H),
                dh_n=draw(LD, B, H), dc_n=draw(LD, B, H) if lstm else None)


def run_layers(cell, p, *, bidirectional=False, lengths=None, dhs=None):
    fwd = cuda_backend.layer_forward(cell, p["params"], p["x"], p["h0"], p["c0"], bidirectional=bidirectional,
                                     lengths=lengths)
    grads = cuda_backend.layer_backward(cell, p["params"], p["x"], p["h0"], p["c0"], fwd,
                                        p["dhs"] if dhs is None else dhs, p["dh_n"], p["dc_n"],
                                        bidirectional=bidirectional, lengths=lengths)
    return fwd, grads


def named_results(fwd, grads) -> dict:
    named = {"hs": fwd.hs, "h_n": fwd.h_n, "c_n": fwd.c_n, "dx": grads.dx, "dh0": grads.dh0, "dc0": grads.dc0}
    for k, g in enumerate(grads.dparams):
        named.update({f"dparams[{k}].{field}": getattr(g, field) for field in g._fields if getattr(g, field) is not None})
    return named


def assert_same_bits(got: dict, want: dict, context=""):
    for name, w in want.items():
        g = got[name]
        assert (g is None) == (w is None), f"{name}: {type(g).__name__} vs {type(w).__name__}; {context}"
        if w is not None:
            np.testing.assert_array_equal(np.asarray(g), np.asarray(w), err_msg=f"{name}; {context}", strict=True)


@pytest.mark.parametrize("cell", CELLS)
def test_one_forward_layer_with_every_length_t_gives_the_cell_kernels_bits(cell):
    """A layer of one direction over rows that all run T steps is the cell call: its step kernels run
    the cells' step functions with every row active, and its matmuls sum the same rows in the same
    order, so every output and gradient has the cell kernels' bits; lengths all T and no lengths
    are one and the same."""
    p = layer_problem(cell, np.float32)
    cell_params = p["params"][0]
    c0 = None if p["c0"] is None else p["c0"][0]
    fwd = cuda_backend.forward(cell, cell_params, p["x"], p["h0"][0], c0)
    grads = cuda_backend.backward(cell, cell_params, p["x"], p["h0"][0], c0, fwd, p["dhs"], p["dh_n"][0],
                                  None if p["dc_n"] is None else p["dc_n"][0])
    expected = {"hs": fwd.hs, "h_n": fwd.h_n[None], "c_n": None if c0 is None else fwd.c_n[None], "dx": grads.dx,
                "dh0": grads.dh0[None], "dc0": None if c0 is None else grads.dc0[None],
                **{f"dparams[0].{name}": getattr(grads, name) for name in ("dw_ih", "dw_hh", "db_ih", "db_hh")}}
    for lengths in (np.full(B, T), None):
        got = named_results(*run_layers(cell, p, lengths=lengths))
        assert_same_bits(got, expected, f"lengths={lengths}")


def reversed_within(a, n):
    """a (T, ...) with its first n steps reversed."""
    out = np.array(a, copy=True)
    out[:n] = a[:n][::-1]
    return out


@pytest.mark.parametrize("cell", CELLS)
def test_each_row_in_each_direction_is_the_cell_kernels_on_that_row_alone(cell):
    """Rows of lengths [2, T, 1, …], both directions: each row's outputs and its gradients dx, dh0,
    dc0 are, bit for bit, jit.cuda's cell forward and backward on that row alone, truncated to its
    length (reversed within it for the reverse direction): the row's time step, its stop, its frozen
    h_n and its reverse start are computed in the kernels. hs and dx are exactly zero past a row's
    length; a gradient given there changes no bit; the weight gradients are the rows' sums."""
    dtype = np.float64
    p = layer_problem(cell, dtype, directions=2, seed=4)
    fwd, grads = run_layers(cell, p, bidirectional=True, lengths=LENGTHS)
    padded = np.arange(T)[:, None] >= LENGTHS[None, :]
    noisy_dhs = np.where(padded[..., None], 1e3, p["dhs"]).astype(dtype)
    _, noisy = run_layers(cell, p, bidirectional=True, lengths=LENGTHS, dhs=noisy_dhs)
    assert_same_bits(named_results(fwd, noisy), named_results(fwd, grads), "dhs changed at padded positions only")

    lstm = cell == "lstm"
    sums = [{name: 0.0 for name in ("dw_ih", "dw_hh", "db_ih", "db_hh")} for _ in range(2)]
    for b, n in enumerate(LENGTHS):
        assert not np.asarray(fwd.hs)[n:, b].any() and not np.asarray(grads.dx)[n:, b].any()
        dx_row = 0
        for d in range(2):
            def row(a, reverse=d == 1):  # (T, B, ·) -> (n, 1, ·): the row's own steps, in its direction's order
                steps = a[:n, b:b + 1]
                return np.ascontiguousarray(steps[::-1] if reverse else steps)
            columns = slice(d * H, (d + 1) * H)
            c0 = p["c0"][d, b:b + 1] if lstm else None
            alone = cuda_backend.forward(cell, p["params"][d], row(p["x"]), p["h0"][d, b:b + 1], c0)
            alone_grads = cuda_backend.backward(cell, p["params"][d], row(p["x"]), p["h0"][d, b:b + 1], c0, alone,
                                                row(p["dhs"][..., columns]), p["dh_n"][d, b:b + 1],
                                                p["dc_n"][d, b:b + 1] if lstm else None)
            context = f"row {b} (length {n}), direction {d}"
            np.testing.assert_array_equal(row(np.asarray(fwd.hs)[..., columns]), alone.hs, err_msg=context, strict=True)
            np.testing.assert_array_equal(fwd.h_n[d, b:b + 1], alone.h_n, err_msg=context, strict=True)
            np.testing.assert_array_equal(grads.dh0[d, b:b + 1], alone_grads.dh0, err_msg=context, strict=True)
            if lstm:
                np.testing.assert_array_equal(fwd.c_n[d, b:b + 1], alone.c_n, err_msg=context, strict=True)
                np.testing.assert_array_equal(grads.dc0[d, b:b + 1], alone_grads.dc0, err_msg=context, strict=True)
            dx_row = dx_row + (alone_grads.dx[::-1] if d == 1 else alone_grads.dx)
            for name in sums[d]:
                sums[d][name] = sums[d][name] + getattr(alone_grads, name)
        np.testing.assert_array_equal(np.asarray(grads.dx)[:n, b:b + 1], dx_row, err_msg=f"dx of row {b}", strict=True)
    for d in range(2):  # sums over rows in another order: equal up to rounding
        for name, total in sums[d].items():
            got = getattr(grads.dparams[d], name)
            np.testing.assert_allclose(got, total, rtol=0, atol=64 * np.finfo(dtype).eps * max(1, np.abs(total).max()),
                                       err_msg=f"dparams[{d}].{name} against the rows' sum")


@pytest.mark.parametrize("cell", ["lstm", "gru_classic"])
def test_two_bidirectional_layers_agree_with_the_reference_in_float32(cell):
    """Stacking on the device: layer 1 reads layer 0's output (both directions' columns, zeros past
    each row's length), and backward sums both directions' dx into layer 0's upstream gradient."""
    p = layer_problem(cell, np.float32, layers=2, directions=2, seed=7)
    fwd, grads = run_layers(cell, p, bidirectional=True, lengths=LENGTHS)
    p64 = {k: (None if v is None else [reference.Params(*(a.astype(np.float64) for a in q)) for q in v]
               if k == "params" else v.astype(np.float64)) for k, v in p.items()}
    ref = reference.layers.forward(cell, p64["params"], p64["x"], p64["h0"], p64["c0"], bidirectional=True,
                                   lengths=LENGTHS)
    ref_grads = reference.layers.backward(cell, p64["params"], p64["x"], p64["h0"], p64["c0"], ref, p64["dhs"],
                                          p64["dh_n"], p64["dc_n"], bidirectional=True, lengths=LENGTHS)
    got, want = named_results(fwd, grads), named_results(ref, ref_grads)
    # Each pre-activation sums K = 2H + 2 terms of size ≲ 1 (U(±1/√H) weights, unit inputs): ≤ K·eps per
    # step and layer, contracting over T steps and two layers, into sums over T·B rows for the weights;
    # 4× for the constants hidden in ≲ 1 (test_jit_cuda.agreement_tolerance, with the layers' depth).
    tol = 4 * 2 * T * (B + 2 * H + 2) * np.finfo(np.float32).eps
    for name, w in want.items():
        if w is not None:
            assert np.asarray(got[name]).dtype == np.float32, name
            np.testing.assert_allclose(got[name], w, rtol=0, atol=tol * max(1, np.abs(w).max()), err_msg=name)
    assert not np.asarray(fwd.hs)[np.arange(T)[:, None] >= LENGTHS].any()


def counted(monkeypatch):
    """Count every kernel launch: jit.cuda.layers launches its step kernels, jit.cuda.backend the
    matmuls, copies and sums it shares."""
    count = {"launches": 0}
    for module in (cuda_backend, cuda_layers):
        original = module.launch

        def counting(*args, original=original):
            count["launches"] += 1
            return original(*args)
        monkeypatch.setattr(module, "launch", counting)
    return count


@pytest.mark.parametrize("cell", ["lstm", "gru_classic"])
def test_a_layer_call_launches_one_time_loop_per_layer_direction_whatever_the_lengths(cell, monkeypatch):
    """L·D time loops of T step launches (2T for gru_classic), each after one input matmul; training
    adds a copy of h0 (and of c_n); backward per layer-direction: BPTT's start, T (2T) steps, the
    weight matmuls, two column sums, dx, and one sum of the two directions' dx per layer. The count
    does not depend on how many distinct lengths the rows have (the composition of cell calls
    makes a call per span between them)."""
    L, D = 1, 2
    p = layer_problem(cell, np.float32, layers=L, directions=D, seed=2)
    per_step = 2 if cell == "gru_classic" else 1
    lstm = cell == "lstm"
    count = counted(monkeypatch)
    for lengths in (None, LENGTHS):
        count["launches"] = 0
        fwd = cuda_backend.layer_forward(cell, p["params"], p["x"], p["h0"], p["c0"], bidirectional=True,
                                         lengths=lengths, training=False)
        assert count["launches"] == L * D * (1 + per_step * T), f"inference, lengths={lengths}"
        count["launches"] = 0
        fwd = cuda_backend.layer_forward(cell, p["params"], p["x"], p["h0"], p["c0"], bidirectional=True,
                                         lengths=lengths)
        assert count["launches"] == L * D * (1 + per_step * T + 1 + lstm), f"training, lengths={lengths}"
        count["launches"] = 0
        cuda_backend.layer_backward(cell, p["params"], p["x"], p["h0"], p["c0"], fwd, p["dhs"], p["dh_n"], p["dc_n"],
                                    bidirectional=True, lengths=lengths)
        weight_matmuls = 3 if cell == "gru_classic" else 2  # dW_ih; dW_hh (gru_classic: two blocks)
        assert count["launches"] == L * D * (1 + per_step * T + weight_matmuls + 2 + 1) + L * (D - 1), \
            f"backward, lengths={lengths}"


def test_device_arrays_stay_on_the_device_through_every_layer(monkeypatch):
    """Device arrays in: device arrays out, the NumPy path's bits, and nothing read back to the host
    but the finiteness check's counts (one small array per call)."""
    cell = "gru"
    p = layer_problem(cell, np.float32, layers=2, seed=3)
    host_fwd, host_grads = run_layers(cell, p, lengths=LENGTHS)
    dev = {k: None if v is None else ([reference.Params(*(cuda.to_device(a) for a in q)) for q in v]
                                      if k == "params" else cuda.to_device(v)) for k, v in p.items()}
    reads = {"count": 0}
    copy_to_host = DeviceArray.copy_to_host

    def counted_copy(self, *args, **kwargs):
        reads["count"] += 1
        return copy_to_host(self, *args, **kwargs)
    monkeypatch.setattr(DeviceArray, "copy_to_host", counted_copy)
    fwd, grads = run_layers(cell, dev, lengths=LENGTHS)
    assert reads["count"] == 2, "one finiteness count per call, forward and backward"
    monkeypatch.setattr(DeviceArray, "copy_to_host", copy_to_host)
    got = named_results(fwd, grads)
    for name, value in got.items():
        if value is not None:
            assert isinstance(value, DeviceArray), name
    assert_same_bits({k: None if v is None else v.copy_to_host() for k, v in got.items()},
                     named_results(host_fwd, host_grads), "device arrays in")


@pytest.mark.parametrize("empty", ["T", "B", "H"])
def test_no_steps_rows_or_units_are_answered_as_the_reference_does(empty):
    cell = "lstm"
    p = layer_problem(cell, np.float64, layers=2, directions=2)
    lengths = None
    if empty == "T":
        p["x"], p["dhs"] = p["x"][:0], p["dhs"][:0]
    elif empty == "B":
        for k in ("x", "dhs"):
            p[k] = p[k][:, :0]
        for k in ("h0", "c0", "dh_n", "dc_n"):
            p[k] = p[k][:, :0]
        lengths = np.zeros(0, int)
    else:
        p["params"] = [reference.Params(np.zeros((0, I if k < 2 else 0)), np.zeros((0, 0)), np.zeros(0), np.zeros(0))
                       for k in range(4)]
        for k in ("h0", "c0", "dh_n", "dc_n", "dhs"):
            p[k] = p[k][..., :0]
    fwd, grads = run_layers(cell, p, bidirectional=True, lengths=lengths)
    ref = reference.layers.forward(cell, p["params"], p["x"], p["h0"], p["c0"], bidirectional=True, lengths=lengths)
    ref_grads = reference.layers.backward(cell, p["params"], p["x"], p["h0"], p["c0"], ref, p["dhs"], p["dh_n"],
                                          p["dc_n"], bidirectional=True, lengths=lengths)
    assert_same_bits(named_results(fwd, grads), named_results(ref, ref_grads), f"{empty} = 0")


def test_backward_needs_a_training_forward_of_these_layers():
    cell = "rnn_tanh"
    p = layer_problem(cell, np.float64)
    inference = cuda_backend.layer_forward(cell, p["params"], p["x"], p["h0"], training=False)
    assert inference.trace is None
    with pytest.raises(ValueError, match="^fwd: expected the result of jit.cuda's layer_forward"):
        cuda_backend.layer_backward(cell, p["params"], p["x"], p["h0"], None, inference, p["dhs"], p["dh_n"])


def test_a_projection_goes_through_the_composition_of_the_cell_kernels_on_device_arrays_too():
    """lstm with w_hr is the composition of jit.cuda's cell calls (reference.layers.composed): the
    same numbers for NumPy and device arrays in, device arrays out for the latter."""
    rng = np.random.default_rng(1)
    Hc, P, n = 3, 2, 2
    params = [reference.layers.ProjectedParams(*(rng.uniform(-0.5, 0.5, shape) for shape in
                                                 ((4 * Hc, I), (4 * Hc, P), (4 * Hc,), (4 * Hc,), (P, Hc))))]
    x, h0, c0 = rng.standard_normal((n, 1, I)), rng.standard_normal((1, 1, P)), rng.standard_normal((1, 1, Hc))
    host = cuda_backend.layer_forward("lstm", params, x, h0, c0)
    ref = reference.layers.forward("lstm", params, x, h0, c0)
    np.testing.assert_allclose(host.hs, ref.hs, rtol=0, atol=1e-14)
    dev = cuda_backend.layer_forward("lstm", [type(q)(*(cuda.to_device(a) for a in q)) for q in params],
                                     cuda.to_device(x), cuda.to_device(h0), cuda.to_device(c0))
    assert isinstance(dev.hs, DeviceArray)
    np.testing.assert_array_equal(dev.hs.copy_to_host(), host.hs)


def test_bad_layer_input_is_reported_by_the_layer_contracts_checks_device_arrays_too():
    """The shared checks (reference.layers.check_layer_forward_inputs) see the caller's arguments as
    given: one cell's parameters are named as such, and a NaN in a device array by its name."""
    cell = "gru"
    p = layer_problem(cell, np.float64)
    with pytest.raises(TypeError, match=r"^params: expected a list or tuple .* put them in a list"):
        cuda_backend.layer_forward(cell, p["params"][0], p["x"], p["h0"])
    with pytest.raises(ValueError, match=r"^lengths: expected integers in 1\.\.T"):
        cuda_backend.layer_forward(cell, p["params"], p["x"], p["h0"], lengths=np.zeros(B, int))
    bad = p["h0"].copy()
    bad[0, -1, -1] = np.nan
    with pytest.raises(ValueError, match="^h0: expected finite"):
        cuda_backend.layer_forward(cell, p["params"], cuda.to_device(p["x"]), cuda.to_device(bad))
