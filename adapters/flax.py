"""flax.linen's recurrent cells as a cellbench backend, differentiated by jax.vjp.

    rnn_tanh, rnn_relu   flax.linen.SimpleCell(activation_fn=tanh / relu)
    lstm                 flax.linen.LSTMCell
    gru                  flax.linen.GRUCell: r, z = σ(·); n = tanh(W_in x + b_in + r⊙(W_hn h + b_hn));
                         h' = (1 − z)⊙n + z⊙h, cellbench's gru (PyTorch's form) exactly
    gru_classic          not supported: flax.linen has no reset-before-product GRU

The cell is scanned over time with jax.lax.scan (what flax.linen.RNN does through flax.linen.scan),
in float32 or float64 (see adapters.jax_common for JAX's 64-bit mode and for the padding of small
shapes that keeps the property suite's compile count down). gates and cs are None: flax does not
expose them. Layers natively (``layer_forward``, ``layer_backward``): flax.linen.RNN of the cell per
layer, flax.linen.Bidirectional for two directions, seq_lengths for lengths (hs past a row's length,
which flax leaves unspecified, set to zero as a packed sequence has it); no lstm projection.

**Params.** flax's cells hold each gate's weights in a Dense submodule, kernel (in, out), so
``w_ih`` rows of a gate become that Dense's kernel transposed. Where flax has one bias where
PyTorch has two, the conversion has to add them:
- SimpleCell: bias only on the input Dense 'i': b_ih + b_hh;
- LSTMCell: bias only on the hidden Denses 'hi', 'hf', 'hg', 'ho': b_ih + b_hh per gate;
- GRUCell: r and z have a bias only on the input Denses 'ir', 'iz': b_ih + b_hh for those blocks;
  n has both, 'in' (b_in) and 'hn' (b_hn, inside r⊙(·)), so the n block is copied exactly.
The sum is one rounding of one addition, and within cellbench's tolerances: a pre-activation sums
the n = I + H + 2 terms W_ih x, W_hh h, b_ih and b_hh, and the suite's bound (n·u·Σ|terms|,
docs/tolerances.md) holds for any order of that sum, adding the two biases first included. The
gradients go back through the same sum, so db_ih = db_hh exactly, as in PyTorch.
"""
from __future__ import annotations

import sys

try:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
except ImportError as exc:  # flax and jax are an optional extra
    raise ImportError('adapters.flax needs flax and JAX: pip install -e ".[jax]"') from exc

import numpy as np

from . import jax_common
from .known import KnownDefect

name = "flax"
cells = frozenset({"rnn_tanh", "rnn_relu", "lstm", "gru"})
dtypes = frozenset({np.dtype(np.float32), np.dtype(np.float64)})
#: The property suite's sizes on this backend: within jax_common.SMALL, so that B, I and H run
#: padded to one size and only T varies between compiled programs (see adapters.jax_common).
max_test_sizes = {"T": 8, "B": jax_common.SMALL, "I": jax_common.SMALL, "H": jax_common.SMALL}
#: flax.linen passes every property: nothing to declare.
known_defects: tuple[KnownDefect, ...] = ()
#: Findings about Flax (docs/findings/flax.md) and the versions that have them: one in flax.nnx, which
#: this adapter does not use (flax.nnx.GRUCell has no b_hn, so it could not claim gru); one in
#: flax.linen with jax 0.10.2 (Dense with no inputs or outputs cannot be applied), which no property
#: draws (I, H ≥ 1), so no known_defects entry.
FOUND_IN = {"flax-nnx-grucell-no-b-hn": ("0.12.8",), "flax-linen-dense-zero-size": ("0.12.8",)}
backend = sys.modules[__name__]

#: Each cell's flax.linen module, given H.
CELL_MODULES = {
    "rnn_tanh": lambda H: nn.SimpleCell(H, activation_fn=nn.tanh),
    "rnn_relu": lambda H: nn.SimpleCell(H, activation_fn=nn.relu),
    "lstm": nn.LSTMCell,
    "gru": nn.GRUCell,
}


def _block(a, k: int, H: int):
    """Gate block k (in PyTorch's row order) of a (G·H, ·) weight or (G·H,) bias."""
    return a[k * H:(k + 1) * H]


