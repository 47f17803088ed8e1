"""The property suite's plug-in: which backends to check, which Hypothesis profile, and what each
test records for the conformance report.

    pytest properties                                   every built-in backend usable here
    pytest properties --backend mypkg.mod:backend       one backend, any object following the contract
    CELLBENCH_BACKEND=mypkg.mod:backend pytest ...      the same, from the environment
    --cellbench-profile ci|dev|thorough, or CELLBENCH_PROFILE   (default ci: derandomized, reproducible)

A test that takes the ``backend`` fixture runs once per selected backend; with ``cell`` and
``dtype`` too, once per (backend, cell, dtype), with ids like ``[jit.cpu-lstm-float32]``. Cells
a backend does not list in ``backend.cells`` are skipped with the reason. ``@pytest.mark.cells(...)``
narrows the cells a test applies to.

Every such test records in the junit XML (record_property): backend, family (the module name
after ``test_``), cell and examples (how many times Hypothesis ran the test body).

A slow backend may declare ``max_test_sizes`` (see properties.strategies) and ``max_test_examples``
(an int): each Hypothesis test then runs at most that many examples on it.
"""
from __future__ import annotations

import functools
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from reference.contract import CELLS

from .backends import available, load_backend

PROFILES = {
    # ci: reproducible (derandomize: the same examples on every run and machine), no deadline (Numba
    # compiles on first call), and enough examples that every mutant in properties/mutants is rejected.
    "ci": dict(max_examples=5, derandomize=True, database=None),
    # dev: fresh random examples each run, remembered in .hypothesis/ so that a failure replays first.
    "dev": dict(max_examples=40),
    # thorough: a night's run; targeted phases push toward the largest error/tolerance ratios.
    "thorough": dict(max_examples=1000),
}
for profile_name, profile in PROFILES.items():
    settings.register_profile(
        profile_name, deadline=None, print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                               HealthCheck.differing_executors],
        **profile)

DTYPE_IDS = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64"}


def add_options(parser):
    """The suite's options; the repo-root conftest.py registers them, so that `pytest --backend X`
    works from the root without naming this folder (pytest parses options before it collects
    this file)."""
    group = parser.getgroup("cellbench", "cellbench property suite")
    group.addoption("--backend", default=None, metavar="MODULE:ATTR",
                    help="check this backend only (also CELLBENCH_BACKEND); default: every built-in one")
    group.addoption("--cellbench-profile", default=None, choices=sorted(PROFILES),
                    help="Hypothesis profile (also CELLBENCH_PROFILE); default: ci")


def pytest_configure(config):
    config.addinivalue_line("markers", "cells(*names): the cells a property applies to")
    config.addinivalue_line("markers", "suite_power: runs the suite against broken backends in subprocesses "
                                       "(slow; deselect with -m 'not suite_power')")
    config.addinivalue_line("markers", "self_check: runs a built-in backend against itself in subprocesses, "
                                       "such as jit.cpu at the other vector width (slow; deselect with "
                                       "-m 'not self_check')")
    profile = config.getoption("--cellbench-profile") or os.environ.get("CELLBENCH_PROFILE") or "ci"
    if profile not in PROFILES:
        raise pytest.UsageError(f"CELLBENCH_PROFILE: expected one of {', '.join(PROFILES)}; got {profile!r}")
    settings.load_profile(profile)
    config.cellbench_profile = profile
    config.cellbench_backends = None
    if config.getoption("--backend") or os.environ.get("CELLBENCH_BACKEND"):
        selected_backends(config)  # a bad spec is a usage error, reported before anything runs


def selected_backends(config) -> dict:
    """{name: backend}: --backend, else CELLBENCH_BACKEND, else every built-in one usable here."""
    if config.cellbench_backends is None:
        spec = config.getoption("--backend") or os.environ.get("CELLBENCH_BACKEND")
        try:
            if spec:
                backend = load_backend(spec)
                config.cellbench_backends = {str(backend.name): backend}
            else:
                config.cellbench_backends = available()
        except (ImportError, ValueError, TypeError) as exc:
            raise pytest.UsageError(str(exc)) from exc
    return config.cellbench_backends


