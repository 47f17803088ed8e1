"""The worker threads of jit.cpu's calls, and where they run.

run_in_parallel runs one call's pieces at once: the first on the calling thread, the others
on a pool of worker threads (the pieces release the GIL: nogil kernels, numpy's BLAS).

Placement: before each parallel run, every worker is allowed every CPU the caller may use
except the one the caller is on. Left to itself, Linux put the woken worker on the caller's
CPU in most calls (measured on the 2-core KVM guest, lstm S2 forward, two threads: both
had last run on the same CPU in 17–24 of 30 calls), and the two then shared one core until
the load balancer moved one, milliseconds later: a whole small call. The guest's scheduler
avoids waking a task on a vCPU that the host has descheduled, which an idle vCPU often is.
Kept off the caller's CPU (an affinity mask, not a pin: the worker may take any other), the
two-thread calls took 0.66–0.90× their median time and 0.68–1.05× their best, over 15 calls
each (lstm, gru, rnn_tanh at S2 and M, each call after a 20 ms pause, in-process A/B,
2026-11-27). The caller's own affinity is never touched.
Where the platform lacks sched_setaffinity or sched_getcpu, workers go where the OS puts them.
"""
import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor

_pool = None  # worker threads (the caller is one more), created on first need
_pool_size = 0
_workers = []  # the workers' native thread ids
_worker_masks = {}  # thread id → the CPUs it was last allowed
_wanted_mask = None  # what keep_workers_off last asked for: a worker started later takes it too


def _load_sched_getcpu():
    try:
        getcpu = ctypes.CDLL(None, use_errno=True).sched_getcpu
    except (AttributeError, OSError):  # not glibc or musl: no sched_getcpu
        return None
    getcpu.restype, getcpu.argtypes = ctypes.c_int, []
    return getcpu


_sched_getcpu = _load_sched_getcpu() if hasattr(os, "sched_setaffinity") else None


def caller_cpu():
    """The CPU the calling thread is on now, or None where that cannot be known (or placed)."""
    if _sched_getcpu is None:
        return None
    cpu = _sched_getcpu()
    return cpu if cpu >= 0 else None


def worker_mask(cpu):
    """The CPUs a worker may use while the caller is on ``cpu``: the caller's allowed CPUs but
    that one (all of them when it is the only one)."""
    allowed = os.sched_getaffinity(0)
    return (allowed - {cpu}) or allowed


def keep_workers_off(cpu):
    """Allow every worker all of the caller's CPUs except ``cpu`` (None: leave them as they are)."""
    global _wanted_mask
    if cpu is None:
        return
    mask = _wanted_mask = worker_mask(cpu)
    for tid in list(_workers):
        if _worker_masks.get(tid) != mask:
            try:
                os.sched_setaffinity(tid, mask)
            except ProcessLookupError:  # the thread has ended (the interpreter is exiting): forget it
                _workers.remove(tid)
                _worker_masks.pop(tid, None)
                continue
            except OSError:  # refused (a restricted container, say): it runs where the OS puts it
                continue
            _worker_masks[tid] = mask


def _register_worker():
    # An exception here would break the whole pool (ThreadPoolExecutor's initializer contract),
    # so a refused placement only leaves this worker where the OS put it.
    tid = threading.get_native_id()
    mask = _wanted_mask
    if mask is not None:
        try:
            os.sched_setaffinity(0, mask)
            _worker_masks[tid] = mask
        except OSError:
            pass
    _workers.append(tid)


def run_in_parallel(calls):
    """Run each (function, args) of ``calls`` at once and wait for all of them.

    The first runs on the calling thread, the others on the worker pool, kept off the
    caller's CPU (see the module's docstring).
    """
    global _pool, _pool_size
    if len(calls) == 1:
        fn, args = calls[0]
        fn(*args)
        return
    if len(calls) - 1 > _pool_size:
        if _pool is not None:
            _pool.shutdown(wait=False)  # its idle workers exit
            # Forget their ids now: Linux reuses a thread id once its thread has ended, and a
            # later keep_workers_off must never place a thread that is not ours.
            _workers.clear()
            _worker_masks.clear()
        _pool = ThreadPoolExecutor(max_workers=len(calls) - 1, thread_name_prefix="jit.cpu",
                                   initializer=_register_worker)
        _pool_size = len(calls) - 1
    keep_workers_off(caller_cpu())
    others = [_pool.submit(fn, *args) for fn, args in calls[1:]]
    fn, args = calls[0]
    fn(*args)
    for future in others:
        future.result()
