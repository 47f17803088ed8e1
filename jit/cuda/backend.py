"""The jit.cuda backend: the contract's forward and backward, driving the kernels of jit.cuda.kernels.

This module is itself a backend (``name``, ``cells``, ``forward``, ``backward``, and
``available()``), like reference.backend, whose functions it mirrors step for step.

Where the data lives: NumPy arrays in give NumPy arrays out (copied to the device and
back); if x is a device array (a numba device array, or anything with
``__cuda_array_interface__``, such as a CUDA torch tensor), every result is a numba device
array and nothing leaves the device. Inputs are validated by reference.contract before
anything runs on the device; the finiteness of all device inputs is checked by one kernel.

Speed-relevant structure: forward is one matmul for the input projection of all steps,
then one fused kernel per step (two for gru_classic). Backward rebuilds h_{t−1} for every
t with one copy, runs one fused kernel per step (two for gru_classic), then the weight
gradients and dx as matmuls over all T·B rows at once. With ``persistent`` set, each time
loop is one cooperative launch instead (same bits; see ``persistent``).
"""
import os
from types import SimpleNamespace

import numpy as np
from numba import cuda

from reference.contract import (CELLS, PARAM_NAMES, BackwardResult, ForwardResult, Params, check_backward_inputs,
                                check_forward_inputs)

from . import elementwise, gru, lstm, rnn
from .matmul import column_sums, matmul
from .launch import SIMULATOR, TILES, LaunchError, blocks, cooperative_grid_limit, launch, synchronize

name = "jit.cuda"
cells = frozenset(CELLS)

#: Optional part of the contract for slow backends: the largest T, B, I, H the property suite
#: should draw. Under the simulator every thread is a Python thread, so shapes stay tiny
#: (still past the simulator's tiles: see jit.cuda.launch); on a GPU there is no limit.
max_test_sizes = {"T": 4, "B": 3, "I": 5, "H": 7} if SIMULATOR else None
#: And at most this many Hypothesis examples per property under the simulator. Measured for the
#: suite against jit.cuda alone on the 2-core CI machine (busy with other jobs, load ~5): the ci
#: profile's 12 took 3.6 CPU-minutes (6 min wall); 6 took 20 CPU-s, ~0.03 s an example, so only
#: the tiniest shapes; 8 take 75 CPU-s (under 3 min wall there): the 7th and 8th examples cost
#: ~0.6 s each, what one call near the size limits costs.
#: Tile edges are also covered deterministically by properties/test_jit_cuda.py.
max_test_examples = 8 if SIMULATOR else None
#: True when the kernels run on the CUDA simulator: results are exact, timings mean nothing
#: (reports.backends leaves such a backend out of every benchmark).
simulated = SIMULATOR

#: Each time loop, forward and backward, as one cooperative launch over all steps
#: (kernels.*_forward_persistent, *_backward_persistent) instead of one launch per step.
#: Off by default until a GPU run measures it: the per-step path is the one checked on a GPU (an
#: H200). Set by CELLBENCH_CUDA_PERSISTENT=1, or assign it.
persistent = os.environ.get("CELLBENCH_CUDA_PERSISTENT", "") not in ("", "0")

if SIMULATOR:
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray as _DeviceArray
else:
    from numba.cuda.cudadrv.devicearray import DeviceNDArray as _DeviceArray

#: Array types forward and backward accept (the contract also accepts __cuda_array_interface__).
ARRAY_TYPES = (np.ndarray, _DeviceArray)


def available() -> bool:
    """True when kernels can run here: a CUDA GPU with its driver, or the CUDA simulator."""
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver install: not usable, and not this backend's error
        return False


# ----- where the data lives ----------------------------------------------------------------

def is_device_array(a) -> bool:
    return isinstance(a, _DeviceArray) or hasattr(a, "__cuda_array_interface__")


def _device_view(a):
    """A numba device array viewing a foreign device array (no copy); anything else unchanged."""
    if a is not None and not isinstance(a, _DeviceArray) and hasattr(a, "__cuda_array_interface__"):
        return cuda.as_cuda_array(a)
    return a


def _to_device(a):
    """The array on the device: device arrays as they are, NumPy arrays copied (contiguous)."""
    if a is None or isinstance(a, _DeviceArray):
        return a
    return cuda.to_device(np.ascontiguousarray(a))


