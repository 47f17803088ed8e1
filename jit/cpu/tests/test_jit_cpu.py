"""Properties of jit.cpu that the shared suite cannot see: its recurrent-product kernel, the
ways threads share a call, determinism across threads, thread settings, the number of
compiled variants, and the on-disk cache (reused by a new process, and moved aside when the
package folder is read-only).

The mathematics of the cells (agreement with the reference, gradients) is checked by the
shared property suite, which runs every backend, jit.cpu included.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import reference
from jit.cpu import arrays, backend, gemms, host, products, threads, tiling
from reference.contract import NUM_GATES

#: The repository root: the subprocess runs below start there.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

DTYPES = (np.float32, np.float64)


def make_problem(cell, T, B, I, H, dtype, seed=0):
    """Params, inputs and upstream gradients; inputs and gradients drawn from U(−1, 1)."""
    rng = np.random.default_rng(seed)
    params = reference.init_params(cell, I, H, dtype=dtype, seed=seed)
    x = rng.uniform(-1, 1, (T, B, I)).astype(dtype)
    h0 = rng.uniform(-1, 1, (B, H)).astype(dtype)
    c0 = rng.uniform(-1, 1, (B, H)).astype(dtype) if cell == "lstm" else None
    dhs = rng.uniform(-1, 1, (T, B, H)).astype(dtype)
    dh_n = rng.uniform(-1, 1, (B, H)).astype(dtype)
    dc_n = rng.uniform(-1, 1, (B, H)).astype(dtype) if cell == "lstm" else None
    return params, x, h0, c0, dhs, dh_n, dc_n


def run_both(cell, problem):
    params, x, h0, c0, dhs, dh_n, dc_n = problem
    fwd = backend.forward(cell, params, x, h0, c0, training=True)
    grads = backend.backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n)
    inference = backend.forward(cell, params, x, h0, c0, training=False)
    return fwd, grads, inference


def path_tolerance(dtype, T, B, I, H, G):
    """Largest difference allowed between two summation orders of the same products.

    One sum of K products, reordered, moves by at most 2·γ_K·Σ|terms| ≈ 2·K·u·Σ|terms|
    (Higham, Accuracy and Stability, §3.1; u = eps/2). Here |x|, |h| ≤ 1 and |w| ≤ 1/√H
    (PyTorch's init), so Σ|terms| ≤ K/√H and a pre-activation moves by δ ≤ 2·K²·u/√H with
    K = I + H. Activations are 1-Lipschitz and W_hh passes a state difference on with gain
    ‖W_hh‖_∞ ≤ H/√H = √H, plus 1 for the additive lstm cell path and gru's z⊙h term: after T
    steps the states differ by ≤ δ·Σ_t (√H + 2)^t ≤ T·(√H + 2)^T·δ. The gradients sum such
    terms over T steps, B rows and G gate blocks, with |dhs| ≤ 1 and the same gains: one
    more factor T·B·G·(√H + 2)^T bounds them.
    """
    u = np.finfo(dtype).eps / 2
    K = I + H
    gain = (np.sqrt(H) + 2) ** T
    states = T * gain * 2 * K * K * u / np.sqrt(H)
    return states, states * T * B * G * gain


SHAPES = [(3, 1, 4, 6), (3, 5, 7, 9)]  # B = 1 (one chunk) and B = 5 (uneven chunks)


#: How a call's threads share the time loop: the caller alone; three threads by rows; three by units.
SHARINGS = {"serial": {(threads, "PARALLEL_MIN_MACS"): 1 << 62},
            "rows": {(threads, "PARALLEL_MIN_MACS"): 0, (tiling, "UNIT_SPLIT_MIN_UNITS"): None,
                     (tiling, "UNIT_SPLIT_MAX_ROWS_PER_THREAD"): -1, (tiling, "UNIT_SPLIT_MIN_WEIGHT_BYTES"): 1 << 62},
            "units": {(threads, "PARALLEL_MIN_MACS"): 0, (tiling, "UNIT_SPLIT_MIN_UNITS"): 0}}


def share_calls(monkeypatch, sharing):
    for (module, name), value in SHARINGS[sharing].items():
        monkeypatch.setattr(module, name, value)


@pytest.mark.parametrize("cell", reference.CELLS)
def test_every_way_of_sharing_a_call_computes_the_same_cell(cell, monkeypatch):
    """The caller alone, and three threads sharing the batch rows or the hidden units (with a
    barrier per step), compute the same cell, up to summation order.

    float64 only: there path_tolerance's worst-case bound stays far below any indexing or
    formula mistake (1e-8 against O(0.1)), while in float32 the same bound on gradients
    exceeds 1 and would prove nothing. The kernels are one dtype-generic source, so the
    sharings cannot differ in float32 alone; float32 accuracy against the reference is the
    shared property suite's job.
    """
    dtype = np.float64
    monkeypatch.setattr(threads, "pool_threads", lambda: 3)  # more threads than cores, too: the barrier yields
    results = {}
    for sharing in SHARINGS:
        share_calls(monkeypatch, sharing)
        results[sharing] = [run_both(cell, make_problem(cell, *shape, dtype)) for shape in SHAPES]
    for other in list(SHARINGS)[1:]:
        assert_paths_agree(cell, dtype, results["serial"], results[other], other)


#: Rows 1 … 2·TILE_ROWS + 1 cover every mix of the product's register tile and its 4-, 2- and
#: 1-row tails; column counts around the panel widths (W32 float32, W64 float64 columns)
#: leave partial panels and partial groups of panels, and K = 1 is the shortest loop.
W32, W64 = products.columns_per_panel(4), products.columns_per_panel(8)
PRODUCT_SHAPES = [(rows, n, K) for rows in range(1, 2 * products.TILE_ROWS + 2)
                  for n, K in ((1, 1), (7, 3), (W64 + 1, 5), (W32, 33), (W32 + 1, 8), (2 * W32 + 8, 5))]


@pytest.mark.parametrize("dtype", DTYPES)
def test_panel_products_match_the_exact_product_and_write_nothing_else(dtype):
    """jit.cpu.products on awkward shapes: a @ B through both packings (gate rows of a
    weight, forward; columns of a weight, backward) against the product in float64 (exact
    for float32 inputs up to 2^−53 relative, far below the bound) or, for float64, in
    long double where the platform has it.

    Bound, elementwise (Higham, Accuracy and Stability, §3.1, eq. 3.4): a dot product of K
    terms summed in any order, with or without fused multiply-adds, differs from the exact
    one by at most γ_K · Σ_k |a_rk||B_kc|, γ_K = K·u / (1 − K·u), u = eps/2. Outside the
    result, the output keeps its sentinel: a tile that wrote past its rows or panels fails here.
    """
    from jit.cpu.products import gate_outputs, gate_products, matmul, pack_columns, pack_gate_rows, panel_product, \
        product_output

    rng = np.random.default_rng(7)
    u = np.finfo(dtype).eps / 2
    exact_dtype = np.float64 if dtype == np.float32 else np.longdouble
    for rows, n, K in PRODUCT_SHAPES:
        gamma = K * u / (1 - K * u)
        a = rng.uniform(-1, 1, (rows, K)).astype(dtype)
        G, H, j0 = 3, n + 5, 2  # units [j0, j0 + n) of each of G gate blocks of a (G·H, K) weight
        w = rng.uniform(-1, 1, (G * H, K)).astype(dtype)
        gate_panels = pack_gate_rows(w, H, j0, j0 + n)
        out = np.full((G, rows + 1, gate_outputs(rows, gate_panels).shape[2] + 3), np.nan, dtype)
        gate_products(a, gate_panels, out[:, :rows])
        for g in range(G):
            b = w[g * H + j0:g * H + j0 + n].T
            assert_product_within(out[g, :rows, :n], a, b, exact_dtype, gamma, (rows, n, K, "gate", g))
        assert np.isnan(out[:, rows]).all() and np.isnan(out[:, :, gate_panels.shape[1] * gate_panels.shape[3]:]).all()
        w_t = rng.uniform(-1, 1, (K, n + 9)).astype(dtype)
        panels = pack_columns(w_t, j0, j0 + n)
        out = np.full((rows, product_output(rows, panels).shape[1] + 2), np.nan, dtype)
        panel_product(a, panels, out)
        assert_product_within(out[:, :n], a, w_t[:, j0:j0 + n], exact_dtype, gamma, (rows, n, K, "columns"))
        assert np.isnan(out[:, panels.shape[0] * panels.shape[2]:]).all()
        assert (panels.reshape(-1, K, panels.shape[2]).transpose(1, 0, 2).reshape(K, -1)[:, n:] == 0).all()  # padding
        whole = matmul(a, w_t)  # the small GEMMs' product: a new array of exactly (rows, n + 9)
        assert whole.shape == (rows, n + 9) and whole.flags.c_contiguous
        assert_product_within(whole, a, w_t, exact_dtype, gamma, (rows, n + 9, K, "matmul"))


#: Tiles (b0, b1, j0, j1) of a batch of 5 rows and H = PROJECTION_H units (I = 37): every row (x
#: is one matrix) and a chunk of rows (copied into one, or one product per step); all units, a
#: slice past one group of PANEL_GROUP float32 panels, and slices narrower than one panel, the
#: last with fewer units than I.
PROJECTION_H = products.PANEL_GROUP * W32 + 6
PROJECTION_TILES = [(0, 5, 0, PROJECTION_H), (1, 4, 3, PROJECTION_H), (0, 5, 5, 12), (2, 3, 0, 41), (1, 4, 5, 12)]


#: An input width whose packed panels fill half of a core's L2 at fewer than PANEL_GROUP panels
#: (float32), so project_inputs packs W_ih one panel at a time (products.projection_group).
WIDE_I = products.L2_BYTES // (2 * 2 * W32 * 4) + 1


@pytest.mark.parametrize("I", [37, WIDE_I])
@pytest.mark.parametrize("G", [4, 1])
@pytest.mark.parametrize("dtype", DTYPES)
def test_tile_projections_match_the_exact_product_and_write_nothing_else(dtype, G, I):
    """jit.cpu.products.project_inputs: for a tile's rows and units, out[g, t·nb + b, u] is
    x[t, b0 + b] · W_ih[g·H + j0 + u], within the same dot-product bound as
    test_panel_products_match_the_exact_product_and_write_nothing_else (K = I terms), for
    every step and gate; rows past T·nb and columns past the tile's panels keep their sentinel.
    A tile with some of the rows takes both paths: its rows copied into one matrix (G = 4,
    I ≤ its units), and one product per step (G = 1, or fewer units than I: the last tile).
    With I = WIDE_I the panels go one group of fewer than PANEL_GROUP at a time."""
    from jit.cpu.products import panel_columns, project_inputs, projection_group

    assert I < 100 or projection_group(I, W32, 4) < products.PANEL_GROUP

    rng = np.random.default_rng(11)
    u = np.finfo(dtype).eps / 2
    exact_dtype = np.float64 if dtype == np.float32 else np.longdouble
    T, B, H = 3, 5, PROJECTION_H
    gamma = I * u / (1 - I * u)
    x = rng.uniform(-1, 1, (T, B, I)).astype(dtype)
    w_ih = rng.uniform(-1, 1, (G * H, I)).astype(dtype)
    for b0, b1, j0, j1 in PROJECTION_TILES:
        nb, nj = b1 - b0, j1 - j0
        columns = panel_columns(nj, dtype)
        out = np.full((G, T * nb + 2, columns + 5), np.nan, dtype)
        project_inputs(x, w_ih, H, b0, b1, j0, j1, out)
        for g in range(G):
            got = out[g, :T * nb, :nj].reshape(T, nb, nj)
            for t in range(T):
                assert_product_within(got[t], x[t, b0:b1], w_ih[g * H + j0:g * H + j1].T, exact_dtype, gamma,
                                      (b0, b1, j0, j1, "gate", g, "step", t))
        assert np.isnan(out[:, T * nb:]).all() and np.isnan(out[:, :, columns:]).all()


def test_row_stores_write_their_block_and_nothing_else():
    """jit.cpu.products.store_rows puts source[:, :n] at (row0, column0) of dest and add_rows adds
    source[:, :n] to dest[:, :n], every other value kept; a block that does not fit is refused
    before anything is written (the kernels' per-step stores run without bounds checks)."""
    from jit.cpu.products import add_rows, store_rows

    rng = np.random.default_rng(5)
    source = rng.standard_normal((3, 7)).astype(np.float32)
    dest = np.full((6, 20), np.nan, np.float32)
    store_rows(source, dest, 2, 9, 5)
    expected = np.full_like(dest, np.nan)
    expected[2:5, 9:14] = source[:, :5]
    np.testing.assert_array_equal(dest, expected)
    total = rng.standard_normal((4, 9)).astype(np.float32)
    before = total.copy()
    add_rows(source, total, 6)
    before[:3, :6] += source[:, :6]
    np.testing.assert_array_equal(total, before)
    for row0, column0, n in ((4, 0, 5), (0, 16, 5), (0, 0, 8), (-1, 0, 5), (0, -1, 5)):
        untouched = np.full((6, 20), np.nan, np.float32)
        with pytest.raises(ValueError, match="store_rows"):
            store_rows(source, untouched, row0, column0, n)
        assert np.isnan(untouched).all()
    with pytest.raises(ValueError, match="add_rows"):
        add_rows(source, np.zeros((4, 5), np.float32), 6)
    with pytest.raises(ValueError, match="add_rows"):
        add_rows(source, np.zeros((2, 9), np.float32), 6)


def assert_product_within(got, a, b, exact_dtype, gamma, label):
    exact = a.astype(exact_dtype) @ b.astype(exact_dtype)
    bound = gamma * (np.abs(a).astype(exact_dtype) @ np.abs(b).astype(exact_dtype))
    excess = np.abs(got.astype(exact_dtype) - exact) - bound
    assert (excess <= 0).all(), f"{label}: off by up to {float(excess.max()):.3g} beyond the rounding bound"


@pytest.mark.parametrize("cell", reference.CELLS)
@pytest.mark.parametrize("sharing", list(SHARINGS))
def test_an_empty_batch_gives_empty_results(cell, sharing, monkeypatch):
    """B = 0 (say, a filtered last batch) is a valid call, as for the reference: forward and
    backward give arrays of the contract's shapes with no rows, and zero weight gradients, on
    the caller alone and through the pool."""
    share_calls(monkeypatch, sharing)
    T, B, I, H = 3, 0, 4, 5
    problem = make_problem(cell, T, B, I, H, np.float32)
    fwd, grads, _ = run_both(cell, problem)
    assert fwd.hs.shape == (T, 0, H) and fwd.h_n.shape == (0, H)
    assert grads.dx.shape == (T, 0, I) and grads.dh0.shape == (0, H)
    for field in ("dw_ih", "dw_hh", "db_ih", "db_hh"):
        assert np.array_equal(getattr(grads, field), np.zeros_like(getattr(problem[0], field[1:]))), field


def test_panel_product_refuses_mismatched_shapes():
    from jit.cpu.products import pack_columns, panel_product

    panels = pack_columns(np.ones((5, 20)), 0, 20)  # K = 5
    with pytest.raises(ValueError, match="panel_product"):
        panel_product(np.ones((3, 4)), panels, np.empty((3, 32)))  # K = 4
    with pytest.raises(ValueError, match="panel_product"):
        panel_product(np.ones((3, 5)), panels, np.empty((3, 20)))  # fewer columns than the panels'


def test_pack_rows_refuses_what_its_vector_blocks_would_read_or_write_out_of_bounds():
    """pack_rows' blocks read W rows × W/2 values of w and write whole panel rows unchecked, so
    the shapes are checked once per call: K, the panel width, the rows, and contiguous rows."""
    from jit.cpu.products import columns_per_panel, pack_rows

    W = columns_per_panel(8)  # float64's panel width at this host's vector width
    w, panels = np.ones((5 * W, W)), np.empty((2, W, W))
    pack_rows(w, 0, 2 * W, panels)
    for bad_w, r0, r1, bad_panels in ((np.ones((5 * W, W + 1)), 0, 2 * W, panels),  # K = W + 1 against W
                                      (w, 0, 2 * W, np.empty((2, W, 2 * W))),  # not float64's panel width
                                      (w, 4 * W - 2, 6 * W - 2, panels),  # rows past w's end
                                      (np.ones((5 * W, 2 * W))[:, ::2], 0, 2 * W, panels),  # w's rows strided
                                      (w, 0, 2 * W, np.empty((2, W, 2 * W))[:, :, ::2])):  # the panels' rows strided
        with pytest.raises(ValueError, match="pack_rows"):
            pack_rows(bad_w, r0, r1, bad_panels)


def test_tilings_cover_every_row_and_unit_once():
    """Each thread's tile; together they cover rows × units exactly once, units cut at
    multiples of UNIT_ALIGNMENT (one float32 panel). By units on several threads when a
    thread would get at most two rows, when W_hh takes half the L3 or more, and from H = 512 on
    hosts with less than 1 MiB of L2 (UNIT_SPLIT_MIN_UNITS); gru_classic always by rows."""
    large_h_by_units = tiling.UNIT_SPLIT_MIN_UNITS is not None
    big = tiling.UNIT_SPLIT_MIN_WEIGHT_BYTES
    for cell, B, H, n, weight, by_units in (("lstm", 5, 512, 3, 0, True), ("lstm", 100, 256, 2, 0, False),
                                            ("gru", 16, 1024, 2, 0, large_h_by_units),
                                            ("lstm", 64, 512, 2, 0, large_h_by_units),
                                            ("lstm", 16, 256, 2, big, True), ("lstm", 16, 256, 2, big - 1, False),
                                            ("lstm", 4, 256, 2, 0, True), ("lstm", 5, 256, 2, 0, False),
                                            ("rnn_tanh", 1, 1000, 2, 0, True), ("rnn_tanh", 3, 4096, 1, big, False),
                                            ("gru_classic", 4, 1024, 2, big, False)):
        tiles = tiling.tiling_for(cell, B, H, n, weight)
        assert tiles.by_units == by_units, (cell, B, H, n, weight)
        covered = np.zeros((B, H), int)
        for b0, b1, j0, j1 in tiles.tiles:
            covered[b0:b1, j0:j1] += 1
            if by_units:
                assert j0 % tiling.UNIT_ALIGNMENT == 0
        assert (covered == 1).all(), (cell, B, H, n, tiles)


def test_the_host_reader_takes_the_width_and_the_l3_rule_from_what_the_host_says(tmp_path):
    """The vector width from llvm's features (a forced width must be 32 or 64), the vendor from
    /proc/cpuinfo, and the split rule for a large W_hh from the vendor: Intel's mesh L3 does not
    feed the tile, so W_hh splits by units from one core's L2; an unknown host keeps AMD's rule."""
    assert host.vector_bytes({}, frozenset({"avx2", "avx512f"})) == 64
    assert host.vector_bytes({}, frozenset({"avx2", "fma"})) == 32
    assert host.vector_bytes({host.VECTOR_BYTES_ENV: "32"}, frozenset({"avx512f"})) == 32
    with pytest.raises(ValueError, match="CELLBENCH_VECTOR_BYTES.*32, 64.*'48'"):
        host.vector_bytes({host.VECTOR_BYTES_ENV: "48"}, frozenset())
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n")
    assert host.cpu_vendor(str(cpuinfo)) == "GenuineIntel"
    assert host.cpu_vendor(str(tmp_path / "absent")) == ""
    assert host.cpuinfo_field("model name", str(cpuinfo)) is None  # a field the file lacks
    assert not host.l3_feeds_the_tile("GenuineIntel")
    assert host.l3_feeds_the_tile("AuthenticAMD") and host.l3_feeds_the_tile("")
    expected = host.L3_BYTES // 2 if host.L3_FEEDS_THE_TILE else host.L2_BYTES
    assert tiling.UNIT_SPLIT_MIN_WEIGHT_BYTES == expected


def test_the_step_barrier_holds_every_thread_until_all_arrive():
    """Three threads (on two cores) each write their step number, wait, and check the others'."""

    from numba import njit

    from jit.cpu.sync import new_arrivals, wait_for_all

    @njit(nogil=True)
    def steps(slots, arrivals, me, n_threads, T):
        behind = 0
        for t in range(T):
            slots[me] = t
            wait_for_all(arrivals, n_threads, 2 * t)
            for k in range(n_threads):
                behind += slots[k] < t  # someone's step t not done: the barrier leaked
            wait_for_all(arrivals, n_threads, 2 * t + 1)  # nobody moves on before all have checked
        return behind

    slots, arrivals, counts = np.zeros(3, np.int64), new_arrivals(), [None] * 3
    steps(np.zeros(1, np.int64), new_arrivals(), 0, 1, 2)  # compile on one thread first

    def run(me):
        counts[me] = steps(slots, arrivals, me, 3, 2000)
    others = [threading.Thread(target=run, args=(k,)) for k in (1, 2)]
    for thread in others:
        thread.start()
    run(0)
    for thread in others:
        thread.join()
    assert counts == [0, 0, 0] and arrivals[0] == 3 * 2 * 2000


def assert_paths_agree(cell, dtype, first, second, label):
    """first, second: per shape, (training forward, gradients, inference forward) of two paths."""
    for shape, first_parts, second_parts in zip(SHAPES, first, second):
        tol_states, tol_grads = path_tolerance(dtype, *shape, NUM_GATES[cell])
        for part_a, part_b, tol in zip(first_parts, second_parts, (tol_states, tol_grads, tol_states)):
            for field in part_a._fields:
                a, b = getattr(part_a, field), getattr(part_b, field)
                if a is None:
                    assert b is None, field
                    continue
                assert a.dtype == np.dtype(dtype), field
                diff = float(np.max(np.abs(a - b))) if a.size else 0.0
                assert diff <= tol, f"{cell} {shape} {field}: {label} differs by {diff:.3g} > {tol:.3g}"


@pytest.mark.parametrize("cell", reference.CELLS)
def test_repeat_calls_are_bit_identical_and_leave_inputs_alone(cell, monkeypatch):
    """Several threads: the same call twice gives the same bits; inputs are untouched."""
    monkeypatch.setattr(threads, "PARALLEL_MIN_MACS", 0)
    problem = make_problem(cell, 4, 6, 8, 40, np.float32, seed=3)
    inputs = [a for a in (*problem[0], *problem[1:]) if a is not None]
    before = [a.copy() for a in inputs]
    first, second = run_both(cell, problem), run_both(cell, problem)
    for part_a, part_b in zip(first, second):
        for field in part_a._fields:
            a, b = getattr(part_a, field), getattr(part_b, field)
            assert (a is None and b is None) or np.array_equal(a, b), f"{cell} {field} changed between calls"
    for a, b in zip(before, inputs):
        assert np.array_equal(a, b), "an input was modified"
    for result in (first[0], first[2]):
        for field in result._fields:
            out = getattr(result, field)
            assert out is None or not any(np.shares_memory(out, a) for a in inputs), field


def test_gru_backward_recomputes_what_a_rebuilt_forward_result_lacks():
    """gru's backward uses W_hn h + b_hn that forward kept; from a forward result rebuilt by
    the caller (which lacks them) it recomputes them, and gets the same gradients."""
    params, x, h0, c0, dhs, dh_n, dc_n = make_problem("gru", *SHAPES[1], np.float64)
    fwd = backend.forward("gru", params, x, h0)
    assert getattr(fwd, "hns", None) is not None
    rebuilt = fwd._replace()
    assert getattr(rebuilt, "hns", None) is None
    kept = backend.backward("gru", params, x, h0, None, fwd, dhs, dh_n)
    recomputed = backend.backward("gru", params, x, h0, None, rebuilt, dhs, dh_n)
    _, tol_grads = path_tolerance(np.float64, *SHAPES[1], NUM_GATES["gru"])  # one more summation order
    for field in kept._fields:
        a, b = getattr(kept, field), getattr(recomputed, field)
        assert (a is None and b is None) or float(np.max(np.abs(a - b))) <= tol_grads, field


def test_gru_backward_refuses_a_kept_hns_with_nan():
    """W_hn h + b_hn that forward kept is read as forward's trace, so it is checked like the
    contract's fields: a NaN in it is a ValueError naming it, not NaN gradients."""
    params, x, h0, c0, dhs, dh_n, dc_n = make_problem("gru", *SHAPES[1], np.float64)
    fwd = backend.forward("gru", params, x, h0)
    fwd.hns[-1, -1, -1] = np.nan
    with pytest.raises(ValueError, match="^fwd.hns: expected finite values"):
        backend.backward("gru", params, x, h0, None, fwd, dhs, dh_n)


@pytest.mark.parametrize("cell", reference.CELLS)
@pytest.mark.parametrize("I, H", [(0, 4), (4, 0), (0, 0)], ids=["no inputs", "no units", "neither"])
def test_no_inputs_or_no_hidden_units_agree_with_the_reference(cell, I, H):
    """I = 0 (a recurrence driven by its state alone) and H = 0 (no units) are calls the contract
    accepts, as the reference and jit.cuda do: the same shapes and values. Where H = 0 every
    result is empty or a sum of nothing, so exactly; at I = 0 within path_tolerance. (The bias
    gradient once raised NumPy's reshape error at H = 0.)"""
    T, B, G = 3, 2, NUM_GATES[cell]
    rng = np.random.default_rng(3)
    bound = 1 / np.sqrt(max(H, 1))
    params = reference.Params(*(rng.uniform(-bound, bound, shape)
                                for shape in ((G * H, I), (G * H, H), (G * H,), (G * H,))))
    x, h0, dhs, dh_n = (rng.uniform(-1, 1, shape) for shape in ((T, B, I), (B, H), (T, B, H), (B, H)))
    c0 = rng.uniform(-1, 1, (B, H)) if cell == "lstm" else None
    tol_states, tol_grads = path_tolerance(np.float64, T, B, I, H, G) if H else (0.0, 0.0)

    def every_result(cells):  # hs, h_n, c_n, then the gradients
        fwd = cells.forward(cell, params, x, h0, c0, training=True)
        return [*fwd[:3], *cells.backward(cell, params, x, h0, c0, fwd, dhs, dh_n)]
    for k, (a, b) in enumerate(zip(every_result(backend), every_result(reference.backend))):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=0, atol=tol_states if k < 3 else tol_grads)


def blas_threads_now():
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def record_blas_threads(monkeypatch):
    """From now on every np.matmul appends the BLAS thread counts it runs with to the list returned."""
    seen, blas_matmul = [], np.matmul

    def recording_matmul(*args, **kwargs):
        seen.append(blas_threads_now())
        return blas_matmul(*args, **kwargs)
    monkeypatch.setattr(np, "matmul", recording_matmul)
    return seen


def test_row_chunks_cover_the_batch_once():
    """Each chunk's kernel gets disjoint rows covering 0..B."""
    seen = []
    tiling.run_on_row_chunks(lambda tag, b0, b1: seen.append((b0, b1)), "k",
                              tiling=tiling.tiling_for("gru_classic", 7, 8, 3))
    assert sorted(seen) == [(0, 2), (2, 4), (4, 7)]


def record_pool_runs(monkeypatch, recording_run):
    """Route every parallel run of a call (the time loops' tiles, the GEMMs' rows) through recording_run."""
    for module in (tiling, gemms):
        monkeypatch.setattr(module, "run_in_parallel", recording_run)


@pytest.mark.parametrize("parallel", [False, True], ids=["caller alone", "pool"])
def test_blas_runs_on_one_thread_per_caller_during_a_call_and_is_restored(parallel, monkeypatch):
    """Every BLAS call inside forward and backward runs with every BLAS on one thread per
    caller, so it never oversubscribes the cores with the pool's threads nor leaves its
    workers spinning; a call on the caller alone makes no BLAS call and leaves the setting
    alone. Either way the setting is the user's again afterwards."""
    monkeypatch.setattr(threads, "PARALLEL_MIN_MACS", 0 if parallel else 1 << 62)
    before = blas_threads_now()
    pool_calls, run_in_parallel = [], tiling.run_in_parallel

    def recording_run(calls):
        pool_calls.append((len(calls), blas_threads_now()))
        run_in_parallel(calls)
    blas_calls = record_blas_threads(monkeypatch)
    record_pool_runs(monkeypatch, recording_run)
    run_both("lstm", make_problem("lstm", 3, 4, 5, 6, np.float32))
    if parallel:
        assert blas_calls and all(threads == [1] * len(before) for threads in blas_calls)
        assert max(n for n, _ in pool_calls) == min(threads.pool_threads(), 4)
    else:
        assert blas_calls == []
        assert pool_calls and all(n == 1 and threads == before for n, threads in pool_calls)
    assert blas_threads_now() == before


def test_backward_whose_loop_and_gemms_stay_under_the_threshold_runs_on_the_caller(monkeypatch):
    """A backward call over PARALLEL_MIN_MACS as a whole, whose time loop (T·B·G·H·H
    multiply-adds, the size of dW_hh) and each of whose GEMMs are under it, runs on the caller
    alone: no pool run of more than one piece (a unit split's wait per step cost an S1 lstm
    backward 147 against 137 µs), no BLAS call and no change to BLAS's thread setting (holding
    it cost 35–40 µs of 260). Its gradients are the bits of the same call with the threshold
    out of reach."""
    problem = make_problem("lstm", 3, 4, 5, 6, np.float32)
    T, B, I, H, G = 3, 4, 5, 6, 4
    largest_gemm, loop, call = T * B * G * H * max(I, H), T * B * G * H * H, 2 * T * B * G * H * (I + H)
    monkeypatch.setattr(threads, "PARALLEL_MIN_MACS", 1 << 62)
    alone = run_both("lstm", problem)[1]
    monkeypatch.setattr(threads, "PARALLEL_MIN_MACS", largest_gemm + 1)
    assert threads.small_call(largest_gemm) and threads.small_call(loop) and not threads.small_call(call)
    settings, pool_calls, run_in_parallel = [], [], tiling.run_in_parallel

    def recording_run(calls):
        pool_calls.append(len(calls))
        run_in_parallel(calls)
    monkeypatch.setattr(threads, "_set_blas_threads", lambda library, n: settings.append(n))
    record_pool_runs(monkeypatch, recording_run)
    blas_calls = record_blas_threads(monkeypatch)
    params, x, h0, c0, dhs, dh_n, dc_n = problem
    fwd = backend.forward("lstm", params, x, h0, c0, training=True)
    pool_calls.clear()
    grads = backend.backward("lstm", params, x, h0, c0, fwd, dhs, dh_n, dc_n)
    assert settings == [] and blas_calls == []
    assert pool_calls and max(pool_calls) == 1
    for got, expected in zip(grads, alone):
        assert np.array_equal(got, expected)


def test_concurrent_calls_share_one_blas_hold(monkeypatch):
    """Two threads' backward calls overlap: A enters BLAS's one-thread hold, then B, then A leaves
    before B has made its BLAS calls. B's BLAS calls must still run on one thread, and afterwards
    the setting must be the user's (2 here), not the 1 that A's hold had set when B entered.
    Both calls give the bits of the same calls made one at a time.
    The calls made alone come first, from this thread, and A and B are other threads: the hold
    must also work from a thread other than the one that first set BLAS's threads (threadpoolctl
    ignores such threads unless released; see jit.cpu.threads._set_blas_threads)."""
    from threadpoolctl import threadpool_limits
    monkeypatch.setattr(threads, "PARALLEL_MIN_MACS", 0)  # every call parallel, so backward uses BLAS
    problems = {name: make_problem("lstm", 3, 4, 5, 6, np.float32, seed=seed) for seed, name in enumerate("AB")}
    alone = {name: run_both("lstm", problem)[1] for name, problem in problems.items()}
    staged_backward = backend._backward
    both_inside, a_left = threading.Barrier(2, timeout=60), threading.Event()

    def overlapping_backward(*args):  # runs inside the hold
        both_inside.wait()
        if threading.current_thread().name == "B":
            assert a_left.wait(timeout=60)
        return staged_backward(*args)

    results, errors = {}, []

    def call(name):
        try:
            params, x, h0, c0, dhs, dh_n, dc_n = problems[name]
            fwd = backend.forward("lstm", params, x, h0, c0, training=True)
            results[name] = backend.backward("lstm", params, x, h0, c0, fwd, dhs, dh_n, dc_n)
            if name == "A":
                a_left.set()
        except BaseException as error:
            errors.append(error)
            both_inside.abort()
            a_left.set()

    blas_calls = record_blas_threads(monkeypatch)
    monkeypatch.setattr(backend, "_backward", overlapping_backward)
    with threadpool_limits(limits=2, user_api="blas"):
        user_setting = blas_threads_now()
        callers = [threading.Thread(target=call, args=(name,), name=name) for name in "AB"]
        for thread in callers:
            thread.start()
        for thread in callers:
            thread.join(timeout=120)
        assert not errors, errors
        assert blas_calls and all(n == [1] * len(user_setting) for n in blas_calls)
        assert blas_threads_now() == user_setting
    for name in "AB":
        for got, expected in zip(results[name], alone[name]):
            assert (got is None and expected is None) or np.array_equal(got, expected)


def test_small_gemms_run_on_the_caller_without_blas(monkeypatch):
    """Under PARALLEL_MIN_MACS, matmul_rows multiplies with jit.cpu.products.matmul, whatever
    the operands' layout (a transposed view, which for ``a`` the kernel reads in place; a
    read-only array), within the same bound as test_matmul_rows_is_repeatable_and_accurate's:
    one dot of K terms in another order. A transposed ``a`` gives the bits of its copy."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((50, 23)), rng.standard_normal((37, 23)).T  # b: a transposed view
    a_transposed = np.ascontiguousarray(a.T).T  # the same values, F-contiguous
    b_read_only = np.array(b)
    b_read_only.flags.writeable = False
    monkeypatch.setattr(np, "matmul", None)  # any BLAS call would fail
    assert arrays.transposed_kernel_array(a_transposed)
    assert np.array_equal(gemms.matmul_rows(a_transposed, b, 3), gemms.matmul_rows(a, b, 3))
    for operand in (b, b_read_only):
        got = gemms.matmul_rows(a, operand, 3)
        assert got.shape == (50, 37) and got.flags.c_contiguous
        # One dot of K = 23 terms in another order: within 2·K·u·Σ|terms| ≤ K²·eps·max|a|·max|b|.
        np.testing.assert_allclose(got, a @ operand, rtol=0,
                                   atol=23 * 23 * np.finfo(float).eps * np.abs(a).max() * np.abs(b).max())


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_finiteness_check_finds_every_nan_and_inf(dtype):
    """jit.cpu's check behind the contract's "finite values" validation: every position, both
    infinities and NaN, in contiguous arrays and in a strided view (numpy's check then)."""
    a = np.random.default_rng(2).uniform(-1, 1, (3, 5, 7)).astype(dtype)
    assert arrays.all_finite(a) and arrays.all_finite(a[:, ::2]) and arrays.all_finite(a[:0])
    huge = a.copy()
    huge[1, 2, 3] = np.finfo(dtype).max
    assert arrays.all_finite(huge)
    for bad in (np.nan, np.inf, -np.inf):
        for index in np.ndindex(a.shape):
            b = a.copy()
            b[index] = bad
            assert not arrays.all_finite(b), (bad, index)
        b = a.copy()
        b[2, 4, 6] = bad
        assert not arrays.all_finite(b[:, ::2, :])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T, B, I, H, G", [(50, 1, 64, 64, 4), (7, 3, 33, 17, 3), (0, 2, 3, 4, 4), (4, 0, 3, 4, 1),
                                           (3, 2, 0, 4, 4), (3, 2, 4, 0, 4)])
