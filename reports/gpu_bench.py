"""The GPU benchmark: jit.cuda against torch's cuDNN nn.RNN / nn.LSTM / nn.GRU, on device arrays.

Two jobs, one per entry point:

    pytest reports/gpu_bench.py --benchmark-json OUT.json     measure (reports/gpu_check.sh runs it)
    python -m reports.gpu_bench summarize OUT.json --out DIR [--probe gpu_probe.json]
                                                               OUT/gpu_report.md: issue 23's targets row
                                                               by row, the comparison, the probe's tables

Backends measured in one process, on the same weights and inputs (fp32, time-major):
``jit.cuda`` (numba device arrays viewing the same torch tensors: no copies in the timed call),
``jit.cuda.persistent`` (the same with jit.cuda.backend.persistent: each time loop one cooperative
launch), ``jit.cuda.split`` (persistent, the split-K time loops of jit.cuda.backend.split_k: rnn,
lstm and gru; jit.cuda.split), ``torch.cudnn`` (TF32 off: the parity row TARGET_RATIO refers to) and
``torch.cudnn.tf32`` (torch's default, cuDNN allowed to use TF32). Modes: ``inference`` (forward,
training=False / torch.no_grad) and ``training`` (forward + backward). Each timed call ends with a
synchronize (jit.cuda's forward and backward synchronize themselves), so pytest-benchmark's
wall-clock rounds measure completed device work.

Configs (env CELLBENCH_GPU_CONFIGS): ``deepbench`` (default) is T = 25, I = H ∈ {512, 1024, 2048},
B ∈ {16, 32, 64} (the speed targets), then B ∈ {4, 8} (the persistent path's target); ``tiny`` (T=3,
B=2, I=H=5) only exercises the machinery, e.g. under the CUDA simulator, whose timings are never
shown. CELLBENCH_GPU_CELLS restricts the cells (comma list). CELLBENCH_GPU_DEADLINE_S: seconds after
which the remaining cases skip themselves, so that pytest still ends and writes the JSON of what it
measured (gpu_check.sh sets it below its timeout; a killed pytest-benchmark writes nothing).

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
from typing import NamedTuple

import numpy as np
import pytest

import reference
from reports.matrix import flops

CELLS = ("lstm", "gru", "rnn_tanh")
MODES = ("inference", "training")


class JitPath(NamedTuple):
    """One of jit.cuda's time-loop paths, as the benchmark, the comparison and the probe know it."""
    backend: str  # the benchmark's backend name
    prefix: str  # its columns' prefix in comparison()
    persistent: bool  # jit.cuda.backend.persistent
    split_k: bool  # jit.cuda.backend.split_k


#: jit.cuda's paths by the name the targets and reports.gpu_probe give them; everything below that
#: lists the jit.cuda variants is derived from this one table.
JIT_PATHS = {"per-step": JitPath("jit.cuda", "", False, False),
             "persistent": JitPath("jit.cuda.persistent", "persistent ", True, False),
             "split-k": JitPath("jit.cuda.split", "split ", True, True)}
BACKENDS = (*(path.backend for path in JIT_PATHS.values()), "torch.cudnn", "torch.cudnn.tf32")
#: backend name -> (jit.cuda.backend.persistent, jit.cuda.backend.split_k) of each jit.cuda variant.
JIT_TIME_LOOPS = {path.backend: (path.persistent, path.split_k) for path in JIT_PATHS.values()}
#: (backend, column prefix) of each jit.cuda variant in the comparison.
JIT_VARIANTS = tuple((path.backend, path.prefix) for path in JIT_PATHS.values())
#: The paths judged at B ≤ 8.
PERSISTENT_PATHS = tuple(name for name, path in JIT_PATHS.items() if path.persistent)
#: The issue's targets: jit.cuda's time at most this multiple of cuDNN fp32 (TF32 off) at these batches,
TARGET_RATIO = {"inference": 1.5, "training": 2.0}
SPEED_TARGET_BATCHES = (16, 32, 64)
#: the persistent path faster than cuDNN fp32 at these (B ≤ 8),
SMALL_BATCHES = (4, 8)
#: and a host overhead per call (gpu_probe's host − busy time) under this, at T = 25.
HOST_OVERHEAD_LIMIT_S = 100e-6
DEEPBENCH_H = (512, 1024, 2048)
SIMULATOR_DEVICE = "CUDA simulator"
#: When the module was imported (pytest's collection): CELLBENCH_GPU_DEADLINE_S counts from here.
_STARTED = time.monotonic()


