#!/usr/bin/env bash
# The real-GPU check of jit.cuda (issues 5 and 23), for a person with an NVIDIA GPU. In OUTDIR:
#   0. device.txt: the GPU, driver and packages; one kernel compiled and run first (a numba-cuda that
#      cannot compile there is one clear message, not a failure in every phase).
#   1. gpu_bench.json, gpu_bench.log: jit.cuda (per-step; jit.cuda.persistent: each time loop one
#      cooperative launch; jit.cuda.split: those split-K, jit/cuda/split.py) vs torch cuDNN
#      nn.RNN/LSTM/GRU, fp32 with TF32 off plus torch's default TF32 row, T=25, I=H in 512/1024/2048,
#      B in 16/32/64 then 4/8, lstm/gru/rnn_tanh, forward and forward+backward, on device arrays
#      (reports/gpu_bench.py). Cases past the bench deadline skip themselves, so pytest-benchmark
#      still writes its JSON (a killed one writes nothing).
#   2. gpu_probe.json, gpu_probe.log: host vs device time per call (CUDA events), launches, allocations,
#      copies and syncs per call, each kernel's device time, µs per grid.sync (reports/gpu_probe.py);
#      rewritten after every row, so a run cut short keeps what it measured.
#   3. profile.txt: launches and cProfile of the host side of one call (reports.gpu_bench profile).
#   4. properties.log, properties_junit.xml: the property suite against jit.cuda on the device
#      (NUMBA_ENABLE_CUDASIM=0), one line per test, so a run cut short still says what passed; a test
#      past 90 s gets every thread's stack dumped into the log. It gets what is left of the budget.
#   5. gpu_report.md: issue 23's targets row by row (met / missed, ratio), the comparison and the
#      probe's tables, with the device named; its summary is printed last.
# Usage: reports/gpu_check.sh OUTDIR   (OUTDIR is the run's evidence: keep it under reports/measurements/
# with the device in its name, and summarize it in docs/jit-cuda.md)
# Budget: 450 s (7.5 min) in all, whatever happens, under the 8 minutes of one device run. Caps, each
# timed out 5 s after SIGTERM: device check 45 s, benchmark 180 s (its cases stop at 160 s), probe 60 s
# (no row starts after 45 s), profile 30 s, report 25 s (reserved); the property suite gets the rest:
# 80 s if every phase before it ran to its cap, ~165 s typically (skipped under 30 s).
# GPU_CHECK_BUDGET_S, BENCH_TIMEOUT_S, PROBE_TIMEOUT_S override. Expected on an H200: ~15 s device
# check, ~170 s benchmark (compiling included; the old code took 62 s for its 162 cases, 0.38 s each,
# now 450 with jit.cuda.split: the last small-batch configs may skip), ≤ 50 s probe, ~20 s profile,
# then the suite to the end of the budget: 7.5 min in all.
# Dry run: GPU_CHECK_DRY_RUN=1 reports/gpu_check.sh OUTDIR needs no GPU: under the CUDA simulator it runs
# the probe and one benchmark row on tiny shapes (lstm, T=3, B=2, I=H=5) and writes the JSON and the
# report (without timings), to prove the plumbing; no profile, no property suite. About 15 s.
# Needs only numba-cuda, numpy < 2.5, pandas, tabulate, pytest, hypothesis, pytest-benchmark and torch.
set -uo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 OUTDIR   (results and report are written into OUTDIR)" >&2
    exit 2
fi
OUT=$1
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.." || exit 2

DRY_RUN=0
[ "${GPU_CHECK_DRY_RUN:-0}" != 0 ] && DRY_RUN=1
if [ "$DRY_RUN" -eq 1 ]; then
    export NUMBA_ENABLE_CUDASIM=1      # the simulator: plumbing only, never a timing
else
    export NUMBA_ENABLE_CUDASIM=0      # the real device, whatever the environment said
