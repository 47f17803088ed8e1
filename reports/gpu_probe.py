"""Where a jit.cuda call's time goes on the GPU (issue 23): host time against device time, what a call
launches, allocates and waits for, each kernel's own device time, and what one grid.sync costs.

    python -m reports.gpu_probe --out DIR [--configs deepbench|tiny] [--cells lstm,gru,rnn_tanh]
                                [--deadline-s 45] [--calls 3]

One job: measure, and write DIR/gpu_probe.json in pytest-benchmark's format (one benchmark per
measurement, its numbers in extra_info, as reports/cpu_targets.py writes it). The file is written
again after every row, so a run cut short by its timeout keeps what it measured, and no row starts
past --deadline-s. ``python -m reports.gpu_bench summarize --probe`` turns it into tables
(probe_tables here) and judges the host-overhead target with it.

Per jit.cuda call at T = 25 (H ∈ {512, 2048} × B ∈ {16, 64}, then B ∈ {4, 8}; per-step and
persistent time loops, and persistent split-K ones; inference and training), on
numba device arrays (no torch in this process):

  host_s      time.perf_counter around the call, after a synchronize: what the caller waits.
  device_s    CUDA events recorded on the default stream around the call. For a call that ends in
              a synchronize it is close to host_s, since the GPU idles while the host prepares launches.
  busy_s      the same events with the call's launches queued behind a spin kernel (the GPU kept busy
              for 1.2 × the host's time), so that they run back to back: the GPU's own work. A training
              row is two jit.cuda calls (forward, backward), each ending in its wait: each is queued
              behind its own spin and timed apart, and the two summed. Exact when each jit.cuda call
              waits for the GPU only at its end (blocking_waits_per_call = stages) and each spin
              outlasted its stage's host time (busy_queued); an earlier wait (a synchronous copy) lets
              the host's gaps in again after it.
  overhead_s  host_s − busy_s: what a call costs beyond the GPU's work (the target: < 100 µs).
  counts      of one untimed call (counting wraps functions, which costs host time): launches through
              jit.cuda.launch.launch (or jit.cuda.launch's own counter when it has one), kernel
              launches at numba's launch, device allocations (numba's Context.memalloc), host→device
              and device→host copies and synchronizes (numba-cuda's driver layer; under the simulator,
              numba.cuda's API calls).

Per kernel of a training call: the counted call's launches are recorded, and each kernel's middle
launch is replayed (20 times for a step kernel, launched a multiple of T times; 5 for the others)
behind a spin kernel between CUDA events: its device time per launch, and the host time of a
replayed launch (numba's launch of the compiled kernel, its arguments packed again). Replaying what
the call launched needs no knowledge of the kernels' argument lists, which jit.cuda may change.

grid.sync: a cooperative kernel of 256-thread blocks (the persistent kernels' block) making N grid
syncs against the same making none, on as many blocks as can be resident at once and on 32 blocks:
µs per sync = Δt / N.

A measurement that fails becomes a row with its error; the next row still runs. Under the CUDA
simulator (``--configs tiny``, as gpu_check.sh's dry run uses) everything runs and is written, with
device "CUDA simulator"; its times mean nothing, and the report shows none of them.
"""
import argparse
import collections
import contextlib
import datetime
import functools
import importlib
import inspect
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import numpy as np
from numba import cuda

from reports.cpu_targets import benchmark_stats
from reports.gpu_bench import JIT_PATHS, Case, device_name

PROBE_SCHEMA = "cellbench-gpu-probe/1"
TOOL = "reports.gpu_probe"
CELLS = ("lstm", "gru", "rnn_tanh")
MODES = ("inference", "training")
#: The paths measured, reports.gpu_bench.JIT_PATHS' names.
PATHS = tuple(JIT_PATHS)
#: (H, B) at T = 25, in the order measured: if the deadline cuts the run, the first rows matter most.
MAIN_SHAPES = ((512, 16), (2048, 64), (512, 64), (2048, 16))
SMALL_BATCH_SHAPES = ((512, 4), (2048, 8), (512, 8), (2048, 4))
T_DEEPBENCH = 25
#: The persistent kernels' block (jit.cuda.launch.GPU_TILES: 32 units × 8 rows).
GRID_SYNC_BLOCK = 256
GRID_SYNC_FEW_BLOCKS = 32


class Settings(NamedTuple):
    """How much each measurement repeats."""
    calls: int  # timed calls per figure (host and device; busy again)
    step_replays: int  # replays per batch of a step kernel (launched a multiple of T times per call)
    other_replays: int  # the same for the other kernels
    batches: int  # batches of replays (each one sample of the device time per launch)
    grid_syncs: int  # N of the grid.sync kernel
    grid_block: int  # its block
    grid_repeats: int  # launches per grid and N


GPU_SETTINGS = Settings(calls=3, step_replays=20, other_replays=5, batches=3, grid_syncs=1000,
                        grid_block=GRID_SYNC_BLOCK, grid_repeats=5)
