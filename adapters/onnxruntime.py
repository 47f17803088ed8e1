"""onnxruntime as a cellbench backend: ONNX RNN / LSTM / GRU nodes, forward only, float32 only.

The module itself is the backend (``--backend adapters.onnxruntime:backend``). A cell call is one
ONNX node run by onnxruntime's CPU execution provider; the session is built once per
(cell, I, H) with T and B left symbolic, and the weights are fed as inputs, so one session serves
every problem of that size. ``layer_forward`` (reference.layers' signature) stacks one node per
layer in one graph and uses ONNX's own direction="bidirectional" and sequence_lens.

    cell          ONNX node                       ONNX gate blocks   from PyTorch's blocks
    rnn_tanh      RNN, activations=[Tanh]          h                  h
    rnn_relu      RNN, activations=[Relu]          h                  h
    lstm          LSTM                             i o f c            i f g o   (c is PyTorch's g)
    gru           GRU, linear_before_reset=1       z r h              r z n
    gru_classic   GRU, linear_before_reset=0       z r h              r z n

The conversion reorders rows only; no value changes. ONNX keeps the input and recurrent biases
apart (B = [Wb, Rb]), as PyTorch does, so nothing is summed. What onnxruntime computes is returned
as it is: gates and cs are None (onnxruntime does not expose them), there is no backward
(``backward = None``), and there are no float64 kernels for these ops (``dtypes`` is float32 only).

The adapter corrects nothing. Its one guard is against the inputs that abort the whole process in
onnxruntime (LSTM with B = 0, GRU with T = 0 or B = 0): it raises RuntimeError naming the finding
instead, and CELLBENCH_ONNXRUNTIME_UNGUARDED=1 turns it off so the real abort can be seen. Every
defect is written up in docs/findings/onnxruntime.md, and declared in ``known_defects`` where it
makes a property test fail.
"""
from __future__ import annotations

import functools
import os
import sys
from typing import NamedTuple

import numpy as np

try:
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper
except ImportError as exc:  # optional extra
    raise ImportError('adapters.onnxruntime needs onnx and onnxruntime: pip install -e ".[onnx]"') from exc

from adapters.known import KnownDefect
from reference.contract import CELLS, NUM_GATES, ForwardResult, Params, check_forward_inputs
from reference.layers import LayerForwardResult, check_layer_forward_inputs

name = "onnxruntime"
cells = frozenset(CELLS)
dtypes = frozenset({np.dtype(np.float32)})
backward = None  # onnxruntime's inference sessions have no gradients: forward only
#: What layer_forward does natively; not "projection": ONNX's LSTM has no proj_size (ValueError for w_hr).
layer_features = frozenset({"bidirectional", "lengths"})
backend = sys.modules[__name__]

#: The ONNX opset and IR version the graphs declare. RNN, LSTM and GRU last changed in opset 22
#: (types only); onnxruntime 1.30.0 reads IR versions up to 13, while onnx 1.23's default is 14;
#: onnxruntime 1.20.1 refuses opset 22 (1.30.0 and 1.32.0 checked).
OPSET = 22
IR_VERSION = 10
UNGUARDED = "CELLBENCH_ONNXRUNTIME_UNGUARDED"
FINDINGS = "docs/findings/onnxruntime.md"

# ----- the cells as ONNX nodes ------------------------------------------------------------------------


class NodeSpec(NamedTuple):
    op_type: str
    gate_order: tuple  # ONNX's gate blocks, each given as the index of PyTorch's block
    attributes: dict  # per-direction activations are repeated for bidirectional nodes


NODES = {
    "rnn_tanh": NodeSpec("RNN", (0,), {"activations": ("Tanh",)}),
    "rnn_relu": NodeSpec("RNN", (0,), {"activations": ("Relu",)}),
    "lstm": NodeSpec("LSTM", (0, 3, 1, 2), {}),
    "gru": NodeSpec("GRU", (1, 0, 2), {"linear_before_reset": 1}),
    "gru_classic": NodeSpec("GRU", (1, 0, 2), {"linear_before_reset": 0}),
}


def onnx_rows(cell: str, H: int) -> np.ndarray:
    """(G·H,) row indices: ONNX's weight row k is PyTorch's row onnx_rows[k]."""
    return np.concatenate([np.arange(block * H, (block + 1) * H) for block in NODES[cell].gate_order])


