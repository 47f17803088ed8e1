"""The suite's own power: every deliberately broken backend in properties.mutants is rejected by
the property suite run through ``--backend`` (ci profile), and the independent correct one passes.

Each run is a subprocess, ``python -m pytest <family files> -x --backend properties.mutants:NAME``,
so it sees exactly what a user's run sees. The family files are listed explicitly and
``-m "not suite_power"`` is passed, so a run never recurses into this file. Two runs at a time
(the CI machine has 2 cores); a mutant's run lists the family expected to catch it first, which
only saves time: every family runs until the first failure.

The layer mutants (properties.mutants.LAYER_MUTANTS) and the independent layer implementation
are run against the layer family alone, test_layers.py: their cells are the independent ones,
which the runs above already judge.
"""
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .mutants import LAYER_MUTANTS, MUTANTS

PROPERTIES = Path(__file__).resolve().parent
FAMILY_FILES = ["test_agreement.py", "test_structure.py", "test_robustness.py", "test_gate_ranges.py",
                "test_gru_bounds.py", "test_gradient_flow.py"]
#: Where a mutant's bug shows first (the rest still run, in order, until a failure).
FIRST_FAMILY = {"unstable_sigmoid": "test_robustness.py", "no_finite_check": "test_robustness.py",
                "stale_h_n": "test_structure.py", "inplace_state": "test_structure.py",
                "upcast_output": "test_structure.py", "c_order_assumed": "test_structure.py",
                "empty_batch_crash": "test_structure.py", "reused_output_buffer": "test_structure.py"}
LAYER_FAMILY_FILES = ["test_layers.py"]
#: A backend with declared limits runs every family that takes a backend.
ALL_FAMILY_FILES = FAMILY_FILES + ["test_contract_errors.py"] + LAYER_FAMILY_FILES
#: The README's backend to copy (docs/examples/minimal_backend.py, a plain module): it must agree with
#: the reference (every output and gradient, and central differences) and reject bad input. Its
#: step functions are the reference's own, so the other families would judge the reference again,
#: at the Python step loop's cost (69 s of CI's 15 minutes with every cell family).
MINIMAL_BACKEND = "docs.examples.minimal_backend"
MINIMAL_BACKEND_FAMILY_FILES = ["test_agreement.py", "test_contract_errors.py"]
#: The crash isolation is shown on the empty-batch test (its backward half runs and kills its worker;
#: the forward half is skipped, the backend having backward) and the memory-layout test of the same
#: cell and dtype, which comes after it in the file and must still run, in a new worker, and pass.
CRASH_SELECTION = ("-k", "lstm and float32 and (empty_batch or memory_layout)", "-p", "no:faulthandler")
RUN_TIMEOUT_S = 300


def families_from(first_family: str) -> list:
    """FAMILY_FILES with ``first_family`` first."""
    return [first_family] + [f for f in FAMILY_FILES if f != first_family]


def run_suite(spec: str, files=tuple(FAMILY_FILES), extra=("-x", "-n", "0")) -> dict:
    """Run the property families ``files`` against ``spec``; returns its exit code, junit counts and output tail.
    ``extra``: further pytest options; by default stop at the first failure and stay in one process
    (none of these backends crashes, so the crash isolation's worker would only cost its start)."""
    env = {k: v for k, v in os.environ.items() if k not in ("CELLBENCH_BACKEND", "PYTEST_ADDOPTS")}
    env["CELLBENCH_PROFILE"] = "ci"
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", *(str(PROPERTIES / f) for f in files), *extra, "-q",
                   "-p", "no:cacheprovider", "-m", "not suite_power", "--backend", spec, f"--junitxml={junit}"]
        proc = subprocess.run(command, cwd=PROPERTIES.parent, env=env, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT_S)
        counts = {"tests": 0, "failures": 0, "errors": 0}
        if junit.exists():
            for suite in ET.parse(junit).getroot().iter("testsuite"):
                for key in counts:
                    counts[key] += int(suite.get(key, 0))
    return {"returncode": proc.returncode, **counts, "tail": (proc.stdout + proc.stderr)[-3000:]}


@pytest.fixture(scope="module")
def suite_runs():
    """Every run, started at once on two workers: {spec: future of run_suite's dict}."""
    pool = ThreadPoolExecutor(max_workers=2)
    runs = {"properties.mutants:independent": pool.submit(run_suite, "properties.mutants:independent")}
    for name in sorted(MUTANTS, key=lambda n: n not in FIRST_FAMILY):  # the slower ones first
        spec = f"properties.mutants:{name}"
        runs[spec] = pool.submit(run_suite, spec, families_from(FIRST_FAMILY.get(name, "test_agreement.py")))
    runs[MINIMAL_BACKEND] = pool.submit(run_suite, MINIMAL_BACKEND, MINIMAL_BACKEND_FAMILY_FILES)
    runs["properties.mutants:forward_only_float32"] = pool.submit(
        run_suite, "properties.mutants:forward_only_float32", ALL_FAMILY_FILES)
    runs["properties.mutants:aborts_on_empty_batch"] = pool.submit(
        run_suite, "properties.mutants:aborts_on_empty_batch", ["test_structure.py"], CRASH_SELECTION)
    for name in ["independent_layers"] + sorted(LAYER_MUTANTS):
        spec = f"properties.mutants:{name}"
        runs[spec] = pool.submit(run_suite, spec, LAYER_FAMILY_FILES)
    yield runs
    pool.shutdown(wait=False, cancel_futures=True)


