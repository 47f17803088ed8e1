"""What the JAX adapters (adapters.keras, adapters.flax) share: the contract's forward and backward
around one framework function, compiled once per shape, differentiated by jax.vjp.

An adapter supplies ``make_apply(cell, I, H, dtype)``: a traceable function

    apply(w_ih, w_hh, b_ih, b_hh, x, state) -> (hs, state_n)

taking PyTorch-layout params, x (T, B, I) and state = (h0,) or (h0, c0) for lstm, and returning
hs (T, B, H) and the last state in the same form. Inside, it rearranges the params into its
framework's layout (transposes, gate-block reorders, and where the framework has one bias the sum
b_ih + b_hh) and calls the framework. Because the conversion is inside the differentiated function,
jax.vjp carries the gradients back through it into PyTorch's layout: the transpose of a reorder is
the inverse reorder (exact), and of a sum b_ih + b_hh it hands the same gradient to both.

**Compiling.** XLA compiles one program per shape (a few tenths of a second each on an idle Zen 4
core; a Keras layer takes about twice a flax cell's time), and the property suite draws many
shapes. So a small call's forward reads its results from the forward-and-vjp program that backward
runs (one program per shape, not two); a shape the framework cannot trace keeps its error (no
retracing on every Hypothesis example); and B, I and H from 1 to ``SMALL`` are padded to ``SMALL``
with zeros, which provably leaves every real entry of every result as it is (up to the summation
order a dot product's blocking chooses, which the suite's bounds allow for any order):
- padded batch rows: rows never mix (every product is row by row), and their zero upstream
  gradients add exact zeros to the weight gradients;
- padded input features: a zero column of x meets a zero column of W_ih, adding 0·0 = 0 to each sum;
- padded hidden units: their weights, biases and initial state are zero, so each step's
  pre-activations are exactly 0, and every cell maps a zero state with zero pre-activations to a
  zero state (tanh 0 = relu 0 = 0; lstm c' = σ(0)·0 + σ(0)·tanh 0 = 0, h' = σ(0)·tanh 0 = 0;
  gru n = tanh(0 + r·0) = 0, h' = (1 − z)·0 + z·0 = 0). The real units read them through zero
  columns of W_hh, and their gradients stay exactly zero the same way.
T is never padded (that would need the framework's masking, another code path), nor is a size of
0 (the framework itself must answer B = 0). Padding hides nothing the suite could see except a
framework defect at the unpadded sizes 1..SMALL (a vector tail): set CELLBENCH_JAX_EXACT_SHAPES=1
to call the framework with the exact shapes instead (slower: one compile per drawn shape).
Larger sizes are never padded, so benchmarks time the framework at their own shapes.

**float64.** A float64 call runs inside ``jax.enable_x64(True)``, a context local to the calling
thread: JAX's process-wide default (32-bit unless the user enabled x64) is left as it is, and
float32 calls run under whatever the user set.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from contextlib import nullcontext
from typing import Callable

import numpy as np

from reference.contract import BackwardResult, ForwardResult, check_backward_inputs, check_forward_inputs

try:
    import jax
except ImportError as exc:  # jax is an optional extra
    raise ImportError('adapters.keras and adapters.flax need JAX: pip install -e ".[jax]"') from exc

#: B, I and H in 1..SMALL are padded to SMALL (see the module docstring); the suite's sizes on these
#: backends stay within it (their max_test_sizes).
SMALL = 8
EXACT_SHAPES_ENV = "CELLBENCH_JAX_EXACT_SHAPES"
#: Compiled programs kept per adapter (least recently used dropped first); one is a few MB at most.
CACHE_SIZE = 256


def padded_size(n: int) -> int:
    """The size a dimension of n is run at: SMALL for 1..SMALL, else n itself (0 stays 0)."""
    if os.environ.get(EXACT_SHAPES_ENV, "") not in ("", "0") or n == 0 or n > SMALL:
        return n
    return SMALL


def x64_for(dtype):
    """JAX's 64-bit mode for a float64 call (thread-local), nothing for float32."""
    return jax.enable_x64(True) if np.dtype(dtype) == np.float64 else nullcontext()


# ----- padding in PyTorch's layout -------------------------------------------------------------------

def pad_blocks(a: np.ndarray, G: int, H: int, H_pad: int, cols: int | None = None) -> np.ndarray:
    """Rows (G·H, ...) of G gate blocks to (G·H_pad, ...), each block zero-padded at its end; a 2-D
    array's columns are zero-padded to ``cols`` too."""
    cols = a.shape[1] if a.ndim == 2 and cols is None else cols
    if H_pad == H and (a.ndim == 1 or cols == a.shape[1]):
        return a
    out = np.zeros((G * H_pad,) + ((cols,) if a.ndim == 2 else ()), a.dtype)
    for g in range(G):
        out[(slice(g * H_pad, g * H_pad + H),) + ((slice(0, a.shape[1]),) if a.ndim == 2 else ())] = \
            a[g * H:(g + 1) * H]
    return out


