"""reports.cpu_targets' method, without timing anything: what it counts, the order it calls
the two implementations in, and how a verdict follows from the numbers."""
import json
from types import SimpleNamespace

import pytest

from reports import cpu_targets, machine


def test_flops_count_both_products_of_every_gate_and_three_times_that_for_training():
    T, B, H = cpu_targets.CONFIGS["M"]
    forward = 2 * T * B * 4 * H * (H + H)  # lstm: G = 4; I = H in every config
    assert cpu_targets.flops("lstm", "M", "inference") == forward
    assert cpu_targets.flops("lstm", "M", "training") == 3 * forward
    assert cpu_targets.flops("rnn_tanh", "M", "inference") == forward / 4


def test_a_layer_rows_flops_count_every_layer_direction_over_the_valid_steps_only():
    """S2-layers: 2 layers, 2 directions, layer 1 reading both directions' H units; T·B becomes
    Σ lengths, the (step, row) pairs a packed sequence runs; lengths in [T/2, T]."""
    from reports.benchmarks import bench_layers
    T, B, H = cpu_targets.CONFIGS["S2"]
    lengths = bench_layers.row_lengths(T, B)
    assert lengths.shape == (B,) and lengths.min() >= T / 2 and lengths.max() <= T
    assert (bench_layers.row_lengths(T, B) == lengths).all()  # a fixed seed: the same rows every run
    valid = int(lengths.sum())
    layer0, layer1 = 2 * 2 * valid * 4 * H * (H + H), 2 * 2 * valid * 4 * H * (2 * H + H)
    assert cpu_targets.flops("lstm", "S2-layers", "inference") == layer0 + layer1
    assert cpu_targets.flops("lstm", "S2-layers", "training") == 3 * (layer0 + layer1)
    assert cpu_targets.RATIO_TARGETS["S2-layers"] == {"inference": 1.0, "training": 1.0}  # not slower than torch
    assert set(cpu_targets.LAYER_CONFIGS) <= set(cpu_targets.parse_args([]).configs)  # measured by default


def test_measure_interleaves_rounds_each_after_a_settling_pause_and_an_untimed_call(monkeypatch):
    """jit round, torch round, jit round, ...: each a CALL_SETTLE_S pause (neither runs while the
    other's idle threads spin), one untimed call, then BURST_CALLS timed calls; the untimed
    first calls come before any of it."""
    events = []
    monkeypatch.setattr(cpu_targets, "_match_threads", lambda threads=None: threads or 2)  # no torch needed
    monkeypatch.setattr(cpu_targets, "_runners",
                        lambda cell, config, mode: (lambda: events.append("jit"), lambda: events.append("torch")))
    monkeypatch.setattr(cpu_targets.time, "sleep", lambda seconds: events.append(("sleep", seconds)))
    row = cpu_targets.measure("gru", "S2", "training", repeats=3, gemm_flops=1e11)
    pause, burst = ("sleep", cpu_targets.CALL_SETTLE_S), cpu_targets.BURST_CALLS
    assert cpu_targets.CALL_SETTLE_S > 0 and burst >= 1
    rounds = [pause, "jit"] + ["jit"] * burst + [pause, "torch"] + ["torch"] * burst
    assert events == ["jit", "torch"] + rounds * 3
    assert len(row["jit_all_s"]) == len(row["torch_all_s"]) == 3 * burst


