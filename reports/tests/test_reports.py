"""Report building, comparison, gradient flow and conformance, from real (small) results.

data/smoke_reference_torchnn.json is a real pytest-benchmark JSON: the `smoke` matrix
(lstm, a 4-step config and a short T sweep) on reference and the torch.nn peer, made with
    pytest reports/benchmarks/bench_cells.py --bench-matrix smoke --bench-backend reference \
        --bench-backend torch.nn --benchmark-json=reports/tests/data/smoke_reference_torchnn.json
Every test writes only under its own tmp_path, so they run in any order and under xdist.
"""
import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import reference
from reports import gradient_flow, matrix, results, tables
from reports.conformance import conformance_matrix, read_junit
from reports.report import write_report

FIXTURE = Path(__file__).parent / "data" / "smoke_reference_torchnn.json"


@pytest.fixture(scope="module")
def df():
    return results.load([FIXTURE])


def test_flop_formula_on_a_case_counted_by_hand():
    # lstm, T=B=I=H=1: the products are 4 gate rows × (1 input + 1 hidden) multiply-adds = 16 FLOPs,
    # the pointwise update 21 (see POINTWISE_FLOPS); training is three times that.
    assert matrix.flops("lstm", 1, 1, 1, 1, "inference") == 16 + 21
    assert matrix.flops("lstm", 1, 1, 1, 1, "training") == 3 * 37
    # rnn at L1 (T=25, B=64, I=H=512): 2·25·64·512·1024 + 25·64·512·4
    assert matrix.flops("rnn_tanh", 25, 64, 512, 512, "inference") == 2 * 25 * 64 * 512 * 1024 + 25 * 64 * 512 * 4


def test_bytes_count_every_array_once_in_inference():
    # gru, T=2, B=3, I=4, H=5, float32: x 24 + weights 3·5·9 + 2·15 + h0, h_n 2·15 + hs 30 elements
    expected = (2 * 3 * 4 + 15 * 9 + 30 + 2 * 15 + 2 * 3 * 5) * 4
    assert matrix.bytes_moved("gru", 2, 3, 4, 5, "inference", 4) == expected


def test_every_default_case_is_named_uniquely():
    backends = {"reference": reference.backend}
    found = matrix.cases("full", backends)
    assert len({c.id for c in found}) == len(found)
    assert {c.config.name for c in found} >= set(matrix.CONFIGS)
    assert {c.config.sweep for c in found} == {"", "T", "B", "H"}


def test_load_flattens_extra_info_and_derives_rates(df):
    assert set(df["backend"]) == {"reference", "torch.nn"}
    row = df.iloc[0]
    assert row["flops"] == matrix.flops(row["cell"], row["T"], row["B"], row["I"], row["H"], row["mode"])
    assert row["gflops"] == pytest.approx(row["flops"] / row["stats.median"] / 1e9)
    assert row["pct_gemm"] == pytest.approx(100 * row["gflops"] / row["gemm_gflops"])
    assert row["gemm_gflops"] > 0
    # the float32 cases agree with the float64 reference to float32 rounding (ε = 6e-8) times a
    # modest growth over the few steps and gradient sums of the smoke configs: far below 1e-4
    assert (df["max_abs_error"] < 1e-4).all() and (df["first_call_s"] > 0).all()


def test_per_config_speedups_are_ratios_of_medians(df):
    detail = tables.per_config(df)
    ref = detail[detail["backend"] == "reference"]
    assert np.allclose(ref["speedup_vs_reference"], 1.0)
    torch_rows = detail[detail["backend"] == "torch.nn"].set_index(["config", "mode"])
    ref_rows = ref.set_index(["config", "mode"])
    for key, row in torch_rows.iterrows():
        assert row["speedup_vs_reference"] == pytest.approx(ref_rows.loc[key, "median_ms"] / row["median_ms"])
    headline = tables.headline(df)
    assert list(headline.columns) == ["cell", "config", "mode", "dtype", "reference ms", "torch.nn ms", "IQR %",
                                      "torch.nn ×ref"]
    for _, row in headline.iterrows():  # the widest spread (IQR / median) of the row's backends
        rows = df[(df["config"] == row["config"]) & (df["mode"] == row["mode"])]
        assert row["IQR %"] == pytest.approx(100 * (rows["stats.iqr"] / rows["stats.median"]).max())
    assert (headline["config"] == "tiny").all()  # sweep points stay out of the headline


