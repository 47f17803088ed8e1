"""The PyTorch oracle: the contract through torch.nn.RNN / LSTM / GRU and autograd.

This module is itself a backend (``reference.torch_backend``, or
``--backend reference.torch_backend:backend``). It supports every cell but
gru_classic, which PyTorch does not implement. NumPy arrays in, NumPy arrays out, on
the CPU, in the inputs' dtype.

Layers natively too (``layer_forward``, ``layer_backward``, the signatures of reference.layers):
one torch.nn module with num_layers, bidirectional and proj_size, and for lengths a packed
sequence (pack_padded_sequence with enforce_sorted=False, pad_packed_sequence back).
"""
import sys
import warnings
from contextlib import contextmanager
from functools import partial

import numpy as np

try:
    import torch
except ImportError as exc:  # torch is an optional extra
    raise ImportError(
        "reference.torch_backend needs PyTorch. Install its CPU build with "
        "`pip install torch==2.13.0` or `pip install -e '.[torch]'`."
    ) from exc
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .contract import PARAM_NAMES, BackwardResult, ForwardResult, check_backward_inputs, check_forward_inputs
from .layers import (LayerBackwardResult, LayerForwardResult, LayerParamGrads, check_layer_backward_inputs,
                     check_layer_forward_inputs)

name = "torch"
cells = frozenset({"rnn_tanh", "rnn_relu", "lstm", "gru"})
backend = sys.modules[__name__]

_TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


@contextmanager
def one_thread():
    """Run torch on one thread, then restore the caller's setting.

    The oracle checks small problems, where torch's thread pool only adds overhead (measured:
    40 small lstm forward+backward calls took 4.55 s on 2 threads, 0.48 s on 1, under load).
    Benchmarks time torch.nn directly with their own thread setting, not through the oracle.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def make_module(cell, params, dtype):
    """A torch.nn.RNN / LSTM / GRU holding a copy of params (PyTorch's layout is ours)."""
    I, H = params.w_ih.shape[1], params.w_hh.shape[1]
    if cell == "lstm":
        module = torch.nn.LSTM(I, H)
    elif cell == "gru":
        module = torch.nn.GRU(I, H)
    else:
        module = torch.nn.RNN(I, H, nonlinearity=cell.removeprefix("rnn_"))
    module = module.to(_TORCH_DTYPES[np.dtype(dtype)])
    with torch.no_grad():
        for pname in ("w_ih", "w_hh", "b_ih", "b_hh"):
            getattr(module, pname.replace("w_", "weight_").replace("b_", "bias_") + "_l0").copy_(
                torch.from_numpy(np.array(getattr(params, pname))))
    return module


def _gates(cell, params, x, hs, h0, cs, c0):
    """Recompute the post-activation gates from the states torch returned (torch hides them)."""
    h_prev = torch.cat([h0[None], hs[:-1]])  # (T, B, H)
    a_x = x @ params[0].T + params[2]
    a_h = h_prev @ params[1].T + params[3]
    if cell.startswith("rnn_"):
        return hs
    if cell == "lstm":
        a_i, a_f, a_g, a_o = (a_x + a_h).chunk(4, dim=-1)
        return torch.cat([a_i.sigmoid(), a_f.sigmoid(), a_g.tanh(), a_o.sigmoid()], dim=-1)
    x_r, x_z, x_n = a_x.chunk(3, dim=-1)
    h_r, h_z, h_n = a_h.chunk(3, dim=-1)
    r = (x_r + h_r).sigmoid()
    return torch.cat([r, (x_z + h_z).sigmoid(), (x_n + r * h_n).tanh()], dim=-1)


def _run(cell, params, x, h0, c0, dtype):
    module = make_module(cell, params, dtype)
    tx = torch.from_numpy(np.array(x)).requires_grad_()
    th0 = torch.from_numpy(np.array(h0)).requires_grad_()
    tc0 = torch.from_numpy(np.array(c0)).requires_grad_() if cell == "lstm" else None
    if x.shape[0] == 0:  # torch rejects empty sequences; the contract defines T = 0
        return module, tx, th0, tc0, th0.new_zeros((0,) + tuple(h0.shape)), th0 * 1, (tc0 * 1 if tc0 is not None else None)
    if cell == "lstm":
        hs, (h_n, c_n) = module(tx, (th0[None], tc0[None]))
        return module, tx, th0, tc0, hs, h_n[0], c_n[0]
    hs, h_n = module(tx, th0[None])
    return module, tx, th0, tc0, hs, h_n[0], None


def _numpy(t):
    return None if t is None else t.detach().numpy().copy()


def forward(cell, params, x, h0, c0=None, *, training=True):
    T, B, I, H, G, dtype = check_forward_inputs(cell, params, x, h0, c0, supported=tuple(sorted(cells)))
    with torch.no_grad(), one_thread():
        module, tx, th0, tc0, hs, h_n, c_n = _run(cell, params, x, h0, c0, dtype)
        if not training:
            return ForwardResult(_numpy(hs), _numpy(h_n), _numpy(c_n), None, None)
        tparams = [p.detach() for p in (module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0, module.bias_hh_l0)]
        cs = None
        if cell == "lstm":
            # torch returns only c_n: rebuild every c_t from the gates, c_t = f⊙c_{t−1} + i⊙g.
            gates = _gates(cell, tparams, tx, hs, th0, None, tc0)
            i, f, g, _ = gates.chunk(4, dim=-1)
            cs_list, c = [], tc0
            for t in range(T):
                c = f[t] * c + i[t] * g[t]
                cs_list.append(c)
            cs = torch.stack(cs_list) if T else hs.new_zeros((0, B, H))
        else:
            gates = _gates(cell, tparams, tx, hs, th0, None, None)
    return ForwardResult(_numpy(hs), _numpy(h_n), _numpy(c_n), _numpy(cs), _numpy(gates))


def backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n=None):
    *_, dtype = check_backward_inputs(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n,
                                      supported=tuple(sorted(cells)))
    with one_thread():
        return _backward(cell, params, x, h0, c0, dhs, dh_n, dc_n, dtype)


