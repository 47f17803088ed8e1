"""reports.gpu_bench's summary on synthetic results: issue 23's targets judged row by row (speed at
B ≥ 16 on the best path, the better persistent path at B ≤ 8, the host overhead from
reports.gpu_probe), and the report that names the device; nothing here times anything."""
import json
import math

import pytest

from reports import gpu_bench, gpu_probe


def bench_file(tmp_path, medians, device="Test GPU"):
    """A gpu_bench JSON with one benchmark per ((backend, config, mode) -> median seconds), lstm."""
    benchmarks = []
    for (backend, config, mode), seconds in medians.items():
        B = int(config.rsplit("-B", 1)[1])
        benchmarks.append({"name": f"{backend}-{config}-{mode}", "stats": {"median": seconds},
                           "extra_info": {"backend": backend, "cell": "lstm", "config": config, "mode": mode,
                                          "T": 25, "B": B, "I": 512, "H": 512, "flops": 1e9, "device": device,
                                          "max_abs_diff_vs_cudnn": 1e-6 if backend.startswith("jit") else math.nan}})
    path = tmp_path / "gpu_bench.json"
    path.write_text(json.dumps({"benchmarks": benchmarks}))
    return path


def call_entry(cell, config, mode, path, overhead_s, exact=True, device="Test GPU", error=None):
    """A probe call entry: busy 1 ms, host = busy + overhead; not exact: a spin shorter than the host."""
    busy = 1e-3
    figures = {"host_s": busy + overhead_s, "busy_s": busy, "overhead_s": overhead_s, "device_s": busy + overhead_s,
               "busy_queued": exact, "blocking_waits_per_call": 1 if mode == "inference" else 2,
               "stages": 1 if mode == "inference" else 2, "launches_per_call": 30, "kernel_launches_per_call": 30,
               "allocations_per_call": 0, "h2d_copies_per_call": 0, "d2h_copies_per_call": 1,
               "synchronizes_per_call": 0, "error": error}
    if error:
        figures = {"error": error}
    case = {"device": device, "cell": cell, "config": config, "mode": mode, "path": path, "T": 25, "B": 16,
            "I": 512, "H": 512}
    return gpu_probe.entry("call", [path, cell, config, mode], {**case, **figures}, [busy + overhead_s])


def probe_file(tmp_path, entries):
    path = tmp_path / "gpu_probe.json"
    path.write_text(json.dumps(gpu_probe.document(entries, {"device": "Test GPU"}, {"node": "test"}, {})))
    return path


MEDIANS = {
    # B = 16: inference per-step 1.5× (met at the limit), persistent 2×; training per-step 2.5×, persistent
    # 1.9×, split-K 1.8× (the best, judged)
    ("jit.cuda", "DB-H512-B16", "inference"): 3.0, ("jit.cuda.persistent", "DB-H512-B16", "inference"): 4.0,
    ("torch.cudnn", "DB-H512-B16", "inference"): 2.0,
    ("jit.cuda", "DB-H512-B16", "training"): 5.0, ("jit.cuda.persistent", "DB-H512-B16", "training"): 3.8,
    ("jit.cuda.split", "DB-H512-B16", "training"): 3.6, ("torch.cudnn", "DB-H512-B16", "training"): 2.0,
    # B = 32: per-step only, 2× in inference: missed
    ("jit.cuda", "DB-H512-B32", "inference"): 4.0, ("torch.cudnn", "DB-H512-B32", "inference"): 2.0,
    # B = 4: per-step 0.5× does not count; persistent 1.05×, split-K 1.1×: missed. B = 8: persistent
    # 0.95×: met; B = 8 inference: persistent exactly 1×, not faster, split-K 0.9×: met by split-K
    ("jit.cuda", "DB-H512-B4", "inference"): 1.0, ("jit.cuda.persistent", "DB-H512-B4", "inference"): 2.1,
    ("jit.cuda.split", "DB-H512-B4", "inference"): 2.2, ("torch.cudnn", "DB-H512-B4", "inference"): 2.0,
    ("jit.cuda.persistent", "DB-H512-B8", "training"): 1.9, ("torch.cudnn", "DB-H512-B8", "training"): 2.0,
    ("jit.cuda.persistent", "DB-H512-B8", "inference"): 2.0, ("jit.cuda.split", "DB-H512-B8", "inference"): 1.8,
    ("torch.cudnn", "DB-H512-B8", "inference"): 2.0,
}


def judged(rows, target, config, mode):
    row = rows[(rows["target"] == target) & (rows["config"] == config) & (rows["mode"] == mode)]
    assert len(row) == 1, (target, config, mode, rows)
    return row.iloc[0]