fi
export CELLBENCH_BACKEND=jit.cuda:backend
export PYTHONDONTWRITEBYTECODE=1
export NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS=0   # small grids are the point of some property examples
BUDGET_S=${GPU_CHECK_BUDGET_S:-450}
DEVICE_TIMEOUT_S=45
BENCH_TIMEOUT_S=${BENCH_TIMEOUT_S:-180}
BENCH_DEADLINE_S=$((BENCH_TIMEOUT_S - 20))   # the last case, the JSON and pytest's exit fit in 20 s
PROBE_TIMEOUT_S=${PROBE_TIMEOUT_S:-60}
PROBE_DEADLINE_S=$((PROBE_TIMEOUT_S - 15))   # a row takes up to ~5 s (compiling included)
PROFILE_TIMEOUT_S=30
REPORT_RESERVE_S=30                          # the report's 25 s cap and its 5 s kill margin
MIN_PROPERTY_S=30
SECONDS=0
capped() {  # capped SECONDS COMMAND...: run it, SIGTERM after SECONDS, SIGKILL 5 s later
    local limit=$1
    shift
    timeout --kill-after=5 "$limit" "$@"
}

echo "== device (file: $OUT/device.txt)"
if [ "$DRY_RUN" -eq 1 ]; then
    echo "CUDA simulator (GPU_CHECK_DRY_RUN=1: the plumbing only, no timing)" >"$OUT/device.txt"
    cat "$OUT/device.txt"
else
    capped "$DEVICE_TIMEOUT_S" python - "$OUT/device.txt" <<'PY' || { echo "gpu_check: no usable CUDA GPU (see above); nothing measured" >&2; exit 3; }
import importlib.metadata, platform, subprocess, sys
import numba, numpy, torch
from numba import cuda
if not cuda.is_available():
    sys.exit("numba.cuda sees no GPU (driver missing, or no device visible)")
if not torch.cuda.is_available():
    sys.exit("torch sees no GPU: install a CUDA build of torch")
def version(package):
    try:
        return importlib.metadata.version(package)
    except Exception:  # a missing record must not stop the check
        return "?"
dev = cuda.get_current_device()
name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
lines = [f"device: {name}, compute capability {dev.compute_capability}, {dev.MULTIPROCESSOR_COUNT} SMs",
         f"torch: {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}), "
         f"torch device {torch.cuda.get_device_name()}",
         f"numba: {numba.__version__}, numba-cuda {version('numba-cuda')}, "
         f"numpy {numpy.__version__}, python {platform.python_version()}, host {platform.node()}"]
try:  # the driver's version and clocks; nothing measured depends on it
    query = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,memory.total",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    if query.returncode == 0 and query.stdout.strip():
        lines.append(f"nvidia-smi: {query.stdout.strip().splitlines()[0]} (driver, max SM clock, memory)")
except (OSError, subprocess.SubprocessError):
    pass
# Compile and run one kernel now: a numba-cuda that cannot compile here (a driver, NVVM or NumPy it
# does not support) is one clear message, not a failure in every test.
@cuda.jit
def one_kernel(a):
    a[0] = 1.0
try:
    probe = cuda.device_array(1, dtype=numpy.float32)
    one_kernel[1, 1](probe)
    assert probe.copy_to_host()[0] == 1.0
except Exception as exc:
    hint = (f"; numba-cuda needs numpy < 2.5 (this is {numpy.__version__}): put a numpy 2.4 on PYTHONPATH"
            if "row_stack" in str(exc) else "")
    sys.exit(f"numba.cuda cannot compile and run a kernel here: {type(exc).__name__}: {exc}{hint}")
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
fi

echo "== GPU benchmark (log: $OUT/gpu_bench.log; at most ${BENCH_TIMEOUT_S} s)"
if [ "$DRY_RUN" -eq 1 ]; then
    CELLBENCH_GPU_CONFIGS=tiny CELLBENCH_GPU_CELLS=lstm capped "$BENCH_TIMEOUT_S" python -m pytest \
        "reports/gpu_bench.py::test_gpu[jit.cuda-lstm-tiny-inference]" -q -p no:cacheprovider \
        --benchmark-json="$OUT/gpu_bench.json" --benchmark-min-rounds=1 --benchmark-max-time=0 \
        --benchmark-warmup=off >"$OUT/gpu_bench.log" 2>&1