def _backward(cell, params, x, h0, c0, dhs, dh_n, dc_n, dtype):
    module, tx, th0, tc0, hs, h_n, c_n = _run(cell, params, x, h0, c0, dtype)
    # L = Σ dhs⊙hs + dh_n⊙h_n (+ dc_n⊙c_n): its gradients are the ones the contract asks for.
    loss = (hs * torch.from_numpy(np.array(dhs))).sum() + (h_n * torch.from_numpy(np.array(dh_n))).sum()
    if cell == "lstm" and dc_n is not None:
        loss = loss + (c_n * torch.from_numpy(np.array(dc_n))).sum()
    weights = [module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0, module.bias_hh_l0]
    inputs = [tx, th0] + ([tc0] if cell == "lstm" else [])
    grads = torch.autograd.grad(loss, inputs + weights, allow_unused=True, materialize_grads=True)
    dx, dh0 = grads[0], grads[1]
    dc0 = grads[2] if cell == "lstm" else None
    dw_ih, dw_hh, db_ih, db_hh = grads[-4:]
    return BackwardResult(*(_numpy(g) for g in (dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh)))


# ----- layers ---------------------------------------------------------------------------------------

#: Each cell's torch.nn module, given (input_size, hidden_size, num_layers=, bidirectional=).
LAYER_MODULES = {
    "rnn_tanh": partial(torch.nn.RNN, nonlinearity="tanh"),
    "rnn_relu": partial(torch.nn.RNN, nonlinearity="relu"),
    "lstm": torch.nn.LSTM,
    "gru": torch.nn.GRU,
}
#: Our parameter names and torch's, which add the layer and direction: weight_ih_l1_reverse.
TORCH_PARAM_NAMES = {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh",
                     "w_hr": "weight_hr"}


def layer_weights(module, shapes):
    """[{our name: torch's parameter}] per layer-direction, in params' order (layer 0 forward, reverse, ...)."""
    names = PARAM_NAMES + (("w_hr",) if shapes.projected else ())
    return [{n: getattr(module, f"{TORCH_PARAM_NAMES[n]}_l{k // shapes.D}{'_reverse' if k % shapes.D else ''}")
             for n in names} for k in range(shapes.L * shapes.D)]


