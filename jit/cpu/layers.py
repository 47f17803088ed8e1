"""jit.cpu's layers: torch.nn.RNN / LSTM / GRU with num_layers, bidirectional and per-row
lengths (a packed sequence), the layer contract of reference.layers (README), on the cells'
time-loop kernels.

    layer_forward(cell, params, x, h0, c0=None, *, bidirectional=False, lengths=None, training=True)
    layer_backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n=None, *, bidirectional=False, lengths=None)

One parallel run per layer, forward and backward: the kernels of both directions start
together, each direction on its own share of the threads (on two cores, one each), and
each kernel runs its rows to their own lengths, the reverse direction from each row's own
last step (jit.cpu.steps). A layer's directions write their hs side by side into the next
layer's input. Backward, each direction's GEMMs follow (jit.cpu.launch), again one direction
per thread.

lstm with a projection (w_hr) is not native: it goes through reference.layers' composition
of jit.cpu's cell calls (reference.layers.composed: a span of rows per call, and one lstm
call per step for the projection), correct and slow.

twin: reference.layers (stack_forward, run_direction, run_rows and their backward).
"""
from functools import lru_cache
from typing import NamedTuple, Optional

import numpy as np

import reference.layers
from reference.contract import CELLS
from reference.layers import (LayerBackwardResult, LayerParamGrads, check_layer_backward_inputs,
                              check_layer_forward_inputs)

from .arrays import all_finite, kernel_array
from .launch import KERNELS, BackwardCall, ForwardCall, parameter_gradients
from .steps import previous_states, schedule
from .threads import call_threads, threads_for
from .tiling import gather_scratch, projection_scratch, run_pieces, tiling_for
from .workspace import scratch

SUPPORTED = tuple(sorted(CELLS))


class DirectionTrace(NamedTuple):
    """What one direction's forward kept for backward (training)."""
    cs: Optional[np.ndarray]  # (T, B, H) lstm
    gates: np.ndarray  # (T, B, G·H); (0, B, G·H) for rnn_*, whose backward reads hs
    hns: Optional[np.ndarray]  # (T, B, H) gru: W_hn h + b_hn


class LayerTrace(NamedTuple):
    x: np.ndarray  # (T, B, I_layer) the layer's input
    hs: np.ndarray  # (T, B, D·H) its output, direction d in columns d·H …
    directions: tuple  # DirectionTrace per direction


class LayerForward(NamedTuple):
    hs: np.ndarray  # (T, B, D·H) the top layer's outputs, zeros past each row's length
    h_n: np.ndarray  # (L·D, B, H)
    c_n: Optional[np.ndarray]  # (L·D, B, H) lstm
    layers: Optional[tuple]  # training: a LayerTrace per layer, what layer_backward reads


@lru_cache(maxsize=1)
def _composed():
    """reference.layers' composition over jit.cpu's cell calls: lstm with a projection."""
    from . import backend
    return reference.layers.composed(backend)


