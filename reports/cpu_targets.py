"""The jit.cpu speed targets (issues 4, 22 and 24): jit.cpu against torch.nn's RNN/LSTM/GRU on the CPU.

    python -m reports.cpu_targets [--configs S1 M S2-layers] [--cells lstm] [--modes inference]
                                  [--repeats 7] [--statistic median|min] [--json OUT] [--isa avx2]

Cells (S1 … L2: one layer, one direction, every row T steps) and layers (S2-layers, M-layers,
L1-layers: reports/benchmarks/bench_layers.py's cases, 2 layers, bidirectional, row lengths uniform
in [T/2, T], torch fed a packed sequence; their target is not to be slower than torch, r = 1).

For each cell, config and mode, both implementations run on the same float32 weights and
time-major inputs in the same process, interleaved in rounds (jit, torch, jit, torch, ...)
so they share the machine's drift, torch on the threads jit.cpu runs that call on (jit_threads:
one under jit.cpu.threads.PARALLEL_MIN_MACS, else Numba's thread count, read without launching
Numba's threading layer: see jit.cpu.threads.pool_threads). Each
round times the steady state of one implementation: a pause that lets the other's idle
threads sleep (CALL_SETTLE_S), one untimed call, then BURST_CALLS timed calls back to back
(see there for why). A first call (compilation or loading the on-disk cache) is timed apart.

FLOPs of the target (the matrix products only; the pointwise work is O(T·B·G·H), a few percent
next to them for I = H ≥ 64):
    forward   2·T·B·G·H·(I + H)   the input projection x W_ihᵀ and the recurrent h W_hhᵀ
    training  3 × forward         forward, plus backward's da·W (for dx and dh) and daᵀ·[x, h]
    layers    per layer-direction, with Σ lengths (the valid steps) for T·B and I = 2H above layer 0

The machine's achievable rate is the best of three measured in the same run: numpy's fp32
sgemm (2048²), torch's mm (2048², float32, torch on the same threads) and the rates torch itself
reaches on the run's rows (FLOPs / torch's time). numpy's OpenBLAS may use AVX2 kernels on an
AVX-512 machine whose oneDNN does not, so numpy alone can understate the machine.

    target = max(r × torch's time, FLOPs / (0.75 × achievable rate))

beat PyTorch by the factor r unless that is physically out of reach; then reach 75% of the
achievable rate. Every row is also checked against torch itself (slower_than_torch).

--json writes pytest-benchmark JSON that `cellbench report` and `cellbench compare` read: one
benchmark per implementation and row, named like reports/benchmarks' (backend "jit.cpu" and
"torch.nn", cell, config, mode, dtype), with pytest-benchmark's stats of the timed calls.
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

import reference
from reference.contract import NUM_GATES
from reports import machine, matrix
from reports.results import SCHEMA

#: DeepBench-derived configs sized for a 2-core machine: (T, B, I = H).
CONFIGS = {"S1": (50, 1, 64), "S2": (50, 16, 128), "M": (50, 32, 256), "L1": (25, 64, 512), "L2": (25, 16, 1024)}
#: The layer rows of issue 24, named as reports/benchmarks/bench_layers.py names them: the cells'
#: config they take their sizes from.
LAYER_CONFIGS = {"S2-layers": "S2", "M-layers": "M", "L1-layers": "L1"}
CELLS = ("lstm", "gru", "rnn_tanh")
MODES = ("inference", "training")
#: r per config and mode, from issue 4; layers (issue 24): not slower than torch.
RATIO_TARGETS = {
    "S1": {"inference": 0.25, "training": 0.4}, "S2": {"inference": 0.25, "training": 0.4},
    "M": {"inference": 0.5, "training": 0.5},
    "L1": {"inference": 0.8, "training": 0.6}, "L2": {"inference": 0.8, "training": 0.6},
    **{name: {"inference": 1.0, "training": 1.0} for name in LAYER_CONFIGS},
}
#: Fraction of the achievable rate that the FLOP bound of the target asks for.
TARGET_FRACTION = 0.75
#: The implementations, named as reports/benchmarks names them.
JIT, TORCH = "jit.cpu", "torch.nn"
#: Pause after measuring a GEMM rate, longer than OpenBLAS's workers spin (by default up to
#: 2^28 cycles, ~0.1 s here).
BLAS_SETTLE_S = 0.5
#: Pause before each round. After a call, torch's OpenMP workers keep spinning for up to
#: ~10 ms (measured: 8–10 ms); a jit.cpu call started meanwhile shares a core with one of them
#: (measured, 2-core machine, inference, best of 7: lstm M 19.8 ms right after a torch call,
#: 14.9 ms 10 ms later; lstm L1 59.8 against 47.8), and torch's workers would likewise meet
#: whatever ran before them. So each round, jit's and torch's, starts on a quiet machine.
CALL_SETTLE_S = 0.02
#: Timed calls per round, after one untimed call. A call that starts after the pause starts
#: cold: on the 2-core KVM guest an idle vCPU is handed back to the host, and the first
#: milliseconds after it run slow (measured: lstm S2 forward 1.85 ms hot, 2.5 ms right after
#: a 20 ms pause; a single tiny Numba call 1 µs hot, 34 µs after the pause), for both
#: libraries. The untimed call takes that penalty, so the timed ones measure the steady state
#: of repeated calls (what a training loop sees), as the GEMM rate the FLOP bound uses does.
BURST_CALLS = 3


# ----- the machine's rates ----------------------------------------------------------------------

def numpy_gemm(repeats=5) -> dict:
    """numpy's fp32 sgemm rate (reports.machine.measure_gemm_rate), then a pause for BLAS's threads."""
    rate = machine.measure_gemm_rate(repeats=repeats)
    # OpenBLAS's workers keep spinning for a while after a threaded GEMM, and took a core from
    # whatever ran next (measured: the next torch call 111 ms against 23 ms); let them sleep.
    time.sleep(BLAS_SETTLE_S)
    return rate


def torch_mm_gflops(n=machine.GEMM_SIZE, repeats=5) -> float:
    """torch's fp32 n×n mm rate in GFLOP/s, best of ``repeats``, on Numba's thread count."""
    import torch
    _match_threads()
    a = torch.randn(n, n, generator=torch.Generator().manual_seed(0))
    b = a.T.contiguous()
    a @ b  # warm oneDNN's / MKL's threads
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    time.sleep(BLAS_SETTLE_S)
    return 2 * n ** 3 / best / 1e9


def torch_rnn_best(rows) -> tuple:
    """(GFLOP/s, 'cell config mode') of the fastest rate torch reached on the rows."""
    best = max(rows, key=lambda row: row["flops"] / row["torch_s"])
    return best["flops"] / best["torch_s"] / 1e9, f"{best['cell']} {best['config']} {best['mode']}"


def achievable_gflops(rates: dict) -> float:
    """The best of the measured rates (GFLOP/s) that are known."""
    known = [rates[k] for k in ("gemm_fp32_gflops", "torch_mm_gflops", "torch_rnn_gflops") if rates.get(k)]
    return max(known)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ----- one row: both implementations, interleaved ------------------------------------------------

def flops(cell, config, mode) -> float:
    if config in LAYER_CONFIGS:
        return _layer_flops(cell, config, mode)
    T, B, H = CONFIGS[config]
    forward = 2 * T * B * NUM_GATES[cell] * H * (H + H)
    return forward * (3 if mode == "training" else 1)


def _layer_sizes(config):
    """bench_layers' Sizes of a layer config."""
    from reports.benchmarks import bench_layers
    return bench_layers.layer_sizes(LAYER_CONFIGS[config])


