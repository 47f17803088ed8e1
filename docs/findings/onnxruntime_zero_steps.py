"""onnxruntime's RNN and LSTM with zero time steps (T = 0) return zeros as the last state instead of
the initial state: Y_h = 0 (and Y_c = 0) where initial_h (initial_c) is given.

cellbench finding onnxruntime-zero-steps-zero-state (docs/findings/onnxruntime.md). Needs only onnx,
onnxruntime and numpy:  python docs/findings/onnxruntime_zero_steps.py
Each node runs in a child process (this script again; some versions crash instead); the parent prints
what each returned, then PRESENT or ABSENT, and exits 0 either way.

After no step the state is still the initial one, as torch.nn and the ONNX reference evaluator have
it. (GRU is left out: with T = 0 it aborts the process, finding onnxruntime-gru-empty-abort.)
"""
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

B, I, H = 2, 3, 4


def model(op_type) -> bytes:
    import numpy as np
    from onnx import TensorProto, helper

    lstm = op_type == "LSTM"
    G = 4 if lstm else 1
    states = ["initial_h"] + (["initial_c"] if lstm else [])
    outputs = ["Y", "Y_h"] + (["Y_c"] if lstm else [])
    node = helper.make_node(op_type, ["X", "W", "R", "B", ""] + states, outputs, hidden_size=H)
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", B, I])]
    inputs += [helper.make_tensor_value_info(s, TensorProto.FLOAT, [1, B, H]) for s in states]
    rng = np.random.default_rng(0)
    weights = [helper.make_tensor(n, TensorProto.FLOAT, shape, rng.uniform(-0.5, 0.5, shape).ravel().tolist())
               for n, shape in (("W", [1, G * H, I]), ("R", [1, G * H, H]), ("B", [1, 2 * G * H]))]
    graph = helper.make_graph([node], op_type.lower(), inputs,
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                              initializer=weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=7).SerializeToString()


def child(model_path):
    """Run the model on X (0, B, I) with a nonzero initial state; print each last state beside it."""
    import numpy as np
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(Path(model_path).read_bytes(), options, providers=["CPUExecutionProvider"])
    initial = np.arange(1, B * H + 1, dtype=np.float32).reshape(1, B, H) / 10
    feeds = {"X": np.zeros((0, B, I), np.float32), "initial_h": initial}
    if "initial_c" in {i.name for i in session.get_inputs()}:
        feeds["initial_c"] = -initial
    Y, *last = session.run(None, feeds)
    for name, got, given in zip(("Y_h", "Y_c"), last, (feeds["initial_h"], feeds.get("initial_c"))):
        verdict = "WRONG" if not np.array_equal(got, given) else "RIGHT"
        print(f"{verdict} Y shape {Y.shape}; {name} = {got.ravel()[:4]}..., the initial state {given.ravel()[:4]}...")


def main():
    import onnxruntime
    print(f"onnxruntime {onnxruntime.__version__}")
    present = False
    with tempfile.TemporaryDirectory() as folder:
        for op_type in ("RNN", "LSTM"):
            path = Path(folder) / f"{op_type}.onnx"
            path.write_bytes(model(op_type))
            done = subprocess.run([sys.executable, __file__, str(path)], capture_output=True, text=True)
            if done.returncode < 0:  # killed by a signal: another defect, and this one cannot be seen
                print(f"{op_type} T = 0: killed by {signal.Signals(-done.returncode).name}")
                continue
            if done.returncode != 0:
                sys.exit(f"the child failed (exit status {done.returncode}): {done.stderr.strip()[-300:]}")
            for line in done.stdout.strip().splitlines():
                verdict, _, what = line.partition(" ")
                present = present or verdict == "WRONG"
                print(f"{op_type} T = 0: {what}")
    print("PRESENT" if present else "ABSENT")


if __name__ == "__main__":
    if len(sys.argv) == 2:
        child(sys.argv[1])
    else:
        main()
