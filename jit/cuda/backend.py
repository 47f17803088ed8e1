"""The jit.cuda backend: the contract's forward and backward on the GPU, step for step like reference.backend.

This module is itself a backend (``name``, ``cells``, ``forward``, ``backward``, ``available()``, and
the layer contract's ``layer_forward``, ``layer_backward`` from jit.cuda.layers).
Forward projects every step's input with one matmul, then runs the cell's time loop. Backward
rebuilds h_{t−1} for every t with one copy, runs BPTT's time loop, then forms the weight gradients
and dx with matmuls over all T·B rows. Each cell's time loops (``TIME_LOOPS``, the twin of
reference.backend.STEPS) launch one fused kernel per step (two for gru_classic), or with
``persistent`` set one cooperative kernel for all steps: the same bits. Inputs are validated by
reference.contract before anything runs; the finiteness of every device input is checked by one
kernel launched first and read at the call's one synchronize (DeviceFiniteness). A call's
temporaries are reused from call to call (jit.cuda.workspace); the step kernels take whole arrays
and t, specialized once per call (jit.cuda.launch.specialized).
"""
import contextlib
import os
from functools import partial
from types import SimpleNamespace
from typing import Callable, NamedTuple

import numpy as np
from numba import cuda

from reference.contract import (CELLS, PARAM_NAMES, BackwardResult, ForwardResult, check_backward_inputs,
                                check_forward_inputs, trace_fields)

from . import elementwise, gru, lstm, rnn, split, workspace
from .device_arrays import (ARRAY_TYPES, DeviceArray, contiguous_on_device, device_view, is_device_array, params_view,
                            to_host)
from .launch import (SIMULATOR, TILES, LaunchError, blocks, cooperative_grid_limit, kernel_name, launch, specialized,
                     synchronize)
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

#: With ``persistent``: the time loops of rnn_*, lstm and gru, forward and backward, run split-K
#: (``*_forward_split_kernel``, ``*_backward_split_kernel``, jit.cuda.split): every step's recurrent
#: product cut into (units, slice of the reduction) items for more blocks, W_hh's slices kept in
#: shared memory where the grid holds them all, backward's ∂L/∂a computed once a step; their sums
#: agree with the tile kernels' within rounding, not bit for bit. gru_classic keeps the tile
#: kernels. Off by default until a GPU measures it against them.
#: Set by CELLBENCH_CUDA_SPLIT_K=1, or assign it.
split_k = os.environ.get("CELLBENCH_CUDA_SPLIT_K", "") not in ("", "0")

#: Whether a call checks that its device inputs hold no NaN or inf (one kernel launch, its counts read
#: at the call's end; DeviceFiniteness). On by default; CELLBENCH_CUDA_CHECK_FINITE=0, or assigning
#: False, skips it for a caller that knows its inputs are finite. NumPy inputs are always checked.
check_finite = os.environ.get("CELLBENCH_CUDA_CHECK_FINITE", "") != "0"


def available() -> bool:
    """True when kernels can run here: a CUDA GPU with its driver, or the CUDA simulator."""
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver install: not usable, and not this backend's error
        return False


# ----- validation: the contract's check now, device finiteness at the call's end ---------------------

def _host_finite(a) -> bool:
    """A NumPy array's finiteness, for the contract's check before any work; a device array's is
    left to the call's check kernel (DeviceFiniteness) and passes here."""
    return not isinstance(a, np.ndarray) or bool(np.isfinite(a).all())


def _checked_arrays(params, arrays):
    """The arrays whose finiteness the contract checks: the parameters and every array argument."""
    return [getattr(params, p) for p in PARAM_NAMES] + [a for a in arrays if hasattr(a, "dtype")]


