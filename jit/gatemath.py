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
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic, overload, register_jitable


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


# ---- e^x for x ≤ 0: the one transcendental behind every gate --------------------------------

def exp_nonpositive(x):
    """e^x for x ≤ 0 (sigmoid needs e^{−|a|}, tanh e^{−2|a|}); in Python and the CUDA simulator, math.exp.

    Compiled, it is the library's exp (generic overload: CUDA, and float64 on the CPU), except
    float32 on the CPU, which gets exp_nonpositive_float32: libm's expf is a call LLVM cannot
    vectorise (an lstm unit's forward pass 29 → 7 ns with ours).
    """
    return math.exp(x)


@overload(exp_nonpositive, target="generic")
def _exp_nonpositive_library(x):
    return lambda x: math.exp(x)


@overload(exp_nonpositive, target="cpu")
def _exp_nonpositive_cpu(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x: exp_nonpositive_float32(x)
    return None  # float64: the generic overload


#: exp_nonpositive_float32 builds 2^(n + SCALE_SHIFT) and takes its polynomial's coefficients
#: times 2^−SCALE_SHIFT: for the n ≤ 0 of e^x, x ≤ 0, n + 64 stays in float32's normal
#: exponents down to n = −190, so the power of two is exact and only a result that lands in
#: the subnormals is rounded by the last product.
SCALE_SHIFT = 64


@intrinsic
def _shifted_power_of_two_float32(typingctx, n):
    """2^(n + SCALE_SHIFT) as float32 for an integer-valued float32 n with n + SCALE_SHIFT in
    [−126, 127]: the bits (n + 127 + SCALE_SHIFT) << 23.

    Numba has no bit cast between a float and an int scalar; this one is plain LLVM
    (fptosi, add, shl, bitcast), which the loop vectoriser handles.
    """
    if n != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        biased = builder.add(builder.fptosi(args[0], i32), ir.Constant(i32, 127 + SCALE_SHIFT))
        return builder.bitcast(builder.shl(biased, ir.Constant(i32, 23)), ir.FloatType())
    return types.float32(n), codegen


_LOG2E = 1.4426950408889634
#: ln 2 = LN2_HIGH + LN2_LOW (Cody and Waite): LN2_HIGH has 9 significant bits, so n·LN2_HIGH
#: is exact for the |n| ≤ 159 used here, and x − n·LN2_HIGH loses nothing.
_LN2_HIGH = 0.693359375
_LN2_LOW = math.log(2) - 0.693359375
#: e^r ≈ Σ_k EXP_POLYNOMIAL[k]·r^k for |r| ≤ ln2/2: the degree-6 polynomial of least maximum
#: relative error with c0 = c1 = 1 (exact in float32) and the others rounded to float32 one at
#: a time, each of the rest re-fitted after (a linear programme on 4001 points, run once with
#: scipy's HiGHS; scipy is not a dependency). Relative error with float32 coefficients in exact
#: arithmetic: 3.14e-9 = 0.05 u (u = 2^−24; test_float32_exp_polynomial_is_within_its_stated_error).
EXP_POLYNOMIAL = (1.0, 1.0, 0.4999999403953552, 0.1666652262210846, 0.04166829213500023,
                  0.008368532173335552, 0.0013818301958963275)
#: The same coefficients times 2^−SCALE_SHIFT (exact: a power of two, and every product stays
#: a normal float32), so that p·2^(n+64) is e^x with no second multiply. Each Horner step of
#: the scaled polynomial is the unscaled one's times 2^−64, rounded the same way, so the bits
#: are those of p(r)·2^(n+64)·2^−64 (checked for every float32 in [−120, 0] against the
#: two-multiply form).
_EXP_POLYNOMIAL_SCALED = tuple(c * 2.0 ** -SCALE_SHIFT for c in EXP_POLYNOMIAL)


@register_jitable
def exp_nonpositive_float32(x):
    """e^x for float32 x ≤ 0, in arithmetic LLVM vectorises; within 1 ulp of the true value.

    x = n ln2 + r with n = round(x log2 e), |r| ≤ ln2/2, so e^x = 2^n e^r: a polynomial for
    e^r (EXP_POLYNOMIAL, pre-scaled by 2^−64), then one product with 2^(n+64), exact unless the
    result is subnormal, where it is the one rounding. Scaling every value so, rather than
    blending only the n < −126 that need it, is shorter. x is clamped at −110 (below half the
    smallest subnormal), so n ≥ −159. The gates' time follows this dependency chain more than
    its operation count, so each operation off the chain counts (docs/perf-log.md). The error
    bound is derived and tested in test_float32_exp_is_within_one_ulp_down_to_the_subnormals.
    """
    lowest = np.float32(-110.0)
    x = lowest if x < lowest else x  # a select, not max(): see tanh; a NaN stays NaN
    n = np.floor(x * np.float32(_LOG2E) + np.float32(0.5))
    r = (x - n * np.float32(_LN2_HIGH)) - n * np.float32(_LN2_LOW)
    p = np.float32(_EXP_POLYNOMIAL_SCALED[6])
    for k in range(5, -1, -1):
        p = p * r + np.float32(_EXP_POLYNOMIAL_SCALED[k])
    return p * _shifted_power_of_two_float32(n)


# ---- the gates -------------------------------------------------------------------------------

@register_jitable
def sigmoid(a):
    """Logistic σ(a) = 1 / (1 + e^{−a}), stable for every finite a; twin of reference.activations.sigmoid.

    e = e^{−|a|} lies in (0, 1], so nothing overflows: s = 1 / (1 + e) is σ(|a|), and
    σ(a) = s for a ≥ 0, e·s = e / (1 + e) for a < 0. Both are computed and one is selected,
    which compiles to a blend instead of a branch that random signs would mispredict.
    """
    one = typed_like(a, 1.0)
    e = exp_nonpositive(-abs(a))
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
#: Terms of the series that float32 needs: the first left out, c_5·a^11 with c_5 = 1382/155925,
#: is at most c_5/16^5 ≈ 8.5e-9 relative to a (and tanh a ≥ 0.97a) for |a| < 1/4: 0.15 of
#: float32's unit roundoff u = 6e-8, so the other six multiply-adds are left out.
TANH_TERMS_FLOAT32 = 5
#: Below this |a| tanh uses its Taylor series, above it the exponential form.
TANH_SERIES_BELOW = 0.25


def tanh_series_terms(a):
    """How many of TANH_TAYLOR's terms tanh sums for a's dtype: TANH_TERMS_FLOAT32, else all."""
    return TANH_TERMS_FLOAT32 if isinstance(a, np.float32) else len(TANH_TAYLOR)


@overload(tanh_series_terms)
def _tanh_series_terms_numba(a):
    # A constant per compiled dtype, so the series loop unrolls to exactly that many terms.
    terms = TANH_TERMS_FLOAT32 if isinstance(a, types.Float) and a.bitwidth == 32 else len(TANH_TAYLOR)
    return lambda a: terms


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
    e = exp_nonpositive(typed_like(a, -2.0) * m)
    from_exp = (one - e) / (one + e)
    # The series is only used below 1/4: clamping keeps m² from overflowing (and warning) for
    # huge a. A select, not min(): Numba's min() has branches that keep LLVM from vectorising.
    below = typed_like(a, TANH_SERIES_BELOW)
    m_series = m if m < below else below
    m2 = m_series * m_series
    terms = tanh_series_terms(a)
    series = typed_like(a, TANH_TAYLOR[terms - 1])
    for k in range(terms - 2, -1, -1):
        series = series * m2 + typed_like(a, TANH_TAYLOR[k])
    t = m * series if m < below else from_exp
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
