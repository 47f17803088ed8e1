"""The jit.cpu backend: the contract (see reference.contract) on Numba CPU kernels.

This module is the backend (``name``, ``cells``, ``forward``, ``backward``), the same shape as
reference.backend, whose results it must reproduce. Each call:

1. validates its arguments with reference.contract, before any computation;
2. runs one kernel per thread for the whole time loop (jit.cpu.lstm, gru, rnn) on a tile of
   rows × units (jit.cpu.tiling); forward, each kernel first projects its tile's inputs;
3. backward only: the weight, bias and input gradients as GEMMs on the stored ∂L/∂a
   (jit.cpu.gemms).

Per cell, one table entry says how to launch its kernels (FORWARD, BACKWARD), as
reference.backend's STEPS does for its step functions.
"""
from functools import partial
from typing import Callable, NamedTuple

import numpy as np

from reference.contract import CELLS, BackwardResult, ForwardResult, check_backward_inputs, check_forward_inputs

from .arrays import all_finite, copy_values, kernel_array, previous_hidden
from .gemms import bias_grad, matmul_rows, weight_grad
from .gru import gru_backward, gru_classic_backward, gru_classic_forward, gru_forward
from .lstm import lstm_backward, lstm_forward
from .rnn import rnn_backward, rnn_forward
from .threads import call_threads, threads_for
from .tiling import Tiling, projection_scratch, run_on_row_chunks, run_on_tiles, tiling_for
from .workspace import scratch

name = "jit.cpu"
cells = frozenset(CELLS)


class CPUForwardResult(ForwardResult):
    """ForwardResult plus, for gru with training, ``hns`` = W_hn h + b_hn per step (T, B, H),
    which backward recomputes (one GEMM) when a caller's rebuilt result lacks it."""


class ForwardCall(NamedTuple):
    """One forward call's kernel arrays (kernel_array'd inputs, fresh outputs) and tiling."""
    x: np.ndarray
    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray
    b_hh: np.ndarray
    h0: np.ndarray
    c0: np.ndarray  # None but for lstm
    training: bool
    hs: np.ndarray
    h_n: np.ndarray
    c_n: np.ndarray  # lstm
    cs: np.ndarray  # lstm, training
    gates: np.ndarray  # training
    hns: np.ndarray  # gru, training
    tiling: Tiling
    xw: np.ndarray  # each tile's input projection (tiling.projection_scratch)


def _lstm_forward(f: ForwardCall):
    run_on_tiles(lstm_forward, f.x, f.w_ih, f.w_hh, f.b_ih + f.b_hh, f.h0, f.c0, f.training,
                 f.hs, f.cs, f.gates, f.h_n, f.c_n, tiling=f.tiling, own=f.xw)


def _gru_forward(f: ForwardCall):
    run_on_tiles(gru_forward, f.x, f.w_ih, f.w_hh, f.b_ih, f.b_hh, f.h0, f.training,
                 f.hs, f.gates, f.hns, f.h_n, tiling=f.tiling, own=f.xw)


def _gru_classic_forward(f: ForwardCall):
    H = f.h0.shape[1]
    run_on_row_chunks(gru_classic_forward, f.x, f.w_ih, f.w_hh[:2 * H], f.w_hh[2 * H:], f.b_ih, f.b_hh, f.h0,
                      f.training, f.hs, f.gates, f.h_n, tiling=f.tiling, own=f.xw)


def _rnn_forward(f: ForwardCall, relu: bool):
    run_on_tiles(rnn_forward, f.x, f.w_ih, f.w_hh, f.b_ih + f.b_hh, f.h0, relu, f.hs, f.h_n,
                 tiling=f.tiling, own=f.xw)
    if f.training:  # for rnn_* the gate is the activation output itself
        copy_values(f.gates.reshape(-1), f.hs.reshape(-1))  # not hs.copy(): see copy_values


class BackwardCall(NamedTuple):
    """One backward call's kernel arrays, its scratch ∂L/∂a (da) and outputs, and tiling."""
    params: object
    w_hh: np.ndarray
    h0: np.ndarray
    c0: np.ndarray
    fwd: object
    hs: np.ndarray
    gates: np.ndarray
    dhs: np.ndarray
    dh_n: np.ndarray
    dc_n: np.ndarray
    da: np.ndarray  # (T, B, G·H) ∂L/∂(W_ih x + b_ih)
    dh0: np.ndarray
    dc0: np.ndarray
    tiling: Tiling
    n_threads: int


