"""jit.cuda's host work per call: scratch arrays reused per thread and never returned, the finiteness
of device inputs checked at the call's end (and its opt-out), launches and allocations counted per
call, the step kernels specialized once per call, the cooperative limit asked once.

Counts are checked two ways: jit.cuda's own (jit.cuda.launch.COUNTS) and, independently, by wrapping
numba.cuda's allocation functions and (under the simulator) the simulated kernels' launch. Tiny
shapes: every call here runs on the CUDA simulator in well under a second.
"""
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import reference

cuda_backend = pytest.importorskip("jit.cuda").backend
if not cuda_backend.available():
    pytest.skip("jit.cuda: no CUDA GPU and the CUDA simulator is off (NUMBA_ENABLE_CUDASIM=0)",
                allow_module_level=True)

from numba import cuda  # noqa: E402  (after the availability check: numba.cuda is usable)

from jit.cuda import workspace  # noqa: E402
from jit.cuda.launch import COOPERATIVE_LIMITS, COUNTS, SIMULATOR  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
T, B, I, H = 2, 2, 3, 3


def problem(cell="lstm", seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    p = reference.init_params(cell, I, H, dtype=dtype, seed=seed)
    arrays = dict(x=rng.standard_normal((T, B, I)), h0=0.5 * rng.standard_normal((B, H)),
                  c0=0.5 * rng.standard_normal((B, H)) if cell == "lstm" else None,
                  dhs=rng.standard_normal((T, B, H)), dh_n=rng.standard_normal((B, H)),
                  dc_n=rng.standard_normal((B, H)) if cell == "lstm" else None)
    return p, {k: None if a is None else a.astype(dtype) for k, a in arrays.items()}


def on_device(p, a):
    return (reference.Params(*(cuda.to_device(w) for w in p)),
            {k: None if v is None else cuda.to_device(v) for k, v in a.items()})


def host(result):
    return {k: None if v is None else (v if isinstance(v, np.ndarray) else v.copy_to_host()).copy()
            for k, v in result._asdict().items()}


@pytest.fixture
def counted(monkeypatch):
    """COUNTS reset, and numba.cuda's allocations (and, under the simulator, kernel launches)
    counted independently of jit.cuda."""
    seen = {"allocations": 0, "launches": 0}
    for name in ("device_array", "to_device", "device_array_like"):
        original = getattr(cuda, name)

        def counting(*args, _original=original, **kwargs):
            seen["allocations"] += 1
            return _original(*args, **kwargs)
        monkeypatch.setattr(cuda, name, counting)
    if SIMULATOR:
        from numba.cuda.simulator.kernel import FakeCUDAKernel
        configure = FakeCUDAKernel.__getitem__

        def counting_launch(self, config):
            seen["launches"] += 1
            return configure(self, config)
        monkeypatch.setattr(FakeCUDAKernel, "__getitem__", counting_launch)

    def reset():
        COUNTS.reset()
        seen["allocations"] = seen["launches"] = 0
    reset()
    seen["reset"] = reset
    return seen


def call_counts(counted, call):
    """(launches, allocations) of one call, by COUNTS; the independent counts must agree."""
    counted["reset"]()
    call()
    assert COUNTS.allocations == counted["allocations"], "an allocation bypassed jit.cuda.workspace"
    if SIMULATOR:
        assert COUNTS.launches == counted["launches"], "a launch bypassed jit.cuda.launch.launch"
    return COUNTS.launches, COUNTS.allocations


# ----- scratch arrays: reused, per thread, never returned ---------------------------------------------

@pytest.mark.parametrize("device", [False, True], ids=["numpy", "device"])
def test_a_second_call_leaves_the_first_calls_results_unchanged(device):
    """Scratch arrays are reused from call to call; results are never one of them: a second call of
    the same shapes on other inputs leaves every array the first returned as it was."""
    p, a = problem(seed=1)
    p2, a2 = problem(seed=2)
    if device:
        (p, a), (p2, a2) = on_device(p, a), on_device(p2, a2)
    fwd = cuda_backend.forward("lstm", p, a["x"], a["h0"], a["c0"])
    grads = cuda_backend.backward("lstm", p, a["x"], a["h0"], a["c0"], fwd, a["dhs"], a["dh_n"], a["dc_n"])
    first = host(fwd), host(grads)
    fwd2 = cuda_backend.forward("lstm", p2, a2["x"], a2["h0"], a2["c0"])
    cuda_backend.backward("lstm", p2, a2["x"], a2["h0"], a2["c0"], fwd2, a2["dhs"], a2["dh_n"], a2["dc_n"])
    cuda_backend.forward("lstm", p2, a2["x"], a2["h0"], a2["c0"], training=False)
    assert not np.array_equal(host(fwd2)["hs"], first[0]["hs"])  # the second call did compute other values
    for kept, now in zip(first, (host(fwd), host(grads))):
        for field, value in kept.items():
            if value is not None:
                np.testing.assert_array_equal(now[field], value, err_msg=field)


def test_scratch_arrays_are_reused_per_thread_and_replaced_on_a_new_shape():
    first = workspace.scratch("test role", (2, 3), np.float32)
    assert workspace.scratch("test role", (2, 3), np.float32) is first
    assert workspace.scratch("test role", (3, 2), np.float32) is not first
    other = []
    thread = threading.Thread(target=lambda: other.append(workspace.scratch("test role", (3, 2), np.float32)))
    thread.start()
    thread.join()
    assert other[0] is not workspace.scratch("test role", (3, 2), np.float32)
    workspace.discard("test role")


# ----- launches and allocations per call ----------------------------------------------------------------

def test_a_second_call_of_the_same_shapes_allocates_only_the_results_it_returns(counted):
    """lstm, device inputs: the second call allocates exactly its results on the device (inference
    hs, h_n, c_n; training also cs, gates; backward dx, dh0, dc0 and the four weight gradients);
    with NumPy inputs, none (the device results are scratch, copied back). Launches at T = 2: the
    finiteness check (device inputs only), the projection, T steps, the copies of h_n and c_n;
    backward: the check, h_{t−1}'s two copies, ∂L/∂h_T, ∂L/∂c_T, T steps, dW_ih, dW_hh, two column
    sums, dx."""
    p, a = problem(seed=3)
    dp, da = on_device(p, a)
    for params, arrays, results_on_device in ((p, a, False), (dp, da, True)):
        args = (params, arrays["x"], arrays["h0"], arrays["c0"])
        calls = {
            "inference": lambda: cuda_backend.forward("lstm", *args, training=False),
            "training": lambda: cuda_backend.forward("lstm", *args),
            "backward": lambda: cuda_backend.backward("lstm", *args, fwd, arrays["dhs"], arrays["dh_n"],
                                                      arrays["dc_n"]),
        }
        fwd = cuda_backend.forward("lstm", *args)
        results = {"inference": 3, "training": 5, "backward": 7} if results_on_device else dict.fromkeys(calls, 0)
        check = 1 if results_on_device else 0
        launches = {"inference": check + 1 + T + 2, "training": check + 1 + T + 2,
                    "backward": check + 2 + 2 + T + 5}
        for mode, call in calls.items():
            call_counts(counted, call)  # the first call of these shapes may allocate scratch arrays
            assert call_counts(counted, call) == (launches[mode], results[mode]), (mode, results_on_device)


def test_the_step_kernel_is_specialized_once_per_call_not_once_per_step(monkeypatch):
    calls = []
    specialize = cuda_backend.specialized
    monkeypatch.setattr(cuda_backend, "specialized", lambda kernel, *args: calls.append(kernel) or
                        specialize(kernel, *args))
    p, a = problem("gru_classic", seed=4)
    cuda_backend.forward("gru_classic", p, a["x"], a["h0"])
    assert [k.py_func.__name__ for k in calls] == ["gru_classic_step_forward_rz_kernel",
                                                     "gru_classic_step_forward_n_kernel"]


@pytest.mark.parametrize("cell", sorted(reference.CELLS))
def test_a_layer_call_makes_no_view_per_step(cell, monkeypatch):
    """The layer step kernels take whole arrays and the scan step s: the device-array views a layer
    forward and backward make on the host (outside kernels) do not grow with T. Counted by wrapping
    the device array's indexing, paused while a kernel runs (simulated kernels index arrays too)."""
    from jit.cuda import layers
    if SIMULATOR:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray as DeviceArray
    else:
        from numba.cuda.cudadrv.devicearray import DeviceNDArray as DeviceArray
    seen = {"views": 0, "in_kernel": False}
    index = DeviceArray.__getitem__

    def counting_index(self, key):
        if not seen["in_kernel"]:
            seen["views"] += 1
        return index(self, key)
    monkeypatch.setattr(DeviceArray, "__getitem__", counting_index)
    for module in (cuda_backend, layers):
        def in_kernel(*args, _launch=module.launch):
            seen["in_kernel"] = True
            try:
                return _launch(*args)
            finally:
                seen["in_kernel"] = False
        monkeypatch.setattr(module, "launch", in_kernel)

    def views_of_a_call(steps):
        rng = np.random.default_rng(5)
        params = [reference.init_params(cell, input_size=size, hidden_size=H, dtype=np.float64, seed=k)
                  for k, size in enumerate((I, I, 2 * H, 2 * H))]
        x = rng.standard_normal((steps, B, I))
        h0 = rng.standard_normal((4, B, H))
        c0 = rng.standard_normal((4, B, H)) if cell == "lstm" else None
        x, h0, c0 = (None if a is None else cuda.to_device(a) for a in (x, h0, c0))
        lengths = [steps, 1]
        views = []
        for _ in range(2):  # the second call: compiled, scratch arrays in place
            seen["views"] = 0
            fwd = cuda_backend.layer_forward(cell, params, x, h0, c0, bidirectional=True, lengths=lengths)
            dhs = cuda.to_device(np.ones((steps, B, 2 * H)))
            cuda_backend.layer_backward(cell, params, x, h0, c0, fwd, dhs, cuda.to_device(np.zeros((4, B, H))),
                                        None if c0 is None else cuda.to_device(np.zeros((4, B, H))),
                                        bidirectional=True, lengths=lengths)
            views.append(seen["views"])
        return views[-1]

    assert views_of_a_call(2) == views_of_a_call(6)


def test_the_cooperative_limit_is_asked_of_the_driver_once_per_kernel_and_block(monkeypatch):
    monkeypatch.setattr(cuda_backend, "persistent", True)
    asked = []
    if SIMULATOR:
        from numba.cuda.simulator.kernel import FakeOverload
        limit = FakeOverload.max_cooperative_grid_blocks
        monkeypatch.setattr(FakeOverload, "max_cooperative_grid_blocks",
                            lambda self, block: asked.append(block) or limit(self, block))
    monkeypatch.setattr(COOPERATIVE_LIMITS, "_limits", {})
    monkeypatch.setattr(COOPERATIVE_LIMITS, "hits", 0)
    monkeypatch.setattr(COOPERATIVE_LIMITS, "misses", 0)
    p, a = problem("gru", seed=5)
    first = cuda_backend.forward("gru", p, a["x"], a["h0"], training=False)
    second = cuda_backend.forward("gru", p, a["x"], a["h0"], training=False)
    np.testing.assert_array_equal(second.hs, first.hs)
    assert (COOPERATIVE_LIMITS.misses, COOPERATIVE_LIMITS.hits) == (1, 1)
    if SIMULATOR:
        assert len(asked) == 1


# ----- finiteness of device inputs: found at the call's end, named --------------------------------------

def test_a_host_nan_is_named_before_any_launch(counted):
    p, a = problem(seed=6)
    a["h0"][1, 2] = np.nan
    counted["reset"]()
    with pytest.raises(ValueError, match=r"^h0: expected finite values; got NaN or inf \(1 of 6 values"):
        cuda_backend.forward("lstm", p, a["x"], a["h0"], a["c0"])
    assert COUNTS.launches == 0


@pytest.mark.parametrize("name", ["h0", "params.w_hh"])
def test_a_device_nan_is_found_at_the_calls_end_and_named(name, counted):
    """The check kernel runs with the call's kernels (no round trip before them); at the call's one
    synchronize its counts name the argument, and nothing is returned. The next call with finite
    inputs is not blamed for it (the counts were reset)."""
    p, a = problem(seed=7)
    dp, da = on_device(p, a)
    bad = a["h0"].copy() if name == "h0" else p.w_hh.copy()
    bad[0, 1] = np.inf
    bad_p, bad_a = (dp, dict(da, h0=cuda.to_device(bad))) if name == "h0" else (dp._replace(w_hh=cuda.to_device(bad)),
                                                                                  da)
    counted["reset"]()
    with pytest.raises(ValueError, match=rf"^{name}: expected finite values; got NaN or inf$"):
        cuda_backend.forward("lstm", bad_p, bad_a["x"], bad_a["h0"], bad_a["c0"], training=False)
    assert COUNTS.launches == 1 + 1 + T + 2  # the whole call ran before the counts were read
    fine = cuda_backend.forward("lstm", dp, da["x"], da["h0"], da["c0"], training=False)
    np.testing.assert_array_equal(fine.hs.copy_to_host(),
                                  cuda_backend.forward("lstm", p, a["x"], a["h0"], a["c0"], training=False).hs)


def test_a_call_that_fails_after_the_check_leaves_no_count_for_the_next(monkeypatch):
    """The check kernel counted a NaN, then the call failed before reading its counts: they are
    discarded, and the next call's inputs are judged alone."""
    p, a = problem("gru", seed=8)
    dp, da = on_device(p, a)
    bad = a["x"].copy()
    bad[0, 0, 0] = np.nan
    matmul = cuda_backend._matmul

    def failing(*args, **kwargs):
        raise RuntimeError("a failure after the check kernel")
    monkeypatch.setattr(cuda_backend, "_matmul", failing)
    with pytest.raises(RuntimeError, match="after the check"):
        cuda_backend.forward("gru", dp, cuda.to_device(bad), da["h0"])
    monkeypatch.setattr(cuda_backend, "_matmul", matmul)
    cuda_backend.forward("gru", dp, da["x"], da["h0"])


def test_the_device_check_can_be_switched_off(monkeypatch, counted):
    """check_finite = False: no check kernel, and a device NaN flows into the results; NumPy inputs
    are still checked."""
    monkeypatch.setattr(cuda_backend, "check_finite", False)
    p, a = problem("rnn_tanh", seed=9)
    dp, da = on_device(p, a)
    bad = a["h0"].copy()
    bad[0, 0] = np.nan
    launches, _ = call_counts(counted, lambda: cuda_backend.forward("rnn_tanh", dp, da["x"], da["h0"]))
    assert launches == 1 + T + 1  # the projection, T steps, the copy of h_n: no check kernel
    out = cuda_backend.forward("rnn_tanh", dp, da["x"], cuda.to_device(bad))
    assert np.isnan(out.h_n.copy_to_host()[0]).any()
    with pytest.raises(ValueError, match="^h0: expected finite"):
        cuda_backend.forward("rnn_tanh", p, a["x"], bad)


@pytest.mark.parametrize("value,expected", [("0", "False"), ("1", "True"), (None, "True")])
def test_the_environment_sets_the_device_check(value, expected):
    env = {k: v for k, v in os.environ.items() if k != "CELLBENCH_CUDA_CHECK_FINITE"}
    env["NUMBA_ENABLE_CUDASIM"] = "1"
    if value is not None:
        env["CELLBENCH_CUDA_CHECK_FINITE"] = value
    out = subprocess.run([sys.executable, "-c", "import jit.cuda.backend as b; print(b.check_finite)"], cwd=REPO,
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected
