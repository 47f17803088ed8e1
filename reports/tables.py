"""The report's tables, computed with pandas from the flat results of reports.results.load.

One job: turn the results into DataFrames (the runs, the headline, per-config detail, accuracy,
first-call times, and the comparison of two runs). Formatting belongs to reports.report.
"""
from __future__ import annotations

import pandas as pd

from reference.contract import CELLS

CASE = ["cell", "config", "mode", "dtype"]
KEY = ["backend"] + CASE  # one benchmark of a run
CONFIG_ORDER = ["S1", "S2", "M", "L1", "L2"]


def _case_index(df: pd.DataFrame) -> list:
    """The case columns, led by the machine when the results come from several machines."""
    return (["machine"] if df["machine"].nunique() > 1 else []) + CASE


def _sort_cases(frame: pd.DataFrame) -> pd.DataFrame:
    order = {"cell": {c: i for i, c in enumerate(CELLS)},
             "config": {c: i for i, c in enumerate(CONFIG_ORDER)},
             "mode": {"inference": 0, "training": 1}}

    def key(column):
        mapping = order.get(column.name)
        return column.map(mapping).fillna(len(mapping or ())) if mapping else column

    return frame.sort_values(list(frame.columns.intersection(["machine"] + CASE)), key=key, kind="stable")


def named_configs(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["sweep"].fillna("") == ""]


def torch_peer(df: pd.DataFrame) -> str:
    """PyTorch's timing: torch.nn called directly when measured, else the contract's torch oracle."""
    return "torch.nn" if (df["backend"] == "torch.nn").any() else "torch"


def backend_order(df: pd.DataFrame) -> list:
    preferred = ["reference", "torch.nn", "torch", "jit.cpu", "jit.cuda"]
    present = list(dict.fromkeys(df["backend"]))
    return [b for b in preferred if b in present] + [b for b in present if b not in preferred]


def per_config(df: pd.DataFrame) -> pd.DataFrame:
    """Long form, one row per case and backend: median time, its spread, speedups, GFLOP/s and % of GEMM rate.

    spread_pct = 100 · IQR / median of the timed calls: how much the middle half of them scattered.

    speedup vs X = X's median / this backend's median on the same case (> 1: faster than X);
    the torch speedup is against torch.nn when it was measured (see torch_peer).
    Several results of one case (repeated runs on one machine) are combined by their median.
    """
    df = named_configs(df)
    keys = _case_index(df)
    grouped = (df.groupby(keys + ["backend"], sort=False)
               .agg(median_s=("median_s", "median"), min_s=("stats.min", "min"), gflops=("gflops", "median"),
                    pct_gemm=("pct_gemm", "median"), gbytes_per_s=("gbytes_per_s", "median"),
                    spread_pct=("spread_pct", "median"), rounds=("stats.rounds", "sum"))
               .reset_index())
    for column, peer in (("speedup_vs_reference", "reference"), ("speedup_vs_torch", torch_peer(df))):
        peer_time = grouped[grouped["backend"] == peer].set_index(keys)["median_s"]
        joined = grouped.join(peer_time.rename("peer"), on=keys)
        grouped[column] = joined["peer"] / joined["median_s"]
    grouped["median_ms"] = grouped.pop("median_s") * 1e3
    grouped["min_ms"] = grouped.pop("min_s") * 1e3  # beside the median: a gap between them means noise
    columns = keys + ["backend", "median_ms", "min_ms", "spread_pct", "speedup_vs_reference", "speedup_vs_torch",
                      "gflops", "pct_gemm", "gbytes_per_s", "rounds"]
    order = {b: i for i, b in enumerate(backend_order(df))}
    out = _sort_cases(grouped.assign(_b=grouped["backend"].map(order)).sort_values("_b", kind="stable"))
    return out[columns].reset_index(drop=True)


def headline(df: pd.DataFrame) -> pd.DataFrame:
    """Wide form: per case, each backend's median time (ms), the widest spread of them (IQR % of the
    median), each backend's speedup vs reference and vs torch.

    The compact table printed by `cellbench run`.
    """
    detail = per_config(df)
    keys = _case_index(df)
    backends = backend_order(df)
    times = detail.pivot_table(index=keys, columns="backend", values="median_ms", sort=False)
    times = times[[b for b in backends if b in times.columns]].add_suffix(" ms")
    speedups = detail[detail["backend"] != "reference"].pivot_table(
        index=keys, columns="backend", values="speedup_vs_reference", sort=False)
    speedups = speedups[[b for b in backends if b in speedups.columns]].add_suffix(" ×ref")
    spread = detail.groupby(keys, sort=False)["spread_pct"].max().rename("IQR %")
    table = times.join(spread).join(speedups)
    peer = torch_peer(df)
    if peer in backends:
        vs_torch = detail[~detail["backend"].isin(["reference", "torch", "torch.nn"])].pivot_table(
            index=keys, columns="backend", values="speedup_vs_torch", sort=False)
        table = table.join(vs_torch[[b for b in backends if b in vs_torch.columns]].add_suffix(" ×torch"))
    table.columns.name = None
    return _sort_cases(table.reset_index()).reset_index(drop=True)