class DeviceFiniteness:
    """The finiteness of a call's device inputs, checked without a round trip before the compute:
    one launch of count_nonfinite (a block row per array) queued ahead of the call's kernels, its
    counts read back by the call's one synchronize (``finish``). The counts are the calling thread's
    (jit.cuda.workspace) and stay zero from call to call; a call that finds a non-finite value, or
    fails before reading them, discards them. Nothing is launched when ``check_finite`` is off, and
    for empty arrays (finite, and a GPU indexes no empty device array)."""

    ROLE = "nonfinite counts"

    def __init__(self, arrays):
        self.arrays = [a for a in arrays if isinstance(a, DeviceArray) and a.size] if check_finite else []
        self.counts = None
        if not self.arrays:
            return
        # A non-contiguous device array (a strided view) has no 1-D view: it is checked through a copy.
        flats = tuple(a.reshape(a.size) if a.is_c_contiguous() else workspace.fresh_copy(a.copy_to_host().ravel())
                      for a in self.arrays)
        self.counts = workspace.zeroed(self.ROLE, len(flats), np.int64)
        longest = max(f.size for f in flats)
        grid = (min(blocks(longest, TILES.threads_1d), TILES.blocks_1d), len(flats))
        launch(elementwise.count_nonfinite, grid, (TILES.threads_1d,), flats, self.counts)

    def finish(self, where: str, check):
        """The call's one synchronize; then, if a device input held NaN or inf, ``check(isfinite)``
        (the contract's check, with each array's finiteness from the counts), which raises the
        ValueError naming the first such argument; _device_call then discards the counts."""
        counts = synchronize(where, self.counts)
        if counts is None:
            return
        bad = {id(a) for a, n in zip(self.arrays, counts) if n}
        if not bad:  # read and all zero: nothing left to discard, whatever happens after
            self.counts = None
            return
        check(isfinite=lambda a: id(a) not in bad)
        raise ValueError(f"{where}: a device input holds NaN or inf")  # the check names it; never reached

    def abandon(self):
        """Discard the counts (the check kernel may have counted something nobody read)."""
        if self.counts is not None:
            workspace.discard(self.ROLE)
            self.counts = None


@contextlib.contextmanager
def _device_call(arrays):
    """One call's device work: frees deferred until it ends (cuda.defer_cleanup), and the finiteness
    check of its device inputs launched first; the body ends with ``finish``."""
    with cuda.defer_cleanup():
        check = DeviceFiniteness(arrays)
        try:
            yield check
        except BaseException:
            check.abandon()
            raise


# ----- where one call's arrays live -----------------------------------------------------------------

class _Memory:
    """One call's device arrays: a result the caller keeps on the device is a fresh array; a result
    copied back to NumPy, and every temporary, is the calling thread's scratch array for its role
    (jit.cuda.workspace): a second call of the same shapes allocates only the results it returns on
    the device."""

    def __init__(self, results_on_device: bool, dtype):
        self.results_on_device, self.dtype = results_on_device, dtype

    def result(self, role, *shape):
        if self.results_on_device:
            return workspace.fresh(shape, self.dtype)
        return workspace.scratch(role, shape, self.dtype)

    def scratch(self, role, *shape):
        return workspace.scratch(role, shape, self.dtype)


# ----- launches every cell shares --------------------------------------------------------------------

def _launch_1d(kernel, n, *args):
    """Launch a grid-stride kernel over n items."""
    launch(kernel, (min(blocks(n, TILES.threads_1d), TILES.blocks_1d),), (TILES.threads_1d,), *args)


def _copy(src, dst):
    """dst = src, 2-D device arrays of one shape; returns dst."""
    _launch_1d(elementwise.copy2d, dst.size, src, dst)
    return dst


def _fill_zeros(dst):
    """dst = 0, a 2-D device array; returns dst."""
    _launch_1d(elementwise.fill2d, dst.size, dst, dst.dtype.type(0))
    return dst


_UNUSED_BIAS = {}


def _matmul(a, b, c, *, trans_a=False, trans_b=False, bias=None):
    """c = op(a) @ op(b) (+ bias); a, b, c 2-D device arrays, c (M, N)."""
    use_bias = bias is not None
    if not use_bias:  # the kernel's bias argument still needs an array of the dtype; it is not read
        bias = _UNUSED_BIAS.get(c.dtype)
        if bias is None:
            bias = _UNUSED_BIAS[c.dtype] = workspace.fresh((1,), c.dtype)
    tile = TILES.matmul * TILES.matmul_work
    launch(matmul, (blocks(c.shape[1], tile), blocks(c.shape[0], tile)), (TILES.matmul, TILES.matmul),
           a, b, c, bias, trans_a, trans_b, use_bias)