def unpad_blocks(a, G: int, H: int, H_pad: int, cols: int | None = None) -> np.ndarray:
    """The inverse of pad_blocks: each block's first H rows (and the first ``cols`` columns)."""
    a = np.asarray(a)
    rows = np.concatenate([np.arange(g * H_pad, g * H_pad + H) for g in range(G)]) if G * H else np.zeros(0, int)
    out = a[rows]
    return np.array(out[:, :cols] if cols is not None else out, copy=True)


def pad_to(a: np.ndarray, shape: tuple) -> np.ndarray:
    """a zero-padded at the end of each axis to ``shape`` (a itself when it already has it)."""
    if a.shape == tuple(shape):
        return a
    out = np.zeros(shape, a.dtype)
    out[tuple(slice(0, n) for n in a.shape)] = a
    return out


class Padding:
    """The sizes a call runs at, and the maps between the caller's arrays and the padded ones."""

    def __init__(self, T, B, I, H, G):
        self.T, self.B, self.I, self.H, self.G = T, B, I, H, G
        self.Bp, self.Ip, self.Hp = padded_size(B), padded_size(I), padded_size(H)

    @property
    def padded(self) -> bool:
        """Whether every size but T is at most SMALL (so padded, or 0): the property suite's calls."""
        return max(self.B, self.I, self.H) <= SMALL

    @property
    def key(self) -> tuple:
        return self.T, self.Bp, self.Ip, self.Hp

    def params(self, params) -> tuple:
        G, H, Hp = self.G, self.H, self.Hp
        return (pad_blocks(np.asarray(params.w_ih), G, H, Hp, self.Ip), pad_blocks(np.asarray(params.w_hh), G, H, Hp, Hp),
                pad_blocks(np.asarray(params.b_ih), G, H, Hp), pad_blocks(np.asarray(params.b_hh), G, H, Hp))

    def sequence(self, a, features: int) -> np.ndarray:  # x (T, B, I) or dhs (T, B, H)
        return pad_to(np.asarray(a), (self.T, self.Bp, features))

    def state(self, a) -> np.ndarray:  # h0, c0, dh_n, dc_n (B, H)
        return pad_to(np.asarray(a), (self.Bp, self.Hp))

    def unpad_sequence(self, a, features: int) -> np.ndarray:
        return np.array(np.asarray(a)[:, :self.B, :features], copy=True)

    def unpad_state(self, a) -> np.ndarray:
        return np.array(np.asarray(a)[:self.B, :self.H], copy=True)


# ----- compiled programs -----------------------------------------------------------------------------

class Programs:
    """Compiled programs of one adapter, by key: for cells, forward and forward-plus-vjp per (cell,
    dtype, shape); for native layers, the same per (cell, dtype, shape, layers, directions, lengths).

    Compiling happens under a lock (a framework's tracing need not be thread-safe: Keras keeps
    scopes while it traces), running outside it: a compiled XLA program may run on several threads
    at once, and each call gets its own buffers.
    """

    def __init__(self, make_apply: Callable, make_layer_apply: Callable | None = None):
        self.make_apply = make_apply
        self.make_layer_apply = make_layer_apply
        self.cache: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, kind: str, cell: str, dtype, padding: Padding, args: tuple):
        """The cell program ``kind`` ("forward", "forward and vjp") for these padded sizes."""
        def build():
            apply = self.make_apply(cell, padding.Ip, padding.Hp, np.dtype(dtype))
            return forward_program(apply) if kind == "forward" else forward_and_vjp_program(apply)
        return self.compiled((kind, cell, np.dtype(dtype).name) + padding.key, build, args)

    def compiled(self, key: tuple, build: Callable, args: tuple):
        """The program ``build()`` traces, compiled for args, kept under key."""
        with self.lock:
            program = self.cache.get(key)
            if program is None:
                try:
                    program = jax.jit(build()).lower(*args).compile()
                except Exception as error:
                    # the framework cannot trace or compile this call (a defect, or an input it
                    # refuses): every later call of this key gets the same error without tracing again
                    program = Refused(error)
                self.cache[key] = program
                while len(self.cache) > CACHE_SIZE:
                    self.cache.popitem(last=False)
            else:
                self.cache.move_to_end(key)
        return program


class Refused:
    """What the cache keeps for a key the framework could not trace or compile: calling it raises
    the framework's error again, with the framework's traceback."""

    def __init__(self, error: Exception):
        self.error, self.traceback = error, error.__traceback__

    def __call__(self, *args):
        raise self.error.with_traceback(self.traceback)


