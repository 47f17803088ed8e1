"""jit.cuda's layers: torch.nn.RNN / LSTM / GRU with num_layers, bidirectional and per-row lengths
(a packed sequence), the layer contract of reference.layers (README), on the device.

    layer_forward(cell, params, x, h0, c0=None, *, bidirectional=False, lengths=None, training=True)
    layer_backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n=None, *, bidirectional=False, lengths=None)

Each layer-direction is one call of its time loop over every row at once, on device arrays from
the first layer to the last (no copy to the host between layers):

- forward: one matmul projects every step's input (x W_ihᵀ + b_ih, in time order); then one layer
  step kernel per scan step s (two for gru_classic). The kernels read the rows' lengths, a (B,)
  int32 device array, and each row computes its own time step (jit.cuda.tiles.row_step): s
  forward, length − 1 − s in reverse, so a short row's reverse direction starts at its own last
  step. A row past its length keeps its state, so the last step leaves every row's h_n (c_n) in
  place; the kernel writes each row's output at its time step into the layer's output (T, B, D·H),
  zeros at its padded positions, each direction in its own columns, where the next layer's matmul
  reads it.
- backward, top layer first: BPTT over the scan steps in reverse (a layer step kernel each). A
  padded step passes the state's gradient through and gives da = 0; dhs is added only at a row's
  own steps, so a gradient at a padded position is never read. da of the input side is stored
  at each row's time step, so dW_ih, db_ih and dx are the cells' matmuls over all T·B rows (dx is
  exactly zero at padded positions); the hidden side pairs with the states in step order for
  dW_hh. The two directions' dx are summed into the gradient of the layer below's output.

lstm with a projection (w_hr) is not native: it goes through reference.layers' composition of
jit.cuda's cell calls (reference.layers.composed: a span of rows per call, one lstm call per step
for the projection), on host arrays; correct and slow.

twin: reference.layers (stack_forward, run_direction, run_rows and their backward).
"""
from functools import lru_cache, partial
from typing import Callable, NamedTuple, Optional

import numpy as np

import reference.layers
from reference.contract import CELLS, PARAM_NAMES, Params
from reference.layers import (LayerBackwardResult, LayerParamGrads, ProjectedParams, check_layer_backward_inputs,
                              check_layer_forward_inputs, row_lengths)

from . import elementwise, gru, lstm, rnn, workspace
from .backend import _as_2d, _device_call, _host_finite, _launch_1d, _launch_steps, _matmul, _step_grid
from .device_arrays import ARRAY_TYPES, contiguous_on_device, device_view, is_device_array
from .launch import TILES, blocks, launch, specialized
from .matmul import column_sums
from .tiles import lstm_start_bptt_kernel, start_bptt_kernel

SUPPORTED = tuple(sorted(CELLS))


# ----- results -------------------------------------------------------------------------------------

class DirectionTrace(NamedTuple):
    """What one layer-direction's forward keeps for backward (training), in scan-step order."""
    h_prev: object  # (T, B, H) the state each step reads: h0, then the state after steps 0 … T − 2
    gates: object  # (T, B, G·H) each step's gates (a row's are not written past its length)
    cs: object  # (T, B, H) lstm: the cell state after each step; else None


class LayerTrace(NamedTuple):
    input: object  # (T, B, I_layer) the layer's input on the device: x, or the layer below's output
    directions: tuple  # DirectionTrace per direction


class LayerForward(NamedTuple):
    hs: object  # (T, B, D·H) the top layer's outputs, zeros past each row's length
    h_n: object  # (L·D, B, H) each layer-direction's state at each row's last step
    c_n: object  # (L·D, B, H) lstm, else None
    trace: Optional[tuple]  # training: a LayerTrace per layer, what layer_backward reads; else None


# ----- one direction's forward time loop over rows of different lengths -----------------------------

