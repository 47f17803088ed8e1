"""onnxruntime's GRU candidate n = tanh(a) exceeds 1 in magnitude: |n| = 1.0000005 (4 ulps above 1)
for every |a| >= 10, up to 1.0000006 (5 ulps) near |a| = 9-10, so |h| > 1 with h0 = 0.

cellbench finding onnxruntime-gru-tanh-overshoot (docs/findings/onnxruntime.md). Needs only onnx,
onnxruntime and numpy:  python docs/findings/onnxruntime_gru_tanh_overshoot.py
Prints what it finds, then PRESENT or ABSENT; exits 0 either way.

The GRU: h = (1 - z) * n + z * h0 with z = sigmoid(a_z), n = tanh(a_n + ...). Here hidden_size = 1,
a_z = -100 (z = 0), h0 = 0, so h = n = tanh(a_n), and a_n = x (one batch row per value of a).
tanh never exceeds 1 in magnitude, and +-1 is a float32, so a correct float32 tanh gives |h| <= 1.
"""
import numpy as np
import onnxruntime
from onnx import TensorProto, helper


def gru_session(linear_before_reset):
    node = helper.make_node("GRU", ["X", "W", "R", "B", "", "initial_h"], ["Y", "Y_h"], hidden_size=1,
                            linear_before_reset=linear_before_reset)
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, "N", 1]),
              helper.make_tensor_value_info("initial_h", TensorProto.FLOAT, [1, "N", 1])]
    weights = [helper.make_tensor("W", TensorProto.FLOAT, [1, 3, 1], [0.0, 0.0, 1.0]),  # gates z, r, h
               helper.make_tensor("R", TensorProto.FLOAT, [1, 3, 1], [0.0, 0.0, 0.0]),
               helper.make_tensor("B", TensorProto.FLOAT, [1, 6], [-100.0, 0, 0, 0, 0, 0])]  # a_z = -100
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y", "Y_h")]
    graph = helper.make_graph([node], "gru", inputs, outputs, initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=7)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def every_float32(lo, hi):
    """Every float32 in [lo, hi), in order."""
    return np.arange(np.float32(lo).view(np.int32), np.float32(hi).view(np.int32), dtype=np.int32).view(np.float32)


def main():
    print(f"onnxruntime {onnxruntime.__version__}")
    positive = np.concatenate([every_float32(8.0, 10.5), np.float32([16, 20, 50, 100, 1000])])
    a = np.concatenate([positive, -positive])
    ulp = 2.0 ** -23  # float32 spacing just above 1
    present = False
    for linear_before_reset in (1, 0):
        session = gru_session(linear_before_reset)
        h = session.run(None, {"X": a.reshape(1, -1, 1), "initial_h": np.zeros((1, a.size, 1), np.float32)})[1].ravel()
        over = np.abs(h) > 1
        worst = int(np.argmax(np.abs(h)))
        print(f"GRU linear_before_reset={linear_before_reset}: {int(over.sum())} of {a.size} values of a give |h| > 1; "
              f"worst h = {h[worst]:.9g} ({(abs(float(h[worst])) - 1) / ulp:.0f} ulps above 1) at a = {a[worst]:.9g}")
        if over.any():
            print(f"    smallest |a| with |h| > 1: {np.abs(a[over]).min():.9g}")
        for value in (8.0, 9.0, 10.0, 20.0, 1000.0):
            at = int(np.flatnonzero(a == np.float32(value))[0])
            print(f"    a = {value:6g}: h = {h[at]:.9g}   (tanh in float64: {np.tanh(value):.9f})")
        present = present or bool(over.any())
    print("PRESENT" if present else "ABSENT")


if __name__ == "__main__":
    main()