def test_report_folder_holds_markdown_html_csv_and_png(df, tmp_path):
    flow = gradient_flow.gradient_flow_table(T=6, B=2, I=3, H=4)
    cases = pd.DataFrame([{"backend": "torch", "family": "agreement", "cell": "lstm", "examples": 5,
                           "outcome": "failed", "test": "t::x"}])
    write_report(df, tmp_path, junit=cases, gradient_flow=flow)
    for name in ("report.md", "report.html", "results.csv", "headline.csv", "per_config.csv",
                 "accuracy.csv", "first_call.csv", "gradient_flow.csv", "conformance.csv",
                 "scaling_T.png", "gradient_flow.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert not (tmp_path / "scaling_B.png").exists()  # the smoke matrix sweeps T only
    markdown = (tmp_path / "report.md").read_text()
    assert "| cell" in markdown and "![Scaling with T](scaling_T.png)" in markdown
    assert "FAIL 0/1 (5 ex.)" in markdown
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2  # self-contained: images embedded
    assert "src='scaling" not in page and "<link" not in page
    csv = pd.read_csv(tmp_path / "results.csv")
    assert len(csv) == len(df)


def test_several_files_from_several_machines_are_kept_apart(df, tmp_path):
    data = json.loads(FIXTURE.read_text())
    data["machine_info"]["node"] = "other-host"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    both = results.load([FIXTURE, other])
    assert both["machine"].nunique() == 2
    headline = tables.headline(both)
    assert headline.columns[0] == "machine" and len(headline) == 2 * len(tables.headline(df))


def injected_slowdown(tmp_path, factor, which=0):
    data = json.loads(FIXTURE.read_text())
    slowed = copy.deepcopy(data)
    stats = slowed["benchmarks"][which]["stats"]
    for key in ("min", "max", "mean", "median", "q1", "q3"):
        stats[key] *= factor
    path = tmp_path / "slowed.json"
    path.write_text(json.dumps(slowed))
    return path, slowed["benchmarks"][which]["extra_info"]


def test_compare_flags_an_injected_slowdown_and_nothing_else(tmp_path):
    path, slowed = injected_slowdown(tmp_path, factor=1.5, which=3)
    table = tables.compare(results.load([FIXTURE]), results.load([path]), threshold=0.10)
    flagged = table[table["status"] == "REGRESSION"]
    assert len(flagged) == 1
    assert flagged.iloc[0][["backend", "config", "mode"]].tolist() == [slowed["backend"], slowed["config"],
                                                                       slowed["mode"]]
    assert flagged.iloc[0]["ratio"] == pytest.approx(1.5)
    assert (table["status"].drop(flagged.index) == "").all()


def test_compare_threshold_is_respected(tmp_path):
    path, _ = injected_slowdown(tmp_path, factor=1.05)
    table = tables.compare(results.load([FIXTURE]), results.load([path]), threshold=0.10)
    assert (table["status"] == "").all()


def test_gradient_flow_truncated_backward_equals_full_backward():
    """ratio[T] from the truncated runs must equal ‖dh0‖/‖g‖ of one full backward from h0."""
    T, B, I, H = 7, 3, 4, 5
    ratios = gradient_flow.gradient_ratios("gru", "default", T=T, B=B, I=I, H=H, seed=3)
    rng = np.random.default_rng(3)  # the same draws, in the same order, as gradient_ratios
    params = gradient_flow.params_for("gru", "default", I, H, 3)
    x = rng.standard_normal((T, B, I))
    h0 = np.zeros((B, H))
    fwd = reference.backend.forward("gru", params, x, h0)
    g = rng.standard_normal((B, H))
    grads = reference.backend.backward("gru", params, x, h0, None, fwd, np.zeros_like(fwd.hs), g)
    assert ratios[0] == 1.0
    assert ratios[T] == pytest.approx(np.linalg.norm(grads.dh0) / np.linalg.norm(g), rel=1e-12)


def test_forget_gate_bias_keeps_lstm_gradients_alive_longer():
    default = gradient_flow.gradient_ratios("lstm", "default", T=30, B=4, I=8, H=16)
    biased = gradient_flow.gradient_ratios("lstm", "gate bias 1", T=30, B=4, I=8, H=16)
    params = gradient_flow.params_for("lstm", "gate bias 1", 8, 16, 0)
    assert np.all(params.b_ih[16:32] == 1.0) and np.all(params.b_hh[16:32] == 0.0)  # block f
    assert biased[30] > 10 * default[30]


def test_conformance_matrix_from_a_real_junit_xml(tmp_path):
    (tmp_path / "test_fake_properties.py").write_text(textwrap.dedent("""
        import pytest
        @pytest.mark.parametrize("backend", ["good", "bad"])
        @pytest.mark.parametrize("family", ["gate_ranges", "agreement"])
        def test_prop(record_property, backend, family):
            for key, value in (("backend", backend), ("family", family), ("cell", "lstm"), ("examples", 3)):
                record_property(key, value)
            assert not (backend == "bad" and family == "agreement")
        def test_plain():
            pass
    """))
    xml = tmp_path / "junit.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "junit_family=xunit1",
                    f"--junitxml={xml}", "--rootdir", str(tmp_path), str(tmp_path / "test_fake_properties.py")],
                   cwd=tmp_path, capture_output=True, check=False)
    matrix_ = conformance_matrix(read_junit(xml)).set_index("backend")
    assert matrix_.loc["good", "agreement"] == "pass 1/1 (3 ex.)"
    assert matrix_.loc["bad", "agreement"] == "FAIL 0/1 (3 ex.)"
    assert matrix_.loc["bad", "gate_ranges"] == "pass 1/1 (3 ex.)"
    assert matrix_.loc["(unlabelled)", "test_fake_properties"] == "pass 1/1"  # example-based: no count


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_relu"])
def test_torch_nn_peer_computes_what_the_reference_does(cell):
    pytest.importorskip("torch")  # the peer exists only where torch is installed
    from reports import torch_peer
    from reports.benchmarks.bench_cells import as_dtype, case_inputs, compared_arrays, make_call
    config = matrix.Config("tiny", 4, 2, 3, 5)
    inputs = as_dtype(case_inputs(cell, config), "float64")
    call, to_numpy = torch_peer.prepare(cell, "training", inputs)
    got = to_numpy(call())
    want = compared_arrays("training", make_call(reference.backend, cell, "training", inputs)())
    assert set(got) == set(want)
    for key in want:
        # float64, 4 steps and sums of at most T·B = 8 terms: rounding stays within ~1e3·ε ≈ 2e-13
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-12, err_msg=key)