def configs(kind=None):
    """[(name, T, B, I, H)] of the chosen kind (env CELLBENCH_GPU_CONFIGS, default deepbench)."""
    kind = kind or os.environ.get("CELLBENCH_GPU_CONFIGS", "deepbench")
    if kind == "tiny":
        return [("tiny", 3, 2, 5, 5)]
    if kind != "deepbench":
        raise ValueError(f"CELLBENCH_GPU_CONFIGS: expected deepbench or tiny; got {kind!r}")
    # the speed targets' configs first: a run stopped by its deadline loses the small batches first
    return [(f"DB-H{H}-B{B}", 25, B, H, H) for batches in (SPEED_TARGET_BATCHES, SMALL_BATCHES)
            for H in DEEPBENCH_H for B in batches]


def deadline_s():
    """CELLBENCH_GPU_DEADLINE_S as seconds, or None when unset."""
    text = os.environ.get("CELLBENCH_GPU_DEADLINE_S", "")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"CELLBENCH_GPU_DEADLINE_S: expected a positive number of seconds; got {text!r}")
    return value


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


def device_name():
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
    # made on the GPU: initializing 4·2·2048² weights on the CPU first took longer than timing them
    rnn = getattr(torch.nn, TORCH_MODULES[cell])(I, H, device="cuda", **kwargs)
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            field = {"weight_ih_l0": "w_ih", "weight_hh_l0": "w_hh", "bias_ih_l0": "b_ih", "bias_hh_l0": "b_hh"}[name]
            getattr(rnn, name).copy_(torch.from_numpy(getattr(params, field)))
    return rnn


@contextlib.contextmanager
def time_loops(backend, persistent, split_k=False):
    """jit.cuda's backend with persistent time loops (split-K or not) on or off inside the
    block, as it was after: the benchmark's calls switch them per backend and must not leave a
    caller's settings changed."""
    before = backend.persistent, backend.split_k
    backend.persistent, backend.split_k = persistent, split_k
    try:
        yield
    finally:
        backend.persistent, backend.split_k = before