def _params_view(params):
    """params with foreign device arrays viewed as numba ones; params itself if it lacks a field
    (so that the contract's check reports the missing field)."""
    if not all(hasattr(params, p) for p in PARAM_NAMES):
        return params
    return Params(*(_device_view(getattr(params, p)) for p in PARAM_NAMES))


def _finiteness(named_arrays):
    """{id(a): all finite} for every array: NumPy's check on host arrays, one kernel launch for all
    device arrays together (one block row per array) and one copy back."""
    found = {}
    on_device = [a for _, a in named_arrays if a is not None and isinstance(a, _DeviceArray)]
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


# ----- small device helpers ----------------------------------------------------------------

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


_UNUSED_BIAS = {}


def _step_grid(B, H):
    """Step kernels: threadIdx.x over hidden units (or columns of ∂L/∂h), threadIdx.y over batch rows."""
    return (blocks(H, TILES.units), blocks(B, TILES.rows)), (TILES.units, TILES.rows)


def _as_2d(a3):
    """(T, B, N) contiguous device array -> (T·B, N) view."""
    T, B, N = a3.shape
    return a3.reshape(T * B, N)


# ----- no rows or no units: every per-step array is empty ------------------------------------
# Handled apart, before any kernel, because a real GPU cannot index an empty device array:
# numba-cuda (0.30.4, seen on an H200) slices 4 bytes of its NULL pointer for a[t] and raises
# "non-empty slice into empty slice". The simulator's arrays are NumPy's and do not show it.

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
    """backward when B = 0 or H = 0: the weight and bias gradients are sums over no row or of no
    unit, and dx = ∂L/∂a · W_ih a sum over no gate row: all zeros; dh0 and dc0 have no elements."""
    return BackwardResult(_zeros_from_host((T, B, I), dtype), _empty((B, H), dtype),
                          _empty((B, H), dtype) if cell == "lstm" else None,
                          _zeros_from_host((G * H, I), dtype), _zeros_from_host((G * H, H), dtype),
                          _zeros_from_host((G * H,), dtype), _zeros_from_host((G * H,), dtype))


# ----- forward -------------------------------------------------------------------------------

def forward(cell, params, x, h0, c0=None, *, training=True):
    """Run the cell over x (T, B, I) from h0 (and c0 for lstm); see reference.contract."""
    on_device = is_device_array(x)
    params = _params_view(params)
    x, h0, c0 = _device_view(x), _device_view(h0), _device_view(c0)
    T, B, I, H, G, dtype = _validate(check_forward_inputs, cell, params, (x, h0, c0))
    if B == 0 or H == 0:
        result = _forward_without_rows_or_units(cell, T, B, H, G, dtype, training)
        return result if on_device else _to_host(result)
    w_ih, w_hh, b_ih, b_hh = (_to_device(getattr(params, p)) for p in PARAM_NAMES)
    x, h0, c0 = _to_device(x), _to_device(h0), _to_device(c0)
    has_c = cell == "lstm"

    # The input projection of every step at once: xw = x W_ihᵀ + b_ih, (T·B, G·H).
    xw = cuda.device_array((T, B, G * H), dtype)
    _matmul(x.reshape(T * B, I) if x.is_c_contiguous() else _to_device(x.copy_to_host()).reshape(T * B, I),
            w_ih, _as_2d(xw), trans_b=True, bias=b_ih)

    if persistent and T:
        result = _forward_persistent(cell, xw, h0, c0, w_hh, b_hh, training)
        synchronize(f"forward({cell!r})")
        return result if on_device else _to_host(result)

    hs = cuda.device_array((T, B, H), dtype)
    cs = cuda.device_array((T, B, H), dtype) if has_c and training else None
    gates = cuda.device_array((T, B, G * H), dtype) if training else None
    # Inference keeps no per-step storage: the gates of one step and (lstm) two cell states.
    gate_scratch = None if training else cuda.device_array((B, G * H), dtype)
    c_pingpong = [cuda.device_array((B, H), dtype) for _ in range(2)] if has_c and not training else None
    rh = cuda.device_array((B, H), dtype) if cell == "gru_classic" else None
    grid, block = _step_grid(B, H)

    h_prev, c_prev = h0, c0
    for t in range(T):
        gates_t = gates[t] if training else gate_scratch
        h_next = hs[t]
        if cell in ("rnn_tanh", "rnn_relu"):
            launch(rnn.rnn_step_forward_kernel, grid, block, xw[t], h_prev, w_hh, b_hh, cell == "rnn_relu", h_next,
                   gates_t if training else h_next)
        elif has_c:
            c_next = cs[t] if training else c_pingpong[t % 2]
            launch(lstm.lstm_step_forward_kernel, grid, block, xw[t], h_prev, c_prev, w_hh, b_hh, h_next, c_next, gates_t)
            c_prev = c_next
        elif cell == "gru":
            launch(gru.gru_step_forward_kernel, grid, block, xw[t], h_prev, w_hh, b_hh, h_next, gates_t)
        else:  # gru_classic: r⊙h for all units must exist before W_hn (r⊙h) starts
            launch(gru.gru_classic_step_forward_rz_kernel, grid, block, xw[t], h_prev, w_hh, b_hh, gates_t, rh)
            launch(gru.gru_classic_step_forward_n_kernel, grid, block, xw[t], h_prev, rh, w_hh, b_hh, h_next, gates_t)
        h_prev = h_next
    h_n = _copy(h_prev)  # a copy: h0 itself when T = 0, and results never alias inputs
    c_n = _copy(c_prev) if has_c else None
    synchronize(f"forward({cell!r})")
    result = ForwardResult(hs, h_n, c_n, cs, gates)
    return result if on_device else _to_host(result)


