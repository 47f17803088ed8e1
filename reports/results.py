"""Reading saved benchmark results: pytest-benchmark JSON files -> one flat pandas DataFrame.

One job: load and validate. A missing, unreadable, corrupt or foreign file raises
ResultsError whose one-line message names the file and what is wrong with it; nothing
is computed from a file that fails.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from reports.machine import identity, vector_isa

SCHEMA = "cellbench-bench/1"  # written by reports/benchmarks/bench_cells.py into every extra_info

#: extra_info fields every cellbench benchmark must carry (another suite, such as the GPU benchmark,
#: can write them too and be reported the same way).
REQUIRED = ("schema", "backend", "cell", "config", "mode", "dtype", "T", "B", "I", "H", "flops")
#: extra_info fields a report uses when they are there (missing ones are left empty).
OPTIONAL = {"sweep": "", "bytes": float("nan"), "max_abs_error": float("nan"), "mean_abs_error": float("nan"),
            "max_rel_error": float("nan"), "first_call_s": float("nan")}


class ResultsError(ValueError):
    """A results file that cannot be used; str() is one line naming the file and the problem."""


def read_json(path) -> dict:
    path = Path(path)
    if path.is_dir():
        candidate = path / "benchmarks.json"  # a run folder written by `cellbench run`
        if not candidate.is_file():
            raise ResultsError(f"{path}: is a folder without benchmarks.json")
        path = candidate
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: cannot read it ({exc.__class__.__name__}: {exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: corrupt JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list) \
            or not isinstance(data.get("machine_info"), dict):
        raise ResultsError(f"{path}: not a pytest-benchmark JSON (expected an object with "
                           f"'machine_info' and a 'benchmarks' list)")
    if not data["benchmarks"]:
        raise ResultsError(f"{path}: holds no benchmarks")
    foreign = [b.get("name", "?") for b in data["benchmarks"]
               if not isinstance(b, dict) or (b.get("extra_info") or {}).get("schema") != SCHEMA]
    if foreign:
        raise ResultsError(f"{path}: not cellbench results ({len(foreign)} of {len(data['benchmarks'])} "
                           f"benchmarks lack extra_info.schema={SCHEMA!r}, first {foreign[0]!r})")
    for bench in data["benchmarks"]:
        if not isinstance(bench.get("stats"), dict) or "median" not in bench["stats"]:
            raise ResultsError(f"{path}: benchmark {bench.get('name', '?')!r} has no stats.median")
        missing = [k for k in REQUIRED if k not in bench["extra_info"]]
        if missing:
            raise ResultsError(f"{path}: benchmark {bench.get('name', '?')!r} lacks extra_info "
                               f"{', '.join(missing)}")
    return data


def machine_label(machine_info: dict) -> str:
    """A short name for the machine a file came from: host, CPU (family and model, widest vector
    instructions) and core count. Two KVM guests both called "AMD EPYC" get different names."""
    who = identity(machine_info)
    isa = vector_isa(who["cpu_features"])
    cores = who["cores"]
    cores = f"{int(cores)} cores" if cores == cores else "? cores"  # NaN: not recorded
    return f"{machine_info.get('node', '?')} ({who['cpu_name']}{f', {isa}' if isa else ''}, {cores})"


def load(paths) -> pd.DataFrame:
    """One row per benchmark of every file, with the extra_info and stats flattened into columns.

    Added columns: source (the file), machine (machine_label), cpu_name, cpu_features and cores
    (reports.machine.identity), gemm_gflops (the file's measured fp32 GEMM rate), load_start and
    load_end (cores other work kept busy), datetime, and per benchmark gflops = flops / median,
    pct_gemm = gflops / gemm_gflops, gbytes_per_s = bytes / median and spread_pct = 100 · IQR / median.
    """
    frames = []
    for path in paths:
        data = read_json(path)
        frame = pd.json_normalize(data["benchmarks"], sep=".")
        frame.columns = [c.removeprefix("extra_info.") for c in frame.columns]
        for column, default in OPTIONAL.items():
            if column not in frame.columns:
                frame[column] = default
        frame["sweep"] = frame["sweep"].fillna("")
        info = data["machine_info"].get("cellbench", {})
        frame["source"] = str(path)
        frame["machine"] = machine_label(data["machine_info"])
        for column, value in identity(data["machine_info"]).items():
            frame[column] = value
        frame["gemm_gflops"] = info.get("gemm_fp32_gflops", float("nan"))
        frame["load_start"] = info.get("busy_cores_start", float("nan"))
        frame["load_end"] = info.get("busy_cores_end", float("nan"))
        frame["datetime"] = data.get("datetime", "")
        frames.append(frame)
    df = pd.concat(frames, ignore_index=True)
    df["median_s"] = df["stats.median"]
    df["gflops"] = df["flops"] / df["median_s"] / 1e9
    df["pct_gemm"] = 100 * df["gflops"] / df["gemm_gflops"]
    df["gbytes_per_s"] = df["bytes"] / df["median_s"] / 1e9  # compulsory traffic only: a lower bound
    iqr = df["stats.iqr"] if "stats.iqr" in df.columns else float("nan")
    df["spread_pct"] = 100 * iqr / df["median_s"]  # the width of the middle half of the timed calls
    return df
