"""The jit.cuda backend: the contract's forward and backward on the GPU, step for step like reference.backend.

This module is itself a backend (``name``, ``cells``, ``forward``, ``backward``, ``available()``, and
the layer contract's ``layer_forward``, ``layer_backward`` from jit.cuda.layers).
Forward projects every step's input with one matmul, then runs the cell's time loop. Backward
rebuilds h_{t−1} for every t with one copy, runs BPTT's time loop, then forms the weight gradients
and dx with matmuls over all T·B rows. Each cell's time loops (``TIME_LOOPS``, the twin of
reference.backend.STEPS) launch one fused kernel per step (two for gru_classic), or with
``persistent`` set one cooperative kernel for all steps: the same bits. Inputs are validated by
reference.contract before anything runs; one kernel checks the finiteness of every device input.
"""
import os
from functools import partial
from types import SimpleNamespace
from typing import Callable, NamedTuple

import numpy as np
from numba import cuda

from reference.contract import (CELLS, PARAM_NAMES, BackwardResult, ForwardResult, check_backward_inputs,
                                check_forward_inputs)

from . import elementwise, gru, lstm, rnn
from .device_arrays import (ARRAY_TYPES, DeviceArray, contiguous_on_device, device_view, is_device_array,
                            params_view, to_device, to_host)
from .launch import SIMULATOR, TILES, LaunchError, blocks, cooperative_grid_limit, launch, synchronize
from .matmul import column_sums, matmul

name = "jit.cuda"
cells = frozenset(CELLS)

#: Optional part of the contract for slow backends: the largest T, B, I, H the property suite
#: should draw. Under the simulator every thread is a Python thread, so shapes stay tiny (still
#: past the simulator's tiles: see jit.cuda.launch); on a GPU there is no limit.
max_test_sizes = {"T": 4, "B": 3, "I": 5, "H": 7} if SIMULATOR else None
#: And at most this many Hypothesis examples per property under the simulator: 8 keep the suite
#: against jit.cuda under 3 minutes on the 2-core CI machine (the 7th and 8th examples cost ~0.6 s
#: each, a call near the size limits). jit/cuda/tests/test_jit_cuda.py covers the tile edges.
max_test_examples = 8 if SIMULATOR else None
#: True when the kernels run on the CUDA simulator: results are exact, timings mean nothing
#: (reports.backends leaves such a backend out of every benchmark).
simulated = SIMULATOR

#: Each time loop, forward and backward, as one cooperative launch over all steps
#: (``*_forward_persistent_kernel``, ``*_backward_persistent_kernel``) instead of one launch per
#: step. Off by default: the per-step path is the one checked on a GPU. Set by
#: CELLBENCH_CUDA_PERSISTENT=1, or assign it.
persistent = os.environ.get("CELLBENCH_CUDA_PERSISTENT", "") not in ("", "0")


def available() -> bool:
    """True when kernels can run here: a CUDA GPU with its driver, or the CUDA simulator."""
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver install: not usable, and not this backend's error
        return False


# ----- validation ------------------------------------------------------------------------------------

def _finiteness(named_arrays):
    """{id(a): all finite} for every array: NumPy's check on host arrays, one kernel launch for all
    device arrays together (one block row per array) and one copy back."""
    found = {}
    on_device = [a for _, a in named_arrays if a is not None and isinstance(a, DeviceArray)]
    for _, a in named_arrays:
        if isinstance(a, np.ndarray):
            found[id(a)] = bool(np.isfinite(a).all())
    if on_device:
        flats = tuple(a.reshape(a.size) if a.is_c_contiguous() else cuda.to_device(a.copy_to_host().ravel())
                      for a in on_device)
        counts = cuda.to_device(np.zeros(len(flats), np.int64))
        longest = max(f.size for f in flats)
        grid = (min(blocks(longest, TILES.threads_1d), TILES.blocks_1d), len(flats))
        launch(elementwise.count_nonfinite, grid, (TILES.threads_1d,), flats, counts)
        for a, bad in zip(on_device, counts.copy_to_host()):
            found[id(a)] = bad == 0
    return found