def test_torch_gets_the_threads_jit_cpu_runs_the_call_on(monkeypatch):
    """One thread for a row whose calls jit.cpu keeps on the caller (S1, under PARALLEL_MIN_MACS),
    the pool's for the others: torch held to two threads where jit.cpu uses one would wait on
    its second core at every step, and the row's target would rest on that wait."""
    from jit.cpu import threads
    given = []
    monkeypatch.setattr(cpu_targets, "_match_threads", lambda n=None: given.append(n) or n)
    monkeypatch.setattr(cpu_targets, "_runners", lambda cell, config, mode: (lambda: None, lambda: None))
    monkeypatch.setattr(cpu_targets.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(threads, "pool_threads", lambda: 2)
    T, B, H = cpu_targets.CONFIGS["S1"]
    assert threads.small_call(T * B * 4 * H * (H + H))  # S1 lstm's forward multiply-adds
    for config, expected in (("S1", 1), ("S2", 2), ("M-layers", 2)):
        for mode in cpu_targets.MODES:
            row = cpu_targets.measure("lstm", config, mode, repeats=1, gemm_flops=1e11)
            assert given[-1] == row["threads"] == expected


def test_a_target_is_the_larger_of_the_ratio_and_the_flop_bound():
    work = cpu_targets.flops("lstm", "L1", "inference")
    row = {"flops": work, "r": 0.8, "torch_s": 0.050, "jit_s": 0.045}
    # the ratio bound is 0.8 × 50 ms = 40 ms; the FLOP bound is work / (0.75 × rate)
    fast_machine = work / 0.015  # FLOP bound 20 ms: the ratio decides, and 45 ms misses it
    verdict = cpu_targets.retarget(row, fast_machine)
    assert verdict["target_s"] == pytest.approx(0.040) and not verdict["met"]
    slow_machine = work / 0.060  # FLOP bound 80 ms: beating torch by 0.8 is out of reach; 45 ms is in
    verdict = cpu_targets.retarget(row, slow_machine)
    assert verdict["target_s"] == pytest.approx(0.080) and verdict["met"]
    assert verdict["pct_achievable"] == pytest.approx(100 * work / 0.045 / slow_machine)
    assert verdict["slower_than_torch"] is False  # 45 ms against torch's 50


def test_a_row_slower_than_torch_is_flagged_even_where_its_target_is_met():
    work = cpu_targets.flops("lstm", "L1", "inference")
    row = {"flops": work, "r": 0.8, "torch_s": 0.040, "jit_s": 0.045}
    verdict = cpu_targets.retarget(row, work / 0.060)  # FLOP bound 80 ms: met, yet 45 ms > torch's 40
    assert verdict["met"] and verdict["slower_than_torch"]
    assert cpu_targets.summary_line([verdict, cpu_targets.retarget(dict(row, jit_s=0.030), work / 0.060)]) == \
        "targets met: 2 of 2; slower than torch: 1 of 2"


def test_the_achievable_rate_is_the_best_of_numpy_torch_mm_and_torch_on_the_rnn_rows():
    rows = [{"cell": "lstm", "config": "M", "mode": "inference", "flops": 4e9, "torch_s": 0.010},   # 400 GFLOP/s
            {"cell": "gru", "config": "S2", "mode": "training", "flops": 1e9, "torch_s": 0.010}]   # 100
    rate, where = cpu_targets.torch_rnn_best(rows)
    assert rate == pytest.approx(400) and where == "lstm M inference"
    rates = {"gemm_fp32_gflops": 250.0, "torch_mm_gflops": 300.0, "torch_rnn_gflops": rate}
    assert cpu_targets.achievable_gflops(rates) == pytest.approx(400)  # torch's oneDNN LSTM beats both GEMMs
    assert cpu_targets.achievable_gflops(dict(rates, torch_rnn_gflops=None)) == 300  # unknown: left out


def synthetic_run(monkeypatch, tmp_path, jit_s, torch_s, name="run.json", configs=("S1", "M")):
    """cpu_targets.main end to end on two lstm rows, with nothing timed: every jit.cpu call 'takes'
    jit_s and every torch call torch_s (cpu_targets._timed returns what the runner returns)."""
    monkeypatch.setattr(cpu_targets, "_match_threads", lambda threads=None: threads or 2)
    monkeypatch.setattr(cpu_targets, "_runners", lambda cell, config, mode: (lambda: jit_s, lambda: torch_s))
    monkeypatch.setattr(cpu_targets, "_timed", lambda fn: fn())
    monkeypatch.setattr(cpu_targets.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(cpu_targets, "numpy_gemm", lambda repeats=5: {
        "gemm_size": 2048, "gemm_seconds": 0.1, "gemm_fp32_gflops": 100.0})
    monkeypatch.setattr(cpu_targets, "torch_mm_gflops", lambda: 120.0)
    monkeypatch.setattr(machine, "busy_cores", lambda: 0.1)  # a quiet machine, whatever this one does
    path = tmp_path / name
    cpu_targets.main(["--cells", "lstm", "--configs", *configs, "--modes", "inference", "--repeats", "2",
                      "--json", str(path)])
    return path


def test_the_json_is_pytest_benchmark_json_that_report_and_compare_read(monkeypatch, tmp_path, capsys):
    from reports import cli, results
    path = synthetic_run(monkeypatch, tmp_path, jit_s=0.0018, torch_s=0.004)
    data = json.loads(path.read_text())
    assert set(data) == {"machine_info", "commit_info", "benchmarks", "datetime", "version"}
    assert {"node", "machine", "cpu", "python_version"} <= set(data["machine_info"])  # pytest-benchmark's own
    assert {"id", "dirty", "branch"} <= set(data["commit_info"])
    info = data["machine_info"]["cellbench"]
    assert (info["gemm_fp32_gflops"], info["torch_mm_gflops"]) == (100.0, 120.0)
    # torch's best row: lstm M inference, 2·50·32·4·256·512 FLOPs in 4 ms = 419 GFLOP/s
    assert info["torch_rnn_gflops"] == pytest.approx(cpu_targets.flops("lstm", "M", "inference") / 0.004 / 1e9)
    assert info["achievable_gflops"] == info["torch_rnn_gflops"] and info["torch_rnn_best"] == "lstm M inference"
    assert {"busy_cores_start", "busy_cores_end", "cpu_count"} <= set(info)

    df = results.load([path])
    assert sorted(df["backend"].unique()) == ["jit.cpu", "torch.nn"] and len(df) == 4
    jit = df[df["backend"] == "jit.cpu"].set_index("config")
    assert (jit["stats.rounds"] == 2 * cpu_targets.BURST_CALLS).all() and (jit["stats.median"] == 0.0018).all()
    assert jit.loc["M", "target_s"] == pytest.approx(max(0.5 * 0.004, cpu_targets.flops("lstm", "M", "inference")
                                                         / (0.75 * info["achievable_gflops"] * 1e9)))
    # S1: r = 0.25 asks for 1 ms, M: r = 0.5 for 2 ms (the FLOP bounds are far lower at 419 GFLOP/s)
    assert bool(jit.loc["S1", "met"]) is False and bool(jit.loc["M", "met"]) is True
    assert not jit["slower_than_torch"].astype(bool).any()
    out = capsys.readouterr().out
    assert "| jit ms" in out and "targets met: 1 of 2; slower than torch: 0 of 2" in out

    assert cli.main(["report", str(path), "-o", str(tmp_path / "report"), "--no-gradient-flow"]) == 0
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "Verdict: jit.cpu is faster than torch.nn in 2 of 2 cases (median 2.22×); speed targets met in 1 of 2" \
        in markdown
    slower = synthetic_run(monkeypatch, tmp_path, jit_s=0.003, torch_s=0.004, name="slower.json")
    capsys.readouterr()
    assert cli.main(["compare", str(path), str(slower)]) == 1  # same machine, same rates: a regression
    out = capsys.readouterr().out
    assert out.count("REGRESSION") == 2  # jit.cpu's two rows, 1.8 -> 3 ms
    assert "4 benchmarks in both runs compared" in out and "2 regression(s) beyond 10%" in out


def test_a_layer_rows_json_names_its_layers_and_lengths_and_reports_read_it(monkeypatch, tmp_path, capsys):
    from reports import results
    from reports.benchmarks import bench_layers
    path = synthetic_run(monkeypatch, tmp_path, jit_s=0.003, torch_s=0.004, configs=("M-layers",))
    data = json.loads(path.read_text())
    jit = next(b for b in data["benchmarks"] if b["extra_info"]["backend"] == "jit.cpu")
    info = jit["extra_info"]
    T, B, H = cpu_targets.CONFIGS["M"]
    assert (info["config"], info["T"], info["B"], info["I"], info["H"]) == ("M-layers", T, B, H, H)
    assert (info["layers"], info["directions"]) == (2, 2)
    assert info["lengths"] == bench_layers.row_lengths(T, B).tolist() and info["valid_steps"] == sum(info["lengths"])
    assert info["product_flops"] == cpu_targets.flops("lstm", "M-layers", "inference")
    assert info["r"] == 1.0 and info["met"] and not info["slower_than_torch"]  # 3 ms against torch's 4
    assert jit["group"] == "lstm-M-layers-inference-float32"
    df = results.load([path])
    assert sorted(df["config"].unique()) == ["M-layers"] and len(df) == 2
    assert "targets met: 1 of 1; slower than torch: 0 of 1" in capsys.readouterr().out


def test_a_runs_machine_info_names_what_jit_cpu_compiled_for():
    """Every number names its machine: the run's machine_info says which vector width, register
    tile and caches jit.cpu chose there (jit.cpu.host), beside the CPU's own name."""
    from jit.cpu import host
    from reports import machine

    info = machine.run_info({"gemm_fp32_gflops": 1.0}, 0.0, {})
    assert info["jit_cpu"]["vector_bytes"] == host.VECTOR_BYTES in (32, 64)
    assert info["jit_cpu"]["tile"] == f"{host.TILE_ROWS}x{host.PANEL_VECTORS}"
    assert info["jit_cpu"]["l2_bytes"] == host.L2_BYTES > 0
    assert f"{host.VECTOR_BYTES}-byte vectors" in info["jit_cpu"]["summary"]


def test_isa_avx2_reruns_the_command_with_every_library_held_to_avx2(monkeypatch):
    """--isa avx2 cannot hold libraries already imported: it runs the same command again in a child
    whose environment holds jit.cpu, Numba, torch (ATen, oneDNN, MKL) and OpenBLAS to AVX2."""
    monkeypatch.delenv(machine.ISA_LIMIT_ENV, raising=False)
    calls = []
    monkeypatch.setattr(cpu_targets.subprocess, "run",
                        lambda command, env: calls.append((command, env)) or SimpleNamespace(returncode=3))
    argv = ["--cells", "gru", "--isa", "avx2", "--json", "out.json"]
    with pytest.raises(SystemExit) as stopped:
        cpu_targets.main(argv)
    assert stopped.value.code == 3  # the child's status is the command's
    (command, env), = calls
    assert command[1:] == ["-m", "reports.cpu_targets", *argv]
    assert env[machine.ISA_LIMIT_ENV] == "avx2" and env["CELLBENCH_VECTOR_BYTES"] == "32"
    assert (env["ATEN_CPU_CAPABILITY"], env["ONEDNN_MAX_CPU_ISA"], env["OPENBLAS_CORETYPE"]) == ("avx2", "AVX2",
                                                                                                "Haswell")
    features = env["NUMBA_CPU_FEATURES"].split(",")
    assert "+avx2" in features or "-avx2" in features  # every host feature is named, on or off
    assert not [f for f in features if f.startswith("+avx512") or f.startswith("+amx")]


def test_avx2_only_environ_turns_off_each_avx512_feature_and_keeps_the_rest():
    env = machine.avx2_only_environ({"PATH": "/bin"}, "znver4",
                                    {"avx2": True, "fma": True, "avx512f": True, "avx512vl": True, "amx-tile": False,
                                     "sse4.2": True})
    assert env["PATH"] == "/bin" and env["NUMBA_CPU_NAME"] == "znver4"
    assert env["NUMBA_CPU_FEATURES"] == "-amx-tile,+avx2,-avx512f,-avx512vl,+fma,+sse4.2"


def test_a_run_held_to_avx2_refuses_to_start_where_a_library_still_uses_avx512():
    assert machine.isa_limit_breaches(None, 64, "+avx512f", "AVX512", []) == []  # not held: nothing to check
    assert machine.isa_limit_breaches("avx2", 32, "+avx2,-avx512f", "AVX2", [{"architecture": "Haswell"}]) == []
    breaches = machine.isa_limit_breaches("avx2", 64, "+avx2,+avx512f", "AVX512",
                                          [{"architecture": "SkylakeX"}])
    assert breaches == ["jit.cpu compiles for 64-byte vectors", "Numba compiles with AVX-512 features on",
                        "torch's CPU capability is AVX512", "BLAS runs its SkylakeX kernels"]


def test_a_run_held_to_avx2_is_named_as_another_machine_than_its_host():
    """Its numbers are not the host's: reports label it AVX2, and never compare it with the host's runs."""
    from reports import results
    host = {"cpu": {"brand_raw": "AMD EPYC", "family": 25, "model": 17, "flags": ["avx2", "avx512f", "fma"]},
            "cellbench": {"cpu_count": 2}, "node": "n"}
    held = {**host, "cellbench": {"cpu_count": 2, "isa_limit": "avx2"}}
    assert machine.identity(held) == {"cpu_name": "AMD EPYC, family 25 model 17, AVX-512 off",
                                      "cpu_features": "avx2 fma", "cores": 2}
    assert machine.identity(held)["cpu_name"] != machine.identity(host)["cpu_name"]
    assert results.machine_label(held) == "n (AMD EPYC, family 25 model 17, AVX-512 off, AVX2, 2 cores)"
