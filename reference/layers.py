"""Layers of cells as torch.nn.RNN / LSTM / GRU compute them: stacked, bidirectional, over rows of
different lengths (a packed sequence, padded back with zeros), and for lstm with a projection.

    forward(cell, params, x, h0, c0=None, *, bidirectional=False, lengths=None, training=True)
    backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n=None, *, bidirectional=False, lengths=None)
    composed(backend)      the same layers for any backend that has only cells

Shapes: L layers, D directions (2 if bidirectional), H_out = P with a projection, else H.
    x (T, B, I), h0 (L·D, B, H_out), c0 (L·D, B, H) (lstm), lengths None or (B,) in 1..T;
    hs (T, B, D·H_out), h_n (L·D, B, H_out), c_n (L·D, B, H).
params[k], k = layer·D + direction (PyTorch's order: layer 0 forward, layer 0 reverse, layer 1 ...),
has w_ih (G·H, I_layer), w_hh (G·H, H_out), b_ih, b_hh (G·H,), and with a projection w_hr (P, H);
I_0 = I, and every layer above reads D·H_out features.

The composition, one function per concern, outermost first:
    stacking     layer k reads layer k−1's hs, its directions side by side, forward first
    reversal     the reverse direction is the forward one on each row reversed within its length,
                 its hs reversed back
    lengths      a direction runs the way a packed sequence does: between consecutive lengths, one
                 call on the rows still running; a row's h_n is its state at its last step, and its
                 hs beyond that step are zeros
    projection   lstm with w_hr: h = W_hr (o⊙tanh c), reference.lstm.lstm_projected_step_*
The cells underneath are reference.backend's; ``composed(backend)`` puts another backend's there.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Callable, NamedTuple, Optional

import numpy as np

from . import backend as cell_backend
from .contract import (CELLS, NUM_GATES, PARAM_NAMES, ForwardResult, Params, _check_array,
                       _check_finite, _check_same_dtype, _check_shape, _describe, check_cell, numpy_all_finite)
from .lstm import lstm_projected_step_backward, lstm_projected_step_forward

# ----- records ---------------------------------------------------------------------------------------


class ProjectedParams(NamedTuple):
    """One layer-direction of an lstm with a projection (torch.nn.LSTM's proj_size = P)."""

    w_ih: np.ndarray  # (4H, I_layer)
    w_hh: np.ndarray  # (4H, P)
    b_ih: np.ndarray  # (4H,)
    b_hh: np.ndarray  # (4H,)
    w_hr: np.ndarray  # (P, H)


class LayerForwardResult(NamedTuple):
    hs: np.ndarray  # (T, B, D·H_out) the top layer's outputs, zeros past each row's length
    h_n: np.ndarray  # (L·D, B, H_out) each layer-direction's state at the row's last step
    c_n: Optional[np.ndarray]  # (L·D, B, H) lstm only
    runs: Optional[tuple]  # training=True: each layer-direction's DirectionRun, what backward reads


class LayerParamGrads(NamedTuple):
    dw_ih: np.ndarray
    dw_hh: np.ndarray
    db_ih: np.ndarray
    db_hh: np.ndarray
    dw_hr: Optional[np.ndarray] = None  # with a projection


class LayerBackwardResult(NamedTuple):
    dx: np.ndarray  # (T, B, I), zeros past each row's length
    dh0: np.ndarray  # (L·D, B, H_out)
    dc0: Optional[np.ndarray]  # (L·D, B, H) lstm only
    dparams: list  # LayerParamGrads per layer-direction, in params' order


class LayerShapes(NamedTuple):
    T: int
    B: int
    I: int
    H: int  # the cell's hidden units
    H_out: int  # what h0, h_n and each direction's hs hold: P with a projection, else H
    G: int
    L: int
    D: int
    projected: bool
    dtype: np.dtype


# ----- validation (the layer contract's, before any computation) -------------------------------------

def _check_lengths(lengths, T: int, B: int) -> None:
    if lengths is None:
        return
    values = np.asarray(lengths)
    if values.shape != (B,):
        raise ValueError(f"lengths: expected None or {B} integers (B from x.shape[1]); got shape {values.shape}")
    if values.size and values.dtype.kind not in "iu":
        raise TypeError(f"lengths: expected integers; got {_describe(lengths)} of dtype {values.dtype}")
    outside = np.flatnonzero((values < 1) | (values > T))
    if outside.size:
        raise ValueError(f"lengths: expected integers in 1..T = 1..{T}; got {values[outside[0]]} "
                         f"at index {outside[0]}")


def _check_params(cell, params, bidirectional) -> tuple:
    """The sequence of parameter objects; returns (L, D, projected)."""
    if not isinstance(bidirectional, (bool, np.bool_)):
        raise TypeError(f"bidirectional: expected a bool; got {_describe(bidirectional)}")
    D = 2 if bidirectional else 1
    if hasattr(params, "w_ih") or not isinstance(params, (list, tuple)):
        hint = " (one cell's parameters: put them in a list)" if hasattr(params, "w_ih") else ""
        raise TypeError(f"params: expected a list or tuple of parameter objects, one per layer and direction "
                        f"in PyTorch's order; got {type(params).__name__}{hint}")
    if len(params) == 0 or len(params) % D:
        raise ValueError(f"params: expected a positive multiple of D = {D} objects "
                         f"({'forward and reverse' if D == 2 else 'one'} per layer); got {len(params)}")
    for k, p in enumerate(params):
        missing = [n for n in PARAM_NAMES if not hasattr(p, n)]
        if missing:
            raise TypeError(f"params[{k}]: expected an object with attributes {', '.join(PARAM_NAMES)}; "
                            f"got {type(p).__name__} without {missing[0]!r}")
    has_projection = [getattr(p, "w_hr", None) is not None for p in params]
    if any(has_projection):
        first = has_projection.index(True)
        if cell != "lstm":
            raise TypeError(f"params[{first}].w_hr: expected None for {cell} (only lstm has a projection); "
                            f"got {_describe(params[first].w_hr)}")
        if not all(has_projection):
            raise TypeError(f"params[{has_projection.index(False)}].w_hr: expected an array (P, H) as in "
                            f"params[{first}] (every layer and direction has a projection, or none); got None")
    return len(params) // D, D, any(has_projection)


def check_layer_forward_inputs(cell, params, x, h0, c0, bidirectional, lengths, *, supported=CELLS,
                               array_types=(np.ndarray,), isfinite=numpy_all_finite) -> LayerShapes:
    """Validate a layer forward's arguments and return their sizes; raise TypeError or ValueError.

    As reference.contract.check_forward_inputs does for a cell: types and dtypes, then every
    size against the others (per layer-direction), then lengths, then finiteness.
    """
    check_cell(cell, supported)
    L, D, projected = _check_params(cell, params, bidirectional)
    _check_array("x", x, 3, array_types)
    _check_array("h0", h0, 3, array_types)
    if cell == "lstm":
        if c0 is None:
            raise TypeError("c0: expected an array of shape (L·D, B, H) for lstm; got None")
        _check_array("c0", c0, 3, array_types)
    elif c0 is not None:
        raise TypeError(f"c0: expected None for {cell} (only lstm has a cell state); got {_describe(c0)}")
    arrays = [("x", x), ("h0", h0), ("c0", c0)]
    for k, p in enumerate(params):
        named = (("w_ih", 2), ("w_hh", 2), ("b_ih", 1), ("b_hh", 1)) + ((("w_hr", 2),) if projected else ())
        for pname, ndim in named:
            _check_array(f"params[{k}].{pname}", getattr(p, pname), ndim, array_types)
            arrays.append((f"params[{k}].{pname}", getattr(p, pname)))
    dtype = _check_same_dtype(arrays)

    T, B, I = x.shape
    H_out = h0.shape[2]
    G = NUM_GATES[cell]
    H = params[0].w_hr.shape[1] if projected else H_out
    _check_shape("h0", h0, (L * D, B, H_out), f"L·D = {L}·{D} from params, B from x.shape[1]")
    if c0 is not None:
        H_from = "from params[0].w_hr" if projected else "as h0"
        _check_shape("c0", c0, (L * D, B, H), f"L·D and B as h0, H {H_from}")
    if projected and not 0 < H_out < H:
        raise ValueError(f"params[0].w_hr: expected (P, H) with P < H (torch.nn.LSTM's proj_size < hidden_size), "
                         f"P = {H_out} from h0.shape[2]; got shape {tuple(params[0].w_hr.shape)}")
    for k, p in enumerate(params):
        layer = k // D
        I_k, reads = (I, "I from x.shape[2]") if layer == 0 else (D * H_out, f"D·H_out: layer {layer - 1}'s hs")
        if p.w_hh.shape[0] != G * H:
            raise ValueError(f"params[{k}].w_hh: expected {G}·H = {G * H} rows for {cell} (G={G}, H={H}); "
                             f"got shape {tuple(p.w_hh.shape)}")
        _check_shape(f"params[{k}].w_hh", p.w_hh, (G * H, H_out), f"G·H, H_out for {cell}")
        _check_shape(f"params[{k}].w_ih", p.w_ih, (G * H, I_k), f"G·H, {reads}")
        _check_shape(f"params[{k}].b_ih", p.b_ih, (G * H,), f"G·H for {cell}")
        _check_shape(f"params[{k}].b_hh", p.b_hh, (G * H,), f"G·H for {cell}")
        if projected:
            _check_shape(f"params[{k}].w_hr", p.w_hr, (H_out, H), "P from h0.shape[2], H as params[0].w_hr")
    _check_lengths(lengths, T, B)
    for name, a in arrays:
        if a is not None:
            _check_finite(name, a, isfinite)
    return LayerShapes(T, B, I, H, H_out, G, L, D, projected, dtype)


def check_layer_backward_inputs(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n, bidirectional, lengths, *,
                                supported=CELLS, array_types=(np.ndarray,),
                                isfinite=numpy_all_finite) -> LayerShapes:
    """Validate a layer backward's arguments: those of forward, plus fwd and the upstream gradients."""
    shapes = check_layer_forward_inputs(cell, params, x, h0, c0, bidirectional, lengths, supported=supported,
                                        array_types=array_types, isfinite=isfinite)
    T, B, _, H, H_out, _, L, D, _, _ = shapes
    if getattr(fwd, "hs", None) is None:
        raise ValueError(f"fwd: expected the result of the layer forward(..., training=True); got "
                         f"{type(fwd).__name__} without hs")
    _check_array("dhs", dhs, 3, array_types)
    _check_array("dh_n", dh_n, 3, array_types)
    if cell == "lstm":
        if dc_n is not None:
            _check_array("dc_n", dc_n, 3, array_types)
    elif dc_n is not None:
        raise TypeError(f"dc_n: expected None for {cell} (only lstm has a cell state); got {_describe(dc_n)}")
    _check_same_dtype([("x", x), ("dhs", dhs), ("dh_n", dh_n), ("dc_n", dc_n)])
    _check_shape("fwd.hs", fwd.hs, (T, B, D * H_out), "T, B from x, D·H_out")
    _check_shape("dhs", dhs, (T, B, D * H_out), "T, B from x, D·H_out")
    _check_shape("dh_n", dh_n, (L * D, B, H_out), "the shape of h0")
    if dc_n is not None:
        _check_shape("dc_n", dc_n, (L * D, B, H), "the shape of c0")
    for name, a in (("dhs", dhs), ("dh_n", dh_n), ("dc_n", dc_n)):
        if a is not None:
            _check_finite(name, a, isfinite)
    return shapes


def row_lengths(lengths, T: int, B: int) -> np.ndarray:
    """(B,) the steps each row runs: ``lengths``, or T for every row."""
    return np.full(B, T, np.intp) if lengths is None else np.asarray(lengths, np.intp)


# ----- a direction's cells: how its rows run over a span of steps, and back --------------------------

class Cells(NamedTuple):
    """One direction's cells over a span of steps (x (S, B', I), h0 (B', H_out), c0 (B', H)).

    forward(params, x, h0, c0, training) -> result with hs, h_n, c_n (and what backward reads)
    backward(params, x, h0, c0, fwd, dhs, dh_n, dc_n) -> result with dx, dh0, dc0, dw_ih, dw_hh,
    db_ih, db_hh (and dw_hr with a projection)
    """
    forward: Callable
    backward: Callable


def cell_calls(backend, cell) -> Cells:
    """A cell-level backend's forward and backward, as the contract defines them."""
    return Cells(
        lambda params, x, h0, c0, training: backend.forward(cell, params, x, h0, c0, training=training),
        lambda params, x, h0, c0, fwd, dhs, dh_n, dc_n: backend.backward(cell, params, x, h0, c0, fwd, dhs, dh_n,
                                                                         dc_n))


class ProjectedBackwardResult(NamedTuple):
    dx: np.ndarray
    dh0: np.ndarray  # (B, P)
    dc0: np.ndarray  # (B, H)
    dw_ih: np.ndarray
    dw_hh: np.ndarray  # (4H, P)
    db_ih: np.ndarray
    db_hh: np.ndarray
    dw_hr: np.ndarray  # (P, H)


def projected_lstm_forward(params, x, h0, c0, training):
    """The projected lstm's time loop, the twin of reference.backend.forward: h0 (B, P), hs (T, B, P)."""
    T, B = x.shape[:2]
    P, H = params.w_hr.shape
    hs, cs = np.empty((T, B, P), x.dtype), np.empty((T, B, H), x.dtype)
    h, c = h0, c0
    for t in range(T):
        h, c, _ = lstm_projected_step_forward(x[t], h, c, params)
        hs[t], cs[t] = h, c
    return ForwardResult(hs, h.copy(), c.copy(), cs if training else None, None)


def projected_lstm_backward(params, x, h0, c0, fwd, dhs, dh_n, dc_n):
    """BPTT through the projected lstm, rebuilding each step's cache from the stored states."""
    dx = np.zeros_like(x)
    sums = {name: np.zeros_like(getattr(params, name[1:])) for name in ProjectedBackwardResult._fields[3:]}
    dh, dc = dh_n, dc_n
    for t in reversed(range(x.shape[0])):
        h_prev, c_prev = (fwd.hs[t - 1], fwd.cs[t - 1]) if t > 0 else (h0, c0)
        *_, cache = lstm_projected_step_forward(x[t], h_prev, c_prev, params)
        dh, dc, grads, dw_hr = lstm_projected_step_backward(dh + dhs[t], dc, cache, params)
        dx[t] = grads.dx
        for name, part in zip(sums, (grads.dw_ih, grads.dw_hh, grads.db_ih, grads.db_hh, dw_hr)):
            sums[name] += part
    return ProjectedBackwardResult(dx, np.array(dh, x.dtype), np.array(dc, x.dtype), **sums)


PROJECTED_LSTM = Cells(projected_lstm_forward, projected_lstm_backward)


class SteppedRun(NamedTuple):
    hs: np.ndarray  # (S, B, P)
    h_n: np.ndarray
    c_n: np.ndarray
    steps: Optional[list]  # per step: (x_t (1, B, I), h_prev padded (B, H), c_prev, the backend's result, m)


def stepped_projection(backend) -> Cells:
    """The projected lstm on a backend that has only cells: one lstm call per step.

    The contract's lstm reads an H-wide state through a (4H, H) w_hh; the projected one reads a
    P-wide state through (4H, P). Padding the state with H − P zeros and w_hh with as many zero
    columns gives W_hh_pad [h; 0] = W_hh h, so the backend's step computes c' and m = o⊙tanh(c')
    exactly as the projected cell does; h' = W_hr m is computed here.
    """
    def padded(params, P, H):
        w_hh = np.concatenate([params.w_hh, np.zeros((params.w_hh.shape[0], H - P), params.w_hh.dtype)], axis=1)
        return Params(params.w_ih, w_hh, params.b_ih, params.b_hh)

    def pad(h, H):
        return np.concatenate([h, np.zeros((h.shape[0], H - h.shape[1]), h.dtype)], axis=1)

    def forward(params, x, h0, c0, training):
        T, B = x.shape[:2]
        P, H = params.w_hr.shape
        step_params = padded(params, P, H)
        hs = np.empty((T, B, P), x.dtype)
        h, c, steps = h0, c0, [] if training else None
        for t in range(T):
            x_t, h_in = x[t:t + 1], pad(h, H)
            result = backend.forward("lstm", step_params, x_t, h_in, c, training=training)
            m = np.asarray(result.h_n)
            if training:
                steps.append((x_t, h_in, c, result, m))
            h, c = m @ params.w_hr.T, np.asarray(result.c_n)
            hs[t] = h
        return SteppedRun(hs, np.array(h, x.dtype), np.array(c, x.dtype), steps)

    def backward(params, x, h0, c0, fwd, dhs, dh_n, dc_n):
        P, H = params.w_hr.shape
        step_params = padded(params, P, H)
        dx = np.zeros_like(x)
        sums = {name: np.zeros_like(getattr(params, name[1:])) for name in ProjectedBackwardResult._fields[3:]}
        dh, dc = dh_n, dc_n
        for t in reversed(range(x.shape[0])):
            x_t, h_in, c_prev, result, m = fwd.steps[t]
            dh = dh + dhs[t]  # h_t feeds the loss and step t+1
            dm = dh @ params.w_hr
            sums["dw_hr"] += dh.T @ m
            no_output_gradient = np.zeros((1,) + dm.shape, x.dtype)  # dh' reaches m as dm, given as dh_n
            grads = backend.backward("lstm", step_params, x_t, h_in, c_prev, result, no_output_gradient, dm, dc)
            dh, dc = np.asarray(grads.dh0)[:, :P], np.asarray(grads.dc0)
            dx[t] = grads.dx[0]
            sums["dw_ih"] += grads.dw_ih
            sums["dw_hh"] += np.asarray(grads.dw_hh)[:, :P]  # the zero columns' gradient belongs to no weight
            sums["db_ih"] += grads.db_ih
            sums["db_hh"] += grads.db_hh
        return ProjectedBackwardResult(dx, np.array(dh, x.dtype), np.array(dc, x.dtype), **sums)

    return Cells(forward, backward)


# ----- lengths: the rows still running, span by span --------------------------------------------------

class Span(NamedTuple):
    """Steps [start, end) of the rows still running then: one call of the cells."""
    start: int
    end: int
    rows: np.ndarray  # (B',) indices into the batch
    x: np.ndarray  # (end − start, B', I)
    h0: np.ndarray  # (B', H_out) where the previous span left these rows
    c0: Optional[np.ndarray]
    fwd: object  # the cells' result (training=True), else None


class DirectionRun(NamedTuple):
    hs: np.ndarray  # (T, B, H_out), zeros past each row's length
    h_n: np.ndarray  # (B, H_out) each row's state at its last step
    c_n: Optional[np.ndarray]
    spans: tuple
    x: np.ndarray  # the input the spans read (the reversed one for the reverse direction)


def run_rows(cells: Cells, params, x, h0, c0, lengths, training) -> DirectionRun:
    """Rows of different lengths, the way a packed sequence runs them: between consecutive lengths,
    one call on the rows still running, from the state where the previous span left them. A row
    that has ended keeps its state (its h_n) and its hs past the end stay zero."""
    h = h0.copy()
    c = None if c0 is None else c0.copy()
    hs = np.zeros(x.shape[:2] + h0.shape[1:], x.dtype)
    spans, start = [], 0
    for end in np.unique(lengths):
        if end == start:  # T = 0: nothing to run
            continue
        rows = np.flatnonzero(lengths >= end)
        span = Span(start, end, rows, x[start:end, rows], h[rows], None if c is None else c[rows], None)
        fwd = cells.forward(params, span.x, span.h0, span.c0, training)
        spans.append(span._replace(fwd=fwd) if training else span)
        hs[start:end, rows] = fwd.hs
        h[rows] = fwd.h_n
        if c is not None:
            c[rows] = fwd.c_n
        start = end
    return DirectionRun(hs, h, c, tuple(spans), x)


def run_rows_backward(cells: Cells, params, run: DirectionRun, dhs, dh_n, dc_n, projected: bool):
    """The spans backwards; a row's gradient enters at its last step (dh_n, dc_n), and dhs past a
    row's length is never read. Returns (dx, dh0, dc0, LayerParamGrads)."""
    dx = np.zeros_like(run.x)
    dh = dh_n.copy()
    dc = None if dc_n is None else dc_n.copy()
    names = LayerParamGrads._fields if projected else LayerParamGrads._fields[:4]
    sums = {name: np.zeros_like(getattr(params, name[1:])) for name in names}
    for span in reversed(run.spans):
        grads = cells.backward(params, span.x, span.h0, span.c0, span.fwd, dhs[span.start:span.end, span.rows],
                               dh[span.rows], None if dc is None else dc[span.rows])
        dx[span.start:span.end, span.rows] = grads.dx
        dh[span.rows] = grads.dh0
        if dc is not None:
            dc[span.rows] = grads.dc0
        for name in names:
            sums[name] += getattr(grads, name)
    return dx, dh, dc, LayerParamGrads(**sums)


# ----- reversal ---------------------------------------------------------------------------------------

def reverse_within_lengths(a, lengths):
    """a (T, B, ...) with each row's first lengths[b] steps in reverse order; the steps past a row's
    length stay where they are. Its own inverse."""
    t = np.arange(a.shape[0])[:, None]  # (T, 1)
    source = np.where(t < lengths, lengths - 1 - t, t)  # (T, B): the step each position reads
    return np.take_along_axis(a, source.reshape(source.shape + (1,) * (a.ndim - 2)), axis=0)


def run_direction(cells, params, x, h0, c0, lengths, *, reverse, training) -> DirectionRun:
    """One direction of one layer; the reverse one starts at each row's own last step."""
    if not reverse:
        return run_rows(cells, params, x, h0, c0, lengths, training)
    run = run_rows(cells, params, reverse_within_lengths(x, lengths), h0, c0, lengths, training)
    return run._replace(hs=reverse_within_lengths(run.hs, lengths))


def run_direction_backward(cells, params, run, dhs, dh_n, dc_n, lengths, *, reverse, projected):
    if not reverse:
        return run_rows_backward(cells, params, run, dhs, dh_n, dc_n, projected)
    dx, dh0, dc0, dparams = run_rows_backward(cells, params, run, reverse_within_lengths(dhs, lengths), dh_n,
                                              dc_n, projected)
    return reverse_within_lengths(dx, lengths), dh0, dc0, dparams


# ----- stacking ---------------------------------------------------------------------------------------

def stack_forward(cells, params, x, h0, c0, shapes: LayerShapes, lengths, training) -> LayerForwardResult:
    """Layer by layer: each direction of layer k reads layer k−1's hs, [forward | reverse]."""
    h_n = np.empty_like(h0)
    c_n = None if c0 is None else np.empty_like(c0)
    runs, layer_input = [], x
    for layer in range(shapes.L):
        outputs = []
        for direction in range(shapes.D):
            k = layer * shapes.D + direction
            run = run_direction(cells, params[k], layer_input, h0[k], None if c0 is None else c0[k], lengths,
                                reverse=direction == 1, training=training)
            h_n[k] = run.h_n
            if c0 is not None:
                c_n[k] = run.c_n
            outputs.append(run.hs)
            runs.append(run)
        layer_input = np.concatenate(outputs, axis=2)  # (T, B, D·H_out)
    return LayerForwardResult(layer_input, h_n, c_n, tuple(runs) if training else None)


def stack_backward(cells, params, fwd: LayerForwardResult, dhs, dh_n, dc_n, shapes: LayerShapes,
                   lengths) -> LayerBackwardResult:
    """Top layer first: the gradient of layer k's input, summed over its directions, is the
    upstream gradient of layer k−1's hs."""
    dh0 = np.empty_like(dh_n)
    dc0 = None if dc_n is None else np.empty_like(dc_n)
    dparams = [None] * len(params)
    d_output = dhs
    for layer in reversed(range(shapes.L)):
        d_input = 0
        for direction in range(shapes.D):
            k = layer * shapes.D + direction
            block = np.ascontiguousarray(d_output[..., direction * shapes.H_out:(direction + 1) * shapes.H_out])
            dx, dh0[k], dc0_k, dparams[k] = run_direction_backward(
                cells, params[k], fwd.runs[k], block, dh_n[k], None if dc_n is None else dc_n[k], lengths,
                reverse=direction == 1, projected=shapes.projected)
            if dc0 is not None:
                dc0[k] = dc0_k
            d_input = d_input + dx
        d_output = d_input
    return LayerBackwardResult(d_output, dh0, dc0, dparams)


# ----- the layer functions, for the reference and for any cell-level backend -----------------------------

class Composition:
    """Layers from cells: stacking, reversal and lengths around ``cells_for(cell, projected)``."""

    def __init__(self, name, cells, cells_for):
        self.name, self.cells, self.cells_for = name, frozenset(cells), cells_for

    def layer_forward(self, cell, params, x, h0, c0=None, *, bidirectional=False, lengths=None, training=True):
        shapes = check_layer_forward_inputs(cell, params, x, h0, c0, bidirectional, lengths,
                                            supported=tuple(sorted(self.cells)))
        return stack_forward(self.cells_for(cell, shapes.projected), params, x, h0, c0, shapes,
                             row_lengths(lengths, shapes.T, shapes.B), training)

    def layer_backward(self, cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n=None, *, bidirectional=False,
                       lengths=None):
        shapes = check_layer_backward_inputs(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n, bidirectional, lengths,
                                             supported=tuple(sorted(self.cells)))
        if getattr(fwd, "runs", None) is None:
            raise ValueError(f"fwd: expected the result of {self.name}'s layer forward(..., training=True), "
                             f"which keeps each direction's run; got {type(fwd).__name__} without runs")
        if cell == "lstm" and dc_n is None:
            dc_n = np.zeros_like(c0)
        return stack_backward(self.cells_for(cell, shapes.projected), params, fwd, dhs, dh_n, dc_n, shapes,
                              row_lengths(lengths, shapes.T, shapes.B))


def _reference_cells_for(cell, projected):
    return PROJECTED_LSTM if projected else cell_calls(cell_backend, cell)


REFERENCE = Composition("reference.layers", CELLS, _reference_cells_for)


def forward(cell, params, x, h0, c0=None, *, bidirectional=False, lengths=None, training=True):
    """Run L layers (D directions each) of ``cell`` over x; torch.nn's ``output, h_n, c_n``.

    Returns hs (T, B, D·H_out), h_n (L·D, B, H_out), c_n (L·D, B, H) or None, and (training=True)
    what backward reads. With lengths, row b runs steps 0..lengths[b]−1 only: its hs are zero
    beyond, its h_n is its state at its last step, and its reverse direction starts there.
    """
    return REFERENCE.layer_forward(cell, params, x, h0, c0, bidirectional=bidirectional, lengths=lengths,
                                   training=training)


def backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n=None, *, bidirectional=False, lengths=None):
    """The gradients of L = Σ dhs⊙hs + Σ dh_n⊙h_n (+ Σ dc_n⊙c_n): dx, dh0, dc0 and dparams, a list
    of LayerParamGrads in params' order. ``fwd`` is forward(..., training=True)'s result."""
    return REFERENCE.layer_backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n, bidirectional=bidirectional,
                                    lengths=lengths)


def composed(backend):
    """Layers for a backend that has only cells: this module's composition, with the backend's
    forward and backward for every span of rows, and stepped_projection for lstm with w_hr.

    Returns an object with ``name``, ``cells``, ``layer_forward`` and ``layer_backward`` (the
    signatures of this module's forward and backward), and ``backend``.
    """
    def cells_for(cell, projected):
        return stepped_projection(backend) if projected else cell_calls(backend, cell)

    composition = Composition(f"{backend.name} (composed)", backend.cells, cells_for)
    return SimpleNamespace(name=composition.name, cells=composition.cells, backend=backend,
                           layer_forward=composition.layer_forward, layer_backward=composition.layer_backward)