class OnnxWeights(NamedTuple):
    """One direction's weights in ONNX's layout (the node stacks the directions in front)."""

    W: np.ndarray  # (G·H, I), ONNX's gate order
    R: np.ndarray  # (G·H, H)
    B: np.ndarray  # (2·G·H,): [Wb, Rb], the input biases then the recurrent ones


def to_onnx(cell: str, params) -> OnnxWeights:
    """PyTorch-layout params -> ONNX's layout: rows reordered, values and dtype unchanged."""
    rows = onnx_rows(cell, np.shape(params.w_hh)[1])
    w_ih, w_hh, b_ih, b_hh = (np.asarray(getattr(params, n)) for n in ("w_ih", "w_hh", "b_ih", "b_hh"))
    return OnnxWeights(w_ih[rows], w_hh[rows], np.concatenate([b_ih[rows], b_hh[rows]]))


def from_onnx(cell: str, weights: OnnxWeights) -> Params:
    """ONNX's layout -> PyTorch's: the inverse of to_onnx."""
    H = weights.R.shape[1]
    back = np.argsort(onnx_rows(cell, H))
    b_ih, b_hh = np.split(weights.B, 2)
    return Params(weights.W[back], weights.R[back], b_ih[back], b_hh[back])


def _float_input(input_name: str, shape) -> object:
    return helper.make_tensor_value_info(input_name, TensorProto.FLOAT, shape)


def _node(cell: str, H: int, D: int, x_name: str, suffix: str, I: int, with_lengths: bool):
    """One RNN / LSTM / GRU node reading x_name (T, B, I): (node, its graph inputs, output names)."""
    spec = NODES[cell]
    lstm = spec.op_type == "LSTM"
    G = NUM_GATES[cell]
    inputs = [_float_input("W" + suffix, [D, G * H, I]), _float_input("R" + suffix, [D, G * H, H]),
              _float_input("B" + suffix, [D, 2 * G * H]), _float_input("initial_h" + suffix, [D, "B", H])]
    if lstm:
        inputs.append(_float_input("initial_c" + suffix, [D, "B", H]))
    # the node's input order: X, W, R, B, sequence_lens, initial_h (, initial_c); "" leaves one out
    names = [x_name, "W" + suffix, "R" + suffix, "B" + suffix, "sequence_lens" if with_lengths else "",
             "initial_h" + suffix] + (["initial_c" + suffix] if lstm else [])
    outputs = ["Y" + suffix, "Y_h" + suffix] + (["Y_c" + suffix] if lstm else [])
    attributes = {key: list(value) * D if key == "activations" else value for key, value in spec.attributes.items()}
    direction = "bidirectional" if D == 2 else "forward"
    node = helper.make_node(spec.op_type, names, outputs, hidden_size=H, direction=direction, **attributes)
    return node, inputs, outputs


def _model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "cellbench", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                             producer_name="cellbench")


def cell_model(cell: str, I: int, H: int, weights: OnnxWeights = None):
    """One node, D = 1: inputs X (T, B, I), W, R, B, initial_h (1, B, H) (, initial_c);
    outputs Y (T, 1, B, H), Y_h (1, B, H) (, Y_c).

    With ``weights`` (to_onnx's), W, R and B are the model's constants instead of inputs, as in a
    deployed model; onnxruntime then prepacks them once, when the session is made."""
    node, inputs, outputs = _node(cell, H, 1, "X", "", I, with_lengths=False)
    constants = [] if weights is None else [numpy_helper.from_array(np.asarray(getattr(weights, n))[None], n)
                                            for n in OnnxWeights._fields]
    inputs = [i for i in inputs if i.name not in {c.name for c in constants}]
    out_info = [_float_input(o, None) for o in outputs]
    return _model([node], [_float_input("X", ["T", "B", I])] + inputs, out_info, constants)


