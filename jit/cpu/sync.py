"""Spin-waiting between threads, with no GIL: the step barrier of the time loops (jit.cpu's
unit split) and the job handoff of jit.cpu.pool (wait_for_change, advance).

When the threads of one call each own a slice of the hidden units, step t + 1 of every thread
reads h_t of all units, so no thread may start it before all have finished step t. This is
a counting barrier: each thread adds 1 to a shared counter after its step t and waits until
the counter reaches n_threads · (t + 1). The counter only grows, so it needs no reset
between steps. Numba has no CPU atomics; the two here are single LLVM instructions
(atomicrmw add, seq_cst; load atomic, acquire), which also keep the compiler from moving
the step's stores past the barrier or hoisting the waiting load out of its loop.

Waiting spins (a step takes microseconds; a sleep would cost more) and yields the core to
the scheduler after SPINS_BEFORE_YIELD tries, so that more threads than free cores still
make progress instead of spinning out each other's time slices.
"""
import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

#: Tries of the counter before each sched_yield (each try is a few nanoseconds).
SPINS_BEFORE_YIELD = 4000

#: libc's sched_yield, linked by name (a ctypes pointer would keep the kernels out of the cache).
_sched_yield = types.ExternalFunction("sched_yield", types.int32())


def _element_pointer(context, builder, array_type, array, index):
    values = context.make_array(array_type)(context, builder, array)
    return cgutils.get_item_pointer(context, builder, array_type, values, [index])


@intrinsic
def atomic_add(typingctx, counters, index, value):
    """counters[index] += value atomically (sequentially consistent); returns the old value."""
    if not (isinstance(counters, types.Array) and counters.dtype == types.int64 and counters.ndim == 1):
        return None

    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        amount = context.cast(builder, args[2], signature.args[2], types.int64)
        return builder.atomic_rmw("add", pointer, amount, "seq_cst")
    return types.int64(counters, index, value), codegen


@intrinsic
def atomic_load(typingctx, counters, index):
    """counters[index], read atomically with acquire ordering."""
    if not (isinstance(counters, types.Array) and counters.dtype == types.int64 and counters.ndim == 1):
        return None

    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.load_atomic(pointer, "acquire", 8)
    return types.int64(counters, index), codegen


@njit(cache=True, nogil=True)
def wait_until_at_least(counters, index, target):
    """Spin until counters[index] ≥ target, yielding the core after every SPINS_BEFORE_YIELD tries."""
    spins = 0
    while atomic_load(counters, index) < target:
        spins += 1
        if spins >= SPINS_BEFORE_YIELD:
            _sched_yield()
            spins = 0


@njit(cache=True, nogil=True)
def wait_for_all(arrivals, n_threads, step):
    """Arrive at the barrier after ``step`` (0, 1, 2, ...) and wait for the other threads.

    arrivals: int64[1], zero before the first step, shared by the n_threads threads of a call.
    With one thread it returns at once.
    """
    if n_threads <= 1:
        return
    atomic_add(arrivals, 0, 1)
    wait_until_at_least(arrivals, 0, n_threads * (step + 1))


@njit(cache=True, nogil=True)
def wait_for_change(counters, index, seen, max_tries, settle_tries):
    """Spin until counters[index] ≠ seen, for at most ``max_tries`` reads (yielding the core
    after every SPINS_BEFORE_YIELD); return the value last read (``seen`` if it never changed).

    After a change, read ``settle_tries`` more times before returning: jit.cpu.pool's workers
    wait here for a new job, and the caller that posted it still holds Python's GIL for a few
    microseconds (see there).
    """
    value = atomic_load(counters, index)
    tries = 0
    while value == seen and tries < max_tries:
        tries += 1
        if tries % SPINS_BEFORE_YIELD == 0:
            _sched_yield()
        value = atomic_load(counters, index)
    if value != seen:
        for _ in range(settle_tries):
            atomic_load(counters, index)
    return value


@njit(cache=True, nogil=True)
def arrive_then_wait_for_change(counters, arrive_index, index, seen, max_tries, settle_tries):
    """counters[arrive_index] += 1, then wait_for_change(counters, index, seen, ...): in one
    call, so the arrival is counted only once the calling thread has released the GIL."""
    atomic_add(counters, arrive_index, 1)
    return wait_for_change(counters, index, seen, max_tries, settle_tries)


@njit(cache=True)
def advance(counters, index):
    """counters[index] += 1 atomically, holding the GIL; returns the new value."""
    return atomic_add(counters, index, 1) + 1


def new_arrivals():
    """The counter for one call's barrier."""
    return np.zeros(1, np.int64)
