"""Family structure: what follows from the shape of the computation, not from its numbers.

Batch rows are independent (permuting the batch permutes the results; a row run alone gives its
row); T steps equal T1 steps then the rest from the carried state; T = 0 returns the initial state;
B = 0 gives empty results; the same call gives bit-identical results; results do not depend on the
inputs' memory layout; inputs are never modified, nor are earlier results by a later call; calls
from two threads at once give the results of each alone; the dtype in is the dtype out, and h_n,
c_n are the last of hs, cs.

Each property that looks at both forward's and backward's results has two tests, its ``half``
"forward" (forward's results) and "backward" (forward's and backward's; properties.conftest): a
backend with backward runs the backward half, a forward-only one (backward = None) the forward half. A backend may return gates = None and cs = None (frameworks do not
expose them); the properties then check the fields it does return.

Where two computations of the same quantity may round differently (another batch size can
change a BLAS kernel's summation order), each is within properties.asserts' bound of the exact
value, so they may differ by twice that bound.
"""
import sys
import threading
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from .asserts import BACKWARD_FIELDS, FORWARD_FIELDS, OPTIONAL_FIELDS, assert_close, assert_dtype, tolerances
from .strategies import Problem, problems

#: Problems where the bound is tight (see test_agreement); structure holds in every regime, but
#: only a contracting one keeps "equal up to rounding" a sharp statement.
REGIMES = ("contracting", "contracting", "pytorch_init")
PER_ROW = {"hs": 1, "cs": 1, "gates": 1, "h_n": 0, "c_n": 0, "dx": 1, "dh0": 0, "dc0": 0}


def rows(problem: Problem, index) -> Problem:
    """The problem restricted to batch rows ``index`` (a permutation, or one row as a slice)."""
    def take(a, axis):
        return None if a is None else np.ascontiguousarray(np.take(a, index, axis=axis))
    return replace(problem, x=take(problem.x, 1), h0=take(problem.h0, 0), c0=take(problem.c0, 0),
                   dhs=take(problem.dhs, 1), dh_n=take(problem.dh_n, 0), dc_n=take(problem.dc_n, 0))


def assert_fields_close(actual: dict, expected: dict, tols, context):
    for field, e in expected.items():
        if e is not None:
            assert_close(field, actual[field], e, 2 * tols.for_field(field), context=context)


def results(problem, backend, half) -> dict:
    """Forward's fields, and (half "backward") backward's too, by name."""
    fwd = problem.forward(backend)
    out = {f: getattr(fwd, f) for f in FORWARD_FIELDS}
    if half == "backward":
        grads = problem.backward(backend, fwd)
        out.update({f: getattr(grads, f) for f in BACKWARD_FIELDS})
    return out


@given(data=st.data())
def test_permuting_the_batch_permutes_the_results(backend, cell, dtype, half, data):
    problem = data.draw(problems(backend, cell, dtype, regimes=REGIMES), label="problem")
    B = problem.x.shape[1]
    permutation = np.array(data.draw(st.permutations(range(B)), label="permutation"), dtype=np.intp)
    whole = results(problem, backend, half)
    permuted = results(rows(problem, permutation), backend, half)
    expected = {f: (None if v is None else np.take(v, permutation, axis=PER_ROW[f]) if f in PER_ROW else v)
                for f, v in whole.items()}
    assert_fields_close(permuted, expected, tolerances(problem), problem.describe() + f", permutation {permutation}")


@given(data=st.data())
def test_a_row_run_alone_gives_its_row(backend, cell, dtype, data):
    problem = data.draw(problems(backend, cell, dtype, regimes=REGIMES), label="problem")
    row = data.draw(st.integers(0, problem.x.shape[1] - 1), label="row")
    whole = problem.forward(backend)
    alone = rows(problem, [row]).forward(backend)
    expected = {f: (None if getattr(whole, f) is None else np.take(getattr(whole, f), [row], axis=PER_ROW[f]))
                for f in FORWARD_FIELDS}
    assert_fields_close({f: getattr(alone, f) for f in FORWARD_FIELDS}, expected, tolerances(problem),
                        problem.describe() + f", row {row} alone")