class _DirectionForward:
    """One layer-direction's forward: xw (T, B, G·H) = x W_ihᵀ + b_ih in time order, h0, c0 (lstm),
    W_hh, b_hh, the rows' lengths and the direction; writes its output (T, B, H) (a column block of
    the layer's output) and h_n, c_n (its slots of the results).

    The step kernels take each state as (first, steps, last) and index it by the scan step s
    themselves (no per-step view made here): step s reads ``first`` (s = 0) or steps[(s − 1) %
    len(steps)], and writes steps[s % len(steps)], or ``last`` at the last step. Training keeps every
    state a step reads (h_kept, for backward: h0's copy, then steps = h_kept[1:]) and every cell state
    (steps = cs, the last of them also ``last``); inference two of each in turn, the last step writing
    the result slot itself. T ≥ 1, B ≥ 1, H ≥ 1.
    """

    def __init__(self, xw, h0, c0, w_hh, b_hh, lengths, reverse, out, h_n, c_n, training):
        self.xw, self.w_hh, self.b_hh, self.lengths, self.reverse, self.out = xw, w_hh, b_hh, lengths, reverse, out
        self.h_n, self.c_n, self.training = h_n, c_n, training
        self.T, self.B, self.GH = xw.shape
        self.H = w_hh.shape[1]
        self.grid, self.block = _step_grid(self.B, self.H)
        if training:  # the trace: backward reads it after this call, so fresh arrays
            self.h_kept = self.fresh(self.T, self.B, self.H)
            _launch_1d(elementwise.copy2d, self.B * self.H, h0, self.h_kept[0])
            self.h_states = (h0, self.h_kept[1:], h_n)
            self.gates = self.fresh(self.T, self.B, self.GH)
            self.cs = self.fresh(self.T, self.B, self.H) if c0 is not None else None
            self.c_states = (c0, self.cs, self.cs[self.T - 1]) if c0 is not None else ()
        else:
            self.h_states = (h0, self.scratch("h steps", 2, self.B, self.H), h_n)
            self.c_states = (c0, self.scratch("c steps", 2, self.B, self.H), c_n) if c0 is not None else ()
            self.gates = self.scratch("gates", 1, self.B, self.GH)
            self.cs = None

    def fresh(self, *shape):
        return workspace.fresh(shape, self.xw.dtype)

    def scratch(self, role, *shape):
        """The calling thread's array for role (jit.cuda.workspace): each layer-direction's run uses it
        after the one before has, in stream order."""
        return workspace.scratch(f"layers.{role}", shape, self.xw.dtype)

    def run(self, *kernels_and_args):
        """Each (kernel, args) launched once a scan step, in order; args start with xw, lengths, s,
        reverse (s set at each step)."""
        _launch_steps(self.grid, self.block, range(self.T), *kernels_and_args, at=2)
        return self.trace()

    def step_args(self):
        """The arguments every layer step kernel starts with: xw, lengths, s (set at each step), reverse."""
        return [self.xw, self.lengths, 0, self.reverse]

    def trace(self):
        if not self.training:
            return None
        if self.cs is not None:  # the last cell state is the result's: a copy, results never alias the trace
            _launch_1d(elementwise.copy2d, self.B * self.H, self.cs[self.T - 1], self.c_n)
        return DirectionTrace(self.h_kept, self.gates, self.cs)


def _rnn_forward(f: _DirectionForward, relu):
    """rnn_layer_step_forward_kernel once a scan step."""
    return f.run((rnn.rnn_layer_step_forward_kernel,
                  f.step_args() + [*f.h_states, f.w_hh, f.b_hh, relu, f.gates, f.out]))


def _lstm_forward(f: _DirectionForward):
    """lstm_layer_step_forward_kernel once a scan step."""
    return f.run((lstm.lstm_layer_step_forward_kernel,
                  f.step_args() + [*f.h_states, *f.c_states, f.w_hh, f.b_hh, f.gates, f.out]))


def _gru_forward(f: _DirectionForward):
    """gru_layer_step_forward_kernel once a scan step."""
    return f.run((gru.gru_layer_step_forward_kernel, f.step_args() + [*f.h_states, f.w_hh, f.b_hh, f.gates, f.out]))