def _validate(check, cell, params, arrays, **named):
    """Run a contract check twice: first for types and shapes, then with every array's finiteness,
    computed in one batch (a device array's finiteness costs a kernel and a copy back)."""
    check(cell, params, *arrays, **named, array_types=ARRAY_TYPES, isfinite=lambda a: True)
    pnames = [(p, getattr(params, p)) for p in PARAM_NAMES]
    finite = _finiteness(pnames + [(str(i), a) for i, a in enumerate(arrays) if hasattr(a, "dtype")])
    return check(cell, params, *arrays, **named, array_types=ARRAY_TYPES, isfinite=lambda a: finite[id(a)])


# ----- launches every cell shares --------------------------------------------------------------------

def _launch_1d(kernel, n, *args):
    """Launch a grid-stride kernel over n items."""
    launch(kernel, (min(blocks(n, TILES.threads_1d), TILES.blocks_1d),), (TILES.threads_1d,), *args)


def _copy(src):
    """A fresh contiguous device copy of a 2-D device array."""
    dst = cuda.device_array(src.shape, src.dtype)
    _launch_1d(elementwise.copy2d, dst.size, src, dst)
    return dst


def _zeros(shape, dtype):
    dst = cuda.device_array(shape, dtype)
    _launch_1d(elementwise.fill2d, dst.size, dst, dtype.type(0))
    return dst


_UNUSED_BIAS = {}


def _matmul(a, b, c, *, trans_a=False, trans_b=False, bias=None):
    """c = op(a) @ op(b) (+ bias); a, b, c 2-D device arrays, c (M, N)."""
    use_bias = bias is not None
    if not use_bias:  # the kernel's bias argument still needs an array of the dtype; it is not read
        bias = _UNUSED_BIAS.get(c.dtype)
        if bias is None:
            bias = _UNUSED_BIAS[c.dtype] = cuda.device_array(1, c.dtype)
    tile = TILES.matmul * TILES.matmul_work
    launch(matmul, (blocks(c.shape[1], tile), blocks(c.shape[0], tile)), (TILES.matmul, TILES.matmul),
           a, b, c, bias, trans_a, trans_b, use_bias)


def _step_grid(B, H):
    """Step kernels: threadIdx.x over hidden units (or columns of ∂L/∂h), threadIdx.y over batch rows."""
    return (blocks(H, TILES.units), blocks(B, TILES.rows)), (TILES.units, TILES.rows)


def _cooperative_launch(kernel, B, H, *args):
    """Launch a persistent kernel on a 1-D grid: a block per (units × rows) tile of a step, or as many
    as can be resident at once (a cooperative launch needs them all resident); the kernel walks the
    remaining tiles itself."""
    block = (TILES.units, TILES.rows)
    tiles = blocks(H, TILES.units) * blocks(B, TILES.rows)
    resident = cooperative_grid_limit(kernel, block, *args)
    if resident < 1:  # launch() would skip the empty grid, and no result would be written
        raise LaunchError(f"jit.cuda: {kernel.py_func.__name__}: not one block of {block} threads can be "
                          f"resident for a cooperative launch")
    launch(kernel, (min(tiles, resident),), block, *args)


def _as_2d(a3):
    """(T, B, N) contiguous device array -> (T·B, N) view."""
    T, B, N = a3.shape
    return a3.reshape(T * B, N)


# ----- forward -----------------------------------------------------------------------------------------

def forward(cell, params, x, h0, c0=None, *, training=True):
    """Run the cell over x (T, B, I) from h0 (and c0 for lstm); see reference.contract."""
    on_device = is_device_array(x)
    params = params_view(params)
    x, h0, c0 = device_view(x), device_view(h0), device_view(c0)
    T, B, I, H, G, dtype = _validate(check_forward_inputs, cell, params, (x, h0, c0))
    if B == 0 or H == 0:
        result = _forward_without_rows_or_units(cell, T, B, H, G, dtype, training)
        return result if on_device else to_host(result)
    w_ih, w_hh, b_ih, b_hh = (to_device(getattr(params, p)) for p in PARAM_NAMES)
    x, h0, c0 = to_device(x), to_device(h0), to_device(c0)
    # The input projection of every step at once: xw = x W_ihᵀ + b_ih, (T·B, G·H).
    xw = cuda.device_array((T, B, G * H), dtype)
    _matmul(contiguous_on_device(x).reshape(T * B, I), w_ih, _as_2d(xw), trans_b=True, bias=b_ih)
    result = TIME_LOOPS[cell].forward(_ForwardLoop(xw, h0, c0, w_hh, b_hh, training))
    synchronize(f"forward({cell!r})")
    return result if on_device else to_host(result)


