"""The machine a run measured: who it is, how fast it multiplies matrices, and whether it was quiet.

One job: describe the machine. Measuring (the fp32 GEMM rate, the cores other work keeps busy) serves the
benchmark runs; judging (was this run's machine loaded? can two runs be compared?) serves the
reports. A machine is named by its CPU (pytest-benchmark's py-cpuinfo record: brand, family,
model) and its vector features (the avx*, fma and amx* flags), because a KVM guest's brand
("AMD EPYC") alone names Zen 3 and Zen 4 alike.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np

GEMM_SIZE = 2048
#: reports/baselines/: one cpu_targets JSON per machine the project measured.
BASELINES_DIR = Path(__file__).resolve().parent / "baselines"
#: A run whose GEMM rate is below this fraction of the best recorded for its CPU ran on a busy
#: machine: a quiet 2-core guest repeats its own rate within a few percent.
USUAL_GEMM_FRACTION = 0.8
#: Two runs whose GEMM rates differ by more than this fraction did not see the same machine.
COMPARABLE_GEMM_GAP = 0.10
#: A run is loaded when other work kept more than this many cores busy at its start or end.
LOADED_BUSY_CORES = 0.5
#: How long busy_cores watches the machine while this process sleeps.
BUSY_SAMPLE_S = 1.0
#: Flags that decide which kernels a CPU runs (vector width, FMA, matrix units).
FEATURE_PREFIXES = ("avx", "fma", "amx")


# ----- measuring --------------------------------------------------------------------------------

def measure_gemm_rate(size=GEMM_SIZE, repeats=3) -> dict:
    """Best of a few fp32 size×size numpy matmuls (after one warm-up): the machine's GEMM ceiling."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b  # warm-up: BLAS threads start, pages fault in
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return {"gemm_size": size, "gemm_seconds": best, "gemm_fp32_gflops": 2 * size ** 3 / best / 1e9}


def cpu_model() -> str:
    from jit.cpu.host import cpuinfo_field  # run_info imports jit.cpu anyway (jit_cpu_host)
    model = cpuinfo_field("model name")
    return model if model is not None else platform.processor() or platform.machine()


def _cpu_times():
    """(all jiffies, idle jiffies) of the whole machine from /proc/stat's first line. Steal time (a
    VM's host running someone else) counts as busy: it is other work taking the cores."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    return sum(values), values[3] + values[4]  # idle + iowait


def busy_cores(seconds: float = BUSY_SAMPLE_S) -> float:
    """How many cores other work kept busy over ``seconds`` while this process slept (NaN where the
    OS has no /proc/stat). Not the load average: its minute-long memory still counts a run's own
    work (a property suite just before the benchmarks read as 2.07 on 2 cores)."""
    try:
        total0, idle0 = _cpu_times()
        time.sleep(seconds)
        total1, idle1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        return float("nan")
    total = total1 - total0
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / total) if total > 0 else float("nan")


def jit_cpu_host() -> dict:
    """What jit.cpu compiled for on this machine (jit.cpu.host): vector width, register tile, caches."""
    from jit.cpu import host
    return {"vector_bytes": host.VECTOR_BYTES, "tile": f"{host.TILE_ROWS}x{host.PANEL_VECTORS}",
            "l1d_bytes": host.L1D_BYTES, "l2_bytes": host.L2_BYTES, "l3_bytes": host.L3_BYTES,
            "summary": host.describe()}


def run_info(gemm: dict, busy_start: float, backends: dict) -> dict:
    """machine_info["cellbench"] of a run: the GEMM measurement, CPU, cores, BLAS, jit.cpu's
    host adaptation, backends, and the cores other work kept busy at the start and (now) the end."""
    from threadpoolctl import threadpool_info
    return {**gemm, "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "jit_cpu": jit_cpu_host(),
            "blas": [{k: pool.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
                     for pool in threadpool_info()],
            "backends": backends, "isa_limit": os.environ.get(ISA_LIMIT_ENV) or None,
            "busy_cores_start": busy_start, "busy_cores_end": busy_cores()}


# ----- holding a run to AVX2 --------------------------------------------------------------------

#: `--isa avx2` measures an AVX-512 host as an AVX2 one would run: every library in the run is told
#: not to use AVX-512, through the switches each reads at import. It is a stand-in for an AVX2
#: machine, not one: the cores, caches and clocks stay the host's (on Zen 4, whose 512-bit
#: operations take its 256-bit pipes twice, the peak FLOP rate stays the same).
ISA_LIMIT_ENV = "CELLBENCH_ISA_LIMIT"
#: LLVM's names for the features AVX-512 brings, and the newer sets built on it.
AVX512_FEATURE_PREFIXES = ("avx512", "avx10", "evex512", "amx")


def avx2_only_environ(environ, host_cpu_name: str, host_features: dict) -> dict:
    """``environ`` plus the switches that hold each library of a run to AVX2 (and ISA_LIMIT_ENV):
    jit.cpu 32-byte vectors; Numba compiling for the host's CPU with its AVX-512 features off;
    torch's ATen kernels, oneDNN and MKL at AVX2; numpy's OpenBLAS on its Haswell kernels.
    host_features: llvmlite's {feature: on} of the host."""
    numba_features = ",".join(("+" if on and not name.startswith(AVX512_FEATURE_PREFIXES) else "-") + name
                              for name, on in sorted(host_features.items()))
    return {**environ, ISA_LIMIT_ENV: "avx2", "CELLBENCH_VECTOR_BYTES": "32",
            "NUMBA_CPU_NAME": host_cpu_name, "NUMBA_CPU_FEATURES": numba_features,
            "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
            "OPENBLAS_CORETYPE": "Haswell"}


