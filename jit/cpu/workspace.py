"""Scratch arrays that jit.cpu's calls reuse from one call to the next, per calling thread.

A call's large temporaries (the input projection xw, backward's ∂L/∂a and h_{t−1}) never
reach the caller and have the same size in every call of a training loop. Made new each
time, glibc often gave them fresh pages, each costing a page fault on first touch (thousands
per training call at gru M and lstm L1; docs/jit-cpu.md). Each calling thread keeps one array
per role, replaced when a call needs another shape or dtype, so concurrent callers never share
one; they stay allocated between calls, and release() frees the calling thread's.
"""
import threading

import numpy as np

_local = threading.local()


def scratch(role: str, shape, dtype) -> np.ndarray:
    """The calling thread's scratch array for ``role``, of ``shape`` and ``dtype``; its contents
    are whatever the last call left: the caller must overwrite every element it reads."""
    arrays = getattr(_local, "arrays", None)
    if arrays is None:
        arrays = _local.arrays = {}
    a = arrays.get(role)
    if a is not None and a.shape == shape and a.dtype is dtype:  # the usual case, in 0.3 µs
        return a
    shape = tuple(int(n) for n in shape)
    if a is None or a.shape != shape or a.dtype != np.dtype(dtype):
        a = arrays[role] = np.empty(shape, dtype)
    return a


def release() -> None:
    """Free the calling thread's scratch arrays (the next call allocates them again)."""
    _local.arrays = {}
