"""onnxruntime's RNN and LSTM with zero time steps (T = 0) return zeros as the last state instead of
the initial state: Y_h = 0 (and Y_c = 0) where initial_h (initial_c) is given.

cellbench finding onnxruntime-zero-steps-zero-state (docs/findings/onnxruntime.md). Needs only onnx,
onnxruntime and numpy:  python docs/findings/onnxruntime_zero_steps.py
Prints what it finds, then PRESENT or ABSENT; exits 0 either way.

After no step the state is still the initial one, as torch.nn and the ONNX reference evaluator have
it. (GRU is left out: with T = 0 it aborts the process, finding onnxruntime-gru-empty-abort.)
"""
import numpy as np
import onnxruntime
from onnx import TensorProto, helper

B, I, H = 2, 3, 4


def session(op_type):
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
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)], ir_version=10)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def main():
    print(f"onnxruntime {onnxruntime.__version__}")
    initial = np.arange(1, B * H + 1, dtype=np.float32).reshape(1, B, H) / 10
    present = False
    for op_type in ("RNN", "LSTM"):
        feeds = {"X": np.zeros((0, B, I), np.float32), "initial_h": initial}
        if op_type == "LSTM":
            feeds["initial_c"] = -initial
        Y, *last = session(op_type).run(None, feeds)
        for name, got, given in zip(("Y_h", "Y_c"), last, (feeds["initial_h"], feeds.get("initial_c"))):
            wrong = not np.array_equal(got, given)
            present = present or wrong
            print(f"{op_type} T = 0: Y shape {Y.shape}; {name} = {got.ravel()[:4]}... "
                  f"{'but' if wrong else 'and'} the initial state is {given.ravel()[:4]}...")
    print("PRESENT" if present else "ABSENT")


if __name__ == "__main__":
    main()