class Case:
    """One config × cell: inputs on the device, and the calls to time. With ``peer=False`` no torch
    (reports.gpu_probe): jit.cuda's arrays are numba's own then, not views of torch's tensors."""

    def __init__(self, cell, T, B, I, H, peer=True):
        rng = np.random.default_rng(T * 1_000_003 + B * 1009 + H)
        self.cell, self.shape = cell, (T, B, I, H)
        self.params = reference.init_params(cell, I, H, dtype=np.float32, seed=int(rng.integers(2**31)))
        self.x = rng.standard_normal((T, B, I), dtype=np.float32)
        self.h0 = np.zeros((B, H), np.float32)
        self.c0 = np.zeros((B, H), np.float32) if cell == "lstm" else None
        self.dhs = rng.standard_normal((T, B, H), dtype=np.float32)
        self.torch = _torch_cuda() if peer else None
        self._rnn = None

    def jit_cuda_stages(self, mode, persistent=False, split_k=False):
        """The jit.cuda calls of one timed call, in order: inference (forward) or training (forward,
        then backward). Each stage takes what the one before returned (None for the first) and returns
        (hs, dW_hh or None); reports.gpu_probe times the stages apart, each ending in its own wait."""
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

        def inference(_=None):
            with time_loops(backend, persistent, split_k):
                return backend.forward(cell, p, x, h0, c0, training=False).hs, None

        def forward(_=None):
            with time_loops(backend, persistent, split_k):
                return backend.forward(cell, p, x, h0, c0, training=True), None

        def backward(previous):
            fwd = previous[0]
            with time_loops(backend, persistent, split_k):
                return fwd.hs, backend.backward(cell, p, x, h0, c0, fwd, dhs, dh_n).dw_hh

        return (inference,) if mode == "inference" else (forward, backward)

    def jit_cuda_call(self, mode, persistent=False, split_k=False):
        """One timed call: every stage of jit_cuda_stages in turn; returns (hs, dW_hh or None)."""
        stages = self.jit_cuda_stages(mode, persistent, split_k)

        def call():
            result = None
            for stage in stages:
                result = stage(result)
            return result

        return call

    def torch_module(self):
        """The case's torch module, made once: the two torch backends and the diff share it."""
        if self._rnn is None:
            T, B, I, H = self.shape
            self._rnn = _torch_rnn(self.torch, self.cell, self.params, I, H)
        return self._rnn

    def torch_call(self, mode, tf32):
        t = self.torch
        t.backends.cuda.matmul.allow_tf32 = tf32
        t.backends.cudnn.allow_tf32 = tf32
        rnn = self.torch_module()
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
    deadline = deadline_s()
    if deadline is not None and time.monotonic() - _STARTED > deadline:
        pytest.skip(f"CELLBENCH_GPU_DEADLINE_S={deadline:g} passed: not measured")
    case = case_for(cell, T, B, I, H)
    if backend.startswith("torch") and case.torch is None:
        pytest.skip("torch with CUDA is not available here: no cuDNN rows")
    if backend.startswith("jit.cuda"):
        call = case.jit_cuda_call(mode, *JIT_TIME_LOOPS[backend])
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
        "device": device_name(), "max_abs_diff_vs_cudnn": diff,
    })
    benchmark(call)


# ----- where a jit.cuda call's time goes ------------------------------------------------------

def profile_calls(out_dir, config_kind=None, cell="lstm", calls=10):
    """Write OUT/profile.txt: for one cell at the first config, per mode, the kernel launches of one
    jit.cuda call and (on a GPU) its wall time, cuDNN's, and the Python functions that take the host's
    time (cProfile, by own time), per-step and with each time loop as one persistent launch. It says
    whether a call is bound by launches on the host, and what one launch instead of T buys. Returns
    the summary lines."""
    name, T, B, I, H = configs(config_kind)[0]
    case = Case(cell, T, B, I, H)
    summary = [f"{cell} {name} (T={T}, B={B}, I={I}, H={H}) on {device_name()}, {calls} calls per figure"]
    details = []
    for variant, persistent in (("per-step", False), ("persistent", True)):
        for mode in MODES:
            line, profile = _profile_call(case, mode, persistent, f"{variant} {mode}", calls)
            summary.append(line)
            details += profile
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile.txt").write_text("\n".join(summary + [""] + details) + "\n")
    return "\n".join(summary)


def _seconds_per_call(call, calls):
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls


def _profile_call(case, mode, persistent, label, calls):
    """(summary line, cProfile lines) of one jit.cuda call: launches per call; on a GPU its time beside
    cuDNN fp32's, and the 20 Python functions with the most own time."""
    from jit.cuda.launch import COUNTS, SIMULATOR  # COUNTS: every launch of jit.cuda, layers' too

    call = case.jit_cuda_call(mode, persistent)
    try:
        call()  # compiles, and warms the allocator
    except Exception as exc:  # e.g. a cooperative launch this GPU refuses: say so, go on
        return f"{label}: failed: {type(exc).__name__}: {exc}", []
    COUNTS.reset()
    wall = _seconds_per_call(call, calls)
    per_call = COUNTS.launches / calls
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


CASE = ["cell", "config", "mode"]


def _limit(mode, B, variant):
    """(limit on jit.cuda / cuDNN fp32, strict) of a variant at B, or None where no target applies:
    the speed targets at B ∈ {16, 32, 64}; at B ≤ 8 only the persistent path's, faster than cuDNN."""
    if B in SPEED_TARGET_BATCHES:
        return TARGET_RATIO[mode], False
    if B in SMALL_BATCHES and variant in (JIT_PATHS[name].backend for name in PERSISTENT_PATHS):
        return 1.0, True
    return None


