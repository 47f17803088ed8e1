"""Options of the benchmark suite, its parametrization, and the machine's measured GEMM rate.

    pytest reports/benchmarks/bench_cells.py --benchmark-json=OUT.json
        [--bench-matrix smoke|default|full] [--bench-backend NAME_OR_MODULE:ATTR ...] [--bench-cell CELL ...]

The GEMM rate (fp32, 2048² numpy matmul) goes into the JSON's machine_info once per run, under
machine_info["cellbench"], next to the CPU model and the BLAS in use.
"""
import os
import platform
import time

import numpy as np
import pytest

from reports.backends import resolve_backends
from reports.matrix import MATRICES, cases

GEMM_SIZE = 2048


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
    # the 1-minute load average before and after: a busy machine makes every timing suspect
    session.config.stash[LOAD_KEY] = os.getloadavg()[0]


@pytest.fixture(scope="session")
def backends(request):
    return request.config.stash[BACKENDS_KEY]


def measure_gemm_rate(size=GEMM_SIZE, repeats=3) -> dict:
    """Best of a few fp32 size×size numpy matmuls (after one warm-up): the machine's GEMM ceiling."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b  # warm-up: BLAS threads start, pages fault in
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return {"gemm_size": size, "gemm_seconds": best, "gemm_fp32_gflops": 2 * size ** 3 / best / 1e9}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pytest_benchmark_update_machine_info(config, machine_info):
    # pytest-benchmark may ask twice (--benchmark-json and --benchmark-save): measure once.
    if GEMM_KEY not in config.stash:
        from threadpoolctl import threadpool_info
        info = measure_gemm_rate()
        info["cpu_model"] = cpu_model()
        info["cpu_count"] = os.cpu_count()
        info["blas"] = [{k: pool.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
                        for pool in threadpool_info()]
        info["backends"] = {name: str(getattr(b, "name", name))
                            for name, b in config.stash.get(BACKENDS_KEY, {}).items()}
        info["loadavg_1min_start"] = config.stash.get(LOAD_KEY, None)
        info["loadavg_1min_end"] = os.getloadavg()[0]
        config.stash[GEMM_KEY] = info
    machine_info["cellbench"] = config.stash[GEMM_KEY]