def layer_model(cell: str, I: int, H: int, L: int, D: int, with_lengths: bool):
    """L nodes stacked, each D directions: layer k reads layer k−1's Y (T, D, B, H) as (T, B, D·H).

    Inputs X (T, B, I), per layer W_k, R_k, B_k, initial_h_k (D, B, H) (, initial_c_k), and
    sequence_lens (B,) int32 when with_lengths; outputs hs (T, B, D·H), h_n and c_n (L·D, B, H).
    """
    lstm = cell == "lstm"
    nodes, inputs = [], [_float_input("X", ["T", "B", I])]
    if with_lengths:
        inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["B"]))
    nodes.append(helper.make_node("Constant", [], ["features"],
                                  value=helper.make_tensor("features", TensorProto.INT64, [1], [D * H])))
    x_name, I_k, last = "X", I, []
    for k in range(L):
        node, node_inputs, outputs = _node(cell, H, D, x_name, f"_{k}", I_k, with_lengths)
        nodes.append(node)
        inputs += node_inputs
        last.append(outputs[1:])
        # Y (T, D, B, H) -> (T, B, D, H) -> (T, B, D·H): directions side by side, forward first. The new
        # shape is built from X's own (T, B), not with -1, which cannot be inferred when T or B is 0.
        y, y_t, tb, shape, x_next = outputs[0], f"Y_t_{k}", f"TB_{k}", f"shape_{k}", f"hs_{k}"
        nodes += [helper.make_node("Transpose", [y], [y_t], perm=[0, 2, 1, 3]),
                  helper.make_node("Shape", [x_name], [tb], start=0, end=2),
                  helper.make_node("Concat", [tb, "features"], [shape], axis=0),
                  helper.make_node("Reshape", [y_t, shape], [x_next])]
        x_name, I_k = x_next, D * H
    nodes.append(helper.make_node("Identity", [x_name], ["hs"]))
    nodes.append(helper.make_node("Concat", [states[0] for states in last], ["h_n"], axis=0))
    outputs = ["hs", "h_n"]
    if lstm:
        nodes.append(helper.make_node("Concat", [states[1] for states in last], ["c_n"], axis=0))
        outputs.append("c_n")
    return _model(nodes, inputs, [_float_input(o, None) for o in outputs])


# ----- sessions ----------------------------------------------------------------------------------------


def session_options(threads: int = 1):
    """One intra-op thread, no inter-op pool: no pool threads at all.

    By default every InferenceSession starts its own intra-op pool of one thread per core, whose
    threads spin after each run; the adapter keeps up to 96 sessions (one per call shape), and the
    suite runs on small problems, in parallel workers and from two threads at once. On the 2-core
    Zen 4 guest one thread cost nothing where the suite's problems live (1000 lstm runs at T=8,
    B=4, I=H=16: 0.019 s on 1 thread, 0.021 s on 2); 2 threads win only on larger ones (T=20, B=8,
    I=H=64: 0.167 s on 1, 0.116 s on 2) with the second core free. The benchmark peer
    (reports/benchmarks/bench_cells.py) builds its own sessions with every core, as torch.nn runs."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: warnings about unused initializers are not ours
    return options


def make_session(model, threads: int = 1):
    return onnxruntime.InferenceSession(model.SerializeToString(), session_options(threads),
                                        providers=["CPUExecutionProvider"])


@functools.lru_cache(maxsize=64)
def cell_session(cell: str, I: int, H: int):
    return make_session(cell_model(cell, I, H))


@functools.lru_cache(maxsize=32)
def layer_session(cell: str, I: int, H: int, L: int, D: int, with_lengths: bool):
    return make_session(layer_model(cell, I, H, L, D, with_lengths))


# ----- the contract ------------------------------------------------------------------------------------

#: The inputs that abort the process (SIGABRT: "terminate called without an active exception") in
#: onnxruntime 1.30.0, by ONNX op: (finding, predicate on T, B and I, the sizes of X). Checked in a
#: subprocess by adapters/tests/test_onnxruntime.py and docs/findings/onnxruntime_*_abort.py.
ABORTS = {
    "LSTM": ("onnxruntime-lstm-empty-batch-abort", lambda T, B, I: B == 0),
    "GRU": ("onnxruntime-gru-empty-abort", lambda T, B, I: T == 0 or B == 0 or I == 0),
}


def guard_against_abort(cell: str, T: int, B: int, I: int) -> None:
    """Raise RuntimeError naming the finding where onnxruntime would abort the whole process."""
    op_type = NODES[cell].op_type
    if op_type not in ABORTS or os.environ.get(UNGUARDED) == "1":
        return
    finding, aborts = ABORTS[op_type]
    if aborts(T, B, I):
        raise RuntimeError(
            f"onnxruntime {onnxruntime.__version__}'s {op_type} aborts the process (SIGABRT) with X of shape "
            f"(T, B, I) = ({T}, {B}, {I}); not run (finding {finding}, {FINDINGS}#{finding}; set {UNGUARDED}=1 "
            f"to run it)")


def check_float32(dtype) -> None:
    if np.dtype(dtype) != np.float32:
        raise TypeError(f"x: expected dtype float32 (onnxruntime has no float64 kernels for these ops); "
                        f"got {np.dtype(dtype)}")


def _feeds(cell: str, params_by_direction, h0, c0, suffix: str) -> dict:
    """One node's weight and state inputs; params_by_direction: the D directions' params."""
    weights = [to_onnx(cell, p) for p in params_by_direction]
    feeds = {"W" + suffix: np.stack([w.W for w in weights]), "R" + suffix: np.stack([w.R for w in weights]),
             "B" + suffix: np.stack([w.B for w in weights]), "initial_h" + suffix: np.ascontiguousarray(h0)}
    if c0 is not None:
        feeds["initial_c" + suffix] = np.ascontiguousarray(c0)
    return feeds


def forward(cell, params, x, h0, c0=None, *, training=True):
    """One ONNX node over the sequence. gates and cs are None: onnxruntime does not expose them."""
    T, B, I, H, _, dtype = check_forward_inputs(cell, params, x, h0, c0)
    check_float32(dtype)
    guard_against_abort(cell, T, B, I)
    feeds = {"X": np.ascontiguousarray(x), **_feeds(cell, [params], h0[None], None if c0 is None else c0[None], "")}
    results = cell_session(cell, I, H).run(None, feeds)
    Y, Y_h = results[0], results[1]  # (T, 1, B, H), (1, B, H)
    c_n = results[2][0] if cell == "lstm" else None
    return ForwardResult(Y[:, 0], Y_h[0], c_n, None, None)


def layer_forward(cell, params, x, h0, c0=None, *, bidirectional=False, lengths=None, training=True):
    """Stacked, bidirectional, variable-length layers through ONNX's own node features."""
    shapes = check_layer_forward_inputs(cell, params, x, h0, c0, bidirectional, lengths)
    check_float32(shapes.dtype)
    if shapes.projected:
        raise ValueError(f"params[0].w_hr: expected no projection (ONNX's LSTM has no proj_size, so onnxruntime "
                         f"cannot run one); got w_hr of shape {tuple(np.shape(params[0].w_hr))}")
    guard_against_abort(cell, shapes.T, shapes.B, shapes.I)
    L, D = shapes.L, shapes.D
    feeds = {"X": np.ascontiguousarray(x)}
    if lengths is not None:
        feeds["sequence_lens"] = np.asarray(lengths, np.int32)
    for k in range(L):
        directions = slice(k * D, (k + 1) * D)
        feeds.update(_feeds(cell, params[directions], h0[directions], None if c0 is None else c0[directions],
                            f"_{k}"))
    session = layer_session(cell, shapes.I, shapes.H, L, D, lengths is not None)
    results = session.run(None, feeds)
    return LayerForwardResult(results[0], results[1], results[2] if cell == "lstm" else None, None)


