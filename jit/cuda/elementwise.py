"""Whole-array kernels of the backends' bookkeeping: copies, fills, a sum, and the finiteness check.

They take (R, C) arrays of any strides (a user's device array need not be contiguous) and loop
with a grid stride, so any grid covers any size. Typed by their arguments (one compilation per
dtype).
"""
import math

from numba import cuda


@cuda.jit
def copy2d(src, dst):
    """dst = src. twin: the copies of reference.backend (h_n = state[0].copy(), dc_n, h_{t−1})."""
    C = dst.shape[1]
    for i in range(cuda.grid(1), dst.size, cuda.gridsize(1)):
        r = i // C
        dst[r, i - r * C] = src[r, i - r * C]


@cuda.jit
def add2d(a, b, dst):
    """dst = a + b. twin: reference.backend.backward's d_state[0] + dhs[t] at t = T − 1."""
    C = dst.shape[1]
    for i in range(cuda.grid(1), dst.size, cuda.gridsize(1)):
        r = i // C
        dst[r, i - r * C] = a[r, i - r * C] + b[r, i - r * C]


@cuda.jit
def fill2d(dst, value):
    """dst[:] = value. twin: reference.backend.backward's np.zeros for a missing dc_n."""
    C = dst.shape[1]
    for i in range(cuda.grid(1), dst.size, cuda.gridsize(1)):
        r = i // C
        dst[r, i - r * C] = value


@cuda.jit
def count_nonfinite(flats, counts):
    """counts[s] += the number of NaN or inf in flats[s] (a tuple of 1-D arrays), s = blockIdx.y.

    twin: reference.contract's finiteness check (np.isfinite), for every input of a call in one
    launch: a grid-stride loop along x, one atomic add per thread that found any."""
    slot = cuda.blockIdx.y
    flat = flats[slot]
    bad = 0
    for i in range(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x, flat.shape[0],
                   cuda.gridDim.x * cuda.blockDim.x):
        if not math.isfinite(flat[i]):
            bad += 1
    if bad:
        cuda.atomic.add(counts, slot, bad)