class _ForwardLoop:
    """One forward call's time loop: xw (T, B, G·H) = x W_ihᵀ + b_ih of every step, h0, c0 (lstm),
    W_hh, b_hh; whether it keeps the gates (training), and whether it is one persistent launch."""

    def __init__(self, xw, h0, c0, w_hh, b_hh, training):
        self.xw, self.h0, self.c0, self.w_hh, self.b_hh, self.training = xw, h0, c0, w_hh, b_hh, training
        self.T, self.B, self.GH = xw.shape
        self.H = w_hh.shape[1]
        self.persistent = persistent and self.T > 0
        self.grid, self.block = _step_grid(self.B, self.H)

    def empty(self, *shape):
        return cuda.device_array(shape, self.xw.dtype)

    def gates(self):
        """The gates (T, B, G·H) training keeps; in inference one step's scratch (1, B, G·H)."""
        return self.empty(self.T if self.training else 1, self.B, self.GH)

    def persistent_outputs(self):
        """hs_ext (T + 1, B, H), which holds h0 then h_1 … h_T; h_n; the gates."""
        return self.empty(self.T + 1, self.B, self.H), self.empty(self.B, self.H), self.gates()

    def result(self, hs, h_n, gates, c_n=None, cs=None):
        return ForwardResult(hs, h_n, c_n, cs, gates if self.training else None)


def _rnn_forward(f: _ForwardLoop, relu):
    """rnn_tanh or (relu) rnn_relu: rnn_step_forward_kernel once a step, or rnn_forward_persistent_kernel."""
    if f.persistent:
        hs_ext, h_n, gates = f.persistent_outputs()
        _cooperative_launch(rnn.rnn_forward_persistent_kernel, f.B, f.H, f.xw, f.h0, hs_ext, f.w_hh, f.b_hh, relu,
                            gates, h_n)
        return f.result(hs_ext[1:], h_n, gates)
    hs = f.empty(f.T, f.B, f.H)
    gates = f.gates() if f.training else None  # inference: rnn's one "gate" is h' itself
    h_prev = f.h0
    for t in range(f.T):
        launch(rnn.rnn_step_forward_kernel, f.grid, f.block, f.xw, t, h_prev, f.w_hh, f.b_hh, relu, hs[t],
               gates[t] if f.training else hs[t])
        h_prev = hs[t]
    return f.result(hs, _copy(h_prev), gates)  # a copy: h0 itself when T = 0; results never alias inputs


def _lstm_forward(f: _ForwardLoop):
    """lstm_step_forward_kernel once a step, or lstm_forward_persistent_kernel. The cell states: every
    step's (training; the persistent kernel's c_ext holds c0 first), or two in turn (inference)."""
    if f.persistent:
        hs_ext, h_n, gates = f.persistent_outputs()
        c_ext, c_n = f.empty(f.T + 1 if f.training else 2, f.B, f.H), f.empty(f.B, f.H)
        _cooperative_launch(lstm.lstm_forward_persistent_kernel, f.B, f.H, f.xw, f.h0, f.c0, hs_ext, c_ext, f.w_hh,
                            f.b_hh, gates, h_n, c_n)
        return f.result(hs_ext[1:], h_n, gates, c_n, c_ext[1:] if f.training else None)
    hs, gates = f.empty(f.T, f.B, f.H), f.gates()
    cs = f.empty(f.T, f.B, f.H) if f.training else None
    c_pair = None if f.training else [f.empty(f.B, f.H) for _ in range(2)]
    h_prev, c_prev = f.h0, f.c0
    for t in range(f.T):
        c_next = cs[t] if f.training else c_pair[t % 2]
        launch(lstm.lstm_step_forward_kernel, f.grid, f.block, f.xw, t, h_prev, c_prev, f.w_hh, f.b_hh, hs[t],
               c_next, gates[t if f.training else 0])
        h_prev, c_prev = hs[t], c_next
    return f.result(hs, _copy(h_prev), gates, _copy(c_prev), cs)


def _gru_forward(f: _ForwardLoop):
    """gru_step_forward_kernel once a step, or gru_forward_persistent_kernel."""
    if f.persistent:
        hs_ext, h_n, gates = f.persistent_outputs()
        _cooperative_launch(gru.gru_forward_persistent_kernel, f.B, f.H, f.xw, f.h0, hs_ext, f.w_hh, f.b_hh, gates,
                            h_n)
        return f.result(hs_ext[1:], h_n, gates)
    hs, gates = f.empty(f.T, f.B, f.H), f.gates()
    h_prev = f.h0
    for t in range(f.T):
        launch(gru.gru_step_forward_kernel, f.grid, f.block, f.xw, t, h_prev, f.w_hh, f.b_hh, hs[t],
               gates[t if f.training else 0])
        h_prev = hs[t]
    return f.result(hs, _copy(h_prev), gates)


def _gru_classic_forward(f: _ForwardLoop):
    """Two kernels a step, rz then n: r⊙h of every unit must exist before W_hn (r⊙h) starts; or
    gru_classic_forward_persistent_kernel, which synchronizes its grid in between."""
    rh = f.empty(f.B, f.H)
    if f.persistent:
        hs_ext, h_n, gates = f.persistent_outputs()
        _cooperative_launch(gru.gru_classic_forward_persistent_kernel, f.B, f.H, f.xw, f.h0, hs_ext, f.w_hh, f.b_hh,
                            gates, rh, h_n)
        return f.result(hs_ext[1:], h_n, gates)
    hs, gates = f.empty(f.T, f.B, f.H), f.gates()
    h_prev = f.h0
    for t in range(f.T):
        gates_t = gates[t if f.training else 0]
        launch(gru.gru_classic_step_forward_rz_kernel, f.grid, f.block, f.xw, t, h_prev, f.w_hh, f.b_hh, gates_t, rh)
        launch(gru.gru_classic_step_forward_n_kernel, f.grid, f.block, f.xw, t, h_prev, rh, f.w_hh, f.b_hh, hs[t],
               gates_t)
        h_prev = hs[t]
    return f.result(hs, _copy(h_prev), gates)


# ----- backward ----------------------------------------------------------------------------------------

def backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n=None):
    """Backpropagation through time; returns the gradients of L given ∂L/∂hs, ∂L/∂h_n, ∂L/∂c_n."""
    on_device = is_device_array(x)
    params = params_view(params)
    x, h0, c0 = device_view(x), device_view(h0), device_view(c0)
    dhs, dh_n, dc_n = device_view(dhs), device_view(dh_n), device_view(dc_n)
    if hasattr(fwd, "hs") and hasattr(fwd, "gates"):  # else the contract's check reports what is missing
        fwd = SimpleNamespace(**{a: device_view(getattr(fwd, a, None)) for a in ("hs", "gates", "cs")})
    T, B, I, H, G, dtype = _validate(check_backward_inputs, cell, params, (x, h0, c0, fwd, dhs, dh_n, dc_n))
    if B == 0 or H == 0:
        result = _backward_without_rows_or_units(cell, T, B, I, H, G, dtype)
        return result if on_device else to_host(result)
    w_ih, w_hh, b_ih, b_hh = (to_device(getattr(params, p)) for p in PARAM_NAMES)
    x, h0, c0, dhs, dh_n, dc_n = (to_device(a) for a in (x, h0, c0, dhs, dh_n, dc_n))
    hs, gates = to_device(fwd.hs), to_device(fwd.gates)
    cs = to_device(fwd.cs) if cell == "lstm" else None

    # h_{t−1} for every t, (T, B, H): h0, then hs[0..T−2]. Read by the step kernels and by dW_hh.
    h_prev_all = cuda.device_array((T, B, H), dtype)
    if T:
        _launch_1d(elementwise.copy2d, B * H, h0, h_prev_all[0])
        if T > 1:
            _launch_1d(elementwise.copy2d, (T - 1) * B * H, _as_2d(contiguous_on_device(hs[:T - 1])),
                       _as_2d(h_prev_all[1:]))
    # ∂L/∂a of the gates' pre-activations, input side: dW_ih, db_ih, dx (the hidden side, da_h, differs
    # only in the n block of the GRUs).
    da_x = cuda.device_array((T, B, G * H), dtype)
    bptt = TIME_LOOPS[cell].backward(_BackwardLoop(dh_n, dc_n, dhs, gates, w_hh, b_hh, h_prev_all, da_x, c0, cs))

    # Weight gradients and dx over all T·B rows at once (twin of the sums over t in reference.backend).
    da_x2, da_h2 = _as_2d(da_x), _as_2d(bptt.da_h)
    dw_ih = cuda.device_array((G * H, I), dtype)
    _matmul(da_x2, _as_2d(contiguous_on_device(x)), dw_ih, trans_a=True)
    dw_hh = cuda.device_array((G * H, H), dtype)
    for rows, inputs in bptt.hidden_inputs:
        _matmul(da_h2[:, rows], _as_2d(inputs), dw_hh[rows], trans_a=True)
    db_ih = cuda.device_array((G * H,), dtype)
    _launch_1d(column_sums, G * H, da_x2, db_ih)
    db_hh = cuda.device_array((G * H,), dtype)
    _launch_1d(column_sums, G * H, da_h2, db_hh)
    dx = cuda.device_array((T, B, I), dtype)
    _matmul(da_x2, w_ih, _as_2d(dx))
    synchronize(f"backward({cell!r})")
    # dh0, dc0: fresh buffers of this call, never the caller's dh_n or dc_n
    result = BackwardResult(dx, bptt.dh0, bptt.dc0, dw_ih, dw_hh, db_ih, db_hh)
    return result if on_device else to_host(result)


class _BackwardLoop:
    """One backward call's time loop (BPTT): what every cell's steps read (dh_n, dc_n, dhs, the stored
    gates, W_hh, h_{t−1} of every t) and write (da_x), and whether it is one persistent launch."""

    def __init__(self, dh_n, dc_n, dhs, gates, w_hh, b_hh, h_prev_all, da_x, c0, cs):
        self.dh_n, self.dc_n, self.dhs, self.gates = dh_n, dc_n, dhs, gates
        self.w_hh, self.b_hh, self.h_prev_all, self.da_x, self.c0, self.cs = w_hh, b_hh, h_prev_all, da_x, c0, cs
        self.T, self.B, self.H = h_prev_all.shape
        self.persistent = persistent and self.T > 0
        self.grid, self.block = _step_grid(self.B, self.H)

    def empty(self, *shape):
        return cuda.device_array(shape, self.da_x.dtype)

    def start(self):
        """∂L/∂h_T = dh_n + dhs[T − 1] in a fresh buffer, and a second one for the step before: the
        per-step path swaps them every step."""
        dh = self.empty(self.B, self.H)
        if self.T:
            _launch_1d(elementwise.add2d, self.B * self.H, self.dh_n, self.dhs[self.T - 1], dh)
        else:
            _launch_1d(elementwise.copy2d, self.B * self.H, self.dh_n, dh)
        return dh, self.empty(self.B, self.H)


class _BPTT(NamedTuple):
    """What a cell's BPTT leaves for the weight gradients, besides da_x."""
    dh0: object  # (B, H)
    dc0: object  # (B, H), lstm only
    da_h: object  # (T, B, G·H) ∂L/∂a of the hidden side; da_x itself unless a GRU
    hidden_inputs: tuple  # (rows, input (T, B, H)) pairs: dW_hh[rows] = da_h[:, rows]ᵀ input, summed over t


