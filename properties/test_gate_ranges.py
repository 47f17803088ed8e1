"""Family gate_ranges: the activations' ranges, and the state bounds that follow from them.

σ gates lie in [0, 1], strictly inside for moderate pre-activations; tanh candidates in [−1, 1];
lstm: |h| ≤ 1 and |c_t| ≤ |c_{t−1}| + 1, hence |c_t| ≤ |c_0| + t; rnn_tanh: |h| ≤ 1; rnn_relu: h ≥ 0.

A backend that returns no gates (gates = None: frameworks do not expose them) has its gate test
skipped with that reason; the state bounds hold for what it returns (hs, h_n, and c_n where it
returns no cs). The suite never recomputes a backend's gates for it.
"""
import contextlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference.contract import GATE_NAMES

from .asserts import assert_within, unit_roundoff
from .conditioning import conditioning
from .strategies import problems

SIGMOID_GATES = {"i", "f", "o", "r", "z"}
#: Below this |pre-activation| σ is strictly inside (0, 1) in both dtypes: σ(−12) ≈ 6e-6 ≫ float32's
#: smallest normal, and 1 − σ(12) ≈ 6e-6 ≫ float32's spacing below 1 (6e-8), so no rounding reaches 0 or 1.
MODERATE_PRE_ACTIVATION = 12.0


def expected_overflow(cell):
    """np.errstate silencing overflow and invalid-value warnings for rnn_relu only: its states are
    unbounded, the strategies draw problems whose states overflow to inf (and inf − inf to NaN) on
    purpose, and the assertions below allow for exactly that; NumPy's warnings about it are noise."""
    return np.errstate(over="ignore", invalid="ignore") if cell == "rnn_relu" else contextlib.nullcontext()


def gate_blocks(cell, gates, H):
    """{gate name: (T, B, H) block} of the gates array (T, B, G·H), in the contract's block order."""
    return {name: gates[..., k * H:(k + 1) * H] for k, name in enumerate(GATE_NAMES[cell])}


@given(data=st.data())
def test_gates_lie_in_their_activation_ranges(backend, cell, dtype, data):
    problem = data.draw(problems(backend, cell, dtype), label="problem")
    with expected_overflow(cell):
        fwd = problem.forward(backend)
    H = problem.h0.shape[1]
    context = problem.describe()
    if fwd.gates is None:
        pytest.skip(f"backend {backend.name} returns no gates (gates = None); test_states_obey_their_bounds "
                    "checks the states it returns")
    moderate = conditioning(problem).pre_max <= MODERATE_PRE_ACTIVATION
    for name, block in gate_blocks(cell, np.asarray(fwd.gates), H).items():
        field = f"gates[{name}]"
        if cell == "rnn_relu":
            assert_within(field, block[~np.isnan(block)], 0.0, np.inf, 0.0, context=context)
        elif name in SIGMOID_GATES:
            assert_within(field, block, 0.0, 1.0, 0.0, context=context)
            if moderate:  # strictly inside: neither 0 nor 1 may be reached
                assert_within(field, block, np.nextafter(0, 1, dtype=dtype), np.nextafter(1, 0, dtype=dtype), 0.0,
                              context=context + f" (pre-activations ≤ {MODERATE_PRE_ACTIVATION})")
        else:  # tanh: g of lstm, n of gru, h of rnn_tanh
            assert_within(field, block, -1.0, 1.0, 0.0, context=context)


@given(data=st.data())
def test_states_obey_their_bounds(backend, cell, dtype, data):
    problem = data.draw(problems(backend, cell, dtype), label="problem")
    with expected_overflow(cell):
        fwd = problem.forward(backend)
    context = problem.describe()
    for field in ("hs", "h_n"):  # h_n too: a backend may compute the last state apart from hs
        h = np.asarray(getattr(fwd, field))
        if cell == "rnn_relu":
            # relu never returns a negative. Its states are unbounded: where the a-priori bound says
            # they may overflow, inf − inf in a product can give NaN legitimately, so only the
            # non-NaN values are held to h ≥ 0 there.
            if conditioning(problem).pre_max * 4 < float(np.finfo(dtype).max):
                assert_within(field, h, 0.0, np.inf, 0.0, context=context)
            else:
                assert_within(f"{field} (not NaN)", h[~np.isnan(h)], 0.0, np.inf, 0.0, context=context)
        elif cell in ("rnn_tanh", "lstm"):
            assert_within(f"|{field}|", np.abs(h), 0.0, 1.0, 0.0, context=context)  # tanh, σ·tanh never exceed 1
    if cell == "lstm" and fwd.cs is not None:
        cs = np.concatenate([np.asarray(problem.c0)[None], np.asarray(fwd.cs)])  # (T + 1, B, H)
        # |c_t| ≤ f|c_{t−1}| + i|g| ≤ |c_{t−1}| + 1 exactly; computed, the two products and the sum
        # round once each: allowance 3u·(|c_{t−1}| + 1).
        allowance = 3 * unit_roundoff(dtype) * (np.abs(cs[:-1]) + 1)
        assert_within("|c_t| − |c_{t−1}|", np.abs(cs[1:]) - np.abs(cs[:-1]), -np.inf, 1.0, allowance,
                      context=context)
        t = np.arange(1, len(cs))[:, None, None]
        assert_within("|c_t| − |c_0|", np.abs(cs[1:]) - np.abs(cs[0]), -np.inf, t,
                      3 * unit_roundoff(dtype) * t * (np.abs(cs[0]) + t), context=context)
    elif cell == "lstm":
        # No cs returned: the same chain bound on the last state, |c_n| ≤ |c_0| + T, each of the T
        # steps adding its 3u·(|c_{t−1}| + 1) ≤ 3u·(|c_0| + T) of rounding.
        T = problem.x.shape[0]
        c0, c_n = np.abs(np.asarray(problem.c0)), np.abs(np.asarray(fwd.c_n))
        assert_within("|c_n| − |c_0|", c_n - c0, -np.inf, float(T), 3 * unit_roundoff(dtype) * T * (c0 + T),
                      context=context)