def _met(ratio, limit):
    if limit is None or ratio != ratio:
        return ""  # no target here, or the variant was not measured
    bound, strict = limit
    return "yes" if (ratio < bound if strict else ratio <= bound) else "no"


def comparison(rows):
    """Per cell × config × mode: B, each backend's median (ms), jit.cuda / cuDNN fp32 of each path, the
    target and whether it is met (speed targets at B ≥ 16; at B ≤ 8 the persistent path's, < 1)."""
    import pandas as pd
    table = rows.pivot_table(index=CASE, columns="backend", values="median_s", aggfunc="first")
    first = rows.drop_duplicates(CASE).set_index(CASE)
    out = pd.DataFrame(index=table.index)
    out["B"] = first["B"].astype(int)
    for backend in BACKENDS:
        if backend in table:
            out[f"{backend} ms"] = table[backend] * 1e3
    if "jit.cuda" in table:
        out["jit.cuda GFLOP/s"] = first["flops"] / table["jit.cuda"] / 1e9
    if "torch.cudnn" in table:
        out["target"] = [TARGET_RATIO[m] if b in SPEED_TARGET_BATCHES else 1.0 if b in SMALL_BATCHES else float("nan")
                         for m, b in zip(out.index.get_level_values("mode"), out["B"])]
    for variant, prefix in JIT_VARIANTS:
        if variant in table and "torch.cudnn" in table:
            ratio = table[variant] / table["torch.cudnn"]
            out[f"{prefix}ratio vs cuDNN fp32"] = ratio
            out[f"{prefix}met"] = [_met(r, _limit(m, b, variant))
                                   for r, m, b in zip(ratio, out.index.get_level_values("mode"), out["B"])]
    if "max_abs_diff_vs_cudnn" in rows:
        for variant, prefix in JIT_VARIANTS:
            jit_rows = rows[rows["backend"] == variant].set_index(CASE)
            if not jit_rows.empty:
                out[f"{prefix}max |jit − cuDNN|"] = jit_rows["max_abs_diff_vs_cudnn"]
    return out.reset_index()


def short_summary(table, prefix=""):
    """Per cell × mode over the speed targets' configs (B ∈ {16, 32, 64}): configs meeting the target,
    the worst and the geometric-mean ratio to cuDNN fp32, of jit.cuda (prefix "") or of its persistent
    variant (prefix "persistent ")."""
    import pandas as pd
    column = f"{prefix}ratio vs cuDNN fp32"
    if column not in table:
        return None
    if "B" in table:
        table = table[table["B"].isin(SPEED_TARGET_BATCHES)]
    records = []
    for (cell, mode), group in table.groupby(["cell", "mode"], sort=False):
        ratio = group[column].dropna()
        if ratio.empty:
            continue
        target = TARGET_RATIO[mode]
        records.append({"cell": cell, "mode": mode, "target": target,
                        "met": f"{int((ratio <= target).sum())}/{len(ratio)}",
                        "worst ratio": ratio.max(), "geomean ratio": float(np.exp(np.log(ratio).mean()))})
    return pd.DataFrame(records) if records else None


# ----- issue 23's targets, row by row -------------------------------------------------------------

SPEED = {"inference": "forward ≤ 1.5× cuDNN fp32", "training": "training ≤ 2× cuDNN fp32"}
SMALL_BATCH = "persistent faster than cuDNN fp32 (B ≤ 8)"
HOST_OVERHEAD = "host overhead per call < 100 µs"
NOT_MEASURED, NOT_JUDGED = "not measured", "not judged (simulator)"
#: A host overhead under the limit measured with host gaps in the busy time (a lower bound only).
UNSURE = "unsure (busy time holds host gaps)"


def _verdict(figures, judged_paths, limit, strict):
    """(judged path, verdict): the best of the judged paths' figures against the limit."""
    measured = {p: figures[p] for p in judged_paths if figures[p] == figures[p]}
    if not measured:
        return "", NOT_MEASURED
    path = min(measured, key=measured.get)
    value = measured[path]
    return path, "met" if (value < limit if strict else value <= limit) else "missed"


