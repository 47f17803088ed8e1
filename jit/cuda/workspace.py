"""Device memory of jit.cuda's calls: scratch arrays reused per calling thread, fresh result arrays,
and every allocation counted (jit.cuda.launch.COUNTS.allocations).

A call's temporaries (the input projection xw, BPTT's ∂L/∂a and h_{t−1}, the copies of NumPy
inputs, the results that are copied back to NumPy) never reach the caller and have the same shapes
in every call of a training loop. Allocated anew, they cost a cuMemAlloc each (8 per inference
call, ~19 per training call), and their frees pass numba-cuda's deferred-free threshold, so
training calls flushed frees. Each calling thread keeps one device array per role, replaced when a
call needs another shape or dtype (like jit.cpu.workspace): concurrent callers never share one.
All of jit.cuda's work is on the default stream, so a thread's next call cannot overwrite a
scratch array before the kernels of its previous call that read it have run, and within a call a
role may be reused by a later stage. Results that stay on the device are always fresh arrays.
"""
import threading

import numpy as np
from numba import cuda

from .launch import COUNTS

_local = threading.local()


def _arrays() -> dict:
    arrays = getattr(_local, "arrays", None)
    if arrays is None:
        arrays = _local.arrays = {}
    return arrays


def fresh(shape, dtype):
    """A new device array, counted: a result the caller keeps."""
    COUNTS.allocated()
    return cuda.device_array(tuple(int(n) for n in shape), dtype)


def fresh_copy(host):
    """A new device array holding a NumPy array's values, counted."""
    COUNTS.allocated()
    return cuda.to_device(np.ascontiguousarray(host))


def scratch(role: str, shape, dtype):
    """The calling thread's device array for ``role``, of ``shape`` and ``dtype``; its contents are
    whatever the last call left: the caller must overwrite every element it reads."""
    arrays = _arrays()
    shape = tuple(int(n) for n in shape)
    a = arrays.get(role)
    if a is None or a.shape != shape or a.dtype != np.dtype(dtype):
        a = arrays[role] = fresh(shape, dtype)
    return a


def upload(role: str, a):
    """A device array of a's values: a device array as it is, a NumPy array copied into the calling
    thread's scratch array for ``role`` (no allocation once it exists)."""
    if a is None or not isinstance(a, np.ndarray):
        return a
    dst = scratch(role, a.shape, a.dtype)
    if a.size:  # a GPU copies no empty array
        dst.copy_to_device(np.ascontiguousarray(a))
    return dst


def zeroed(role: str, size: int, dtype):
    """The calling thread's 1-D device array for ``role``, at least ``size`` long, all zeros when it
    is made (from the host). Its user keeps it zero between calls, or ``discard``s it."""
    arrays = _arrays()
    a = arrays.get(role)
    if a is None or a.shape[0] < size or a.dtype != np.dtype(dtype):
        a = arrays[role] = fresh_copy(np.zeros(max(size, 16), dtype))
    return a


def discard(role: str) -> None:
    """Forget the calling thread's array for ``role`` (the next use makes a new one)."""
    _arrays().pop(role, None)


def release() -> None:
    """Free the calling thread's scratch arrays (the next call allocates them again)."""
    _local.arrays = {}