def accuracy(df: pd.DataFrame) -> pd.DataFrame:
    """Per backend and dtype: the max and mean absolute error against the float64 reference."""
    keys = (["machine"] if df["machine"].nunique() > 1 else []) + ["backend", "dtype"]
    table = (df.groupby(keys, sort=False)
             .agg(max_abs_error=("max_abs_error", "max"), mean_abs_error=("mean_abs_error", "mean"),
                  max_rel_error=("max_rel_error", "max"), cases=("max_abs_error", "size"))
             .reset_index())
    return table.sort_values(keys, kind="stable").reset_index(drop=True)


def first_calls(df: pd.DataFrame) -> pd.DataFrame:
    """Per backend, cell, mode and dtype: the slowest first call (compile or cache load) vs steady state."""
    keys = (["machine"] if df["machine"].nunique() > 1 else []) + ["backend", "cell", "mode", "dtype"]
    timed = df.dropna(subset=["first_call_s"])
    worst = timed.loc[timed.groupby(keys, sort=False)["first_call_s"].idxmax()]
    table = worst[keys + ["config", "first_call_s", "median_s"]].rename(
        columns={"config": "at config", "median_s": "steady_s"})
    return table.sort_values(keys, kind="stable").reset_index(drop=True)


def sweeps(df: pd.DataFrame) -> pd.DataFrame:
    """The scaling-sweep rows, with the swept size in column `size`."""
    rows = df[df["sweep"].fillna("") != ""].copy()
    rows["size"] = [row[row["sweep"]] for _, row in rows.iterrows()]
    return rows


def runs(df: pd.DataFrame) -> pd.DataFrame:
    """One row per results file: its machine (label, CPU, vector features, cores), fp32 GEMM rate,
    benchmark count, date and the cores other work kept busy (what reports.machine judges)."""
    columns = dict(cpu_name=("cpu_name", "first"), cpu_features=("cpu_features", "first"),
                   cores=("cores", "first"), gemm_gflops=("gemm_gflops", "first"), benchmarks=("name", "size"),
                   datetime=("datetime", "first"), load_start=("load_start", "first"),
                   load_end=("load_end", "first"))
    return df.groupby(["machine", "source"], sort=False).agg(**columns).reset_index()


def compare(old: pd.DataFrame, new: pd.DataFrame, threshold: float, comparable: bool = True) -> pd.DataFrame:
    """Per benchmark present in both runs: ratio = new median / old median, flagged beyond 1 ± threshold.

    status, when the runs are comparable (reports.machine.differences is empty): "REGRESSION" when
    ratio > 1 + threshold, "improved" when ratio < 1 / (1 + threshold). When they are not, the same
    rows read "slower" and "faster": a change of machine or load is not a regression of the code.
    Benchmarks in only one run are left out (see only_in_one).
    """
    a = old.groupby(KEY, sort=False)["median_s"].median().rename("old_ms") * 1e3
    b = new.groupby(KEY, sort=False)["median_s"].median().rename("new_ms") * 1e3
    table = pd.concat([a, b], axis=1, join="inner").reset_index()
    table["ratio"] = table["new_ms"] / table["old_ms"]
    worse, better = ("REGRESSION", "improved") if comparable else ("slower", "faster")
    status = pd.Series("", index=table.index, dtype=object)
    status[table["ratio"] > 1 + threshold] = worse
    status[table["ratio"] < 1 / (1 + threshold)] = better
    table["status"] = status
    return table.sort_values("ratio", ascending=False, kind="stable").reset_index(drop=True)


def only_in_one(old: pd.DataFrame, new: pd.DataFrame) -> tuple:
    """(benchmarks only in old, benchmarks only in new), counted by backend, cell, config, mode, dtype."""
    a = set(map(tuple, old[KEY].drop_duplicates().to_numpy()))
    b = set(map(tuple, new[KEY].drop_duplicates().to_numpy()))
    return len(a - b), len(b - a)
