"""Launch configurations of jit.cuda's kernels, and the one place that launches and checks them.

Tile sizes are compile-time constants of the kernels (they size the shared-memory arrays).
On a GPU they are chosen for occupancy; under the CUDA simulator (every thread a Python
thread, about 1000x slower) they are shrunk, which also makes the tiny shapes the test
suite draws there cross tile boundaries, so every bounds check and tail is exercised.
"""
import contextlib
import os
import sys
import threading
import traceback
from typing import NamedTuple

import numpy as np

from numba import cuda
from numba.cuda import config as cuda_config

#: True when numba.cuda is the simulator (NUMBA_ENABLE_CUDASIM=1, decided before Numba loads).
SIMULATOR = bool(cuda_config.ENABLE_CUDASIM)


class Tiles(NamedTuple):
    matmul: int  # threads per side of a matmul block (matmul × matmul threads)
    matmul_work: int  # outputs per thread per side: a block computes a (matmul·matmul_work)² tile
    matmul_depth: int  # K advanced per shared tile of the matmul
    units: int  # hidden units (output columns) per block of a step kernel: threadIdx.x
    rows: int  # batch rows per block of a step kernel: threadIdx.y
    depth: int  # reduction step of a step kernel (k of W_hh h, or gate rows of da W_hh)
    threads_1d: int  # threads per block of the grid-stride kernels (copies, column sums, checks)
    blocks_1d: int  # at most this many blocks for them


#: 16×16 matmul threads with 4×4 outputs each (64×64 tiles, K step 16: 2·64·17·8 B ≈ 17 KB of
#: shared memory in float64) and 32×8 step threads (4·32·33·8 B ≈ 34 KB): under the 48 KB of
#: static shared memory every GPU has.
GPU_TILES = Tiles(matmul=16, matmul_work=4, matmul_depth=16, units=32, rows=8, depth=32, threads_1d=256,
                  blocks_1d=1024)
#: Under the simulator the cost is ~1 ms per simulated thread and per syncthreads round, so blocks
#: are tiny and reductions take 8 at a time. At the suite's simulator sizes (H = 7, B = 3) the step
#: grids then have a tail block in both axes and every tile a partial edge; jit/cuda/tests/test_jit_cuda.py
#: adds H = depth + 3 for a reduction over several tiles.
SIMULATOR_TILES = Tiles(matmul=2, matmul_work=4, matmul_depth=4, units=4, rows=2, depth=8, threads_1d=8,
                        blocks_1d=1)
TILES = SIMULATOR_TILES if SIMULATOR else GPU_TILES

MAX_THREADS_PER_BLOCK = 1024
MAX_GRID = (2**31 - 1, 65535, 65535)

#: CELLBENCH_CUDA_SYNC=1 synchronizes after every launch, so that an asynchronous fault is
#: reported against the kernel that caused it (slow; for debugging). Otherwise faults surface
#: at the synchronize that ends every forward and backward.
SYNC_EACH_LAUNCH = os.environ.get("CELLBENCH_CUDA_SYNC", "") not in ("", "0")


#: The simulator's block manager busy-polls its threads for syncthreads; with CPython's default
#: 5 ms GIL switch interval each hand-off waits for a time slice. 50 µs made the simulated
#: lstm forward + backward at T=3, B=3, I=5, H=7 about 3x faster (measured on this project's
#: 2-core CI machine); the interval is restored after every launch.
SIMULATOR_SWITCH_INTERVAL_S = 5e-5


#: The simulator runs one launch at a time: a simulated thread finds its threadIdx through state
#: that a second launch from another host thread replaces (measured: two host threads launching
#: at once failed with "'Thread' object has no attribute 'threadIdx'"). A GPU takes launches from
#: any host thread, so only the simulator's launches take this lock; the host code around them,
#: where a backend's shared scratch would mix two calls, still runs concurrently.
_SIMULATED_LAUNCH_LOCK = threading.Lock()


@contextlib.contextmanager
def _simulated_launch():
    """Under the simulator: one launch at a time, with the short switch interval; on a GPU: nothing."""
    if not SIMULATOR:
        yield
        return
    with _SIMULATED_LAUNCH_LOCK:
        previous = sys.getswitchinterval()
        sys.setswitchinterval(SIMULATOR_SWITCH_INTERVAL_S)
        try:
            yield
        finally:
            sys.setswitchinterval(previous)