def isa_limit_breaches(limit, vector_bytes: int, numba_features: str, torch_capability: str, blas: list) -> list:
    """What in a run held to ``limit`` ("avx2", or None: no limit) still uses AVX-512, one line
    each (empty when the limit holds): jit.cpu's width, Numba's features, torch's capability, BLAS."""
    if limit is None:
        return []
    breaches = []
    if vector_bytes != 32:
        breaches.append(f"jit.cpu compiles for {vector_bytes}-byte vectors")
    if any(f"+{prefix}" in numba_features for prefix in AVX512_FEATURE_PREFIXES):
        breaches.append("Numba compiles with AVX-512 features on")
    if torch_capability and torch_capability.upper() not in ("AVX2", "DEFAULT"):
        breaches.append(f"torch's CPU capability is {torch_capability}")
    avx512_blas = [pool["architecture"] for pool in blas
                   if str(pool.get("architecture") or "").lower() in ("skylakex", "cooperlake", "sapphirerapids")]
    if avx512_blas:
        breaches.append(f"BLAS runs its {avx512_blas[0]} kernels")
    return breaches


# ----- naming -----------------------------------------------------------------------------------

def identity(machine_info: dict) -> dict:
    """cpu_name, cpu_features (space-separated vector flags) and cores of a pytest-benchmark machine_info."""
    cpu = machine_info.get("cpu") or {}
    info = machine_info.get("cellbench") or {}
    brand = cpu.get("brand_raw") or info.get("cpu_model") or machine_info.get("processor") or "?"
    family_model = (f"family {cpu['family']} model {cpu['model']}"
                    if cpu.get("family") is not None and cpu.get("model") is not None else "")
    features = sorted(f for f in cpu.get("flags", ()) if f.startswith(FEATURE_PREFIXES))
    if info.get("isa_limit") == "avx2":  # a run held to AVX2 (avx2_only_environ) is another machine
        features = [f for f in features if not f.startswith(AVX512_FEATURE_PREFIXES)]
        family_model = f"{family_model}, AVX-512 off" if family_model else "AVX-512 off"
    return {"cpu_name": f"{brand}, {family_model}" if family_model else brand,
            "cpu_features": " ".join(features),
            "cores": info.get("cpu_count") or cpu.get("count") or float("nan")}


def vector_isa(features: str) -> str:
    """The widest vector instruction set named in cpu_features: AVX-512, AVX2, AVX or ''."""
    flags = set(features.split())
    return next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"))
                 if flag in flags), "")


# ----- judging ----------------------------------------------------------------------------------

def usual_gemm_gflops(cpu_name: str, cpu_features: str, baselines=BASELINES_DIR) -> float:
    """The best fp32 GEMM rate recorded in the baselines for this CPU (NaN when none is recorded)."""
    best = float("nan")
    for path in sorted(Path(baselines).glob("*.json")) if baselines and Path(baselines).is_dir() else ():
        try:
            machine_info = json.loads(path.read_text(encoding="utf-8")).get("machine_info") or {}
        except (OSError, ValueError):
            continue  # a baseline that cannot be read says nothing about this machine
        same = identity(machine_info)
        rate = (machine_info.get("cellbench") or {}).get("gemm_fp32_gflops")
        if same["cpu_name"] == cpu_name and same["cpu_features"] == cpu_features and rate:
            best = rate if np.isnan(best) else max(best, rate)
    return best


def loaded(run: dict, usual_gemm=float("nan")) -> list:
    """Why a run's timings are suspect, one phrase each (empty: the machine was quiet).

    run: a mapping with load_start, load_end (cores other work kept busy), cores and gemm_gflops (a row
    of reports.report.machines). Loaded means other work kept more than LOADED_BUSY_CORES cores busy
    when the run started or ended, or a GEMM rate below USUAL_GEMM_FRACTION of this CPU's usual.
    """
    reasons = []
    cores = run.get("cores", float("nan"))
    for when in ("start", "end"):
        load = run.get(f"load_{when}", float("nan"))
        if _known(load) and load > LOADED_BUSY_CORES:
            of = f" of {int(cores)}" if _known(cores) else ""
            reasons.append(f"{load:.2f} cores{of} busy with other work at the {when}")
    rate = run.get("gemm_gflops", float("nan"))
    if _known(rate) and _known(usual_gemm) and rate < USUAL_GEMM_FRACTION * usual_gemm:
        reasons.append(f"GEMM rate {rate:.0f} GFLOP/s, {rate / usual_gemm:.0%} of this CPU's best "
                       f"recorded {usual_gemm:.0f}")
    return reasons


def differences(old: dict, new: dict) -> list:
    """Why two runs' timings cannot be compared, one phrase each (empty: comparable).

    old, new: rows of reports.report.machines (cpu_name, cpu_features, gemm_gflops, loads, cores).
    """
    reasons = []
    if old["cpu_name"] != new["cpu_name"] or old["cpu_features"] != new["cpu_features"]:
        reasons.append(f"different CPUs: {_cpu(old)} vs {_cpu(new)}")
    a, b = old.get("gemm_gflops", float("nan")), new.get("gemm_gflops", float("nan"))
    if _known(a) and _known(b) and abs(b - a) > COMPARABLE_GEMM_GAP * min(a, b):
        reasons.append(f"GEMM rates {a:.0f} vs {b:.0f} GFLOP/s (more than {COMPARABLE_GEMM_GAP:.0%} apart)")
    for label, run in (("old", old), ("new", new)):
        reasons += [f"{label} run loaded ({why})" for why in loaded(run)]
    return reasons


def _cpu(run: dict) -> str:
    isa = vector_isa(run["cpu_features"])
    return f"{run['cpu_name']}{f' ({isa})' if isa else ''}"


def _known(value) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value))