def _gru_classic_forward(f: _DirectionForward):
    """Two kernels a scan step, rz then n (r⊙h of every unit before W_hn (r⊙h))."""
    rh = f.scratch("rh", f.B, f.H)
    h_first, h_steps, _ = f.h_states
    return f.run((gru.gru_classic_layer_step_forward_rz_kernel,
                  f.step_args() + [h_first, h_steps, f.w_hh, f.b_hh, f.gates, rh]),
                 (gru.gru_classic_layer_step_forward_n_kernel,
                  f.step_args() + [*f.h_states, rh, f.w_hh, f.b_hh, f.gates, f.out]))


# ----- one direction's BPTT ------------------------------------------------------------------------

class _DirectionBackward:
    """One layer-direction's BPTT: what its steps read (dh_n, dc_n, dhs (T, B, H) in time order, the
    trace, W_hh, lengths, direction) and write (da_x (T, B, G·H) in time order; dh0, dc0, the result
    slots, which the last step (s = 0) writes itself: the two buffers take turns so that it does)."""

    def __init__(self, trace: DirectionTrace, dh_n, dc_n, dhs, c0, w_hh, b_hh, lengths, reverse, dh0, dc0):
        self.trace, self.dh_n, self.dc_n, self.dhs, self.c0 = trace, dh_n, dc_n, dhs, c0
        self.w_hh, self.b_hh, self.lengths, self.reverse = w_hh, b_hh, lengths, reverse
        self.T, self.B, self.H = trace.h_prev.shape
        self.GH = trace.gates.shape[2]
        self.dtype = trace.gates.dtype
        self.grid, self.block = _step_grid(self.B, self.H)
        self.da_x = self.scratch("da_x", self.T, self.B, self.GH)
        self.dh_pair = (dh0, self.scratch("dh other", self.B, self.H))
        self.dc_pair = (dc0, self.scratch("dc other", self.B, self.H)) if dc0 is not None else None

    def scratch(self, role, *shape):
        """The calling thread's array for role (jit.cuda.workspace): each layer-direction's BPTT and
        weight gradients use it after the one before has, in stream order."""
        return workspace.scratch(f"layers.backward.{role}", shape, self.dtype)

    def dh_in(self, s):
        """∂L/∂h after scan step s: BPTT's start for the last step, else what step s + 1 wrote."""
        return self.dh_pair[(s + 1) % 2]

    def dh_out(self, s):
        return self.dh_pair[s % 2]

    def dc_in(self, s):
        return self.dc_pair[(s + 1) % 2]

    def dc_out(self, s):
        return self.dc_pair[s % 2]

    def start(self):
        """∂L/∂h (and ∂L/∂c) after the last scan step, each row's dhs added at its own last step only."""
        tiles_grid = (blocks(self.H, TILES.units) * blocks(self.B, TILES.rows),)
        if self.dc_pair is None:
            launch(start_bptt_kernel, tiles_grid, self.block, self.dh_n, self.dhs, self.lengths, self.reverse,
                   self.dh_in(self.T - 1))
        else:
            launch(lstm_start_bptt_kernel, tiles_grid, self.block, self.dh_n, self.dhs, self.lengths, self.reverse,
                   self.dh_in(self.T - 1), self.dh_n if self.dc_n is None else self.dc_n, self.dc_n is not None,
                   self.dc_in(self.T - 1))

    def hidden_side(self):
        """∂L/∂a of the hidden side in step order, for lstm and rnn, whose values are da_x's: da_x itself
        forward (step order is time order), a second array in reverse."""
        return self.scratch("da_h", self.T, self.B, self.GH) if self.reverse else self.da_x

    def step_args(self):
        """The arguments every layer step kernel has after its per-step arrays: dhs, lengths, s (set at
        each step), reverse."""
        return self.dhs, self.lengths, None, self.reverse


class _DirectionBPTT(NamedTuple):
    """What a cell's BPTT leaves for the weight gradients, besides da_x (as jit.cuda.backend's _BPTT)."""
    da_h: object  # (T, B, G·H) ∂L/∂a of the hidden side, in step order
    hidden_inputs: tuple  # (rows, input (T, B, H)) pairs: dW_hh[rows] = da_h[:, rows]ᵀ input, summed over steps


