"""The worker threads of jit.cpu's calls: how they are handed work, and where they run.

run_in_parallel runs one call's pieces at once: the first on the calling thread, the others
on worker threads (the pieces release the GIL: nogil kernels, numpy's BLAS).

Handoff: workers wait spinning, not sleeping. On a KVM guest whose idle vCPU halts at once,
waking a sleeping thread took tens of microseconds (80–150 µs for two no-op pieces through a
ThreadPoolExecutor, against 13–30 µs this way; docs/jit-cpu.md). So no thread of a run ever
sleeps, on a lock, a future, or the GIL (a thread that waits for the GIL sleeps on a futex):

- the caller stores each worker's piece, advances the TICKET counter (holding the GIL) and
  runs its own piece; a worker that sees the new ticket reads on for SETTLE_TRIES (~5 µs)
  before it takes the GIL, by which time the caller has released it in its own piece;
- a worker counts itself DONE from inside its next wait, after it has released the GIL; the
  caller waits for every worker's count spinning, with no GIL (jit.cpu.sync);
- a worker that has seen no ticket for WORKER_SPIN_TRIES (~1 ms) sleeps on a condition, and
  the next run wakes it: in a loop of calls the workers stay awake, and an idle program gets
  its core back.

One parallel run at a time: concurrent callers take turns.

Placement: before each parallel run, every worker may use every CPU the caller may use except
the one the caller is on (an affinity mask, not a pin; the caller's own is never touched).
Left alone, the guest's scheduler often woke the worker on the caller's vCPU (it avoids
vCPUs the host has descheduled, which idle ones often are), and the two shared one core
until the balancer moved one. Where the platform lacks sched_setaffinity or sched_getcpu,
workers go where the OS puts them.
"""
import ctypes
import os
import threading

import numpy as np

from .sync import advance, arrive_then_wait_for_change, wait_for_change, wait_until_at_least

#: Reads of TICKET before an idle worker sleeps: about 1 ms on the measured machine (2^20 reads
#: with their sched_yields took 1.1 ms; 2^22, 5 ms), longer than the Python work between the
#: runs of one call or of back-to-back calls, and short next to what torch's idle OpenMP
#: workers (8–10 ms) or OpenBLAS's (~0.1 s) spin.
WORKER_SPIN_TRIES = 1 << 20
#: Reads a worker makes after seeing a new ticket before it takes the GIL: ~5 µs (above).
SETTLE_TRIES = 1 << 14

#: The shared counters, each on its own 64-byte cache line: the caller advances TICKET once
#: per run, every worker adds 1 to DONE after each run it has taken part in.
TICKET, DONE = 0, 8

_state = np.zeros(16, np.int64)
_run_lock = threading.Lock()  # one parallel run at a time
_wake = threading.Condition()  # where workers that stopped spinning sleep
_sleepers = 0
_jobs = []  # per worker: its (function, args) of the current run, or None; one entry per worker started
_errors = []  # per worker: what its piece raised
_workers = []  # the workers' native thread ids
_worker_masks = {}  # thread id → the CPUs it was last allowed
_wanted_mask = None  # what keep_workers_off last asked for: a worker started later takes it too


def _forget_workers_after_fork():
    # A forked child has none of its parent's threads: it starts a pool of its own.
    global _state, _run_lock, _wake, _sleepers, _jobs, _errors, _workers, _worker_masks
    _state, _run_lock, _wake, _sleepers = np.zeros(16, np.int64), threading.Lock(), threading.Condition(), 0
    _jobs, _errors, _workers, _worker_masks = [], [], [], {}


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_workers_after_fork)


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
    # A refused placement only leaves this worker where the OS put it: the worker must run.
    tid = threading.get_native_id()
    mask = _wanted_mask
    if mask is not None:
        try:
            os.sched_setaffinity(0, mask)
            _worker_masks[tid] = mask
        except OSError:
            pass
    _workers.append(tid)


def _work(k, seen):
    """Worker k's loop: run _jobs[k] for each new ticket after ``seen``; never returns."""
    global _sleepers
    _register_worker()
    state, ran = _state, False
    while True:
        if ran:
            ticket = arrive_then_wait_for_change(state, DONE, TICKET, seen, WORKER_SPIN_TRIES, SETTLE_TRIES)
        else:
            ticket = wait_for_change(state, TICKET, seen, WORKER_SPIN_TRIES, SETTLE_TRIES)
        if ticket == seen:  # idle for a while: sleep until the next run
            with _wake:
                _sleepers += 1
                while state[TICKET] == seen:
                    _wake.wait()
                _sleepers -= 1
            ticket = int(state[TICKET])
        seen, job = ticket, _jobs[k]
        if job is not None:
            try:
                job[0](*job[1])
            except BaseException as error:  # handed to the caller, which raises it
                _errors[k] = error
        ran, job = True, None  # holds no arrays while idle


def pool_size():
    """Worker threads started so far (the caller of a run is one more)."""
    return len(_jobs)


def _grow(n_workers):
    """Start workers until there are n_workers (they wait for the next ticket)."""
    while pool_size() < n_workers:
        k = pool_size()
        _jobs.append(None)
        _errors.append(None)
        threading.Thread(target=_work, args=(k, int(_state[TICKET])), name=f"jit.cpu-{k}", daemon=True).start()


def run_in_parallel(calls):
    """Run each (function, args) of ``calls`` at once and wait for all of them; re-raise the
    first exception a piece raised, after all have ended.

    The first runs on the calling thread, the others on the workers, kept off the caller's
    CPU (see the module's docstring).
    """
    if len(calls) == 1:
        fn, args = calls[0]
        fn(*args)
        return
    with _run_lock:
        _grow(len(calls) - 1)
        keep_workers_off(caller_cpu())
        for k in range(pool_size()):
            _jobs[k] = calls[k + 1] if k + 1 < len(calls) else None
        everyone = int(_state[DONE]) + pool_size()  # every worker counts itself done, idle ones too
        advance(_state, TICKET)
        if _sleepers:
            with _wake:
                _wake.notify_all()
        try:
            fn, args = calls[0]
            fn(*args)
        finally:
            wait_until_at_least(_state, DONE, everyone)
            errors = [error for error in _errors if error is not None]
            _errors[:] = [None] * pool_size()
            _jobs[:] = [None] * pool_size()  # drop the arrays the pieces held
        if errors:
            raise errors[0]
