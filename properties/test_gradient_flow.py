"""Family gradient_flow: the LSTM's additive cell path (and the GRU's z⊙h term) carries the gradient
back through time; a plain tanh RNN with a contracting W_hh loses it.

With every upstream gradient zero but the last state's, and W_hh = 0, the only path from the last
state to the first is the carried term, so
    lstm: dc0 = (∏_t f_t) ⊙ dc_n          gru, gru_classic: dh0 = (∏_t z_t) ⊙ dh_n.
With f saturated to exactly 1 and i to exactly 0 by their biases, dc0 = dc_n exactly for any T and
any W_hh (the constant error carousel); a tanh RNN with ‖W_hh‖₂ = ρ < 1 has ‖dh0‖₂ ≤ ρ^T ‖dh_n‖₂.

Every property here checks gradients: a forward-only backend skips the family. With W_hh = 0 a
gate depends on x_t alone, so where a backend returns no gates the suite recomputes the carried
ones in float64 with the reference step.
"""
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from reference.backend import STEPS
from reference.contract import Params
from reference.lstm import LSTMGates, lstm_cell_update_backward

from .asserts import assert_within, unit_roundoff
from .conditioning import conditioning
from .strategies import problems

#: A bias this far beyond every other term makes σ exactly 0 or 1 in both dtypes: e^(−800)
#: underflows to 0 even in float64 (below 2^-1074), so 1/(1 + e^(−a)) = 1 and e^(−a)/(1 + e^(−a)) = 0.
EXACT_SATURATION = 800.0
CARRIED_GATE = {"lstm": 1, "gru": 1, "gru_classic": 1}  # block index of f (lstm) and z (gru)


def only_last_state_gradient(problem):
    """Upstream gradients zero except the last state's: dc_n for lstm, dh_n otherwise."""
    zeros = np.zeros_like(problem.dh_n)
    if problem.cell == "lstm":
        return replace(problem, dhs=np.zeros_like(problem.dhs), dh_n=zeros)
    return replace(problem, dhs=np.zeros_like(problem.dhs))


def product_allowance(problem, expected, carried_max_error):
    """|computed ∏ − exact ∏|: one rounding per step, (T + 1)u relative; the carried gates the
    backend reports may differ from those its backward used by ≤ carried_max_error each, which
    moves a product of factors ≤ 1 by at most T·carried_max_error (times |upstream|); and
    products that fall below the normal range lose up to T smallest subnormals."""
    T = problem.x.shape[0]
    dtype = problem.dtype
    upstream = np.abs(problem.dc_n if problem.cell == "lstm" else problem.dh_n)
    tiny = float(np.finfo(dtype).smallest_subnormal)
    return ((T + 1) * unit_roundoff(dtype) * np.abs(expected) + T * carried_max_error * upstream
            + (T + 1) * tiny)


def carried_gates(problem, fwd, block):
    """The carried gate (f or z), (T, B, H): the backend's own, or, where it returns no gates,
    recomputed in float64 by the reference step (W_hh = 0: a gate depends on x_t alone, so the
    zero state stands in for h_{t−1} and c_{t−1})."""
    H = problem.h0.shape[1]
    if fwd.gates is not None:
        return np.asarray(fwd.gates, np.float64)[..., block * H:(block + 1) * H]
    T, B, I = problem.x.shape
    params = Params(*(np.asarray(a, np.float64) for a in problem.params))
    zero_state = [np.zeros((T * B, H))] * (2 if problem.cell == "lstm" else 1)
    *_, cache = STEPS[problem.cell].forward(np.asarray(problem.x, np.float64).reshape(T * B, I), *zero_state, params)
    return np.asarray(cache.gates)[:, block * H:(block + 1) * H].reshape(T, B, H)


@pytest.mark.needs_backward
@pytest.mark.cells("lstm", "gru", "gru_classic")
@given(data=st.data())
def test_with_no_recurrent_weights_the_state_gradient_is_the_product_of_carried_gates(backend, cell, dtype, data):
    problem = data.draw(problems(backend, cell, dtype, regimes=("pytorch_init", "saturating", "contracting")),
                        label="problem")
    problem = only_last_state_gradient(replace(problem, params=problem.params._replace(
        w_hh=np.zeros_like(problem.params.w_hh))))
    H = problem.h0.shape[1]
    fwd = problem.forward(backend)
    grads = problem.backward(backend, fwd)
    block = CARRIED_GATE[cell]
    carried = carried_gates(problem, fwd, block)  # (T, B, H): f or z
    if cell == "lstm":
        field, got, upstream = "dc0", grads.dc0, problem.dc_n
    else:
        field, got, upstream = "dh0", grads.dh0, problem.dh_n
    expected = np.prod(carried, axis=0) * upstream
    # A gate's value may be computed twice (reported, and used by backward) with different
    # summation orders: its pre-activation moves by ≤ (I + H + 2)·u·pre_max, σ' ≤ 1/4, plus 2u.
    u = unit_roundoff(dtype)
    gate_error = (problem.x.shape[2] + H + 2) * u * conditioning(problem).pre_max / 4 + 2 * u
    allowance = product_allowance(problem, expected, gate_error)
    assert_within(f"{field} − ∏ gates ⊙ upstream", np.asarray(got, np.float64) - expected, 0.0, 0.0, allowance,
                  context=problem.describe() + ", W_hh = 0")


