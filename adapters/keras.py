"""Keras 3's recurrent layers on the JAX backend as a cellbench backend, differentiated by jax.vjp.

    rnn_tanh, rnn_relu   keras.layers.SimpleRNN(activation="tanh" / "relu")
    lstm                 keras.layers.LSTM
    gru                  keras.layers.GRU(reset_after=True): n = tanh(W_in x + b_in + r⊙(W_hn h + b_hn))
    gru_classic          keras.layers.GRU(reset_after=False): n = tanh(W_in x + b + W_hn (r⊙h)), one bias
                         b = b_in + b_hn; both mix h' = z⊙h + (1 − z)⊙n, as cellbench's GRUs do

Each layer is called whole (return_sequences, return_state, an initial_state), through
``Layer.stateless_call`` inside one compiled JAX program, with the layer's own defaults (sigmoid
recurrent activation, implementation 2). Keras is batch-major, so x goes in as (B, T, I) and hs
comes back transposed (both exact). gates and cs are None: Keras does not expose them. Layers are
composed by the suite from these calls; ``with_native_layers`` (below) is the same backend judged on
Keras' own stacked, Bidirectional, masked layers instead.

Keras must run on JAX: importing this module sets KERAS_BACKEND=jax when Keras is not yet
imported, and raises ImportError when Keras is already imported with another backend or
KERAS_BACKEND names another one (Keras reads it once, for the whole process). float32 and float64
(a layer built with ``dtype="float64"``; JAX's 64-bit mode is entered per call, see
adapters.jax_common, which also pads small shapes to keep the compile count down).

**Params.** Keras' kernels are (in, G·H), gate blocks side by side:
- SimpleRNN: kernel W_ih^T, recurrent_kernel W_hh^T, one bias b_ih + b_hh;
- LSTM: blocks i, f, c, o (PyTorch's i, f, g, o): the same transposes, one bias b_ih + b_hh;
- GRU: blocks z, r, h (PyTorch's r, z, n: the first two swap); reset_after=True has a bias of
  shape (2, 3H), input and recurrent rows, so both are copied exactly; reset_after=False has one
  bias, b_ih + b_hh, which for the n block is b_in + b_hn outside the reset product, exactly where
  gru_classic has both.
The sum is one rounding of one addition, and within cellbench's tolerances: a pre-activation sums
the n = I + H + 2 terms W_ih x, W_hh h, b_ih and b_hh, and the suite's bound (n·u·Σ|terms|,
docs/tolerances.md) holds for any order of that sum, adding the two biases first included. The
gradients go back through the same sum, so db_ih = db_hh exactly, as in PyTorch.
"""
from __future__ import annotations

import os
import sys
from types import SimpleNamespace

if "keras" in sys.modules:
    _running = sys.modules["keras"].backend.backend()
    if _running != "jax":
        raise ImportError(f"adapters.keras needs Keras on the JAX backend; Keras is already imported with "
                          f"backend {_running!r} in this process (set KERAS_BACKEND=jax before importing it)")
elif os.environ.setdefault("KERAS_BACKEND", "jax") != "jax":
    raise ImportError(f"adapters.keras needs Keras on the JAX backend; KERAS_BACKEND is "
                      f"{os.environ['KERAS_BACKEND']!r} (unset it or set it to jax)")

try:
    import jax
    import jax.numpy as jnp
    import keras
except ImportError as exc:  # keras and jax are an optional extra
    raise ImportError('adapters.keras needs Keras and JAX: pip install -e ".[jax]"') from exc

import numpy as np

from . import jax_common
from .known import KnownDefect

