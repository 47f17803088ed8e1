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
from fractions import Fraction
from math import comb, factorial

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

    e = e^{−|a|} lies in (0, 1], so nothing overflows: s = 1 / (1 + e) is σ(|a|), and
    σ(a) = s for a ≥ 0, e·s = e / (1 + e) for a < 0. Both are computed and one is selected,
    which compiles to a blend instead of a branch that random signs would mispredict.
    """
    one = typed_like(a, 1.0)
    e = math.exp(-abs(a))
    s = one / (one + e)
    return s if a >= 0 else e * s


@register_jitable
def sigmoid_grad(s):
    """σ'(a) from s = σ(a); twin of reference.activations.sigmoid_grad."""
    return s * (typed_like(s, 1.0) - s)


def _tanh_taylor_coefficients(n_terms):
    """c_k of tanh(a) = Σ c_k a^{2k+1}: c_k = 2^{2n}(2^{2n} − 1) B_{2n} / (2n)!, n = k + 1."""
    bernoulli = [Fraction(1)]
    for m in range(1, 2 * n_terms + 1):
        bernoulli.append(-sum(comb(m + 1, k) * bernoulli[k] for k in range(m)) / (m + 1))
    return tuple(float(4 ** n * (4 ** n - 1) * bernoulli[2 * n] / factorial(2 * n)) for n in range(1, n_terms + 1))


#: Taylor coefficients of tanh up to a^21, enough for |a| < 1/4 in float64: successive terms
#: shrink by (2a/π)² ≤ 0.026, so the first term left out is below 0.026^11 ≈ 4e-18 relative.
TANH_TAYLOR = _tanh_taylor_coefficients(11)
#: Below this |a| tanh uses its Taylor series, above it the exponential form.
TANH_SERIES_BELOW = 0.25


@register_jitable
def tanh(a):
    """tanh(a), saturating to ±1 without overflow; twin of reference.activations.tanh.

    For |a| ≥ 1/4: tanh|a| = (1 − e) / (1 + e) with e = e^{−2|a|} ≤ e^{−1/2}, so 1 − e ≥ 0.39
    and the subtraction costs under 2 bits; for |a| < 1/4, where it would cost more, the
    Taylor series. Both are within 2 eps (relative) of the correctly rounded tanh in either
    dtype (measured over 1e-30..30), and together take half the time of the libm tanh that
    Numba calls: one exp and a short polynomial, selected without a branch.
    """
    one = typed_like(a, 1.0)
    m = abs(a)
    e = math.exp(typed_like(a, -2.0) * m)
    from_exp = (one - e) / (one + e)
    m_series = min(m, typed_like(a, TANH_SERIES_BELOW))  # the series is only used below 1/4:
    m2 = m_series * m_series  # clamping keeps m² from overflowing (and warning) for huge a
    series = typed_like(a, TANH_TAYLOR[10])
    for k in range(9, -1, -1):
        series = series * m2 + typed_like(a, TANH_TAYLOR[k])
    t = m * series if m < typed_like(a, TANH_SERIES_BELOW) else from_exp
    return t if a >= 0 else -t


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