def _rnn_backward(b: _BackwardLoop, relu):
    """rnn_step_backward_kernel once a step, from t = T − 1 down, or rnn_backward_persistent_kernel."""
    if b.persistent:  # ∂L/∂h of the step being undone and of the one before, in turn
        dh_pair = b.empty(2, b.B, b.H)
        _cooperative_launch(rnn.rnn_backward_persistent_kernel, b.B, b.H, b.dh_n, dh_pair, b.gates, b.w_hh, relu,
                            b.dhs, b.da_x)
        dh = dh_pair[b.T % 2]
    else:
        dh, dh_prev = b.start()
        for t in reversed(range(b.T)):
            launch(rnn.rnn_step_backward_kernel, b.grid, b.block, dh, b.gates[t], b.w_hh, relu, b.dhs, t, b.da_x,
                   dh_prev)
            dh, dh_prev = dh_prev, dh
    return _BPTT(dh, None, b.da_x, ((slice(None), b.h_prev_all),))


def _lstm_backward(b: _BackwardLoop):
    """lstm_step_backward_kernel once a step, or lstm_backward_persistent_kernel; ∂L/∂c_T = dc_n, or 0."""
    if b.persistent:  # ∂L/∂h and ∂L/∂c of the step being undone and of the one before, in turn
        dh_pair, dc_pair = b.empty(2, b.B, b.H), b.empty(2, b.B, b.H)
        _cooperative_launch(lstm.lstm_backward_persistent_kernel, b.B, b.H, b.dh_n,
                            b.dh_n if b.dc_n is None else b.dc_n, b.dc_n is not None, dh_pair, dc_pair, b.gates,
                            b.cs, b.c0, b.w_hh, b.dhs, b.da_x)
        dh, dc = dh_pair[b.T % 2], dc_pair[b.T % 2]
    else:
        dh, dh_prev = b.start()
        dc = _copy(b.dc_n) if b.dc_n is not None else _zeros((b.B, b.H), b.da_x.dtype)
        dc_prev = b.empty(b.B, b.H)
        for t in reversed(range(b.T)):
            launch(lstm.lstm_step_backward_kernel, b.grid, b.block, dh, dc, b.gates[t], b.cs[t - 1] if t else b.c0,
                   b.cs[t], b.w_hh, b.dhs, t, b.da_x, dh_prev, dc_prev)
            dh, dh_prev = dh_prev, dh
            dc, dc_prev = dc_prev, dc
    return _BPTT(dh, dc, b.da_x, ((slice(None), b.h_prev_all),))


def _gru_backward(b: _BackwardLoop):
    """gru_step_backward_kernel once a step, or gru_backward_persistent_kernel, after one matmul for
    W_hn h_{t−1} + b_hn of every step (r scaled it in forward; forward does not keep it)."""
    H = b.H
    da_h = b.empty(b.T, b.B, 3 * H)
    hn_all = b.empty(b.T, b.B, H)
    _matmul(_as_2d(b.h_prev_all), b.w_hh[2 * H:], _as_2d(hn_all), trans_b=True, bias=b.b_hh[2 * H:])
    if b.persistent:
        dh_pair = b.empty(2, b.B, H)
        _cooperative_launch(gru.gru_backward_persistent_kernel, b.B, H, b.dh_n, dh_pair, b.gates, b.h_prev_all,
                            hn_all, b.w_hh, b.dhs, b.da_x, da_h)
        dh = dh_pair[b.T % 2]
    else:
        dh, dh_prev = b.start()
        for t in reversed(range(b.T)):
            launch(gru.gru_step_backward_kernel, b.grid, b.block, dh, b.gates[t], b.h_prev_all[t], hn_all[t], b.w_hh,
                   b.dhs, t, b.da_x, da_h[t], dh_prev)
            dh, dh_prev = dh_prev, dh
    return _BPTT(dh, None, da_h, ((slice(None), b.h_prev_all),))