def _bptt_steps(b: _DirectionBackward, *kernels_and_args):
    """Each (kernel, args, slots) launched once a scan step, in reverse, in order. ``slots`` names
    where the step's values go in args: "s", and "dh_in", "dh_out", "dc_in", "dc_out" (the pair
    buffers, whole arrays taking turns); everything else is the same at every step, so each kernel
    is specialized once, and no per-step view is made (the kernels index by s)."""
    picks = {"s": lambda s: s, "dh_in": b.dh_in, "dh_out": b.dh_out, "dc_in": b.dc_in, "dc_out": b.dc_out}
    prepared = []
    for kernel, args, slots in kernels_and_args:
        for name, at in slots.items():
            args[at] = picks[name](b.T - 1)
        prepared.append((specialized(kernel, *args), args, [(at, picks[name]) for name, at in slots.items()]))
    for s in reversed(range(b.T)):
        for kernel, args, slots in prepared:
            for at, pick in slots:
                args[at] = pick(s)
            launch(kernel, b.grid, b.block, *args)


def _rnn_backward(b: _DirectionBackward, relu):
    da_h = b.hidden_side()
    b.start()
    _bptt_steps(b, (rnn.rnn_layer_step_backward_kernel,
                    [None, b.trace.gates, b.w_hh, relu, *b.step_args(), b.da_x, da_h, None],
                    {"dh_in": 0, "s": 6, "dh_out": 10}))
    return _DirectionBPTT(da_h, ((slice(None), b.trace.h_prev),))


def _lstm_backward(b: _DirectionBackward):
    da_h = b.hidden_side()
    b.start()
    _bptt_steps(b, (lstm.lstm_layer_step_backward_kernel,
                    [None, None, b.trace.gates, b.c0, b.trace.cs, b.w_hh, *b.step_args(), b.da_x, da_h, None, None],
                    {"dh_in": 0, "dc_in": 1, "s": 8, "dh_out": 12, "dc_out": 13}))
    return _DirectionBPTT(da_h, ((slice(None), b.trace.h_prev),))


def _gru_backward(b: _DirectionBackward):
    """After one matmul for W_hn h + b_hn of every step (r scaled it in forward, which does not keep it)."""
    H = b.H
    da_h = b.scratch("da_h", b.T, b.B, 3 * H)
    hn_all = b.scratch("hn_all", b.T, b.B, H)
    _matmul(_as_2d(b.trace.h_prev), b.w_hh[2 * H:], _as_2d(hn_all), trans_b=True, bias=b.b_hh[2 * H:])
    b.start()
    _bptt_steps(b, (gru.gru_layer_step_backward_kernel,
                    [None, b.trace.gates, b.trace.h_prev, hn_all, b.w_hh, *b.step_args(), b.da_x, da_h, None],
                    {"dh_in": 0, "s": 7, "dh_out": 11}))
    return _DirectionBPTT(da_h, ((slice(None), b.trace.h_prev),))


def _gru_classic_backward(b: _DirectionBackward):
    """Two kernels a scan step, n then rz; W_hn's gradient takes r⊙h, which the n half stores."""
    H = b.H
    da_h = b.scratch("da_h", b.T, b.B, 3 * H)
    rh_all = b.scratch("rh_all", b.T, b.B, H)
    d_rh = b.scratch("d_rh", b.B, H)
    b.start()
    _bptt_steps(b, (gru.gru_classic_layer_step_backward_n_kernel,
                    [None, b.trace.gates, b.trace.h_prev, b.w_hh, b.lengths, None, b.reverse, b.da_x, da_h, d_rh,
                     rh_all],
                    {"dh_in": 0, "s": 5}),
                (gru.gru_classic_layer_step_backward_rz_kernel,
                 [None, b.trace.gates, b.trace.h_prev, d_rh, b.w_hh, *b.step_args(), b.da_x, da_h, None],
                 {"dh_in": 0, "s": 7, "dh_out": 11}))
    return _DirectionBPTT(da_h, ((slice(0, 2 * H), b.trace.h_prev), (slice(2 * H, 3 * H), rh_all)))


