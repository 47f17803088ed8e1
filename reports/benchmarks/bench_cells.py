"""The benchmark matrix: backend × cell × config × mode × dtype, one pytest-benchmark test per case.

Each case first calls the backend once, timed apart as ``first_call_s`` (for jit backends
that includes compiling, or loading Numba's on-disk cache), checks that output against
the float64 reference on the same inputs, pauses (SETTLE_S) and calls once more untimed,
then lets pytest-benchmark time the steady state. Everything a report needs (shapes,
FLOPs, bytes, errors) goes into extra_info.

Inputs are drawn in float64 and rounded through float32 once, so the float32 and float64
cases see exactly the same numbers and share one float64 reference result.

A backend that declares what it cannot do (``backward = None``: no training; ``dtypes``) has
those cases skipped with the reason. A framework adapter whose framework has a call of its own is
timed through that call (FRAMEWORK_CALLS): onnxruntime's session.run, as torch.nn stands for torch.
"""
import functools
import time
import zlib

import numpy as np
import pytest

import reference
from reports.matrix import bytes_moved, flops, itemsize
from reports.results import SCHEMA  # reports refuse a JSON whose benchmarks lack it


#: Pause before a case's timed calls, so the previous case's idle threads have stopped: after a
#: threaded GEMM (the reference's) OpenBLAS's workers spin ~0.1 s, torch's OpenMP workers
#: 8–10 ms, and a case timed meanwhile shared the 2-core machine with them (sample run
#: 20261127-120757: jit.cpu, timed right after the reference, lstm M inference median 19.0 ms
#: against its best of 14.8; rnn_tanh L1 inference 25.1 against 10.9). One untimed call
#: follows the pause: the first after it starts on a cold core (see reports.cpu_targets.BURST_CALLS).
SETTLE_S = 0.15


@functools.lru_cache(maxsize=4)
def case_inputs(cell, config):
    """(params, x, h0, c0, dhs) in float64, every value exactly representable in float32."""
    # crc32, not hash(): str hashes change between processes, and the inputs must not
    rng = np.random.default_rng(zlib.crc32(f"{cell}-{config.T}-{config.B}-{config.I}-{config.H}".encode()))

    def f32_exact(a):
        return a.astype(np.float32).astype(np.float64)

    params = reference.Params(*(f32_exact(a) for a in reference.init_params(
        cell, config.I, config.H, dtype=np.float64, seed=int(rng.integers(2**31)))))
    x = f32_exact(rng.standard_normal((config.T, config.B, config.I)))
    h0 = f32_exact(0.1 * rng.standard_normal((config.B, config.H)))
    c0 = f32_exact(0.1 * rng.standard_normal((config.B, config.H))) if cell == "lstm" else None
    dhs = f32_exact(rng.standard_normal((config.T, config.B, config.H)))
    return params, x, h0, c0, dhs


def as_dtype(inputs, dtype):
    params, x, h0, c0, dhs = inputs
    cast = (lambda a: None if a is None else np.ascontiguousarray(a, dtype=dtype))
    return reference.Params(*(cast(a) for a in params)), cast(x), cast(h0), cast(c0), cast(dhs)


def make_call(backend, cell, mode, inputs):
    """The function timed: forward(training=False), or forward(training=True) + backward."""
    params, x, h0, c0, dhs = inputs
    dh_n = np.zeros_like(h0)

    def inference():
        return (backend.forward(cell, params, x, h0, c0, training=False),)

    def training():
        fwd = backend.forward(cell, params, x, h0, c0, training=True)
        return fwd, backend.backward(cell, params, x, h0, c0, fwd, dhs, dh_n)

    return inference if mode == "inference" else training


def compared_arrays(mode, results):  # the peers' prepare() returns the same keys
    """The outputs checked against the reference: hs and h_n, and in training every gradient."""
    fwd = results[0]
    arrays = {"hs": fwd.hs, "h_n": fwd.h_n}
    if mode == "training":
        grads = results[1]
        arrays.update({k: getattr(grads, k) for k in ("dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh")})
    return arrays


@functools.lru_cache(maxsize=2)
def reference_result(cell, config, mode):
    inputs = case_inputs(cell, config)
    return compared_arrays(mode, make_call(reference.backend, cell, mode, inputs)())


def errors_against_reference(case, got):
    """Max and mean absolute error over all compared outputs, and the max error relative to max|ref|."""
    return error_summary(reference_result(case.cell, case.config, case.mode), got)


def error_summary(truth: dict, got: dict) -> dict:
    """Max and mean absolute error of ``got`` against ``truth`` over the keys of truth, and the max
    error relative to max|truth| (bench_layers' errors too)."""
    max_abs, total, count, max_rel = 0.0, 0.0, 0, 0.0
    for key, ref in truth.items():
        diff = np.abs(np.asarray(got[key], dtype=np.float64) - ref)
        if diff.size == 0:
            continue
        max_abs = max(max_abs, float(diff.max()))
        total += float(diff.sum())
        count += diff.size
        scale = float(np.abs(ref).max())
        if scale > 0:
            max_rel = max(max_rel, float(diff.max()) / scale)
    return {"max_abs_error": max_abs, "mean_abs_error": total / max(count, 1), "max_rel_error": max_rel}


