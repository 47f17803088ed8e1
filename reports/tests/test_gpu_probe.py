"""reports.gpu_probe's parts that need no GPU (counting by wrapping, finding jit.cuda's own counter,
the rows it measures), and reports/gpu_check.sh's dry run end to end under the CUDA simulator:
both JSON files and the report written, counts in them, no timing shown."""
import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from reports import gpu_bench, gpu_probe
from reports.cli import child_environment

REPO = Path(__file__).resolve().parents[2]


class Engine:
    def start(self, n):
        return n + 1


class Turbo(Engine):  # start() inherited: a wrapper put on Turbo must be deleted again, not left behind
    pass


@pytest.fixture
def fake_module(monkeypatch):
    module = types.ModuleType("fake_driver")
    module.Turbo = Turbo
    module.copy = lambda n: n * 2
    monkeypatch.setitem(sys.modules, "fake_driver", module)
    return module


def test_counting_counts_chosen_calls_captures_replays_and_restores_everything(fake_module):
    hooks = (gpu_probe.Hook("starts", "fake_driver", "Turbo.start", when=lambda args: args[1] > 0,
                            capture=lambda original, args, kwargs: gpu_probe.Launch(
                                "start", lambda: original(*args, **kwargs))),
             gpu_probe.Hook("copies", "fake_driver", "copy"),
             gpu_probe.Hook("frees", "fake_driver", "Turbo.free"))  # not there: listed, counts nothing
    original_copy = fake_module.copy
    with gpu_probe.counting(hooks) as counts:
        engine = Turbo()
        assert engine.start(1) == 2 and engine.start(0) == 1 and fake_module.copy(3) == 6
        replayed = counts.launches[0].replay()
    assert replayed == 2 and [launch.kernel for launch in counts.launches] == ["start"]
    assert counts.get("starts") == 1 and counts.get("copies") == 1  # start(0) did not count; the replay neither
    assert counts.get("frees") is None and counts.missing == ["fake_driver.Turbo.free"]
    assert "start" not in vars(Turbo) and fake_module.copy is original_copy
    with pytest.raises(RuntimeError), gpu_probe.counting(hooks):
        raise RuntimeError("a failing call still restores")
    assert "start" not in vars(Turbo) and fake_module.copy is original_copy


def test_jit_cudas_own_counter_is_found_whatever_its_shape_and_preferred_when_it_moved():
    class Counter:
        launches, allocations = 7, 2

    with_object = types.ModuleType("m1")
    with_object.COUNTS = Counter()
    with_getter = types.ModuleType("m2")
    with_getter.reset_launch_count = lambda: pytest.fail("a reset is never called")
    with_getter.launch_count = lambda: 5
    with_mapping = types.ModuleType("m3")
    with_mapping.LAUNCH_COUNTS = {"matmul": 2, "step": 25}
    without = types.ModuleType("m4")
    without.cooperative_grid_limit = lambda kernel, block: 1
    assert gpu_probe.library_launch_counter(with_object)() == 7
    assert gpu_probe.library_allocation_counter(with_object)() == 2
    assert gpu_probe.library_launch_counter(with_getter)() == 5
    assert gpu_probe.library_launch_counter(with_mapping)() == 27
    assert gpu_probe.library_launch_counter(without) is None and gpu_probe.library_allocation_counter(without) is None
    counts = gpu_probe.Counts()
    counts.available.add("launches")
    counts.calls["launches"] = 4
    assert gpu_probe.launches_of(counts, 10, 13, "COUNTS") == (3, "jit.cuda.launch.COUNTS")
    assert gpu_probe.launches_of(counts, 10, 10, "COUNTS") == (4, "wrapped jit.cuda.launch.launch")