def test_a_small_call_s_gradients_in_one_compiled_call_have_the_same_bits(dtype, T, B, I, H, G):
    """launch.parameter_gradients takes a small call's GEMMs and sums in one compiled call
    (gemms.gradients_on_the_caller); they must be the very products and sums of the one-by-one
    path (matmul_rows, weight_grad, bias_grad), bit for bit, for da_h = da and for another da_h,
    with x in any layout, and at the empty sizes."""
    from jit.cpu.launch import HiddenSide, parameter_gradients
    rng = np.random.default_rng(T + B + I + H)
    da, da_h = (rng.standard_normal((T, B, G * H)).astype(dtype) for _ in range(2))
    w_ih = rng.standard_normal((G * H, I)).astype(dtype)
    x = np.asfortranarray(rng.standard_normal((T, B, I)).astype(dtype))
    h_prev = rng.standard_normal((T, B, H)).astype(dtype)
    assert threads.small_call(T * B * G * H * max(I, H))
    for hidden in (HiddenSide(da), HiddenSide(da_h)):
        got = parameter_gradients(da, hidden, x, w_ih, h_prev, 1)
        one_by_one = (gemms.matmul_rows(da.reshape(T * B, G * H), w_ih, 1).reshape(T, B, I),
                      gemms.weight_grad(da, x, 1), gemms.weight_grad(hidden.da_h, h_prev, 1),
                      gemms.bias_grad(da), gemms.bias_grad(hidden.da_h))
        for field, a, b in zip(got._fields, got, one_by_one):
            assert a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b), field