def test_speed_targets_judge_the_best_path_at_batch_16_and_up_and_only_the_persistent_ones_at_8(tmp_path):
    table = gpu_bench.comparison(gpu_bench.load_results(bench_file(tmp_path, MEDIANS)))
    rows = gpu_bench.targets(table)
    inference = judged(rows, gpu_bench.SPEED["inference"], "DB-H512-B16", "inference")
    assert (inference["per-step"], inference["persistent"]) == (1.5, 2.0)
    assert (inference["judged"], inference["verdict"]) == ("per-step", "met")  # ≤ 1.5 includes 1.5
    training = judged(rows, gpu_bench.SPEED["training"], "DB-H512-B16", "training")
    assert (training["persistent"], training["split-k"]) == (1.9, 1.8)
    assert training["judged"] == "split-k" and training["verdict"] == "met"
    assert math.isnan(inference["split-k"])  # not measured: not judged
    assert judged(rows, gpu_bench.SPEED["inference"], "DB-H512-B32", "inference")["verdict"] == "missed"
    b4 = judged(rows, gpu_bench.SMALL_BATCH, "DB-H512-B4", "inference")
    assert b4["per-step"] == 0.5 and b4["judged"] == "persistent" and b4["verdict"] == "missed"
    assert judged(rows, gpu_bench.SMALL_BATCH, "DB-H512-B8", "training")["verdict"] == "met"
    b8 = judged(rows, gpu_bench.SMALL_BATCH, "DB-H512-B8", "inference")
    assert b8["persistent"] == 1.0 and (b8["judged"], b8["verdict"]) == ("split-k", "met")  # 1× is not faster
    b8_training = judged(rows, gpu_bench.SMALL_BATCH, "DB-H512-B8", "training")  # no split-K figure
    assert (b8_training["judged"], b8_training["verdict"]) == ("persistent", "met")
    # no speed target at B ≤ 8, no small-batch target at B ≥ 16
    assert set(rows[rows["target"] == gpu_bench.SMALL_BATCH]["config"]) == {"DB-H512-B4", "DB-H512-B8"}
    assert not rows[rows["target"].isin(gpu_bench.SPEED.values())]["config"].isin(["DB-H512-B4", "DB-H512-B8"]).any()
    # the comparison's own columns agree: per-step has no target at B = 4, persistent < 1 there
    at_b4 = table.set_index(["config", "mode"]).loc[("DB-H512-B4", "inference")]
    assert at_b4["met"] == "" and at_b4["persistent met"] == "no" and at_b4["split met"] == "no"
    assert at_b4["target"] == 1.0
    # the per-cell summary counts the speed targets' configs only
    summary = gpu_bench.short_summary(table).set_index("mode")
    assert summary.loc["inference", "met"] == "1/2" and summary.loc["training", "met"] == "0/1"


def test_host_overhead_is_judged_on_the_better_path_and_unsure_when_busy_time_held_host_gaps(tmp_path):
    entries = [call_entry("lstm", "DB-H512-B16", "inference", "per-step", 250e-6),
               call_entry("lstm", "DB-H512-B16", "inference", "persistent", 80e-6),
               call_entry("lstm", "DB-H512-B16", "inference", "split-k", 120e-6),
               call_entry("gru", "DB-H512-B16", "training", "per-step", 90e-6, exact=False),
               call_entry("gru", "DB-H512-B16", "training", "persistent", 0.0, error="LaunchError: refused"),
               call_entry("rnn_tanh", "DB-H512-B16", "inference", "per-step", 150e-6)]
    overheads = gpu_probe.host_overheads(gpu_probe.load_probe(probe_file(tmp_path, entries)))
    rows = gpu_bench.targets(None, overheads)
    assert rows["target"].eq(gpu_bench.HOST_OVERHEAD).all() and len(rows) == 3
    lstm_row = rows[(rows["cell"] == "lstm")].iloc[0]
    assert lstm_row["per-step"] == pytest.approx(250) and lstm_row["persistent"] == pytest.approx(80)
    assert lstm_row["split-k"] == pytest.approx(120)
    assert (lstm_row["judged"], lstm_row["verdict"]) == ("persistent", "met")
    gru_row = rows[rows["cell"] == "gru"].iloc[0]
    assert math.isnan(gru_row["persistent"]) and gru_row["verdict"] == gpu_bench.UNSURE
    assert rows[rows["cell"] == "rnn_tanh"].iloc[0]["verdict"] == "missed"
    assert lstm_row["limit"] == 100
    summary = gpu_bench.targets_summary(rows).iloc[0]
    assert (summary["met"], summary["missed"], summary["unsure"], summary["worst"]) == (1, 1, 1, "150 µs")


