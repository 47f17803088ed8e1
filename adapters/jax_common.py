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
    """The compiled forward and forward-plus-vjp programs of one adapter, one per (cell, dtype, shape).

    Compiling happens under a lock (a framework's tracing need not be thread-safe: Keras keeps
    scopes while it traces), running outside it: a compiled XLA program may run on several threads
    at once, and each call gets its own buffers.
    """

    def __init__(self, make_apply: Callable):
        self.make_apply = make_apply
        self.cache: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, kind: str, cell: str, dtype, padding: Padding, args: tuple):
        key = (kind, cell, np.dtype(dtype).name) + padding.key
        with self.lock:
            program = self.cache.get(key)
            if program is None:
                try:
                    apply = self.make_apply(cell, padding.Ip, padding.Hp, np.dtype(dtype))
                    traced = forward_program(apply) if kind == "forward" else forward_and_vjp_program(apply)
                    program = jax.jit(traced).lower(*args).compile()
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