class _ArraySubclass(np.ndarray):
    """An ndarray subclass, as a caller may pass one: checked one array at a time."""


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_subclass", [False, True], ids=["ndarrays", "with a subclass"])
def test_the_check_of_a_call_s_arrays_together_finds_a_bad_value_in_any_of_them(dtype, with_subclass):
    """all_finite_together, the one call behind a jit.cpu call's finiteness checks: a NaN or inf in
    any array, of any ndim, contiguous, strided, read-only, is found in the one compiled call; with
    an ndarray subclass among them, by the one-by-one path; finite values, the largest float and
    empty arrays pass."""
    rng = np.random.default_rng(3)
    frozen = rng.uniform(-1, 1, (4, 6)).astype(dtype)
    frozen.flags.writeable = False
    made = [rng.uniform(-1, 1, (3, 2, 5)).astype(dtype), rng.uniform(-1, 1, (8, 5)).astype(dtype)[:, ::2],
            frozen, rng.uniform(-1, 1, 7).astype(dtype), np.empty((0, 3), dtype)]
    if with_subclass:
        made.append(rng.uniform(-1, 1, (2, 3)).astype(dtype).view(_ArraySubclass))
    assert arrays.all_finite_together(made)
    assert arrays.all_finite_together([made[0], np.full(3, np.finfo(dtype).max, dtype)])
    for k, a in enumerate(made):
        if a.size == 0:
            continue
        for bad in (np.nan, np.inf, -np.inf):
            broken = np.array(a)  # a writable C-contiguous ndarray with a's values
            broken.flat[-1] = bad
            if not a.flags.c_contiguous:  # back to a strided view holding the bad value
                broken = np.repeat(broken, 2, axis=1)[:, ::2]
            if not a.flags.writeable:
                broken.flags.writeable = False
            if type(a) is not np.ndarray:
                broken = broken.view(type(a))
            assert not arrays.all_finite_together(made[:k] + [broken] + made[k + 1:]), (k, bad)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"),
                    reason="no thread affinity on this platform: jit.cpu.pool leaves placement to the OS")