@given(data=st.data())
def test_running_in_two_parts_equals_running_at_once(backend, cell, dtype, data):
    problem = data.draw(problems(backend, cell, dtype, regimes=REGIMES, min_T=2), label="problem")
    T = problem.x.shape[0]
    split = data.draw(st.integers(1, T - 1), label="T1")
    whole = problem.forward(backend)
    first = replace(problem, x=np.ascontiguousarray(problem.x[:split])).forward(backend)
    rest = replace(problem, x=np.ascontiguousarray(problem.x[split:]), h0=np.asarray(first.h_n),
                   c0=None if first.c_n is None else np.asarray(first.c_n)).forward(backend)
    context = problem.describe() + f", split after T1={split}"
    tols = tolerances(problem)
    def parts(field):
        return None if getattr(whole, field) is None else np.concatenate([getattr(first, field), getattr(rest, field)])
    joined = {"hs": parts("hs"), "h_n": rest.h_n, "c_n": rest.c_n, "cs": parts("cs"), "gates": parts("gates")}
    assert_fields_close(joined, {f: getattr(whole, f) for f in FORWARD_FIELDS}, tols, context)


@given(data=st.data())
def test_zero_steps_return_the_initial_state(backend, cell, dtype, half, data):
    problem = data.draw(problems(backend, cell, dtype, min_T=0, max_T=0), label="problem")
    T, B, I = problem.x.shape
    H = problem.h0.shape[1]
    fwd = problem.forward(backend)
    context = problem.describe()
    assert np.shape(fwd.hs) == (0, B, H), f"hs: shape {np.shape(fwd.hs)}, expected (0, {B}, {H}); {context}"
    np.testing.assert_array_equal(fwd.h_n, problem.h0, err_msg="h_n must equal h0 when T = 0")
    if cell == "lstm":
        np.testing.assert_array_equal(fwd.c_n, problem.c0, err_msg="c_n must equal c0 when T = 0")
    if half == "forward":
        return
    grads = problem.backward(backend, fwd)
    assert np.shape(grads.dx) == (0, B, I), f"dx: shape {np.shape(grads.dx)}, expected (0, {B}, {I}); {context}"
    np.testing.assert_array_equal(grads.dh0, problem.dh_n, err_msg="dh0 must equal dh_n when T = 0")
    if cell == "lstm":
        np.testing.assert_array_equal(grads.dc0, problem.dc_n, err_msg="dc0 must equal dc_n when T = 0")
    for field in ("dw_ih", "dw_hh", "db_ih", "db_hh"):
        np.testing.assert_array_equal(getattr(grads, field), np.zeros_like(getattr(problem.params, field[1:])),
                                      err_msg=f"{field} must be zero when T = 0")


@given(data=st.data())
def test_an_empty_batch_gives_empty_results(backend, cell, dtype, half, data):
    """B = 0 (a batch filtered down to nothing) is a valid call: every per-row result has no rows,
    the rest keeps its shape, and the weight gradients are zero (nothing was summed)."""
    problem = data.draw(problems(backend, cell, dtype), label="problem")
    empty = rows(problem, np.array([], dtype=np.intp))
    whole, got = results(problem, backend, half), results(empty, backend, half)
    context = problem.describe() + ", all rows dropped"
    for field, full in whole.items():
        if full is None:
            assert got[field] is None, \
                f"{field}: expected None as with every row; got {type(got[field]).__name__}; {context}"
            continue
        shape = list(np.shape(full))
        if field in PER_ROW:
            shape[PER_ROW[field]] = 0
        assert np.shape(got[field]) == tuple(shape), \
            f"{field}: shape {np.shape(got[field])}, expected {tuple(shape)}; {context}"
        if field not in PER_ROW:  # the weight and bias gradients: sums over no rows
            np.testing.assert_array_equal(np.asarray(got[field]), 0,
                                          err_msg=f"{field} must be zero for B = 0; {context}")


#: Memory layouts a caller's arrays may come in (NumPy views are all of them): the kernel must read
#: values by their strides, never assume C order, and never write to an input.
LAYOUTS = ("fortran", "strided", "read_only")


def relaid(a, layout):
    """The values of ``a`` in another memory layout: Fortran order, a view that skips every other
    element of a larger array, or a read-only copy."""
    if a is None:
        return None
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "strided":
        spaced = np.full(a.shape + (2,), np.nan, a.dtype)  # a NaN after every value: read it and it shows
        view = spaced[..., 0]
        view[...] = a
        return view
    frozen = np.array(a, copy=True)
    frozen.flags.writeable = False
    return frozen