def _gru_classic_backward(b: _BackwardLoop):
    """Two kernels a step, n then rz: ∂L/∂(r⊙h) of every unit must exist before the r rows' da; or
    gru_classic_backward_persistent_kernel. W_hn's gradient takes r⊙h_{t−1}, which the n half stores."""
    H = b.H
    da_h = b.empty(b.T, b.B, 3 * H)
    rh_all = b.empty(b.T, b.B, H)  # r⊙h_{t−1}, the input of W_hn
    d_rh = b.empty(b.B, H)  # ∂L/∂(r⊙h) of the step
    if b.persistent:
        dh_pair = b.empty(2, b.B, H)
        _cooperative_launch(gru.gru_classic_backward_persistent_kernel, b.B, H, b.dh_n, dh_pair, b.gates,
                            b.h_prev_all, d_rh, rh_all, b.w_hh, b.dhs, b.da_x, da_h)
        dh = dh_pair[b.T % 2]
    else:
        dh, dh_prev = b.start()
        for t in reversed(range(b.T)):
            launch(gru.gru_classic_step_backward_n_kernel, b.grid, b.block, dh, b.gates[t], b.h_prev_all[t], b.w_hh, t,
                   b.da_x, da_h[t], d_rh, rh_all[t])
            launch(gru.gru_classic_step_backward_rz_kernel, b.grid, b.block, dh, b.gates[t], b.h_prev_all[t], d_rh,
                   b.w_hh, b.dhs, t, b.da_x, da_h[t], dh_prev)
            dh, dh_prev = dh_prev, dh
    # reference.gru.gru_classic_step_backward: dW_hh = [from_h.dw (r, z rows); from_rh.dw (n rows)]
    return _BPTT(dh, None, da_h, ((slice(0, 2 * H), b.h_prev_all), (slice(2 * H, 3 * H), rh_all)))


# ----- each cell's time loops: the twin of reference.backend.STEPS --------------------------------------

class TimeLoops(NamedTuple):
    """A cell's time loops on the device.

    forward(_ForwardLoop) -> ForwardResult
    backward(_BackwardLoop) -> _BPTT
    """
    forward: Callable
    backward: Callable


TIME_LOOPS = {
    "rnn_tanh": TimeLoops(partial(_rnn_forward, relu=False), partial(_rnn_backward, relu=False)),
    "rnn_relu": TimeLoops(partial(_rnn_forward, relu=True), partial(_rnn_backward, relu=True)),
    "lstm": TimeLoops(_lstm_forward, _lstm_backward),
    "gru": TimeLoops(_gru_forward, _gru_backward),
    "gru_classic": TimeLoops(_gru_classic_forward, _gru_classic_backward),
}


# ----- no rows or no units: every per-step array is empty ----------------------------------------------
# Handled apart, before any kernel, because a real GPU cannot index an empty device array: numba-cuda
# slices 4 bytes of its NULL pointer for a[t] and raises "non-empty slice into empty slice" (seen on an
# H200 with numba-cuda 0.30.4). The simulator's arrays are NumPy's and do not show it.

def _empty(shape, dtype):
    return cuda.device_array(shape, dtype)


def _zeros_from_host(shape, dtype):
    return cuda.to_device(np.zeros(shape, dtype))


def _forward_without_rows_or_units(cell, T, B, H, G, dtype, training):
    """forward when B = 0 or H = 0: each result has its shape and no elements."""
    has_c = cell == "lstm"
    return ForwardResult(_empty((T, B, H), dtype), _empty((B, H), dtype), _empty((B, H), dtype) if has_c else None,
                         _empty((T, B, H), dtype) if has_c and training else None,
                         _empty((T, B, G * H), dtype) if training else None)


def _backward_without_rows_or_units(cell, T, B, I, H, G, dtype):
    """backward when B = 0 or H = 0: the weight and bias gradients are sums over no row or of no unit,
    and dx = ∂L/∂a · W_ih a sum over no gate row: all zeros; dh0 and dc0 have no elements."""
    return BackwardResult(_zeros_from_host((T, B, I), dtype), _empty((B, H), dtype),
                          _empty((B, H), dtype) if cell == "lstm" else None,
                          _zeros_from_host((G * H, I), dtype), _zeros_from_host((G * H, H), dtype),
                          _zeros_from_host((G * H,), dtype), _zeros_from_host((G * H,), dtype))


# ----- layers: stacked, bidirectional, rows of different lengths (jit.cuda.layers) ----------------------
# Imported last: jit.cuda.layers uses this module's launches above.
from .layers import layer_backward, layer_forward  # noqa: E402, F401  (the layer contract, natively)
