"""onnxruntime's LSTM with an empty batch (B = 0) aborts the whole process (SIGABRT, "terminate
called without an active exception") instead of returning empty results.

cellbench finding onnxruntime-lstm-empty-batch-abort (docs/findings/onnxruntime.md). Needs only onnx,
onnxruntime and numpy:  python docs/findings/onnxruntime_lstm_empty_batch_abort.py
Each case runs in a child process (this script again, with the case's T and B); the parent prints
how each child ended, then PRESENT or ABSENT, and exits 0 either way.

A batch filtered down to no rows is a valid input: Y is (T, 1, 0, H), Y_h and Y_c (1, 0, H). RNN
(and LSTM with T = 0, B > 0) return those shapes; LSTM with B = 0 kills the interpreter.
"""
import math
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

CASES = (("LSTM", 2, 0), ("LSTM", 0, 0), ("LSTM", 0, 2), ("RNN", 2, 0))  # (op, T, B)
I, H = 3, 4


def model(op_type) -> bytes:
    from onnx import TensorProto, helper

    lstm = op_type == "LSTM"
    G = 4 if lstm else 1
    states = ["initial_h"] + (["initial_c"] if lstm else [])
    outputs = ["Y", "Y_h"] + (["Y_c"] if lstm else [])
    node = helper.make_node(op_type, ["X", "W", "R", "B", ""] + states, outputs, hidden_size=H)
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "N", I])]
    inputs += [helper.make_tensor_value_info(s, TensorProto.FLOAT, [1, "N", H]) for s in states]
    weights = [helper.make_tensor(n, TensorProto.FLOAT, shape, [0.1] * math.prod(shape))
               for n, shape in (("W", [1, G * H, I]), ("R", [1, G * H, H]), ("B", [1, 2 * G * H]))]
    graph = helper.make_graph([node], "g", inputs,
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                              initializer=weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=7).SerializeToString()


def child(model_path, T, B):
    """Run the model once on X (T, B, I); only numpy and onnxruntime are imported here."""
    import numpy as np
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(Path(model_path).read_bytes(), options, providers=["CPUExecutionProvider"])
    feeds = {i.name: np.zeros((T, B, I) if i.name == "X" else (1, B, H), np.float32) for i in session.get_inputs()}
    print("returned shapes", [r.shape for r in session.run(None, feeds)])


def main():
    import onnxruntime
    print(f"onnxruntime {onnxruntime.__version__}")
    present = False
    with tempfile.TemporaryDirectory() as folder:
        for op_type, T, B in CASES:
            path = Path(folder) / f"{op_type}.onnx"
            if not path.exists():
                path.write_bytes(model(op_type))
            done = subprocess.run([sys.executable, __file__, str(path), str(T), str(B)], capture_output=True, text=True)
            aborted = done.returncode == -signal.SIGABRT
            present = present or (aborted and op_type == "LSTM" and B == 0)
            if aborted:
                how = f"aborted (SIGABRT): {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}"
            elif done.returncode == 0:
                how = done.stdout.strip()
            else:  # neither returned nor aborted: the reproducer itself failed, so it cannot tell
                sys.exit(f"the child failed (exit status {done.returncode}): {done.stderr.strip()[-300:]}")
            print(f"{op_type} T = {T}, B = {B}: {how}")
    print("PRESENT" if present else "ABSENT")


if __name__ == "__main__":
    if len(sys.argv) == 4:
        child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