#: Under the simulator every thread is a Python thread: once each, on the smallest block.
TINY_SETTINGS = Settings(calls=1, step_replays=1, other_replays=1, batches=1, grid_syncs=2, grid_block=4,
                         grid_repeats=1)


class Row(NamedTuple):
    """One call row to measure: a config (as reports.gpu_bench names them), a cell, a path, a mode."""
    config: str
    T: int
    B: int
    I: int
    H: int
    cell: str
    path: str
    mode: str


def rows(kind="deepbench", cells=CELLS):
    """The call rows in the order measured: the main shapes on every path, then the small batches
    on the persistent paths (their target), then on the per-step path."""
    if kind == "tiny":
        shapes = [("tiny", 3, 2, 5, 5, path) for path in PATHS]
    elif kind == "deepbench":
        main = [(H, B, path) for H, B in MAIN_SHAPES for path in PATHS]
        small = [(H, B, path) for path in ("persistent", "split-k", "per-step") for H, B in SMALL_BATCH_SHAPES]
        shapes = [(f"DB-H{H}-B{B}", T_DEEPBENCH, B, H, H, path) for H, B, path in main + small]
    else:
        raise ValueError(f"configs: expected deepbench or tiny; got {kind!r}")
    return [Row(name, T, B, I, H, cell, path, mode) for name, T, B, I, H, path in shapes
            for cell in cells for mode in MODES]


# ----- counting calls: functions wrapped for the length of a with-block ---------------------------

class Launch(NamedTuple):
    """A kernel launch seen while counting, and how to launch it again exactly so."""
    kernel: str
    replay: Callable


class Hook(NamedTuple):
    """Count the calls of module.attribute ("name" or "Class.name") under counter; ``when(args)``
    picks the calls that count; ``capture(original, args, kwargs)`` makes a Launch of one."""
    counter: str
    module: str
    attribute: str
    when: Optional[Callable] = None
    capture: Optional[Callable] = None


def _numba_launch(original, args, kwargs):
    """numba-cuda's _Kernel.launch(kernel, args, griddim, blockdim, stream, sharedmem): every launch
    of a compiled kernel passes there, whatever jit.cuda does before it."""
    return Launch(args[0].py_func.__name__, functools.partial(original, *args, **kwargs))


#: The simulator's threads hand over at syncthreads through the GIL: with CPython's 5 ms switch
#: interval a replayed launch took ~10× longer than jit.cuda's own, which shortens it the same way
#: (jit.cuda.launch.SIMULATOR_SWITCH_INTERVAL_S).
SIMULATOR_SWITCH_INTERVAL_S = 5e-5


def _simulated_launch(original, args, kwargs):
    """The simulator's FakeCUDAKernel.__call__(kernel, *args) after kernel[grid, block]."""
    kernel = args[0]
    grid, block = tuple(kernel.grid_dim), tuple(kernel.block_dim)

    def replay():
        previous = sys.getswitchinterval()
        sys.setswitchinterval(SIMULATOR_SWITCH_INTERVAL_S)
        try:
            original(kernel[grid, block], *args[1:], **kwargs)
        finally:
            sys.setswitchinterval(previous)
    return Launch(kernel.fn.__name__, replay)


def _host_level_simulated_launch(args):
    """A launch from the host: the simulator also calls __call__ for device functions and in kernels."""
    from numba.cuda.simulator import kernel as simulated
    return not args[0]._device and not simulated._kernel_context


_DRIVER = "numba.cuda.cudadrv.driver"
#: On a GPU: numba-cuda's driver layer, below anything jit.cuda does.
GPU_HOOKS = (
    Hook("kernel_launches", "numba.cuda.dispatcher", "_Kernel.launch", capture=_numba_launch),
    Hook("allocations", _DRIVER, "Context.memalloc"),
    Hook("h2d_copies", _DRIVER, "host_to_device"),
    Hook("d2h_copies", _DRIVER, "device_to_host"),
    Hook("synchronizes", _DRIVER, "Context.synchronize"),
    Hook("synchronizes", _DRIVER, "Stream.synchronize"),
    Hook("synchronizes", _DRIVER, "Event.synchronize"),
)
#: Under the simulator: numba.cuda's API, as jit.cuda calls it (cuda.device_array, ...).
SIMULATOR_HOOKS = (
    Hook("kernel_launches", "numba.cuda.simulator.kernel", "FakeCUDAKernel.__call__",
         when=_host_level_simulated_launch, capture=_simulated_launch),
    Hook("allocations", "numba.cuda", "device_array"),
    Hook("allocations", "numba.cuda", "device_array_like"),
    Hook("allocations", "numba.cuda", "to_device"),
    Hook("h2d_copies", "numba.cuda", "to_device"),
    Hook("d2h_copies", "numba.cuda.simulator.cudadrv.devicearray", "FakeCUDAArray.copy_to_host"),
    Hook("synchronizes", "numba.cuda", "synchronize"),
)