def flax_params(cell: str, w_ih, w_hh, b_ih, b_hh) -> dict:
    """PyTorch-layout params as the flax cell's ``params`` collection (jnp or np arrays alike)."""
    H = w_hh.shape[1]
    if cell.startswith("rnn_"):
        return {"i": {"kernel": w_ih.T, "bias": b_ih + b_hh}, "h": {"kernel": w_hh.T}}
    if cell == "lstm":
        out = {}
        for k, gate in enumerate("ifgo"):
            out["i" + gate] = {"kernel": _block(w_ih, k, H).T}
            out["h" + gate] = {"kernel": _block(w_hh, k, H).T, "bias": _block(b_ih, k, H) + _block(b_hh, k, H)}
        return out
    out = {}
    for k, gate in enumerate("rz"):
        out["i" + gate] = {"kernel": _block(w_ih, k, H).T, "bias": _block(b_ih, k, H) + _block(b_hh, k, H)}
        out["h" + gate] = {"kernel": _block(w_hh, k, H).T}
    out["in"] = {"kernel": _block(w_ih, 2, H).T, "bias": _block(b_ih, 2, H)}
    out["hn"] = {"kernel": _block(w_hh, 2, H).T, "bias": _block(b_hh, 2, H)}
    return out


def make_apply(cell: str, I: int, H: int, dtype):
    """apply(w_ih, w_hh, b_ih, b_hh, x, state) -> (hs, state_n): the flax cell scanned over x."""
    module = CELL_MODULES[cell](H)
    lstm = cell == "lstm"

    def apply(w_ih, w_hh, b_ih, b_hh, x, state):
        variables = {"params": flax_params(cell, w_ih, w_hh, b_ih, b_hh)}
        carry = (state[1], state[0]) if lstm else state[0]  # LSTMCell's carry is (c, h)

        def step(carry, x_t):
            return module.apply(variables, carry, x_t)
        carry, hs = jax.lax.scan(step, carry, x)
        return hs, ((carry[1], carry[0]) if lstm else (carry,))
    return apply


def make_layer_apply(cell: str, L: int, D: int, dtype, with_lengths: bool):
    """apply(weights, x, state, lengths) -> (hs, state_n): L layers, each a flax.linen.RNN of the cell
    (D = 2: a flax.linen.Bidirectional of two, the reverse one with reverse=True, keep_order=True),
    given seq_lengths when there are lengths; layer k + 1 reads layer k's outputs."""
    lstm = cell == "lstm"

    def carry_of(state, k):
        return (state[1][k], state[0][k]) if lstm else state[0][k]  # LSTMCell's carry is (c, h)

    def apply(weights, x, state, lengths):
        H = weights[0][1].shape[1]
        kwargs = {"seq_lengths": lengths} if with_lengths else {}
        carries, layer_input = [], x
        for k in range(L):
            rnn = nn.RNN(CELL_MODULES[cell](H), time_major=True, return_carry=True)
            if D == 1:
                variables = {"params": {"cell": flax_params(cell, *weights[k])}}
                carry, layer_input = rnn.apply(variables, layer_input, initial_carry=carry_of(state, k), **kwargs)
                carries.append(carry)
                continue
            both = nn.Bidirectional(rnn, nn.RNN(CELL_MODULES[cell](H), reverse=True, keep_order=True),
                                    time_major=True, return_carry=True)
            variables = {"params": {"forward_rnn": {"cell": flax_params(cell, *weights[2 * k])},
                                    "backward_rnn": {"cell": flax_params(cell, *weights[2 * k + 1])}}}
            (forward, reverse), layer_input = both.apply(
                variables, layer_input, initial_carry=(carry_of(state, 2 * k), carry_of(state, 2 * k + 1)), **kwargs)
            carries += [forward, reverse]
        if lstm:
            return layer_input, (jnp.stack([h for _, h in carries]), jnp.stack([c for c, _ in carries]))
        return layer_input, (jnp.stack(carries),)
    return apply


_programs = jax_common.Programs(make_apply, make_layer_apply)


def forward(cell, params, x, h0, c0=None, *, training=True):
    return jax_common.forward(_programs, cells, cell, params, x, h0, c0, training=training)


def backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n=None):
    return jax_common.backward(_programs, cells, cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n)


#: Native layers: stacked, bidirectional (flax.linen.Bidirectional) and with lengths (seq_lengths);
#: an lstm projection is a ValueError (flax has none).
layer_features = frozenset({"bidirectional", "lengths"})


def layer_forward(cell, params, x, h0, c0=None, *, bidirectional=False, lengths=None, training=True):
    return jax_common.layer_forward(_programs, cells, cell, params, x, h0, c0, bidirectional=bidirectional,
                                    lengths=lengths, training=training)


def layer_backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n=None, *, bidirectional=False, lengths=None):
    return jax_common.layer_backward(_programs, cells, cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n,
                                     bidirectional=bidirectional, lengths=lengths)
