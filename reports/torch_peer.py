"""The `torch.nn` peer: torch.nn.RNN / LSTM / GRU called directly, the fair speed comparison.

One job: time PyTorch itself. The contract's torch backend (reference.torch_backend) is
an oracle: each call builds a module, copies arrays and recomputes the gates, which is
right for checking and wrong for timing. Here the module is built and the tensors are
made once, outside the timed call (torch.from_numpy shares memory, nothing is copied),
and the timed call is only
    inference: module(x, state) under torch.no_grad()
    training:  module(x, state) with autograd, then the gradients of
               L = Σ dhs⊙hs with respect to x, h0 (, c0) and the four weights.
torch runs on the threads jit.cpu runs a call of the same sizes on (threads_like_jit_cpu): one
below jit.cpu's PARALLEL_MIN_MACS, where torch on two threads waits on its second core at every
step (lstm S1 inference 0.35 ms against 0.17 on one thread, Zen 4), else Numba's thread count.
reports.cpu_targets gives torch the same.

Not a contract backend (no forward / backward): benchmarks call ``prepare``.
"""
import numpy as np

from reference.contract import NUM_GATES

name = "torch.nn"
cells = frozenset({"rnn_tanh", "rnn_relu", "lstm", "gru"})


def threads_like_jit_cpu(forward_macs: int) -> int:
    """The threads jit.cpu runs a call of ``forward_macs`` forward multiply-adds on (its backward's
    time loop and each of its GEMMs are no larger): the caller alone below PARALLEL_MIN_MACS, else
    the pool's, read without launching Numba's threading layer."""
    from jit.cpu.threads import threads_for
    return threads_for(forward_macs)


def prepare(cell, mode, inputs):
    """A no-argument callable running one call, and a function turning its result into NumPy arrays
    keyed like the benchmark's compared outputs (hs, h_n, and in training dx, dh0, dw_*, db_*)."""
    import torch

    from reference.torch_backend import make_module

    params, x, h0, c0, dhs = inputs
    T, B, I = x.shape
    H = h0.shape[1]
    torch.set_num_threads(threads_like_jit_cpu(T * B * NUM_GATES[cell] * H * (I + H)))
    module = make_module(cell, params, x.dtype)
    weights = [module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0, module.bias_hh_l0]
    tx = torch.from_numpy(x).requires_grad_(mode == "training")
    th0 = torch.from_numpy(h0)[None].requires_grad_(mode == "training")  # (1, B, H): one layer
    tc0 = torch.from_numpy(c0)[None].requires_grad_(mode == "training") if cell == "lstm" else None
    state = (th0, tc0) if cell == "lstm" else th0
    tdhs = torch.from_numpy(dhs)

    def hidden(out):
        hs, last = out
        return hs, (last[0] if cell == "lstm" else last)[0]

    def inference():
        with torch.no_grad():
            return hidden(module(tx, state))

    def training():
        hs, h_n = hidden(module(tx, state))
        leaves = [tx, th0] + ([tc0] if cell == "lstm" else []) + weights
        grads = torch.autograd.grad((hs * tdhs).sum(), leaves)
        return hs.detach(), h_n.detach(), grads

    def to_numpy(result):
        arrays = {"hs": result[0], "h_n": result[1]}
        if mode == "training":
            grads = list(result[2])
            arrays["dx"], arrays["dh0"] = grads[0], grads[1][0]
            arrays.update(zip(("dw_ih", "dw_hh", "db_ih", "db_hh"), grads[-4:]))
        return {k: np.asarray(v.detach().numpy()) for k, v in arrays.items()}

    return (inference if mode == "inference" else training), to_numpy
