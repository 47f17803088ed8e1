"""Writing a report folder: Markdown, a self-contained HTML page, CSV files and PNG plots.

One job: assemble. The tables come from reports.tables, the figures from reports.plots,
the conformance matrix from reports.conformance and gradient flow from
reports.gradient_flow; this module formats them (DataFrame.to_markdown, pandas Styler)
and writes every file of the folder it is given.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from reports import plots, tables
from reports.conformance import conformance_matrix, failures

FLOP_NOTE = ("FLOPs: forward = 2·T·B·G·H·(I+H) for the two matrix products plus T·B·H·p pointwise "
             "(p = 4 rnn, 21 lstm, 17 gru); training (forward + backward) = 3 × forward. "
             "GFLOP/s = FLOPs / median time; % GEMM = GFLOP/s / the machine's fp32 GEMM rate "
             "(2048² numpy matmul, measured in the same run). gbytes_per_s = compulsory bytes (every array read "
             "or written once) / median time. speedup vs X = X's time / this time. "
             "torch.nn is torch.nn.RNN/LSTM/GRU called directly (module and tensors made once, outside the "
             "timing; training = forward + autograd gradients); ×torch is against it. The contract's torch "
             "oracle, which builds a module and copies arrays in every call, is timed only when named.")

FORMATS = {
    "median_ms": "{:.3g}", "min_ms": "{:.3g}", "speedup_vs_reference": "{:.2f}×", "speedup_vs_torch": "{:.2f}×",
    "gflops": "{:.2f}", "pct_gemm": "{:.1f}%", "gbytes_per_s": "{:.2f}", "max_abs_error": "{:.2e}", "mean_abs_error": "{:.2e}",
    "max_rel_error": "{:.2e}", "first_call_s": "{:.3f}", "steady_s": "{:.4f}", "old_ms": "{:.3g}",
    "new_ms": "{:.3g}", "ratio": "{:.3f}", "gemm_gflops": "{:.1f}", "load_start": "{:.2f}",
    "load_end": "{:.2f}",
}


def _formatter(column: str):
    if column in FORMATS:
        return FORMATS[column]
    if column.endswith(" ms"):
        return "{:.3g}"
    if column.endswith("×ref") or column.endswith("×torch"):
        return "{:.2f}×"
    if column.startswith("k="):
        return "{:.2e}"
    return None


def formatted(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers as strings, each column in its format; NaN as an empty cell."""
    out = frame.copy()
    for column in out.columns:
        fmt = _formatter(str(column))
        if fmt is not None:
            out[column] = [("" if pd.isna(v) else fmt.format(v)) for v in out[column]]
    return out


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
        if text.startswith("FAIL") or text == "REGRESSION":
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


def machines(df: pd.DataFrame) -> pd.DataFrame:
    columns = dict(gemm_gflops=("gemm_gflops", "first"), benchmarks=("name", "size"), datetime=("datetime", "first"))
    if "load_start" in df.columns:
        columns.update(load_start=("load_start", "first"), load_end=("load_end", "first"))
    return df.groupby(["machine", "source"], sort=False).agg(**columns).reset_index()


class Section:
    def __init__(self, title, text="", table=None, image=None):
        self.title, self.text, self.table, self.image = title, text, table, image


