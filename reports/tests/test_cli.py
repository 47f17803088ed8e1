"""The `cellbench` command: bad input gets one clear line, runs never overwrite each other.

Every test writes under its own tmp_path (never reports/runs), so the tests run in any
order and under pytest-xdist.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reports import cli

FIXTURE = Path(__file__).parent / "data" / "smoke_reference_torchnn.json"


def one_line_error(capsys, argv, *needles):
    """Run cellbench in-process; check exit status 2 and a single stderr line holding every needle."""
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cellbench: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in err
    return lines[0]


def test_missing_results_file(capsys, tmp_path):
    out = tmp_path / "out"
    one_line_error(capsys, ["report", str(tmp_path / "nope.json"), "-o", str(out)], "nope.json", "no such file")
    assert not out.exists()


def test_corrupt_results_file(capsys, tmp_path):
    bad = tmp_path / "truncated.json"
    bad.write_text(FIXTURE.read_text()[:500])
    out = tmp_path / "out"
    one_line_error(capsys, ["report", str(FIXTURE), str(bad), "-o", str(out)], "truncated.json", "corrupt JSON")
    assert not out.exists()  # one bad file among good ones: nothing written


@pytest.mark.parametrize("content, problem", [
    ([1, 2, 3], "not a pytest-benchmark JSON"),
    ({"machine_info": {}, "benchmarks": [{"name": "test_other", "stats": {"median": 1.0}, "extra_info": {}}]},
     "not cellbench results"),
    ({"machine_info": {}, "benchmarks": []}, "holds no benchmarks"),
])
def test_foreign_results_file(capsys, tmp_path, content, problem):
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps(content))
    one_line_error(capsys, ["compare", str(FIXTURE), str(foreign)], "foreign.json", problem)


def test_results_lacking_a_required_field(capsys, tmp_path):
    data = json.loads(FIXTURE.read_text())
    del data["benchmarks"][1]["extra_info"]["flops"]
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(data))
    one_line_error(capsys, ["report", str(partial), "-o", str(tmp_path / "out")], "partial.json", "lacks extra_info flops")
    assert not (tmp_path / "out").exists()


def test_existing_output_folder_is_never_overwritten(capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    one_line_error(capsys, ["report", str(FIXTURE), "-o", str(out)], str(out), "not empty")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_unknown_backend_lists_the_valid_ones(capsys, tmp_path):
    root = tmp_path / "runs"
    one_line_error(capsys, ["run", "--backend", "nosuch.module:backend", "--out-root", str(root)],
                   "nosuch.module", "reference", "jit.cpu")
    assert not root.exists()
    one_line_error(capsys, ["verify", "--backend", "reference:no_such_attr"], "no_such_attr", "built-in backends")


def test_unknown_cell_lists_the_valid_ones(capsys, tmp_path):
    root = tmp_path / "runs"
    one_line_error(capsys, ["run", "--cell", "lsmt", "--out-root", str(root)], "'lsmt'", "rnn_tanh, rnn_relu, lstm")
    assert not root.exists()


def test_cell_no_chosen_backend_supports(capsys, tmp_path):
    root = tmp_path / "runs"
    one_line_error(capsys, ["run", "--backend", "torch.nn", "--cell", "gru_classic", "--out-root", str(root)],
                   "gru_classic", "torch.nn (supports gru, lstm, rnn_relu, rnn_tanh)")
    assert not root.exists()


def test_compare_exit_status_flags_the_slowdown(capsys, tmp_path):
    data = json.loads(FIXTURE.read_text())
    data["benchmarks"][0]["stats"]["median"] *= 2
    slowed = tmp_path / "slowed.json"
    slowed.write_text(json.dumps(data))
    assert cli.main(["compare", str(FIXTURE), str(FIXTURE)]) == 0
    assert "0 regression(s)" in capsys.readouterr().out
    assert cli.main(["compare", str(FIXTURE), str(slowed), "--threshold", "0.2"]) == 1
    out = capsys.readouterr().out
    assert out.count("REGRESSION") == 1 and "1 regression(s) beyond 20%" in out


def test_report_writes_a_new_folder(capsys, tmp_path):
    out = tmp_path / "report"
    assert cli.main(["report", str(FIXTURE), "-o", str(out), "--gradient-steps", "4"]) == 0
    assert {"report.md", "report.html", "results.csv", "scaling_T.png", "gradient_flow.png"} <= \
        {p.name for p in out.iterdir()}
    assert "| cell" in capsys.readouterr().out
    assert not list(tmp_path.glob(".incomplete-*"))


def test_new_run_names_never_collide(tmp_path):
    first, second = cli.new_run_name(tmp_path), cli.new_run_name(tmp_path)  # within the same second
    assert first != second and first.is_dir() and second.is_dir()


def test_two_runs_keep_both_folders_and_latest_points_to_the_second(tmp_path):
    """The console script end to end: smoke matrix, reference only, no property suite."""
    root = tmp_path / "runs"
    command = [sys.executable, "-m", "reports.cli", "run", "--matrix", "smoke", "--backend", "reference",
               "--no-properties", "--gradient-steps", "4", "--out-root", str(root)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}  # a clean child pytest
    first = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    (run_one,) = [p for p in root.iterdir() if not p.name.startswith(".") and p.name != "latest"]
    report_one = (run_one / "report.md").read_bytes()
    assert (root / "latest").resolve() == run_one.resolve()
    assert "| cell" in first.stdout and "[2/3] benchmarks" in first.stdout

    second = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    runs = sorted(p for p in root.iterdir() if not p.name.startswith(".") and p.name != "latest")
    assert len(runs) == 2
    (run_two,) = [p for p in runs if p != run_one]
    assert (root / "latest").resolve() == run_two.resolve()
    assert (run_one / "report.md").read_bytes() == report_one
    for name in ("report.md", "report.html", "benchmarks.json", "results.csv", "scaling_T.png", "gradient_flow.png"):
        assert (run_two / name).is_file(), name
    assert not list(root.glob(".incomplete-*"))


def test_compare_says_how_many_benchmarks_were_in_one_run_only(capsys, tmp_path):
    data = json.loads(FIXTURE.read_text())
    del data["benchmarks"][:2]
    fewer = tmp_path / "fewer.json"
    fewer.write_text(json.dumps(data))
    assert cli.main(["compare", str(FIXTURE), str(fewer)]) == 0
    out = capsys.readouterr().out
    assert f"{len(data['benchmarks'])} benchmarks in both runs compared (2 only in OLD, 0 only in NEW" in out
    assert "only in" not in out.split("\n\ncellbench:")[0]  # the table lists none of them


def test_compare_of_different_machines_warns_and_does_not_fail_on_a_slowdown(capsys, tmp_path):
    data = json.loads(FIXTURE.read_text())
    data["benchmarks"][0]["stats"]["median"] *= 2
    data["machine_info"]["cpu"]["model"] = 17
    data["machine_info"]["cpu"]["flags"].append("avx512f")
    other = tmp_path / "other-machine.json"
    other.write_text(json.dumps(data))
    assert cli.main(["compare", str(FIXTURE), str(other)]) == 0
    out = capsys.readouterr().out
    assert "cellbench: warning: not comparable: different CPUs: AMD EPYC, family 25 model 1 (AVX2) vs " \
           "AMD EPYC, family 25 model 17 (AVX-512)" in out
    assert "REGRESSION" not in out and "| slower" in out and "no regression verdict" in out


def test_report_says_the_same_of_a_simulated_backend_in_both_places(tmp_path):
    """The Machines note and the conformance row of jit.cuda: simulated, checked, not timed."""
    import pandas as pd

    from reports import results
    from reports.backends import SIMULATED
    from reports.report import write_report
    junit = pd.DataFrame([{"backend": b, "family": "agreement", "cell": "lstm", "examples": 5, "outcome": "passed",
                           "test": f"t::{b}"} for b in ("reference", "jit.cuda")])
    write_report(results.load([FIXTURE]), tmp_path, junit=junit, left_out={"jit.cuda": SIMULATED}, baselines=None)
    markdown = (tmp_path / "report.md").read_text()
    assert f"jit.cuda: simulated, checked, not timed ({SIMULATED})." in markdown
    assert "| jit.cuda (simulated, checked, not timed) | pass 1/1 (5 ex.)" in markdown
    assert "| reference " in markdown and "| reference (" not in markdown  # timed: no note