def _cooperative_launch(kernel, B, H, *args):
    """Launch a persistent kernel on a 1-D grid: a block per (units × rows) tile of a step, or as
    many as can be resident at once (a cooperative launch needs them all resident); the kernel
    walks the remaining tiles itself."""
    block = (TILES.units, TILES.rows)
    tiles = blocks(H, TILES.units) * blocks(B, TILES.rows)
    resident = cooperative_grid_limit(kernel, block, *args)
    if resident < 1:  # launch() would skip the empty grid, and no result would be written
        raise LaunchError(f"jit.cuda: {kernel.py_func.__name__}: not one block of {block} threads can be "
                          f"resident for a cooperative launch")
    launch(kernel, (min(tiles, resident),), block, *args)


def _forward_persistent(cell, xw, h0, c0, w_hh, b_hh, training):
    """The time loop as one cooperative launch (kernels.*_forward_persistent), which also copies h0
    (and c0) into the first slot of the state arrays it steps through and h_T (c_T) out; hs (and cs)
    are views past the first slot."""
    T, B, GH = xw.shape
    H = w_hh.shape[1]
    dtype = xw.dtype
    hs_ext = cuda.device_array((T + 1, B, H), dtype)
    h_n = cuda.device_array((B, H), dtype)
    gates = cuda.device_array((T if training else 1, B, GH), dtype)  # inference: one step's scratch
    cs = c_n = None
    if cell == "lstm":  # cell states: all T + 1 (training), or two in turn
        c_ext = cuda.device_array((T + 1 if training else 2, B, H), dtype)
        c_n = cuda.device_array((B, H), dtype)
        cs = c_ext[1:] if training else None
        _cooperative_launch(lstm.lstm_forward_persistent_kernel, B, H, xw, h0, c0, hs_ext, c_ext, w_hh, b_hh, gates, h_n, c_n)
    elif cell in ("rnn_tanh", "rnn_relu"):
        _cooperative_launch(rnn.rnn_forward_persistent_kernel, B, H, xw, h0, hs_ext, w_hh, b_hh, cell == "rnn_relu", gates,
                            h_n)
    elif cell == "gru":
        _cooperative_launch(gru.gru_forward_persistent_kernel, B, H, xw, h0, hs_ext, w_hh, b_hh, gates, h_n)
    else:
        rh = cuda.device_array((B, H), dtype)
        _cooperative_launch(gru.gru_classic_forward_persistent_kernel, B, H, xw, h0, hs_ext, w_hh, b_hh, gates, rh, h_n)
    return ForwardResult(hs_ext[1:], h_n, c_n, cs, gates if training else None)