def device_hooks():
    from jit.cuda.launch import SIMULATOR
    return SIMULATOR_HOOKS if SIMULATOR else GPU_HOOKS


def jit_launch_hooks():
    """Hooks counting jit.cuda.launch.launch under "launches", in every loaded jit.cuda module that
    holds it (backend imports it by name; a module added later may too)."""
    from jit.cuda import launch as launch_module
    original = launch_module.launch
    names = sorted(name for name, module in list(sys.modules.items())
                   if name.startswith("jit.cuda") and getattr(module, "launch", None) is original)
    return tuple(Hook("launches", name, "launch") for name in names)


class Counts:
    """What happened inside a counting() block: calls per counter, the counters that could be
    installed, and the kernel launches captured."""

    def __init__(self):
        self.calls = collections.Counter()
        self.available = set()
        self.missing = []
        self.launches = []

    def get(self, counter):
        """Calls counted, or None when no hook of that counter could be installed here."""
        return self.calls[counter] if counter in self.available else None


def _resolve(module_name, attribute):
    """(owner, name) of module.attribute, or None when it does not exist here."""
    try:
        owner = importlib.import_module(module_name)
    except ImportError:
        return None
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part, None)
        if owner is None:
            return None
    return (owner, name) if hasattr(owner, name) else None


def _counting_wrapper(original, hook, counts):
    @functools.wraps(original)
    def counted(*args, **kwargs):
        if hook.when is None or hook.when(args):
            counts.calls[hook.counter] += 1
            if hook.capture is not None:
                counts.launches.append(hook.capture(original, args, kwargs))
        return original(*args, **kwargs)
    return counted


@contextlib.contextmanager
def counting(hooks):
    """Wrap every hook's function for the block; yield the Counts. A hook whose function does not
    exist (another numba-cuda, the simulator) is listed in Counts.missing and counts nothing."""
    counts = Counts()
    undo = []
    try:
        for hook in hooks:
            found = _resolve(hook.module, hook.attribute)
            if found is None:
                counts.missing.append(f"{hook.module}.{hook.attribute}")
                continue
            owner, name = found
            inherited = name not in vars(owner)  # a method of a base class: delete ours afterwards
            original = getattr(owner, name)
            setattr(owner, name, _counting_wrapper(original, hook, counts))
            undo.append((owner, name, original, inherited))
            counts.available.add(hook.counter)
        yield counts
    finally:
        for owner, name, original, inherited in reversed(undo):  # last wrapped, first restored
            if inherited:
                delattr(owner, name)
            else:
                setattr(owner, name, original)


_NOT_GETTERS = ("reset", "clear", "set", "enable", "disable", "start", "stop")