def pytest_report_header(config):
    backends = selected_backends(config)
    lines = [f"cellbench: backends {', '.join(backends) or '(none)'}; Hypothesis profile {config.cellbench_profile}"]
    for name, backend in backends.items():
        limits = getattr(backend, "max_test_sizes", None)
        examples = getattr(backend, "max_test_examples", None)
        if limits or examples:
            lines.append(f"cellbench: {name} declares max_test_sizes={limits}, max_test_examples={examples}")
    return lines


def pytest_collection_modifyitems(config, items):
    """With an explicit backend, leave out suite_power: it checks the suite itself (on its own
    mutants), not the backend being verified."""
    if not (config.getoption("--backend") or os.environ.get("CELLBENCH_BACKEND")):
        return
    kept = [item for item in items if item.get_closest_marker("suite_power") is None]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker("suite_power")])
        items[:] = kept


def already_parametrized(metafunc, argname) -> bool:
    """True when the test parametrizes ``argname`` itself (example-based tests choose their own backends)."""
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0]
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        if argname in names:
            return True
    return False


def pytest_generate_tests(metafunc):
    if "backend" not in metafunc.fixturenames or already_parametrized(metafunc, "backend"):
        return
    backends = selected_backends(metafunc.config)
    marker = metafunc.definition.get_closest_marker("cells")
    cells = marker.args if marker else CELLS
    names = ["backend"]
    if "cell" in metafunc.fixturenames:
        names.append("cell")
    if "dtype" in metafunc.fixturenames:
        names.append("dtype")
    cases = []
    for backend_name, backend in backends.items():
        for cell in (cells if "cell" in names else [None]):
            for dtype in (DTYPE_IDS if "dtype" in names else [None]):
                values = [backend] + ([cell] if cell else []) + ([dtype] if dtype is not None else [])
                case_id = "-".join([backend_name] + ([cell] if cell else []) + ([DTYPE_IDS[dtype]] if dtype else []))
                marks = []
                if cell and cell not in backend.cells:
                    marks = [pytest.mark.skip(reason=f"backend {backend_name} does not support {cell} "
                                                     f"(not in its cells: {', '.join(sorted(backend.cells))})")]
                cases.append(pytest.param(*values, id=case_id, marks=marks))
    metafunc.parametrize(names if len(names) > 1 else names[0], cases)


EXAMPLES = pytest.StashKey[int]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Count the examples Hypothesis runs (wrap its inner test) and apply a backend's max_test_examples."""
    hypothesis_handle = getattr(item.obj, "hypothesis", None)
    if hypothesis_handle is None:
        return (yield)
    item.stash[EXAMPLES] = 0
    inner = hypothesis_handle.inner_test
    saved_settings = item.obj._hypothesis_internal_use_settings
    backend = item.funcargs.get("backend")
    cap = getattr(backend, "max_test_examples", None)
    if cap:
        item.obj._hypothesis_internal_use_settings = settings(
            saved_settings, max_examples=min(saved_settings.max_examples, int(cap)))

    @functools.wraps(inner)
    def counted(*args, **kwargs):
        item.stash[EXAMPLES] += 1
        return inner(*args, **kwargs)

    hypothesis_handle.inner_test = counted
    try:
        return (yield)
    finally:
        hypothesis_handle.inner_test = inner
        item.obj._hypothesis_internal_use_settings = saved_settings


@pytest.fixture(autouse=True)
def _conformance_record(request, record_property):
    """Record backend, family, cell and examples of each property test in the junit XML."""
    yield
    item = request.node
    backend = item.funcargs.get("backend") if hasattr(item, "funcargs") else None
    if backend is None and getattr(item.obj, "hypothesis", None) is None:
        return
    family = item.module.__name__.rpartition(".")[2].removeprefix("test_")
    record_property("backend", str(getattr(backend, "name", "reference")))
    record_property("family", family)
    record_property("cell", item.funcargs.get("cell", "") or getattr(item.function, "cellbench_cell", ""))
    if EXAMPLES in item.stash:
        record_property("examples", item.stash[EXAMPLES])