def test_the_torch_nn_peer_runs_on_the_threads_jit_cpu_would(monkeypatch):
    """One thread for a call jit.cpu keeps on its caller (under PARALLEL_MIN_MACS forward
    multiply-adds), the pool's count for a larger one, set before the timed calls."""
    torch = pytest.importorskip("torch")
    from jit.cpu import threads
    from reports import torch_peer
    from reports.benchmarks.bench_cells import as_dtype, case_inputs
    monkeypatch.setattr(threads, "pool_threads", lambda: 2)
    before = torch.get_num_threads()
    try:
        for config, expected in ((matrix.Config("small", 50, 1, 64, 64), 1),
                                 (matrix.Config("large", 4, 64, 128, 256), 2)):
            torch.set_num_threads(3)
            T, B, I, H = config.T, config.B, config.I, config.H
            assert threads.small_call(T * B * 4 * H * (I + H)) == (expected == 1)
            torch_peer.prepare("lstm", "inference", as_dtype(case_inputs("lstm", config), "float32"))
            assert torch.get_num_threads() == expected, config.name
    finally:
        torch.set_num_threads(before)


def test_a_benchmark_case_times_its_calls_after_a_pause_and_an_untimed_call(monkeypatch):
    """bench_cells.test_cell: the first call (timed apart), then a SETTLE_S pause so the previous
    case's idle threads stop, one untimed call, and only then pytest-benchmark's timed calls."""
    from reports.benchmarks import bench_cells
    events = []

    class Recording:  # a backend that records its calls and returns the reference's results
        def forward(self, *args, **kwargs):
            events.append("call")
            return reference.backend.forward(*args, **kwargs)

    class Benchmark:  # pytest-benchmark's fixture, reduced to what test_cell uses
        extra_info = {}

        def __call__(self, fn):
            events.append("timed")
            fn()

    monkeypatch.setattr(bench_cells.time, "sleep", lambda seconds: events.append(("sleep", seconds)))
    case = matrix.Case("recording", "gru", matrix.Config("tiny", 4, 2, 3, 5), "inference", "float64")
    bench_cells.test_cell(Benchmark(), {"recording": Recording()}, case)
    assert bench_cells.SETTLE_S > 0
    assert events == ["call", ("sleep", bench_cells.SETTLE_S), "call", "timed", "call"]


