"""jit.cpu's layers (jit.cpu.layers) where the shared suite's layers family
(properties/test_layers.py, which judges the agreement with reference.layers, stacking,
reversal, rows alone and padding on random problems) does not reach: how a layer's two
directions share the threads, lengths at their edges, the rows' independence bit for bit,
the compiled variants, the scratch arrays, and the projection's fallback.
"""
from dataclasses import replace

import numpy as np
import pytest

import reference
import reference.layers
from jit.cpu import backend, layers, threads, tiling, workspace
from properties.asserts import assert_close, layer_tolerances
from properties.strategies import LayerProblem

DTYPES = (np.float32, np.float64)


def layer_problem(cell, T, B, I, H, L, lengths, dtype, bidirectional=True, seed=0) -> LayerProblem:
    """PyTorch's init for every layer-direction; inputs, states and upstream gradients U(−1, 1)."""
    D = 2 if bidirectional else 1
    rng = np.random.default_rng(seed)

    def uniform(*shape):
        return rng.uniform(-1, 1, shape).astype(dtype)
    params = tuple(reference.init_params(cell, I if k < D else D * H, H, dtype=dtype, seed=seed + k)
                   for k in range(L * D))
    lstm = cell == "lstm"
    return LayerProblem(cell=cell, params=params, x=uniform(T, B, I), h0=uniform(L * D, B, H),
                        c0=uniform(L * D, B, H) if lstm else None,
                        lengths=None if lengths is None else np.asarray(lengths, np.int64),
                        bidirectional=bidirectional, dhs=uniform(T, B, D * H), dh_n=uniform(L * D, B, H),
                        dc_n=uniform(L * D, B, H) if lstm else None)


def results(problem, layer_backend=backend) -> dict:
    """Every output and gradient by name, training and inference forward both."""
    fwd = problem.forward(layer_backend)
    grads = problem.backward(layer_backend, fwd)
    inference = problem.forward(layer_backend, training=False)
    named = {"hs": fwd.hs, "h_n": fwd.h_n, "c_n": fwd.c_n, "inference hs": inference.hs,
             "inference h_n": inference.h_n, "inference c_n": inference.c_n,
             "dx": grads.dx, "dh0": grads.dh0, "dc0": grads.dc0}
    for k, d in enumerate(grads.dparams):
        named.update({f"dparams[{k}].{f}": getattr(d, f) for f in ("dw_ih", "dw_hh", "db_ih", "db_hh")})
    return named


def assert_same_bits(got: dict, expected: dict, context: str):
    for name, e in expected.items():
        if e is None:
            assert got[name] is None, f"{name}: expected None; {context}"
            continue
        np.testing.assert_array_equal(got[name], e, err_msg=f"{name}: {context}", strict=True)


# ---- threads ----------------------------------------------------------------------------------

def record_time_loop_runs(monkeypatch):
    """Every parallel run of time-loop kernels, as the list of its pieces' kernel names."""
    runs, run = [], tiling.run_in_parallel

    def recording(pieces):
        runs.append([getattr(fn, "__name__", "?") for fn, _ in pieces])
        return run(pieces)
    monkeypatch.setattr(tiling, "run_in_parallel", recording)
    return runs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", reference.CELLS)
def test_both_directions_on_two_threads_give_the_bits_of_one_thread(cell, dtype, monkeypatch):
    """With two threads each layer is one parallel run of two kernels, one per direction, forward
    and backward; with one, the directions run one after the other on the caller. Each direction
    is one tile either way, every GEMM takes the same path (PARALLEL_MIN_MACS = 0: BLAS), so the
    two give the same bits, of every output and gradient."""
    problem = layer_problem(cell, T=7, B=5, I=6, H=9, L=2, lengths=[3, 7, 1, 5, 7], dtype=dtype)
    monkeypatch.setattr(threads, "PARALLEL_MIN_MACS", 0)
    runs = record_time_loop_runs(monkeypatch)
    found = {}
    for n_threads in (1, 2):
        monkeypatch.setattr(threads, "pool_threads", lambda n=n_threads: n)
        runs.clear()
        found[n_threads] = results(problem)
        kernel = {"rnn_tanh": "rnn", "rnn_relu": "rnn"}.get(cell, cell)
        runs_per_call = 2 if n_threads == 2 else 2 * 2  # per layer; on one thread per layer and direction
        pieces = 2 if n_threads == 2 else 1
        forward_runs = [r for r in runs if r[0].endswith("_forward")]
        backward_runs = [r for r in runs if r[0].endswith("_backward")]
        assert forward_runs == [[f"{kernel}_forward"] * pieces] * (2 * runs_per_call), runs  # training, inference
        assert backward_runs == [[f"{kernel}_backward"] * pieces] * runs_per_call, runs
    assert_same_bits(found[2], found[1], f"{cell} {np.dtype(dtype)}, two threads against one")