def targets(table=None, overheads=None, simulated=False):
    """Issue 23's targets, one row per target × cell × config × mode: each path's figure (×cuDNN fp32,
    or µs of host overhead: per-step, persistent, and persistent split-K), the limit,
    the path judged and the verdict.

    Speed (B ∈ {16, 32, 64}) and host overhead: the best path is judged; a user may take any.
    B ≤ 8: the best persistent path. ``table`` is comparison()'s, ``overheads`` reports.gpu_probe's
    host_overheads(); either may be None (not measured). Under the simulator nothing is judged."""
    import pandas as pd
    records = []

    def add(target, case, figures, unit, limit, strict, paths, exact=None):
        path, verdict = _verdict(figures, paths, limit, strict)
        if verdict == "met" and exact is not None and not exact.get(path, False):
            verdict = UNSURE
        if simulated:
            figures = dict.fromkeys(figures, float("nan"))
            path, verdict = "", NOT_JUDGED
        records.append({"target": target, **case, **figures, "unit": unit, "limit": limit, "judged": path,
                        "verdict": verdict})

    if table is not None:
        nan = pd.Series(float("nan"), index=table.index)
        ratios = {name: table.get(f"{path.prefix}ratio vs cuDNN fp32", nan) for name, path in JIT_PATHS.items()}
        for i, row in table.iterrows():
            case = {"cell": row["cell"], "config": row["config"], "mode": row["mode"]}
            figures = {path: ratio[i] for path, ratio in ratios.items()}
            if row["B"] in SPEED_TARGET_BATCHES:
                limit = TARGET_RATIO[row["mode"]]
                add(SPEED[row["mode"]], case, figures, "× cuDNN", limit, False, tuple(JIT_PATHS))
            elif row["B"] in SMALL_BATCHES:
                add(SMALL_BATCH, case, figures, "× cuDNN", 1.0, True, PERSISTENT_PATHS)
    if overheads is not None and not overheads.empty:
        for (cell, config, mode), group in overheads.groupby(CASE, sort=False):
            by_path = group.set_index("path")
            figures = {p: by_path["overhead_s"].get(p, float("nan")) * 1e6 for p in JIT_PATHS}
            exact = {p: bool(by_path["exact"].get(p, False)) for p in JIT_PATHS} if "exact" in by_path else None
            add(HOST_OVERHEAD, {"cell": cell, "config": config, "mode": mode}, figures, "µs",
                HOST_OVERHEAD_LIMIT_S * 1e6, True, tuple(JIT_PATHS), exact)
    columns = ["target", *CASE, *JIT_PATHS, "unit", "limit", "judged", "verdict"]
    return pd.DataFrame(records, columns=columns)


def targets_summary(rows):
    """Per target: rows met, missed and not measured, and the worst judged figure."""
    import pandas as pd
    records = []
    for target, group in rows.groupby("target", sort=False):
        judged = [r[r["judged"]] for _, r in group.iterrows() if r["judged"]]
        records.append({"target": target, "rows": len(group), "met": int((group["verdict"] == "met").sum()),
                        "missed": int((group["verdict"] == "missed").sum()),
                        "unsure": int((group["verdict"] == UNSURE).sum()),
                        "not measured": int(group["verdict"].isin([NOT_MEASURED, NOT_JUDGED]).sum()),
                        "worst": _figure(max(judged), group["unit"].iloc[0]) if judged else ""})
    return pd.DataFrame(records, columns=["target", "rows", "met", "missed", "unsure", "not measured", "worst"])


def _figure(value, unit):
    if value != value:
        return ""
    return f"{value:.3g}×" if unit == "× cuDNN" else f"{value:.0f} µs"


def targets_markdown(rows):
    """The row-by-row table with each figure written with its unit."""
    shown = rows.copy()
    for column in JIT_PATHS:
        shown[column] = [_figure(v, u) for v, u in zip(rows[column], rows["unit"])]
    shown["limit"] = [("< " if u == "µs" or t == SMALL_BATCH else "≤ ") + _figure(v, u)
                      for v, u, t in zip(rows["limit"], rows["unit"], rows["target"])]
    return shown.drop(columns="unit").to_markdown(index=False)


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


