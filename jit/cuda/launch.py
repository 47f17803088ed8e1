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
    split_units: int  # the split-K time loops (jit.cuda.split): output units per item, threadIdx.x
    split_rows: int  # its threads along batch rows, threadIdx.y
    split_rows_per_thread: int  # batch rows each thread sums: a chunk is split_rows · this rows
    split_depth: int  # k per shared slice of W_hh: an item's slice, or a step of a longer one


#: 16×16 matmul threads with 8×8 outputs each (128×128 tiles, K step 8, two buffers: 2·2·8·132·8 B
#: ≈ 34 KB of shared memory in float64) and 32×8 step threads (4·32·33·8 B ≈ 34 KB): under the 48 KB of
#: static shared memory every GPU has.
#: The split-K time loops: 16 × 8 threads, each 4 rows × every gate of its unit (16 sums in lstm), a
#: slice of 32 k: (4·16 + 32)·33·8 B ≈ 25 KB of shared memory in float64; four blocks per SM
#: (jit.cuda.split.KERNEL_OPTIONS), so that an H100's grid holds lstm H = 512's 512 items.
GPU_TILES = Tiles(matmul=16, matmul_work=8, matmul_depth=8, units=32, rows=8, depth=32, threads_1d=256,
                  blocks_1d=1024, split_units=16, split_rows=8, split_rows_per_thread=4, split_depth=32)
#: Under the simulator the cost is ~1 ms per simulated thread and per syncthreads round, so blocks
#: are tiny and reductions take 8 at a time. At the suite's simulator sizes (H = 7, B = 3) the step
#: grids then have a tail block in both axes and every tile a partial edge; jit/cuda/tests/test_jit_cuda.py
#: adds H = depth + 3 for a reduction over several tiles.
SIMULATOR_TILES = Tiles(matmul=2, matmul_work=8, matmul_depth=4, units=4, rows=2, depth=8, threads_1d=8,
                        blocks_1d=1, split_units=2, split_rows=2, split_rows_per_thread=2, split_depth=4)
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


class Counts:
    """Kernel launches and device allocations of jit.cuda since the last ``reset()``, for the GPU
    check's per-call figures and the tests. Every launch is counted in ``launch`` (the one place
    that launches), every device array jit.cuda allocates in jit.cuda.workspace; numba-cuda's own
    allocations inside a launch (none: every argument is a device array already) are not."""

    def __init__(self):
        self._lock = threading.Lock()  # += on an attribute is not atomic across threads
        self.launches = 0
        self.allocations = 0

    def launched(self):
        with self._lock:
            self.launches += 1

    def allocated(self):
        with self._lock:
            self.allocations += 1

    def reset(self):
        with self._lock:
            self.launches = self.allocations = 0


#: jit.cuda's launches and allocations: ``COUNTS.reset()``, one call, then ``COUNTS.launches``.
COUNTS = Counts()

#: (grid, block) -> the configuration as int tuples, checked once: a launch per time step would
#: otherwise check the same configuration T times. None: an empty grid, skipped.
_CHECKED_CONFIGS = {}


def _checked_config(kernel, grid, block):
    """(grid, block) as int tuples, or None for an empty grid; a LaunchError naming the kernel for a
    configuration the hardware cannot run."""
    grid = tuple(int(g) for g in grid)
    block = tuple(int(b) for b in block)
    if any(g == 0 for g in grid):
        return None
    name = kernel_name(kernel)
    threads = 1
    for b in block:
        threads *= b
    if threads > MAX_THREADS_PER_BLOCK or min(block) < 1:
        raise LaunchError(f"jit.cuda: {name}: block {block} has {threads} threads; expected 1 to "
                          f"{MAX_THREADS_PER_BLOCK}")
    for g, limit, axis in zip(grid, MAX_GRID, "xyz"):
        if g > limit:
            raise LaunchError(f"jit.cuda: {name}: grid {grid} exceeds the {limit} blocks allowed along {axis}")
    return grid, block


def kernel_name(kernel) -> str:
    """The Python name of a kernel (a dispatcher, a specialized one, or the simulator's)."""
    return getattr(kernel, "__name__", None) or getattr(getattr(kernel, "py_func", None), "__name__", "kernel")


