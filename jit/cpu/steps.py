"""Which rows a tile's time loop runs at each step, and where each row's step lives in the
outputs: rows of different lengths, and the reverse direction of a layer.

A tile's rows are *positions* p in [b0, b1) of ``order``, a permutation of the batch rows
(row = order[p]) that lists each tile's rows longest first. At loop step s the rows still
running are therefore a prefix, positions b0 … b0 + active[s] − 1, so the recurrent product
of a step runs on the rows that still run and on nothing else (a row stops at its length, as
a packed sequence does). Row b at step s reads and writes time

    t = s                     forward
    t = lengths[b] − 1 − s    reverse: each row starts at its own last step

and the positions t ≥ lengths[b] are padding in both directions (zeros in hs, in ∂L/∂a).

A loop is *direct* when it runs forward over its rows in batch order (the cells' calls, and a
forward direction whose rows come longest first): then step s's rows are one block of the
per-step arrays, and the kernels read their previous state there, as the cells always did.
Otherwise the state that the next step's product reads goes to a (2, B, ·) state buffer in
position order (step s writes [s & 1] and reads [(s + 1) & 1]; the threads of a unit split
wait once per step, so a buffer is never written while another thread still reads it).

twin: reference.layers.run_rows (spans of the rows still running) and reverse_within_lengths.
"""
from functools import lru_cache

import numpy as np
from numba import njit

#: Compile options of these helpers: inlined into the time loops' kernels, which run without the GIL.
HELPER_OPTIONS = dict(cache=True, nogil=True, error_model="numpy")


@njit(**HELPER_OPTIONS)
def active_rows(lengths, order, b0, b1, T):
    """(active, offsets): active[s] = how many of the tile's rows run step s (a prefix of its
    positions, since they come longest first), for s < T; offsets[s] = Σ active[:s], where step
    s's rows start in a packed array of the tile's valid (step, row) pairs (the input projection)."""
    active = np.zeros(T, np.int64)
    offsets = np.zeros(T + 1, np.int64)
    for p in range(b0, b1):
        n = lengths[order[p]]
        for s in range(n):
            active[s] += 1
    for s in range(T):
        offsets[s + 1] = offsets[s] + active[s]
    return active, offsets


@njit(**HELPER_OPTIONS)
def runs_direct(order, reverse, b0, b1):
    """Whether the tile's loop is direct: forward, its positions the batch rows themselves."""
    if reverse:
        return False
    for p in range(b0, b1):
        if order[p] != p:
            return False
    return True


@njit(**HELPER_OPTIONS)
def step_times(lengths, order, reverse, b0, n, s, times):
    """times[r] = the time that the tile's r-th row (position b0 + r) runs at step s, r < n."""
    for r in range(n):
        times[r] = lengths[order[b0 + r]] - 1 - s if reverse else s


@njit(**HELPER_OPTIONS)
def scatter_rows(source, n, dest, times, order, b0, column0, width):
    """dest[times[r], order[b0 + r], column0 : column0 + width] = source[r, :width] for r < n:
    a step's rows into a per-step output (T, B, ·) at each row's own time."""
    if width > source.shape[1] or n > source.shape[0] or column0 < 0 or column0 + width > dest.shape[2]:
        raise ValueError("scatter_rows: source's rows do not fit dest")
    for r in range(n):
        source_row = source[r]
        dest_row = dest[times[r], order[b0 + r], column0:column0 + width]
        for c in range(width):
            dest_row[c] = source_row[c]


@njit(**HELPER_OPTIONS)
def scatter_gate_blocks(blocks, n, H, j0, j1, dest, times, order, b0):
    """scatter_rows for each gate block g: blocks[g, r, :nj] to columns g·H + j0 … of dest."""
    for gate in range(blocks.shape[0]):
        scatter_rows(blocks[gate], n, dest, times, order, b0, gate * H + j0, j1 - j0)


@njit(**HELPER_OPTIONS)
def zero_padding(dest, s, order, p0, p1, column0, width):
    """dest[s, order[p], column0 : column0 + width] = 0 for positions p in [p0, p1): rows that
    have ended by step s, whose time s is padding in either direction."""
    if column0 < 0 or column0 + width > dest.shape[2]:
        raise ValueError("zero_padding: columns outside dest")
    for p in range(p0, p1):
        dest_row = dest[s, order[p], column0:column0 + width]
        for c in range(width):
            dest_row[c] = 0


