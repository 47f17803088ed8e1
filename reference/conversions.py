"""Conversions between the GRU's conventions.

The textbook GRU writes h' = (1 − z)⊙h + z⊙h̃, with z the fraction of the *new* state, and
h̃ = tanh(W_in x + b_in + W_hn(r⊙h) + b_hn). That is gru_classic with z read as 1 − z:
since 1 − σ(a) = σ(−a), negating the z block of every parameter turns one into the other.
"""
import numpy as np

from .contract import Params


def textbook_gru_to_classic(params) -> Params:
    """Params of the textbook GRU -> params of gru_classic that compute the same h'.

    The map is its own inverse. params is not modified.
    """
    H = params.w_hh.shape[1]
    z_rows = slice(H, 2 * H)  # block order r, z, n
    w_ih, w_hh, b_ih, b_hh = (np.array(getattr(params, p)) for p in ("w_ih", "w_hh", "b_ih", "b_hh"))
    for a in (w_ih, w_hh, b_ih, b_hh):
        a[z_rows] = -a[z_rows]
    return Params(w_ih, w_hh, b_ih, b_hh)