def test_pool_workers_are_kept_off_the_callers_cpu(monkeypatch):
    """Each worker runs its piece allowed every CPU of the caller's but the caller's current
    one (jit.cpu.pool: left alone, Linux stacked both threads of a call on one core); when
    the caller moves, the workers follow; where the caller's CPU is unknown, they stay put."""

    from jit.cpu import pool

    allowed = os.sched_getaffinity(0)
    caller = threading.get_native_id()
    seen = []

    def report():
        seen.append((threading.get_native_id(), os.sched_getaffinity(0)))

    for cpu in (min(allowed), max(allowed)):
        monkeypatch.setattr(pool, "caller_cpu", lambda cpu=cpu: cpu)
        seen.clear()
        pool.run_in_parallel([(report, ())] + [(report, ())] * 3)
        assert [mask for tid, mask in seen if tid == caller] == [allowed]  # the caller's is untouched
        workers = [mask for tid, mask in seen if tid != caller]
        assert len(workers) == 3 and all(mask == ((allowed - {cpu}) or allowed) for mask in workers)
    monkeypatch.setattr(pool, "caller_cpu", lambda: None)
    seen.clear()
    pool.run_in_parallel([(report, ())] * 3)
    assert all(mask == ((allowed - {max(allowed)}) or allowed) for tid, mask in seen if tid != caller)