def _step_grid(B, H):
    """Step kernels: threadIdx.x over hidden units (or columns of ∂L/∂h), threadIdx.y over batch rows."""
    return (blocks(H, TILES.units), blocks(B, TILES.rows)), (TILES.units, TILES.rows)


def _launch_steps(grid, block, steps, *kernels_and_args, at=1):
    """Each (kernel, args) pair launched once per t in steps, in order, with args[at] = t: the step
    kernels of a forward time loop. Each argument list is made once per call and passes the same
    arrays at every step, so each kernel is specialized once (numba-cuda types its arguments once
    per call instead of once per launch)."""
    if not steps:
        return
    prepared = [(specialized(kernel, *args), args) for kernel, args in kernels_and_args]
    for t in steps:
        for kernel, args in prepared:
            args[at] = t
            launch(kernel, grid, block, *args)


def _resident_blocks(kernel, block, *args) -> int:
    """The most blocks a cooperative launch of ``kernel`` may have (asked of the driver once per
    compiled kernel and block); a LaunchError if not one can be resident, since launch() would skip
    the empty grid and no result would be written."""
    resident = cooperative_grid_limit(kernel, block, *args)
    if resident < 1:
        raise LaunchError(f"jit.cuda: {kernel_name(kernel)}: not one block of {block} threads can be "
                          f"resident for a cooperative launch")
    return resident


def _cooperative_launch(kernel, B, H, *args):
    """Launch a persistent kernel on a 1-D grid: a block per (units × rows) tile of a step, or as many
    as can be resident at once (a cooperative launch needs them all resident); the kernel walks the
    remaining tiles itself."""
    block = (TILES.units, TILES.rows)
    tiles = blocks(H, TILES.units) * blocks(B, TILES.rows)
    kernel = specialized(kernel, *args)
    launch(kernel, (min(tiles, _resident_blocks(kernel, block, *args)),), block, *args)


