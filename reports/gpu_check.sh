#!/usr/bin/env bash
# The real-GPU check of jit.cuda (issue 5), for a person with an NVIDIA GPU:
#   1. the GPU benchmark: jit.cuda vs torch cuDNN nn.RNN/LSTM/GRU, fp32 with TF32 off plus torch's
#      default TF32 row, T=25, I=H in 512/1024/2048, B in 16/32/64, lstm/gru/rnn_tanh, forward and
#      forward+backward, on device arrays, also as jit.cuda.persistent (each time loop as one
#      cooperative launch) (reports/gpu_bench.py);
#   2. OUTDIR/profile.txt: kernel launches per jit.cuda call, its time per call beside cuDNN's, and
#      a cProfile of the host side (reports.gpu_bench profile; capped at 40 s);
#   3. the property suite against jit.cuda on the device (NUMBA_ENABLE_CUDASIM=0, never the simulator),
#      one line per test in its log, so a run cut short by its timeout still says what passed; a test
#      that runs past 90 s gets every thread's stack dumped into the log (pytest's faulthandler_timeout).
#      The benchmark goes first: pytest-benchmark writes its JSON only at the end, so a phase killed
#      by its timeout loses its numbers, while the suite's log keeps what it reached.
#   4. OUTDIR/gpu_report.md from the benchmark JSON, and a short summary table printed last.
# Usage: reports/gpu_check.sh OUTDIR   (OUTDIR is the run's evidence: keep it under reports/measurements/
# and summarize it in docs/jit-cuda.md)
# Needs only numba-cuda, numpy, pandas, pytest, hypothesis, pytest-benchmark and torch (no network).
# Budget: under 8 minutes: the three phases are capped at 120 s + 40 s + 300 s (override with BENCH_TIMEOUT_S,
# PROPERTY_TIMEOUT_S); the device check and the report take seconds. The H200 run in reports/measurements/
# took 62 s for the benchmark (without its persistent rows) and reached 180 of 246 tests in 210 s.
set -uo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 OUTDIR   (results and report are written into OUTDIR)" >&2
    exit 2
fi
OUT=$1
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.." || exit 2

export NUMBA_ENABLE_CUDASIM=0          # the real device, whatever the environment said
export CELLBENCH_BACKEND=jit.cuda:backend
export PYTHONDONTWRITEBYTECODE=1
export NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS=0   # small grids are the point of some property examples
BENCH_TIMEOUT_S=${BENCH_TIMEOUT_S:-120}
PROPERTY_TIMEOUT_S=${PROPERTY_TIMEOUT_S:-300}

echo "== device"
python - "$OUT/device.txt" <<'PY' || { echo "gpu_check: no usable CUDA GPU (see above); nothing measured" >&2; exit 3; }
import platform, sys
import numba, numpy, torch
from numba import cuda
if not cuda.is_available():
    sys.exit("numba.cuda sees no GPU (driver missing, or no device visible)")
if not torch.cuda.is_available():
    sys.exit("torch sees no GPU: install a CUDA build of torch")
dev = cuda.get_current_device()
name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
lines = [f"device: {name}, compute capability {dev.compute_capability}",
         f"torch: {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}), "
         f"torch device {torch.cuda.get_device_name()}",
         f"numba: {numba.__version__}, numpy {numpy.__version__}, python {platform.python_version()}, "
         f"host {platform.node()}"]
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

echo "== GPU benchmark (log: $OUT/gpu_bench.log)"
timeout "$BENCH_TIMEOUT_S" python -m pytest reports/gpu_bench.py -q -p no:cacheprovider \
    --benchmark-json="$OUT/gpu_bench.json" --benchmark-min-rounds=5 --benchmark-max-time=0.05 \
    --benchmark-warmup=on --benchmark-warmup-iterations=1 --benchmark-disable-gc >"$OUT/gpu_bench.log" 2>&1
BENCH_RC=$?
tail -n 3 "$OUT/gpu_bench.log"

echo "== where a jit.cuda call's time goes (file: $OUT/profile.txt)"
timeout 40 python -m reports.gpu_bench profile --out "$OUT"
PROFILE_RC=$?

echo "== property suite against jit.cuda on the device (log: $OUT/properties.log)"
timeout "$PROPERTY_TIMEOUT_S" python -m pytest properties jit/cuda/tests -v -p no:cacheprovider -m "not suite_power" \
    -o faulthandler_timeout=90 \
    --ignore=properties/test_reference.py \
    --junitxml="$OUT/properties_junit.xml" >"$OUT/properties.log" 2>&1
PROPERTY_RC=$?
tail -n 3 "$OUT/properties.log"

echo "== summary (report: $OUT/gpu_report.md)"
echo "property suite exit status $PROPERTY_RC, benchmark $BENCH_RC, profile $PROFILE_RC (0 = fine, 124 = timeout)"
SUMMARY_RC=1
if [ -s "$OUT/gpu_bench.json" ]; then
    python -m reports.gpu_bench summarize "$OUT/gpu_bench.json" --out "$OUT" \
        --properties-junit "$OUT/properties_junit.xml"
    SUMMARY_RC=$?
else
    echo "no benchmark JSON (benchmark exit status $BENCH_RC; 124 means it hit its ${BENCH_TIMEOUT_S}s timeout)"
fi
[ "$PROPERTY_RC" -eq 0 ] && [ "$BENCH_RC" -eq 0 ] && [ "$PROFILE_RC" -eq 0 ] && [ "$SUMMARY_RC" -eq 0 ]
