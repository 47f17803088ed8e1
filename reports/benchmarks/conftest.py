"""Options of the benchmark suite, its parametrization, and the machine's measured GEMM rate.

    pytest reports/benchmarks/bench_cells.py --benchmark-json=OUT.json
        [--bench-matrix smoke|default|full] [--bench-backend NAME_OR_MODULE:ATTR ...] [--bench-cell CELL ...]

The GEMM rate (fp32, 2048² numpy matmul) goes into the JSON's machine_info once per run, under
machine_info["cellbench"], next to the CPU model and the BLAS in use.
"""
import pytest

from reports.backends import resolve_backends
from reports.machine import busy_cores, measure_gemm_rate, run_info
from reports.matrix import MATRICES, cases


def pytest_addoption(parser):
    group = parser.getgroup("cellbench benchmarks")
    group.addoption("--bench-matrix", default="default", choices=sorted(MATRICES),
                    help="which cases to measure (default: default)")
    group.addoption("--bench-backend", action="append", default=None, metavar="NAME_OR_MODULE:ATTR",
                    help="backend to measure (repeatable); default: every available built-in one")
    group.addoption("--bench-cell", action="append", default=None, metavar="CELL",
                    help="restrict to this cell (repeatable)")


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    config = metafunc.config
    backends, _ = resolve_backends(config.getoption("--bench-backend"))
    metafunc.config.stash[BACKENDS_KEY] = backends
    found = cases(config.getoption("--bench-matrix"), backends, config.getoption("--bench-cell"))
    metafunc.parametrize("case", found, ids=[c.id for c in found])


BACKENDS_KEY = pytest.StashKey[dict]()
GEMM_KEY = pytest.StashKey[dict]()
LOAD_KEY = pytest.StashKey[tuple]()


def pytest_sessionstart(session):
    # the cores other work keeps busy before and after: a busy machine makes every timing suspect
    session.config.stash[LOAD_KEY] = busy_cores()


@pytest.fixture(scope="session")
def backends(request):
    return request.config.stash[BACKENDS_KEY]


def pytest_benchmark_update_machine_info(config, machine_info):
    # pytest-benchmark may ask twice (--benchmark-json and --benchmark-save): measure once.
    if GEMM_KEY not in config.stash:
        backends = {name: str(getattr(b, "name", name)) for name, b in config.stash.get(BACKENDS_KEY, {}).items()}
        config.stash[GEMM_KEY] = run_info(measure_gemm_rate(), config.stash.get(LOAD_KEY, None), backends)
    machine_info["cellbench"] = config.stash[GEMM_KEY]
