"""Where jit.cuda's data lives: device arrays recognised, viewed, copied to the device and back.

NumPy arrays in give NumPy arrays out (copied to the device and back, through the calling thread's
scratch arrays: jit.cuda.workspace); a device array in (a numba device array, or anything with
``__cuda_array_interface__``, such as a CUDA torch tensor) gives fresh numba device arrays out, and
nothing leaves the device.
"""
import numpy as np
from numba import cuda

from reference.contract import PARAM_NAMES, Params

from . import workspace
from .launch import SIMULATOR

if SIMULATOR:
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray as DeviceArray
else:
    from numba.cuda.cudadrv.devicearray import DeviceNDArray as DeviceArray

#: Array types forward and backward accept (the contract also accepts __cuda_array_interface__).
ARRAY_TYPES = (np.ndarray, DeviceArray)


def is_device_array(a) -> bool:
    return isinstance(a, DeviceArray) or hasattr(a, "__cuda_array_interface__")


def device_view(a):
    """A numba device array viewing a foreign device array (no copy); anything else unchanged."""
    if a is not None and not isinstance(a, DeviceArray) and hasattr(a, "__cuda_array_interface__"):
        return cuda.as_cuda_array(a)
    return a


def contiguous_on_device(a):
    """A C-contiguous device array of a's values: a itself, or a copy through the host (a strided
    view the caller passed; rare, and a round trip)."""
    return a if a.is_c_contiguous() else workspace.fresh_copy(a.copy_to_host())


def params_view(params):
    """params with foreign device arrays viewed as numba ones; params itself if it lacks a field
    (so that the contract's check reports the missing field)."""
    if not all(hasattr(params, p) for p in PARAM_NAMES):
        return params
    return Params(*(device_view(getattr(params, p)) for p in PARAM_NAMES))


def to_host(result):
    """A ForwardResult or BackwardResult with every device array copied to a NumPy one."""
    return type(result)(*(None if a is None else a.copy_to_host() for a in result))