@njit(**HELPER_OPTIONS)
def zero_gate_padding(dest, s, order, p0, p1, H, j0, j1, G):
    """zero_padding for each of G gate blocks' columns g·H + j0 … g·H + j1 − 1."""
    for gate in range(G):
        zero_padding(dest, s, order, p0, p1, gate * H + j0, j1 - j0)


@njit(**HELPER_OPTIONS)
def zero_steps_after(dest, first, order, b0, b1, column0, width):
    """zero_padding for every step from ``first`` on (the steps no row of the tile runs)."""
    for s in range(first, dest.shape[0]):
        zero_padding(dest, s, order, b0, b1, column0, width)


@njit(**HELPER_OPTIONS)
def gather_rows(source, order, b0, b1, j0, j1, out):
    """out[r, :j1 − j0] = source[order[b0 + r], j0:j1]: the tile's rows of a (B, ·) state, in
    position order."""
    for r in range(b1 - b0):
        source_row, out_row = source[order[b0 + r], j0:j1], out[r]
        for c in range(j1 - j0):
            out_row[c] = source_row[c]


@njit(**HELPER_OPTIONS)
def scatter_state(source, order, b0, b1, j0, j1, dest):
    """dest[order[b0 + r], j0:j1] = source[r, :j1 − j0]: a tile's final states (h_n, c_n, dh0)."""
    for r in range(b1 - b0):
        source_row, dest_row = source[r], dest[order[b0 + r], j0:j1]
        for c in range(j1 - j0):
            dest_row[c] = source_row[c]


@njit(**HELPER_OPTIONS)
def gather_inputs(x, lengths, order, reverse, b0, b1, active, offsets, out):
    """out[offsets[s] + r] = x[t, order[b0 + r]] for every step s and running row r (t its
    time): the tile's valid inputs, packed in the order its loop reads them."""
    T, _, I = x.shape
    for s in range(T):
        for r in range(active[s]):
            row = order[b0 + r]
            t = lengths[row] - 1 - s if reverse else s
            source_row, out_row = x[t, row], out[offsets[s] + r]
            for c in range(I):
                out_row[c] = source_row[c]


@njit(**HELPER_OPTIONS)
def previous_states(hs, column0, h0, lengths, reverse, out):
    """out[t, b] = the state step t of row b started from: hs[t − 1, b] forward, hs[t + 1, b]
    reverse (from column column0), h0[b] at the row's first step; zeros past its length (where
    ∂L/∂a is zero: what backward's W_hh gradient multiplies). out (T, B, H)."""
    T, B, H = out.shape
    for t in range(T):
        for b in range(B):
            n = lengths[b]
            out_row = out[t, b]
            if t >= n:
                for c in range(H):
                    out_row[c] = 0
                continue
            first = t == n - 1 if reverse else t == 0
            source = h0[b] if first else hs[t + 1 if reverse else t - 1, b, column0:column0 + H]
            for c in range(H):
                out_row[c] = source[c]


@lru_cache(maxsize=64)
def every_row_in_order(T: int, B: int):
    """(lengths, order) of a call without lengths: every row T steps, in batch order. Kept from call
    to call (no kernel writes them): made anew they were a third of the time the schedule added to
    a cell's call (2.5 µs)."""
    return np.full(B, T, np.int64), np.arange(B, dtype=np.int64)


def schedule(lengths, T: int, B: int, tiling):
    """(lengths, order, tiling) of one direction of a call: every row's length (T for all when
    ``lengths`` is None), the positions' rows, and the tiles with their positions as (b0, b1).

    Without lengths, rows stay in batch order and the tiling as it is (the cells' calls). With
    them, rows go longest first (stable: equal lengths keep the batch order), and a split by rows
    deals them out in turn, so that each tile gets long and short rows alike.
    """
    from .tiling import Tiling
    if lengths is None:
        return (*every_row_in_order(T, B), tiling)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    longest_first = np.argsort(-lengths, kind="stable").astype(np.int64)
    if tiling.by_units or len(tiling.tiles) <= 1:
        return lengths, longest_first, tiling
    parts = len(tiling.tiles)
    dealt = [longest_first[k::parts] for k in range(parts)]
    bounds = np.cumsum([0] + [len(d) for d in dealt])
    tiles = tuple((int(bounds[k]), int(bounds[k + 1]), j0, j1) for k, (_, _, j0, j1) in enumerate(tiling.tiles))
    return lengths, np.concatenate(dealt), Tiling(tiles, False)