# The simulator's cuda.shared.array (FakeCUDAShared.array, numba-cuda 0.30) looks up the block's
# array for the declaring line in a dict and creates it when missing, without a lock. Two simulated
# threads of a block can both find it missing and each keep a private "shared" array: writes of one
# are then invisible to the other, and results come out wrong now and then (seen as flaky property
# failures; the short switch interval above makes it frequent). The same lookup under a lock fixes
# it; on a GPU nothing is patched.
_SHARED_ARRAY_LOCK = threading.Lock()


def _simulated_shared_array_with_lock(self, shape, dtype, alignment=None):
    """FakeCUDAShared.array, keyed the same way (the declaring file and line), made thread-safe."""
    if shape == 0 or alignment is not None:  # dynamic shared memory, or unsupported: the simulator's own path
        return _SIMULATOR_SHARED_ARRAY(self, shape, dtype, alignment)
    declared_at = tuple(traceback.extract_stack(sys._getframe(1), limit=1)[0][0:2])
    if not isinstance(dtype, np.dtype) and not isinstance(dtype, type):
        from numba.np import numpy_support
        dtype = numpy_support.as_dtype(dtype)
    with _SHARED_ARRAY_LOCK:
        found = self._allocations.get(declared_at)
        if found is None:
            found = self._allocations[declared_at] = np.empty(shape, dtype)
    return found


if SIMULATOR:
    from numba.cuda.simulator import kernelapi as _simulator_api
    _SIMULATOR_SHARED_ARRAY = _simulator_api.FakeCUDAShared.array
    _simulator_api.FakeCUDAShared.array = _simulated_shared_array_with_lock


class LaunchError(RuntimeError):
    """A kernel launch that was refused or failed; the message names the kernel and its config."""


def blocks(n: int, per_block: int) -> int:
    """Blocks needed to cover n items, per_block at a time (ceil division)."""
    return (n + per_block - 1) // per_block


def launch(kernel, grid, block, *args):
    """Launch kernel[grid, block](*args) after checking the configuration; skip an empty grid.

    Every launch of jit.cuda goes through here: a grid with a zero dimension has no work
    (T = 0, for instance) and is not launched; a configuration the hardware cannot run is a
    LaunchError naming the kernel; a driver error at launch is re-raised as one too.
    """
    grid = tuple(int(g) for g in grid)
    block = tuple(int(b) for b in block)
    name = getattr(kernel, "__name__", None) or getattr(getattr(kernel, "py_func", None), "__name__", "kernel")
    if any(g == 0 for g in grid):
        return
    threads = 1
    for b in block:
        threads *= b
    if threads > MAX_THREADS_PER_BLOCK or min(block) < 1:
        raise LaunchError(f"jit.cuda: {name}: block {block} has {threads} threads; expected 1 to "
                          f"{MAX_THREADS_PER_BLOCK}")
    for g, limit, axis in zip(grid, MAX_GRID, "xyz"):
        if g > limit:
            raise LaunchError(f"jit.cuda: {name}: grid {grid} exceeds the {limit} blocks allowed along {axis}")
    try:
        with _simulated_launch():
            kernel[grid, block](*args)
        if SYNC_EACH_LAUNCH:
            cuda.synchronize()
    except LaunchError:
        raise
    except Exception as exc:  # a driver or compile error: say which launch it was
        raise LaunchError(f"jit.cuda: {name} with grid {grid}, block {block} failed: {exc}") from exc


def cooperative_grid_limit(kernel, block, *args) -> int:
    """The most blocks of ``kernel`` (a grid-synchronizing one) that a cooperative launch with
    these arguments and this block may have: all of them must be resident on the GPU at once.
    The simulator runs a cooperative grid of one block only. A LaunchError naming the kernel if
    the limit cannot be found."""
    name = getattr(getattr(kernel, "py_func", None), "__name__", "kernel")
    try:
        if SIMULATOR:  # any signature's overload answers 1
            limit = kernel.overloads[None].max_cooperative_grid_blocks(block)
        else:
            from numba import typeof
            limit = kernel.compile(tuple(typeof(a) for a in args)).max_cooperative_grid_blocks(block)
    except Exception as exc:
        raise LaunchError(f"jit.cuda: {name}: cannot size a cooperative grid for block {block}: {exc}") from exc
    return int(limit)


def synchronize(where: str):
    """Wait for the device and report an asynchronous kernel fault against the call that made it."""
    try:
        cuda.synchronize()
    except Exception as exc:
        raise LaunchError(f"jit.cuda: a kernel of {where} failed: {exc}") from exc