@given(data=st.data())
def test_results_do_not_depend_on_the_inputs_memory_layout(backend, cell, dtype, half, data):
    """Every input in Fortran order, as a strided view, or read-only gives the results of the same
    values in C order, up to the rounding of another summation order (a BLAS may pick its kernel
    by layout): the same 2× bound as the permutation property."""
    problem = data.draw(problems(backend, cell, dtype, regimes=REGIMES), label="problem")
    layout = data.draw(st.sampled_from(LAYOUTS), label="layout")
    moved = replace(problem, params=type(problem.params)(*(relaid(a, layout) for a in problem.params)),
                    x=relaid(problem.x, layout), h0=relaid(problem.h0, layout), c0=relaid(problem.c0, layout),
                    dhs=relaid(problem.dhs, layout), dh_n=relaid(problem.dh_n, layout),
                    dc_n=relaid(problem.dc_n, layout))
    assert_fields_close(results(moved, backend, half), results(problem, backend, half), tolerances(problem),
                        problem.describe() + f", every input {layout}")


@given(data=st.data())
def test_the_same_call_gives_bit_identical_results(backend, cell, dtype, half, data):
    problem = data.draw(problems(backend, cell, dtype), label="problem")
    first, second = results(problem, backend, half), results(problem, backend, half)
    for field, value in first.items():
        if value is not None:
            np.testing.assert_array_equal(second[field], value, err_msg=f"{field} differs between two identical "
                                                                        f"calls; {problem.describe()}")


def snapshot(problem, fwd=None):
    arrays = {"x": problem.x, "h0": problem.h0, "c0": problem.c0, "dhs": problem.dhs, "dh_n": problem.dh_n,
              "dc_n": problem.dc_n, **{f"params.{k}": v for k, v in problem.params._asdict().items()}}
    if fwd is not None:
        arrays.update({f"fwd.{f}": getattr(fwd, f) for f in FORWARD_FIELDS})
    return {k: np.array(v, copy=True) for k, v in arrays.items() if v is not None}


def other_values(problem: Problem) -> Problem:
    """The same shapes with other values (x and h0 negated): a second call that a backend mixing
    calls' memory would mix up with the first."""
    return replace(problem, x=-problem.x, h0=-problem.h0)


@given(data=st.data())
def test_a_later_call_leaves_earlier_results_alone(backend, cell, dtype, half, data):
    """A result belongs to the caller: another call of the same shapes (here on other inputs)
    must not change it, as it would if a backend handed out a buffer it reuses."""
    problem = data.draw(problems(backend, cell, dtype), label="problem")
    first = results(problem, backend, half)
    kept = {f: None if v is None else np.array(v, copy=True) for f, v in first.items()}
    results(other_values(problem), backend, half)
    for field, value in kept.items():
        if value is not None:
            np.testing.assert_array_equal(np.asarray(first[field]), value, err_msg=(
                f"{field} of a call changed during a later call; {problem.describe()}"))


#: Pairs of concurrent calls per example: thread interleaving is not drawn by Hypothesis, so a
#: few rounds make a mix-up that needs a particular interleaving likely to show in every run.
CONCURRENT_ROUNDS = 3
#: How long a concurrent call may take before the property calls it stuck: the suite's problems
#: take well under a second alone, and a few seconds on the CUDA simulator.
CONCURRENT_CALL_LIMIT_S = 300


def run_at_once(calls, switch_interval_s=1e-6):
    """Run each zero-argument call on its own thread, all released together; their results in order.

    Python hands the GIL from thread to thread every ``switch_interval_s`` meanwhile (5 ms by
    default), so that backends written in Python interleave within a time step rather than run
    one after the other. A call's exception is raised here.
    """
    start, outcomes = threading.Barrier(len(calls)), [None] * len(calls)

    def run(k):
        try:
            start.wait(timeout=60)
            outcomes[k] = (True, calls[k]())
        except BaseException as error:  # raised by the caller below
            outcomes[k] = (False, error)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(switch_interval_s)
    try:
        threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(len(calls))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=CONCURRENT_CALL_LIMIT_S)
    finally:
        sys.setswitchinterval(interval)
    stuck = [k for k, thread in enumerate(threads) if thread.is_alive()]
    assert not stuck, (f"calls {stuck} did not end within {CONCURRENT_CALL_LIMIT_S} s while another thread "
                       f"called the backend (alone, each ended): a deadlock between concurrent calls?")
    for ok, value in outcomes:
        if not ok:
            raise value
    return [value for _, value in outcomes]