class LayerTimeLoops(NamedTuple):
    """A cell's layer time loops on the device.

    forward(_DirectionForward) -> DirectionTrace or None (inference)
    backward(_DirectionBackward) -> _DirectionBPTT
    """
    forward: Callable
    backward: Callable


#: Each cell's layer time loops: the twin of jit.cuda.backend.TIME_LOOPS for rows of different lengths.
LAYER_TIME_LOOPS = {
    "rnn_tanh": LayerTimeLoops(partial(_rnn_forward, relu=False), partial(_rnn_backward, relu=False)),
    "rnn_relu": LayerTimeLoops(partial(_rnn_forward, relu=True), partial(_rnn_backward, relu=True)),
    "lstm": LayerTimeLoops(_lstm_forward, _lstm_backward),
    "gru": LayerTimeLoops(_gru_forward, _gru_backward),
    "gru_classic": LayerTimeLoops(_gru_classic_forward, _gru_classic_backward),
}


# ----- validation, and where the data lives -----------------------------------------------------------

def _params_view(p):
    """One layer-direction's parameters with foreign device arrays viewed as numba ones (w_hr kept);
    p itself if it lacks a field, so that the contract's check reports it."""
    if not all(hasattr(p, name) for name in PARAM_NAMES):
        return p
    if getattr(p, "w_hr", None) is not None:
        return ProjectedParams(*(device_view(getattr(p, name)) for name in ProjectedParams._fields))
    return Params(*(device_view(getattr(p, name)) for name in PARAM_NAMES))


def _params_list_view(params):
    """Each layer-direction's parameters viewed (_params_view); anything but a list or tuple of them
    (one cell's parameters, say) as it is, for the contract's check to name."""
    if hasattr(params, "w_ih") or not isinstance(params, (list, tuple)):
        return params
    return [_params_view(p) for p in params]


def _host_lengths(lengths):
    """lengths as the contract checks them: a device array is read back (B integers)."""
    return lengths.copy_to_host() if lengths is not None and is_device_array(lengths) else lengths


def _checked_arrays(params, arrays):
    """The arrays whose finiteness the layer contract checks: the arguments and every parameter."""
    found = [a for a in arrays if a is not None]
    for p in params:
        found += [getattr(p, name) for name in type(p)._fields]
    return found


def _to_host(a):
    """A NumPy array of a's values (an empty one made here: a GPU copies no empty device array)."""
    if a is None:
        return None
    if not is_device_array(a):
        return np.asarray(a)
    return np.empty(a.shape, a.dtype) if a.size == 0 else a.copy_to_host()


def _to_device_result(a):
    return None if a is None else workspace.fresh_copy(a)


def _host_params(params):
    return [type(p)(*(_to_host(a) for a in p)) for p in params]


@lru_cache(maxsize=1)
def _composed():
    """reference.layers' composition over jit.cuda's cell calls: lstm with a projection."""
    from . import backend
    return reference.layers.composed(backend)


# ----- layer_forward --------------------------------------------------------------------------------

def layer_forward(cell, params, x, h0, c0=None, *, bidirectional=False, lengths=None, training=True):
    """L layers (D directions each) of ``cell`` over x; torch.nn's ``output, h_n, c_n``, as
    reference.layers.forward. NumPy arrays in give NumPy arrays out; device arrays in, device arrays
    out. With training=True the result also keeps, on the device, what layer_backward reads."""
    on_device = is_device_array(x)
    params = _params_list_view(params)
    x, h0, c0 = device_view(x), device_view(h0), device_view(c0)
    lengths = _host_lengths(lengths)
    check = partial(check_layer_forward_inputs, cell, params, x, h0, c0, bidirectional, lengths, supported=SUPPORTED,
                    array_types=ARRAY_TYPES)
    shapes = check(isfinite=_host_finite)
    where = f"layer_forward({cell!r})"
    T, B, _, H, _, _, _, _, _, _ = shapes
    with _device_call(_checked_arrays(params, (x, h0, c0))) as finiteness:
        if shapes.projected or T == 0 or B == 0 or H == 0:  # answered on the host: the device inputs' check first
            finiteness.finish(where, check)
            if shapes.projected:
                return _projected_forward(cell, params, x, h0, c0, bidirectional, lengths, training, on_device)
            return _placed(_forward_without_steps(shapes, _to_host(h0), _to_host(c0), training), on_device)
        result = _layers_forward(cell, params, x, h0, c0, lengths, shapes, training, on_device)
        finiteness.finish(where, check)
    return result if on_device else result._replace(hs=result.hs.copy_to_host(), h_n=result.h_n.copy_to_host(),
                                                    c_n=None if result.c_n is None else result.c_n.copy_to_host())