def _markdown(frame):
    """pandas' Markdown table, 3 significant digits, a missing value as an empty cell."""
    return frame.astype(object).where(frame.notna(), None).to_markdown(index=False, floatfmt=".3g", missingval="")


def _properties_line(properties_junit):
    counts = junit_counts(properties_junit)
    if counts:
        outcome = f"{counts[0]} passed, {counts[1]} failed, {counts[2]} skipped"
    elif properties_junit:
        outcome = f"no result in {properties_junit} (timed out, crashed or not run: see properties.log)"
    else:
        outcome = "not run"
    return f"property suite against jit.cuda on this device: {outcome}"


PROBE_TITLES = {
    "calls": ("Where a call's time goes", "host: perf_counter around the call; device: CUDA events around it; "
              "busy: the events with the call's launches queued behind a spin kernel (the GPU's own work; exact "
              "when the call waits only at its end: H→D + D→H + syncs = 1); overhead = host − busy. Counts are "
              "of one call: launches through jit.cuda.launch, kernel launches at numba's launch, device "
              "allocations (cuMemAlloc through numba), blocking copies and synchronizes."),
    "grid_sync": ("µs per grid.sync", "a cooperative kernel making N grid syncs against none, on as many "
                  "blocks as can be resident at once and on 32 blocks."),
    "step_kernels": ("Per-step kernels", "each kernel launched once per step, its middle launch of a training "
                     "call replayed behind a spin kernel between CUDA events; step GFLOP/s counts W_hh's "
                     "product (2·B·G·H²) only; host µs is numba's launch of the compiled kernel."),
    "kernels": ("The kernels of a training call", "as above, for the 4 kernels taking most of each training "
                "call's busy time (gpu_probe.json has them all); share of busy = device time × launches per "
                "call / the call's busy time."),
}


