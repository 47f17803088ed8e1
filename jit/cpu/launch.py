"""Each cell's kernels on the tiles of one direction of a call, from one table (KERNELS), and
the GEMMs after backward's time loop; shared by a cell's call (jit.cpu.backend) and a layer's
(jit.cpu.layers).

A table entry turns a call's arrays (ForwardCall, BackwardCall) into *pieces*, one
(kernel, arguments) pair per tile, which the caller runs with jit.cpu.pool.run_in_parallel:
a layer runs both directions' pieces in one parallel run. Per cell, as reference.backend's
STEPS does for its step functions.
"""
from functools import partial
from typing import Callable, NamedTuple

import numpy as np

from .arrays import copy_values, kernel_array, previous_hidden
from .gemms import bias_grad, gradients_on_the_caller, matmul_rows, weight_grad
from .gru import gru_backward, gru_classic_backward, gru_classic_forward, gru_forward
from .lstm import lstm_backward, lstm_forward
from .rnn import rnn_backward, rnn_forward
from .threads import small_call
from .tiling import Tiling, row_chunk_pieces, tile_pieces
from .workspace import scratch


class ForwardCall(NamedTuple):
    """One direction's kernel arrays (kernel_array'd inputs, outputs to fill) and tiles."""
    x: np.ndarray
    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray
    b_hh: np.ndarray
    h0: np.ndarray  # (B, H)
    c0: np.ndarray  # None but for lstm
    training: bool
    lengths: np.ndarray  # (B,) int64: each row's steps (jit.cpu.steps)
    order: np.ndarray  # (B,) int64: the positions' rows
    reverse: bool
    hs: np.ndarray  # (T, B, ≥ column0 + H): this direction's from column column0
    column0: int
    h_n: np.ndarray  # (B, H)
    c_n: np.ndarray  # lstm
    cs: np.ndarray  # lstm, training
    gates: np.ndarray  # training
    hns: np.ndarray  # gru, training
    h_state: np.ndarray  # (2, B, H): a loop that is not direct keeps its state there
    tiling: Tiling
    xw: np.ndarray  # each tile's input projection (tiling.projection_scratch)
    x_rows: np.ndarray  # each tile's gathered inputs, when it gathers them (tiling.gather_scratch)


class BackwardCall(NamedTuple):
    """One direction's backward kernel arrays, its scratch ∂L/∂a (da) and outputs, and tiles."""
    w_hh: np.ndarray
    b_hh: np.ndarray
    h0: np.ndarray
    c0: np.ndarray
    hs: np.ndarray  # forward's, this direction's from column column0
    column0: int
    cs: np.ndarray  # lstm
    gates: np.ndarray
    hns: np.ndarray  # gru: forward's W_hn h + b_hn, or None (recomputed)
    dhs: np.ndarray  # (T, B, ≥ column0 + H)
    dh_n: np.ndarray
    dc_n: np.ndarray  # lstm: an array (zeros when the caller gave None)
    lengths: np.ndarray
    order: np.ndarray
    reverse: bool
    da: np.ndarray  # (T, B, G·H) ∂L/∂(W_ih x + b_ih), zeros past each row's length
    da_state: np.ndarray  # (2, B, G·H): the next product's rows of a loop that is not direct
    dh0: np.ndarray
    dc0: np.ndarray
    tiling: Tiling
    n_threads: int
    role: str  # suffix of this direction's scratch arrays (jit.cpu.workspace)


class HiddenSide(NamedTuple):
    """What backward's W_hh gradient multiplies: ∂L/∂(W_hh h + b_hh) (da itself but for gru),
    and what W_hh multiplied when it was not h_{t-1} (gru_classic's r⊙h_{t-1}, else None)."""
    da_h: np.ndarray
    inputs: np.ndarray = None


def _no_finish():
    pass