def _layers_forward(cell, params, x, h0, c0, lengths, shapes, training, on_device) -> LayerForward:
    """layer_forward's launches, T, B, H ≥ 1. Where the arrays live (jit.cuda.workspace): what the
    result keeps on the device (its trace, and everything when the caller's arrays are on the device)
    is fresh; the rest, the copies of NumPy inputs and the outputs copied back, the calling thread's
    scratch arrays. Layer outputs alternate between two scratch arrays in inference."""
    T, B, _, H, _, G, L, D, _, dtype = shapes

    def result(role, *shape):
        return workspace.fresh(shape, dtype) if on_device else workspace.scratch(f"layers.{role}", shape, dtype)

    weights = [Params(*(workspace.upload(f"layers.params[{k}].{name}", getattr(p, name)) for name in PARAM_NAMES))
               for k, p in enumerate(params)]
    if training and isinstance(x, np.ndarray):  # the trace keeps the bottom layer's input
        x = workspace.fresh_copy(x)
    x = contiguous_on_device(workspace.upload("layers.x", x))
    h0, c0 = workspace.upload("layers.h0", h0), workspace.upload("layers.c0", c0)
    rows = workspace.upload("layers.lengths", row_lengths(lengths, T, B).astype(np.int32))
    h_n = result("h_n", L * D, B, H)
    c_n = result("c_n", L * D, B, H) if c0 is not None else None
    layer_input, traces = x, []
    for layer in range(L):
        # zeros past each row's length: every (t, b) written. Below the top, the next layer's input,
        # kept by the trace in training.
        if layer == L - 1:
            output = result("hs", T, B, D * H)
        elif training:
            output = workspace.fresh((T, B, D * H), dtype)
        else:
            output = workspace.scratch(f"layers.output{layer % 2}", (T, B, D * H), dtype)
        directions = []
        for direction in range(D):
            k = layer * D + direction
            p = weights[k]
            xw = workspace.scratch("layers.xw", (T, B, G * H), dtype)  # every step's input projection, time order
            _matmul(_as_2d(layer_input), p.w_ih, _as_2d(xw), trans_b=True, bias=p.b_ih)
            run = _DirectionForward(xw, h0[k], None if c0 is None else c0[k], p.w_hh, p.b_hh, rows, direction == 1,
                                    output[:, :, direction * H:(direction + 1) * H], h_n[k],
                                    None if c_n is None else c_n[k], training)
            directions.append(LAYER_TIME_LOOPS[cell].forward(run))
        if training:
            traces.append(LayerTrace(layer_input, tuple(directions)))
        layer_input = output
    return LayerForward(layer_input, h_n, c_n, tuple(traces) if training else None)


# ----- layer_backward -------------------------------------------------------------------------------

