"""Writing a report folder: Markdown, a self-contained HTML page, CSV files and PNG plots.

One job: assemble. The tables come from reports.tables, the figures from reports.plots,
the conformance matrix from reports.conformance, gradient flow from reports.gradient_flow
and the judgement of each run's machine from reports.machine; this module writes the verdict
line and any warning at the top, formats the tables (DataFrame.to_markdown, pandas Styler)
and writes every file of the folder it is given.
"""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import pandas as pd

from reports import machine, plots, tables
from reports.backends import SIMULATED_PREFIX
from reports.conformance import conformance_matrix, failures

FLOP_NOTE = ("FLOPs: forward = 2·T·B·G·H·(I+H) for the two matrix products plus T·B·H·p pointwise "
             "(p = 4 rnn, 21 lstm, 17 gru); training (forward + backward) = 3 × forward. "
             "GFLOP/s = FLOPs / median time; % GEMM = GFLOP/s / the machine's fp32 GEMM rate "
             "(2048² numpy matmul, measured in the same run). GB/s = compulsory bytes (every array read "
             "or written once) / median time. IQR % = the interquartile range of the timed calls as a "
             "percentage of their median (in the headline, the widest of the row's backends): above a few "
             "percent, the machine was busy. speedup vs X = X's time / this time. "
             "torch.nn is torch.nn.RNN/LSTM/GRU called directly (module and tensors made once, outside the "
             "timing; training = forward + autograd gradients); ×torch is against it. The contract's torch "
             "oracle, which builds a module and copies arrays in every call, is timed only when named.")


def plain(value, digits=3) -> str:
    """value to ``digits`` significant digits in plain decimal notation: 0.000123, 12.3, 12346."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    return f"{value:.{max(0, digits - 1 - math.floor(math.log10(abs(value))))}f}"


def _short_datetime(value) -> str:
    stamp = pd.Timestamp(value)
    return stamp.strftime("%Y-%m-%d %H:%M") + (" UTC" if stamp.tzinfo is not None else "")


#: How each column is written: a format string or a function of the value.
FORMATS = {
    "median_ms": plain, "min_ms": plain, "old_ms": plain, "new_ms": plain, "speedup_vs_reference": "{:.2f}×",
    "speedup_vs_torch": "{:.2f}×", "gflops": plain, "pct_gemm": lambda v: plain(v, 2) + "%", "gbytes_per_s": plain,
    "spread_pct": "{:.0f}%", "IQR %": "{:.0f}%", "max_abs_error": "{:.1e}", "mean_abs_error": "{:.1e}",
    "max_rel_error": "{:.1e}", "first_call_s": "{:.3f}", "steady_s": plain, "ratio": "{:.3f}",
    "gemm_gflops": "{:.0f}", "load_start": "{:.2f}", "load_end": "{:.2f}", "datetime": _short_datetime,
}
#: Short headers, so that the tables fit a page; the CSV files keep the full column names.
DISPLAY = {
    "median_ms": "median ms", "min_ms": "min ms", "spread_pct": "IQR %", "speedup_vs_reference": "×ref",
    "speedup_vs_torch": "×torch", "gflops": "GFLOP/s", "pct_gemm": "% GEMM", "gbytes_per_s": "GB/s",
    "max_abs_error": "max abs err", "mean_abs_error": "mean abs err", "max_rel_error": "max rel err",
    "first_call_s": "first call s", "steady_s": "steady s", "old_ms": "old ms", "new_ms": "new ms",
    "gemm_gflops": "GEMM GFLOP/s", "benchmarks": "cases", "datetime": "when", "load_start": "busy at start",
    "load_end": "busy at end",
}


def _formatter(column: str):
    fmt = FORMATS.get(column)
    if fmt is None and column.endswith(" ms"):
        fmt = plain
    elif fmt is None and (column.endswith("×ref") or column.endswith("×torch")):
        fmt = "{:.2f}×"
    elif fmt is None and column.startswith("k="):
        fmt = "{:.2e}"
    return fmt.format if isinstance(fmt, str) else fmt


def formatted(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers as strings, each column in its format, under its short header; NaN as an empty cell.
    A column with no value at all (×ref where no reference ran) is left out, to save width."""
    out = frame.dropna(axis=1, how="all")
    for column in out.columns:
        fmt = _formatter(str(column))
        if fmt is not None:
            out[column] = [("" if pd.isna(v) else fmt(v)) for v in out[column]]
    return out.rename(columns=DISPLAY)


