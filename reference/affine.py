"""The affine map a = x Wᵀ + b that feeds every gate, and its backward.

Shapes: x (B, K), W (G·H, K), b (G·H,)  →  a (B, G·H).
"""
from typing import NamedTuple

import numpy as np


def affine(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    return x @ w.T + b


class AffineGrads(NamedTuple):
    dx: np.ndarray  # (B, K)
    dw: np.ndarray  # (G·H, K)
    db: np.ndarray  # (G·H,)


def affine_backward(da: np.ndarray, x: np.ndarray, w: np.ndarray) -> AffineGrads:
    """Given da = ∂L/∂a (B, G·H): ∂L/∂x = da W, ∂L/∂W = daᵀ x, ∂L/∂b = Σ_rows da."""
    return AffineGrads(dx=da @ w, dw=da.T @ x, db=da.sum(axis=0))


class StepGrads(NamedTuple):
    """One step's contribution to the gradients of x_t and the parameters."""

    dx: np.ndarray  # (B, I)
    dw_ih: np.ndarray  # (G·H, I)
    dw_hh: np.ndarray  # (G·H, H)
    db_ih: np.ndarray  # (G·H,)
    db_hh: np.ndarray  # (G·H,)
