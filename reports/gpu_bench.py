"""The GPU benchmark: jit.cuda against torch's cuDNN nn.RNN / nn.LSTM / nn.GRU, on device arrays.

Two jobs, one per entry point:

    pytest reports/gpu_bench.py --benchmark-json OUT.json     measure (reports/gpu_check.sh runs it)
    python -m reports.gpu_bench summarize OUT.json --out DIR   Markdown report + short summary table

Backends measured in one process, on the same weights and inputs (fp32, time-major):
``jit.cuda`` (numba device arrays viewing the same torch tensors: no copies in the timed call),
``jit.cuda.persistent`` (the same with jit.cuda.backend.persistent: each time loop one cooperative
launch), ``torch.cudnn`` (TF32 off: the parity row TARGET_RATIO refers to) and ``torch.cudnn.tf32``
(torch's default, cuDNN allowed to use TF32). Modes: ``inference`` (forward, training=False /
torch.no_grad) and ``training`` (forward + backward). Each timed call ends with a synchronize
(jit.cuda's forward and backward synchronize themselves), so pytest-benchmark's wall-clock
rounds measure completed device work.

Configs (env CELLBENCH_GPU_CONFIGS): ``deepbench`` (default) is T = 25, I = H ∈ {512, 1024, 2048},
B ∈ {16, 32, 64}; ``tiny`` (T=3, B=2, I=H=5) only exercises the machinery, e.g. under the CUDA
simulator, whose timings are never shown. CELLBENCH_GPU_CELLS restricts the cells (comma list).

The JSON is pytest-benchmark's, with reports.results' extra_info fields (schema, backend, cell,
config, mode, dtype, T, B, I, H, flops, ...) so that ``cellbench report`` can render it too; it
adds ``device`` and ``max_abs_diff_vs_cudnn`` (jit.cuda's hs, and in training dW_hh, against
cuDNN fp32 on the first call).
"""
import argparse
import contextlib
import cProfile
import functools
import io
import os
import pstats
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import reference
from reports.matrix import flops

CELLS = ("lstm", "gru", "rnn_tanh")
MODES = ("inference", "training")
BACKENDS = ("jit.cuda", "jit.cuda.persistent", "torch.cudnn", "torch.cudnn.tf32")
#: The issue's targets: jit.cuda's time at most this multiple of cuDNN fp32 (TF32 off).
TARGET_RATIO = {"inference": 1.5, "training": 2.0}
SIMULATOR_DEVICE = "CUDA simulator"


def configs(kind=None):
    """[(name, T, B, I, H)] of the chosen kind (env CELLBENCH_GPU_CONFIGS, default deepbench)."""
    kind = kind or os.environ.get("CELLBENCH_GPU_CONFIGS", "deepbench")
    if kind == "tiny":
        return [("tiny", 3, 2, 5, 5)]
    if kind != "deepbench":
        raise ValueError(f"CELLBENCH_GPU_CONFIGS: expected deepbench or tiny; got {kind!r}")
    return [(f"DB-H{H}-B{B}", 25, B, H, H) for H in (512, 1024, 2048) for B in (16, 32, 64)]


def chosen_cells():
    wanted = os.environ.get("CELLBENCH_GPU_CELLS")
    if not wanted:
        return CELLS
    cells = tuple(c.strip() for c in wanted.split(","))
    unknown = [c for c in cells if c not in CELLS]
    if unknown:
        raise ValueError(f"CELLBENCH_GPU_CELLS: expected some of {', '.join(CELLS)}; got {', '.join(unknown)}")
    return cells


# ----- measuring (pytest-benchmark) ----------------------------------------------------------

def _torch_cuda():
    """torch, if it has a GPU that jit.cuda shares; None under the simulator (its arrays are NumPy's:
    no views of torch's device tensors, and a simulated run shows no timings anyway)."""
    from jit.cuda.launch import SIMULATOR
    if SIMULATOR:
        return None
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def _device_name():
    from jit.cuda.launch import SIMULATOR
    if SIMULATOR:
        return SIMULATOR_DEVICE
    from numba import cuda
    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