class HiddenSide(NamedTuple):
    """What backward's W_hh gradient multiplies: ∂L/∂(W_hh h + b_hh) (da itself but for gru),
    and what W_hh multiplied when it was not h_{t-1} (gru_classic's r⊙h_{t-1}, else None)."""
    da_h: np.ndarray
    inputs: np.ndarray = None


def _lstm_backward(b: BackwardCall) -> HiddenSide:
    B, H = b.dh0.shape
    dc_n = np.zeros((B, H), b.da.dtype) if b.dc_n is None else kernel_array(b.dc_n)
    run_on_tiles(lstm_backward, b.w_hh, kernel_array(b.c0), kernel_array(b.fwd.cs), b.gates, b.dhs, b.dh_n, dc_n,
                 b.da, b.dh0, b.dc0, tiling=b.tiling)
    return HiddenSide(b.da)


def _gru_backward(b: BackwardCall) -> HiddenSide:
    hns = gru_hidden_terms(b.fwd, b.h0, b.w_hh, kernel_array(b.params.b_hh), b.dh0.shape[1], b.n_threads)
    da_h = scratch("da_h", b.da.shape, b.da.dtype)
    run_on_tiles(gru_backward, b.w_hh, b.h0, b.hs, b.gates, hns, b.dhs, b.dh_n, b.da, da_h, b.dh0, tiling=b.tiling)
    return HiddenSide(da_h)


def _gru_classic_backward(b: BackwardCall) -> HiddenSide:
    T, B, H = b.hs.shape
    rh = scratch("h_side_inputs", (T, B, H), b.da.dtype)  # r⊙h_{t-1}, filled by the kernel
    run_on_row_chunks(gru_classic_backward, b.w_hh[:2 * H], b.w_hh[2 * H:], b.h0, b.hs, b.gates, b.dhs, b.dh_n,
                      b.da, rh, b.dh0, tiling=b.tiling)
    return HiddenSide(b.da, rh)


def _rnn_backward(b: BackwardCall, relu: bool) -> HiddenSide:
    run_on_tiles(rnn_backward, b.w_hh, b.hs, b.dhs, b.dh_n, relu, b.da, b.dh0, tiling=b.tiling)
    return HiddenSide(b.da)


class CellKernels(NamedTuple):
    forward: Callable  # (ForwardCall) -> None: fills the call's outputs
    backward: Callable  # (BackwardCall) -> HiddenSide: fills da, dh0 (dc0)


KERNELS = {
    "rnn_tanh": CellKernels(partial(_rnn_forward, relu=False), partial(_rnn_backward, relu=False)),
    "rnn_relu": CellKernels(partial(_rnn_forward, relu=True), partial(_rnn_backward, relu=True)),
    "lstm": CellKernels(_lstm_forward, _lstm_backward),
    "gru": CellKernels(_gru_forward, _gru_backward),
    "gru_classic": CellKernels(_gru_classic_forward, _gru_classic_backward),
}


# ---- forward -------------------------------------------------------------------------------

def forward(cell, params, x, h0, c0=None, *, training=True):
    """Run the cell over x (T, B, I) from h0 (and c0 for lstm); see reference.contract."""
    shapes = check_forward_inputs(cell, params, x, h0, c0, isfinite=all_finite)
    T, B, I, H, G, _ = shapes
    return _forward(cell, params, x, h0, c0, training, shapes, threads_for(T * B * G * H * (I + H)))


