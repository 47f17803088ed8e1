"""reports.cpu_targets' method, without timing anything: what it counts, the order it calls
the two implementations in, and how a verdict follows from the numbers."""
import pytest

from reports import cpu_targets


def test_flops_count_both_products_of_every_gate_and_three_times_that_for_training():
    T, B, H = cpu_targets.CONFIGS["M"]
    forward = 2 * T * B * 4 * H * (H + H)  # lstm: G = 4; I = H in every config
    assert cpu_targets.flops("lstm", "M", "inference") == forward
    assert cpu_targets.flops("lstm", "M", "training") == 3 * forward
    assert cpu_targets.flops("rnn_tanh", "M", "inference") == forward / 4


def test_measure_interleaves_rounds_each_after_a_settling_pause_and_an_untimed_call(monkeypatch):
    """jit round, torch round, jit round, ...: each a CALL_SETTLE_S pause (neither runs while the
    other's idle threads spin), one untimed call, then BURST_CALLS timed calls; the untimed
    first calls come before any of it."""
    events = []
    monkeypatch.setattr(cpu_targets, "_match_threads", lambda: 2)  # no torch needed
    monkeypatch.setattr(cpu_targets, "_runners",
                        lambda cell, config, mode: (lambda: events.append("jit"), lambda: events.append("torch")))
    monkeypatch.setattr(cpu_targets.time, "sleep", lambda seconds: events.append(("sleep", seconds)))
    row = cpu_targets.measure("gru", "S2", "training", repeats=3, gemm_flops=1e11)
    pause, burst = ("sleep", cpu_targets.CALL_SETTLE_S), cpu_targets.BURST_CALLS
    assert cpu_targets.CALL_SETTLE_S > 0 and burst >= 1
    rounds = [pause, "jit"] + ["jit"] * burst + [pause, "torch"] + ["torch"] * burst
    assert events == ["jit", "torch"] + rounds * 3
    assert len(row["jit_all_s"]) == len(row["torch_all_s"]) == 3 * burst


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
    assert verdict["pct_gemm_peak"] == pytest.approx(100 * work / 0.045 / slow_machine)