def _direction_tiling(cell, B, H, n_threads, D, weight_bytes):
    """Each direction's tiles, on its share of the threads."""
    return tiling_for(cell, B, H, max(1, n_threads // D), weight_bytes)


def _run_together(groups, n_threads):
    """Run every direction's pieces in one parallel run when the threads suffice; else one
    direction after the other (a small call on the caller alone)."""
    if sum(len(pieces) for pieces in groups) <= max(n_threads, 1):
        run_pieces([piece for pieces in groups for piece in pieces])
    else:
        for pieces in groups:
            run_pieces(pieces)


# ---- forward ---------------------------------------------------------------------------------------

def layer_forward(cell, params, x, h0, c0=None, *, bidirectional=False, lengths=None, training=True):
    """Run L layers (D directions each) of ``cell`` over x; torch.nn's ``output, h_n, c_n``
    (see reference.layers.forward), and with training what layer_backward reads."""
    shapes = check_layer_forward_inputs(cell, params, x, h0, c0, bidirectional, lengths, supported=SUPPORTED,
                                        isfinite=all_finite)
    if shapes.projected:
        return _composed().layer_forward(cell, params, x, h0, c0, bidirectional=bidirectional, lengths=lengths,
                                         training=training)
    T, B, I, H, _, G, L, D, _, dtype = shapes
    h0k = kernel_array(h0)
    c0k = kernel_array(c0) if c0 is not None else None
    h_n = np.empty((L * D, B, H), dtype)
    c_n = np.empty_like(h_n) if c0 is not None else None
    if T == 0:
        h_n[:] = h0k
        if c_n is not None:
            c_n[:] = c0k
        return LayerForward(np.empty((0, B, D * H), dtype), h_n, c_n, () if training else None)
    traces, layer_input = [], kernel_array(x)
    for layer in range(L):
        k = slice(layer * D, (layer + 1) * D)
        hs = np.empty((T, B, D * H), dtype)
        directions = _forward_layer(cell, params[k], layer_input, h0k[k], None if c0k is None else c0k[k], hs,
                                    h_n[k], None if c_n is None else c_n[k], lengths, training)
        traces.append(LayerTrace(layer_input, hs, directions))
        layer_input = hs
    return LayerForward(layer_input, h_n, c_n, tuple(traces) if training else None)


def _forward_layer(cell, params, x, h0, c0, hs, h_n, c_n, lengths, training):
    """One layer: every direction's kernels in one parallel run, filling hs (T, B, D·H), h_n
    and c_n (D, B, H); returns each direction's DirectionTrace."""
    T, B, I = x.shape
    D, H = len(params), h0.shape[2]
    G, dtype, lstm = params[0].w_hh.shape[0] // H, x.dtype, c0 is not None
    kernels = KERNELS[cell]
    n_threads = threads_for(D * T * B * G * H * (I + H))
    keep = T if training else 0  # per-step storage only when training
    groups, traces = [], []
    for d, p in enumerate(params):
        reverse = d == 1
        row_lengths, order, tiling = schedule(lengths, T, B, _direction_tiling(
            cell, B, H, n_threads, D, G * H * H * dtype.itemsize))
        gathers = reverse or bool((row_lengths != T).any())
        h_state = scratch(f"h_state{d}", (2, B, H), dtype)
        h_state[1] = h0[d][order]  # the state before step 0, in position order (jit.cpu.steps)
        trace = DirectionTrace(np.empty((keep, B, H), dtype) if lstm else None,
                               np.empty((keep if kernels.backward_reads_gates else 0, B, G * H), dtype),
                               np.empty((keep, B, H), dtype) if cell == "gru" else None)
        pieces, _ = kernels.forward(ForwardCall(
            x, kernel_array(p.w_ih), kernel_array(p.w_hh), kernel_array(p.b_ih), kernel_array(p.b_hh), h0[d],
            c0[d] if lstm else None, training, row_lengths, order, reverse, hs, d * H, h_n[d],
            c_n[d] if lstm else None, trace.cs, trace.gates, trace.hns, h_state, tiling,
            projection_scratch(tiling, T, G, dtype, role=str(d)),
            gather_scratch(tiling, T, I, dtype, gathers, role=str(d))))
        groups.append(pieces)
        traces.append(trace)
    _run_together(groups, n_threads)
    return tuple(traces)


# ---- backward --------------------------------------------------------------------------------------

def layer_backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n=None, *, bidirectional=False, lengths=None):
    """The gradients of L = Σ dhs⊙hs + Σ dh_n⊙h_n (+ Σ dc_n⊙c_n): dx, dh0, dc0 and dparams, a
    list of reference.layers.LayerParamGrads in params' order (see reference.layers.backward).
    ``fwd`` is layer_forward(..., training=True)'s result."""
    shapes = check_layer_backward_inputs(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n, bidirectional, lengths,
                                         supported=SUPPORTED, isfinite=all_finite)
    if shapes.projected:
        return _composed().layer_backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n,
                                          bidirectional=bidirectional, lengths=lengths)
    T, B, I, H, _, G, L, D, _, dtype = shapes
    traces = getattr(fwd, "layers", None)
    if traces is None or len(traces) != (L if T else 0):
        raise ValueError(f"fwd: expected the result of jit.cpu's layer_forward(..., training=True) for these "
                         f"{L} layers; got {type(fwd).__name__} with {'no' if traces is None else len(traces)} "
                         f"layer traces")
    h0k = kernel_array(h0)
    dh0 = np.empty((L * D, B, H), dtype)
    dc0 = np.empty_like(dh0) if c0 is not None else None
    dc_n = (np.zeros_like(dh0) if dc_n is None else kernel_array(dc_n)) if c0 is not None else None
    dparams = [None] * (L * D)
    if T == 0:
        dh0[:] = dh_n
        if dc0 is not None:
            dc0[:] = dc_n
        for k, p in enumerate(params):
            dparams[k] = LayerParamGrads(*(np.zeros_like(a) for a in (p.w_ih, p.w_hh, p.b_ih, p.b_hh)))
        return LayerBackwardResult(np.zeros_like(x), dh0, dc0, dparams)
    widths = [I] + [D * H] * (L - 1)
    macs = sum(2 * D * T * B * G * H * (w + H) for w in widths)
    with call_threads(macs, T * B * G * H * max(max(widths), H)) as n_threads:
        d_output = kernel_array(dhs)
        dh_n = kernel_array(dh_n)
        c0k = kernel_array(c0) if c0 is not None else None
        for layer in reversed(range(L)):
            k = slice(layer * D, (layer + 1) * D)
            d_output = _backward_layer(cell, params[k], traces[layer], h0k[k], None if c0k is None else c0k[k],
                                       d_output, dh_n[k], None if dc_n is None else dc_n[k], dh0[k],
                                       None if dc0 is None else dc0[k], lengths, dparams, layer * D, n_threads)
    return LayerBackwardResult(d_output, dh0, dc0, dparams)


