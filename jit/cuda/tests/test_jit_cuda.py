"""Tests specific to jit.cuda: the tiled matmul on awkward sizes, every cell against the reference
at sizes that cross the step kernels' tiles, device arrays in -> device arrays out, launch checks,
bad device input, and the simulator switch.

They run wherever jit.cuda can: on a GPU, or under the CUDA simulator that the repo-root
conftest.py enables when no NVIDIA driver is present. Sizes are derived from the tiles in use
(jit.cuda.launch.TILES), so both configurations get tails in every dimension.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import reference
from reference.contract import CELLS
from reports.cli import child_environment

cuda_backend = pytest.importorskip("jit.cuda").backend
if not cuda_backend.available():
    pytest.skip("jit.cuda: no CUDA GPU and the CUDA simulator is off (NUMBA_ENABLE_CUDASIM=0)",
                allow_module_level=True)

from numba import cuda  # noqa: E402  (after the availability check: numba.cuda is usable)

from jit.cuda.backend import _matmul  # noqa: E402
from jit.cuda.elementwise import fill2d  # noqa: E402
from jit.cuda.launch import SIMULATOR, TILES, LaunchError, launch  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
EPS = {np.float32: np.finfo(np.float32).eps, np.float64: np.finfo(np.float64).eps}

MATMUL_BLOCK = TILES.matmul * TILES.matmul_work
#: (M, N, K): one element; one past a tile in M with N a tile minus one and K a step plus a tail.
MATMUL_SIZES = [(1, 1, 1), (MATMUL_BLOCK + 1, MATMUL_BLOCK - 1, TILES.matmul_depth + 3)]


def matmul_tolerance(dtype, K, a, b):
    """Any summation order of K products: |error| ≤ γ_K Σ_k |a_mk b_kn| ≤ K·eps·(|a| |b|)_mn (Higham 3.5),
    with γ_K = K·u/(1 − K·u) < K·eps for K·eps < 1, u = eps/2; the bias adds one more rounding."""
    return (K + 1) * EPS[dtype] * (np.abs(a) @ np.abs(b) + 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("M,N,K", MATMUL_SIZES)
def test_tiled_matmul_matches_numpy_on_awkward_sizes(M, N, K, trans_a, trans_b, dtype):
    rng = np.random.default_rng(M * 100 + N * 10 + K)
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    bias = rng.standard_normal(N).astype(dtype)
    c = cuda.device_array((M, N), dtype)
    _matmul(cuda.to_device(np.ascontiguousarray(a.T) if trans_a else a),
            cuda.to_device(np.ascontiguousarray(b.T) if trans_b else b), c,
            trans_a=trans_a, trans_b=trans_b, bias=cuda.to_device(bias))
    got = c.copy_to_host()
    want = a.astype(np.float64) @ b.astype(np.float64) + bias
    assert got.dtype == dtype
    bad = np.abs(got - want) > matmul_tolerance(dtype, K, a.astype(np.float64), b.astype(np.float64))
    assert not bad.any(), f"{bad.sum()} elements off, first at {np.argwhere(bad)[0]}"


#: T, B, I, H past the step tiles: B = rows + 1 and H = units + 3 leave a tail block in both grid
#: axes, and H > depth a tail step in the reduction.
T, B, I = 3, TILES.rows + 1, 5
H = max(TILES.units, TILES.depth) + 3


def inputs(cell, dtype, seed=0):
    rng = np.random.default_rng(seed)
    p = reference.init_params(cell, I, H, dtype=dtype, seed=seed)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = (0.5 * rng.standard_normal((B, H))).astype(dtype)
    c0 = (0.5 * rng.standard_normal((B, H))).astype(dtype) if cell == "lstm" else None
    dhs = rng.standard_normal((T, B, H)).astype(dtype)
    dh_n = rng.standard_normal((B, H)).astype(dtype)
    dc_n = rng.standard_normal((B, H)).astype(dtype) if cell == "lstm" else None
    return p, x, h0, c0, dhs, dh_n, dc_n


def agreement_tolerance(dtype, sizes=(T, B, I, H)):
    """Same equations as the reference, other summation orders. Each pre-activation sums
    K = I + H + 2 terms of size ≤ ~1 (weights U(±1/√H), inputs N(0, 1)): error ≤ K·eps; the gates
    are 1-Lipschitz and these weights keep the recurrence near contracting, so T steps add up to
    T·K·eps; the weight gradients sum T·B such terms. 4× margin for the constants hidden in ≤ ~1.
    ``sizes``: (T, B, I, H) of the call, this module's by default."""
    steps, rows, inputs, hidden = sizes
    return 4 * steps * (rows + inputs + hidden + 2) * EPS[dtype]