@given(data=st.data())
def test_calls_from_two_threads_at_once_give_the_results_of_each_alone(backend, cell, dtype, half, data):
    """Two threads call forward and backward at the same time, on the problem and on the same
    shapes with other values: each gets the results of its call made alone, up to the
    permutation property's 2× bound (a threaded BLAS may share its threads otherwise when two
    calls use it). A backend that keeps a scratch array per backend rather than per call or
    per calling thread (a state, a workspace) mixes the two calls' numbers."""
    problem = data.draw(problems(backend, cell, dtype, regimes=REGIMES), label="problem")
    other = other_values(problem)
    alone = [results(p, backend, half) for p in (problem, other)]
    for round_ in range(CONCURRENT_ROUNDS):
        together = run_at_once([lambda p=p: results(p, backend, half) for p in (problem, other)])
        for got, expected, p, name in zip(together, alone, (problem, other), ("the problem", "its negation")):
            assert_fields_close(got, expected, tolerances(p), p.describe() + f" ({name}), called while another "
                                f"thread called the backend (round {round_ + 1} of {CONCURRENT_ROUNDS})")


@given(data=st.data())
def test_inputs_are_not_modified(backend, cell, dtype, half, data):
    """Forward leaves its inputs alone; backward leaves its inputs alone, forward's results included."""
    problem = data.draw(problems(backend, cell, dtype), label="problem")
    before = snapshot(problem)
    fwd = problem.forward(backend)
    for name, value in snapshot(problem).items():
        np.testing.assert_array_equal(value, before[name], err_msg=f"{name} was modified by forward; {problem.describe()}")
    if half == "backward":
        before = snapshot(problem, fwd)
        problem.backward(backend, fwd)
        for name, value in snapshot(problem, fwd).items():
            np.testing.assert_array_equal(value, before[name],
                                          err_msg=f"{name} was modified by backward; {problem.describe()}")


@given(data=st.data())
def test_dtypes_shapes_and_last_states(backend, cell, dtype, half, data):
    problem = data.draw(problems(backend, cell, dtype), label="problem")
    T, B, I = problem.x.shape
    H, G = problem.h0.shape[1], problem.params.w_hh.shape[0] // problem.h0.shape[1]
    fwd = problem.forward(backend)
    grads = problem.backward(backend, fwd) if half == "backward" else None
    context = problem.describe()
    lstm = cell == "lstm"
    expected_shapes = {"hs": (T, B, H), "h_n": (B, H), "c_n": (B, H) if lstm else None,
                       "cs": (T, B, H) if lstm else None, "gates": (T, B, G * H), "dx": (T, B, I), "dh0": (B, H),
                       "dc0": (B, H) if lstm else None, "dw_ih": (G * H, I), "dw_hh": (G * H, H),
                       "db_ih": (G * H,), "db_hh": (G * H,)}
    for field, shape in expected_shapes.items():
        if field not in FORWARD_FIELDS and half == "forward":
            continue
        value = getattr(fwd if field in FORWARD_FIELDS else grads, field)
        if value is None and field in OPTIONAL_FIELDS:
            continue
        if shape is None:
            assert value is None, f"{field}: expected None for {cell}; got {type(value).__name__}; {context}"
            continue
        assert_dtype(field, value, dtype, context=context)
        assert np.shape(value) == shape, f"{field}: shape {np.shape(value)}, expected {shape}; {context}"
    np.testing.assert_array_equal(fwd.h_n, np.asarray(fwd.hs)[-1], err_msg=f"h_n must be hs[-1]; {context}")
    if lstm and fwd.cs is not None:
        # c_n and cs[-1] are the same state; a backend that rebuilds cs from its gates (torch
        # does) may round it differently: each is within the state bound of the exact value.
        assert_close("c_n vs cs[-1]", fwd.c_n, np.asarray(fwd.cs)[-1], 2 * tolerances(problem).state,
                     context=context)