@pytest.mark.parametrize("cell", ["lstm", "gru", "gru_classic"])
def test_scratch_arrays_are_reused_per_thread_and_never_returned(cell, monkeypatch):
    """jit.cpu.workspace: a call's temporaries (xw, da, da_h, h_{t−1}, r⊙h_{t−1}) are the same
    arrays in the next call of the same shapes, none of them is, or is a view of, anything a
    call returns, another thread gets its own, and release() lets them go. (Backward's GEMMs
    take the BLAS path here, as in a call over PARALLEL_MIN_MACS: a small call's are new
    arrays from jit.cpu.products.matmul.)"""

    from jit.cpu import workspace

    monkeypatch.setattr(threads, "PARALLEL_MIN_MACS", 0)
    workspace.release()
    problem = make_problem(cell, 4, 3, 5, 6, np.float32)
    first = run_both(cell, problem)
    arrays = dict(workspace._local.arrays)
    assert {"xw", "da", "h_prev"} <= set(arrays)
    second = run_both(cell, problem)
    assert all(workspace._local.arrays[role] is a for role, a in arrays.items())
    returned = [a for result in (*first, *second) for a in result if isinstance(a, np.ndarray)]
    returned += [r.hns for r in (first[0], second[0]) if hasattr(r, "hns")]
    assert not any(np.shares_memory(out, a) for out in returned for a in arrays.values())
    elsewhere = []
    worker = threading.Thread(target=lambda: elsewhere.append(workspace.scratch("da", arrays["da"].shape, np.float32)))
    worker.start()
    worker.join()
    assert elsewhere[0] is not arrays["da"]
    workspace.release()
    assert workspace._local.arrays == {}