def _lstm_forward(f: ForwardCall):
    return tile_pieces(lstm_forward, f.x, f.w_ih, f.w_hh, f.b_ih + f.b_hh, f.h0, f.c0, f.training, f.lengths,
                       f.order, f.reverse, f.hs, f.column0, f.cs, f.gates, f.h_n, f.c_n, f.h_state,
                       tiling=f.tiling, own=(f.xw, f.x_rows)), _no_finish


def _gru_forward(f: ForwardCall):
    return tile_pieces(gru_forward, f.x, f.w_ih, f.w_hh, f.b_ih, f.b_hh, f.h0, f.training, f.lengths, f.order,
                       f.reverse, f.hs, f.column0, f.gates, f.hns, f.h_n, f.h_state,
                       tiling=f.tiling, own=(f.xw, f.x_rows)), _no_finish


def _gru_classic_forward(f: ForwardCall):
    H = f.h0.shape[1]
    return row_chunk_pieces(gru_classic_forward, f.x, f.w_ih, f.w_hh[:2 * H], f.w_hh[2 * H:], f.b_ih, f.b_hh,
                            f.h0, f.training, f.lengths, f.order, f.reverse, f.hs, f.column0, f.gates, f.h_n,
                            tiling=f.tiling, own=(f.xw, f.x_rows)), _no_finish


def _rnn_forward(f: ForwardCall, relu: bool):
    def gates_are_hs():  # for rnn_* the gate is the activation output itself (a layer keeps none)
        if f.training and f.gates.size:
            copy_values(f.gates.reshape(-1), f.hs.reshape(-1))  # not hs.copy(): see copy_values
    pieces = tile_pieces(rnn_forward, f.x, f.w_ih, f.w_hh, f.b_ih + f.b_hh, f.h0, relu, f.lengths, f.order,
                         f.reverse, f.hs, f.column0, f.h_n, f.h_state, tiling=f.tiling, own=(f.xw, f.x_rows))
    return pieces, gates_are_hs


def _lstm_backward(b: BackwardCall):
    return tile_pieces(lstm_backward, b.w_hh, b.c0, b.cs, b.gates, b.dhs, b.column0, b.dh_n, b.dc_n, b.lengths,
                       b.order, b.reverse, b.da, b.da_state, b.dh0, b.dc0, tiling=b.tiling), HiddenSide(b.da)


def kept_hidden_terms(hns, hs, H):
    """hns = W_hn h_{t-1} + b_hn (T, B, H) that forward kept, if it fits this call (hs's T, B and
    dtype), else None."""
    if isinstance(hns, np.ndarray) and hns.shape == hs.shape[:2] + (H,) and hns.dtype == hs.dtype:
        return hns
    return None


def gru_hidden_terms(hns, hs, h0, w_hh, b_hh, H, n_threads):
    """hns = W_hn h_{t-1} + b_hn (T, B, H): forward's when it kept them, else one GEMM (a
    cell's call whose forward result was rebuilt by the caller)."""
    if kept_hidden_terms(hns, hs, H) is not None:
        return kernel_array(hns)
    T, B, _ = hs.shape
    h_prev = previous_hidden(np.asarray(hs), h0).reshape(T * B, H)
    return (matmul_rows(h_prev, w_hh[2 * H:].T, n_threads) + b_hh[2 * H:]).reshape(T, B, H)


def _gru_backward(b: BackwardCall):
    H = b.dh0.shape[1]
    hns = gru_hidden_terms(b.hns, b.hs, b.h0, b.w_hh, b.b_hh, H, b.n_threads)
    da_h = scratch("da_h" + b.role, b.da.shape, b.da.dtype)
    pieces = tile_pieces(gru_backward, b.w_hh, b.h0, b.hs, b.column0, b.gates, hns, b.dhs, b.dh_n, b.lengths,
                         b.order, b.reverse, b.da, da_h, b.da_state, b.dh0, tiling=b.tiling)
    return pieces, HiddenSide(da_h)