def _backward_persistent(cell, dh_n, dc_n, dhs, gates, w_hh, da_x, da_h, *, cs=None, c0=None, h_prev_all=None,
                         hn_all=None, d_rh=None, rh_all=None):
    """BPTT's time loop as one cooperative launch (kernels.*_backward_persistent), which also starts
    it (∂L/∂h_T = dh_n + dhs[T − 1], ∂L/∂c_T = dc_n or 0) in slot 0 of its gradient pairs; returns
    ∂L/∂h0 and (lstm) ∂L/∂c0: the slot of their pairs that the last step wrote."""
    T, B, _ = gates.shape
    H = w_hh.shape[1]
    dh_pair = cuda.device_array((2, B, H), dh_n.dtype)
    if cell == "lstm":
        dc_pair = cuda.device_array((2, B, H), dh_n.dtype)
        _cooperative_launch(lstm.lstm_backward_persistent_kernel, B, H, dh_n, dh_n if dc_n is None else dc_n, dc_n is not None,
                            dh_pair, dc_pair, gates, cs, c0, w_hh, dhs, da_x)
        return dh_pair[T % 2], dc_pair[T % 2]
    if cell in ("rnn_tanh", "rnn_relu"):
        _cooperative_launch(rnn.rnn_backward_persistent_kernel, B, H, dh_n, dh_pair, gates, w_hh, cell == "rnn_relu", dhs,
                            da_x)
    elif cell == "gru":
        _cooperative_launch(gru.gru_backward_persistent_kernel, B, H, dh_n, dh_pair, gates, h_prev_all, hn_all, w_hh, dhs,
                            da_x, da_h)
    else:
        _cooperative_launch(gru.gru_classic_backward_persistent_kernel, B, H, dh_n, dh_pair, gates, h_prev_all, d_rh, rh_all,
                            w_hh, dhs, da_x, da_h)
    return dh_pair[T % 2], None


def _to_host(result):
    return type(result)(*(None if a is None else a.copy_to_host() for a in result))


# ----- backward ------------------------------------------------------------------------------

def backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n=None):
    """Backpropagation through time; returns the gradients of L given ∂L/∂hs, ∂L/∂h_n, ∂L/∂c_n."""
    on_device = is_device_array(x)
    params = _params_view(params)
    x, h0, c0 = _device_view(x), _device_view(h0), _device_view(c0)
    dhs, dh_n, dc_n = _device_view(dhs), _device_view(dh_n), _device_view(dc_n)
    if hasattr(fwd, "hs") and hasattr(fwd, "gates"):  # else the contract's check reports what is missing
        fwd = SimpleNamespace(**{a: _device_view(getattr(fwd, a, None)) for a in ("hs", "gates", "cs")})
    T, B, I, H, G, dtype = _validate(check_backward_inputs, cell, params, (x, h0, c0, fwd, dhs, dh_n, dc_n))
    if B == 0 or H == 0:
        result = _backward_without_rows_or_units(cell, T, B, I, H, G, dtype)
        return result if on_device else _to_host(result)
    w_ih, w_hh, b_ih, b_hh = (_to_device(getattr(params, p)) for p in PARAM_NAMES)
    x, h0, c0, dhs, dh_n, dc_n = (_to_device(a) for a in (x, h0, c0, dhs, dh_n, dc_n))
    hs, gates = _to_device(fwd.hs), _to_device(fwd.gates)
    cs = _to_device(fwd.cs) if cell == "lstm" else None
    has_c = cell == "lstm"
    grid, block = _step_grid(B, H)

    # h_{t−1} for every t, (T, B, H): h0, then hs[0..T−2]. Read by the step kernels and by dW_hh.
    h_prev_all = cuda.device_array((T, B, H), dtype)
    if T:
        _launch_1d(elementwise.copy2d, B * H, h0, h_prev_all[0])
        if T > 1:
            _launch_1d(elementwise.copy2d, (T - 1) * B * H, _as_2d(hs[:T - 1]) if hs.is_c_contiguous() else
                       _as_2d(_to_device(hs.copy_to_host()[:T - 1])), _as_2d(h_prev_all[1:]))
    # The gradient of the gates' pre-activations: input side (dW_ih, db_ih, dx) and hidden side
    # (dW_hh, db_hh). They differ only in the n block of the GRUs.
    da_x = cuda.device_array((T, B, G * H), dtype)
    da_h = cuda.device_array((T, B, G * H), dtype) if cell in ("gru", "gru_classic") else da_x
    if cell == "gru":  # hn = W_hn h_{t−1} + b_hn for every step, which r scaled in forward
        hn_all = cuda.device_array((T, B, H), dtype)
        _matmul(_as_2d(h_prev_all), w_hh[2 * H:], _as_2d(hn_all), trans_b=True, bias=b_hh[2 * H:])
    if cell == "gru_classic":
        rh_all = cuda.device_array((T, B, H), dtype)  # r⊙h_{t−1}, the input of W_hn
        d_rh = cuda.device_array((B, H), dtype)

    if persistent and T:
        dh, dc = _backward_persistent(cell, dh_n, dc_n, dhs, gates, w_hh, da_x, da_h, cs=cs, c0=c0,
                                      h_prev_all=h_prev_all, hn_all=hn_all if cell == "gru" else None,
                                      d_rh=d_rh if cell == "gru_classic" else None,
                                      rh_all=rh_all if cell == "gru_classic" else None)
    else:
        dh = cuda.device_array((B, H), dtype)  # ∂L/∂h_t, in full: from the loss and from step t+1
        if T:
            _launch_1d(elementwise.add2d, B * H, dh_n, dhs[T - 1], dh)
        else:
            _launch_1d(elementwise.copy2d, B * H, dh_n, dh)
        dh_next_buffer = cuda.device_array((B, H), dtype)
        if has_c:
            dc = _copy(dc_n) if dc_n is not None else _zeros((B, H), dtype)
            dc_next_buffer = cuda.device_array((B, H), dtype)

        for t in reversed(range(T)):
            h_prev = h_prev_all[t]
            dhs_prev = dhs[t - 1] if t else dhs[0]
            use_dhs_prev = t > 0  # h_{t−1} also feeds the loss directly, unless it is h0
            dh_prev = dh_next_buffer
            if cell in ("rnn_tanh", "rnn_relu"):
                launch(rnn.rnn_step_backward_kernel, grid, block, dh, gates[t], w_hh, cell == "rnn_relu", dhs_prev,
                       use_dhs_prev, da_x[t], dh_prev)
            elif has_c:
                c_prev = cs[t - 1] if t else c0
                launch(lstm.lstm_step_backward_kernel, grid, block, dh, dc, gates[t], c_prev, cs[t], w_hh, dhs_prev,
                       use_dhs_prev, da_x[t], dh_prev, dc_next_buffer)
                dc, dc_next_buffer = dc_next_buffer, dc
            elif cell == "gru":
                launch(gru.gru_step_backward_kernel, grid, block, dh, gates[t], h_prev, hn_all[t], w_hh, dhs_prev,
                       use_dhs_prev, da_x[t], da_h[t], dh_prev)
            else:  # gru_classic: ∂L/∂(r⊙h) for all units must exist before the r rows' da
                launch(gru.gru_classic_step_backward_n_kernel, grid, block, dh, gates[t], h_prev, w_hh, da_x[t], da_h[t],
                       d_rh, rh_all[t])
                launch(gru.gru_classic_step_backward_rz_kernel, grid, block, dh, gates[t], h_prev, d_rh, w_hh, dhs_prev,
                       use_dhs_prev, da_x[t], da_h[t], dh_prev)
            dh, dh_next_buffer = dh_prev, dh

    # Weight gradients and dx over all T·B rows at once (twin of the sums over t in reference.backend).
    da_x2, da_h2 = _as_2d(da_x), _as_2d(da_h)
    dw_ih = cuda.device_array((G * H, I), dtype)
    _matmul(da_x2, x.reshape(T * B, I) if x.is_c_contiguous() else _as_2d(_to_device(x.copy_to_host())),
            dw_ih, trans_a=True)
    dw_hh = cuda.device_array((G * H, H), dtype)
    if cell == "gru_classic":
        _matmul(da_h2[:, :2 * H], _as_2d(h_prev_all), dw_hh[:2 * H], trans_a=True)
        _matmul(da_h2[:, 2 * H:], _as_2d(rh_all), dw_hh[2 * H:], trans_a=True)
    else:
        _matmul(da_h2, _as_2d(h_prev_all), dw_hh, trans_a=True)
    db_ih = cuda.device_array((G * H,), dtype)
    _launch_1d(column_sums, G * H, da_x2, db_ih)
    db_hh = cuda.device_array((G * H,), dtype)
    _launch_1d(column_sums, G * H, da_h2, db_hh)
    dx = cuda.device_array((T, B, I), dtype)
    _matmul(da_x2, w_ih, _as_2d(dx))
    dh0 = dh  # fresh buffers of this call, never the caller's dh_n or dc_n
    dc0 = dc if has_c else None
    synchronize(f"backward({cell!r})")
    result = BackwardResult(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh)
    return result if on_device else _to_host(result)
