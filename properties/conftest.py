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
from hypothesis import HealthCheck, Phase, settings

from reference.contract import CELLS

from . import verification_run
from .backends import (available, declared_dtypes, has_backward, is_framework_adapter, known_defects,
                       load_backend)

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
    config.addinivalue_line("markers", "needs_backward: the property checks gradients; skipped on a forward-only "
                                       "backend (backward = None)")
    config.addinivalue_line("markers", "in_dtype(name): the one dtype a property without a dtype parameter runs "
                                       "in; skipped on a backend that does not declare it")
    config.addinivalue_line("markers", "known_defect(finding): a framework defect (docs/findings.md) makes this "
                                       "property fail on this backend")
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


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """A --backend run (properties.verification_run) writes nothing into the working tree, and its
    tests run in one pytest-xdist worker, so that a backend that aborts or segfaults kills only that worker."""
    if explicit_backend(config):
        verification_run.prepare(config)


def pytest_unconfigure(config):
    verification_run.clean_up(config)


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: absent with -p no:xdist
def pytest_handlecrashitem(crashitem, report, sched):
    verification_run.name_the_example(report)


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


PROPERTIES_DIR = os.path.dirname(os.path.abspath(__file__))


def pytest_collection_modifyitems(config, items):
    """With an explicit backend, run only the properties of that backend: the tests that take the
    ``backend`` fixture. Left out: suite_power (it checks the suite itself, on its own mutants), the
    reference's own tests (properties/test_reference.py), and everything outside properties/ (the
    built-in kernels' tests, the reports' tests), none of which checks the backend named."""
    if not explicit_backend(config):
        return

    def about_the_backend(item) -> bool:
        return (item.get_closest_marker("suite_power") is None
                and "backend" in getattr(item, "fixturenames", ())
                and os.path.dirname(os.path.abspath(str(item.path))) == PROPERTIES_DIR)
    dropped = [item for item in items if not about_the_backend(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if about_the_backend(item)]


def already_parametrized(metafunc, argname) -> bool:
    """True when the test parametrizes ``argname`` itself (example-based tests choose their own backends)."""
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0]
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        if argname in names:
            return True
    return False


def explicit_backend(config) -> bool:
    return bool(config.getoption("--backend") or os.environ.get("CELLBENCH_BACKEND"))


def capability_marks(metafunc, backend_name, backend, cell, dtype, half=None) -> list:
    """Skips for what the backend declares it lacks (a cell, a dtype, backward), else the marks of a
    known framework defect: xfail naming the finding in a run of every backend; in a run of this
    backend alone (--backend) the test fails as any does, and its report names the finding."""
    definition = metafunc.definition
    dtypes = declared_dtypes(backend)
    fixed_dtype = definition.get_closest_marker("in_dtype")
    if cell and cell not in backend.cells:
        return [pytest.mark.skip(reason=f"backend {backend_name} does not support {cell} "
                                        f"(not in its cells: {', '.join(sorted(backend.cells))})")]
    for needed in ([dtype] if dtype is not None else []) + ([np.dtype(fixed_dtype.args[0])] if fixed_dtype else []):
        if needed not in dtypes:
            return [pytest.mark.skip(reason=f"backend {backend_name} does not support {needed} "
                                            f"(its dtypes: {', '.join(sorted(map(str, dtypes)))})")]
    if half == "forward" and has_backward(backend):
        return [pytest.mark.skip(reason=f"backend {backend_name} has backward: the backward half of this property "
                                        "checks forward's results too")]
    if (definition.get_closest_marker("needs_backward") or half == "backward") and not has_backward(backend):
        return [pytest.mark.skip(reason=f"backend {backend_name} is forward-only (backward = None): "
                                        "this property checks gradients")]
    dtype_name = None if dtype is None else DTYPE_IDS[dtype]
    for defect in known_defects(backend):
        if defect.matches(definition.originalname, cell, dtype_name, half):
            marks = [pytest.mark.known_defect(defect.finding)]
            if not explicit_backend(metafunc.config):
                marks.append(pytest.mark.xfail(reason=f"known defect of {backend_name}: {defect.finding} "
                                                      "(docs/findings.md)", strict=False))
            return marks
    return []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failure of a property that a known framework defect makes fail names the finding."""
    report = yield
    marker = item.get_closest_marker("known_defect")
    if marker and report.failed and hasattr(report.longrepr, "addsection"):
        report.longrepr.addsection(KNOWN_DEFECT_SECTION, f"{KNOWN_DEFECT_WORDS} {marker.args[0]} "
                                                         "(docs/findings.md, with a reproducer)")
    return report


#: How a failure report names a known framework defect (reports.conformance reads it back).
KNOWN_DEFECT_SECTION = "cellbench: known defect"
KNOWN_DEFECT_WORDS = "this failure is the framework defect"


#: A property with a ``half`` parameter has two tests: "forward" checks forward's results, "backward"
#: forward's and backward's. A backend with backward runs the backward half (the forward half would
#: repeat its forward checks); a forward-only backend runs the forward half.
HALVES = ("forward", "backward")


def pytest_generate_tests(metafunc):
    if "backend" not in metafunc.fixturenames or already_parametrized(metafunc, "backend"):
        return
    backends = selected_backends(metafunc.config)
    marker = metafunc.definition.get_closest_marker("cells")
    cells = marker.args if marker else CELLS
    names = ["backend"] + [name for name in ("cell", "dtype", "half") if name in metafunc.fixturenames]
    cases = []
    for backend_name, backend in backends.items():
        for cell in (cells if "cell" in names else [None]):
            for dtype in (DTYPE_IDS if "dtype" in names else [None]):
                for half in (HALVES if "half" in names else [None]):
                    values = [backend] + [v for v in (cell, dtype, half) if v is not None]
                    case_id = "-".join([backend_name] + ([cell] if cell else [])
                                       + ([DTYPE_IDS[dtype]] if dtype is not None else []) + ([half] if half else []))
                    marks = capability_marks(metafunc, backend_name, backend, cell, dtype, half)
                    cases.append(pytest.param(*values, id=case_id, marks=marks))
    metafunc.parametrize(names if len(names) > 1 else names[0], cases)


EXAMPLES = pytest.StashKey[int]()
#: Examples per property for a framework adapter in the run of every backend (plain ``pytest``, CI):
#: there it is a regression check of the adapter beside the project's own backends, and JAX compiles
#: per shape (the two JAX adapters alone took minutes of CI's 15 at the profile's 5). Judging a
#: framework is the run of that backend alone (--backend, cellbench verify): the profile's count.
DEFAULT_RUN_FRAMEWORK_EXAMPLES = 2


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
    if backend is not None and not explicit_backend(item.config) and is_framework_adapter(backend):
        cap = min(int(cap or DEFAULT_RUN_FRAMEWORK_EXAMPLES), DEFAULT_RUN_FRAMEWORK_EXAMPLES)
    if cap:
        item.obj._hypothesis_internal_use_settings = settings(
            saved_settings, max_examples=min(saved_settings.max_examples, int(cap)))
    if item.get_closest_marker("known_defect") and not explicit_backend(item.config):
        # An expected failure of a known framework defect: its minimal example is in docs/findings/,
        # and shrinking it again (through deep JAX tracebacks) took most of Keras' time in a full run.
        item.obj._hypothesis_internal_use_settings = settings(
            item.obj._hypothesis_internal_use_settings, phases=[Phase.explicit, Phase.reuse, Phase.generate])

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