def _layer_flops(cell, config, mode) -> float:
    """The products of every layer-direction over the valid steps: Σ lengths rows of 2·G·H·(I_l + H)."""
    from reports.benchmarks import bench_layers
    sizes = _layer_sizes(config)
    valid = int(bench_layers.row_lengths(sizes.T, sizes.B).sum())
    D = 2 if bench_layers.BIDIRECTIONAL else 1
    widths = [sizes.I] + [D * sizes.H] * (bench_layers.NUM_LAYERS - 1)
    forward = sum(D * 2 * valid * NUM_GATES[cell] * sizes.H * (width + sizes.H) for width in widths)
    return forward * (3 if mode == "training" else 1)


def _torch_module(cell, H):
    import torch
    kind = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn_tanh": torch.nn.RNN}[cell]
    torch.manual_seed(0)
    return kind(H, H)  # float32, time-major (batch_first=False), tanh for the RNN


def _params_of(module):
    """The torch module's own weights as reference.Params (PyTorch's layout is the contract's)."""
    return reference.Params(*(getattr(module, n).detach().numpy().copy()
                              for n in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")))


def _layer_runners(cell, config, mode):
    """(run_jit, run_torch) of a layer row: bench_layers' two timed calls, on its float32 inputs."""
    from jit.cpu import backend
    from reports.benchmarks import bench_layers
    inputs = bench_layers.as_float32(bench_layers.layer_inputs(cell, _layer_sizes(config)))
    run_jit, _ = bench_layers.contract_call(backend, cell, mode, inputs)
    run_torch, _ = bench_layers.torch_call(cell, mode, inputs)
    return run_jit, run_torch


def _runners(cell, config, mode):
    """(run_jit, run_torch): zero-argument callables doing one measured call each."""
    if config in LAYER_CONFIGS:
        return _layer_runners(cell, config, mode)
    import torch
    from jit.cpu import backend
    T, B, H = CONFIGS[config]
    module = _torch_module(cell, H)
    params = _params_of(module)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, H)).astype(np.float32)
    h0 = np.zeros((B, H), np.float32)
    c0 = h0.copy() if cell == "lstm" else None
    dhs, dh_n = np.ones_like(x[:, :, :H]), np.zeros_like(h0)
    x_t, h0_t = torch.from_numpy(x), torch.from_numpy(h0[None])  # torch: (layers, B, H)
    state_t = (h0_t, h0_t.clone()) if cell == "lstm" else h0_t

    if mode == "inference":
        def run_jit():
            backend.forward(cell, params, x, h0, c0, training=False)

        def run_torch():
            with torch.no_grad():
                module(x_t, state_t)
    else:
        def run_jit():
            fwd = backend.forward(cell, params, x, h0, c0, training=True)
            backend.backward(cell, params, x, h0, c0, fwd, dhs, dh_n)

        def run_torch():  # gradients of x, h0 and every parameter, as jit.cpu computes
            xg = x_t.clone().requires_grad_()
            sg = tuple(s.clone().requires_grad_() for s in state_t) if cell == "lstm" \
                else state_t.clone().requires_grad_()
            module.zero_grad(set_to_none=True)
            out, _ = module(xg, sg)
            out.sum().backward()
    return run_jit, run_torch


