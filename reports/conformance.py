"""The conformance matrix: backend × property family, pass or fail, from the property suite's junit XML.

One job: read pytest's junit XML. The property suite records on every testcase, with
record_property, `backend`, `family`, `cell` and `examples` (the Hypothesis examples its
body ran). Testcases without them (plain example-based tests) are grouped under backend
"(unlabelled)" and their test module as the family, so that nothing is dropped.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd


class JunitError(ValueError):
    """A junit XML file that cannot be read; str() is one line naming the file and the problem."""


def read_junit(path) -> pd.DataFrame:
    """One row per testcase: backend, family, cell, examples, outcome (passed/failed/skipped), test."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise JunitError(f"{path}: no such file") from None
    except ET.ParseError as exc:
        raise JunitError(f"{path}: corrupt junit XML ({exc})") from None
    if root.tag not in ("testsuites", "testsuite"):
        raise JunitError(f"{path}: not a junit XML (root element <{root.tag}>)")
    rows = []
    for case in root.iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        elif case.find("skipped") is not None:
            outcome = "skipped"
        else:
            outcome = "passed"
        module = (case.get("classname") or "").split(".")
        try:
            examples = int(props["examples"]) if "examples" in props else None  # None: not a Hypothesis test
        except ValueError:
            examples = None
        rows.append({
            "backend": props.get("backend", "(unlabelled)"),
            "family": props.get("family") or next((m for m in reversed(module) if m.startswith("test_")), "?"),
            "cell": props.get("cell", ""),
            "examples": examples,
            "outcome": outcome,
            "test": f"{case.get('classname')}::{case.get('name')}",
        })
    return pd.DataFrame(rows, columns=["backend", "family", "cell", "examples", "outcome", "test"])


def _verdict(group: pd.DataFrame) -> str:
    counts = group["outcome"].value_counts()
    passed, failed = counts.get("passed", 0), counts.get("failed", 0)
    ran = passed + failed
    if ran == 0:
        return "skipped"
    word = "FAIL" if failed else "pass"
    examples = group["examples"].dropna()
    return f"{word} {passed}/{ran}" + (f" ({int(examples.sum())} ex.)" if len(examples) else "")


def conformance_matrix(cases: pd.DataFrame) -> pd.DataFrame:
    """backend × family: 'pass n/n (E ex.)', 'FAIL p/n (E ex.)' or 'skipped'; '—' where nothing ran."""
    if cases.empty:
        return pd.DataFrame()
    cells = {key: _verdict(group) for key, group in cases.groupby(["backend", "family"], sort=False)}
    matrix = pd.Series(cells).unstack(fill_value="—")
    matrix.index.name, matrix.columns.name = "backend", None
    return matrix.reset_index()


def failures(cases: pd.DataFrame) -> list:
    return sorted(cases.loc[cases["outcome"] == "failed", "test"])