def layer_backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n=None, *, bidirectional=False, lengths=None):
    """The gradients of L = Σ dhs⊙hs + Σ dh_n⊙h_n (+ Σ dc_n⊙c_n), as reference.layers.backward: dx,
    dh0, dc0 and dparams (LayerParamGrads in params' order). ``fwd`` is layer_forward(...,
    training=True)'s result for the same arguments."""
    on_device = is_device_array(x)
    params = _params_list_view(params)
    x, h0, c0 = device_view(x), device_view(h0), device_view(c0)
    dhs, dh_n, dc_n = device_view(dhs), device_view(dh_n), device_view(dc_n)
    lengths = _host_lengths(lengths)
    check = partial(check_layer_backward_inputs, cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n, bidirectional,
                    lengths, supported=SUPPORTED, array_types=ARRAY_TYPES)
    shapes = check(isfinite=_host_finite)
    if not shapes.projected and getattr(fwd, "trace", None) is None:
        raise ValueError(f"fwd: expected the result of jit.cuda's layer_forward(..., training=True), which keeps "
                         f"what backward reads; got {type(fwd).__name__} without a trace")
    where = f"layer_backward({cell!r})"
    T, B, _, H, _, _, _, _, _, _ = shapes
    with _device_call(_checked_arrays(params, (x, h0, c0, dhs, dh_n, dc_n))) as finiteness:
        if shapes.projected or T == 0 or B == 0 or H == 0:  # answered on the host: the device inputs' check first
            finiteness.finish(where, check)
            if shapes.projected:
                return _projected_backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n, bidirectional, lengths,
                                           on_device)
            result = _backward_without_steps(shapes, params, _to_host(dh_n), _to_host(dc_n), c0 is not None)
            return _placed_grads(result, on_device)
        result = _layers_backward(cell, params, c0, fwd, dhs, dh_n, dc_n, lengths, shapes, on_device)
        finiteness.finish(where, check)
    return result if on_device else _grads_to_host(result)


def _layers_backward(cell, params, c0, fwd, dhs, dh_n, dc_n, lengths, shapes, on_device) -> LayerBackwardResult:
    """layer_backward's launches, T, B, H ≥ 1; arrays placed as in _layers_forward. The gradient of a
    layer's input alternates between two scratch arrays (the layer above's is read meanwhile); the
    bottom layer's is the result dx."""
    T, B, _, H, _, G, L, D, _, dtype = shapes

    def result(role, *shape):
        return workspace.fresh(shape, dtype) if on_device else workspace.scratch(f"layers.backward.{role}", shape,
                                                                                 dtype)

    weights = [Params(*(workspace.upload(f"layers.params[{k}].{name}", getattr(p, name)) for name in PARAM_NAMES))
               for k, p in enumerate(params)]
    c0, dhs = workspace.upload("layers.c0", c0), workspace.upload("layers.dhs", dhs)
    dh_n, dc_n = workspace.upload("layers.dh_n", dh_n), workspace.upload("layers.dc_n", dc_n)
    rows = workspace.upload("layers.lengths", row_lengths(lengths, T, B).astype(np.int32))
    dh0 = result("dh0", L * D, B, H)
    dc0 = result("dc0", L * D, B, H) if c0 is not None else None
    dparams = [None] * len(params)
    d_output = dhs  # (T, B, D·H): ∂L/∂ of the layer's output, the top layer's from the caller
    for layer in reversed(range(L)):
        trace = fwd.trace[layer]
        layer_input = trace.input
        if layer == 0:
            d_input = result("dx", *layer_input.shape)
        else:
            d_input = workspace.scratch(f"layers.backward.d_output{layer % 2}", layer_input.shape, dtype)
        for direction in range(D):
            k = layer * D + direction
            p = weights[k]
            run = _DirectionBackward(trace.directions[direction], dh_n[k], None if dc_n is None else dc_n[k],
                                     d_output[:, :, direction * H:(direction + 1) * H], None if c0 is None else c0[k],
                                     p.w_hh, p.b_hh, rows, direction == 1, dh0[k], None if dc0 is None else dc0[k])
            bptt = LAYER_TIME_LOOPS[cell].backward(run)
            dparams[k] = _weight_gradients(run, bptt, p, layer_input, result, k)
            if direction == 0:
                _matmul(_as_2d(run.da_x), p.w_ih, _as_2d(d_input))
            else:  # the layer's input feeds both directions: their gradients add
                dx = workspace.scratch("layers.backward.dx reverse", layer_input.shape, dtype)
                _matmul(_as_2d(run.da_x), p.w_ih, _as_2d(dx))
                _launch_1d(elementwise.add2d, dx.size, _as_2d(d_input), _as_2d(dx), _as_2d(d_input))
        d_output = d_input
    return LayerBackwardResult(d_output, dh0, dc0, dparams)


