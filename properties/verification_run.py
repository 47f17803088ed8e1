"""What a run of one backend (``--backend``, ``cellbench verify``) does apart from the default run.

It writes nothing into the user's working tree: Hypothesis' storage (its example database is off in
every profile but dev, and its cache of the constants it finds in source files) and pytest-benchmark's
storage go to a temporary folder, removed when the run ends.

Crash isolation: a backend that kills the process on one example must not end a verification run.

A framework's kernel may abort (SIGABRT) or segfault on an input it mishandles, such as an empty
batch. In a run of one backend (``--backend``, ``cellbench verify``) the tests therefore run in one
pytest-xdist worker: when the backend kills it, xdist reports the test that was running as failed
("worker 'gw0' crashed while running …") and starts a new worker for the rest. Each worker writes
the example it is about to run to a file of its own (``note_example``, called by the strategies), so
that the crash report names the example too. ``-n 0`` (or ``-p no:xdist``) runs in the pytest
process instead; ``-n N`` spreads the run over N workers, each isolated alike.
"""
from __future__ import annotations

import os
import shutil
import tempfile

#: The folder of the workers' example files (one per worker, rewritten per example); the
#: controller sets it before it starts the workers, which inherit it.
EXAMPLE_LOG_DIR = "CELLBENCH_EXAMPLE_LOG_DIR"
#: Crashed workers replaced before the run gives up: a backend that aborts on every empty batch kills
#: one per such test (20 in test_structure alone); each replacement costs about a second.
MAX_CRASHES = 200


#: The run's temporary folder (set by the controller, inherited by the workers).
SCRATCH_DIR = "CELLBENCH_VERIFY_SCRATCH"


def prepare(config) -> None:
    """In the controller (or a plain run) of a --backend session: the scratch folder for everything
    that would otherwise be written into the working tree, and one isolated pytest-xdist worker,
    unless the user chose otherwise (-n given, --pdb, --collect-only) or xdist is not loaded."""
    worker = hasattr(config, "workerinput")
    if worker:  # the controller made the scratch folder; the worker inherited its environment
        scratch = os.environ[SCRATCH_DIR]
    else:
        scratch = config.cellbench_scratch = tempfile.mkdtemp(prefix="cellbench-verify-")
        os.environ[SCRATCH_DIR] = scratch
    os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = os.path.join(scratch, "hypothesis")
    from hypothesis.configuration import set_hypothesis_home_dir
    set_hypothesis_home_dir(os.environ["HYPOTHESIS_STORAGE_DIRECTORY"])
    if hasattr(config.option, "benchmark_storage"):
        config.option.benchmark_storage = "file://" + os.path.join(scratch, "benchmarks")
    if (worker or not config.pluginmanager.hasplugin("xdist") or config.getoption("numprocesses") is not None
            or config.getoption("collectonly") or config.getoption("usepdb")):
        return
    config.option.numprocesses = 1
    if config.getoption("maxworkerrestart") is None:  # xdist's default (4 per worker) would stop the run
        config.option.maxworkerrestart = MAX_CRASHES
    os.environ[EXAMPLE_LOG_DIR] = os.path.join(scratch, "examples")
    os.makedirs(os.environ[EXAMPLE_LOG_DIR])


def clean_up(config) -> None:
    scratch = getattr(config, "cellbench_scratch", None)
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
        for name in (SCRATCH_DIR, EXAMPLE_LOG_DIR, "HYPOTHESIS_STORAGE_DIRECTORY"):
            os.environ.pop(name, None)


def note_example(text: str) -> None:
    """In an isolated worker, record the example about to run (its problem's description)."""
    folder, worker = os.environ.get(EXAMPLE_LOG_DIR), os.environ.get("PYTEST_XDIST_WORKER")
    if folder and worker:
        with open(os.path.join(folder, worker), "w") as log:
            log.write(text)


def name_the_example(report) -> None:
    """Add the example that killed the worker to xdist's crash report."""
    folder = os.environ.get(EXAMPLE_LOG_DIR)
    path = os.path.join(folder, report.node.gateway.id) if folder else None
    if path and os.path.exists(path):
        with open(path) as log:
            example = log.read()
        report.longrepr = (f"{report.longrepr}\nthe backend killed the process (abort or segfault) on the "
                           f"example {example}; the rest of the suite went on in a new worker")