def to_markdown(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(none)"
    return formatted(frame).to_markdown(index=False, disable_numparse=True)


def to_html_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "<p>(none)</p>"
    styler = formatted(frame).style.hide(axis="index")

    def flag(value):
        text = str(value)
        if text.startswith("FAIL") or text in ("REGRESSION", "NO"):
            return "background-color: #f8d0d0; font-weight: bold"
        if text.startswith("pass") or text == "improved":
            return "background-color: #d8f0d8"
        if text.endswith("×"):  # a speedup: green when faster than the peer, red when slower
            speedup = float(text[:-1])
            if speedup >= 1.1:
                return "color: #17692b; font-weight: bold"
            if speedup <= 0.9:
                return "color: #a32020"
        return ""

    styler = styler.map(flag)
    return styler.to_html()


class Section:
    def __init__(self, title, text="", table=None, image=None):
        self.title, self.text, self.table, self.image = title, text, table, image


# ----- the verdict and the warnings at the top ------------------------------------------------------

def untimed_status(why: str, checked) -> str:
    """What became of a backend without timings, in the same words wherever the report names it:
    'simulated, checked, not timed' (checked: True, False, or None when unknown)."""
    words = ["simulated"] if why.startswith(SIMULATED_PREFIX) else []
    words += {True: ["checked"], False: ["not checked"], None: []}[checked]
    return ", ".join(words + ["not timed"])


def machine_warnings(df: pd.DataFrame, baselines=machine.BASELINES_DIR) -> list:
    """One warning per results file measured on a loaded machine (reports.machine.loaded), judged
    against the best GEMM rate the baselines record for its CPU."""
    warnings = []
    for _, run in tables.runs(df).iterrows():
        usual = machine.usual_gemm_gflops(run["cpu_name"], run["cpu_features"], baselines)
        reasons = machine.loaded(run.to_dict(), usual)
        if reasons:
            warnings.append(f"{run['source']} ({run['machine']}) was measured on a loaded machine: "
                            f"{'; '.join(reasons)}. Its timings are noisy; measure again on a quiet machine "
                            f"before drawing conclusions.")
    return warnings


def verdict(df: pd.DataFrame, junit=None, warnings=()) -> str:
    """One line: each backend against torch, the speed targets (cpu_targets runs), the property
    suite, and whether the machine was quiet."""
    parts = []
    detail = tables.per_config(df)
    peer = tables.torch_peer(df)
    for backend in tables.backend_order(df):
        speedups = detail.loc[detail["backend"] == backend, "speedup_vs_torch"].dropna()
        if backend not in ("reference", "torch", "torch.nn") and len(speedups):
            parts.append(f"{backend} is faster than {peer} in {int((speedups > 1).sum())} of {len(speedups)} "
                         f"cases (median {speedups.median():.2f}×)")
    met = df["met"].dropna() if "met" in df.columns else ()
    if len(met):
        parts.append(f"speed targets met in {int(met.astype(bool).sum())} of {len(met)}")
    if junit is not None:
        failed = int((junit["outcome"] == "failed").sum())
        parts.append(f"property suite FAILED ({failed} of {len(junit)} tests)" if failed
                     else f"property suite passed ({len(junit)} tests)")
    if warnings:
        parts.append("the machine was loaded, so the timings are noisy (see the warning)")
    if not parts:
        parts.append(f"{len(df)} benchmarks of {', '.join(tables.backend_order(df))} timed; "
                     f"no backend under test beside torch")
    return "Verdict: " + "; ".join(parts) + "."


# ----- the sections, one step each ------------------------------------------------------------------

def machines_section(df, left_out, junit) -> Section:
    text = ("Where each results file was measured, its fp32 GEMM rate (GFLOP/s), and how many cores other "
            "work kept busy just before the benchmarks started and after they ended (watched for a second "
            "while cellbench slept; above half a core, the machine was shared and the timings are noisy).")
    checked = None if junit is None else set(junit["backend"])
    for name, why in (left_out or {}).items():
        status = untimed_status(why, None if checked is None else name in checked)
        text += f" {name}: {status} ({why})."
    columns = ["machine", "source", "gemm_gflops", "benchmarks", "datetime", "load_start", "load_end"]
    return Section("Machines", text, tables.runs(df)[columns])


def timing_sections(df, out: Path) -> list:
    headline, detail = tables.headline(df), tables.per_config(df)
    headline.to_csv(out / "headline.csv", index=False)
    detail.to_csv(out / "per_config.csv", index=False)
    return [Section("Headline: median time per config", "Median time per call in ms; ×ref and ×torch "
                    "are speedups (> 1: faster). " + FLOP_NOTE, headline),
            Section("Per config and backend", "", detail)]


def sweep_sections(df, out: Path) -> list:
    sweep_rows = tables.sweeps(df)
    sections = []
    for axis in ("T", "B", "H"):
        png = plots.scaling_plot(sweep_rows, axis, out / f"scaling_{axis}.png")
        if png:
            sections.append(Section(f"Scaling with {axis}", "Other sizes as S2 (T=50, B=16, I=H=128).", image=png))
    return sections


def gradient_flow_section(gradient_flow, out: Path) -> Section:
    from reports.gradient_flow import gradient_flow_summary
    gradient_flow.to_csv(out / "gradient_flow.csv", index=False)
    png = plots.gradient_flow_plot(gradient_flow, out / "gradient_flow.png")
    return Section(
        "Gradient flow", "‖∂L/∂h_{T−k}‖ / ‖∂L/∂h_T‖ with L depending on h_T only, from the float64 "
        f"reference (T={int(gradient_flow['k'].max())}, B=16, I=32, H=64, x ~ N(0,1)). "
        "∂L/∂h_{T−k} is dh0 of backward on the last k "
        "steps started from h_{T−k}; for lstm c_{T−k} is held fixed. 'gate bias 1' sets the bias of the "
        "gate that keeps the old state (lstm f, gru z) to 1.", gradient_flow_summary(gradient_flow), png)


def accuracy_sections(df, out: Path) -> list:
    checked = df.dropna(subset=["max_abs_error"])  # reports.cpu_targets times only: no errors
    accuracy, first = tables.accuracy(checked), tables.first_calls(df)
    accuracy.to_csv(out / "accuracy.csv", index=False)
    first.to_csv(out / "first_call.csv", index=False)
    unchecked = sorted(set(df["backend"]) - set(checked["backend"]))
    return [Section("Accuracy against the float64 reference",
                    "Over hs and h_n (inference) and also every gradient (training), on the same "
                    "inputs (drawn once, exact in float32)." + (
                        f" Not checked in these results (timed only): {', '.join(unchecked)}." if unchecked else ""),
                    accuracy),
            Section("First call (compile or cache load) vs steady state",
                    "The slowest first call of each backend, cell, mode and dtype in seconds, beside the "
                    "steady-state median of the same benchmark.", first)]


def conformance_section(junit, df, left_out, out: Path) -> Section:
    """backend × property family; a backend without timings says why in its row, in the words
    the Machines section uses (untimed_status)."""
    labelled = junit[junit["backend"] != "(unlabelled)"]
    others = junit[junit["backend"] == "(unlabelled)"]
    matrix = conformance_matrix(labelled if len(labelled) else junit)
    junit.to_csv(out / "conformance_cases.csv", index=False)
    matrix.to_csv(out / "conformance.csv", index=False)
    timed = set(df["backend"])
    matrix["backend"] = [name if name in timed or name == "(unlabelled)"
                         else f"{name} ({untimed_status((left_out or {}).get(name, ''), True)})"
                         for name in matrix["backend"]]
    failed = failures(junit)
    text = "From the property suite's junit XML: passed/run testcases and Hypothesis examples tried."
    if len(labelled) and len(others):  # example-based tests not tied to one backend: one line
        counts = others["outcome"].value_counts()
        text += (f" Other tests (example-based, not tied to a backend): {counts.get('passed', 0)} passed, "
                 f"{counts.get('failed', 0)} failed, {counts.get('skipped', 0)} skipped.")
    if failed:
        text += " Failed: " + "; ".join(failed[:10]) + (" …" if len(failed) > 10 else "")
    return Section("Conformance: backend × property family", text, matrix)


def build_sections(df, out: Path, junit=None, gradient_flow=None, left_out=None) -> list:
    """Compute every table and figure, write the CSVs and PNGs into out; return the sections."""
    sections = [machines_section(df, left_out, junit), *timing_sections(df, out), *sweep_sections(df, out)]
    if gradient_flow is not None:
        sections.append(gradient_flow_section(gradient_flow, out))
    sections += accuracy_sections(df, out)
    if junit is not None:
        sections.append(conformance_section(junit, df, left_out, out))
    df.drop(columns=[c for c in df.columns if c.startswith("stats.data")], errors="ignore") \
      .to_csv(out / "results.csv", index=False)
    return sections


# ----- writing ----------------------------------------------------------------------------------------

def write_markdown(sections, path: Path, title: str, lead=(), warnings=()):
    parts = [f"# {title}", ""] + [f"**{line}**" for line in lead] + [""]
    parts += [line for warning in warnings for line in (f"> **Warning:** {warning}", "")]
    for section in sections:
        parts += [f"## {section.title}", ""]
        if section.text:
            parts += [section.text, ""]
        if section.table is not None:
            parts += [to_markdown(section.table), ""]
        if section.image is not None:
            parts += [f"![{section.title}]({Path(section.image).name})", ""]
    path.write_text("\n".join(parts), encoding="utf-8")


CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; line-height: 1.4; padding: 0 1em; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { margin-top: 2em; color: #333; }
p.verdict { font-size: 1.1em; font-weight: bold; }
p.warning { background: #fff3cd; border-left: 4px solid #e0a800; padding: .6em 1em; max-width: 60em; }
p.note { color: #555; font-size: .92em; max-width: 60em; }
table { border-collapse: collapse; font-size: .88em; margin: .5em 0 1em; }
th, td { padding: .3em .6em; border-bottom: 1px solid #e4e4e4; text-align: right; white-space: nowrap; }
th { background: #f4f6f8; position: sticky; top: 0; }
tr:nth-child(even) td { background-color: #fafafa; }
td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; }
"""


def write_html(sections, path: Path, title: str, lead=(), warnings=()):
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts += [f"<p class='verdict'>{html.escape(line)}</p>" for line in lead]
    parts += [f"<p class='warning'><b>Warning:</b> {html.escape(warning)}</p>" for warning in warnings]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.text:
            parts.append(f"<p class='note'>{html.escape(section.text)}</p>")
        if section.table is not None:
            parts.append(to_html_table(section.table))
        if section.image is not None:
            data = base64.b64encode(Path(section.image).read_bytes()).decode("ascii")
            parts.append(f"<img alt='{html.escape(section.title)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")


def write_report(df, out: Path, junit=None, gradient_flow=None, left_out=None, title="cellbench report",
                 baselines=machine.BASELINES_DIR):
    """Write report.md, report.html, the CSVs and the PNGs into the folder out (which must exist).

    left_out: {backend: why} of backends the run did not time (reports.backends.resolve_backends).
    baselines: the folder of baseline runs that says what GEMM rate each CPU usually reaches.
    Returns (verdict line, warnings, sections).
    """
    out = Path(out)
    warnings = machine_warnings(df, baselines)
    line = verdict(df, junit, warnings)
    sections = build_sections(df, out, junit=junit, gradient_flow=gradient_flow, left_out=left_out)
    write_markdown(sections, out / "report.md", title, [line], warnings)
    write_html(sections, out / "report.html", title, [line], warnings)
    return line, warnings, sections
