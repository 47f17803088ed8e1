"""The activations of the cells and their derivatives, written in terms of their outputs.

Each derivative takes the activation's *output*, as backward has it at hand:
    σ'(a) = σ(a)(1 − σ(a)),  tanh'(a) = 1 − tanh(a)²,  relu'(a) = [relu(a) > 0].
"""
import numpy as np


def sigmoid(a: np.ndarray) -> np.ndarray:
    """Logistic σ(a) = 1 / (1 + e^{−a}), stable for every finite a of either dtype.

    e^{−|a|} lies in (0, 1], so nothing overflows: for a ≥ 0 use 1 / (1 + e^{−a}), for
    a < 0 the equal form e^{a} / (1 + e^{a}). The dtype of a is kept.
    """
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(a.dtype, copy=False)


def sigmoid_grad(s: np.ndarray) -> np.ndarray:
    return s * (1 - s)


def tanh(a: np.ndarray) -> np.ndarray:
    return np.tanh(a)  # stable by itself: saturates to ±1, never overflows


def tanh_grad(t: np.ndarray) -> np.ndarray:
    return 1 - t * t


def relu(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0)


def relu_grad(r: np.ndarray) -> np.ndarray:
    return (r > 0).astype(r.dtype)