else
    # the deadline only here: the property suite's own runs of gpu_bench.py must not inherit it
    CELLBENCH_GPU_DEADLINE_S=$BENCH_DEADLINE_S capped "$BENCH_TIMEOUT_S" python -m pytest reports/gpu_bench.py -q \
        -p no:cacheprovider --benchmark-json="$OUT/gpu_bench.json" --benchmark-min-rounds=5 \
        --benchmark-max-time=0.05 --benchmark-warmup=on --benchmark-warmup-iterations=1 --benchmark-disable-gc \
        >"$OUT/gpu_bench.log" 2>&1
fi
BENCH_RC=$?
tail -n 3 "$OUT/gpu_bench.log"

echo "== where a call's time goes (log: $OUT/gpu_probe.log; at most ${PROBE_TIMEOUT_S} s)"
if [ "$DRY_RUN" -eq 1 ]; then
    capped "$PROBE_TIMEOUT_S" python -m reports.gpu_probe --out "$OUT" --configs tiny --cells lstm \
        >"$OUT/gpu_probe.log" 2>&1
else
    capped "$PROBE_TIMEOUT_S" python -m reports.gpu_probe --out "$OUT" --deadline-s "$PROBE_DEADLINE_S" \
        >"$OUT/gpu_probe.log" 2>&1
fi
PROBE_RC=$?
tail -n 2 "$OUT/gpu_probe.log"

PROFILE_RC=0
PROPERTY_RC=0
JUNIT_ARGS=()
if [ "$DRY_RUN" -eq 1 ]; then
    echo "== profile and property suite: not in a dry run"
else
    echo "== launches and cProfile of one call (file: $OUT/profile.txt; at most ${PROFILE_TIMEOUT_S} s)"
    capped "$PROFILE_TIMEOUT_S" python -m reports.gpu_bench profile --out "$OUT"
    PROFILE_RC=$?

    PROPERTY_TIMEOUT_S=$((BUDGET_S - SECONDS - REPORT_RESERVE_S - 5))
    JUNIT_ARGS=(--properties-junit "$OUT/properties_junit.xml")
    if [ "$PROPERTY_TIMEOUT_S" -lt "$MIN_PROPERTY_S" ]; then
        echo "== property suite: skipped, ${PROPERTY_TIMEOUT_S} s left of the ${BUDGET_S} s budget"
        PROPERTY_RC=125
    else
        echo "== property suite against jit.cuda on the device (log: $OUT/properties.log; at most ${PROPERTY_TIMEOUT_S} s)"
        capped "$PROPERTY_TIMEOUT_S" python -m pytest properties jit/cuda/tests -v -p no:cacheprovider \
            -m "not suite_power" -o faulthandler_timeout=90 --ignore=properties/test_reference.py \
            --junitxml="$OUT/properties_junit.xml" >"$OUT/properties.log" 2>&1
        PROPERTY_RC=$?
        tail -n 3 "$OUT/properties.log"
    fi
fi

echo "== summary (report: $OUT/gpu_report.md)"
echo "benchmark exit status $BENCH_RC, probe $PROBE_RC, profile $PROFILE_RC, property suite $PROPERTY_RC" \
     "(0 = fine, 124 = timeout, 125 = no time left); ${SECONDS} s so far"
REPORT_RC=1
if [ -s "$OUT/gpu_bench.json" ] || [ -s "$OUT/gpu_probe.json" ]; then
    capped 25 python -m reports.gpu_bench summarize "$OUT/gpu_bench.json" --out "$OUT" \
        --probe "$OUT/gpu_probe.json" "${JUNIT_ARGS[@]}"
    REPORT_RC=$?
else
    echo "no benchmark JSON and no probe JSON: nothing to report (see gpu_bench.log, gpu_probe.log)"
fi
echo "gpu_check: done in ${SECONDS} s"
[ "$BENCH_RC" -eq 0 ] && [ "$PROBE_RC" -eq 0 ] && [ "$PROFILE_RC" -eq 0 ] && [ "$PROPERTY_RC" -eq 0 ] \
    && [ "$REPORT_RC" -eq 0 ]
