"""Scratch arrays that jit.cpu's calls reuse from one call to the next, per calling thread.

A call's large temporaries (the input projection xw, backward's ∂L/∂a and h_{t−1} for every
step) never reach the caller, and are the same size in every call of a training loop. Made
new each time, glibc's allocator gave them fresh pages from the kernel more often than not
(it returns the top of its heap to the kernel once more than its trim threshold is free),
and every 4 KiB page then cost a page fault on first touch: 1,800–4,600 faults per training
call at gru M, gru L1 and lstm L1 (measured, 2-core KVM guest), against 19–47 with this
cache; gru M training 37.6–39.6 → 27.4–34.6 ms, gru L1 110–125 → 104–107 ms (best of 27,
separate processes, 2026-11-27).

Each thread that calls jit.cpu keeps one array per role, replaced when a call needs another
shape or dtype, so concurrent callers never share one. The arrays stay allocated between
calls (for lstm L1 about 30 MB); release() frees the calling thread's.
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
    shape = tuple(int(n) for n in shape)
    a = arrays.get(role)
    if a is None or a.shape != shape or a.dtype != np.dtype(dtype):
        a = arrays[role] = np.empty(shape, dtype)
    return a


def release() -> None:
    """Free the calling thread's scratch arrays (the next call allocates them again)."""
    _local.arrays = {}