def split_slice_depth(units: int, depth: int, resident: int) -> int:
    """The reduction's length per item of a split-K product over ``units`` output units and a
    reduction of ``depth`` (forward: H and H; backward: H and G·H) on a grid of at most ``resident``
    blocks: SPLIT_DEPTH, each block then keeping its slice of W_hh in shared memory, where the grid
    holds every item; else slices just long enough that it does, or the whole reduction where even
    one slice per unit block is more items than the grid (the blocks then walk several items)."""
    unit_blocks = blocks(units, split.SPLIT_UNITS)
    slices = max(1, min(blocks(depth, split.SPLIT_DEPTH), resident // unit_blocks))
    return split.SPLIT_DEPTH * blocks(blocks(depth, split.SPLIT_DEPTH), slices)


def _split_launch(loop, kernel, depth, columns, *args):
    """Launch a split-K kernel (jit.cuda.split) of a forward or backward loop over loop.H units, its
    product's reduction ``depth`` long and its partial sums ``columns`` wide (forward: H and G·H;
    backward: G·H and H). ``args`` are the kernel's arguments before the partial sums and the slice
    depth, which are sized here from the resident grid."""
    block = (split.SPLIT_UNITS, split.SPLIT_ROWS)
    typed_like = loop.scratch("split.typed_like", 1, 1, 1)  # the partials' type: sizing waits on the limit
    kernel = specialized(kernel, *args, typed_like, split.SPLIT_DEPTH)
    resident = _resident_blocks(kernel, block, *args, typed_like, split.SPLIT_DEPTH)
    slice_depth = split_slice_depth(loop.H, depth, resident)
    partial = loop.scratch("split.partial", blocks(depth, slice_depth), loop.B, columns)
    grid = (min(split.item_count(loop.H, depth, slice_depth), resident),)
    launch(kernel, grid, block, *args, partial, slice_depth)


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
    check = partial(check_forward_inputs, cell, params, x, h0, c0, array_types=ARRAY_TYPES)
    T, B, I, H, G, dtype = check(isfinite=_host_finite)
    with _device_call(_checked_arrays(params, (x, h0, c0))) as finiteness:
        if B == 0 or H == 0:
            result = _forward_without_rows_or_units(cell, T, B, H, G, dtype, training)
        else:
            w_ih, w_hh, b_ih, b_hh = (workspace.upload(f"params.{p}", getattr(params, p)) for p in PARAM_NAMES)
            x, h0, c0 = workspace.upload("x", x), workspace.upload("h0", h0), workspace.upload("c0", c0)
            # The input projection of every step at once: xw = x W_ihᵀ + b_ih, (T·B, G·H).
            xw = workspace.scratch("forward.xw", (T, B, G * H), dtype)
            _matmul(contiguous_on_device(x).reshape(T * B, I), w_ih, _as_2d(xw), trans_b=True, bias=b_ih)
            memory = _Memory(on_device, dtype)
            result = TIME_LOOPS[cell].forward(_ForwardLoop(xw, h0, c0, w_hh, b_hh, training, memory))
        finiteness.finish(f"forward({cell!r})", check)
    return result if on_device else to_host(result)


class _ForwardLoop:
    """One forward call's time loop: xw (T, B, G·H) = x W_ihᵀ + b_ih of every step, h0, c0 (lstm),
    W_hh, b_hh; whether it keeps the gates (training), whether it is one persistent launch, and
    where its arrays live (_Memory)."""

    def __init__(self, xw, h0, c0, w_hh, b_hh, training, memory):
        self.xw, self.h0, self.c0, self.w_hh, self.b_hh, self.training = xw, h0, c0, w_hh, b_hh, training
        self.memory = memory
        self.T, self.B, self.GH = xw.shape
        self.H = w_hh.shape[1]
        self.persistent = persistent and self.T > 0
        self.split = self.persistent and split_k
        self.grid, self.block = _step_grid(self.B, self.H)

    def result(self, role, *shape):
        return self.memory.result(f"forward.{role}", *shape)

    def scratch(self, role, *shape):
        return self.memory.scratch(f"forward.{role}", *shape)

    def gates(self):
        """The gates (T, B, G·H) training keeps; in inference one step's scratch (1, B, G·H)."""
        if self.training:
            return self.result("gates", self.T, self.B, self.GH)
        return self.scratch("gates", 1, self.B, self.GH)

    def persistent_outputs(self):
        """hs_ext (T + 1, B, H), which holds h0 then h_1 … h_T; h_n; the gates."""
        return self.result("hs_ext", self.T + 1, self.B, self.H), self.result("h_n", self.B, self.H), self.gates()

    def steps(self, *kernels_and_args):
        """Each step kernel once per step (args[1] = t), in order."""
        _launch_steps(self.grid, self.block, range(self.T), *kernels_and_args)

    def last(self, first, ring, role):
        """A copy of the state after the last step (first itself when T = 0): results never alias
        inputs, nor the arrays the loop keeps."""
        return _copy(ring[(self.T - 1) % ring.shape[0]] if self.T else first, self.result(role, self.B, self.H))

    def output(self, hs, h_n, gates, c_n=None, cs=None):
        return ForwardResult(hs, h_n, c_n, cs, gates if self.training else None)


def _rnn_forward(f: _ForwardLoop, relu):
    """rnn_tanh or (relu) rnn_relu: rnn_step_forward_kernel once a step, or rnn_forward_persistent_kernel."""
    if f.persistent:
        hs_ext, h_n, gates = f.persistent_outputs()
        if f.split:
            _split_launch(f, rnn.rnn_forward_split_kernel, f.H, f.GH, f.xw, f.h0, hs_ext, f.w_hh, f.b_hh, relu, gates,
                          h_n)
        else:
            _cooperative_launch(rnn.rnn_forward_persistent_kernel, f.B, f.H, f.xw, f.h0, hs_ext, f.w_hh, f.b_hh, relu,
                                gates, h_n)
        return f.output(hs_ext[1:], h_n, gates)
    hs = f.result("hs", f.T, f.B, f.H)
    gates = f.gates() if f.training else hs  # inference: rnn's one "gate" is h' itself
    f.steps((rnn.rnn_step_forward_kernel, [f.xw, 0, f.h0, hs, f.w_hh, f.b_hh, relu, gates]))
    return f.output(hs, f.last(f.h0, hs, "h_n"), gates)


def _lstm_forward(f: _ForwardLoop):
    """lstm_step_forward_kernel once a step, or lstm_forward_persistent_kernel. The cell states: every
    step's (training; the persistent kernel's c_ext holds c0 first), or two in turn (inference)."""
    if f.persistent:
        hs_ext, h_n, gates = f.persistent_outputs()
        if f.training:
            c_ext = f.result("c_ext", f.T + 1, f.B, f.H)
        else:
            c_ext = f.scratch("c_ext", 2, f.B, f.H)
        c_n = f.result("c_n", f.B, f.H)
        if f.split:
            _split_launch(f, lstm.lstm_forward_split_kernel, f.H, f.GH, f.xw, f.h0, f.c0, hs_ext, c_ext, f.w_hh,
                          f.b_hh, gates, h_n, c_n)
        else:
            _cooperative_launch(lstm.lstm_forward_persistent_kernel, f.B, f.H, f.xw, f.h0, f.c0, hs_ext, c_ext,
                                f.w_hh, f.b_hh, gates, h_n, c_n)
        return f.output(hs_ext[1:], h_n, gates, c_n, c_ext[1:] if f.training else None)
    hs, gates = f.result("hs", f.T, f.B, f.H), f.gates()
    cs = f.result("cs", f.T, f.B, f.H) if f.training else f.scratch("c_pair", 2, f.B, f.H)
    f.steps((lstm.lstm_step_forward_kernel, [f.xw, 0, f.h0, f.c0, hs, cs, f.w_hh, f.b_hh, gates]))
    return f.output(hs, f.last(f.h0, hs, "h_n"), gates, f.last(f.c0, cs, "c_n"), cs if f.training else None)


def _gru_forward(f: _ForwardLoop):
    """gru_step_forward_kernel once a step, or gru_forward_persistent_kernel."""
    if f.persistent:
        hs_ext, h_n, gates = f.persistent_outputs()
        if f.split:
            _split_launch(f, gru.gru_forward_split_kernel, f.H, f.GH, f.xw, f.h0, hs_ext, f.w_hh, f.b_hh, gates, h_n)
        else:
            _cooperative_launch(gru.gru_forward_persistent_kernel, f.B, f.H, f.xw, f.h0, hs_ext, f.w_hh, f.b_hh,
                                gates, h_n)
        return f.output(hs_ext[1:], h_n, gates)
    hs, gates = f.result("hs", f.T, f.B, f.H), f.gates()
    f.steps((gru.gru_step_forward_kernel, [f.xw, 0, f.h0, hs, f.w_hh, f.b_hh, gates]))
    return f.output(hs, f.last(f.h0, hs, "h_n"), gates)


def _gru_classic_forward(f: _ForwardLoop):
    """Two kernels a step, rz then n: r⊙h of every unit must exist before W_hn (r⊙h) starts; or
    gru_classic_forward_persistent_kernel, which synchronizes its grid in between."""
    rh = f.scratch("rh", f.B, f.H)
    if f.persistent:
        hs_ext, h_n, gates = f.persistent_outputs()
        _cooperative_launch(gru.gru_classic_forward_persistent_kernel, f.B, f.H, f.xw, f.h0, hs_ext, f.w_hh, f.b_hh,
                            gates, rh, h_n)
        return f.output(hs_ext[1:], h_n, gates)
    hs, gates = f.result("hs", f.T, f.B, f.H), f.gates()
    f.steps((gru.gru_classic_step_forward_rz_kernel, [f.xw, 0, f.h0, hs, f.w_hh, f.b_hh, gates, rh]),
            (gru.gru_classic_step_forward_n_kernel, [f.xw, 0, f.h0, hs, rh, f.w_hh, f.b_hh, gates]))
    return f.output(hs, f.last(f.h0, hs, "h_n"), gates)


# ----- backward ----------------------------------------------------------------------------------------

def backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n=None):
    """Backpropagation through time; returns the gradients of L given ∂L/∂hs, ∂L/∂h_n, ∂L/∂c_n."""
    on_device = is_device_array(x)
    params = params_view(params)
    x, h0, c0 = device_view(x), device_view(h0), device_view(c0)
    dhs, dh_n, dc_n = device_view(dhs), device_view(dh_n), device_view(dc_n)
    if hasattr(fwd, "hs") and hasattr(fwd, "gates"):  # else the contract's check reports what is missing
        fwd = SimpleNamespace(**{a: device_view(getattr(fwd, a, None)) for a in ("hs", "gates", "cs")})
    check = partial(check_backward_inputs, cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n, array_types=ARRAY_TYPES)
    T, B, I, H, G, dtype = check(isfinite=_host_finite)
    trace = (getattr(fwd, field) for field in trace_fields(cell))  # what the contract checked of fwd
    with _device_call(_checked_arrays(params, (x, h0, c0, dhs, dh_n, dc_n, *trace))) as finiteness:
        if B == 0 or H == 0:
            result = _backward_without_rows_or_units(cell, T, B, I, H, G, dtype)
        else:
            result = _backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n, (T, B, I, H, G),
                               _Memory(on_device, dtype))
        finiteness.finish(f"backward({cell!r})", check)
    return result if on_device else to_host(result)


