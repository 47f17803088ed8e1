"""Family gru_bounds: the GRU's new state is a weighted average of the old state and the candidate.

h_t = (1 − z_t)⊙n_t + z_t⊙h_{t−1} with z in [0, 1], for gru and gru_classic alike, so every h_t lies
elementwise between h_{t−1} and n_t, hence ‖h_t‖∞ ≤ max(‖h_0‖∞, 1); and with the update gate
saturated by its bias, h_t equals h_{t−1} (z = 1) or n_t (z = 0).

n_t is the backend's own where it returns its gates; where it returns none (gates = None, as
frameworks do), the suite recomputes n_t in float64 with the reference step from x_t, the params
and the backend's own h_{t−1}, which mix_allowance's gap between two evaluations of n covers.

Rounding allowance: however the mix is evaluated ((1 − z)n + zh, or n + z(h − n)), it takes at
most 4 roundings of quantities bounded by |n| + |h|: 4u·(|n_t| + |h_{t−1}|).
"""
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference.backend import STEPS
from reference.contract import Params

from .asserts import assert_within, unit_roundoff
from .conditioning import conditioning, sigmoid
from .strategies import problems

GRU_CELLS = ("gru", "gru_classic")
#: Margin of a saturating bias over every other term of the pre-activation: σ(−40) ≈ 4e-18.
SATURATION_MARGIN = 40.0


def previous_and_candidate(problem, fwd):
    """(h_{t−1}, n_t), each (T, B, H), from the backend's own forward result (n_t recomputed in
    float64 from its h_{t−1} where it returns no gates)."""
    H = problem.h0.shape[1]
    hs = np.asarray(fwd.hs)
    h_prev = np.concatenate([np.asarray(problem.h0)[None], hs[:-1]])
    if fwd.gates is not None:
        return h_prev, np.asarray(fwd.gates)[..., 2 * H:]
    T, B, I = problem.x.shape
    params = Params(*(np.asarray(a, np.float64) for a in problem.params))
    # every step at once: the T·B (x_t, h_{t−1}) pairs as one batch of the reference step
    *_, cache = STEPS[problem.cell].forward(np.asarray(problem.x, np.float64).reshape(T * B, I),
                                            h_prev.astype(np.float64).reshape(T * B, H), params)
    return h_prev, cache.gates[:, 2 * H:].reshape(T, B, H)


def mix_allowance(problem, h_prev, n):
    """4u·(|n| + |h|) for the mix, plus the gap between the n a backend reports and the n its
    update used: a backend may evaluate the gates it reports separately (torch recomputes them),
    and two evaluations of n's pre-activation, each within (I + H + 2)·u·Σ|terms| of the exact
    value (Σ|terms| ≤ pre_max), differ by twice that, plus r's own gap (a quarter of it, σ' ≤ 1/4)
    times |W_hn h + b_hn| ≤ pre_max; tanh' ≤ 1 passes the gap on unchanged."""
    u = unit_roundoff(problem.dtype)
    T, B, I = problem.x.shape
    pre_max = conditioning(problem).pre_max
    reported_gap = 2 * (I + problem.h0.shape[1] + 2) * u * pre_max * (1 + pre_max / 4)
    return 4 * u * (np.abs(n) + np.abs(h_prev)) + reported_gap


@pytest.mark.cells(*GRU_CELLS)
@given(data=st.data())
def test_each_state_lies_between_the_previous_state_and_the_candidate(backend, cell, dtype, data):
    problem = data.draw(problems(backend, cell, dtype), label="problem")
    fwd = problem.forward(backend)
    h_prev, n = previous_and_candidate(problem, fwd)
    hs = np.asarray(fwd.hs)
    allowance = mix_allowance(problem, h_prev, n)
    assert_within("hs between h_{t-1} and n_t", hs, np.minimum(h_prev, n), np.maximum(h_prev, n), allowance,
                  context=problem.describe())
    # Hence the sup norm never exceeds max(‖h0‖∞, 1), up to the roundings of t mixes.
    bound = max(float(np.abs(problem.h0).max(initial=0.0)), 1.0)
    t = np.arange(1, len(hs) + 1)[:, None, None]
    assert_within("|h_t|", np.abs(hs), 0.0, bound, 8 * unit_roundoff(dtype) * t * bound,
                  context=problem.describe())


@pytest.mark.cells(*GRU_CELLS)
@given(data=st.data())
def test_a_saturated_update_gate_keeps_the_state_or_takes_the_candidate(backend, cell, dtype, data):
    problem = data.draw(problems(backend, cell, dtype, regimes=("pytorch_init", "contracting", "wide")),
                        label="problem")
    keep = data.draw(st.booleans(), label="keep (z = 1) rather than take n (z = 0)")
    H = problem.h0.shape[1]
    bias = conditioning(problem).pre_max + SATURATION_MARGIN  # dominates every other term of z's pre-activation
    b_ih = np.array(problem.params.b_ih, dtype=np.float64)
    b_ih[H:2 * H] = bias if keep else -bias
    problem = replace(problem, params=problem.params._replace(b_ih=b_ih.astype(dtype)))
    fwd = problem.forward(backend)
    h_prev, n = previous_and_candidate(problem, fwd)
    hs = np.asarray(fwd.hs)
    # |h_t − target| = σ(−margin)·|h_{t−1} − n_t| exactly, plus the mix's roundings.
    allowance = mix_allowance(problem, h_prev, n) + sigmoid(-SATURATION_MARGIN) * np.abs(h_prev - n)
    target = h_prev if keep else n
    assert_within(f"hs − {'h_(t-1)' if keep else 'n_t'}", hs.astype(np.float64) - target, 0.0, 0.0, allowance,
                  context=problem.describe() + f", z bias {'+' if keep else '-'}{bias:.3g}")
