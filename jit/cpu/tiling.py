"""How a call's threads share the time loop: tiles of batch rows × hidden units.

Each thread runs the whole time loop on its tile. By rows (every unit of a chunk of rows)
the threads never wait, but each reads all of W_hh at every step; by units (every row of a
slice of the units) each reads only its share of W_hh, and the threads wait for each other
once per step (jit.cpu.sync), since a step reads the previous h of every unit.
split_by_units chooses (docs/jit-cpu.md has the measurements behind it).
"""
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from .host import L2_BYTES, L3_BYTES, L3_FEEDS_THE_TILE, PANEL_VECTORS, VECTOR_BYTES
from .pool import run_in_parallel
from .products import panel_columns
from .sync import new_arrivals
from .workspace import scratch

#: Unit slices are cut at multiples of one float32 panel's columns where H allows, so each
#: thread's pointwise loop runs on whole vectors and no panel but the last is padded.
UNIT_ALIGNMENT = PANEL_VECTORS * VECTOR_BYTES // 4

#: Hidden size from which the threads share the time loop by units, on hosts with less than
#: 1 MiB of L2 per core (Zen 3: 3–15% faster at H = 512 and 1024); None where rows were as fast
#: or faster at S2, M and L1 (Zen 4, 1 MiB: units 0.98–1.11× the rows' time; L2's lstm goes by
#: units through UNIT_SPLIT_MIN_WEIGHT_BYTES). See docs/jit-cpu.md.
UNIT_SPLIT_MIN_UNITS = 512 if L2_BYTES < (1 << 20) else None
#: By units when W_hh is this large: by rows every thread streams all of it each step from
#: beyond its L2. Where the L3 feeds a core at the register tile's rate (host.L3_FEEDS_THE_TILE),
#: from half the shared L3, where the threads' two streams spill to memory (Zen 4, 32 MiB L3,
#: L2 config: lstm's 16 MiB units 0.93–0.96× the rows' time; gru's 12 MiB 1.01–1.06×, rnn's 4 MiB
#: 1.1–1.4×); where it does not, from one core's L2, so each thread's half streams from L2 or
#: at least half as much from L3 (Intel Xeon, 2 MiB L2: lstm L1's 4 MiB units 0.97× the rows'
#: time, L2's 16 MiB 0.86×; gru 0.90× and 0.84×; rnn's 4 MiB at L2 0.89×; M's 1 MiB and less
#: stay by rows, units 1.04–1.15× there). See docs/jit-cpu.md.
UNIT_SPLIT_MIN_WEIGHT_BYTES = L3_BYTES // 2 if L3_FEEDS_THE_TILE else L2_BYTES
#: By units whenever the row split would leave a thread at most this many rows: a one- or
#: two-row tile reads all of W_hh per step for one or two FMAs per weight, and two threads
#: halve that stream (Zen 4, B = 2: units 0.47–0.68× the rows' time; B = 8: 1.05–1.3×).
UNIT_SPLIT_MAX_ROWS_PER_THREAD = 2