def test_the_pool_places_only_its_own_live_threads():
    """jit.cpu.pool never places a thread by an id that is not one of its running workers
    (Linux reuses the id of a thread that has ended, possibly for another process's thread):
    growing the pool keeps its workers, and each is registered once."""
    from jit.cpu import pool

    pool.run_in_parallel([(int, ())] * 2)
    before = list(pool._workers)
    pool.run_in_parallel([(int, ())] * (pool.pool_size() + 2))  # one more worker than it had
    assert pool._workers[:len(before)] == before
    assert len(pool._workers) == len(set(pool._workers)) == pool.pool_size()
    if os.path.isdir("/proc/self/task"):
        assert all(os.path.isdir(f"/proc/self/task/{tid}") for tid in pool._workers)


def test_a_pieces_exception_reaches_the_caller_after_every_piece_has_ended():
    """An exception in a worker's piece is raised by run_in_parallel once all pieces are done,
    and the next run works: no worker is lost and no stale error is raised again."""
    from jit.cpu import pool

    ended = []

    def fail():
        raise KeyError("in a worker")

    def slow():
        time.sleep(0.05)
        ended.append("slow")
    with pytest.raises(KeyError, match="in a worker"):
        pool.run_in_parallel([(ended.append, ("caller",)), (fail, ()), (slow, ())])
    assert sorted(ended) == ["caller", "slow"]
    ran = []
    pool.run_in_parallel([(ran.append, (k,)) for k in range(3)])
    assert sorted(ran) == [0, 1, 2]