# ----- the machine behind a run: loaded, comparable ----------------------------------------------

def with_machine(tmp_path, name, **changes):
    """The fixture with its machine_info changed: cellbench.* keys, or cpu_model / cpu_flags."""
    data = json.loads(FIXTURE.read_text())
    info, cpu = data["machine_info"]["cellbench"], data["machine_info"]["cpu"]
    for key, value in changes.items():
        if key == "cpu_model":
            cpu["model"] = value
        elif key == "cpu_flags":
            cpu["flags"] = value
        else:
            info[key] = value
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_a_run_on_a_loaded_machine_gets_a_warning_at_the_top_of_its_report(tmp_path):
    quiet = with_machine(tmp_path, "quiet.json", busy_cores_start=0.3, busy_cores_end=0.5)  # at the line: quiet
    busy = with_machine(tmp_path, "busy.json", busy_cores_start=1.5, busy_cores_end=0.1)  # 2 cores
    (tmp_path / "quiet").mkdir()
    line, warnings, _ = write_report(results.load([quiet]), tmp_path / "quiet", baselines=None)
    assert warnings == [] and "loaded" not in line
    assert "Warning" not in (tmp_path / "quiet" / "report.md").read_text()
    (tmp_path / "busy").mkdir()
    line, warnings, _ = write_report(results.load([busy]), tmp_path / "busy", baselines=None)
    assert len(warnings) == 1 and "1.50 cores of 2 busy with other work at the start" in warnings[0]
    assert "the machine was loaded" in line
    markdown = (tmp_path / "busy" / "report.md").read_text()
    assert markdown.index("> **Warning:**") < markdown.index("## Machines")  # at the top, under the verdict
    assert "class='warning'" in (tmp_path / "busy" / "report.html").read_text()


def test_a_gemm_rate_far_below_the_cpus_best_baseline_is_a_loaded_machine(tmp_path):
    baselines = tmp_path / "baselines"
    baselines.mkdir()
    rate = json.loads(FIXTURE.read_text())["machine_info"]["cellbench"]["gemm_fp32_gflops"]
    with_machine(baselines, "same-cpu.json", gemm_fp32_gflops=rate / 0.75)  # this run: 75% of the usual
    with_machine(baselines, "other-cpu.json", gemm_fp32_gflops=rate * 10, cpu_model=17)  # another CPU
    (tmp_path / "out").mkdir()
    _, warnings, _ = write_report(results.load([FIXTURE]), tmp_path / "out", baselines=baselines)
    assert len(warnings) == 1 and "75% of this CPU's best recorded" in warnings[0]
    with_machine(baselines, "same-cpu.json", gemm_fp32_gflops=rate / 0.85)  # 85%: within the usual
    (tmp_path / "again").mkdir()
    _, warnings, _ = write_report(results.load([FIXTURE]), tmp_path / "again", baselines=baselines)
    assert warnings == []