@pytest.mark.suite_power
def test_the_independent_correct_backend_passes(suite_runs):
    run = suite_runs["properties.mutants:independent"].result()
    assert run["returncode"] == 0 and run["failures"] == 0 and run["errors"] == 0 and run["tests"] > 0, (
        f"the independent correct backend must pass the whole suite; got exit code {run['returncode']}, "
        f"{run['failures']} failures, {run['errors']} errors:\n{run['tail']}")


def test_the_readme_shows_the_minimal_backend_verbatim():
    code = (PROPERTIES.parent / "docs" / "examples" / "minimal_backend.py").read_text()
    readme = (PROPERTIES.parent / "README.md").read_text()
    assert f"```python\n{code}```" in readme, "README.md's backend to copy differs from docs/examples/minimal_backend.py"


@pytest.mark.suite_power
def test_the_readme_minimal_backend_passes(suite_runs):
    run = suite_runs[MINIMAL_BACKEND].result()
    assert run["returncode"] == 0 and run["failures"] == 0 and run["errors"] == 0 and run["tests"] > 0, (
        f"the README's minimal backend must pass; got exit code {run['returncode']}, {run['failures']} failures, "
        f"{run['errors']} errors:\n{run['tail']}")


@pytest.mark.suite_power
def test_a_backend_gets_no_failure_from_its_declared_limits(suite_runs):
    """Forward only, float32 only, no gates and no cs: every family skips what needs more, and
    judges the rest, which is correct."""
    run = suite_runs["properties.mutants:forward_only_float32"].result()
    assert run["returncode"] == 0 and run["failures"] == 0 and run["errors"] == 0 and run["tests"] > 0, (
        f"a correct forward-only float32 backend must pass; got exit code {run['returncode']}, "
        f"{run['failures']} failures, {run['errors']} errors:\n{run['tail']}")


@pytest.mark.suite_power
def test_a_backend_that_aborts_the_process_is_reported_and_the_rest_still_runs(suite_runs):
    run = suite_runs["properties.mutants:aborts_on_empty_batch"].result()
    assert run["returncode"] == 1 and run["tests"] == 4, f"expected 4 tests, 2 of them skipped:\n{run['tail']}"
    # xdist reports a crashed test as an error (it has no call phase); either counts as rejected.
    assert run["failures"] + run["errors"] == 1 and "1 passed" in run["tail"], (
        f"the empty-batch test must fail and the memory-layout test after it pass:\n{run['tail']}")
    assert "crashed while running" in run["tail"] and "B=0" in run["tail"], (
        f"the report must name the test that killed the process and its example:\n{run['tail']}")


@pytest.mark.suite_power
@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_every_broken_backend_is_rejected(suite_runs, mutant):
    run = suite_runs[f"properties.mutants:{mutant}"].result()
    # Exit code 1 is "tests failed"; 2-4 would be an interrupted run or a usage error, not a rejection.
    assert run["returncode"] == 1 and run["failures"] >= 1, (
        f"mutant {mutant} ({MUTANTS[mutant]}) was not rejected: exit code {run['returncode']}, "
        f"{run['failures']} failures in {run['tests']} tests:\n{run['tail']}")


@pytest.mark.suite_power
def test_the_independent_layers_pass_the_layer_family(suite_runs):
    run = suite_runs["properties.mutants:independent_layers"].result()
    assert run["returncode"] == 0 and run["failures"] == 0 and run["errors"] == 0 and run["tests"] > 0, (
        f"the independent layer implementation must pass the layer family; got exit code {run['returncode']}, "
        f"{run['failures']} failures, {run['errors']} errors:\n{run['tail']}")


@pytest.mark.suite_power
@pytest.mark.parametrize("mutant", sorted(LAYER_MUTANTS))
def test_every_broken_layer_implementation_is_rejected(suite_runs, mutant):
    run = suite_runs[f"properties.mutants:{mutant}"].result()
    assert run["returncode"] == 1 and run["failures"] >= 1, (
        f"layer mutant {mutant} ({LAYER_MUTANTS[mutant]}) was not rejected by test_layers.py: exit code "
        f"{run['returncode']}, {run['failures']} failures in {run['tests']} tests:\n{run['tail']}")