name = "keras"
cells = frozenset({"rnn_tanh", "rnn_relu", "lstm", "gru", "gru_classic"})
dtypes = frozenset({np.dtype(np.float32), np.dtype(np.float64)})
#: The property suite's sizes on this backend: within jax_common.SMALL, so that B, I and H run
#: padded to one size and only T varies between compiled programs (see adapters.jax_common).
max_test_sizes = {"T": 8, "B": jax_common.SMALL, "I": jax_common.SMALL, "H": jax_common.SMALL}
#: Findings about Keras (docs/findings/keras.md) and the versions that have them.
FOUND_IN = {
    "keras-float64-tanh-in-float32": ("3.15.1",),
    "keras-simplernn-float64-typeerror": ("3.15.1",),
    "keras-zero-steps-indexerror": ("3.15.1",),
}
#: What the property suite finds wrong in Keras 3.15.1 (docs/findings/keras.md); the adapter works
#: around none of it. The first matching defect names a failure, so T = 0 comes first.
known_defects = (
    KnownDefect("keras-zero-steps-indexerror", ("test_zero_steps_return_the_initial_state",)),
    KnownDefect("keras-simplernn-float64-typeerror", (
        # every property that runs rnn_tanh in float64 (the layer family's and the central differences'
        # float64 included)
        "test_forward_and_backward_agree_with_the_reference", "test_gradients_match_central_differences",
        "test_gates_lie_in_their_activation_ranges",
        "test_states_obey_their_bounds", "test_a_contracting_tanh_rnn_loses_the_gradient_that_the_saturated_lstm_keeps",
        "test_layers_agree_with_the_reference", "test_layer_gradients_match_central_differences",
        "test_stacking_is_composition", "test_the_reverse_direction_is_the_forward_one_on_reversed_rows",
        "test_each_row_is_itself_alone_truncated_then_padded_with_zeros",
        "test_a_gradient_at_padded_positions_changes_nothing", "test_huge_finite_inputs_give_finite_outputs",
        "test_malformed_arguments_raise_type_or_value_error", "test_permuting_the_batch_permutes_the_results",
        "test_a_row_run_alone_gives_its_row", "test_running_in_two_parts_equals_running_at_once",
        "test_an_empty_batch_gives_empty_results", "test_results_do_not_depend_on_the_inputs_memory_layout",
        "test_the_same_call_gives_bit_identical_results", "test_a_later_call_leaves_earlier_results_alone",
        "test_calls_from_two_threads_at_once_give_the_results_of_each_alone", "test_inputs_are_not_modified",
        "test_dtypes_shapes_and_last_states"), cells=("rnn_tanh",), dtypes=("float64",)),
    KnownDefect("keras-float64-tanh-in-float32", (
        "test_forward_and_backward_agree_with_the_reference", "test_gradients_match_central_differences",
        "test_a_saturated_update_gate_keeps_the_state_or_takes_the_candidate", "test_layers_agree_with_the_reference",
        "test_layer_gradients_match_central_differences", "test_the_projection_is_w_hr_times_o_tanh_c"),
        cells=("lstm", "gru", "gru_classic"), dtypes=("float64",)),
)
backend = sys.modules[__name__]

#: Each cell's Keras layer class and arguments beyond units.
LAYERS = {
    "rnn_tanh": (keras.layers.SimpleRNN, {"activation": "tanh"}),
    "rnn_relu": (keras.layers.SimpleRNN, {"activation": "relu"}),
    "lstm": (keras.layers.LSTM, {}),
    "gru": (keras.layers.GRU, {"reset_after": True}),
    "gru_classic": (keras.layers.GRU, {"reset_after": False}),
}
#: Keras' GRU gate blocks z, r, h as PyTorch's block indices (r, z, n).
KERAS_GRU_BLOCKS = (1, 0, 2)


def make_layer(cell: str, I: int, H: int, dtype) -> "keras.layers.Layer":
    """The Keras layer of ``cell``, built for I input features (its weights are Keras' initial
    ones; every call passes the caller's through stateless_call)."""
    cls, kwargs = LAYERS[cell]
    layer = cls(H, return_sequences=True, return_state=True, dtype=np.dtype(dtype).name, **kwargs)
    layer.build((None, None, I))
    return layer


def _blocks(a, order, H: int, xp):
    """The gate blocks of a (G·H, ·) weight or (G·H,) bias in another order."""
    return xp.concatenate([a[k * H:(k + 1) * H] for k in order], axis=0)


def keras_weights(cell: str, w_ih, w_hh, b_ih, b_hh, xp=jnp) -> list:
    """PyTorch-layout params as the layer's trainable_variables values: [kernel, recurrent_kernel, bias]."""
    H = w_hh.shape[1]
    if not cell.startswith("gru"):  # SimpleRNN, LSTM: PyTorch's block order already
        return [w_ih.T, w_hh.T, b_ih + b_hh]
    order = KERAS_GRU_BLOCKS
    kernel, recurrent = _blocks(w_ih, order, H, xp).T, _blocks(w_hh, order, H, xp).T
    if cell == "gru":
        return [kernel, recurrent, xp.stack([_blocks(b_ih, order, H, xp), _blocks(b_hh, order, H, xp)])]
    return [kernel, recurrent, _blocks(b_ih + b_hh, order, H, xp)]