def test_the_probe_measures_the_issues_shapes_most_important_first():
    rows = gpu_probe.rows()
    # (H, B) × path: 4 main shapes × 3 paths, 4 small batches × (persistent, split-k, per-step); × cells × modes
    assert len(rows) == 24 * 3 * 2
    assert {(r.T, r.H, r.B) for r in rows} == {(25, H, B) for H in (512, 2048) for B in (4, 8, 16, 64)}
    assert rows[0][:3] == ("DB-H512-B16", 25, 16)
    assert {r.path for r in rows[:18]} == {"per-step", "persistent", "split-k"}
    small = [r for r in rows if r.B <= 8]
    assert [r.path for r in small] == ["persistent"] * 24 + ["split-k"] * 24 + ["per-step"] * 24
    # the benchmark has the small batches too, after the speed targets' configs, at every H
    configs = gpu_bench.configs("deepbench")
    assert [c[2] for c in configs[:9]] == [16, 32, 64] * 3 and {(c[3], c[2]) for c in configs[9:]} == \
        {(H, B) for H in (512, 1024, 2048) for B in (4, 8)}


def test_the_benchmark_deadline_is_read_and_checked(monkeypatch):
    monkeypatch.delenv("CELLBENCH_GPU_DEADLINE_S", raising=False)
    assert gpu_bench.deadline_s() is None
    monkeypatch.setenv("CELLBENCH_GPU_DEADLINE_S", "130")
    assert gpu_bench.deadline_s() == 130.0
    monkeypatch.setenv("CELLBENCH_GPU_DEADLINE_S", "soon")
    with pytest.raises(ValueError, match="CELLBENCH_GPU_DEADLINE_S: expected a positive number of seconds; got 'soon'"):
        gpu_bench.deadline_s()


def test_gpu_check_dry_run_writes_both_jsons_and_a_report_without_timings(tmp_path):
    """GPU_CHECK_DRY_RUN=1: the probe and one benchmark row under the simulator, on tiny shapes."""
    # child_environment: under an xdist worker, pytest-benchmark in the child would disable itself.
    env = dict(child_environment(), GPU_CHECK_DRY_RUN="1")
    run = subprocess.run(["bash", str(REPO / "reports" / "gpu_check.sh"), str(tmp_path)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    bench = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert [b["extra_info"]["backend"] for b in bench["benchmarks"]] == ["jit.cuda"]
    probe = json.loads((tmp_path / "gpu_probe.json").read_text())
    assert {"machine_info", "commit_info", "benchmarks", "datetime", "version"} <= set(probe)
    assert probe["machine_info"]["cellbench"]["rows_done"] == 6  # 3 paths × 2 modes
    entries = [b["extra_info"] for b in probe["benchmarks"]]
    assert all(e["schema"] == gpu_probe.PROBE_SCHEMA and e["error"] is None for e in entries), entries
    assert [e["grid"] for e in entries if e["kind"] == "grid_sync"] == ["resident", "few"]
    calls = {(e["path"], e["mode"]): e for e in entries if e["kind"] == "call"}
    T = 3
    for (path, mode), e in calls.items():
        assert e["launches_per_call"] >= 1 and e["allocations_per_call"] is not None
        assert e["stages"] == (2 if mode == "training" else 1) and e["blocking_waits_per_call"] >= e["stages"]
        assert math.isnan(e["busy_s"])  # the simulator's events keep no time
    # a step kernel per step on the per-step path, one launch for all steps on the persistent one
    assert calls[("per-step", "inference")]["kernel_launches_per_call"] >= T
    for path in ("persistent", "split-k"):
        assert calls[(path, "inference")]["kernel_launches_per_call"] < \
            calls[("per-step", "inference")]["kernel_launches_per_call"]
    kernels = [e for e in entries if e["kind"] == "kernel"]
    step = {e["kernel"] for e in kernels if e["step_kernel"]}
    assert step and all(e["path"] == "per-step" for e in kernels if e["step_kernel"])
    assert all(e["launches_per_call"] % T == 0 for e in kernels if e["step_kernel"])
    report = (tmp_path / "gpu_report.md").read_text()
    assert report.startswith("# jit.cuda vs cuDNN on CUDA simulator") and "timings are not shown" in report
    assert "### Row by row" in report and gpu_bench.NOT_JUDGED in report and "### Per-step kernels" in report
    assert " ms" not in report and "ratio" not in report and "busy µs" not in report
    assert "gpu_check: done in" in run.stdout and os.path.exists(tmp_path / "device.txt")