def make_layer_module(cell, params, shapes):
    """One torch.nn module holding a copy of every layer-direction's params."""
    extra = {"proj_size": shapes.H_out} if shapes.projected else {}
    module = LAYER_MODULES[cell](shapes.I, shapes.H, num_layers=shapes.L, bidirectional=shapes.D == 2, **extra)
    module = module.to(_TORCH_DTYPES[shapes.dtype])
    with torch.no_grad():
        for ours, theirs in zip(params, layer_weights(module, shapes)):
            for pname, weight in theirs.items():
                weight.copy_(torch.from_numpy(np.array(getattr(ours, pname))))
    return module


def _run_layers(cell, params, x, h0, c0, lengths, shapes):
    """(module, input tensors, hs, h_n, c_n), with autograd recording when it is on."""
    module = make_layer_module(cell, params, shapes)
    tx = torch.from_numpy(np.array(x)).requires_grad_()
    th0 = torch.from_numpy(np.array(h0)).requires_grad_()
    tc0 = torch.from_numpy(np.array(c0)).requires_grad_() if cell == "lstm" else None
    inputs = [tx, th0] + ([tc0] if tc0 is not None else [])
    if shapes.T == 0:  # torch rejects empty sequences; the contract defines T = 0
        hs = tx.new_zeros((0, shapes.B, shapes.D * shapes.H_out))
        return module, inputs, hs, th0 * 1, (tc0 * 1 if tc0 is not None else None)
    state = (th0, tc0) if tc0 is not None else th0
    with warnings.catch_warnings():
        # torch notes once that oneDNN has no projected lstm and it uses its own: the one we check.
        warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")
        if lengths is None or shapes.B == 0:
            hs, state = module(tx, state)
        else:
            packed = pack_padded_sequence(tx, torch.as_tensor(np.asarray(lengths), dtype=torch.int64),
                                          enforce_sorted=False)
            out, state = module(packed, state)
            hs, _ = pad_packed_sequence(out, total_length=shapes.T)  # zeros past each row's length
    h_n, c_n = state if tc0 is not None else (state, None)
    return module, inputs, hs, h_n, c_n


def layer_forward(cell, params, x, h0, c0=None, *, bidirectional=False, lengths=None, training=True):
    shapes = check_layer_forward_inputs(cell, params, x, h0, c0, bidirectional, lengths,
                                        supported=tuple(sorted(cells)))
    with torch.no_grad(), one_thread():
        _, _, hs, h_n, c_n = _run_layers(cell, params, x, h0, c0, lengths, shapes)
    return LayerForwardResult(_numpy(hs), _numpy(h_n), _numpy(c_n), None)


def layer_backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n=None, *, bidirectional=False, lengths=None):
    shapes = check_layer_backward_inputs(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n, bidirectional, lengths,
                                         supported=tuple(sorted(cells)))
    with one_thread():
        module, inputs, hs, h_n, c_n = _run_layers(cell, params, x, h0, c0, lengths, shapes)
        # L = Σ dhs⊙hs + Σ dh_n⊙h_n (+ Σ dc_n⊙c_n), as for the cells.
        loss = (hs * torch.from_numpy(np.array(dhs))).sum() + (h_n * torch.from_numpy(np.array(dh_n))).sum()
        if dc_n is not None:
            loss = loss + (c_n * torch.from_numpy(np.array(dc_n))).sum()
        weights = layer_weights(module, shapes)
        flat = [w for per_direction in weights for w in per_direction.values()]
        grads = torch.autograd.grad(loss, inputs + flat, allow_unused=True, materialize_grads=True)
    grads = [_numpy(g) for g in grads]
    dx, dh0 = grads[0], grads[1]
    dc0 = grads[2] if cell == "lstm" else None
    rest = iter(grads[len(inputs):])
    dparams = [LayerParamGrads(**{"d" + n: next(rest) for n in per_direction}) for per_direction in weights]
    return LayerBackwardResult(dx, dh0, dc0, dparams)