TORCH_MODULES = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN"}


def _torch_rnn(torch, cell, params, I, H):
    """The torch module of this cell holding exactly params (PyTorch's layout is the contract's)."""
    kwargs = {"nonlinearity": "tanh"} if cell == "rnn_tanh" else {}
    rnn = getattr(torch.nn, TORCH_MODULES[cell])(I, H, **kwargs).cuda()
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            field = {"weight_ih_l0": "w_ih", "weight_hh_l0": "w_hh", "bias_ih_l0": "b_ih", "bias_hh_l0": "b_hh"}[name]
            getattr(rnn, name).copy_(torch.from_numpy(getattr(params, field)))
    return rnn


@contextlib.contextmanager
def time_loops(backend, persistent):
    """jit.cuda's backend with persistent time loops on or off inside the block, as it was after:
    the benchmark's calls switch it per backend and must not leave a caller's setting changed."""
    before = backend.persistent
    backend.persistent = persistent
    try:
        yield
    finally:
        backend.persistent = before


class Case:
    """One config × cell: inputs on the device, and the calls to time."""

    def __init__(self, cell, T, B, I, H):
        rng = np.random.default_rng(T * 1_000_003 + B * 1009 + H)
        self.cell, self.shape = cell, (T, B, I, H)
        self.params = reference.init_params(cell, I, H, dtype=np.float32, seed=int(rng.integers(2**31)))
        self.x = rng.standard_normal((T, B, I), dtype=np.float32)
        self.h0 = np.zeros((B, H), np.float32)
        self.c0 = np.zeros((B, H), np.float32) if cell == "lstm" else None
        self.dhs = rng.standard_normal((T, B, H), dtype=np.float32)
        self.torch = _torch_cuda()

    def jit_cuda_call(self, mode, persistent=False):
        from numba import cuda

        import jit.cuda
        backend = jit.cuda.backend
        if self.torch is not None:  # numba views of torch's tensors: the very memory cuDNN reads
            t = self.torch
            to_dev = (lambda a: None if a is None else cuda.as_cuda_array(t.from_numpy(a).cuda()))
        else:
            to_dev = (lambda a: None if a is None else cuda.to_device(a))
        p = reference.Params(*(to_dev(w) for w in self.params))
        x, h0, c0, dhs, dh_n = (to_dev(a) for a in (self.x, self.h0, self.c0, self.dhs, np.zeros_like(self.h0)))
        cell = self.cell

        def inference():
            with time_loops(backend, persistent):
                return backend.forward(cell, p, x, h0, c0, training=False).hs, None

        def training():
            with time_loops(backend, persistent):
                fwd = backend.forward(cell, p, x, h0, c0, training=True)
                return fwd.hs, backend.backward(cell, p, x, h0, c0, fwd, dhs, dh_n).dw_hh

        return inference if mode == "inference" else training

    def torch_call(self, mode, tf32):
        t = self.torch
        T, B, I, H = self.shape
        t.backends.cuda.matmul.allow_tf32 = tf32
        t.backends.cudnn.allow_tf32 = tf32
        rnn = _torch_rnn(t, self.cell, self.params, I, H)
        x = t.from_numpy(self.x).cuda()
        h0 = t.from_numpy(self.h0).cuda()[None]
        state = (h0, t.from_numpy(self.c0).cuda()[None]) if self.cell == "lstm" else h0
        dhs = t.from_numpy(self.dhs).cuda()

        def inference():
            with t.no_grad():
                hs, _ = rnn(x, state)
            t.cuda.synchronize()
            return hs, None

        def training():
            for w in rnn.parameters():
                w.grad = None
            xg = x.detach().requires_grad_(True)
            hs, _ = rnn(xg, state)
            hs.backward(dhs)
            t.cuda.synchronize()
            return hs.detach(), rnn.weight_hh_l0.grad

        return inference if mode == "inference" else training


def _host(a):
    if a is None:
        return None
    if hasattr(a, "copy_to_host"):
        return a.copy_to_host()
    return a.detach().cpu().numpy()