def build_sections(df, out: Path, junit=None, gradient_flow=None, notes=()):
    """Compute every table and figure, write the CSVs and PNGs into out; return the sections."""
    sections = [Section("Machines", "Where each results file was measured, its fp32 GEMM rate (GFLOP/s), and "
                        "the 1-minute load average when the benchmarks started and ended (above the core "
                        "count, other work shared the machine and the timings are noisy).",
                        machines(df))]
    if notes:
        sections[0].text += " " + " ".join(notes)
    headline = tables.headline(df)
    detail = tables.per_config(df)
    sections.append(Section("Headline: median time per config", "Median time per call in ms; ×ref and ×torch "
                            "are speedups (> 1: faster). " + FLOP_NOTE, headline))
    sections.append(Section("Per config and backend", "", detail))
    headline.to_csv(out / "headline.csv", index=False)
    detail.to_csv(out / "per_config.csv", index=False)

    sweep_rows = tables.sweeps(df)
    for axis in ("T", "B", "H"):
        png = plots.scaling_plot(sweep_rows, axis, out / f"scaling_{axis}.png")
        if png:
            sections.append(Section(f"Scaling with {axis}", f"Other sizes as S2 (T=50, B=16, I=H=128).", image=png))

    if gradient_flow is not None:
        from reports.gradient_flow import gradient_flow_summary
        gradient_flow.to_csv(out / "gradient_flow.csv", index=False)
        png = plots.gradient_flow_plot(gradient_flow, out / "gradient_flow.png")
        sections.append(Section(
            "Gradient flow", "‖∂L/∂h_{T−k}‖ / ‖∂L/∂h_T‖ with L depending on h_T only, from the float64 "
            f"reference (T={int(gradient_flow['k'].max())}, B=16, I=32, H=64, x ~ N(0,1)). "
            "∂L/∂h_{T−k} is dh0 of backward on the last k "
            "steps started from h_{T−k}; for lstm c_{T−k} is held fixed. 'gate bias 1' sets the bias of the "
            "gate that keeps the old state (lstm f, gru z) to 1.", gradient_flow_summary(gradient_flow), png))

    accuracy = tables.accuracy(df)
    accuracy.to_csv(out / "accuracy.csv", index=False)
    sections.append(Section("Accuracy against the float64 reference",
                            "Over hs and h_n (inference) and also every gradient (training), on the same "
                            "inputs (drawn once, exact in float32).", accuracy))
    first = tables.first_calls(df)
    first.to_csv(out / "first_call.csv", index=False)
    sections.append(Section("First call (compile or cache load) vs steady state",
                            "The slowest first call of each backend, cell, mode and dtype in seconds, beside the "
                            "steady-state median of the same benchmark.", first))

    if junit is not None:
        labelled = junit[junit["backend"] != "(unlabelled)"]
        others = junit[junit["backend"] == "(unlabelled)"]
        matrix = conformance_matrix(labelled if len(labelled) else junit)
        junit.to_csv(out / "conformance_cases.csv", index=False)
        matrix.to_csv(out / "conformance.csv", index=False)
        failed = failures(junit)
        text = "From the property suite's junit XML: passed/run testcases and Hypothesis examples tried."
        if len(labelled) and len(others):  # example-based tests not tied to one backend: one line
            counts = others["outcome"].value_counts()
            text += (f" Other tests (example-based, not tied to a backend): {counts.get('passed', 0)} passed, "
                     f"{counts.get('failed', 0)} failed, {counts.get('skipped', 0)} skipped.")
        if failed:
            text += " Failed: " + "; ".join(failed[:10]) + (" …" if len(failed) > 10 else "")
        sections.append(Section("Conformance: backend × property family", text, matrix))

    df.drop(columns=[c for c in df.columns if c.startswith("stats.data")], errors="ignore") \
      .to_csv(out / "results.csv", index=False)
    return sections


def write_markdown(sections, path: Path, title: str):
    parts = [f"# {title}", ""]
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
p.note { color: #555; font-size: .92em; max-width: 60em; }
table { border-collapse: collapse; font-size: .88em; margin: .5em 0 1em; }
th, td { padding: .3em .7em; border-bottom: 1px solid #e4e4e4; text-align: right; white-space: nowrap; }
th { background: #f4f6f8; position: sticky; top: 0; }
tr:nth-child(even) td { background-color: #fafafa; }
td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; }
"""


def write_html(sections, path: Path, title: str):
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
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


def write_report(df, out: Path, junit=None, gradient_flow=None, notes=(), title="cellbench report"):
    """Write report.md, report.html, the CSVs and the PNGs into the folder out (which must exist)."""
    out = Path(out)
    sections = build_sections(df, out, junit=junit, gradient_flow=gradient_flow, notes=notes)
    write_markdown(sections, out / "report.md", title)
    write_html(sections, out / "report.html", title)
    return sections