def _gru_classic_backward(b: BackwardCall):
    T, B, _ = b.da.shape
    H = b.dh0.shape[1]
    rh = scratch("h_side_inputs" + b.role, (T, B, H), b.da.dtype)  # r⊙h_{t-1}, filled by the kernel
    pieces = row_chunk_pieces(gru_classic_backward, b.w_hh[:2 * H], b.w_hh[2 * H:], b.h0, b.hs, b.column0, b.gates,
                              b.dhs, b.dh_n, b.lengths, b.order, b.reverse, b.da, rh, b.dh0, tiling=b.tiling)
    return pieces, HiddenSide(b.da, rh)


def _rnn_backward(b: BackwardCall, relu: bool):
    return tile_pieces(rnn_backward, b.w_hh, b.hs, b.column0, b.dhs, b.dh_n, relu, b.lengths, b.order, b.reverse,
                       b.da, b.da_state, b.dh0, tiling=b.tiling), HiddenSide(b.da)


class CellKernels(NamedTuple):
    forward: Callable  # (ForwardCall) -> (pieces, finish): the pieces fill the outputs, then finish()
    backward: Callable  # (BackwardCall) -> (pieces, HiddenSide): the pieces fill da, dh0 (dc0)
    backward_reads_gates: bool = True  # False: backward reads hs instead (rnn_*, whose gate is h)


KERNELS = {
    "rnn_tanh": CellKernels(partial(_rnn_forward, relu=False), partial(_rnn_backward, relu=False), False),
    "rnn_relu": CellKernels(partial(_rnn_forward, relu=True), partial(_rnn_backward, relu=True), False),
    "lstm": CellKernels(_lstm_forward, _lstm_backward),
    "gru": CellKernels(_gru_forward, _gru_backward),
    "gru_classic": CellKernels(_gru_classic_forward, _gru_classic_backward),
}


# ---- after backward's loop: the GEMMs ---------------------------------------------------------

class ParameterGradients(NamedTuple):
    dx: np.ndarray
    dw_ih: np.ndarray
    dw_hh: np.ndarray
    db_ih: np.ndarray
    db_hh: np.ndarray


def parameter_gradients(da, hidden: HiddenSide, x, w_ih, h_prev, n_threads) -> ParameterGradients:
    """dx, the weight and the bias gradients from one direction's da (T, B, G·H); h_prev (T, B, H)
    is what W_hh multiplied at each step (h_{t-1} forward, h_{t+1} reverse). Rows and steps
    where da is zero (past a row's length) add nothing.
    twin: reference.affine.affine_backward, summed over t."""
    T, B, GH = da.shape
    H = h_prev.shape[2]
    if hidden.inputs is None and small_call(T * B * GH * max(x.shape[2], H)):
        return ParameterGradients(*gradients_on_the_caller(da, hidden.da_h, hidden.da_h is da, kernel_array(x),
                                                           w_ih, kernel_array(h_prev)))
    dx = matmul_rows(da.reshape(T * B, GH), w_ih, n_threads).reshape(T, B, x.shape[2])
    dw_ih, db_ih = weight_grad(da, x, n_threads), bias_grad(da)
    # Where the same ∂L/∂a feeds both biases, db_hh is db_ih: lstm and rnn_* (da_h is da), and
    # gru_classic, whose W_hn output is not scaled by r.
    db_hh = db_ih.copy() if hidden.da_h is da else bias_grad(hidden.da_h)
    if hidden.inputs is None:
        dw_hh = weight_grad(hidden.da_h, h_prev, n_threads)
    else:  # gru_classic: the r, z rows multiplied h_{t-1}, the n rows r⊙h_{t-1}
        dw_hh = np.concatenate([weight_grad(da[:, :, :2 * H], h_prev, n_threads),
                                weight_grad(np.ascontiguousarray(da[:, :, 2 * H:]), hidden.inputs, n_threads)])
    return ParameterGradients(dx, dw_ih, dw_hh, db_ih, db_hh)