def test_the_report_names_the_device_and_lists_every_target_row_with_its_figures(tmp_path):
    (tmp_path / "device.txt").write_text("device: Test GPU, compute capability (9, 0), 132 SMs\n")
    probe = probe_file(tmp_path, [call_entry("lstm", "DB-H512-B16", "inference", "per-step", 250e-6)])
    text = gpu_bench.write_report(bench_file(tmp_path, MEDIANS), tmp_path, probe_path=probe)
    report = (tmp_path / "gpu_report.md").read_text()
    assert report.startswith("# jit.cuda vs cuDNN on Test GPU") and "132 SMs" in report
    rows = report.split("### Row by row")[1].split("##")[0].splitlines()
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in rows if line.startswith("| ")][1:]
    assert ["training ≤ 2× cuDNN fp32", "lstm", "DB-H512-B16", "training", "2.5×", "1.9×", "1.8×", "≤ 2×",
            "split-k", "met"] in cells
    assert ["host overhead per call < 100 µs", "lstm", "DB-H512-B16", "inference", "250 µs", "", "", "< 100 µs",
            "per-step", "missed"] in cells
    assert len(cells) == 7  # 3 speed rows, 3 at B ≤ 8, 1 host overhead
    assert "### Where a call's time goes" in report and "overhead µs" in report
    assert "### Summary with the persistent split-K time loops (jit.cuda.split)" in report
    assert "device: Test GPU" in text and "issue 23's targets" in text and "host overhead per call" in text
    # one missing part is said, not a failure
    only_probe = gpu_bench.write_report(tmp_path / "missing.json", tmp_path / "p", probe_path=probe)
    assert "Test GPU" in only_probe and "no benchmark results" in (tmp_path / "p" / "gpu_report.md").read_text()
    with pytest.raises(ValueError, match="neither benchmark results"):
        gpu_bench.write_report(tmp_path / "missing.json", tmp_path, probe_path=tmp_path / "missing_probe.json")


def test_a_simulated_run_judges_nothing_and_shows_no_timing(tmp_path):
    sim = gpu_bench.SIMULATOR_DEVICE
    probe = probe_file(tmp_path, [call_entry("lstm", "tiny", "inference", "per-step", 1e-6, device=sim)])
    bench = bench_file(tmp_path, {("jit.cuda", "DB-H512-B16", "inference"): 3.0,
                                  ("torch.cudnn", "DB-H512-B16", "inference"): 2.0}, device=sim)
    gpu_bench.write_report(bench, tmp_path, probe_path=probe)
    report = (tmp_path / "gpu_report.md").read_text()
    assert "timings are not shown" in report and gpu_bench.NOT_JUDGED in report
    assert " ms" not in report and "ratio" not in report and "overhead µs" not in report
    rows = gpu_bench.targets(gpu_bench.comparison(gpu_bench.load_results(bench)), simulated=True)
    assert len(rows) == 1 and rows["verdict"].eq(gpu_bench.NOT_JUDGED).all() and rows["per-step"].isna().all()


def test_probe_tables_give_each_kernels_share_of_its_calls_busy_time_and_the_steps_rate(tmp_path):
    call = call_entry("lstm", "DB-H512-B16", "training", "per-step", 50e-6)  # busy 1 ms
    case = {"device": "Test GPU", "cell": "lstm", "config": "DB-H512-B16", "mode": "training", "path": "per-step",
            "T": 25, "B": 16, "I": 512, "H": 512}
    kernels = [gpu_probe.entry("kernel", [name, "per-step"], {**case, "kernel": name, "launches_per_call": n,
                                                              "step_kernel": n == 25, "device_s_per_launch": t,
                                                              "host_s_per_launch": 5e-6, "error": None}, [t])
               for name, n, t in [("lstm_step_forward_kernel", 25, 20e-6), ("matmul", 4, 10e-6),
                                  ("copy2d", 2, 1e-6), ("fill2d", 1, 1e-6), ("column_sums", 2, 2e-6),
                                  ("lstm_step_backward_kernel", 25, 12e-6)]]
    tables = gpu_probe.probe_tables(gpu_probe.load_probe(probe_file(tmp_path, [call, *kernels])))
    steps = tables["step_kernels"].set_index("kernel")
    assert list(steps.index) == ["lstm_step_forward_kernel", "lstm_step_backward_kernel"]
    assert steps.loc["lstm_step_forward_kernel", "share of busy"] == pytest.approx(0.5)  # 25 × 20 µs of 1 ms
    flops = 2 * 16 * 4 * 512 ** 2  # W_hh's product of one step: 2·B·G·H²
    assert steps.loc["lstm_step_forward_kernel", "step GFLOP/s"] == pytest.approx(flops / 20e-6 / 1e9)
    top = tables["kernels"]
    assert len(top) == gpu_probe.TOP_KERNELS and "fill2d" not in set(top["kernel"])
    assert list(top["kernel"][:2]) == ["lstm_step_forward_kernel", "lstm_step_backward_kernel"]


def test_load_probe_refuses_a_file_of_other_benchmarks(tmp_path):
    with pytest.raises(ValueError, match="not a gpu_probe file"):
        gpu_probe.load_probe(bench_file(tmp_path, {("jit.cuda", "DB-H512-B16", "inference"): 1.0}))
