"""onnxruntime's GRU with an empty input X, zero time steps (T = 0), an empty batch (B = 0) or no input
features (I = 0), aborts the whole process (SIGABRT, "terminate called without an active exception")
instead of returning.

cellbench finding onnxruntime-gru-empty-abort (docs/findings/onnxruntime.md). Needs only onnx,
onnxruntime and numpy:  python docs/findings/onnxruntime_gru_empty_abort.py
Each case runs in a child process (this script again, with the case); the parent prints how each
child ended, then PRESENT or ABSENT, and exits 0 either way.

All three are valid inputs: with T = 0 the state is the initial one and Y is (0, 1, B, H); with B = 0
every output has no rows; with I = 0 (W of shape (1, 3H, 0)) the recurrence runs on h alone. RNN
and LSTM return for I = 0, with the right values (adapters/tests/test_onnxruntime.py); GRU kills
the interpreter, with either linear_before_reset.
"""
import math
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

CASES = ((0, 2, 3), (2, 0, 3), (0, 0, 3), (2, 2, 0))  # (T, B, I)
H = 4


def gru_model(linear_before_reset, I) -> bytes:
    from onnx import TensorProto, helper

    node = helper.make_node("GRU", ["X", "W", "R", "B", "", "initial_h"], ["Y", "Y_h"], hidden_size=H,
                            linear_before_reset=linear_before_reset)
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "N", I]),
              helper.make_tensor_value_info("initial_h", TensorProto.FLOAT, [1, "N", H])]
    weights = [helper.make_tensor(n, TensorProto.FLOAT, shape, [0.1] * math.prod(shape))
               for n, shape in (("W", [1, 3 * H, I]), ("R", [1, 3 * H, H]), ("B", [1, 6 * H]))]
    graph = helper.make_graph([node], "g", inputs,
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ("Y", "Y_h")],
                              initializer=weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=7).SerializeToString()


def child(model_path, T, B, I):
    """Run the model once on X (T, B, I); only numpy and onnxruntime are imported here."""
    import numpy as np
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(Path(model_path).read_bytes(), options, providers=["CPUExecutionProvider"])
    feeds = {"X": np.zeros((T, B, I), np.float32), "initial_h": np.full((1, B, H), 0.5, np.float32)}
    print("returned shapes", [r.shape for r in session.run(None, feeds)])


def main():
    import onnxruntime
    print(f"onnxruntime {onnxruntime.__version__}")
    present = False
    with tempfile.TemporaryDirectory() as folder:
        for linear_before_reset in (1, 0):
            for T, B, I in CASES:
                model = Path(folder) / f"gru_{linear_before_reset}_{I}.onnx"
                if not model.exists():
                    model.write_bytes(gru_model(linear_before_reset, I))
                done = subprocess.run([sys.executable, __file__, str(model), str(T), str(B), str(I)],
                                      capture_output=True, text=True)
                aborted = done.returncode == -signal.SIGABRT
                present = present or aborted
                if aborted:
                    how = f"aborted (SIGABRT): {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}"
                elif done.returncode == 0:
                    how = done.stdout.strip()
                else:  # neither returned nor aborted: the reproducer itself failed, so it cannot tell
                    sys.exit(f"the child failed (exit status {done.returncode}): {done.stderr.strip()[-300:]}")
                print(f"GRU linear_before_reset={linear_before_reset}, T = {T}, B = {B}, I = {I}: {how}")
    print("PRESENT" if present else "ABSENT")


if __name__ == "__main__":
    if len(sys.argv) == 5:
        child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