def assert_close(name, got, want, dtype, sizes=(T, B, I, H)):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == dtype, f"{name}: dtype {got.dtype}, expected {dtype}"
    assert got.shape == want.shape, f"{name}: shape {got.shape}, expected {want.shape}"
    tol = agreement_tolerance(dtype, sizes) * max(1.0, float(np.abs(want).max(initial=0)))
    err = np.abs(got.astype(np.float64) - want)
    if err.size and err.max() > tol:
        i = np.unravel_index(err.argmax(), err.shape)
        raise AssertionError(f"{name}: max error {err.max():.3g} > {tol:.3g} at {i}: got {got[i]}, want {want[i]}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_matches_the_reference_across_tiles(cell, dtype):
    p, x, h0, c0, dhs, dh_n, dc_n = inputs(cell, dtype)
    p64, x64, h064, c064, dhs64, dh_n64, dc_n64 = (
        None if a is None else (reference.Params(*(w.astype(np.float64) for w in a)) if isinstance(a, tuple)
                                else a.astype(np.float64)) for a in (p, x, h0, c0, dhs, dh_n, dc_n))
    fwd = cuda_backend.forward(cell, p, x, h0, c0)
    ref = reference.backend.forward(cell, p64, x64, h064, c064)
    for field in ("hs", "h_n", "c_n", "cs", "gates"):
        if getattr(ref, field) is not None:
            assert_close(f"forward.{field}", getattr(fwd, field), getattr(ref, field), dtype)
    inference = cuda_backend.forward(cell, p, x, h0, c0, training=False)
    assert inference.gates is None and inference.cs is None
    # Inference runs the same kernels with scratch buffers (lstm: two cell states in turn).
    np.testing.assert_array_equal(inference.hs, fwd.hs)
    if cell == "lstm":
        np.testing.assert_array_equal(inference.c_n, fwd.c_n)
    grads = cuda_backend.backward(cell, p, x, h0, c0, fwd, dhs, dh_n, dc_n)
    ref_grads = reference.backend.backward(cell, p64, x64, h064, c064, ref, dhs64, dh_n64, dc_n64)
    for field in ref_grads._fields:
        if getattr(ref_grads, field) is not None:
            assert_close(f"backward.{field}", getattr(grads, field), getattr(ref_grads, field), dtype)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_persistent_time_loops_give_the_per_step_kernels_bits(cell, dtype, training, monkeypatch):
    """The *_forward_persistent_kernel and *_backward_persistent_kernel run the per-step kernels' own
    bodies (the *_step_forward and *_step_backward device functions) over every tile and step of one
    launch: the same operations in the same order, so every result is bit for bit the per-step path's
    (sizes past every tile; under the simulator its one block walks all tiles, on a GPU the blocks
    synchronize between steps)."""
    p, x, h0, c0, dhs, dh_n, dc_n = inputs(cell, dtype, seed=3)
    results = {}
    for persistent in (False, True):
        monkeypatch.setattr(cuda_backend, "persistent", persistent)
        fwd = cuda_backend.forward(cell, p, x, h0, c0, training=training)
        grads = cuda_backend.backward(cell, p, x, h0, c0, fwd, dhs, dh_n, dc_n) if training else None
        # lstm without ∂L/∂c_T too: the backward's zero start for the cell-state gradient
        no_dc = cuda_backend.backward(cell, p, x, h0, c0, fwd, dhs, dh_n, None) if training and c0 is not None else None
        results[persistent] = (fwd, grads, no_dc)
    for want, got in zip(results[False], results[True]):
        if want is None:
            continue
        for field in want._fields:
            w, g = getattr(want, field), getattr(got, field)
            assert (g is None) == (w is None), field
            if w is not None:
                np.testing.assert_array_equal(g, w, err_msg=field)


#: The split-K time loops' sizes (jit.cuda.split): a batch of one chunk and one row more; H past a
#: unit block and a slice of k (several items, several slices where the slice depth is forced to
#: SPLIT_DEPTH), or one unit block in one slice (one item, W_hh's slice kept from step 0 on; in
#: backward the reduction over G·H gate rows still takes several slices but for rnn).
SPLIT_B = TILES.split_rows * TILES.split_rows_per_thread + 1
SPLIT_H = {"slices": max(TILES.split_units, TILES.split_depth) + 3, "kept": TILES.split_units}


@pytest.mark.parametrize("plan", ["rule", "slices", "kept"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
def test_split_k_time_loops_match_the_reference(cell, dtype, plan, monkeypatch):
    """The split-K time loops (backend.split_k with persistent), forward and backward, against the
    float64 reference within agreement_tolerance at these sizes: their sums run per slice, then
    across slices, another order than the reference's. "rule": the slice depth
    backend.split_slice_depth chooses (under the simulator's grid of one block, the whole reduction
    per item); "slices": SPLIT_DEPTH forced, so each step sums several slices and a block walks
    several items, reloading W_hh's slice; "kept": one forward item, its slice loaded at step 0
    only. Inference gives training's bits (the same kernel, the gates kept or not); lstm's backward
    runs with ∂L/∂c_T and without (its zero start)."""
    monkeypatch.setattr(cuda_backend, "persistent", True)
    monkeypatch.setattr(cuda_backend, "split_k", True)
    if plan != "rule":
        monkeypatch.setattr(cuda_backend, "split_slice_depth", lambda units, depth, resident: TILES.split_depth)
    rng = np.random.default_rng(5)
    H_split = SPLIT_H.get(plan, SPLIT_H["slices"])
    sizes = (T, SPLIT_B, I, H_split)
    p = reference.init_params(cell, I, H_split, dtype=dtype, seed=5)
    x = rng.standard_normal((T, SPLIT_B, I)).astype(dtype)
    h0, dh_n, c0, dc_n = ((0.5 * rng.standard_normal((SPLIT_B, H_split))).astype(dtype) for _ in range(4))
    c0, dc_n = (c0, dc_n) if cell == "lstm" else (None, None)
    dhs = rng.standard_normal((T, SPLIT_B, H_split)).astype(dtype)
    as64 = (lambda a: None if a is None else a.astype(np.float64))
    p64 = reference.Params(*(w.astype(np.float64) for w in p))
    fwd = cuda_backend.forward(cell, p, x, h0, c0)
    ref = reference.backend.forward(cell, p64, as64(x), as64(h0), as64(c0))
    for field in ("hs", "h_n", "c_n", "cs", "gates"):
        if getattr(ref, field) is not None:
            assert_close(f"forward.{field}", getattr(fwd, field), getattr(ref, field), dtype, sizes)
    inference = cuda_backend.forward(cell, p, x, h0, c0, training=False)
    np.testing.assert_array_equal(inference.hs, fwd.hs)
    np.testing.assert_array_equal(inference.h_n, fwd.h_n)
    for given_dc_n in ((dc_n, None) if cell == "lstm" else (None,)):
        grads = cuda_backend.backward(cell, p, x, h0, c0, fwd, dhs, dh_n, given_dc_n)
        ref_grads = reference.backend.backward(cell, p64, as64(x), as64(h0), as64(c0), ref, as64(dhs), as64(dh_n),
                                               as64(given_dc_n))
        for field in ref_grads._fields:
            if getattr(ref_grads, field) is not None:
                assert_close(f"backward.{field}", getattr(grads, field), getattr(ref_grads, field), dtype, sizes)


@pytest.mark.parametrize("cell", ["lstm", "gru_classic"])
def test_device_arrays_in_give_device_arrays_out(cell):
    dtype = np.float32
    p, x, h0, c0, dhs, dh_n, dc_n = inputs(cell, dtype, seed=1)
    on_host = cuda_backend.forward(cell, p, x, h0, c0)
    host_grads = cuda_backend.backward(cell, p, x, h0, c0, on_host, dhs, dh_n, dc_n)
    dev = lambda a: None if a is None else cuda.to_device(a)  # noqa: E731
    dp = reference.Params(*(dev(w) for w in p))
    fwd = cuda_backend.forward(cell, dp, dev(x), dev(h0), dev(c0))
    grads = cuda_backend.backward(cell, dp, dev(x), dev(h0), dev(c0), fwd, dev(dhs), dev(dh_n), dev(dc_n))
    for result, host in ((fwd, on_host), (grads, host_grads)):
        for field in result._fields:
            value = getattr(result, field)
            if value is None:
                assert getattr(host, field) is None
                continue
            assert cuda_backend.is_device_array(value) and not isinstance(value, np.ndarray), field
            # The same kernels on the same numbers: bit-identical to the NumPy path.
            np.testing.assert_array_equal(value.copy_to_host(), getattr(host, field), err_msg=field)


def test_device_input_with_nan_is_rejected_by_name():
    p, x, h0, c0, *_ = inputs("gru", np.float64)
    bad = h0.copy()
    bad[-1, -1] = np.nan
    with pytest.raises(ValueError, match="h0: expected finite values"):
        cuda_backend.forward("gru", p, cuda.to_device(x), cuda.to_device(bad))
    w_hh = p.w_hh.copy()
    w_hh[0, 0] = np.inf
    with pytest.raises(ValueError, match="params.w_hh: expected finite"):
        cuda_backend.forward("gru", p._replace(w_hh=cuda.to_device(w_hh)), cuda.to_device(x), cuda.to_device(h0))


@pytest.mark.parametrize("name", ["x", "c0", "dhs", "dh_n", "dc_n", "fwd.hs", "fwd.gates", "fwd.cs"])
def test_one_launch_checks_every_device_input_and_names_the_bad_one(name):
    """All of backward's inputs on the device are checked by one kernel, an array per block row,
    forward's trace included: a NaN in the last element of any one of them is reported against that one."""
    p, x, h0, c0, dhs, dh_n, dc_n = inputs("lstm", np.float64)
    fwd = cuda_backend.forward("lstm", p, x, h0, c0)
    args = dict(x=x, h0=h0, c0=c0, dhs=dhs, dh_n=dh_n, dc_n=dc_n,
                **{f"fwd.{field}": getattr(fwd, field) for field in ("hs", "gates", "cs")})
    args[name] = args[name].copy()
    args[name].reshape(-1)[-1] = np.nan
    d = {k: cuda.to_device(v) for k, v in args.items()}
    pd = reference.Params(*(cuda.to_device(w) for w in p))
    trace = fwd._replace(hs=d["fwd.hs"], gates=d["fwd.gates"], cs=d["fwd.cs"])
    with pytest.raises(ValueError, match=f"^{name}: expected finite"):
        cuda_backend.backward("lstm", pd, d["x"], d["h0"], d["c0"], trace, d["dhs"], d["dh_n"], d["dc_n"])


def test_device_input_of_wrong_dtype_is_a_type_error():
    p, x, h0, *_ = inputs("rnn_tanh", np.float32)
    with pytest.raises(TypeError, match="h0: expected dtype float32"):
        cuda_backend.forward("rnn_tanh", p, cuda.to_device(x), cuda.to_device(h0.astype(np.float64)))


def test_t_zero_gives_empty_hs_and_h0_back():
    p, x, h0, c0, *_ = inputs("lstm", np.float64)
    fwd = cuda_backend.forward("lstm", p, x[:0], h0, c0)
    assert fwd.hs.shape == (0, B, H)
    np.testing.assert_array_equal(fwd.h_n, h0)
    np.testing.assert_array_equal(fwd.c_n, c0)
    grads = cuda_backend.backward("lstm", p, x[:0], h0, c0, fwd, fwd.hs, h0, None)
    np.testing.assert_array_equal(grads.dh0, h0)
    np.testing.assert_array_equal(grads.dc0, np.zeros_like(c0))
    assert not grads.dw_hh.any() and grads.dx.shape == (0, B, I)


@pytest.fixture
def empty_device_arrays_refuse_indexing(monkeypatch):
    """Under the simulator, an empty device array refuses a[...] as on a GPU: numba-cuda 0.30.4 on
    an H200 slices 4 bytes of the empty array's NULL pointer and raises "non-empty slice into empty
    slice". On a GPU the real arrays already do; the simulator's are NumPy arrays and never did."""
    if SIMULATOR:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
        index = FakeCUDAArray.__getitem__

        def index_as_on_a_gpu(self, item):
            if self.size == 0:
                raise RuntimeError("non-empty slice into empty slice")
            return index(self, item)

        monkeypatch.setattr(FakeCUDAArray, "__getitem__", index_as_on_a_gpu)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("empty", ["B", "H"])
def test_no_rows_or_no_units_give_the_references_shapes_and_zero_weight_gradients(
        cell, empty, empty_device_arrays_refuse_indexing):
    """B = 0 or H = 0 with T > 0: every result has the reference's shape, the weight and bias
    gradients are exactly zero (sums over nothing), and so is dx when there is no unit."""
    p, x, h0, c0, dhs, dh_n, dc_n = inputs(cell, np.float64)
    if empty == "B":
        x, h0, dhs, dh_n = x[:, :0], h0[:0], dhs[:, :0], dh_n[:0]
        c0, dc_n = (None, None) if c0 is None else (c0[:0], dc_n[:0])
    else:
        p = reference.Params(p.w_ih[:0], p.w_hh[:0, :0], p.b_ih[:0], p.b_hh[:0])
        h0, dhs, dh_n = h0[:, :0], dhs[:, :, :0], dh_n[:, :0]
        c0, dc_n = (None, None) if c0 is None else (c0[:, :0], dc_n[:, :0])
    for training in (False, True):
        got = cuda_backend.forward(cell, p, x, h0, c0, training=training)
        want = reference.backend.forward(cell, p, x, h0, c0, training=training)
        for field, a in want._asdict().items():
            assert np.shape(getattr(got, field)) == np.shape(a), f"forward {field}, training={training}"
    grads = cuda_backend.backward(cell, p, x, h0, c0, got, dhs, dh_n, dc_n)
    want = reference.backend.backward(cell, p, x, h0, c0, want, dhs, dh_n, dc_n)
    for field, a in want._asdict().items():
        assert np.shape(getattr(grads, field)) == np.shape(a), f"backward {field}"
        if a is not None:
            np.testing.assert_array_equal(getattr(grads, field), a, err_msg=f"backward {field}")


def test_launch_refuses_impossible_configs_and_skips_empty_grids():
    dst = cuda.device_array((2, 2), np.float64)
    with pytest.raises(LaunchError, match="fill2d.*1025 threads"):
        launch(fill2d, (1,), (1025,), dst, 0.0)
    with pytest.raises(LaunchError, match="fill2d.*65535 blocks allowed along y"):
        launch(fill2d, (1, 70000), (1,), dst, 0.0)
    launch(fill2d, (0,), (8,), dst, 0.0)  # nothing to do, nothing launched


def test_a_persistent_kernel_that_cannot_be_resident_is_a_launch_error(monkeypatch):
    """No block can be resident: a LaunchError naming the kernel, never an empty grid that launch()
    skips, which would return arrays nothing wrote."""
    monkeypatch.setattr(cuda_backend, "persistent", True)
    monkeypatch.setattr(cuda_backend, "cooperative_grid_limit", lambda kernel, block, *args: 0)
    p, x, h0, *_ = inputs("gru", np.float32)
    with pytest.raises(LaunchError, match="gru_forward_persistent_kernel: not one block"):
        cuda_backend.forward("gru", p, x, h0)


def test_max_test_sizes_only_under_the_simulator():
    if SIMULATOR:
        assert set(cuda_backend.max_test_sizes) == {"T", "B", "I", "H"}
    else:
        assert cuda_backend.max_test_sizes is None


def test_numba_cpu_jit_still_works_in_this_process():
    """The simulator replaces numba.cuda only: @njit (jit.cpu) compiles and runs beside it."""
    from numba import njit

    @njit(cache=False)
    def dot(a, b):
        s = 0.0
        for i in range(a.shape[0]):
            s += a[i] * b[i]
        return s

    v = np.arange(5.0)
    assert dot(v, v) == 30.0
    cpu = pytest.importorskip("jit.cpu").backend
    p, x, h0, *_ = inputs("gru", np.float64)
    np.testing.assert_allclose(cpu.forward("gru", p, x, h0).hs, cuda_backend.forward("gru", p, x, h0).hs,
                               rtol=0, atol=agreement_tolerance(np.float64))


@pytest.mark.parametrize("preset,expected", [("0", "0"), ("1", "1"), (None, None)])
def test_root_conftest_keeps_the_users_choice_and_otherwise_follows_the_driver(preset, expected):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    if preset is not None:
        env["NUMBA_ENABLE_CUDASIM"] = preset
    code = ("import os, runpy; ns = runpy.run_path('conftest.py'); "
            "print(os.environ.get('NUMBA_ENABLE_CUDASIM'), ns['nvidia_driver_present']())")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    value, driver = out.stdout.split()
    if preset is None:
        expected = "None" if driver == "True" else "1"
    assert value == expected


# ----- reports/gpu_check.sh and reports/gpu_bench.py, as far as they run without a GPU ----------

def test_gpu_check_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(REPO / "reports" / "gpu_check.sh")], check=True)


def test_gpu_check_script_refuses_without_an_out_dir():
    out = subprocess.run(["bash", str(REPO / "reports" / "gpu_check.sh")], capture_output=True, text=True)
    assert out.returncode == 2 and "usage" in out.stderr


def test_gpu_bench_dry_run_under_the_simulator_writes_json_and_a_report_without_timings(tmp_path):
    """The benchmark's machinery end to end on the tiny config: JSON, report, summary; simulated
    timings are measured by pytest-benchmark but never shown in the report."""
    # child_environment: under an xdist worker, pytest-benchmark in the child would disable itself.
    env = dict(child_environment(), NUMBA_ENABLE_CUDASIM="1", CELLBENCH_GPU_CONFIGS="tiny", CELLBENCH_GPU_CELLS="lstm")
    results = tmp_path / "gpu_bench.json"
    run = subprocess.run([sys.executable, "-m", "pytest", "reports/gpu_bench.py", "-q", "-p", "no:cacheprovider",
                          f"--benchmark-json={results}", "--benchmark-min-rounds=1", "--benchmark-max-time=0",
                          "--benchmark-warmup=off"], cwd=REPO, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    from reports.gpu_bench import write_report
    summary = write_report(results, tmp_path)
    report = (tmp_path / "gpu_report.md").read_text()
    assert "CUDA simulator" in summary and "timings are not shown" in report
    assert " ms" not in report and "ratio" not in report


def test_gpu_profile_counts_the_launches_of_a_call_and_times_only_on_a_gpu(tmp_path):
    """reports.gpu_bench profile on the tiny config: launches per call counted. lstm inference at
    T = 3: one finiteness check of all seven inputs, the projection, then a step kernel per step and
    the copies of h_n and c_n (7), or one persistent launch that also copies the states in and out
    (3); times and the cProfile only off the simulator."""
    from reports.gpu_bench import profile_calls
    summary = profile_calls(tmp_path, "tiny")
    text = (tmp_path / "profile.txt").read_text()
    assert summary in text
    assert "per-step inference: 7 kernel launches per call" in text
    assert "persistent inference: 3 kernel launches per call" in text
    assert "per-step training:" in text and "persistent training:" in text
    assert (" ms per call" in text and "cProfile" in text) != SIMULATOR


@pytest.mark.parametrize("mode", ["inference", "training"])
@pytest.mark.parametrize("variant", ["jit.cuda", "jit.cuda.persistent", "jit.cuda.split"])
def test_gpu_bench_calls_leave_the_time_loop_settings_as_they_found_them(mode, variant):
    """A timed call switches jit.cuda.backend.persistent and split_k for its own launches only (the
    benchmark runs every variant in one process; the settings are the user's)."""
    from reports.gpu_bench import JIT_TIME_LOOPS, Case
    before = cuda_backend.persistent, cuda_backend.split_k
    try:
        for setting in ((False, False), (True, False), (True, True)):
            cuda_backend.persistent, cuda_backend.split_k = setting
            Case("gru", 3, 2, 5, 5).jit_cuda_call(mode, *JIT_TIME_LOOPS[variant])()
            assert (cuda_backend.persistent, cuda_backend.split_k) == setting
    finally:
        cuda_backend.persistent, cuda_backend.split_k = before


def test_gpu_report_ratios_and_targets_from_a_synthetic_result(tmp_path):
    """ratio = jit.cuda / cuDNN fp32 per case, and the persistent variant's beside it; met when
    ≤ 1.5 (inference) or ≤ 2 (training)."""
    import json

    from reports.gpu_bench import comparison, load_results, short_summary, write_report
    medians = {("jit.cuda", "inference"): 3.0, ("torch.cudnn", "inference"): 2.0,
               ("torch.cudnn.tf32", "inference"): 1.0, ("jit.cuda", "training"): 5.0,
               ("torch.cudnn", "training"): 2.0, ("torch.cudnn.tf32", "training"): 1.5,
               ("jit.cuda.persistent", "inference"): 2.4, ("jit.cuda.persistent", "training"): 4.5}
    benchmarks = [{"name": f"{b}-{m}", "stats": {"median": t},
                   "extra_info": {"backend": b, "cell": "lstm", "config": "DB-H512-B16", "mode": m, "T": 25, "B": 16,
                                  "I": 512, "H": 512, "flops": 1e9, "device": "Test GPU",
                                  "max_abs_diff_vs_cudnn": 1e-6 if b.startswith("jit") else float("nan")}}
                  for (b, m), t in medians.items()]
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"benchmarks": benchmarks}))
    table = comparison(load_results(path)).set_index("mode")
    assert table.loc["inference", "ratio vs cuDNN fp32"] == 1.5 and table.loc["inference", "met"] == "yes"
    assert table.loc["training", "ratio vs cuDNN fp32"] == 2.5 and table.loc["training", "met"] == "no"
    assert table.loc["inference", "persistent ratio vs cuDNN fp32"] == 1.2
    assert table.loc["inference", "persistent met"] == "yes" and table.loc["training", "persistent met"] == "no"
    summary = short_summary(table.reset_index()).set_index("mode")
    assert summary.loc["training", "met"] == "0/1"
    persistent = short_summary(table.reset_index(), "persistent ").set_index("mode")
    assert persistent.loc["inference", "met"] == "1/1" and persistent.loc["training", "worst ratio"] == 2.25
    text = write_report(path, tmp_path)
    assert "Test GPU" in text and "0/1" in text and "jit.cuda.persistent" in text