def _forward(cell, params, x, h0, c0, training, shapes, n_threads):
    T, B, I, H, G, dtype = shapes
    lstm = cell == "lstm"
    keep = (T if training else 0, B, H)  # per-step storage only when training
    hs, h_n = np.empty((T, B, H), dtype), np.empty((B, H), dtype)
    c_n = np.empty((B, H), dtype) if lstm else None
    cs = np.empty(keep, dtype) if lstm else None
    gates = np.empty((keep[0], B, G * H), dtype)
    hns = np.empty(keep, dtype) if cell == "gru" else None
    if T == 0:
        h_n[:] = h0
        if lstm:
            c_n[:] = c0
    else:
        tiling = tiling_for(cell, B, H, n_threads, G * H * H * dtype.itemsize)
        KERNELS[cell].forward(ForwardCall(
            kernel_array(x), kernel_array(params.w_ih), kernel_array(params.w_hh), kernel_array(params.b_ih),
            kernel_array(params.b_hh), kernel_array(h0), kernel_array(c0) if lstm else None, training,
            hs, h_n, c_n, cs, gates, hns, tiling, projection_scratch(tiling, T, G, dtype)))
    if not training:
        return CPUForwardResult(hs, h_n, c_n, None, None)
    result = CPUForwardResult(hs, h_n, c_n, cs, gates)
    if hns is not None:
        result.hns = hns
    return result


# ---- backward ------------------------------------------------------------------------------

def gru_hidden_terms(fwd, h0, w_hh, b_hh, H, n_threads):
    """hns = W_hn h_{t-1} + b_hn (T, B, H): from forward when it kept them, else one GEMM."""
    hns = getattr(fwd, "hns", None)
    if isinstance(hns, np.ndarray) and hns.shape == fwd.hs.shape and hns.dtype == fwd.hs.dtype:
        return kernel_array(hns)
    T, B, _ = fwd.hs.shape
    h_prev = previous_hidden(np.asarray(fwd.hs), h0).reshape(T * B, H)
    return (matmul_rows(h_prev, w_hh[2 * H:].T, n_threads) + b_hh[2 * H:]).reshape(T, B, H)


def backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n=None):
    """Backpropagation through time; returns the gradients of L given ∂L/∂hs, ∂L/∂h_n, ∂L/∂c_n."""
    shapes = check_backward_inputs(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n, isfinite=all_finite)
    T, B, I, H, G, _ = shapes
    # The GEMMs after the loop: dx (T·B × G·H × I), dW_ih and dW_hh (G·H × T·B × I or H), and
    # for gru the recomputed W_hn h (T·B × H × H), the largest under T·B·G·H·max(I, H).
    with call_threads(2 * T * B * G * H * (I + H), T * B * G * H * max(I, H)) as n_threads:
        return _backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n, shapes, n_threads)


def _backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n, shapes, n_threads):
    T, B, I, H, G, dtype = shapes
    lstm = cell == "lstm"
    h0k, hs = kernel_array(h0), kernel_array(fwd.hs)
    dh0 = np.empty((B, H), dtype)
    dc0 = np.empty((B, H), dtype) if lstm else None
    da = scratch("da", (T, B, G * H), dtype)  # ∂L/∂(pre-activations), W_ih side; see jit.cpu.workspace
    hidden = HiddenSide(da)
    if T == 0:
        dh0[:] = dh_n
        if lstm:
            dc0[:] = 0 if dc_n is None else dc_n
    else:
        hidden = KERNELS[cell].backward(BackwardCall(
            params, kernel_array(params.w_hh), h0k, c0, fwd, hs, kernel_array(fwd.gates), kernel_array(dhs),
            kernel_array(dh_n), dc_n, da, dh0, dc0, tiling_for(cell, B, H, n_threads, G * H * H * dtype.itemsize),
            n_threads))
    dx = matmul_rows(da.reshape(T * B, G * H), kernel_array(params.w_ih), n_threads).reshape(T, B, I)
    dw_ih, db_ih = weight_grad(da, x, n_threads), bias_grad(da)
    h_prev = previous_hidden(hs, h0k)
    # Where the same ∂L/∂a feeds both biases, db_hh is db_ih: lstm and rnn_* (da_h is da), and
    # gru_classic, whose W_hn output is not scaled by r.
    db_hh = db_ih.copy() if hidden.da_h is da else bias_grad(hidden.da_h)
    if hidden.inputs is None:
        dw_hh = weight_grad(hidden.da_h, h_prev, n_threads)
    else:  # gru_classic: the r, z rows multiplied h_{t-1}, the n rows r⊙h_{t-1}
        dw_hh = np.concatenate([weight_grad(da[:, :, :2 * H], h_prev, n_threads),
                                weight_grad(np.ascontiguousarray(da[:, :, 2 * H:]), hidden.inputs, n_threads)])
    return BackwardResult(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh)
