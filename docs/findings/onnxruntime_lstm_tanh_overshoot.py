"""onnxruntime's LSTM returns |h| > 1: h = o * tanh(c) with tanh(c) = 1.0000002 (2 ulps above 1) for
|c| in about (8.1, 9), and o = sigmoid(a) = 1.0000001 at some a in (17.4, 18); together 1.0000004.

cellbench finding onnxruntime-lstm-tanh-overshoot (docs/findings/onnxruntime.md). Needs only onnx,
onnxruntime and numpy:  python docs/findings/onnxruntime_lstm_tanh_overshoot.py
Prints what it finds, then PRESENT or ABSENT; exits 0 either way.

The LSTM, hidden_size = 1, one step: i = sigmoid(-100) ~ 0, f = sigmoid(100) = 1, g = tanh(0) = 0, so
c = f * c0 + i * g = c0 (the script checks it), and o = sigmoid(a_o) with a_o = x (one batch row per
value). h = o * tanh(c0) is at most 1 in magnitude: sigmoid <= 1 and |tanh| <= 1, both float32 exactly.
"""
import numpy as np
import onnxruntime
from onnx import TensorProto, helper


def lstm_session():
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "", "initial_h", "initial_c"], ["Y", "Y_h", "Y_c"],
                            hidden_size=1)
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, "N", 1]),
              helper.make_tensor_value_info("initial_h", TensorProto.FLOAT, [1, "N", 1]),
              helper.make_tensor_value_info("initial_c", TensorProto.FLOAT, [1, "N", 1])]
    weights = [helper.make_tensor("W", TensorProto.FLOAT, [1, 4, 1], [0.0, 1.0, 0.0, 0.0]),  # gates i, o, f, c: a_o = x
               helper.make_tensor("R", TensorProto.FLOAT, [1, 4, 1], [0.0] * 4),
               helper.make_tensor("B", TensorProto.FLOAT, [1, 8], [-100.0, 0, 100, 0, 0, 0, 0, 0])]  # a_i, a_f
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y", "Y_h", "Y_c")]
    graph = helper.make_graph([node], "lstm", inputs, outputs, initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=7)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def every_float32(lo, hi):
    """Every float32 in [lo, hi), in order."""
    return np.arange(np.float32(lo).view(np.int32), np.float32(hi).view(np.int32), dtype=np.int32).view(np.float32)


def run(session, a_o, c0):
    a_o, c0 = np.broadcast_arrays(np.float32(a_o), np.float32(c0))
    n = a_o.size
    _, h, c = session.run(None, {"X": a_o.reshape(1, n, 1), "initial_h": np.zeros((1, n, 1), np.float32),
                                 "initial_c": np.ascontiguousarray(c0).reshape(1, n, 1)})
    assert np.array_equal(c.ravel(), c0.ravel()), "c changed: the setup needs i = 0 and f = 1"
    return h.ravel()


def main():
    print(f"onnxruntime {onnxruntime.__version__}")
    ulp = 2.0 ** -23  # float32 spacing just above 1
    session = lstm_session()
    c = np.concatenate([every_float32(8.0, 9.1), -every_float32(8.0, 9.1)])
    h = run(session, 100.0, c)  # o = 1: h = tanh(c)
    over = np.abs(h) > 1
    worst_c = c[np.argmax(np.abs(h))]
    print(f"o = 1, every float32 |c| in [8, 9.1): {int(over.sum())} of {c.size} give |h| > 1, |c| in "
          f"[{np.abs(c[over]).min() if over.any() else 0:.7g}, {np.abs(c[over]).max() if over.any() else 0:.7g}]; "
          f"worst |h| = {np.abs(h).max():.9g} ({(float(np.abs(h).max()) - 1) / ulp:.0f} ulps) at c = {worst_c:.9g}")
    a = every_float32(17.0, 18.5)
    o = run(session, a, 20.0)  # tanh(20) = 1: h = o
    over_o = o > 1
    print(f"c = 20, every float32 a_o in [17, 18.5): {int(over_o.sum())} give o > 1 (max {o.max():.9g}), "
          f"e.g. a_o = {', '.join(f'{v:.7g}' for v in a[over_o][:4])}")
    both = 0.0
    if over.any() and over_o.any():
        both = float(run(session, a[over_o][np.argmax(o[over_o])], np.abs(worst_c))[0])
        print(f"both at once, a_o = {a[over_o][np.argmax(o[over_o])]:.7g}, c = {abs(worst_c):.7g}: "
              f"h = {both:.9g} ({(both - 1) / ulp:.0f} ulps above 1)")
    print("PRESENT" if over.any() or over_o.any() else "ABSENT")


if __name__ == "__main__":
    main()
