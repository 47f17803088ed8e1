"""Deliberately broken backends, each carrying one realistic kernel bug, and the correct
independent backend they are built from (properties.mutants.independent).

Each is a backend spec ``properties.mutants:NAME``; properties/test_suite_power.py runs the
whole property suite against each through ``--backend`` and requires every mutant to be
rejected and the independent backend to pass, so the suite's power cannot drop silently.
The layer mutants (LAYER_MUTANTS, from properties.mutants.independent_layers) are run against
the layer family, properties/test_layers.py, and so is the correct ``independent_layers``.
"""
from .independent import IndependentCells
from .independent_layers import IndependentLayers
from .limited import AbortsOnEmptyBatch, ForwardOnlyFloat32

#: name -> the bug it carries (the property family expected to catch it first, in brackets).
MUTANTS = {
    "swapped_gates": "lstm's i and f blocks (gru's r and z) read in the wrong order [agreement]",
    "dropped_bias": "b_hh left out of the recurrent pre-activation [agreement]",
    "missing_forget_factor": "lstm backward: dc_{t-1} = dc_t, the factor f_t forgotten [agreement, gradient_flow]",
    "hidden_tail": "an 8-wide kernel leaves the last H % 8 units unprocessed [agreement]",
    "batch_tail": "a 4-row kernel leaves the last B % 4 rows unprocessed [agreement, structure]",
    "time_off_by_one": "backward's time loop stops before step 0 [agreement]",
    "unstable_sigmoid": "σ(a) = e^a/(1 + e^a): inf/inf = NaN for large a [robustness]",
    "float16_recurrent_product": "W_hh h computed in float16 [agreement]",
    "downcast_float64": "float64 inputs computed in float32 and cast back [agreement]",
    "overwritten_weight_gradient": "dW_hh assigned instead of accumulated over time [agreement]",
    "stale_h_n": "h_n taken from the state before the last step [structure, agreement]",
    "inplace_state": "h0 used as the state buffer, overwritten [structure]",
    "upcast_output": "float32 in, float64 out [structure, agreement]",
    "no_finite_check": "NaN and inf accepted instead of a ValueError [robustness]",
    "gru_reset_before_product": "gru computed as gru_classic, the reset gate before W_hn [agreement]",
    "c_order_assumed": "x read from its buffer as if C-contiguous, ignoring its strides [structure]",
    "empty_batch_crash": "B = 0 crashes: the kernel reads row 0 before its loop [structure]",
    "reused_output_buffer": "hs returned in a buffer the next call of the same shapes overwrites [structure]",
    "shared_state_buffer": "the state h kept in one buffer per backend, which calls from two threads share [structure]",
}

independent = IndependentCells()
for _name in MUTANTS:
    globals()[_name] = IndependentCells(name=f"mutant.{_name}", bug=_name)

#: name -> the layer bug it carries (layer_forward / layer_backward; properties/test_layers.py).
LAYER_MUTANTS = {
    "reverse_from_the_end": "the reverse direction starts at step T − 1, not at the row's last step",
    "h_n_at_the_end": "a short row runs on through the padding: its h_n, c_n are the states at T − 1",
    "padding_not_zeroed": "hs past a row's length hold its last state instead of zeros",
    "directions_swapped": "each layer's output is [reverse | forward] instead of [forward | reverse]",
    "projection_of_c": "lstm projection h = W_hr c instead of W_hr (o⊙tanh c)",
}

independent_layers = IndependentLayers(name="independent_layers")
for _name in LAYER_MUTANTS:
    globals()[_name] = IndependentLayers(name=f"mutant.{_name}", bug=_name)

#: Correct within declared limits (forward only, float32 only, no gates or cs): the whole suite passes it.
forward_only_float32 = ForwardOnlyFloat32()
#: Correct but for one fatal defect, an abort on B = 0: a run reports the test that died and goes on.
aborts_on_empty_batch = AbortsOnEmptyBatch(name="aborting_kernel")