def test_workers_that_went_to_sleep_wake_for_the_next_run(monkeypatch):
    """Idle workers stop spinning after WORKER_SPIN_TRIES and sleep; a run wakes them all.
    Each run goes on a thread of its own, so that a wake-up that never comes fails the test
    instead of hanging it."""

    from jit.cpu import pool

    def run_all(n):
        ran, finished = [], threading.Event()

        def run():
            pool.run_in_parallel([(ran.append, (k,)) for k in range(n)])
            finished.set()
        threading.Thread(target=run, daemon=True).start()
        assert finished.wait(timeout=30), "sleeping workers were never woken"
        assert sorted(ran) == list(range(n))

    monkeypatch.setattr(pool, "WORKER_SPIN_TRIES", 1000)
    run_all(pool.pool_size() + 2)  # new workers too, which may sleep before the run's ticket
    deadline = time.monotonic() + 10
    while pool._sleepers < pool.pool_size() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool._sleepers == pool.pool_size()
    run_all(pool.pool_size() + 1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_gets_a_pool_of_its_own():
    """A child forked after the pool started has none of its threads: its parallel runs must
    start new workers rather than wait for the parent's, forever."""
    import multiprocessing

    from jit.cpu import pool

    pool.run_in_parallel([(int, ())] * 2)
    child = multiprocessing.get_context("fork").Process(target=pool.run_in_parallel, args=([(int, ())] * 3,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0


def test_a_refused_placement_leaves_the_pool_working(monkeypatch):
    """Where setting a thread's affinity is refused (a restricted container, say), every piece
    still runs: placement is an optimisation, and an error in a worker's initializer would
    break the whole pool."""
    from jit.cpu import pool

    def refuse(*args):
        raise PermissionError("not allowed here")
    monkeypatch.setattr(pool.os, "sched_setaffinity", refuse)
    monkeypatch.setattr(pool, "caller_cpu", lambda: 0)
    monkeypatch.setattr(pool, "_wanted_mask", {0})  # so new workers try to place themselves too
    ran = []
    n = pool.pool_size() + 3  # more than the pool has: new workers start
    pool.run_in_parallel([(ran.append, (k,)) for k in range(n)])
    assert sorted(ran) == list(range(n))


def test_matmul_rows_is_repeatable_and_accurate():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2000, 50)), rng.standard_normal((50, 23))  # over PARALLEL_MIN_MACS
    assert a.shape[0] * a.shape[1] * b.shape[1] >= threads.PARALLEL_MIN_MACS
    with threads.blas_on_one_thread():
        split = gemms.matmul_rows(a, b, 3)
        again = gemms.matmul_rows(a, b, 3)
    assert np.array_equal(split, again)
    # Each element is one dot of K = 50 terms: within 2·K·u·Σ|terms| ≤ K²·eps·max|a|·max|b| of any other order.
    np.testing.assert_allclose(split, a @ b, rtol=0, atol=50 * 50 * np.finfo(float).eps * np.abs(a).max() * np.abs(b).max())


def test_large_gemms_take_the_panel_kernel_where_it_wins(monkeypatch):
    """Above PARALLEL_MIN_MACS, a C-contiguous ``a`` whose panels fit L2 runs on the panel
    kernel, each thread on its rows: the same bits for any thread count (each element one dot
    in k order), and no BLAS call. daᵀ (a transposed view) and an inner dimension too long for
    L2 go to BLAS, each thread one call."""
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((800, 64)), rng.standard_normal((64, 45))  # 45: a padded last panel
    assert a.shape[0] * a.shape[1] * b.shape[1] >= threads.PARALLEL_MIN_MACS
    assert gemms.panel_kernel_wins(a.shape[1])
    blas_calls = []
    real_matmul = np.matmul
    monkeypatch.setattr(np, "matmul", lambda *args, **kw: blas_calls.append(1) or real_matmul(*args, **kw))
    results = [gemms.matmul_rows(a, b, n) for n in (1, 2, 3)]
    assert not blas_calls
    assert all(np.array_equal(results[0], r) for r in results[1:])
    # One dot of K = 64 terms: within 2·K·u·Σ|terms| ≤ K²·eps·max|a|·max|b| of numpy's order.
    np.testing.assert_allclose(results[0], a @ b, rtol=0,
                               atol=64 * 64 * np.finfo(float).eps * np.abs(a).max() * np.abs(b).max())
    with threads.blas_on_one_thread():
        gemms.matmul_rows(np.ascontiguousarray(a.T).T, b, 2)  # a transposed C array
        assert len(blas_calls) == 2
        long_k = next(k for k in range(64, 1 << 20, 64) if not gemms.panel_kernel_wins(k))
        rows = -(-threads.PARALLEL_MIN_MACS // (long_k * 8))  # a large call, not a small one
        gemms.matmul_rows(rng.standard_normal((rows, long_k)), rng.standard_normal((long_k, 8)), 2)
        assert len(blas_calls) == 4


def test_each_kernel_compiles_once_per_dtype():
    """Read-only, non-contiguous inputs and both modes reuse the same compiled variants."""
    for dtype in DTYPES:
        for cell in reference.CELLS:
            params, x, h0, c0, dhs, dh_n, dc_n = make_problem(cell, 2, 3, 4, 5, dtype)
            x = np.asfortranarray(x)
            for a in (x, h0, *params):
                a.flags.writeable = False
            fwd, _, _ = run_both(cell, (params, x, h0, c0, dhs, dh_n, dc_n))
            assert not fwd.hs.flags.f_contiguous or fwd.hs.flags.c_contiguous
    from jit.cpu import gru, lstm, rnn
    kernels = [getattr(module, name) for module in (gru, lstm, rnn) for name in dir(module)
               if name.endswith(("_forward", "_backward")) and hasattr(getattr(module, name), "signatures")]
    assert len(kernels) == 8
    for kernel in kernels:
        assert len(kernel.signatures) <= len(DTYPES), (kernel.__name__, kernel.signatures)


#: Calls whose results must have the same bits at either vector width (every output element's
#: sums run in the same order): rows and columns off the tiles' and panels' sizes, both splits.
WIDTH_PROBE = """
import hashlib, sys, numpy as np, reference
from jit.cpu import backend, threads, tiling
threads.PARALLEL_MIN_MACS = 0
digest = hashlib.sha256()
for cell in reference.CELLS:
    for dtype in (np.float32, np.float64):
        for T, B, I, H, by_units in ((3, 17, 37, 45, False), (2, 3, 70, 133, True)):
            tiling.UNIT_SPLIT_MAX_ROWS_PER_THREAD = B if by_units else -1
            rng = np.random.default_rng(B)
            p = reference.init_params(cell, I, H, dtype=dtype, seed=B)
            x = rng.uniform(-1, 1, (T, B, I)).astype(dtype)
            h0 = rng.uniform(-1, 1, (B, H)).astype(dtype)
            c0 = h0.copy() if cell == "lstm" else None
            f = backend.forward(cell, p, x, h0, c0)
            g = backend.backward(cell, p, x, h0, c0, f, np.ones_like(f.hs), h0)
            for a in (f.hs, f.h_n, f.gates, *g):
                if a is not None:
                    digest.update(np.ascontiguousarray(a).tobytes())
        # a layer: both directions, rows of different lengths, a layer reading both directions' hs
        T, B, I, H = 4, 11, 37, 45
        rng = np.random.default_rng(B)
        params = [reference.init_params(cell, I if k < 2 else 2 * H, H, dtype=dtype, seed=k) for k in range(4)]
        x = rng.uniform(-1, 1, (T, B, I)).astype(dtype)
        h0 = rng.uniform(-1, 1, (4, B, H)).astype(dtype)
        c0 = h0.copy() if cell == "lstm" else None
        lengths = rng.integers(1, T, size=B, endpoint=True)
        f = backend.layer_forward(cell, params, x, h0, c0, bidirectional=True, lengths=lengths)
        g = backend.layer_backward(cell, params, x, h0, c0, f, np.ones_like(f.hs), h0, bidirectional=True,
                                   lengths=lengths)
        for a in (f.hs, f.h_n, f.c_n, g.dx, g.dh0, g.dc0, *(w for d in g.dparams for w in d)):
            if a is not None:
                digest.update(np.ascontiguousarray(a).tobytes())
print(digest.hexdigest())
"""


#: The other width's run: every family that runs jit.cpu's kernels (layers too: their gathered
#: projections and state buffers are paths of their own), this file and the layers' one. Left out,
#: to keep CI's time: the contract's errors (raised before any kernel), the reference's and
#: jit.cuda's own tests; and, in these files, tests that run no kernel or only check processes,
#: threads and the cache (the same code at either width), and this test itself.
WIDTH_FAMILIES = tuple(f"properties/test_{family}.py" for family in (
    "agreement", "gate_ranges", "gradient_flow", "gru_bounds", "robustness", "structure", "layers")) + (
    "jit/cpu/tests/test_jit_cpu.py", "jit/cpu/tests/test_jit_cpu_layers.py")
WIDTH_INDEPENDENT = ("the_other_vector_width", "own_cached_code", "read_only_package", "threading_layer",
                     "explicit_numba_cache_dir", "shared_sources", "forked_child", "pool", "workers",
                     "placement", "blas", "barrier", "scratch", "finiteness_check", "gate_math", "exp")


@pytest.mark.self_check
def test_the_property_suite_passes_at_the_other_vector_width():
    """jit.cpu.host compiles for 64-byte vectors with AVX-512 and 32-byte ones without;
    CELLBENCH_VECTOR_BYTES forces either (LLVM lowers a 64-byte vector to two 32-byte
    operations on AVX2). The whole property suite against jit.cpu, this file included, must
    pass with the width this process did not pick, so that every machine checks both widths'
    register tiles, tails and packing; and the two widths give the same bits. In fresh
    processes: the width is fixed at import."""
    from jit.cpu import host

    other = 32 if host.VECTOR_BYTES == 64 else 64
    root = REPO
    env = dict(os.environ, CELLBENCH_VECTOR_BYTES=str(other), CELLBENCH_BACKEND="jit.cpu")
    command = [sys.executable, "-m", "pytest", *WIDTH_FAMILIES, "-q", "-x", "-p", "no:cacheprovider",
               "-k", f"not ({' or '.join(WIDTH_INDEPENDENT)})"]
    out = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, f"width {other}:\n{out.stdout[-4000:]}\n{out.stderr[-2000:]}"
    assert " passed" in out.stdout and " failed" not in out.stdout
    digests = {}
    for width in (host.VECTOR_BYTES, other):
        probe = subprocess.run([sys.executable, "-c", WIDTH_PROBE], cwd=root, capture_output=True, text=True,
                               env=dict(os.environ, CELLBENCH_VECTOR_BYTES=str(width)), timeout=600)
        assert probe.returncode == 0, probe.stderr[-2000:]
        digests[width] = probe.stdout.strip()
    assert digests[host.VECTOR_BYTES] == digests[other], digests


def test_a_call_leaves_numbas_threading_layer_unlaunched():
    """jit.cpu runs its own threads; launching Numba's "omp" layer before torch's import made every
    torch.nn call 8–10× slower in the same process (measured: see jit.cpu.threads.pool_threads)."""
    probe = (
        "import numpy as np, reference, jit.cpu, numba.np.ufunc.parallel as layer\n"
        "p = reference.init_params('lstm', 8, 16, dtype=np.float32)\n"
        "x = np.ones((3, 64, 8), np.float32); h0 = np.zeros((64, 16), np.float32)\n"
        "f = jit.cpu.backend.forward('lstm', p, x, h0, h0)\n"
        "jit.cpu.backend.backward('lstm', p, x, h0, h0, f, np.ones_like(f.hs), h0)\n"
        "print(jit.cpu.threads.pool_threads(), layer._is_initialized)\n"
    )
    env = dict(os.environ, NUMBA_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["2", "False"]


# ---- the on-disk cache, in fresh processes -------------------------------------------------

PROBE = """
import json, numpy as np, reference, jit.cpu
from jit.cpu.rnn import rnn_forward
p = reference.init_params("rnn_tanh", 3, 4, dtype=np.float64)
jit.cpu.backend.forward("rnn_tanh", p, np.ones((2, 1, 3)), np.zeros((1, 4)), training=False)
stats = rnn_forward.stats
print(json.dumps({"package": jit.cpu.__file__, "cache_dir": jit.cpu.CACHE_DIR,
                  "hits": sum(stats.cache_hits.values()), "misses": sum(stats.cache_misses.values())}))
"""


def read_only_command(folder):
    """A command prefix under which ``folder`` is read-only for the child process.

    chmod suffices for an ordinary user; root writes through permission bits, so for root
    the child gets its own mount namespace where the folder is bind-mounted read-only.
    """
    if os.geteuid() != 0:
        for root, dirs, files in os.walk(folder):
            for name in dirs + files:
                os.chmod(os.path.join(root, name), 0o555 if name in dirs else 0o444)
        os.chmod(folder, 0o555)
        return []
    if shutil.which("unshare") is None:
        pytest.fail("running as root without util-linux's unshare: cannot make a read-only folder")
    mount = f'mount --bind "{folder}" "{folder}" && mount -o remount,ro,bind "{folder}" && exec "$@"'
    return ["unshare", "--mount", "sh", "-c", mount, "sh"]


def run_probe(prefix, copy_root, env):
    out = subprocess.run(prefix + [sys.executable, "-c", PROBE], cwd=copy_root, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_read_only_package_caches_in_a_writable_folder_and_a_new_process_reuses_it():
    """A copy of jit/ in a read-only folder compiles into $XDG_CACHE_HOME/cellbench/numba;
    a second process loads the kernel from there instead of compiling it again."""
    work = tempfile.mkdtemp(prefix="cellbench-ro-")
    try:
        copy_root = os.path.join(work, "pkg")
        shutil.copytree(os.path.dirname(os.path.dirname(backend.__file__)), os.path.join(copy_root, "jit"),
                        ignore=shutil.ignore_patterns("__pycache__", "cuda"))
        xdg = os.path.join(work, "xdg")
        env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
        env.update(PYTHONPATH=copy_root, XDG_CACHE_HOME=xdg, PYTHONDONTWRITEBYTECODE="1")
        prefix = read_only_command(copy_root)
        first = run_probe(prefix, copy_root, env)
        second = run_probe(prefix, copy_root, env)
        expected_dir = os.path.join(xdg, "cellbench", "numba")
        assert first["package"].startswith(copy_root), first
        assert first["cache_dir"] == expected_dir, first
        assert first["misses"] >= 1 and first["hits"] == 0, first
        assert second["hits"] >= 1 and second["misses"] == 0, second
        assert not os.path.exists(os.path.join(copy_root, "jit", "cpu", "__pycache__"))
        assert any(name.endswith(".nbi") for _, _, files in os.walk(expected_dir) for name in files)
    finally:
        subprocess.run(["chmod", "-R", "u+w", work], check=False)
        shutil.rmtree(work, ignore_errors=True)


WIDTH_CACHE_PROBE = """
import json, numpy as np, jit.cpu
from jit.cpu.arrays import _all_finite_values
_all_finite_values(np.ones(3))
stats = _all_finite_values.stats
print(json.dumps({"hits": sum(stats.cache_hits.values()), "misses": sum(stats.cache_misses.values())}))
"""


def test_each_vector_width_has_its_own_cached_code(tmp_path):
    """A forced width never loads code compiled for the other (the products' vector width and
    register tile are module constants, which Numba's cache key does not see): in one cache
    folder, a jit.cpu function at 32, then 64, then 32 again compiles, compiles, then loads.
    (A small function: the cache locator keys every function of jit.cpu's modules alike.)"""
    root = REPO
    runs = []
    for width in (32, 64, 32):
        env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), CELLBENCH_VECTOR_BYTES=str(width))
        out = subprocess.run([sys.executable, "-c", WIDTH_CACHE_PROBE], cwd=root, env=env, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    first, other, again = runs
    assert first["misses"] >= 1 and first["hits"] == 0, first
    assert other["misses"] >= 1 and other["hits"] == 0, other
    assert again["hits"] >= 1 and again["misses"] == 0, again


def test_an_explicit_numba_cache_dir_wins(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    code = "import jit.cpu; print(jit.cpu.CACHE_DIR)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str(tmp_path)


# ---- the shared scalar gate math (jit.gatemath) ---------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_gate_math_is_accurate_stable_and_keeps_the_dtype(dtype):
    """sigmoid and tanh, compiled, are within 2 eps (relative) of float64-or-better values,
    for tiny, ordinary, large and extreme inputs, without NaN or a floating-point warning.

    2 eps: each is one exp (≤ 1 ulp in glibc) and a few correctly rounded operations, or for
    tanh near 0 a Taylor series whose truncation is below 0.15 u of its dtype (jit.gatemath:
    4e-18 relative in float64, 8.5e-9 in float32).
    """
    import numba

    from jit import gatemath

    @numba.njit
    def both(a):
        t, s = np.empty_like(a), np.empty_like(a)
        for k in range(a.size):
            t[k], s[k] = gatemath.tanh(a[k]), gatemath.sigmoid(a[k])
        return t, s

    finfo = np.finfo(dtype)
    grid = np.logspace(-30, 1.5, 4000)
    # linspace(-120, 0) reaches the results that float32's exp must round into the subnormals (a < −87).
    a = np.concatenate([grid, -grid, np.random.default_rng(0).normal(0, 3, 4000), np.linspace(-120, 0, 24001),
                        [0.0, 1e4, -1e4, finfo.max, -finfo.max, finfo.tiny]]).astype(dtype)
    with np.errstate(all="raise"):
        t, s = both(a)
    assert t.dtype == s.dtype == np.dtype(dtype)
    exact = a.astype(np.float64)
    tanh_true = np.tanh(exact)
    sigmoid_true = np.where(exact >= 0, 1 / (1 + np.exp(-np.abs(exact))),
                            np.exp(-np.abs(exact)) / (1 + np.exp(-np.abs(exact))))
    # float64's own truth carries ≤ 1 eps64 ≪ eps32; for float64 allow it too (2 eps + 1 eps).
    bound = (2 if dtype == np.float32 else 3) * finfo.eps
    for name, got, true in (("tanh", t, tanh_true), ("sigmoid", s, sigmoid_true)):
        scale = np.maximum(np.abs(true), finfo.tiny)
        worst = int(np.argmax(np.abs(got - true) / scale))
        assert np.abs(got - true)[worst] <= bound * scale[worst], \
            f"{name}({a[worst]!r}) = {got[worst]!r}, expected {true[worst]!r}"


def test_kernels_built_from_other_shared_sources_are_dropped(tmp_path):
    """Numba checks only the defining file's stamp; an edit to gatemath.py must still recompile."""
    from jit.cpu.cache import STAMP_FILE, drop_stale_kernels, shared_sources_stamp

    shared = tmp_path / "gatemath.py"
    shared.write_text("def sigmoid(a): ...\n")
    cache = tmp_path / "cache" / "sub"
    cache.mkdir(parents=True)
    kernel_files = [cache / "lstm.lstm_forward-19.py311.nbi", cache / "lstm.lstm_forward-19.py311.1.nbc"]
    for f in kernel_files:
        f.write_bytes(b"compiled")
    other = cache / "lstm.cpython-311.pyc"
    other.write_bytes(b"bytecode")
    root = tmp_path / "cache"

    assert drop_stale_kernels(str(root), shared_sources_stamp([str(shared)]))  # no stamp yet: dropped
    assert not any(f.exists() for f in kernel_files) and other.exists()
    for f in kernel_files:
        f.write_bytes(b"compiled")
    assert not drop_stale_kernels(str(root), shared_sources_stamp([str(shared)]))  # same sources: kept
    assert all(f.exists() for f in kernel_files)
    shared.write_text("def sigmoid(a): return 0.5\n")  # an edit to the shared math
    assert drop_stale_kernels(str(root), shared_sources_stamp([str(shared)]))
    assert not any(f.exists() for f in kernel_files)
    assert (root / STAMP_FILE).read_text().strip() == shared_sources_stamp([str(shared)])


def test_float32_exp_polynomial_is_within_its_stated_error():
    """EXP_POLYNOMIAL, float32 coefficients in exact (float64) arithmetic, is within 3.2e-9
    relative of e^r on |r| ≤ ln2/2, the error budget that the 1-ulp exp test below divides up.
    3.2e-9 is the 3.14e-9 its fit reached (jit.gatemath), rounded up; float64's own rounding
    here, ~7 terms · 2^−53, is a million times smaller."""
    from jit.gatemath import EXP_POLYNOMIAL

    assert all(np.float32(c) == c for c in EXP_POLYNOMIAL)
    r = np.linspace(-np.log(2) / 2, np.log(2) / 2, 2_000_001)
    assert np.max(np.abs(np.polynomial.polynomial.polyval(r, EXP_POLYNOMIAL) / np.exp(r) - 1)) <= 3.2e-9


def test_float32_exp_is_within_one_ulp_down_to_the_subnormals():
    """jit.gatemath.exp_nonpositive_float32, the vectorisable exp behind float32's gates.

    Bound 1 eps relative (or one subnormal spacing, 2^−149, where e^x is subnormal): the
    polynomial's own error is ≤ 3.2e-9 ≤ u/5 (u = eps/2; jit.gatemath.EXP_POLYNOMIAL), the
    Horner steps add ≤ u(1 + |r| + r² ...) ≤ 1.6u for |r| ≤ ln2/2, and n·ln2 carries
    ≤ 159·|LN2_LOW|·u ≈ 0.03u; the scaling by 2^n is exact, and a subnormal result is rounded
    once (≤ half a spacing).
    """
    import numba

    from jit import gatemath

    @numba.njit
    def exps(x):
        out = np.empty_like(x)
        for k in range(x.size):
            out[k] = gatemath.exp_nonpositive(x[k])
        return out

    x = np.concatenate([-np.logspace(-30, np.log10(120), 20000), np.linspace(-120, 0, 100001),
                        np.random.default_rng(0).uniform(-110, 0, 100000), [0.0, -1e4, -np.finfo(np.float32).max],
                        [np.nan]]).astype(np.float32)
    with np.errstate(all="raise"):
        got = exps(x)
    assert got.dtype == np.float32
    assert np.isnan(got[-1])  # a NaN is not clamped into a number
    x, got = x[:-1], got[:-1]
    true = np.exp(x.astype(np.float64))
    allowed = np.maximum(np.finfo(np.float32).eps * true, 2.0 ** -149)
    worst = int(np.argmax(np.abs(got - true) / allowed))
    assert abs(got[worst] - true[worst]) <= allowed[worst], f"exp({x[worst]!r}) = {got[worst]!r}, expected {true[worst]!r}"