def split(n: int, parts: int):
    """[(start, stop)] cutting range(n) into ``parts`` contiguous, nearly equal pieces."""
    return [(k * n // parts, (k + 1) * n // parts) for k in range(parts)]


def unit_slices(H: int, parts: int):
    """[(j0, j1)] cutting range(H) into ``parts`` pieces, at multiples of UNIT_ALIGNMENT when
    H has at least that many per part."""
    if H < parts * UNIT_ALIGNMENT:
        return split(H, parts)
    blocks = -(-H // UNIT_ALIGNMENT)
    return [(min(H, b0 * UNIT_ALIGNMENT), min(H, b1 * UNIT_ALIGNMENT)) for b0, b1 in split(blocks, parts)]


def split_by_units(B: int, H: int, n_threads: int, weight_bytes: int) -> bool:
    """Whether the threads of a call share the time loop by hidden units rather than by rows
    (weight_bytes: W_hh's size)."""
    if n_threads < 2 or H < n_threads:
        return False
    few_rows = B <= UNIT_SPLIT_MAX_ROWS_PER_THREAD * n_threads
    large_h = UNIT_SPLIT_MIN_UNITS is not None and H >= UNIT_SPLIT_MIN_UNITS
    return few_rows or large_h or weight_bytes >= UNIT_SPLIT_MIN_WEIGHT_BYTES


class Tiling(NamedTuple):
    """tiles[k] = (b0, b1, j0, j1), the rows × units thread k runs the whole loop on;
    by_units: whether the tiles split the units (and so wait for each other each step)."""
    tiles: tuple
    by_units: bool


def tiling_for(cell: str, B: int, H: int, n_threads: int, weight_bytes: int = 0) -> Tiling:
    """The tiles of a call (weight_bytes: W_hh's size). gru_classic's kernels take rows only:
    their n gate reads r⊙h of every unit, which would be a second wait per step."""
    return _tiling(cell, B, H, n_threads, weight_bytes,
                   (UNIT_SPLIT_MIN_UNITS, UNIT_SPLIT_MIN_WEIGHT_BYTES, UNIT_SPLIT_MAX_ROWS_PER_THREAD))


@lru_cache(maxsize=256)
def _tiling(cell, B, H, n_threads, weight_bytes, split_rules) -> Tiling:
    # Cached: a training loop asks for the same tiles every call (1.3 µs of Python each time).
    # The split rules are part of the key so that a test that changes them gets new tiles.
    if cell != "gru_classic" and split_by_units(B, H, n_threads, weight_bytes):
        return Tiling(tuple((0, B, j0, j1) for j0, j1 in unit_slices(H, n_threads)), True)
    return Tiling(tuple((b0, b1, 0, H) for b0, b1 in split(B, max(1, min(n_threads, B)))), False)


def _own_part(own, k):
    """The arguments that only tile k gets: a[k] for each array a of ``own``."""
    return [a[k] for a in own]


def tile_pieces(kernel, *args, tiling: Tiling, own=()):
    """[(kernel, (*args, *own parts of tile k, arrivals, n_waiting, b0, b1, j0, j1))] for each
    tile k, to run in parallel (own: arrays whose [k] only tile k gets). Unit tiles share one
    barrier counter; row tiles never wait (n_waiting = 1)."""
    arrivals, n_waiting = new_arrivals(), (len(tiling.tiles) if tiling.by_units else 1)
    return [(kernel, (*args, *_own_part(own, k), arrivals, n_waiting, *tile)) for k, tile in enumerate(tiling.tiles)]


def row_chunk_pieces(kernel, *args, tiling: Tiling, own=()):
    """[(kernel, (*args, *own parts of tile k, b0, b1))] for each row tile k (gru_classic's
    kernels, which take rows only)."""
    assert not tiling.by_units
    return [(kernel, (*args, *_own_part(own, k), b0, b1)) for k, (b0, b1, _, _) in enumerate(tiling.tiles)]


def run_pieces(pieces):
    """Run the pieces (kernel, args) at once, the first on the caller (jit.cpu.pool)."""
    run_in_parallel(pieces)


def run_on_tiles(kernel, *args, tiling: Tiling, own=()):
    """tile_pieces(...), run in parallel."""
    run_in_parallel(tile_pieces(kernel, *args, tiling=tiling, own=own))


def run_on_row_chunks(kernel, *args, tiling: Tiling, own=()):
    """row_chunk_pieces(...), run in parallel."""
    run_in_parallel(row_chunk_pieces(kernel, *args, tiling=tiling, own=own))


def projection_scratch(tiling: Tiling, T: int, G: int, dtype, role="") -> np.ndarray:
    """Every tile's input projection (jit.cpu.products.project_tile_inputs' out): [k] for tile
    k, (G, T·rows, columns), sized for the largest tile; one scratch array (jit.cpu.workspace)."""
    return scratch("xw" + role, _projection_shape(tiling, T, G, dtype), dtype)


@lru_cache(maxsize=256)
def _projection_shape(tiling: Tiling, T: int, G: int, dtype) -> tuple:
    rows = max(b1 - b0 for b0, b1, _, _ in tiling.tiles)
    units = max(j1 - j0 for _, _, j0, j1 in tiling.tiles)
    return len(tiling.tiles), G, T * rows, panel_columns(units, dtype)


def gather_scratch(tiling: Tiling, T: int, I: int, dtype, gathers: bool, role="") -> np.ndarray:
    """Every tile's gathered inputs (jit.cpu.products.project_tile_inputs' x_rows): [k] for tile
    k, (T·rows, I); an empty array when no tile gathers (its rows run every step in batch order)."""
    if not gathers:
        return no_rows(len(tiling.tiles), np.dtype(dtype))
    rows = max(b1 - b0 for b0, b1, _, _ in tiling.tiles)
    return scratch("x_rows" + role, (len(tiling.tiles), T * rows, I), dtype)


@lru_cache(maxsize=16)
def no_rows(n_tiles: int, dtype) -> np.ndarray:
    """(n_tiles, 0, 0) of dtype: the scratch a kernel is given where it needs none (never written)."""
    return np.empty((n_tiles, 0, 0), dtype)