def test_every_kernel_lowers_for_the_real_cuda_target_with_float32_kept_float32():
    """What the simulator cannot see (numba.cuda typing, constant shared shapes, float64 promotion,
    whether numba launches a grid-synchronizing kernel cooperatively).

    float32 only: the float64 kernels are the same source with another DT, and promotion can only
    happen in float32; `python -m jit.cuda.lowering_check` checks both."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    run = subprocess.run([sys.executable, "-m", "jit.cuda.lowering_check", "float32"], cwd=REPO, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]


@pytest.mark.skipif(not SIMULATOR, reason="a workaround for the CUDA simulator; a GPU has real shared memory")
def test_simulated_shared_arrays_are_created_under_a_lock_one_per_declaring_line():
    """The simulator could hand two threads of a block different "shared" arrays (an unlocked
    check-then-create), losing one thread's writes now and then. The race depends on thread timing,
    so no test reproduces it on demand (the lstm agreement property, dev profile, failed in 2 of 3
    runs without the workaround and passed 7 of 7 with it). This checks the workaround is installed
    and keeps the simulator's semantics: one array per declaring line and launch."""
    from numba.cuda.simulator.kernelapi import FakeCUDAShared

    from jit.cuda import launch as launch_module
    assert FakeCUDAShared.array is launch_module._simulated_shared_array_with_lock
    shared = FakeCUDAShared(0)
    first = [shared.array((2, 3), np.float64) for _ in range(2)]  # one line, declared twice
    other = shared.array((2, 3), np.float64)
    assert first[0] is first[1] and other is not first[0]
    assert first[0].shape == (2, 3) and first[0].dtype == np.float64