# ---- lengths at their edges ---------------------------------------------------------------------

#: (what, T, B, lengths): every row full length (given), one row of length 1 among longer ones,
#: one row, one row of one step, and rows already longest first (the forward loop then reads its
#: previous state in hs itself: jit.cpu.steps' direct loop).
EDGES = [("every row full length", 5, 4, [5, 5, 5, 5]), ("one row of length 1", 5, 4, [5, 1, 3, 5]),
         ("B = 1", 6, 1, [4]), ("B = 1, T = 1", 1, 1, [1]), ("rows longest first", 5, 3, [5, 3, 2])]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", reference.CELLS)
@pytest.mark.parametrize("edge", EDGES, ids=[e[0] for e in EDGES])
def test_lengths_at_their_edges_agree_with_the_reference(edge, cell, dtype, monkeypatch):
    """Against reference.layers in float64 on the same (exactly upcast) problem, every output
    and gradient within the suite's derived layer tolerances (properties.asserts), both
    directions, two layers, on two threads."""
    what, T, B, lengths = edge
    monkeypatch.setattr(threads, "PARALLEL_MIN_MACS", 0)
    monkeypatch.setattr(threads, "pool_threads", lambda: 2)
    problem = layer_problem(cell, T=T, B=B, I=6, H=9, L=2, lengths=lengths, dtype=dtype)
    exact = problem.astype(np.float64)
    got, truth = results(problem), results(exact, reference.layers.REFERENCE)
    tols = layer_tolerances(problem, dtype).plus(layer_tolerances(exact, np.float64))
    for name, expected in truth.items():
        if expected is None:
            assert got[name] is None, name
            continue
        field = name.removeprefix("inference ")
        if field.startswith("dparams["):
            k, part = field[len("dparams["):].split("].")
            tol = tols.per_direction[int(k)].for_field(part)
        else:
            tol = tols.for_field(field)
        assert_close(name, got[name], expected, tol, context=f"{cell} {np.dtype(dtype)}, {what}: lengths {lengths}")


@pytest.mark.parametrize("cell", reference.CELLS)
def test_every_row_full_length_is_no_lengths_at_all_bit_for_bit(cell, monkeypatch):
    monkeypatch.setattr(threads, "PARALLEL_MIN_MACS", 0)
    monkeypatch.setattr(threads, "pool_threads", lambda: 2)
    problem = layer_problem(cell, T=5, B=4, I=6, H=9, L=2, lengths=[5] * 4, dtype=np.float32)
    assert_same_bits(results(problem), results(replace(problem, lengths=None)), f"{cell}: lengths all T")


@pytest.mark.parametrize("cell", reference.CELLS)
def test_a_rows_forward_is_that_row_alone_bit_for_bit(cell, monkeypatch):
    """A row's hs, h_n and c_n in a batch of rows of other lengths are the bits of that row alone,
    truncated to its length (no lengths given): each product sums its terms in the same order
    whichever rows run beside it, and the padding is exact zeros. (Backward's weight gradients
    sum over rows, so the suite compares those within tolerances.)"""
    monkeypatch.setattr(threads, "PARALLEL_MIN_MACS", 0)
    monkeypatch.setattr(threads, "pool_threads", lambda: 2)
    lengths = [2, 6, 1, 6, 4, 3, 5, 6, 2, 1]  # more rows than one register tile, ties included
    problem = layer_problem(cell, T=6, B=len(lengths), I=5, H=11, L=2, lengths=lengths, dtype=np.float32)
    whole = problem.forward(backend)
    for b, n in enumerate(lengths):
        alone = replace(problem, x=np.ascontiguousarray(problem.x[:n, b:b + 1]), lengths=None,
                        h0=np.ascontiguousarray(problem.h0[:, b:b + 1]),
                        c0=None if problem.c0 is None else np.ascontiguousarray(problem.c0[:, b:b + 1]))
        fwd = alone.forward(backend)
        np.testing.assert_array_equal(whole.hs[:n, b:b + 1], fwd.hs, err_msg=f"{cell} row {b} hs", strict=True)
        assert not whole.hs[n:, b].any(), f"{cell} row {b}: hs past its length {n}"
        np.testing.assert_array_equal(whole.h_n[:, b:b + 1], fwd.h_n, err_msg=f"{cell} row {b} h_n", strict=True)
        if fwd.c_n is not None:
            np.testing.assert_array_equal(whole.c_n[:, b:b + 1], fwd.c_n, err_msg=f"{cell} row {b} c_n", strict=True)