def make_apply(cell: str, I: int, H: int, dtype):
    """apply(w_ih, w_hh, b_ih, b_hh, x, state) -> (hs, state_n): the Keras layer on x."""
    layer = make_layer(cell, I, H, dtype)
    # the dropout seed generator's state: unused (no dropout), but stateless_call wants every variable
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def apply(w_ih, w_hh, b_ih, b_hh, x, state):
        outputs, _ = layer.stateless_call(keras_weights(cell, w_ih, w_hh, b_ih, b_hh), non_trainable,
                                          jnp.swapaxes(x, 0, 1), initial_state=list(state))
        hs, *state_n = outputs
        return jnp.swapaxes(hs, 0, 1), tuple(state_n)
    return apply


def make_layer_apply(cell: str, L: int, D: int, dtype, with_lengths: bool):
    """apply(weights, x, state, lengths) -> (hs, state_n): L Keras layers of the cell (D = 2: each in
    keras.layers.Bidirectional, merge_mode="concat", whose backward copy runs with go_backwards), given
    a mask (B, T), True for a row's first ``length`` steps, when there are lengths; layer k + 1 reads
    layer k's outputs. Keras holds a masked row's state, so its last state is the one at its length,
    and the backward copy meets the masked steps first, so it starts at the row's own last step."""
    lstm = cell == "lstm"
    built = {}  # input features -> (layer, its non-trainable values), built on the first trace

    def layer_for(I: int, H: int):
        if I not in built:
            layer = make_layer(cell, I, H, dtype)
            if D == 2:
                layer = keras.layers.Bidirectional(layer, merge_mode="concat", dtype=np.dtype(dtype).name)
                layer.build((None, None, I))
            built[I] = layer, [v.value for v in layer.non_trainable_variables]
        return built[I]

    def apply(weights, x, state, lengths):
        H = weights[0][1].shape[1]
        T = x.shape[0]
        kwargs = {"mask": jnp.arange(T)[None, :] < lengths[:, None]} if with_lengths else {}
        layer_input = jnp.swapaxes(x, 0, 1)  # Keras is batch-major
        h_n, c_n = [], []
        for k in range(L):
            layer, non_trainable = layer_for(layer_input.shape[-1], H)
            directions = range(k * D, (k + 1) * D)
            trainable = [w for j in directions for w in keras_weights(cell, *weights[j])]
            initial = [s for j in directions for s in ((state[0][j], state[1][j]) if lstm else (state[0][j],))]
            outputs, _ = layer.stateless_call(trainable, non_trainable, layer_input, initial_state=initial, **kwargs)
            layer_input, *states = outputs
            per_direction = len(states) // D
            for d in range(D):
                h_n.append(states[d * per_direction])
                if lstm:
                    c_n.append(states[d * per_direction + 1])
        hs = jnp.swapaxes(layer_input, 0, 1)
        return hs, ((jnp.stack(h_n), jnp.stack(c_n)) if lstm else (jnp.stack(h_n),))
    return apply


_programs = jax_common.Programs(make_apply, make_layer_apply)


def forward(cell, params, x, h0, c0=None, *, training=True):
    return jax_common.forward(_programs, cells, cell, params, x, h0, c0, training=training)


def backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n=None):
    return jax_common.backward(_programs, cells, cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n)


def native_layer_forward(cell, params, x, h0, c0=None, *, bidirectional=False, lengths=None, training=True):
    """reference.layers.forward through Keras' own layers (make_layer_apply); no lstm projection."""
    return jax_common.layer_forward(_programs, cells, cell, params, x, h0, c0, bidirectional=bidirectional,
                                    lengths=lengths, training=training)


def native_layer_backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n=None, *, bidirectional=False,
                          lengths=None):
    return jax_common.layer_backward(_programs, cells, cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n,
                                     bidirectional=bidirectional, lengths=lengths)


#: The same backend judged on Keras' own layers (stacked, Bidirectional, masks; no projection):
#: ``pytest properties/test_layers.py --backend adapters.keras:with_native_layers``. Not the default
#: (``backend`` has cells only, and the suite composes its layers from them), because each layer
#: configuration is another compiled program of a few seconds: the layer family took 145 s this way
#: against about 20 s composed, on a 2-core Zen 4 under load, which CI's time does not allow.
with_native_layers = SimpleNamespace(
    name="keras-native-layers", cells=cells, dtypes=dtypes, max_test_sizes=max_test_sizes,
    known_defects=known_defects, forward=forward, backward=backward,
    layer_features=frozenset({"bidirectional", "lengths"}),
    layer_forward=native_layer_forward, layer_backward=native_layer_backward)