def test_compare_counts_only_benchmarks_in_both_runs(tmp_path):
    data = json.loads(FIXTURE.read_text())
    dropped = data["benchmarks"].pop(2)["extra_info"]
    fewer = tmp_path / "fewer.json"
    fewer.write_text(json.dumps(data))
    old, new = results.load([FIXTURE]), results.load([fewer])
    table = tables.compare(old, new, threshold=0.10)
    assert len(table) == len(data["benchmarks"]) and table[["old_ms", "new_ms"]].notna().all().all()
    key = [dropped[k] for k in tables.KEY]
    assert key not in table[tables.KEY].values.tolist()
    assert tables.only_in_one(old, new) == (1, 0) and tables.only_in_one(new, old) == (0, 1)


@pytest.mark.parametrize("changes, reason", [
    ({"cpu_model": 17, "cpu_flags": ["avx", "avx2", "avx512f", "fma"]}, "different CPUs"),
    ({"gemm_fp32_gflops": 80.0}, "GEMM rates 50 vs 80 GFLOP/s"),
    ({"busy_cores_end": 0.6}, "new run loaded (0.60 cores of 2 busy with other work at the end)"),
])
def test_compare_of_runs_that_are_not_comparable_says_why_and_flags_no_regression(tmp_path, changes, reason):
    from reports.machine import differences
    path, _ = injected_slowdown(tmp_path, factor=1.5, which=3)
    slowed = json.loads(path.read_text())
    slowed["machine_info"]["cellbench"].update({k: v for k, v in changes.items() if not k.startswith("cpu_")})
    slowed["machine_info"]["cpu"].update({"model": changes.get("cpu_model", 1)})
    if "cpu_flags" in changes:
        slowed["machine_info"]["cpu"]["flags"] = changes["cpu_flags"]
    path.write_text(json.dumps(slowed))
    old, new = results.load([FIXTURE]), results.load([path])
    problems = differences(tables.runs(old).iloc[0].to_dict(), tables.runs(new).iloc[0].to_dict())
    assert len(problems) == 1 and reason in problems[0]
    table = tables.compare(old, new, threshold=0.10, comparable=False)
    assert list(table["status"]).count("slower") == 1 and "REGRESSION" not in set(table["status"])


def test_times_are_written_in_plain_decimals_never_scientific_notation(df):
    from reports.report import plain, to_markdown
    assert [plain(v) for v in (1.234e-5, 0.0456, 1.0, 12.34, 12345.6)] == ["0.0000123", "0.0456", "1.00", "12.3",
                                                                           "12346"]
    fast = df.assign(median_s=df["median_s"] * 1e-4, **{"stats.min": df["stats.min"] * 1e-4})
    markdown = to_markdown(tables.per_config(fast)) + to_markdown(tables.headline(fast))
    assert "e-0" not in markdown and "e+0" not in markdown


def test_busy_cores_sees_another_process_keep_a_core_busy():
    """reports.machine.busy_cores counts the cores other work keeps busy while cellbench sleeps
    (not the load average, whose minute-long memory counts cellbench's own work): a spinning
    process next to it shows as about one busy core."""
    import os
    import time

    from reports.machine import busy_cores
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 3\nwhile time.time() < end: pass"])
    try:
        time.sleep(0.3)  # let it start
        busy = busy_cores(1.0)
    finally:
        spinner.kill()
        spinner.wait()
    assert 0.7 <= busy <= (os.cpu_count() or 1) + 0.01, busy
