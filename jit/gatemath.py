"""Scalar gate math shared by the Numba kernels of jit.cpu (@njit) and jit.cuda (@cuda.jit).

Each function takes and returns one scalar, is pure, and keeps the dtype of its argument
(float32 stays float32: a Python literal such as ``1.0`` would promote it to float64, so
constants are made with ``typed_like``). Derivatives take the activation's *output*, as
backward has it at hand, the same convention as reference.activations:

    σ'(a) = σ(a)(1 − σ(a)),   tanh'(a) = 1 − tanh(a)²,   relu'(a) = [relu(a) > 0].

They are ``register_jitable``: plain Python functions that Numba compiles inline into any
CPU or CUDA kernel that calls them (and that run as they are under the CUDA simulator).
"""
import math

import numpy as np
from numba.core import types
from numba.extending import overload, register_jitable


def typed_like(like, value):
    """``value`` as a float of the same type as the scalar ``like`` (Python: type(like)(value))."""
    return type(like)(value)


@overload(typed_like)
def _typed_like_numba(like, value):
    # Numba: pick the constructor when the types are known, so no float64 sneaks into float32 math.
    if isinstance(like, types.Float):
        make = np.float32 if like.bitwidth == 32 else np.float64

        def impl(like, value):
            return make(value)
        return impl
    return None


@register_jitable
def sigmoid(a):
    """Logistic σ(a) = 1 / (1 + e^{−a}), stable for every finite a; twin of reference.activations.sigmoid.

    e^{−|a|} lies in (0, 1], so nothing overflows: for a ≥ 0 use 1 / (1 + e^{−a}), for a < 0
    the equal form e^{a} / (1 + e^{a}).
    """
    one = typed_like(a, 1.0)
    e = math.exp(-abs(a))
    if a >= 0:
        return one / (one + e)
    return e / (one + e)


@register_jitable
def sigmoid_grad(s):
    """σ'(a) from s = σ(a); twin of reference.activations.sigmoid_grad."""
    return s * (typed_like(s, 1.0) - s)


@register_jitable
def tanh(a):
    """tanh(a); saturates to ±1 and never overflows. Twin of reference.activations.tanh."""
    return math.tanh(a)


@register_jitable
def tanh_grad(t):
    """tanh'(a) from t = tanh(a); twin of reference.activations.tanh_grad."""
    return typed_like(t, 1.0) - t * t


@register_jitable
def relu(a):
    """max(a, 0); twin of reference.activations.relu."""
    zero = typed_like(a, 0.0)
    return a if a > zero else zero


@register_jitable
def relu_grad(r):
    """relu'(a) from r = relu(a): 1 where r > 0, else 0; twin of reference.activations.relu_grad."""
    return typed_like(r, 1.0) if r > typed_like(r, 0.0) else typed_like(r, 0.0)