def unsupported(backend, case):
    """Why the backend declares it cannot run this case, or None: training without a backward
    (``backward = None``), a dtype outside its ``dtypes``."""
    if case.mode == "training" and getattr(backend, "backward", True) is None:
        return f"{case.backend} is forward only (backward = None): no training case"
    declared = getattr(backend, "dtypes", None)
    if declared is not None and np.dtype(case.dtype) not in {np.dtype(d) for d in declared}:
        return f"{case.backend} declares dtypes {sorted(str(np.dtype(d)) for d in declared)}: no {case.dtype} case"
    return None


def test_cell(benchmark, backends, case):
    backend = backends[case.backend]
    reason = unsupported(backend, case)
    if reason:
        pytest.skip(reason)
    inputs = as_dtype(case_inputs(case.cell, case.config), case.dtype)
    framework_call = FRAMEWORK_CALLS.get(str(getattr(backend, "name", "")))
    if framework_call is not None:  # a framework adapter: time the framework's own call
        call, to_numpy = framework_call(case.cell, case.mode, inputs)
    elif hasattr(backend, "prepare"):  # a timing peer such as torch.nn (reports.torch_peer)
        call, to_numpy = backend.prepare(case.cell, case.mode, inputs)
    else:
        call = make_call(backend, case.cell, case.mode, inputs)
        to_numpy = functools.partial(compared_arrays, case.mode)
    measure(benchmark, case, inputs, call, to_numpy)


def measure(benchmark, case, inputs, call, to_numpy):
    """Time one case's call: the first call apart, its errors against the reference, then the steady state."""
    cfg = case.config
    start = time.perf_counter()
    first = call()
    first_call_s = time.perf_counter() - start

    benchmark.group = f"{case.cell}-{cfg.sweep and 'sweep' + cfg.sweep or cfg.name}-{case.mode}-{case.dtype}"
    benchmark.extra_info.update({
        "schema": SCHEMA,
        "backend": case.backend,
        "cell": case.cell,
        "config": cfg.name,
        "sweep": cfg.sweep,
        "mode": case.mode,
        "dtype": case.dtype,
        "T": cfg.T, "B": cfg.B, "I": cfg.I, "H": cfg.H,
        "shapes": {"x": [cfg.T, cfg.B, cfg.I], "h0": [cfg.B, cfg.H],
                   "w_ih": list(inputs[0].w_ih.shape), "w_hh": list(inputs[0].w_hh.shape)},
        "flops": flops(case.cell, cfg.T, cfg.B, cfg.I, cfg.H, case.mode),
        "bytes": bytes_moved(case.cell, cfg.T, cfg.B, cfg.I, cfg.H, case.mode, itemsize(case.dtype)),
        "first_call_s": first_call_s,
        **errors_against_reference(case, to_numpy(first)),
    })
    time.sleep(SETTLE_S)
    call()
    benchmark(call)


# ----- framework adapters, timed through their framework's own call ---------------------------------------

def onnxruntime_prepare(cell, mode, inputs):
    """A no-argument callable running session.run once, and its result as the compared NumPy arrays.

    The model is one ONNX node whose weights are constants (initializers), as a deployed model has
    them, so onnxruntime prepacks them when the session is made; the session and the feeds are made
    here, outside the timed call. onnxruntime's default thread count (one per physical core), as
    torch.nn runs on every core. The conformance suite checks adapters.onnxruntime, which feeds the
    weights as inputs (one session per shape); the errors recorded here are this path's own.
    """
    from adapters import onnxruntime as adapter

    if mode != "inference":
        raise ValueError(f"mode: onnxruntime is an inference peer (no gradients); got {mode!r}")
    params, x, h0, c0, _ = inputs
    I, H = x.shape[2], h0.shape[1]
    session = adapter.make_session(adapter.cell_model(cell, I, H, adapter.to_onnx(cell, params)), threads=0)
    feeds = {"X": np.ascontiguousarray(x), "initial_h": h0[None]}
    if c0 is not None:
        feeds["initial_c"] = c0[None]

    def inference():
        return session.run(None, feeds)

    def to_numpy(result):
        return {"hs": result[0][:, 0], "h_n": result[1][0]}  # Y (T, 1, B, H), Y_h (1, B, H)

    return inference, to_numpy


#: Framework adapters (by backend name) timed through the framework's own call rather than the
#: contract's forward, whose per-call conversion of the weights is the adapter's cost, not the framework's.
FRAMEWORK_CALLS = {"onnxruntime": onnxruntime_prepare}