def saturated_lstm(problem, dtype):
    """The problem with f ≡ 1 and i ≡ 0 exactly, through the biases of b_ih."""
    H = problem.h0.shape[1]
    bias = conditioning(problem).pre_max + EXACT_SATURATION
    b_ih = np.array(problem.params.b_ih, np.float64)
    b_ih[:H] = -bias  # i = σ(·) = 0: nothing is written
    b_ih[H:2 * H] = bias  # f = σ(·) = 1: nothing is erased
    return only_last_state_gradient(replace(problem, params=problem.params._replace(b_ih=b_ih.astype(dtype))))


@pytest.mark.needs_backward
@pytest.mark.cells("lstm")
@given(data=st.data())
def test_the_constant_error_carousel_carries_dc_n_unchanged(backend, cell, dtype, data):
    problem = data.draw(problems(backend, cell, dtype, regimes=("pytorch_init", "contracting", "wide"),
                                 x_scales=(1.0, 0.0, 10.0)), label="problem")
    problem = saturated_lstm(problem, dtype)
    grads = problem.backward(backend, problem.forward(backend))
    context = problem.describe() + ", f ≡ 1 and i ≡ 0 by the biases"
    np.testing.assert_array_equal(grads.dc0, problem.dc_n, err_msg="dc0 must equal dc_n exactly; " + context)
    np.testing.assert_array_equal(grads.dh0, np.zeros_like(problem.h0), err_msg="dh0 must be 0; " + context)


@given(dc_next=hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=5),
                          elements=st.floats(-1e6, 1e6)),
       data=st.data())
def test_reference_step_hands_dc_unchanged_to_the_write_branch(dc_next, data):
    """On reference.lstm's step functions: the sum c' = f⊙c + i⊙g hands ∂L/∂c' to i⊙g unchanged."""
    def gate(lo, hi, label):
        return data.draw(hnp.arrays(np.float64, dc_next.shape, elements=st.floats(lo, hi)), label=label)
    gates = LSTMGates(i=gate(0, 1, "i"), f=gate(0, 1, "f"), g=gate(-1, 1, "g"), o=gate(0, 1, "o"))
    update = lstm_cell_update_backward(dc_next, gate(-10, 10, "c_prev"), gates)
    np.testing.assert_array_equal(update.d_ig, dc_next)
    np.testing.assert_array_equal(update.d_fc, dc_next)
    np.testing.assert_array_equal(update.dc_prev, dc_next * gates.f)


@pytest.mark.needs_backward
@given(data=st.data())
def test_a_contracting_tanh_rnn_loses_the_gradient_that_the_saturated_lstm_keeps(backend, dtype, data):
    for cell in ("rnn_tanh", "lstm"):
        if cell not in backend.cells:
            pytest.skip(f"backend {backend.name} does not support {cell}")
    rnn = data.draw(problems(backend, "rnn_tanh", dtype, regimes=("pytorch_init",), min_T=2), label="rnn problem")
    rho = data.draw(st.floats(0.3, 0.9), label="rho = ‖W_hh‖₂")
    w_hh = np.asarray(rnn.params.w_hh, np.float64)
    norm = np.linalg.norm(w_hh, 2)
    if norm == 0:
        w_hh, norm = np.eye(w_hh.shape[0]), 1.0
    rnn = only_last_state_gradient(replace(rnn, params=rnn.params._replace(w_hh=(w_hh * rho / norm).astype(dtype))))
    T, H = rnn.x.shape[0], rnn.h0.shape[1]
    grads = rnn.backward(backend, rnn.forward(backend))
    # tanh' ≤ 1, so exactly ‖dh_{t−1}‖₂ ≤ ρ‖dh_t‖₂. Computed, W_hhᵀ(dh⊙(1 − h²)) errs by
    # ≤ (H + 2)u‖|W_hh|‖₂‖dh‖₂ ≤ (H + 2)√H·u·ρ‖dh‖₂ (‖|A|‖₂ ≤ √H‖A‖₂), plus 2u for the products.
    growth = rho * (1 + (H + 2) * np.sqrt(H) * unit_roundoff(dtype) + 2 * unit_roundoff(dtype))
    # ρ was rounded to dtype with W_hh: its 2-norm is ≤ ρ(1 + H·u) at most.
    growth *= 1 + H * unit_roundoff(dtype)
    rnn_ratio = np.linalg.norm(grads.dh0) / np.linalg.norm(rnn.dh_n)
    lstm = data.draw(problems(backend, "lstm", dtype, regimes=("pytorch_init",), min_T=T, max_T=T,
                              limits={"T": T, "B": rnn.x.shape[1], "I": rnn.x.shape[2], "H": H}),
                     label="lstm problem")
    lstm = saturated_lstm(lstm, dtype)
    lstm_grads = lstm.backward(backend, lstm.forward(backend))
    lstm_ratio = np.linalg.norm(lstm_grads.dc0) / np.linalg.norm(lstm.dc_n)
    context = f"T={T}, H={H}, ρ={rho:.3g}: rnn_tanh keeps {rnn_ratio:.3g} of ‖dh_n‖, saturated lstm {lstm_ratio:.3g}"
    assert rnn_ratio <= growth ** T, f"rnn_tanh: ‖dh0‖/‖dh_n‖ = {rnn_ratio:.3g} > ρ^T = {growth ** T:.3g}; {context}"
    assert lstm_ratio == 1.0, f"saturated lstm: ‖dc0‖/‖dc_n‖ = {lstm_ratio!r}, expected exactly 1; {context}"