def _backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n, sizes, memory: _Memory):
    """backward's launches, B ≥ 1 and H ≥ 1: BPTT, then the weight gradients and dx."""
    T, B, I, H, G = sizes
    w_ih, w_hh, b_ih, b_hh = (workspace.upload(f"params.{p}", getattr(params, p)) for p in PARAM_NAMES)
    x, h0, c0 = workspace.upload("x", x), workspace.upload("h0", h0), workspace.upload("c0", c0)
    dhs, dh_n, dc_n = workspace.upload("dhs", dhs), workspace.upload("dh_n", dh_n), workspace.upload("dc_n", dc_n)
    hs, gates = workspace.upload("fwd.hs", fwd.hs), workspace.upload("fwd.gates", fwd.gates)
    cs = workspace.upload("fwd.cs", fwd.cs) if cell == "lstm" else None

    # h_{t−1} for every t, (T, B, H): h0, then hs[0..T−2]. Read by the step kernels and by dW_hh.
    h_prev_all = memory.scratch("backward.h_prev_all", T, B, H)
    if T:
        _copy(h0, h_prev_all[0])
        if T > 1:
            _launch_1d(elementwise.copy2d, (T - 1) * B * H, _as_2d(contiguous_on_device(hs[:T - 1])),
                       _as_2d(h_prev_all[1:]))
    # ∂L/∂a of the gates' pre-activations, input side: dW_ih, db_ih, dx (the hidden side, da_h, differs
    # only in the n block of the GRUs).
    da_x = memory.scratch("backward.da_x", T, B, G * H)
    bptt = TIME_LOOPS[cell].backward(_BackwardLoop(dh_n, dc_n, dhs, gates, w_hh, b_hh, h_prev_all, da_x, c0, cs,
                                                   memory))

    # Weight gradients and dx over all T·B rows at once (twin of the sums over t in reference.backend).
    da_x2, da_h2 = _as_2d(da_x), _as_2d(bptt.da_h)
    dw_ih = memory.result("backward.dw_ih", G * H, I)
    _matmul(da_x2, _as_2d(contiguous_on_device(x)), dw_ih, trans_a=True)
    dw_hh = memory.result("backward.dw_hh", G * H, H)
    for rows, inputs in bptt.hidden_inputs:
        _matmul(da_h2[:, rows], _as_2d(inputs), dw_hh[rows], trans_a=True)
    db_ih = memory.result("backward.db_ih", G * H)
    _launch_1d(column_sums, G * H, da_x2, db_ih)
    db_hh = memory.result("backward.db_hh", G * H)
    _launch_1d(column_sums, G * H, da_h2, db_hh)
    dx = memory.result("backward.dx", T, B, I)
    _matmul(da_x2, w_ih, _as_2d(dx))
    # dh0, dc0: result buffers of this call, never the caller's dh_n or dc_n
    return BackwardResult(dx, bptt.dh0, bptt.dc0, dw_ih, dw_hh, db_ih, db_hh)


