"""The conformance matrix: backend × property family, pass or fail, from the property suite's junit XML.

One job: read pytest's junit XML. The property suite records on every testcase, with
record_property, `backend`, `family`, `cell` and `examples` (the Hypothesis examples its
body ran). Testcases without them (plain example-based tests) are grouped under backend
"(unlabelled)" and their test module as the family, so that nothing is dropped.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd


class JunitError(ValueError):
    """A junit XML file that cannot be read; str() is one line naming the file and the problem."""


#: xdist's words for a test during which the backend killed the worker process.
CRASHED = "crashed while running"
#: properties.conftest's words for a failure that a known framework defect causes.
KNOWN_DEFECT = "this failure is the framework defect"
#: The family that judges error messages (the contract's wording), shown apart from the mathematics.
CONTRACT_FAMILY = "contract_errors"


def read_junit(path) -> pd.DataFrame:
    """One row per testcase: backend, family, cell, examples, outcome, test, message.

    outcome: passed, failed, crashed (the backend killed the process: xdist's crash report),
    known defect (xfail naming a framework finding, docs/findings.md) or skipped. message: the
    failure's message (the field, the worst element, both values, the tolerance, the example)."""
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
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped")
        message = ""
        if problem is not None:
            text = problem.text or ""
            message = problem.get("message") or text.strip()
            outcome = "crashed" if CRASHED in text + message else "failed"
            known = re.search(KNOWN_DEFECT + r" (\S+)", text)
            if known:
                message += f"\nknown framework defect {known[1]} (docs/findings.md)"
        elif skipped is not None and skipped.get("type") == "pytest.xfail":
            outcome, message = "known defect", skipped.get("message", "")
        elif skipped is not None:
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
            "message": message,
        })
    return pd.DataFrame(rows, columns=["backend", "family", "cell", "examples", "outcome", "test", "message"])


def _verdict(group: pd.DataFrame) -> str:
    counts = group["outcome"].value_counts()
    passed, failed, crashed, known = (counts.get(k, 0) for k in ("passed", "failed", "crashed", "known defect"))
    ran = passed + failed + crashed + known
    if ran == 0:
        return "skipped"
    word = "CRASH" if crashed else "FAIL" if failed else "known defect" if known else "pass"
    examples = group["examples"].dropna()
    return f"{word} {passed}/{ran}" + (f" ({int(examples.sum())} ex.)" if len(examples) else "")


def conformance_matrix(cases: pd.DataFrame) -> pd.DataFrame:
    """backend × family: 'pass n/n (E ex.)', 'FAIL p/n (E ex.)' or 'skipped'; '—' where nothing ran."""
    if cases.empty:
        return pd.DataFrame()
    cells = {key: _verdict(group) for key, group in cases.groupby(["backend", "family"], sort=False)}
    matrix = pd.Series(cells).unstack(fill_value="—")
    # The error-message family last, apart from the mathematics and structure families it follows.
    order = [f for f in matrix.columns if f != CONTRACT_FAMILY] + [f for f in matrix.columns if f == CONTRACT_FAMILY]
    matrix = matrix[order].rename(columns={CONTRACT_FAMILY: f"| {CONTRACT_FAMILY} (wording)"})
    matrix.index.name, matrix.columns.name = "backend", None
    return matrix.reset_index()


def failures(cases: pd.DataFrame) -> list:
    """The tests that failed or crashed, sorted."""
    return sorted(cases.loc[cases["outcome"].isin(["failed", "crashed"]), "test"])


def verdicts(cases: pd.DataFrame) -> list:
    """One short verdict per failing or crashed test: its id, then its message's lines (the field, the
    worst element, both values, the tolerance, the example), at most ``MESSAGE_LINES`` of them."""
    out = []
    for row in cases[cases["outcome"].isin(["failed", "crashed"])].sort_values("test").itertuples():
        lines = [line.strip() for line in str(row.message).splitlines() if line.strip()]
        out.append(f"{row.outcome.upper()} {row.test}" + "".join(f"\n    {line}" for line in lines[:MESSAGE_LINES]))
    return out


MESSAGE_LINES = 4
