"""The report's figures (matplotlib, PNG): scaling against T, B and H, and gradient flow.

One job: draw. Each function takes a DataFrame from reports.tables / reports.gradient_flow
and writes one PNG, returning its path (or None when there is nothing to draw).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on CI machines or GPU boxes
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

import math  # noqa: E402

PLAIN = FuncFormatter(lambda value, _: f"{value:g}")  # 0.5, 20, 300 rather than 2×10^1
#: Minor log ticks labelled at 2 and 5 × 10^n only, so that the axis stays readable.
SPARSE = FuncFormatter(lambda value, _: f"{value:g}" if value > 0 and
                       round(value / 10 ** math.floor(math.log10(value))) in (2, 5) else "")

BACKEND_STYLE = {"reference": ("tab:gray", "o"), "torch.nn": ("tab:orange", "s"), "torch": ("tab:brown", "v"),
                 "jit.cpu": ("tab:blue", "^"), "jit.cuda": ("tab:green", "D")}
OTHER_COLOURS = ("tab:purple", "tab:pink", "tab:olive", "tab:cyan")  # third-party backends
MODE_LINE = {"inference": "-", "training": "--"}
AXIS_LABEL = {"T": "T (time steps)", "B": "B (batch rows)", "H": "H = I (hidden units)"}


def _style(backend):
    if backend in BACKEND_STYLE:
        return BACKEND_STYLE[backend]
    return OTHER_COLOURS[sum(map(ord, backend)) % len(OTHER_COLOURS)], "x"  # stable across plots


def scaling_plot(rows, axis: str, path: Path):
    """Median time against one swept size, per backend (colour) and mode (line style), log–log."""
    rows = rows[rows["sweep"] == axis]
    if rows.empty:
        return None
    panels = list(dict.fromkeys(zip(rows["cell"], rows["dtype"], rows.get("machine", ""))))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4), squeeze=False)
    for ax, (cell, dtype, machine) in zip(axes[0], panels):
        panel = rows[(rows["cell"] == cell) & (rows["dtype"] == dtype) & (rows["machine"] == machine)]
        for (backend, mode), line in panel.groupby(["backend", "mode"], sort=False):
            line = line.groupby("size")["median_s"].median().sort_index()
            colour, marker = _style(backend)
            ax.plot(line.index, line.values * 1e3, MODE_LINE.get(mode, ":"), color=colour, marker=marker,
                    label=f"{backend} {mode}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        sizes = sorted(panel["size"].unique())
        ax.set_xticks(sizes)  # tick exactly the measured sizes, written plainly
        ax.xaxis.set_major_formatter(PLAIN)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(PLAIN)
        ax.yaxis.set_minor_formatter(SPARSE)
        ax.set_xlabel(AXIS_LABEL[axis])
        ax.set_ylabel("median time per call (ms)")
        ax.set_title(f"{cell} {dtype}: time vs {axis}" + (f"\n{machine}" if rows["machine"].nunique() > 1 else ""),
                     fontsize=10)
        finish_axes(ax)
    return save(fig, path)


def gradient_flow_plot(table, path: Path):
    """‖∂L/∂h_{T−k}‖ / ‖∂L/∂h_T‖ against k, log y, one line per cell and init."""
    colours = {"rnn_tanh": "tab:red", "lstm": "tab:blue", "gru": "tab:green"}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (cell, init), line in table.groupby(["cell", "init"], sort=False):
        ax.plot(line["k"], line["ratio"], "-" if init == "default" else "--", color=colours.get(cell),
                label=f"{cell}, {init} init")
    ax.set_yscale("log")
    ax.set_xlabel("k (steps back from the last)")
    ax.set_ylabel(r"$\|\partial L/\partial h_{T-k}\| \,/\, \|\partial L/\partial h_T\|$")
    ax.set_title("Gradient flow through time (reference, float64)", fontsize=10)
    finish_axes(ax)
    return save(fig, path)


def finish_axes(ax):
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def save(fig, path: Path):
    """Write the figure as PNG and free it (pyplot keeps every open figure alive)."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