class _BackwardLoop:
    """One backward call's time loop (BPTT): what every cell's steps read (dh_n, dc_n, dhs, the stored
    gates, W_hh, h_{t−1} of every t) and write (da_x), whether it is one persistent launch, and where
    its arrays live (_Memory)."""

    def __init__(self, dh_n, dc_n, dhs, gates, w_hh, b_hh, h_prev_all, da_x, c0, cs, memory):
        self.dh_n, self.dc_n, self.dhs, self.gates = dh_n, dc_n, dhs, gates
        self.w_hh, self.b_hh, self.h_prev_all, self.da_x, self.c0, self.cs = w_hh, b_hh, h_prev_all, da_x, c0, cs
        self.memory = memory
        self.T, self.B, self.H = h_prev_all.shape
        self.persistent = persistent and self.T > 0
        self.split = self.persistent and split_k
        self.grid, self.block = _step_grid(self.B, self.H)

    def result(self, role, *shape):
        return self.memory.result(f"backward.{role}", *shape)

    def scratch(self, role, *shape):
        return self.memory.scratch(f"backward.{role}", *shape)

    def pair(self, role):
        """(the buffer step T − 1 reads, the one it writes) of a state gradient the per-step path swaps
        every step, ordered so that the last step (t = 0) writes the result buffer."""
        result, other = self.result(role, self.B, self.H), self.scratch(f"{role} other", self.B, self.H)
        return (result, other) if self.T % 2 == 0 else (other, result)

    def start(self):
        """∂L/∂h_T = dh_n + dhs[T − 1] in the first buffer of the pair (see ``pair``)."""
        dh, dh_prev = self.pair("dh0")
        if self.T:
            _launch_1d(elementwise.add2d, self.B * self.H, self.dh_n, self.dhs[self.T - 1], dh)
        else:
            _copy(self.dh_n, dh)
        return dh, dh_prev