# ---- what a call compiles, keeps and returns -----------------------------------------------------

def test_layers_reuse_the_cells_compiled_kernels():
    """A layer call (both directions, lengths, a layer above reading both directions' hs) runs
    the cells' kernels with arguments of the same types: at most one variant per dtype."""
    for dtype in DTYPES:
        for cell in reference.CELLS:
            for bidirectional, lengths in ((True, [3, 1, 2]), (False, None)):
                problem = layer_problem(cell, T=3, B=3, I=4, H=5, L=2, lengths=lengths, dtype=dtype,
                                        bidirectional=bidirectional)
                results(problem)
                params, x, h0, c0 = problem.params[0], problem.x, problem.h0[0], None
                c0 = problem.c0[0] if cell == "lstm" else None
                fwd = backend.forward(cell, params, x, h0, c0)
                backend.backward(cell, params, x, h0, c0, fwd, np.ones_like(fwd.hs), h0)
    from jit.cpu import gru, lstm, rnn
    kernels = [getattr(module, name) for module in (gru, lstm, rnn) for name in dir(module)
               if name.endswith(("_forward", "_backward")) and hasattr(getattr(module, name), "signatures")]
    assert len(kernels) == 8
    for kernel in kernels:
        assert len(kernel.signatures) <= len(DTYPES), (kernel.__name__, kernel.signatures)


@pytest.mark.parametrize("cell", ["lstm", "gru", "gru_classic"])
def test_layer_results_are_their_own_and_survive_the_next_call(cell, monkeypatch):
    """Nothing a layer call returns (outputs, gradients, the traces backward reads) is a scratch
    array of jit.cpu.workspace, and a second call of the same shapes leaves the first's results
    as they were."""
    monkeypatch.setattr(threads, "PARALLEL_MIN_MACS", 0)
    monkeypatch.setattr(threads, "pool_threads", lambda: 2)
    first_problem = layer_problem(cell, T=5, B=4, I=6, H=9, L=2, lengths=[5, 2, 4, 1], dtype=np.float32)
    fwd = first_problem.forward(backend)
    grads = first_problem.backward(backend, fwd)
    kept = {name: np.array(a) for name, a in results(first_problem).items() if a is not None}
    first = {"hs": fwd.hs, "h_n": fwd.h_n, "c_n": fwd.c_n, "dx": grads.dx, "dh0": grads.dh0, "dc0": grads.dc0}
    traced = [a for trace in fwd.layers for a in (trace.hs, *(x for d in trace.directions for x in d))
              if a is not None]
    results(layer_problem(cell, T=5, B=4, I=6, H=9, L=2, lengths=[1, 5, 3, 2], dtype=np.float32, seed=3))
    scratch_arrays = list(workspace._local.arrays.values())
    for name, a in first.items():
        if a is not None:
            np.testing.assert_array_equal(a, kept[name], err_msg=f"{name} changed by the next call", strict=True)
    for a in [a for a in first.values() if a is not None] + traced:
        assert not any(np.shares_memory(a, s) for s in scratch_arrays)


def test_backward_refuses_a_forward_result_without_traces():
    problem = layer_problem("gru", T=3, B=2, I=4, H=5, L=2, lengths=[3, 2], dtype=np.float64)
    inference = problem.forward(backend, training=False)
    with pytest.raises(ValueError, match="fwd: expected the result of jit.cpu's layer_forward"):
        problem.backward(backend, inference)


def test_a_projected_lstm_is_the_composition_of_jit_cpus_cells():
    """lstm with w_hr is not native: layer_forward and layer_backward are reference.layers'
    composition over jit.cpu's cell calls (documented in jit.cpu.layers)."""
    problem = layer_problem("lstm", T=4, B=3, I=5, H=6, L=2, lengths=[4, 1, 3], dtype=np.float64)
    P, rng = 4, np.random.default_rng(5)
    D = problem.num_directions
    params = tuple(reference.layers.ProjectedParams(
        p.w_ih if k < D else rng.uniform(-0.4, 0.4, (4 * 6, D * P)), np.ascontiguousarray(p.w_hh[:, :P]), p.b_ih,
        p.b_hh, rng.uniform(-0.4, 0.4, (P, 6))) for k, p in enumerate(problem.params))
    problem = replace(problem, params=params, h0=np.ascontiguousarray(problem.h0[..., :P]),
                      dhs=rng.uniform(-1, 1, (4, 3, D * P)), dh_n=np.ascontiguousarray(problem.dh_n[..., :P]))
    got, composed = results(problem), results(problem, reference.layers.composed(backend))
    assert_same_bits(got, composed, "lstm with w_hr")
    assert layers._composed().backend is backend