def forward_program(apply):
    def run(w_ih, w_hh, b_ih, b_hh, x, state):
        return apply(w_ih, w_hh, b_ih, b_hh, x, state)
    return run


def forward_and_vjp_program(apply):
    def run(w_ih, w_hh, b_ih, b_hh, x, state, dhs, d_state):
        (hs, state_n), pullback = jax.vjp(apply, w_ih, w_hh, b_ih, b_hh, x, state)
        return hs, state_n, pullback((dhs, d_state))  # grads: (dw_ih, dw_hh, db_ih, db_hh, dx, d_state0)
    return run


# ----- the contract ----------------------------------------------------------------------------------

def forward(programs: Programs, cells, cell, params, x, h0, c0=None, *, training=True):
    """The contract's forward; gates and cs are None (the frameworks do not expose them).

    A padded call (the property suite's sizes) reads hs and the last state from the program that
    backward runs, with zero upstream gradients: one compiled program per shape instead of two
    (compiling is most of the suite's time), and forward's and backward's forward pass are then
    the same computation. A larger call (a benchmark's) runs the forward program alone."""
    T, B, I, H, G, dtype = check_forward_inputs(cell, params, x, h0, c0, supported=tuple(sorted(cells)))
    lstm = cell == "lstm"
    pad = Padding(T, B, I, H, G)
    state = (pad.state(h0), pad.state(c0)) if lstm else (pad.state(h0),)
    args = pad.params(params) + (pad.sequence(x, pad.Ip), state)
    with x64_for(dtype):
        if pad.padded:
            zeros = np.zeros((pad.Bp, pad.Hp), dtype)
            args += (np.zeros((T, pad.Bp, pad.Hp), dtype), (zeros,) * len(state))
            hs, state_n, _ = programs.get("forward and vjp", cell, dtype, pad, args)(*args)
        else:
            hs, state_n = programs.get("forward", cell, dtype, pad, args)(*args)
        hs = pad.unpad_sequence(hs, H)
        h_n = pad.unpad_state(state_n[0])
        c_n = pad.unpad_state(state_n[1]) if lstm else None
    return ForwardResult(hs, h_n, c_n, None, None)


def backward(programs: Programs, cells, cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n=None):
    """The contract's backward: jax.vjp of the framework's forward (fwd is not read: the vjp
    recomputes the forward pass inside the same program)."""
    T, B, I, H, G, dtype = check_backward_inputs(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n, fwd_fields=(),
                                                 supported=tuple(sorted(cells)))
    lstm = cell == "lstm"
    pad = Padding(T, B, I, H, G)
    if lstm:
        state = (pad.state(h0), pad.state(c0))
        d_state = (pad.state(dh_n), pad.state(np.zeros((B, H), dtype) if dc_n is None else dc_n))
    else:
        state, d_state = (pad.state(h0),), (pad.state(dh_n),)
    args = pad.params(params) + (pad.sequence(x, pad.Ip), state, pad.sequence(dhs, pad.Hp), d_state)
    with x64_for(dtype):
        _, _, (dw_ih, dw_hh, db_ih, db_hh, dx, d_state0) = programs.get("forward and vjp", cell, dtype, pad, args)(*args)
        return BackwardResult(
            pad.unpad_sequence(dx, I), pad.unpad_state(d_state0[0]),
            pad.unpad_state(d_state0[1]) if lstm else None,
            unpad_blocks(dw_ih, G, H, pad.Hp, I), unpad_blocks(dw_hh, G, H, pad.Hp, H),
            unpad_blocks(db_ih, G, H, pad.Hp), unpad_blocks(db_hh, G, H, pad.Hp))


# ----- native layers ---------------------------------------------------------------------------------
#
# An adapter with native layers supplies make_layer_apply(cell, L, D, dtype, with_lengths): a traceable
#     apply(weights, x, state, lengths) -> (hs, state_n)
# with weights a tuple of (w_ih, w_hh, b_ih, b_hh) per layer-direction in PyTorch's order, x (T, B, I),
# state = (h0,) or (h0, c0) of shape (L·D, B, ·), lengths an int32 (B,) array or None; it stacks the
# framework's own (bidirectional, masked) layers. Layers are never padded (their sizes are the suite's
# smallest, and a layer's input columns would interleave padded units of the layer below).

def _zero_past_lengths(hs, lengths):
    """hs with every step at or past a row's length set to zero, as a packed sequence padded back
    (torch's pad_packed_sequence) has it; a framework leaves those steps unspecified. Inside the
    differentiated function, so a gradient given there reaches nothing."""
    if lengths is None:
        return hs
    import jax.numpy as jnp
    valid = jnp.arange(hs.shape[0])[:, None] < lengths[None, :]  # (T, B)
    return jnp.where(valid[..., None], hs, jnp.zeros((), hs.dtype))