def launch(kernel, grid, block, *args):
    """Launch kernel[grid, block](*args) after checking the configuration; skip an empty grid.

    Every launch of jit.cuda goes through here, and is counted here (``COUNTS.launches``): a grid
    with a zero dimension has no work (T = 0, for instance) and is not launched; a configuration
    the hardware cannot run is a LaunchError naming the kernel; a driver error at launch is
    re-raised as one too. ``kernel`` may be a dispatcher or one from ``specialized`` (the fast
    path: no type dispatch of the arguments at each launch).
    """
    key = (grid, block)
    config = _CHECKED_CONFIGS.get(key, False)
    if config is False:
        config = _CHECKED_CONFIGS[key] = _checked_config(kernel, grid, block)
    if config is None:
        return
    try:
        if SIMULATOR:
            with _simulated_launch():
                kernel[config](*args)
        else:
            kernel[config](*args)
        COUNTS.launched()
        if SYNC_EACH_LAUNCH:
            cuda.synchronize()
    except LaunchError:
        raise
    except Exception as exc:  # a driver or compile error: say which launch it was
        raise LaunchError(f"jit.cuda: {kernel_name(kernel)} with grid {config[0]}, block {config[1]} failed: "
                          f"{exc}") from exc


def specialized(kernel, *args):
    """``kernel`` compiled once for these arguments' types, as a dispatcher whose launches skip
    numba-cuda's type dispatch of every argument (numba-cuda's ``Dispatcher.specialize``, which
    keeps one per signature; the simulator's returns the kernel itself). A time loop specializes
    its step kernel at its first step and launches it T times through ``launch`` with arguments of
    exactly these types: a specialized dispatcher launches its one compilation whatever it is given.
    An already specialized kernel is returned as it is."""
    if getattr(kernel, "specialized", False):
        return kernel
    try:
        return kernel.specialize(*args)
    except Exception as exc:
        raise LaunchError(f"jit.cuda: {kernel_name(kernel)}: cannot compile for these arguments: {exc}") from exc


class CooperativeLimits:
    """The most blocks a cooperative launch of a compiled kernel may have, asked of the driver once
    per (compiled kernel, block, device) and kept; ``misses`` counts the driver's answers."""

    def __init__(self):
        self._limits = {}
        self.hits = 0
        self.misses = 0

    def get(self, kernel, block) -> int:
        device = None if SIMULATOR else cuda.get_current_device().id
        key = (kernel, tuple(block), device)
        limit = self._limits.get(key)
        if limit is None:
            self.misses += 1
            # A specialized dispatcher holds exactly one compilation; the simulator answers 1 for any.
            overload = kernel.overloads[None] if SIMULATOR else next(iter(kernel.overloads.values()))
            limit = self._limits[key] = int(overload.max_cooperative_grid_blocks(block))
        else:
            self.hits += 1
        return limit


COOPERATIVE_LIMITS = CooperativeLimits()


def cooperative_grid_limit(kernel, block, *args) -> int:
    """The most blocks of ``kernel`` (a grid-synchronizing one) that a cooperative launch with
    these arguments and this block may have: all of them must be resident on the GPU at once.
    Asked of the driver once per compiled kernel, block and device (``COOPERATIVE_LIMITS``). The
    simulator runs a cooperative grid of one block only. A LaunchError naming the kernel if the
    limit cannot be found."""
    try:
        return COOPERATIVE_LIMITS.get(specialized(kernel, *args), block)
    except Exception as exc:
        raise LaunchError(f"jit.cuda: {kernel_name(kernel)}: cannot size a cooperative grid for block {block}: "
                          f"{exc}") from exc


def synchronize(where: str, flags=None):
    """Wait for the device and report an asynchronous kernel fault against the call that made it.

    With ``flags`` (a small device array), read them back instead and return them as a NumPy
    array: the copy waits for all the work before it on the default stream, where jit.cuda
    launches everything, so it is the call's one synchronize."""
    try:
        if flags is None:
            cuda.synchronize()
            return None
        return flags.copy_to_host()
    except Exception as exc:
        raise LaunchError(f"jit.cuda: a kernel of {where} failed: {exc}") from exc