def _backward_layer(cell, params, trace: LayerTrace, h0, c0, dhs, dh_n, dc_n, dh0, dc0, lengths, dparams, k0,
                    n_threads):
    """One layer: every direction's backward kernels in one parallel run (filling dh0, dc0),
    then each direction's GEMMs; fills dparams[k0 + d] and returns ∂L/∂(the layer's input)."""
    T, B, _ = trace.x.shape
    D, H = len(params), h0.shape[2]
    G, dtype = params[0].w_hh.shape[0] // H, trace.x.dtype
    kernels = KERNELS[cell]
    groups, launched = [], []
    for d, p in enumerate(params):
        reverse = d == 1
        row_lengths, order, tiling = schedule(lengths, T, B, _direction_tiling(
            cell, B, H, n_threads, D, G * H * H * dtype.itemsize))
        da = scratch(f"da{d}", (T, B, G * H), dtype)  # ∂L/∂(pre-activations), W_ih side
        run = trace.directions[d]
        pieces, hidden = kernels.backward(BackwardCall(
            kernel_array(p.w_hh), kernel_array(p.b_hh), h0[d], None if c0 is None else c0[d], trace.hs, d * H,
            run.cs, run.gates, run.hns, dhs, dh_n[d], None if dc_n is None else dc_n[d], row_lengths, order,
            reverse, da, scratch(f"da_state{d}", (2, B, G * H), dtype), dh0[d], None if dc0 is None else dc0[d],
            tiling, n_threads, str(d)))
        groups.append(pieces)
        launched.append((p, da, hidden, row_lengths, reverse))
    _run_together(groups, n_threads)
    # The GEMMs: each direction's on its own thread when there are two, one BLAS call each, so
    # their bits do not depend on the thread count (a GEMM cut by rows could: BLAS kernels differ by M)
    gemm_threads = max(1, n_threads // D)
    found = [None] * D

    def direction_gradients(d, p, da, hidden, row_lengths, reverse, h_prev):
        previous_states(trace.hs, d * H, h0[d], row_lengths, reverse, h_prev)
        found[d] = parameter_gradients(da, hidden, trace.x, kernel_array(p.w_ih), h_prev, gemm_threads)
    _run_together([[(direction_gradients, (d, *run, scratch(f"h_prev{d}", (T, B, H), dtype)))]
                   for d, run in enumerate(launched)], n_threads)
    for d, grads in enumerate(found):
        dparams[k0 + d] = LayerParamGrads(grads.dw_ih, grads.dw_hh, grads.db_ih, grads.db_hh)
    return found[0].dx if D == 1 else found[0].dx + found[1].dx