def _match_threads(threads=None) -> int:
    """Give torch ``threads`` threads, by default Numba's thread count (read without launching
    Numba's threading layer); return it."""
    import torch
    from jit.cpu.threads import pool_threads
    threads = threads or pool_threads()
    torch.set_num_threads(threads)
    return threads


def jit_threads(cell, config) -> int:
    """The threads jit.cpu runs a call of this row on, which torch gets too: the caller alone
    under PARALLEL_MIN_MACS forward multiply-adds (backward's time loop and each of its GEMMs
    are no larger), else the pool's. A torch held to jit.cpu's nominal two threads there waits
    on its second core at every step: lstm S1 inference 0.35 ms on two threads against 0.17 on
    one, after the round's pause (Zen 4)."""
    from reports.torch_peer import threads_like_jit_cpu
    return threads_like_jit_cpu(int(flops(cell, config, "inference")) // 2)


def measure(cell, config, mode, repeats=7, gemm_flops=None, statistic="median") -> dict:
    """Time jit.cpu and torch on one (cell, config, mode), interleaved; return one table row.

    Times are the ``statistic`` (median or min) of the BURST_CALLS timed calls of each of
    ``repeats`` interleaved pairs of rounds, in seconds; min suits a machine shared with other
    work, whose load only ever adds time. ``gemm_flops`` is a first achievable rate (FLOP/s) for
    the target, which retarget() replaces once the run's best is known; numpy's when not given.
    """
    threads = _match_threads(jit_threads(cell, config))
    gemm_flops = gemm_flops or numpy_gemm()["gemm_fp32_gflops"] * 1e9
    run_jit, run_torch = _runners(cell, config, mode)
    first_call = _timed(run_jit)  # compilation, or loading it from the on-disk cache
    torch_first_call = _timed(run_torch)
    jit_times, torch_times = [], []
    for _ in range(repeats):
        for run, times in ((run_jit, jit_times), (run_torch, torch_times)):
            time.sleep(CALL_SETTLE_S)
            run()  # untimed: takes the cold start after the pause
            times.extend(_timed(run) for _ in range(BURST_CALLS))
    summary = {"median": statistics.median, "min": min}[statistic]
    row = {
        "cell": cell, "config": config, "mode": mode, "threads": threads,
        "first_call_s": first_call, "torch_first_call_s": torch_first_call,
        "jit_s": summary(jit_times), "torch_s": summary(torch_times),
        "r": RATIO_TARGETS[config][mode], "flops": flops(cell, config, mode), "statistic": statistic,
        "jit_all_s": jit_times, "torch_all_s": torch_times,
    }
    return retarget(row, gemm_flops)


def retarget(row, achievable_flops) -> dict:
    """The row's target, % of the achievable rate (FLOP/s) and verdicts, computed for that rate."""
    row = dict(row, achievable_gflops=achievable_flops / 1e9, ratio=row["jit_s"] / row["torch_s"],
               gflops=row["flops"] / row["jit_s"] / 1e9,
               pct_achievable=100 * row["flops"] / row["jit_s"] / achievable_flops)
    row["target_s"] = max(row["r"] * row["torch_s"], row["flops"] / (TARGET_FRACTION * achievable_flops))
    row["met"] = row["jit_s"] <= row["target_s"]
    row["slower_than_torch"] = row["jit_s"] > row["torch_s"]
    return row


# ----- output: the printed table and pytest-benchmark JSON ---------------------------------------

def table(rows) -> str:
    import pandas as pd

    from reports.report import to_markdown
    df = pd.DataFrame(rows)
    shown = pd.DataFrame({
        "cell": df.cell, "config": df.config, "mode": df["mode"], "first call s": df.first_call_s.round(2),
        "jit ms": df.jit_s * 1e3, "torch ms": df.torch_s * 1e3, "jit/torch": df.ratio.round(2),
        "GFLOP/s": df.gflops.round(1), "% achievable": df.pct_achievable.round(0),
        "target ms": df.target_s * 1e3, "met": df.met.map({True: "yes", False: "NO"}),
        "≤ torch": df.slower_than_torch.map({True: "NO", False: "yes"}),
    })
    return to_markdown(shown)


def summary_line(rows) -> str:
    met = sum(bool(r["met"]) for r in rows)
    slower = sum(bool(r["slower_than_torch"]) for r in rows)
    return f"targets met: {met} of {len(rows)}; slower than torch: {slower} of {len(rows)}"


def benchmark_stats(times) -> dict:
    """pytest-benchmark's stats of the timed calls (seconds, one call per round), with the data:
    the "stats" of a benchmark entry (also reports.gpu_probe's)."""
    from pytest_benchmark.stats import Stats
    stats = Stats()
    for seconds in times:
        stats.update(seconds)
    return {**stats.as_dict(), "data": list(times), "iterations": 1}


def _case_sizes(cell, config, mode) -> dict:
    """A row's sizes, shapes, and the reports' FLOP and byte counts (pointwise work included), as
    reports/benchmarks writes them into extra_info."""
    if config in LAYER_CONFIGS:
        from reports.benchmarks import bench_layers
        sizes = _layer_sizes(config)
        lengths = bench_layers.row_lengths(sizes.T, sizes.B)
        D, L = (2 if bench_layers.BIDIRECTIONAL else 1), bench_layers.NUM_LAYERS
        reported_flops, reported_bytes = bench_layers.work(cell, sizes, lengths, mode)
        return {"T": sizes.T, "B": sizes.B, "I": sizes.I, "H": sizes.H, "layers": L, "directions": D,
                "lengths": [int(n) for n in lengths], "valid_steps": int(lengths.sum()),
                "shapes": {"x": [sizes.T, sizes.B, sizes.I], "h0": [L * D, sizes.B, sizes.H],
                           "hs": [sizes.T, sizes.B, D * sizes.H]},
                "flops": reported_flops, "bytes": reported_bytes}
    T, B, H = CONFIGS[config]
    return {"T": T, "B": B, "I": H, "H": H,
            "shapes": {"x": [T, B, H], "h0": [B, H], "w_ih": [NUM_GATES[cell] * H, H],
                       "w_hh": [NUM_GATES[cell] * H, H]},
            "flops": matrix.flops(cell, T, B, H, H, mode), "bytes": matrix.bytes_moved(cell, T, B, H, H, mode, 4)}


def benchmark_entries(row) -> list:
    """The row as two pytest-benchmark benchmarks, jit.cpu's and torch.nn's, with reports.results'
    extra_info fields (as reports/benchmarks writes them) and the target's."""
    case = {"schema": SCHEMA, "cell": row["cell"], "config": row["config"], "sweep": "", "mode": row["mode"],
            "dtype": "float32", **_case_sizes(row["cell"], row["config"], row["mode"]),
            "product_flops": row["flops"],  # the target's count
            "threads": row["threads"], "statistic": row["statistic"], "r": row["r"], "target_s": row["target_s"]}
    jit = {"backend": JIT, "first_call_s": row["first_call_s"], "time_s": row["jit_s"],
           "ratio_to_torch": row["ratio"], "met": bool(row["met"]),
           "slower_than_torch": bool(row["slower_than_torch"])}
    peer = {"backend": TORCH, "first_call_s": row.get("torch_first_call_s"), "time_s": row["torch_s"]}
    entries = []
    for own, times in ((jit, row["jit_all_s"]), (peer, row["torch_all_s"])):
        param = f"{own['backend']}-{row['cell']}-{row['config']}-{row['mode']}-float32"
        entries.append({
            "group": f"{row['cell']}-{row['config']}-{row['mode']}-float32",
            "name": f"cpu_targets[{param}]", "fullname": f"reports/cpu_targets.py::cpu_targets[{param}]",
            "params": {"backend": own["backend"], "cell": row["cell"], "config": row["config"],
                       "mode": row["mode"], "dtype": "float32"},
            "param": param, "extra_info": {**case, **own},
            "options": {"timer": "perf_counter", "repeats": len(times) // BURST_CALLS, "burst_calls": BURST_CALLS,
                        "call_settle_s": CALL_SETTLE_S, "interleaved": True},
            "stats": benchmark_stats(times),
        })
    return entries


def document(rows, cellbench_info, machine_info=None, commit_info=None, when=None) -> dict:
    """The whole pytest-benchmark JSON of a run: machine_info (pytest-benchmark's, with the run's
    rates and loads under "cellbench"), commit_info, datetime, version, and the benchmarks."""
    from pytest_benchmark import __version__
    from pytest_benchmark.plugin import pytest_benchmark_generate_machine_info
    from pytest_benchmark.utils import get_commit_info
    machine_info = dict(machine_info if machine_info is not None else pytest_benchmark_generate_machine_info())
    machine_info["cellbench"] = cellbench_info
    return {
        "machine_info": machine_info,
        "commit_info": commit_info if commit_info is not None else get_commit_info(),
        "benchmarks": [entry for row in rows for entry in benchmark_entries(row)],
        "datetime": when or datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "version": __version__,
    }


# ----- the command ---------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m reports.cpu_targets", description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", choices=[*CONFIGS, *LAYER_CONFIGS], default=[*CONFIGS, *LAYER_CONFIGS],
                        help="cells' configs and layers' (default: all)")
    parser.add_argument("--cells", nargs="+", choices=CELLS, default=list(CELLS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--repeats", type=int, default=7,
                        help="interleaved pairs of rounds per row (each round: BURST_CALLS timed calls)")
    parser.add_argument("--statistic", choices=("median", "min"), default="median",
                        help="how the repeats are summarised (min on a machine shared with other work)")
    parser.add_argument("--json", metavar="OUT", help="also write the run as pytest-benchmark JSON")
    parser.add_argument("--isa", choices=("native", "avx2"), default="native",
                        help="avx2: hold every library to AVX2 on an AVX-512 host, a stand-in for an AVX2 "
                             "machine (reports.machine.avx2_only_environ); the run is named as such")
    return parser.parse_args(argv)


def run_held_to_avx2(argv) -> int:
    """Run this command again, ``argv`` unchanged, in a child process whose libraries are held to
    AVX2 (their switches are read at import, so this process, which may have imported them,
    cannot be); the child's exit status."""
    import llvmlite.binding as llvm
    environ = machine.avx2_only_environ(os.environ, llvm.get_host_cpu_name(), llvm.get_host_cpu_features())
    return subprocess.run([sys.executable, "-m", "reports.cpu_targets", *argv], env=environ).returncode


def isa_limit_breaches() -> list:
    """What in this process still uses AVX-512 though the run is held to AVX2 (empty when it holds
    or the run is not held): see reports.machine.isa_limit_breaches."""
    import torch
    from numba.core import config
    from threadpoolctl import threadpool_info

    from jit.cpu import host
    return machine.isa_limit_breaches(os.environ.get(machine.ISA_LIMIT_ENV) or None, host.VECTOR_BYTES,
                                      config.CPU_FEATURES or "", torch.backends.cpu.get_cpu_capability(),
                                      threadpool_info())


def measure_rows(args, rates) -> list:
    """Every chosen row; the GEMM rates are measured again after each cell and the best kept
    (other load only ever lowers them)."""
    rows = []
    for cell in args.cells:
        for config in args.configs:
            for mode in args.modes:
                rows.append(measure(cell, config, mode, args.repeats, achievable_gflops(rates) * 1e9,
                                    args.statistic))
                print(f"  {cell} {config} {mode}: jit {rows[-1]['jit_s'] * 1e3:.3f} ms, "
                      f"torch {rows[-1]['torch_s'] * 1e3:.3f} ms", flush=True)
        again = numpy_gemm()
        if again["gemm_fp32_gflops"] > rates["gemm_fp32_gflops"]:
            rates.update(again)
        rates["torch_mm_gflops"] = max(rates["torch_mm_gflops"], torch_mm_gflops())
    return rows


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.isa == "avx2" and os.environ.get(machine.ISA_LIMIT_ENV) != "avx2":
        sys.exit(run_held_to_avx2(argv))
    busy_start = machine.busy_cores()
    threads = _match_threads()
    breaches = isa_limit_breaches()
    if breaches:
        sys.exit("cpu_targets: the run is held to AVX2, but " + "; ".join(breaches))
    if os.environ.get(machine.ISA_LIMIT_ENV):
        print("held to AVX2 on this host (--isa avx2): a stand-in for an AVX2 machine, named as one")
    rates = dict(numpy_gemm(), torch_mm_gflops=torch_mm_gflops())
    from jit.cpu.threads import PARALLEL_MIN_MACS
    print(f"threads: numba {threads} = torch (both one for a call under {PARALLEL_MIN_MACS} multiply-adds); "
          f"fp32 rates so far: numpy sgemm {rates['gemm_fp32_gflops']:.1f}, "
          f"torch mm {rates['torch_mm_gflops']:.1f} GFLOP/s; times: {args.statistic} of {args.repeats}")
    rows = measure_rows(args, rates)
    rates["torch_rnn_gflops"], rates["torch_rnn_best"] = torch_rnn_best(rows)
    rates["achievable_gflops"] = achievable_gflops(rates)
    rows = [retarget(row, rates["achievable_gflops"] * 1e9) for row in rows]
    print(f"achievable fp32 rate, best of the run: {rates['achievable_gflops']:.1f} GFLOP/s (numpy sgemm "
          f"{rates['gemm_fp32_gflops']:.1f}, torch mm {rates['torch_mm_gflops']:.1f}, torch on "
          f"{rates['torch_rnn_best']} {rates['torch_rnn_gflops']:.1f}); "
          f"target = max(r·torch, FLOPs / ({TARGET_FRACTION}·achievable))")
    print(table(rows))
    print(summary_line(rows))
    info = {**machine.run_info({k: rates[k] for k in ("gemm_size", "gemm_seconds", "gemm_fp32_gflops")},
                               busy_start, {JIT: JIT, TORCH: TORCH}),
            **{k: rates[k] for k in ("torch_mm_gflops", "torch_rnn_gflops", "torch_rnn_best", "achievable_gflops")},
            "target_fraction": TARGET_FRACTION, "threads": threads, "statistic": args.statistic,
            "repeats": args.repeats, "burst_calls": BURST_CALLS, "tool": "reports.cpu_targets"}
    data = document(rows, info)
    warn_if_loaded(data["machine_info"])
    if args.json:
        with open(args.json, "w") as out:
            json.dump(data, out, indent=1)


def warn_if_loaded(machine_info):
    who = machine.identity(machine_info)
    info = machine_info["cellbench"]
    run = {**who, "gemm_gflops": info["gemm_fp32_gflops"],
           "load_start": info["busy_cores_start"], "load_end": info["busy_cores_end"]}
    reasons = machine.loaded(run, machine.usual_gemm_gflops(who["cpu_name"], who["cpu_features"]))
    if reasons:
        print("WARNING: the machine was loaded during this run (" + "; ".join(reasons) + "): the times are noisy")


if __name__ == "__main__":
    main()