class _BPTT(NamedTuple):
    """What a cell's BPTT leaves for the weight gradients, besides da_x."""
    dh0: object  # (B, H)
    dc0: object  # (B, H), lstm only
    da_h: object  # (T, B, G·H) ∂L/∂a of the hidden side; da_x itself unless a GRU
    hidden_inputs: tuple  # (rows, input (T, B, H)) pairs: dW_hh[rows] = da_h[:, rows]ᵀ input, summed over t


def _rnn_backward(b: _BackwardLoop, relu):
    """rnn_step_backward_kernel once a step, from t = T − 1 down, or rnn_backward_persistent_kernel."""
    if b.persistent:  # ∂L/∂h of the step being undone and of the one before, in turn
        dh_pair = b.result("dh_pair", 2, b.B, b.H)
        if b.split:
            _split_launch(b, rnn.rnn_backward_split_kernel, b.H, b.H, b.dh_n, dh_pair, b.gates, b.w_hh, relu, b.dhs,
                          b.da_x)
        else:
            _cooperative_launch(rnn.rnn_backward_persistent_kernel, b.B, b.H, b.dh_n, dh_pair, b.gates, b.w_hh,
                                relu, b.dhs, b.da_x)
        dh = dh_pair[b.T % 2]
    else:
        dh, dh_prev = b.start()
        args = [dh, b.gates, b.w_hh, relu, b.dhs, 0, b.da_x, dh_prev]
        step = specialized(rnn.rnn_step_backward_kernel, *args) if b.T else None
        for t in reversed(range(b.T)):
            args[0], args[5], args[7] = dh, t, dh_prev
            launch(step, b.grid, b.block, *args)
            dh, dh_prev = dh_prev, dh
    return _BPTT(dh, None, b.da_x, ((slice(None), b.h_prev_all),))


def _lstm_backward(b: _BackwardLoop):
    """lstm_step_backward_kernel once a step, or lstm_backward_persistent_kernel; ∂L/∂c_T = dc_n, or 0."""
    if b.persistent:  # ∂L/∂h and ∂L/∂c of the step being undone and of the one before, in turn
        dh_pair, dc_pair = b.result("dh_pair", 2, b.B, b.H), b.result("dc_pair", 2, b.B, b.H)
        args = (b.dh_n, b.dh_n if b.dc_n is None else b.dc_n, b.dc_n is not None, dh_pair, dc_pair, b.gates, b.cs,
                b.c0, b.w_hh, b.dhs, b.da_x)
        if b.split:
            _split_launch(b, lstm.lstm_backward_split_kernel, 4 * b.H, b.H, *args)
        else:
            _cooperative_launch(lstm.lstm_backward_persistent_kernel, b.B, b.H, *args)
        dh, dc = dh_pair[b.T % 2], dc_pair[b.T % 2]
    else:
        dh, dh_prev = b.start()
        dc, dc_prev = b.pair("dc0")
        if b.dc_n is not None:
            _copy(b.dc_n, dc)
        else:
            _fill_zeros(dc)
        args = [dh, dc, b.gates, b.c0, b.cs, b.w_hh, b.dhs, 0, b.da_x, dh_prev, dc_prev]
        step = specialized(lstm.lstm_step_backward_kernel, *args) if b.T else None
        for t in reversed(range(b.T)):
            args[0], args[1], args[7], args[9], args[10] = dh, dc, t, dh_prev, dc_prev
            launch(step, b.grid, b.block, *args)
            dh, dh_prev = dh_prev, dh
            dc, dc_prev = dc_prev, dc
    return _BPTT(dh, dc, b.da_x, ((slice(None), b.h_prev_all),))