def _weight_gradients(run: _DirectionBackward, bptt: _DirectionBPTT, p, layer_input, result, k) -> LayerParamGrads:
    """dW_ih, dW_hh, db_ih, db_hh over all T·B rows at once (as jit.cuda.backend.backward), into the
    result arrays of layer-direction k."""
    da_x2, da_h2 = _as_2d(run.da_x), _as_2d(bptt.da_h)
    dw_ih = result(f"params[{k}].dw_ih", *p.w_ih.shape)
    _matmul(da_x2, _as_2d(layer_input), dw_ih, trans_a=True)
    dw_hh = result(f"params[{k}].dw_hh", *p.w_hh.shape)
    for rows, inputs in bptt.hidden_inputs:
        _matmul(da_h2[:, rows], _as_2d(inputs), dw_hh[rows], trans_a=True)
    db_ih = result(f"params[{k}].db_ih", *p.b_ih.shape)
    _launch_1d(column_sums, db_ih.size, da_x2, db_ih)
    db_hh = result(f"params[{k}].db_hh", *p.b_hh.shape)
    _launch_1d(column_sums, db_hh.size, da_h2, db_hh)
    return LayerParamGrads(dw_ih, dw_hh, db_ih, db_hh)


def _grads_to_host(result: LayerBackwardResult) -> LayerBackwardResult:
    def host(a):
        return None if a is None else a.copy_to_host()
    return LayerBackwardResult(host(result.dx), host(result.dh0), host(result.dc0),
                               [LayerParamGrads(*(host(a) for a in g)) for g in result.dparams])


# ----- no steps, rows or units; projections -----------------------------------------------------------
# Answered on the host before any kernel: a GPU cannot index an empty device array (jit.cuda.backend).

def _forward_without_steps(shapes, h0, c0, training) -> LayerForward:
    """T = 0: each state as it came in; B = 0 or H = 0: results with no elements."""
    T, B, _, H, _, _, L, D, _, dtype = shapes
    return LayerForward(np.zeros((T, B, D * H), dtype), h0.copy(), None if c0 is None else c0.copy(),
                        () if training else None)


def _backward_without_steps(shapes, params, dh_n, dc_n, lstm_cell) -> LayerBackwardResult:
    """T = 0: the state gradients pass through; no step, row or unit: every weight gradient is a sum
    over nothing, and so is dx."""
    T, B, I, H, _, _, L, D, _, dtype = shapes
    dc0 = (np.zeros_like(dh_n) if dc_n is None else dc_n.copy()) if lstm_cell else None
    dparams = [LayerParamGrads(*(np.zeros(getattr(p, name).shape, dtype) for name in PARAM_NAMES)) for p in params]
    return LayerBackwardResult(np.zeros((T, B, I), dtype), dh_n.copy(), dc0, dparams)


def _placed(result: LayerForward, on_device) -> LayerForward:
    if not on_device:
        return result
    return result._replace(hs=_to_device_result(result.hs), h_n=_to_device_result(result.h_n),
                           c_n=_to_device_result(result.c_n))


def _placed_grads(result: LayerBackwardResult, on_device) -> LayerBackwardResult:
    if not on_device:
        return result
    return LayerBackwardResult(_to_device_result(result.dx), _to_device_result(result.dh0),
                               _to_device_result(result.dc0),
                               [type(g)(*(_to_device_result(a) for a in g)) for g in result.dparams])


def _projected_forward(cell, params, x, h0, c0, bidirectional, lengths, training, on_device):
    """lstm with w_hr: reference.layers' composition of jit.cuda's cells, on host arrays."""
    result = _composed().layer_forward(cell, _host_params(params), _to_host(x), _to_host(h0), _to_host(c0),
                                       bidirectional=bidirectional, lengths=lengths, training=training)
    if not on_device:
        return result
    return result._replace(hs=_to_device_result(result.hs), h_n=_to_device_result(result.h_n),
                           c_n=_to_device_result(result.c_n))


def _projected_backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n, bidirectional, lengths, on_device):
    result = _composed().layer_backward(cell, _host_params(params), _to_host(x), _to_host(h0), _to_host(c0), fwd,
                                        _to_host(dhs), _to_host(dh_n), _to_host(dc_n), bidirectional=bidirectional,
                                        lengths=lengths)
    return _placed_grads(result, on_device)