# ----- what the suite found (docs/findings/onnxruntime.md) ---------------------------------------------

#: The onnxruntime versions each finding was seen in (its reproducer run against each); adapters/tests
#: re-checks the installed version against this, and docs/findings/onnxruntime.md lists the same.
FOUND_IN = {
    "onnxruntime-gru-tanh-overshoot": ("1.20.1", "1.30.0", "1.32.0"),
    "onnxruntime-lstm-tanh-overshoot": ("1.20.1", "1.30.0", "1.32.0"),
    "onnxruntime-zero-steps-zero-state": ("1.20.1", "1.30.0", "1.32.0"),
    "onnxruntime-lstm-empty-batch-abort": ("1.20.1", "1.30.0", "1.32.0"),
    "onnxruntime-gru-empty-abort": ("1.20.1", "1.30.0", "1.32.0"),
}

#: The property tests the findings make fail. onnxruntime-gru-tanh-overshoot is not here: its 4 ulps
#: above 1 lie within test_gru_bounds' rounding allowance (8u·t), and no property fails by it, in
#: the ci profile or in 1000 examples (thorough).
known_defects = (
    KnownDefect("onnxruntime-lstm-tanh-overshoot", ("test_states_obey_their_bounds",), cells=("lstm",)),
    KnownDefect("onnxruntime-zero-steps-zero-state", ("test_zero_steps_return_the_initial_state",),
                cells=("rnn_tanh", "rnn_relu", "lstm")),
    KnownDefect("onnxruntime-lstm-empty-batch-abort", ("test_an_empty_batch_gives_empty_results",), cells=("lstm",)),
    KnownDefect("onnxruntime-gru-empty-abort",
                ("test_zero_steps_return_the_initial_state", "test_an_empty_batch_gives_empty_results"),
                cells=("gru", "gru_classic")),
)