def write_report(results_path, out_dir, properties_junit=None, probe_path=None):
    """Write OUT/gpu_report.md (issue 23's targets row by row, the benchmark's comparison, the probe's
    tables, with the device named) and return the short summary text that gpu_check.sh prints last.
    Either input may be missing (a phase that timed out): its part says so."""
    from reports import gpu_probe
    rows = load_results(results_path) if results_path and Path(results_path).exists() else None
    probe = gpu_probe.load_probe(probe_path) if probe_path and Path(probe_path).exists() else None
    if rows is None and probe is None:
        raise ValueError(f"neither benchmark results ({results_path}) nor probe results ({probe_path}) exist")
    devices = sorted({str(d) for frame in (rows, probe) if frame is not None and "device" in frame
                      for d in frame["device"].dropna()}) or ["an unnamed device"]
    simulated = SIMULATOR_DEVICE in devices
    table = comparison(rows) if rows is not None else None
    target_rows = targets(table, gpu_probe.host_overheads(probe) if probe is not None else None, simulated)
    lines = [f"# jit.cuda vs cuDNN on {', '.join(devices)}", ""]
    device_txt = Path(out_dir) / "device.txt"
    if device_txt.exists():
        lines += [f"- {line}" for line in device_txt.read_text().splitlines() if line.strip()] + [""]
    props = _properties_line(properties_junit)
    lines += [props, ""]
    if simulated:
        # Simulator timings measure Python threads, not a GPU: never shown, never quoted.
        lines += ["**CUDA simulator run: this checks the machinery only; timings are not shown.**", ""]
    lines += ["## Issue 23's targets", ""]
    if not simulated:
        lines += ["fp32 with TF32 off, T = 25, I = H. Speed: jit.cuda's median time over cuDNN's at B ∈ {16, 32, "
                  "64}, the best of the per-step, persistent and split-K paths judged; B ∈ {4, 8}: the "
                  "better persistent path judged, faster than cuDNN; host overhead: reports.gpu_probe's host − "
                  "busy time per call, "
                  f"{UNSURE!r} where it is under the limit but the busy time was not the GPU's work alone "
                  "(a blocking copy or sync before the call's end, or launches not all queued).", ""]
    summary_of_targets = targets_summary(target_rows)
    lines += [_markdown(summary_of_targets) if not target_rows.empty else "(no target could be judged: no rows)", ""]
    if not target_rows.empty:
        lines += ["### Row by row", "", targets_markdown(target_rows), ""]
    lines += ["## jit.cuda vs cuDNN (reports/gpu_bench.py)", ""]
    summary = persistent = split_summary = None
    if table is None:
        lines += [f"no benchmark results ({results_path}): the benchmark did not finish; see gpu_bench.log", ""]
    else:
        if simulated:
            hidden = ("ratio", "persistent ratio", "split ratio", "jit.cuda G", "target", "met", "persistent met",
                      "split met")
            table = table[[c for c in table.columns if not (c.endswith(" ms") or c.startswith(hidden))]]
        else:
            summary, persistent = short_summary(table), short_summary(table, "persistent ")
            split_summary = short_summary(table, "split ")
            lines += ["times are pytest-benchmark medians of whole calls ending in a synchronize; target: the "
                      "limit on jit.cuda / cuDNN fp32 (TF32 off): forward 1.5, forward + backward 2 at B ≥ 16; "
                      "at B ≤ 8 the persistent path's, < 1.", ""]
        lines += [_markdown(table), ""]
        if summary is not None:
            lines += ["### Summary (B ∈ {16, 32, 64})", "", _markdown(summary), ""]
        if persistent is not None:
            lines += ["### Summary with each time loop as one cooperative launch (jit.cuda.persistent)", "",
                      _markdown(persistent), ""]
        if split_summary is not None:
            lines += ["### Summary with the persistent split-K time loops (jit.cuda.split)", "",
                      _markdown(split_summary), ""]
    lines += ["## Where the time goes (reports/gpu_probe.py)", ""]
    if probe is None:
        lines += [f"no probe results ({probe_path}): the probe did not run or wrote nothing", ""]
    else:
        for key, frame in gpu_probe.probe_tables(probe, simulated).items():
            title, note = PROBE_TITLES[key]
            lines += [f"### {title}", ""] + ([] if simulated else [note, ""]) + [_markdown(frame), ""]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_report.md").write_text("\n".join(lines))
    text = [f"device: {', '.join(devices)}", props,
            "issue 23's targets:" + (" (CUDA simulator: timings not shown)" if simulated else ""),
            _markdown(summary_of_targets)]
    if summary is not None:
        text += ["jit.cuda:", _markdown(summary)]
    if persistent is not None:
        text += ["jit.cuda.persistent:", _markdown(persistent)]
    if split_summary is not None:
        text += ["jit.cuda.split:", _markdown(split_summary)]
    return "\n".join(text)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m reports.gpu_bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summarize", help="write OUT/gpu_report.md from a benchmark JSON and print the summary")
    s.add_argument("results", help="pytest-benchmark JSON written by `pytest reports/gpu_bench.py` (may be missing "
                                   "when --probe is given)")
    s.add_argument("--out", required=True, help="folder for gpu_report.md")
    s.add_argument("--properties-junit", default=None, help="junit XML of the property suite run")
    s.add_argument("--probe", default=None, help="gpu_probe.json written by `python -m reports.gpu_probe`")
    pr = sub.add_parser("profile", help="write OUT/profile.txt: launches, time per call and cProfile of jit.cuda calls")
    pr.add_argument("--out", required=True, help="folder for profile.txt")
    pr.add_argument("--configs", default=None, choices=["deepbench", "tiny"],
                    help="config kind (default: CELLBENCH_GPU_CONFIGS or deepbench); its first config is used")
    args = parser.parse_args(argv)
    if args.command == "profile":
        print(profile_calls(args.out, args.configs))
        return 0
    try:
        print(write_report(args.results, args.out, args.properties_junit, args.probe))
    except (OSError, ValueError, KeyError) as exc:
        print(f"gpu_bench: {args.results}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