@functools.lru_cache(maxsize=1)  # cases run backend by backend on one cell × config: build it once
def case_for(cell, T, B, I, H):
    return Case(cell, T, B, I, H)


def _cases():
    return [(backend, cell, cfg, mode) for cfg in configs() for cell in chosen_cells()
            for mode in MODES for backend in BACKENDS]


@pytest.mark.parametrize("backend,cell,cfg,mode", _cases(),
                         ids=[f"{b}-{c}-{cfg[0]}-{m}" for b, c, cfg, m in _cases()])
def test_gpu(benchmark, backend, cell, cfg, mode):
    from reports.results import SCHEMA

    name, T, B, I, H = cfg
    case = case_for(cell, T, B, I, H)
    if backend.startswith("torch") and case.torch is None:
        pytest.skip("torch with CUDA is not available here: no cuDNN rows")
    if backend.startswith("jit.cuda"):
        call = case.jit_cuda_call(mode, persistent=backend == "jit.cuda.persistent")
    else:
        call = case.torch_call(mode, tf32=backend.endswith("tf32"))
    first = call()  # compiles jit.cuda's kernels on the first case, warms cuDNN's plans
    diff = float("nan")
    if backend.startswith("jit.cuda") and case.torch is not None:
        want = case.torch_call(mode, tf32=False)()
        diff = max(float(np.abs(_host(g) - _host(w)).max()) for g, w in zip(first, want) if g is not None)
    benchmark.group = f"{cell}-{name}-{mode}"
    benchmark.extra_info.update({
        "schema": SCHEMA, "backend": backend, "cell": cell, "config": name, "sweep": "", "mode": mode,
        "dtype": "float32", "T": T, "B": B, "I": I, "H": H, "flops": flops(cell, T, B, I, H, mode),
        "device": _device_name(), "max_abs_diff_vs_cudnn": diff,
    })
    benchmark(call)


# ----- where a jit.cuda call's time goes ------------------------------------------------------

def profile_calls(out_dir, config_kind=None, cell="lstm", calls=10):
    """Write OUT/profile.txt: for one cell at the first config, per mode, the kernel launches of one
    jit.cuda call and (on a GPU) its wall time, cuDNN's, and the Python functions that take the host's
    time (cProfile, by own time), per-step and with each time loop as one persistent launch. It says
    whether a call is bound by launches on the host, and what one launch instead of T buys. Returns
    the summary lines."""
    import jit.cuda.backend as cuda_backend

    name, T, B, I, H = configs(config_kind)[0]
    case = Case(cell, T, B, I, H)
    summary = [f"{cell} {name} (T={T}, B={B}, I={I}, H={H}) on {_device_name()}, {calls} calls per figure"]
    details = []
    with counted_launches(cuda_backend) as launches:
        for variant, persistent in (("per-step", False), ("persistent", True)):
            for mode in MODES:
                line, profile = _profile_call(case, mode, persistent, f"{variant} {mode}", launches, calls)
                summary.append(line)
                details += profile
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile.txt").write_text("\n".join(summary + [""] + details) + "\n")
    return "\n".join(summary)


class LaunchCount:
    """Kernel launches counted since the last reset."""

    def __init__(self):
        self.count = 0


@contextlib.contextmanager
def counted_launches(cuda_backend):
    """Count every kernel launch of jit.cuda.backend inside the block (all of them go through its launch)."""
    counter = LaunchCount()
    launch = cuda_backend.launch

    def counted_launch(*args):
        counter.count += 1
        return launch(*args)

    cuda_backend.launch = counted_launch
    try:
        yield counter
    finally:
        cuda_backend.launch = launch


def _seconds_per_call(call, calls):
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls


def _profile_call(case, mode, persistent, label, launches, calls):
    """(summary line, cProfile lines) of one jit.cuda call: launches per call; on a GPU its time beside
    cuDNN fp32's, and the 20 Python functions with the most own time."""
    from jit.cuda.launch import SIMULATOR

    call = case.jit_cuda_call(mode, persistent)
    try:
        call()  # compiles, and warms the allocator
    except Exception as exc:  # e.g. a cooperative launch this GPU refuses: say so, go on
        return f"{label}: failed: {type(exc).__name__}: {exc}", []
    launches.count = 0
    wall = _seconds_per_call(call, calls)
    per_call = launches.count / calls
    if SIMULATOR:  # simulated timings are never shown
        return f"{label}: {per_call:.0f} kernel launches per call (CUDA simulator: no timings)", []
    line = f"{label}: {per_call:.0f} kernel launches per call, {wall * 1e3:.2f} ms per call " \
           f"({wall / per_call * 1e6:.0f} µs per launch, all host and device time included)"
    if case.torch is not None:
        peer = case.torch_call(mode, tf32=False)
        peer()
        line += f"; cuDNN fp32 {_seconds_per_call(peer, calls) * 1e3:.2f} ms"
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        call()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(20)
    return line, [f"== {label}: cProfile of {calls} calls, 20 functions with the most own time", text.getvalue()]


# ----- summarizing ---------------------------------------------------------------------------

def load_results(path):
    """One row per benchmark: backend, cell, config, mode, T, B, I, H, flops, device, median_s."""
    import json

    import pandas as pd
    data = json.loads(Path(path).read_text())
    rows = pd.json_normalize(data.get("benchmarks", []))
    if rows.empty:
        raise ValueError(f"{path}: no benchmarks in the file")
    rows.columns = [c.removeprefix("extra_info.") for c in rows.columns]
    return rows.rename(columns={"stats.median": "median_s"})


#: (backend, column prefix) of each jit.cuda variant in the comparison.
JIT_VARIANTS = (("jit.cuda", ""), ("jit.cuda.persistent", "persistent "))


def comparison(rows):
    """Per cell × config × mode: each backend's median (ms), jit.cuda / cuDNN fp32, the target, met?"""
    import pandas as pd
    table = rows.pivot_table(index=["cell", "config", "mode"], columns="backend", values="median_s",
                             aggfunc="first")
    out = pd.DataFrame(index=table.index)
    for backend in BACKENDS:
        if backend in table:
            out[f"{backend} ms"] = table[backend] * 1e3
    flop = rows.drop_duplicates(["cell", "config", "mode"]).set_index(["cell", "config", "mode"])["flops"]
    if "jit.cuda" in table:
        out["jit.cuda GFLOP/s"] = flop / table["jit.cuda"] / 1e9
    if "torch.cudnn" in table:
        out["target"] = [TARGET_RATIO[m] for m in out.index.get_level_values("mode")]
    for variant, prefix in JIT_VARIANTS:
        if variant in table and "torch.cudnn" in table:
            ratio = table[variant] / table["torch.cudnn"]
            out[f"{prefix}ratio vs cuDNN fp32"] = ratio
            # empty where the variant was not measured
            out[f"{prefix}met"] = ["" if r != r else "yes" if r <= t else "no" for r, t in zip(ratio, out["target"])]
    if "max_abs_diff_vs_cudnn" in rows:
        for variant, prefix in JIT_VARIANTS:
            jit_rows = rows[rows["backend"] == variant].set_index(["cell", "config", "mode"])
            if not jit_rows.empty:
                out[f"{prefix}max |jit − cuDNN|"] = jit_rows["max_abs_diff_vs_cudnn"]
    return out.reset_index()


def short_summary(table, prefix=""):
    """Per cell × mode: configs meeting the target, the worst and the geometric-mean ratio to cuDNN
    fp32, of jit.cuda (prefix "") or of its persistent variant (prefix "persistent ")."""
    import pandas as pd
    column = f"{prefix}ratio vs cuDNN fp32"
    if column not in table:
        return None
    records = []
    for (cell, mode), group in table.groupby(["cell", "mode"], sort=False):
        ratio = group[column].dropna()
        if ratio.empty:
            continue
        target = TARGET_RATIO[mode]
        records.append({"cell": cell, "mode": mode, "target": target,
                        "met": f"{int((ratio <= target).sum())}/{len(ratio)}",
                        "worst ratio": ratio.max(), "geomean ratio": float(np.exp(np.log(ratio).mean()))})
    return pd.DataFrame(records)