def _gru_backward(b: _BackwardLoop):
    """gru_step_backward_kernel once a step, or gru_backward_persistent_kernel, after one matmul for
    W_hn h_{t−1} + b_hn of every step (r scaled it in forward; forward does not keep it)."""
    H = b.H
    da_h = b.scratch("da_h", b.T, b.B, 3 * H)
    hn_all = b.scratch("hn_all", b.T, b.B, H)
    _matmul(_as_2d(b.h_prev_all), b.w_hh[2 * H:], _as_2d(hn_all), trans_b=True, bias=b.b_hh[2 * H:])
    if b.persistent:
        dh_pair = b.result("dh_pair", 2, b.B, H)
        args = (b.dh_n, dh_pair, b.gates, b.h_prev_all, hn_all, b.w_hh, b.dhs, b.da_x, da_h)
        if b.split:
            _split_launch(b, gru.gru_backward_split_kernel, 3 * H, H, *args)
        else:
            _cooperative_launch(gru.gru_backward_persistent_kernel, b.B, H, *args)
        dh = dh_pair[b.T % 2]
    else:
        dh, dh_prev = b.start()
        args = [dh, b.gates, b.h_prev_all, hn_all, b.w_hh, b.dhs, 0, b.da_x, da_h, dh_prev]
        step = specialized(gru.gru_step_backward_kernel, *args) if b.T else None
        for t in reversed(range(b.T)):
            args[0], args[6], args[9] = dh, t, dh_prev
            launch(step, b.grid, b.block, *args)
            dh, dh_prev = dh_prev, dh
    return _BPTT(dh, None, da_h, ((slice(None), b.h_prev_all),))


def _gru_classic_backward(b: _BackwardLoop):
    """Two kernels a step, n then rz: ∂L/∂(r⊙h) of every unit must exist before the r rows' da; or
    gru_classic_backward_persistent_kernel. W_hn's gradient takes r⊙h_{t−1}, which the n half stores."""
    H = b.H
    da_h = b.scratch("da_h", b.T, b.B, 3 * H)
    rh_all = b.scratch("rh_all", b.T, b.B, H)  # r⊙h_{t−1}, the input of W_hn
    d_rh = b.scratch("d_rh", b.B, H)  # ∂L/∂(r⊙h) of the step
    if b.persistent:
        dh_pair = b.result("dh_pair", 2, b.B, H)
        _cooperative_launch(gru.gru_classic_backward_persistent_kernel, b.B, H, b.dh_n, dh_pair, b.gates,
                            b.h_prev_all, d_rh, rh_all, b.w_hh, b.dhs, b.da_x, da_h)
        dh = dh_pair[b.T % 2]
    else:
        dh, dh_prev = b.start()
        n_args = [dh, b.gates, b.h_prev_all, b.w_hh, 0, b.da_x, da_h, d_rh, rh_all]
        rz_args = [dh, b.gates, b.h_prev_all, d_rh, b.w_hh, b.dhs, 0, b.da_x, da_h, dh_prev]
        if b.T:
            n_step = specialized(gru.gru_classic_step_backward_n_kernel, *n_args)
            rz_step = specialized(gru.gru_classic_step_backward_rz_kernel, *rz_args)
        for t in reversed(range(b.T)):
            n_args[0], n_args[4] = dh, t
            launch(n_step, b.grid, b.block, *n_args)
            rz_args[0], rz_args[6], rz_args[9] = dh, t, dh_prev
            launch(rz_step, b.grid, b.block, *rz_args)
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
    return workspace.fresh(shape, dtype)


def _zeros_from_host(shape, dtype):
    return workspace.fresh_copy(np.zeros(shape, dtype))


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