def layer_program(make_layer_apply, cell, L, D, dtype, with_lengths, kind):
    apply = make_layer_apply(cell, L, D, np.dtype(dtype), with_lengths)

    def run_forward(weights, x, state, lengths):
        hs, state_n = apply(weights, x, state, lengths)
        return _zero_past_lengths(hs, lengths), state_n

    def run_forward_and_vjp(weights, x, state, lengths, dhs, d_state):
        (hs, state_n), pullback = jax.vjp(lambda w, x, s: run_forward(w, x, s, lengths), weights, x, state)
        return hs, state_n, pullback((dhs, d_state))  # grads: (d weights, dx, d_state0)
    return run_forward if kind == "forward" else run_forward_and_vjp


def _layer_args(params, x, h0, c0, lengths, lstm):
    weights = tuple(tuple(np.asarray(getattr(p, n)) for n in ("w_ih", "w_hh", "b_ih", "b_hh")) for p in params)
    state = (np.asarray(h0), np.asarray(c0)) if lstm else (np.asarray(h0),)
    lengths = None if lengths is None else np.asarray(lengths, np.int32)
    return weights, np.asarray(x), state, lengths


def _no_projection(shapes, params):
    if shapes.projected:
        raise ValueError(f"params[0].w_hr: expected no projection (the framework's recurrent layers have no "
                         f"proj_size); got w_hr of shape {tuple(np.shape(params[0].w_hr))}")


def layer_forward(programs: Programs, cells, cell, params, x, h0, c0=None, *, bidirectional=False, lengths=None,
                  training=True):
    """reference.layers.forward through the framework's own layers; ``runs`` is None (backward
    recomputes through jax.vjp)."""
    from reference.layers import LayerForwardResult, check_layer_forward_inputs
    shapes = check_layer_forward_inputs(cell, params, x, h0, c0, bidirectional, lengths, supported=tuple(sorted(cells)))
    _no_projection(shapes, params)
    lstm = cell == "lstm"
    args = _layer_args(params, x, h0, c0, lengths, lstm)
    dtype = shapes.dtype
    # as for cells: a small call reads forward's results from the program backward runs
    kind = "vjp" if max(shapes.B, shapes.I, shapes.H) <= SMALL else "forward"
    if kind == "vjp":
        args += (np.zeros((shapes.T, shapes.B, shapes.D * shapes.H), dtype), tuple(np.zeros_like(s) for s in args[2]))
    key = (f"layer {kind}", cell, dtype.name, shapes.T, shapes.B, shapes.I, shapes.H, shapes.L, shapes.D,
           lengths is not None)
    with x64_for(dtype):
        program = programs.compiled(key, lambda: layer_program(programs.make_layer_apply, cell, shapes.L, shapes.D,
                                                               dtype, lengths is not None, kind), args)
        hs, state_n, *_ = program(*args)
        return LayerForwardResult(np.array(hs), np.array(state_n[0]), np.array(state_n[1]) if lstm else None, None)


def layer_backward(programs: Programs, cells, cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n=None, *,
                   bidirectional=False, lengths=None):
    """reference.layers.backward: jax.vjp of the framework's layers (fwd is not read)."""
    from reference.layers import LayerBackwardResult, LayerParamGrads, check_layer_backward_inputs
    shapes = check_layer_backward_inputs(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n, bidirectional, lengths,
                                         supported=tuple(sorted(cells)))
    _no_projection(shapes, params)
    lstm = cell == "lstm"
    dtype = shapes.dtype
    d_state = ((np.asarray(dh_n), np.zeros_like(np.asarray(c0)) if dc_n is None else np.asarray(dc_n)) if lstm
               else (np.asarray(dh_n),))
    args = _layer_args(params, x, h0, c0, lengths, lstm) + (np.asarray(dhs), d_state)
    key = ("layer vjp", cell, dtype.name, shapes.T, shapes.B, shapes.I, shapes.H, shapes.L, shapes.D,
           lengths is not None)
    with x64_for(dtype):
        program = programs.compiled(key, lambda: layer_program(programs.make_layer_apply, cell, shapes.L, shapes.D,
                                                               dtype, lengths is not None, "vjp"), args)
        _, _, (d_weights, dx, d_state0) = program(*args)
        dparams = [LayerParamGrads(*(np.array(g) for g in grads)) for grads in d_weights]
        return LayerBackwardResult(np.array(dx), np.array(d_state0[0]), np.array(d_state0[1]) if lstm else None,
                                   dparams)