def _launch_total(value):
    """A count of launches read from a counter: an int, a mapping of ints (per kernel), or an
    object with an int count/value/total; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, Mapping):
        counts = list(value.values())
        return sum(int(c) for c in counts) if all(_launch_total(c) is not None for c in counts) else None
    for field in ("count", "value", "total", "launches"):
        inner = getattr(value, field, None)
        if isinstance(inner, (int, np.integer)) and not isinstance(inner, bool):
            return int(inner)
    return None


def library_launch_counter(module=None):
    """A zero-argument reader of jit.cuda.launch's own launch counter, or None when it has none.

    jit.cuda.launch may grow one (issue 23's work on the host cost); its name is not fixed here, so
    any public attribute whose name holds "count" and reads as a number of launches is taken (a
    getter function taking no argument is called; a reset_/clear_... one never is). Read by name
    every time: an int counter is rebound at each launch."""
    if module is None:
        from jit.cuda import launch as module
    for name in sorted(vars(module)):
        if name.startswith("_") or "count" not in name.lower() or name.lower().startswith(_NOT_GETTERS):
            continue
        value = getattr(module, name)
        if inspect.isclass(value) or inspect.ismodule(value):
            continue
        if callable(value) and _launch_total(value) is None:
            try:
                if any(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                       for p in inspect.signature(value).parameters.values()):
                    continue  # needs an argument: not a reader
            except (TypeError, ValueError):
                continue

            def read(name=name):
                return _launch_total(getattr(module, name)())
        else:
            def read(name=name):
                return _launch_total(getattr(module, name))
        try:
            if read() is not None:
                read.counter_name = name
                return read
        except Exception:  # a getter that fails is no counter
            continue
    return None


def library_allocation_counter(module=None):
    """A zero-argument reader of the allocations jit.cuda.launch's counter object counts (an int
    ``allocations`` beside its launches, as jit.cuda.launch.COUNTS has), or None."""
    if module is None:
        from jit.cuda import launch as module
    for name in sorted(vars(module)):
        if name.startswith("_") or "count" not in name.lower():
            continue
        value = getattr(module, name)
        inner = getattr(value, "allocations", None)
        if isinstance(inner, (int, np.integer)) and not isinstance(inner, bool) and not inspect.ismodule(value):
            def read(name=name):
                return int(getattr(getattr(module, name), "allocations"))
            read.counter_name = name
            return read
    return None


def launches_of(counts, library_before, library_after, counter_name=None):
    """(launches per call, where the number came from): jit.cuda.launch's own counter when it has
    one and it moved, else the wrapped jit.cuda.launch.launch."""
    if library_before is not None and library_after is not None and library_after > library_before:
        return library_after - library_before, f"jit.cuda.launch.{counter_name or 'counter'}"
    wrapped = counts.get("launches")
    return wrapped, ("wrapped jit.cuda.launch.launch" if wrapped is not None else "not available")


# ----- device timing: events, a spin kernel, the grid.sync kernel ---------------------------------

@cuda.jit
def spin_kernel(iterations, scratch):
    """One thread multiply-adding in a dependent chain: the GPU busy for a calibrated time, so that
    launches queued behind it run back to back. A timing aid, not a cell: no reference twin."""
    x = scratch[0]
    for _ in range(iterations):
        x = x * 0.999999 + 1e-6
    scratch[0] = x


@cuda.jit
def grid_sync_kernel(syncs, out):
    """syncs grid-wide barriers and nothing else (cooperative launch). A timing aid: no reference twin."""
    grid = cuda.cg.this_grid()
    for _ in range(syncs):
        grid.sync()
    if cuda.grid(1) == 0:
        out[0] = syncs


def _seconds(start, end):
    """Seconds between two recorded events; NaN under the simulator (its events keep no time)."""
    end.synchronize()
    ms = start.elapsed_time(end)
    return ms * 1e-3 if ms >= 0 else float("nan")


class DeviceTimer:
    """CUDA events on the default stream around work, and the spin kernel that queues it.

    The spin's rate is measured on every spin (an event before it, ``start`` after it) and the next
    spin sized from the last: an idle GPU's clock ramps up under load (the H200 idled at 345 of
    1980 MHz), so one calibration at the start would make later spins several times too short."""

    WARMUP_ITERATIONS = 1 << 22  # tens of ms: the clocks ramp up before the calibration
    CALIBRATION_ITERATIONS = 1 << 20
    MAX_SPIN_S = 2.0

    def __init__(self):
        self.spun, self.start, self.end = cuda.event(), cuda.event(), cuda.event()
        self.scratch = cuda.to_device(np.zeros(1, np.float64))
        self.seconds_per_iteration = None
        self.iterations = 0  # of the spin before the next begin(); 0: none
        self.last_spin_s = float("nan")  # the last spin's measured length
        spin_kernel[1, 1](1, self.scratch)  # compiles it
        cuda.synchronize()
        self._spin_iterations(self.WARMUP_ITERATIONS)
        self.begin()
        self.elapsed_s()
        self._spin_iterations(self.CALIBRATION_ITERATIONS)
        self.begin()
        self.elapsed_s()  # sets seconds_per_iteration; NaN under the simulator: one-iteration spins

    def _spin_iterations(self, iterations):
        self.spun.record()
        spin_kernel[1, 1](iterations, self.scratch)
        self.iterations = iterations

    def spin(self, seconds):
        """Keep the GPU busy for about ``seconds`` (at most MAX_SPIN_S) from now on; call begin() next."""
        iterations = 1
        if self.seconds_per_iteration:
            iterations = max(1, int(min(seconds, self.MAX_SPIN_S) / self.seconds_per_iteration))
        self._spin_iterations(iterations)

    def begin(self):
        self.start.record()

    def elapsed_s(self):
        """Seconds from begin() to now on the device; also measures the spin before begin(), if any."""
        self.end.record()
        seconds = _seconds(self.start, self.end)
        if self.iterations:
            self.last_spin_s = _seconds(self.spun, self.start)
            if self.last_spin_s > 0:
                self.seconds_per_iteration = self.last_spin_s / self.iterations
            self.iterations = 0
        else:
            self.last_spin_s = float("nan")
        return seconds


def _median(values):
    finite = [v for v in values if v == v]
    return statistics.median(finite) if finite else float("nan")


# ----- the measurements -----------------------------------------------------------------------------

def grid_sync_rows(timer, settings, device):
    """µs per grid.sync on the most blocks resident at once and on 32 blocks (fewer if the GPU
    holds fewer). Each launch is timed alone between events; the launch's own cost cancels in
    the difference between N syncs and none."""
    from jit.cuda.launch import SIMULATOR
    from numba import types
    block = settings.grid_block
    out = cuda.device_array(1, np.int64)
    try:
        if SIMULATOR:  # any signature's overload answers 1: the simulator runs one cooperative block
            resident = grid_sync_kernel.overloads[None].max_cooperative_grid_blocks(block)
        else:
            resident = grid_sync_kernel.compile((types.int64, types.int64[::1])).max_cooperative_grid_blocks(block)
    except Exception as exc:
        return [error_entry("grid_sync", ["resident"], {"device": device, "block_threads": block}, exc)]
    entries = []
    for label, blocks in (("resident", resident), ("few", min(GRID_SYNC_FEW_BLOCKS, resident))):
        extra = {"device": device, "grid": label, "grid_blocks": int(blocks), "block_threads": block,
                 "resident_blocks": int(resident), "syncs": settings.grid_syncs}
        try:
            times = {}
            for syncs in (0, settings.grid_syncs):
                grid_sync_kernel[blocks, block](syncs, out)  # compiles, warms
                cuda.synchronize()
                times[syncs] = []
                for _ in range(settings.grid_repeats):
                    timer.begin()
                    grid_sync_kernel[blocks, block](syncs, out)
                    times[syncs].append(timer.elapsed_s())
            per_sync = [(with_syncs - without) / settings.grid_syncs
                        for with_syncs, without in zip(times[settings.grid_syncs], times[0])]
            extra.update(us_per_sync=_median(per_sync) * 1e6, kernel_s_without_syncs=_median(times[0]),
                         kernel_s_with_syncs=_median(times[settings.grid_syncs]), error=None)
            entries.append(entry("grid_sync", [label, f"{blocks}blocks"], extra, per_sync))
        except Exception as exc:
            entries.append(error_entry("grid_sync", [label, f"{blocks}blocks"], extra, exc))
    return entries


def _stages_of(row):
    """The jit.cuda calls of a row (forward; or forward, backward), as the benchmark makes them, on
    numba device arrays (no torch)."""
    path = JIT_PATHS[row.path]
    return Case(row.cell, row.T, row.B, row.I, row.H, peer=False).jit_cuda_stages(row.mode, path.persistent,
                                                                                   path.split_k)


def _run(stages):
    result = None
    for stage in stages:
        result = stage(result)
    return result


def measure_call(stages, T, timer, settings, replay_kernels):
    """(figures of one call, its host times, its kernels' rows as (kernel, figures, device times)) of
    a call made of jit.cuda calls (stages: forward, and backward in training); see the module's doc.
    Each stage ends in its own wait for the GPU, so busy time is measured per stage, each queued
    behind its own spin, and summed."""
    _run(stages)  # compiles, and fills whatever a first call caches
    cuda.synchronize()
    library, allocated = library_launch_counter(), library_allocation_counter()
    before = library() if library else None
    allocated_before = allocated() if allocated else None
    with counting(device_hooks() + jit_launch_hooks()) as counts:
        _run(stages)
    after = library() if library else None
    jit_allocations = allocated() - allocated_before if allocated else None
    launches, source = launches_of(counts, before, after, getattr(library, "counter_name", None))
    host, device, stage_host = [], [], [[] for _ in stages]
    for _ in range(settings.calls):
        cuda.synchronize()
        timer.begin()
        start = time.perf_counter()
        result = None
        for i, stage in enumerate(stages):
            began = time.perf_counter()
            result = stage(result)
            stage_host[i].append(time.perf_counter() - began)
        host.append(time.perf_counter() - start)
        device.append(timer.elapsed_s())
    # each spin longer than the host takes to queue its stage's launches (at most its whole time)
    spin_s = [1.2 * _median(times) + 5e-4 for times in stage_host]
    busy, spins, queued = [], [], True
    for _ in range(settings.calls):
        cuda.synchronize()
        total, result = 0.0, None
        for i, stage in enumerate(stages):
            timer.spin(spin_s[i])
            timer.begin()
            result = stage(result)
            total += timer.elapsed_s()
            spins.append(timer.last_spin_s)
            queued = queued and timer.last_spin_s >= _median(stage_host[i])  # False on NaN too
        busy.append(total)
    waits = [counts.get(c) for c in ("h2d_copies", "d2h_copies", "synchronizes")]
    figures = {
        "host_s": _median(host), "device_s": _median(device), "busy_s": _median(busy),
        "overhead_s": _median(host) - _median(busy), "stages": len(stages),
        "host_all_s": host, "device_all_s": device, "busy_all_s": busy, "spin_s": spin_s, "spins_s": spins,
        # every launch of a stage was queued before its spin ended: the spin outlasted the stage's host time
        "busy_queued": bool(spins) and queued,
        "launches_per_call": launches, "launch_count_source": source,
        "jit_allocations_per_call": jit_allocations,  # jit.cuda's own count (its workspaces), if it keeps one
        "kernel_launches_per_call": counts.get("kernel_launches"),
        "allocations_per_call": counts.get("allocations"),
        "h2d_copies_per_call": waits[0], "d2h_copies_per_call": waits[1], "synchronizes_per_call": waits[2],
        "blocking_waits_per_call": None if None in waits else sum(waits),
        "counters_missing": counts.missing,
    }
    kernels = replay_each_kernel(counts.launches, T, timer, settings) if replay_kernels else []
    return figures, host, kernels


def replay_each_kernel(launches, T, timer, settings):
    """[(kernel, launches per call, figures)]: each kernel's middle launch replayed behind a spin."""
    by_kernel = {}
    for launch in launches:
        by_kernel.setdefault(launch.kernel, []).append(launch.replay)
    found = []
    for kernel, replays in by_kernel.items():
        # a step kernel: launched once (gru_classic: twice) per step of each time loop
        per_step = len(replays) >= T and len(replays) % T == 0
        replay = replays[len(replays) // 2]
        n = settings.step_replays if per_step else settings.other_replays
        figures = {"kernel": kernel, "launches_per_call": len(replays), "step_kernel": per_step, "replays": n}
        try:
            replay()
            cuda.synchronize()
            start = time.perf_counter()
            for _ in range(n):
                replay()
            host = (time.perf_counter() - start) / n
            cuda.synchronize()
            device = []
            for _ in range(settings.batches):
                timer.spin(1.5 * n * host + 2e-4)
                timer.begin()
                for _ in range(n):
                    replay()
                device.append(timer.elapsed_s() / n)
            figures.update(device_s_per_launch=_median(device), host_s_per_launch=host, error=None)
            found.append((kernel, figures, device))
        except Exception as exc:
            figures.update(device_s_per_launch=float("nan"), host_s_per_launch=float("nan"),
                           error=f"{type(exc).__name__}: {exc}")
            found.append((kernel, figures, []))
    return found


def call_entries(row, timer, settings, device):
    """The entries of one row: the call's, and in training its kernels'."""
    from reports.matrix import flops
    case = {"device": device, "cell": row.cell, "config": row.config, "mode": row.mode, "path": row.path,
            "backend": JIT_PATHS[row.path].backend, "dtype": "float32", "T": row.T, "B": row.B, "I": row.I,
            "H": row.H, "flops": flops(row.cell, row.T, row.B, row.I, row.H, row.mode)}
    name = [row.path, row.cell, row.config, row.mode]
    try:
        figures, host, kernels = measure_call(_stages_of(row), row.T, timer, settings, row.mode == "training")
    except Exception as exc:
        return [error_entry("call", name, case, exc)]
    entries = [entry("call", name, {**case, **figures, "error": None}, host)]
    for kernel, figures, device_times in kernels:
        entries.append(entry("kernel", [kernel, row.path, row.cell, row.config],
                              {**case, **figures}, device_times))
    return entries


# ----- pytest-benchmark JSON -------------------------------------------------------------------------

def _stats(samples):
    """pytest-benchmark's stats of the samples (seconds), NaN ones left out; NaN stats when none."""
    finite = [float(s) for s in samples if s == s]
    if not finite:
        nan = float("nan")
        return {"min": nan, "max": nan, "mean": nan, "stddev": nan, "rounds": 0, "median": nan, "iqr": nan,
                "q1": nan, "q3": nan, "iqr_outliers": 0, "stddev_outliers": 0, "outliers": "0;0", "ld15iqr": nan,
                "hd15iqr": nan, "ops": nan, "total": 0.0, "data": [], "iterations": 1}
    return benchmark_stats(finite)


def entry(kind, name_parts, extra, samples):
    param = "-".join(str(p) for p in name_parts)
    return {
        "group": f"gpu_probe-{kind}", "name": f"gpu_probe[{kind}-{param}]",
        "fullname": f"reports/gpu_probe.py::gpu_probe[{kind}-{param}]", "params": {"kind": kind, "case": param},
        "param": param, "extra_info": {"schema": PROBE_SCHEMA, "tool": TOOL, "kind": kind, **extra},
        "options": {"timer": "perf_counter (host), CUDA events (device)"}, "stats": _stats(samples),
    }


def error_entry(kind, name_parts, extra, exc):
    return entry(kind, name_parts, {**extra, "error": f"{type(exc).__name__}: {exc}"}, [])


def document(entries, info, machine_info, commit_info, when=None):
    """The whole pytest-benchmark JSON of a probe run; the run's own facts under machine_info.cellbench."""
    from pytest_benchmark import __version__
    return {"machine_info": {**machine_info, "cellbench": info}, "commit_info": commit_info,
            "benchmarks": entries,
            "datetime": when or datetime.datetime.now(datetime.timezone.utc).isoformat(), "version": __version__}


def _write(path, data):
    """Write the JSON whole, then move it in place: a kill while writing leaves the previous file."""
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(data, indent=1))
    os.replace(partial, path)


def run(out_dir, kind="deepbench", cells=CELLS, deadline_s=None, calls=None, log=print):
    """Measure everything, writing OUT/gpu_probe.json after each row; return its path."""
    from pytest_benchmark.plugin import pytest_benchmark_generate_machine_info
    from pytest_benchmark.utils import get_commit_info
    began = time.monotonic()
    settings = TINY_SETTINGS if kind == "tiny" else GPU_SETTINGS
    if calls:
        settings = settings._replace(calls=calls)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "gpu_probe.json"
    device = device_name()
    machine_info, commit_info = pytest_benchmark_generate_machine_info(), get_commit_info()
    todo = rows(kind, cells)
    info = {"tool": TOOL, "device": device, "configs": kind, "settings": settings._asdict(),
            "deadline_s": deadline_s, "rows_planned": len(todo), "rows_done": 0, "rows_skipped": 0}
    entries = []
    timer = DeviceTimer()
    info["spin_seconds_per_iteration"] = timer.seconds_per_iteration
    entries += grid_sync_rows(timer, settings, device)
    _write(path, document(entries, info, machine_info, commit_info))
    for index, row in enumerate(todo):
        if deadline_s is not None and time.monotonic() - began > deadline_s:
            info["rows_skipped"] = len(todo) - index
            log(f"gpu_probe: deadline of {deadline_s:.0f} s reached: "
                f"{len(todo) - index} of {len(todo)} rows not measured")
            break
        row_began = time.monotonic()
        new = call_entries(row, timer, settings, device)
        entries += new
        info["rows_done"] = index + 1
        info["elapsed_s"] = time.monotonic() - began
        _write(path, document(entries, info, machine_info, commit_info))
        failed = [e["extra_info"]["error"] for e in new if e["extra_info"].get("error")]
        log(f"  {row.cell} {row.config} {row.path} {row.mode}: {time.monotonic() - row_began:.1f} s"
            + (f"; failed: {failed[0]}" if failed else ""))
    return path


# ----- reading it back: the report's tables ---------------------------------------------------------

def load_probe(path):
    """One row per probe benchmark: its extra_info as columns, and stats.median."""
    import pandas as pd
    data = json.loads(Path(path).read_text())
    frame = pd.json_normalize(data.get("benchmarks", []), max_level=1)
    if frame.empty:
        raise ValueError(f"{path}: no probe measurements in the file")
    frame.columns = [c.removeprefix("extra_info.") for c in frame.columns]
    foreign = frame[frame.get("schema") != PROBE_SCHEMA] if "schema" in frame else frame
    if not foreign.empty:
        raise ValueError(f"{path}: not a gpu_probe file (extra_info.schema is not {PROBE_SCHEMA!r})")
    return frame.rename(columns={"stats.median": "median_s"})


def _of_kind(frame, kind, columns):
    part = frame[frame["kind"] == kind].copy()
    for column in columns:
        if column not in part:
            part[column] = None
    return part


def _us(seconds):
    return seconds * 1e6


def probe_tables(frame, simulated=False):
    """{title: DataFrame} for the report: calls (host, device, busy, overhead, counts), grid.sync,
    step kernels and every kernel of a training call. Under the simulator, counts only."""
    import pandas as pd
    tables = {}
    calls = _of_kind(frame, "call", ["host_s", "device_s", "busy_s", "overhead_s", "launches_per_call",
                                     "kernel_launches_per_call", "allocations_per_call", "h2d_copies_per_call",
                                     "d2h_copies_per_call", "synchronizes_per_call", "blocking_waits_per_call",
                                     "error"])
    if not calls.empty:
        table = pd.DataFrame({
            "cell": calls["cell"], "config": calls["config"], "mode": calls["mode"], "path": calls["path"],
            "host µs": _us(calls["host_s"]), "device µs": _us(calls["device_s"]), "busy µs": _us(calls["busy_s"]),
            "overhead µs": _us(calls["overhead_s"]),
            "busy queued": calls["busy_queued"].map({True: "yes", False: "no"}) if "busy_queued" in calls else None,
            "launches": calls["launches_per_call"],
            "kernel launches": calls["kernel_launches_per_call"], "allocations": calls["allocations_per_call"],
            "H→D": calls["h2d_copies_per_call"], "D→H": calls["d2h_copies_per_call"],
            "syncs": calls["synchronizes_per_call"], "error": calls["error"].fillna(""),
        })
        tables["calls"] = _without_timings(table) if simulated else table
    syncs = _of_kind(frame, "grid_sync", ["grid", "grid_blocks", "block_threads", "syncs", "us_per_sync", "error"])
    if not syncs.empty:
        table = pd.DataFrame({"grid": syncs["grid"], "blocks": syncs["grid_blocks"],
                              "threads per block": syncs["block_threads"], "syncs": syncs["syncs"],
                              "µs per grid.sync": syncs["us_per_sync"], "error": syncs["error"].fillna("")})
        tables["grid_sync"] = _without_timings(table) if simulated else table
    kernels = _of_kind(frame, "kernel", ["kernel", "launches_per_call", "step_kernel", "device_s_per_launch",
                                         "host_s_per_launch", "error"])
    if not kernels.empty:
        step_flops = kernels.apply(_step_flops, axis=1)
        table = pd.DataFrame({
            "kernel": kernels["kernel"], "cell": kernels["cell"], "config": kernels["config"],
            "path": kernels["path"], "launches per call": kernels["launches_per_call"],
            "device µs per launch": _us(kernels["device_s_per_launch"]),
            "host µs per launch": _us(kernels["host_s_per_launch"]),
            "share of busy": [_share(k, frame) for _, k in kernels.iterrows()],
            "step GFLOP/s": [f / t / 1e9 if s and t == t and t > 0 else float("nan")
                             for f, t, s in zip(step_flops, kernels["device_s_per_launch"], kernels["step_kernel"])],
            "error": kernels["error"].fillna(""),
        })
        step = table[kernels["step_kernel"].astype(bool).to_numpy()]
        tables["step_kernels"] = _without_timings(step) if simulated else step
        tables["kernels"] = _without_timings(table) if simulated else _top_kernels(table)
    return tables


#: Kernels shown per training call in the report (the JSON keeps them all).
TOP_KERNELS = 4


def _top_kernels(table):
    """The TOP_KERNELS kernels with the largest share of each training call's busy time."""
    ranked = table.assign(_rank=table["share of busy"].fillna(-1.0))
    ranked = ranked.sort_values(["cell", "config", "path", "_rank"], ascending=[True, True, True, False], kind="stable")
    return ranked.groupby(["cell", "config", "path"], sort=False).head(TOP_KERNELS).drop(columns="_rank")


def _step_flops(kernel_row):
    """FLOPs of one step's recurrent product, W_hh h (forward) or its transpose (backward): 2·B·G·H·H."""
    from reference.contract import NUM_GATES
    return 2 * kernel_row["B"] * NUM_GATES[kernel_row["cell"]] * kernel_row["H"] ** 2


def _share(kernel_row, frame):
    """The kernel's device time × launches per call, as a fraction of its training call's busy time."""
    call = frame[(frame["kind"] == "call") & (frame["cell"] == kernel_row["cell"])
                 & (frame["config"] == kernel_row["config"]) & (frame["path"] == kernel_row["path"])
                 & (frame["mode"] == "training")]
    if call.empty or "busy_s" not in call:
        return float("nan")
    busy = call["busy_s"].iloc[0]
    t = kernel_row["device_s_per_launch"]
    if not (busy == busy and t == t and busy > 0):
        return float("nan")
    return t * kernel_row["launches_per_call"] / busy


_TIMING_WORDS = ("µs", "GFLOP/s", "share of busy", "queued")


def _without_timings(table):
    """The table without a time or a rate: the simulator's mean nothing."""
    return table[[c for c in table.columns if not any(w in c for w in _TIMING_WORDS)]]


def host_overheads(frame):
    """[cell, config, mode, path, overhead_s, exact, busy_s, host_s, error] of every call row. exact:
    busy_s is the GPU's work alone (every launch queued behind the spin, and the call waits for the
    GPU only at its end); otherwise busy_s holds host gaps too, and overhead_s is only a lower bound."""
    calls = _of_kind(frame, "call", ["overhead_s", "busy_s", "host_s", "busy_queued", "blocking_waits_per_call",
                                     "stages", "error"])
    stages = calls["stages"].fillna(1)
    calls["exact"] = [bool(q is True or q == 1.0) and w is not None and w == w and w <= n
                      for q, w, n in zip(calls["busy_queued"], calls["blocking_waits_per_call"], stages)]
    columns = ["cell", "config", "mode", "path", "overhead_s", "exact", "busy_s", "host_s", "error"]
    return calls[columns].reset_index(drop=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m reports.gpu_probe", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for gpu_probe.json")
    parser.add_argument("--configs", default="deepbench", choices=["deepbench", "tiny"],
                        help="deepbench: T = 25, H in 512/2048, B in 16/64 and 4/8; "
                             "tiny: the simulator's plumbing check")
    parser.add_argument("--cells", default=",".join(CELLS), help="comma list of cells (default: all three)")
    parser.add_argument("--deadline-s", type=float, default=None,
                        help="start no row after this many seconds (what was measured is kept)")
    parser.add_argument("--calls", type=int, default=None, help="timed calls per figure (default 3; tiny: 1)")
    args = parser.parse_args(argv)
    cells = tuple(c.strip() for c in args.cells.split(",") if c.strip())
    unknown = [c for c in cells if c not in CELLS]
    if unknown or not cells:
        parser.error(f"--cells: expected some of {', '.join(CELLS)}; got {args.cells!r}")
    if args.calls is not None and args.calls < 1:
        parser.error(f"--calls: expected at least 1; got {args.calls}")
    # the spin kernel's one block and the 32-block grid are small on purpose
    warnings.filterwarnings("ignore", message="Grid size .* under-utilization")
    path = run(args.out, args.configs, cells, args.deadline_s, args.calls)
    print(f"gpu_probe: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