def junit_counts(path):
    """(passed, failed, skipped) of a pytest junit XML, or None when there is none."""
    import xml.etree.ElementTree as ET
    if not path or not Path(path).exists():
        return None
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    tests = sum(int(s.get("tests", 0)) for s in suites)
    failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    return tests - failed - skipped, failed, skipped


def write_report(results_path, out_dir, properties_junit=None):
    """Write OUT/gpu_report.md and return the short summary text that gpu_check.sh prints last."""
    rows = load_results(results_path)
    devices = sorted(set(rows.get("device", ["?"])))
    simulated = SIMULATOR_DEVICE in devices
    table = comparison(rows)
    lines = [f"# jit.cuda vs cuDNN on {', '.join(devices)}", ""]
    counts = junit_counts(properties_junit)
    if counts:
        outcome = f"{counts[0]} passed, {counts[1]} failed, {counts[2]} skipped"
    elif properties_junit:
        outcome = f"no result in {properties_junit} (timed out or crashed: see properties.log)"
    else:
        outcome = "not run"
    props = f"property suite against jit.cuda on this device: {outcome}"
    lines += [props, ""]
    if simulated:
        # Simulator timings measure Python threads, not a GPU: never shown, never quoted.
        lines += ["**CUDA simulator run: this checks the machinery only; timings are not shown.**", ""]
        hidden = ("ratio", "persistent ratio", "jit.cuda G", "target", "met", "persistent met")
        table = table[[c for c in table.columns if not (c.endswith(" ms") or c.startswith(hidden))]]
        summary = persistent = None
    else:
        summary, persistent = short_summary(table), short_summary(table, "persistent ")
        lines += ["fp32, T = 25, I = H; times are pytest-benchmark medians of whole calls ending in a "
                  "synchronize; targets: forward ≤ 1.5×, forward + backward ≤ 2× cuDNN fp32 (TF32 off).", ""]
    lines += [table.to_markdown(index=False, floatfmt=".3g"), ""]
    if summary is not None:
        lines += ["## Summary", "", summary.to_markdown(index=False, floatfmt=".3g"), ""]
    if persistent is not None:
        lines += ["## Summary with each time loop as one cooperative launch (jit.cuda.persistent)", "",
                  persistent.to_markdown(index=False, floatfmt=".3g"), ""]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_report.md").write_text("\n".join(lines))
    text = [f"device: {', '.join(devices)}", props]
    text.append("CUDA simulator: timings not shown" if simulated else
                (summary.to_markdown(index=False, floatfmt=".3g") if summary is not None else "no cuDNN rows"))
    if persistent is not None:
        text += ["jit.cuda.persistent:", persistent.to_markdown(index=False, floatfmt=".3g")]
    return "\n".join(text)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m reports.gpu_bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summarize", help="write OUT/gpu_report.md from a benchmark JSON and print the summary")
    s.add_argument("results", help="pytest-benchmark JSON written by `pytest reports/gpu_bench.py`")
    s.add_argument("--out", required=True, help="folder for gpu_report.md")
    s.add_argument("--properties-junit", default=None, help="junit XML of the property suite run")
    pr = sub.add_parser("profile", help="write OUT/profile.txt: launches, time per call and cProfile of jit.cuda calls")
    pr.add_argument("--out", required=True, help="folder for profile.txt")
    pr.add_argument("--configs", default=None, choices=["deepbench", "tiny"],
                    help="config kind (default: CELLBENCH_GPU_CONFIGS or deepbench); its first config is used")
    args = parser.parse_args(argv)
    if args.command == "profile":
        print(profile_calls(args.out, args.configs))
        return 0
    try:
        print(write_report(args.results, args.out, args.properties_junit))
    except (OSError, ValueError, KeyError) as exc:
        print(f"gpu_bench: {args.results}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
