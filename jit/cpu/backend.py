"""The jit.cpu backend: the contract (see reference.contract) on Numba CPU kernels.

This module is the backend (``name``, ``cells``, ``forward``, ``backward``, and the layers'
``layer_forward``, ``layer_backward`` from jit.cpu.layers), the same shape as
reference.backend, whose results it must reproduce. Each cell call:

1. validates its arguments with reference.contract, before any computation;
2. runs one kernel per thread for the whole time loop (jit.cpu.lstm, gru, rnn) on a tile of
   rows × units (jit.cpu.tiling), launched from jit.cpu.launch's KERNELS table; forward, each
   kernel first projects its tile's inputs. A cell's rows all run T steps in batch order (the
   kernels' direct loops, jit.cpu.steps), and no_rows stands for the buffers only layers use;
3. backward only: the weight, bias and input gradients as GEMMs on the stored ∂L/∂a
   (jit.cpu.launch.parameter_gradients).
"""
import numpy as np

from reference.contract import CELLS, BackwardResult, ForwardResult, check_backward_inputs, check_forward_inputs

from . import layers
from .arrays import all_finite, all_finite_together, kernel_array, previous_hidden
from .launch import KERNELS, BackwardCall, ForwardCall, HiddenSide, kept_hidden_terms, parameter_gradients
from .steps import every_row_in_order
from .threads import call_threads, threads_for
from .tiling import no_rows, projection_scratch, run_pieces, tiling_for
from .workspace import scratch

name = "jit.cpu"
cells = frozenset(CELLS)
layer_forward, layer_backward = layers.layer_forward, layers.layer_backward  # the layer contract, natively


class CPUForwardResult(ForwardResult):
    """ForwardResult plus, for gru with training, ``hns`` = W_hn h + b_hn per step (T, B, H),
    which backward recomputes (one GEMM) when a caller's rebuilt result lacks it."""


# ---- forward -------------------------------------------------------------------------------

def forward(cell, params, x, h0, c0=None, *, training=True):
    """Run the cell over x (T, B, I) from h0 (and c0 for lstm); see reference.contract."""
    shapes = check_forward_inputs(cell, params, x, h0, c0, isfinite=all_finite, all_finite_together=all_finite_together)
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
        lengths, order = every_row_in_order(T, B)
        pieces, finish = KERNELS[cell].forward(ForwardCall(
            kernel_array(x), kernel_array(params.w_ih), kernel_array(params.w_hh), kernel_array(params.b_ih),
            kernel_array(params.b_hh), kernel_array(h0), kernel_array(c0) if lstm else None, training,
            lengths, order, False, hs, 0, h_n, c_n, cs, gates, hns, no_rows(2, dtype), tiling,
            projection_scratch(tiling, T, G, dtype), no_rows(len(tiling.tiles), dtype)))
        run_pieces(pieces)
        finish()
    if not training:
        return CPUForwardResult(hs, h_n, c_n, None, None)
    result = CPUForwardResult(hs, h_n, c_n, cs, gates)
    if hns is not None:
        result.hns = hns
    return result


# ---- backward ------------------------------------------------------------------------------

def backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n=None):
    """Backpropagation through time; returns the gradients of L given ∂L/∂hs, ∂L/∂h_n, ∂L/∂c_n."""
    shapes = check_backward_inputs(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n, isfinite=all_finite,
                                   all_finite_together=all_finite_together)
    T, B, I, H, G, _ = shapes
    hns = kept_hidden_terms(getattr(fwd, "hns", None), fwd.hs, H) if cell == "gru" else None
    if hns is not None and not all_finite(hns):  # read as part of forward's trace, so checked as the contract's
        raise ValueError("fwd.hns: expected finite values (forward's W_hn h + b_hn); got NaN or inf")
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
        # The time loop's own work is its recurrent products, T·B·G·H·H multiply-adds (the GEMMs
        # after it choose their threads themselves): under PARALLEL_MIN_MACS the unit split's wait
        # per step costs more than a second core gives (S1 lstm backward 137 against 147 µs, Zen 4).
        loop_threads = min(n_threads, threads_for(T * B * G * H * H))
        tiling = tiling_for(cell, B, H, loop_threads, G * H * H * dtype.itemsize)
        lengths, order = every_row_in_order(T, B)
        dc_n_k = (np.zeros((B, H), dtype) if dc_n is None else kernel_array(dc_n)) if lstm else None
        pieces, hidden = KERNELS[cell].backward(BackwardCall(
            kernel_array(params.w_hh), kernel_array(params.b_hh), h0k, kernel_array(c0) if lstm else None, hs, 0,
            kernel_array(fwd.cs) if lstm else None, kernel_array(fwd.gates), getattr(fwd, "hns", None),
            kernel_array(dhs), kernel_array(dh_n), dc_n_k, lengths, order, False, da, no_rows(2, dtype),
            dh0, dc0, tiling, loop_threads, ""))
        run_pieces(pieces)
    grads = parameter_gradients(da, hidden, x, kernel_array(params.w_ih), previous_hidden(hs, h0k), n_threads)
    return BackwardResult(grads.dx, dh0, dc0, grads.dw_ih, grads.dw_hh, grads.db_ih, grads.db_hh)
