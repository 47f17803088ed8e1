"""The jit.cpu backend: the contract (see reference.contract) on Numba CPU kernels.

This module is the backend (``name``, ``cells``, ``forward``, ``backward``); the same
shape as reference.backend, whose results it must reproduce. Each call:

1. validates its arguments with reference.contract (before any computation);
2. runs one kernel for the whole time loop (jit.cpu.lstm / gru / rnn) per thread, on a
   tile of batch rows × hidden units: all units of a chunk of rows (rows are independent),
   or from H = 512 all rows of a slice of units, waiting for each other once per step
   (see split_by_units); the kernels release the GIL. Forward, each kernel first projects
   its tile's inputs of every step, x W_ihᵀ, as one product (jit.cpu.products.project_inputs);
3. backward only: the weight, bias and input gradients as GEMMs on the stored da.

Threads: one pool of numba.get_num_threads() threads (the caller plus workers, jit.cpu.pool,
which hands them work spinning and keeps them off the caller's CPU) does all the parallel
work of a call. Forward makes no BLAS call; backward holds BLAS to one thread per caller for
the whole call. Letting BLAS thread its GEMMs costs more than it gains: OpenBLAS's idle
workers keep spinning for ~0.1 s after each threaded GEMM, and on a 2-core machine they took
the cores from the time loop's threads (measured: M rnn_tanh forward 37 ms against 19 ms
this way), or from whatever the caller ran next (an S1 lstm call woke them for its 50×64×256
projection, and the torch.nn call after it took 4 ms instead of 0.4 ms). A small call
(small_call) runs on the caller alone and makes no BLAS call: its GEMMs are
jit.cpu.products' panel kernel, so it has no thread setting to hold.

The input projection moved into the kernels (it was one BLAS GEMM on every thread before the
time loop, then a second parallel run): each thread's tile needs only its own rows and units
of xw, and in the kernel it costs no handoff, no BLAS thread setting, and no transposed copy
of W_ih (measured, in-process A/B, median time, 2026-11-27: forward S1 0.84–0.94×, S2
0.83–0.97×, M 0.94–1.00×, L1 and L2 level).

The recurrent product inside the time loop is jit.cpu.products' register-tiled kernel on
weights packed once per call, at every size (it is level with BLAS or faster, see there).
"""
import threading
from contextlib import contextmanager
from functools import partial
from typing import NamedTuple

import numba
import numba.np.arraymath  # noqa: F401  (see _blas)
import numba.np.ufunc.parallel as numba_parallel
import numpy as np
from numba import njit
from threadpoolctl import ThreadpoolController

from reference.contract import CELLS, DTYPES, BackwardResult, ForwardResult, check_backward_inputs, \
    check_forward_inputs, numpy_all_finite

from .gru import gru_backward_kernel, gru_classic_backward_kernel, gru_classic_forward_kernel, gru_forward_kernel
from .lstm import lstm_backward_kernel, lstm_forward_kernel
from .pool import run_in_parallel
from .products import matmul, panel_columns
from .rnn import rnn_backward_kernel, rnn_forward_kernel
from .sync import new_arrivals
from .workspace import scratch

name = "jit.cpu"
cells = frozenset(CELLS)


class CPUForwardResult(ForwardResult):
    """ForwardResult plus, for gru with training, ``hns`` = W_hn h + b_hn per step (T, B, H).

    Backward uses hns when it is there and recomputes it (one GEMM) when it is not, for a
    forward result rebuilt by the caller (for instance with _replace).
    """


# ---- threads -------------------------------------------------------------------------------

_blas_libraries = None


def _blas():
    """Every BLAS loaded when first asked: numpy's, which jit.cpu's GEMMs call (its kernels call
    none), and any other already loaded, held alike. Numba loads SciPy's copy, where SciPy is
    installed, when numba.np.arraymath is first imported (it probes for np.dot); the import at
    the top of this module makes that happen before the list is taken, not during a first call."""
    global _blas_libraries
    if _blas_libraries is None:  # inspecting the loaded libraries is slow: do it once
        _blas_libraries = ThreadpoolController().select(user_api="blas").lib_controllers
    return _blas_libraries


_blas_hold = threading.Lock()
_blas_holders = 0  # calls inside blas_on_one_thread now, from any thread
_blas_saved = []  # each library's thread count from before the first of them entered


def _set_blas_threads(library, n: int) -> None:
    """library.set_num_threads(n), from whichever thread calls it.

    threadpoolctl (3.8) lets only the first thread that ever sets a pthreads OpenBLAS's thread
    count change it, and silently ignores every other thread (its threadpool_limits releases
    that control when it ends). The hold below is shared by concurrent callers, so its first
    and last holder can be different threads: release the control before and after each change
    (the changes themselves are serialised by _blas_hold). Without it, after one call from the
    main thread, calls from any other thread left BLAS threaded beside the pool (measured: a
    1536² GEMM on 2 threads while the hold said 1).
    """
    release = getattr(library, "clear_controlling_thread", None)  # OpenBLAS's controller only
    if release is not None:
        release(force=True)
    library.set_num_threads(n)
    if release is not None:
        release(force=True)


@contextmanager
def blas_on_one_thread():
    """Hold every loaded BLAS to one thread per caller inside the block (threadpoolctl's controllers).

    BLAS's thread count is one setting for the whole process, so calls from several threads at
    once share one hold: the first to enter saves each library's count and sets 1, the last to
    leave restores it. (Each call saving and restoring its own, a call that entered while
    another held BLAS saved that call's 1 as the user's setting; leaving last, it left BLAS on
    one thread for good, and a call still inside after the first left ran BLAS threaded beside
    the pool: test_concurrent_calls_share_one_blas_hold.)
    """
    global _blas_holders, _blas_saved
    libraries = _blas()
    with _blas_hold:
        if _blas_holders == 0:
            _blas_saved = [library.num_threads for library in libraries]
            for library in libraries:
                _set_blas_threads(library, 1)
        _blas_holders += 1
    try:
        yield
    finally:
        with _blas_hold:
            _blas_holders -= 1
            if _blas_holders == 0:
                for library, n_before in zip(libraries, _blas_saved):
                    _set_blas_threads(library, n_before)


def pool_threads() -> int:
    """Threads doing one call's parallel work: Numba's thread count (NUMBA_NUM_THREADS, set_num_threads).

    Read without launching Numba's threading layer, which jit.cpu never uses (its kernels
    have no prange): numba.get_num_threads() launches it, and its "omp" layer, launched before
    torch is first imported, made every later torch.nn call 8–10× slower (measured: gru M
    inference 16 → 150–200 ms, with no jit.cpu call in between). Until the layer is launched,
    set_num_threads has not been called (it launches it), so the count is NUMBA_NUM_THREADS.
    """
    launched = getattr(numba_parallel, "_is_initialized", True)  # a private flag: if it goes, ask Numba
    return max(1, numba.get_num_threads() if launched else numba.config.NUMBA_NUM_THREADS)


#: Work below this many multiply-adds stays on the calling thread: handing it to the pool
#: cost about 70 µs when this was set, the time of ~2M multiply-adds on one core; since the
#: workers wait spinning (jit.cpu.pool), 13–30 µs while they spin and 60–160 µs once they
#: have gone to sleep (two no-op pieces, measured 2026-11-27). Kept: the issue's small
#: configs have one batch row, which the row split cannot share anyway.
PARALLEL_MIN_MACS = 1 << 21


def small_call(macs: int) -> bool:
    """Whether a call of ``macs`` multiply-adds runs on the caller alone, with no BLAS call.

    Every GEMM of such a call is smaller than the call, so matmul_rows runs it with
    jit.cpu.products.matmul, and the call skips blas_on_one_thread, whose setting and restoring
    of each BLAS's thread count cost 20 µs hot, 60 µs after an idle pause (measured, with
    all_finite's checks: S1 forward 0.70–0.85× the time, 2026-11-27).
    """
    return macs < PARALLEL_MIN_MACS


def threads_for(macs: int) -> int:
    """The threads worth using for a call of ``macs`` multiply-adds: the pool's, or for a small
    call just the caller. Forward needs nothing more (it makes no BLAS call); backward holds
    BLAS as well: call_threads."""
    return 1 if small_call(macs) else pool_threads()


@contextmanager
def call_threads(macs: int, largest_gemm_macs: int):
    """threads_for(macs), with every BLAS held to one thread per caller inside the block (see
    the module's docstring: Threads) when one of the call's GEMMs, the largest of which has
    ``largest_gemm_macs`` multiply-adds, reaches BLAS (matmul_rows: from PARALLEL_MIN_MACS).

    A call whose GEMMs all stay under that makes no BLAS call, so it has nothing to hold, even
    when the call as a whole is over it (an S1 lstm backward: 3.3M multiply-adds, its largest
    GEMM 0.8M). Holding anyway cost 35–40 µs of its 260 (measured, 2026-11-27).
    """
    n_threads = threads_for(macs)
    if small_call(largest_gemm_macs):
        yield n_threads
        return
    with blas_on_one_thread():
        yield n_threads


def kernel_threads(B: int, n_threads: int) -> int:
    """How many chunks of batch rows run the time loop in parallel."""
    return max(1, min(n_threads, B))


def split(n: int, parts: int):
    """[(start, stop)] cutting range(n) into ``parts`` contiguous, nearly equal pieces."""
    return [(k * n // parts, (k + 1) * n // parts) for k in range(parts)]


def run_on_row_chunks(kernel, *args, tiling: "Tiling", own=None):
    """Call ``kernel(*args, b0, b1)`` on the rows [b0, b1) of each tile (all units), in parallel;
    with ``own``, ``kernel(*args, own[k], b0, b1)`` for tile k (a scratch array per tile).

    For gru_classic's kernels, which take rows only (its tilings never split the units); the
    kernels write disjoint rows of their outputs. The other cells' take tiles: run_on_tiles.
    """
    assert not tiling.by_units
    run_in_parallel([(kernel, (*args, *_own_part(own, k), b0, b1)) for k, (b0, b1, _, _) in enumerate(tiling.tiles)])


def _own_part(own, k):
    """The arguments that only tile k gets: (own[k],), or none."""
    return () if own is None else (own[k],)


#: Hidden-unit slices are cut at multiples of this many units where H allows (one AVX2 vector
#: of float32), so each thread's pointwise loop runs on whole vectors.
UNIT_ALIGNMENT = 8


def unit_slices(H: int, parts: int):
    """[(j0, j1)] cutting range(H) into ``parts`` contiguous pieces, at multiples of UNIT_ALIGNMENT
    when H has at least that many per part."""
    if H < parts * UNIT_ALIGNMENT:
        return split(H, parts)
    blocks = -(-H // UNIT_ALIGNMENT)
    return [(min(H, b0 * UNIT_ALIGNMENT), min(H, b1 * UNIT_ALIGNMENT)) for b0, b1 in split(blocks, parts)]


#: Hidden size from which the threads of a call share the time loop by units rather than by rows.
UNIT_SPLIT_MIN_UNITS = 512


def split_by_units(H: int, n_threads: int) -> bool:
    """Whether the threads of a call share the time loop by hidden units rather than by rows.

    By rows, each thread runs its own rows without waiting, but reads all of W_hh at every
    step; by units, each reads only its share of W_hh (for all rows, so each weight serves
    more rows), and the threads wait for each other once per step (jit.cpu.sync, ~0.1 µs).
    Measured on the 2-core machine (fp32, T·B·H of the issue's configs) with the earlier
    LLVM-vectorised products, by units was 3–15% faster at H = 512 and 1024, where W_hh (4–16
    MiB for lstm) outgrows the caches, and 5–40% slower at H = 128 and 256; with the panel
    products (jit.cpu.products), at H = 128 and 256 it took 0.85–1.56× the row split's time,
    row by row: no gain, and each step then waits on the slower thread.
    """
    return n_threads > 1 and H >= max(UNIT_SPLIT_MIN_UNITS, n_threads)


class Tiling(NamedTuple):
    """How one call's threads share the time loop: tiles[k] = (b0, b1, j0, j1), the rows × units
    thread k runs the whole loop on; by_units: whether they split the units (and so wait)."""
    tiles: list
    by_units: bool


def tiling_for(cell: str, B: int, H: int, n_threads: int) -> Tiling:
    """The tiles of a call; gru_classic's kernels take rows only (see the README's jit-cpu section)."""
    if cell != "gru_classic" and split_by_units(H, n_threads):
        return Tiling([(0, B, j0, j1) for j0, j1 in unit_slices(H, n_threads)], True)
    return Tiling([(b0, b1, 0, H) for b0, b1 in split(B, kernel_threads(B, n_threads))], False)


def run_on_tiles(kernel, *args, tiling: Tiling, own=None):
    """Call ``kernel(*args, arrivals, n_waiting, b0, b1, j0, j1)`` for each tile, in parallel;
    with ``own``, ``kernel(*args, own[k], arrivals, ...)`` for tile k (a scratch array per tile).

    Tiles that split the units share one barrier counter (jit.cpu.sync); tiles that split
    the rows never wait (n_waiting = 1).
    """
    arrivals, n_waiting = new_arrivals(), (len(tiling.tiles) if tiling.by_units else 1)
    run_in_parallel([(kernel, (*args, *_own_part(own, k), arrivals, n_waiting, *tile))
                     for k, tile in enumerate(tiling.tiles)])


def projection_scratch(tiling: Tiling, T: int, G: int, dtype) -> np.ndarray:
    """Every tile's input projection (jit.cpu.products.project_inputs' out): [k] for tile k,
    (G, T·rows, columns), sized for the largest tile; one scratch array (jit.cpu.workspace)."""
    rows = max(b1 - b0 for b0, b1, _, _ in tiling.tiles)
    units = max(j1 - j0 for _, _, j0, j1 in tiling.tiles)
    return scratch("xw", (len(tiling.tiles), G, T * rows, panel_columns(units, dtype)), dtype)


def matmul_rows(a, b, n_threads: int):
    """a @ b with the rows of the result shared among n_threads threads (BLAS on one each),
    into a new array.

    Each element is one BLAS product over the whole inner dimension, and the split depends
    only on the shapes and the thread count, so repeat calls give the same bits. (A different
    split may round differently: OpenBLAS picks its kernels by the number of rows.)
    A product under PARALLEL_MIN_MACS runs on the caller with jit.cpu.products.matmul
    instead, so a small call makes no BLAS call (see small_call). There ``a`` may be a
    transposed C array (the weight gradients' daᵀ), which the panel kernel reads in place: its
    broadcasts per k are a row of the untransposed array, and the copy it saves cost half as
    much again as the product (S1 lstm, daᵀ 256×50: an 11 µs copy for a 21 µs product; measured,
    same bits).
    """
    if a.shape[0] * a.shape[1] * b.shape[1] < PARALLEL_MIN_MACS:
        return matmul(a if transposed_kernel_array(a) else kernel_array(a), kernel_array(b))
    out = np.empty((a.shape[0], b.shape[1]), np.result_type(a, b))
    parts = max(1, min(n_threads, a.shape[0]))
    run_in_parallel([(np.matmul, (a[r0:r1], b, out[r0:r1])) for r0, r1 in split(a.shape[0], parts)])
    return out


# ---- arrays --------------------------------------------------------------------------------

def kernel_array(a: np.ndarray) -> np.ndarray:
    """C-contiguous and writable (copied only if needed), so each dtype compiles one variant.

    Numba types read-only and non-contiguous arrays separately; the kernels never write to
    these arrays, so a copy keeps inputs untouched and the number of compiled kernels small.
    """
    if a.flags.c_contiguous and a.flags.writeable:
        return a
    return np.array(a, order="C", copy=True)


def transposed_kernel_array(a: np.ndarray) -> bool:
    """Whether ``a`` is the transpose of a kernel_array (F-contiguous and writable): the one
    other layout jit.cpu.products.matmul is compiled for (see matmul_rows)."""
    return a.ndim == 2 and a.flags.f_contiguous and not a.flags.c_contiguous and a.flags.writeable


@njit(cache=True, nogil=True, error_model="numpy")
def _all_finite_values(flat):
    """No NaN or ±inf in the 1-D array ``flat``: v − v is 0 exactly when v is finite.

    One pass with no temporary; the or-reduction of comparisons vectorises (2–4× faster than
    np.isfinite(a).all() on small arrays, 1.2–1.7× on megabytes; measured).
    """
    bad = False
    for i in range(flat.size):
        v = flat[i]
        bad |= not (v - v == 0)
    return not bad


def all_finite(a) -> bool:
    """The finiteness check of reference.contract's validation, for jit.cpu's calls."""
    if isinstance(a, np.ndarray) and a.flags.c_contiguous and a.dtype in DTYPES:
        return _all_finite_values(a.reshape(-1))
    return numpy_all_finite(a)


# ---- forward -------------------------------------------------------------------------------

def forward(cell, params, x, h0, c0=None, *, training=True):
    """Run the cell over x (T, B, I) from h0 (and c0 for lstm); see reference.contract."""
    shapes = check_forward_inputs(cell, params, x, h0, c0, isfinite=all_finite)
    T, B, I, H, G, _ = shapes
    return _forward(cell, params, x, h0, c0, training, shapes, threads_for(T * B * G * H * (I + H)))


def _forward(cell, params, x, h0, c0, training, shapes, n_threads):
    T, B, I, H, G, dtype = shapes
    lstm = cell == "lstm"
    hs = np.empty((T, B, H), dtype)
    h_n = np.empty((B, H), dtype)
    c_n = np.empty((B, H), dtype) if lstm else None
    keep = (T if training else 0, B, H)  # per-step storage only when training
    cs = np.empty(keep, dtype) if lstm else None
    gates = np.empty((keep[0], B, G * H), dtype)
    hns = np.empty(keep, dtype) if cell == "gru" else None
    if T == 0:
        h_n[:] = h0
        if lstm:
            c_n[:] = c0
    else:
        xk, w_ih, w_hh = kernel_array(x), kernel_array(params.w_ih), kernel_array(params.w_hh)
        b_ih, b_hh, h0k = kernel_array(params.b_ih), kernel_array(params.b_hh), kernel_array(h0)
        tiling = tiling_for(cell, B, H, n_threads)
        xw = projection_scratch(tiling, T, G, dtype)
        run = partial(run_on_tiles, tiling=tiling, own=xw)
        if lstm:
            run(lstm_forward_kernel, xk, w_ih, w_hh, b_ih + b_hh, h0k, kernel_array(c0), training,
                hs, cs, gates, h_n, c_n)
        elif cell == "gru":
            run(gru_forward_kernel, xk, w_ih, w_hh, b_ih, b_hh, h0k, training, hs, gates, hns, h_n)
        elif cell == "gru_classic":
            run_on_row_chunks(gru_classic_forward_kernel, xk, w_ih, w_hh[:2 * H], w_hh[2 * H:], b_ih, b_hh, h0k,
                              training, hs, gates, h_n, tiling=tiling, own=xw)
        else:
            run(rnn_forward_kernel, xk, w_ih, w_hh, b_ih + b_hh, h0k, cell == "rnn_relu", hs, h_n)
            if training:
                gates = np.empty_like(hs)  # for rnn_* the gate is the activation output itself
                copy_values(gates.reshape(-1), hs.reshape(-1))  # not hs.copy(): see copy_values
    if not training:
        return CPUForwardResult(hs, h_n, c_n, None, None)
    result = CPUForwardResult(hs, h_n, c_n, cs, gates)
    if hns is not None:
        result.hns = hns
    return result


# ---- backward ------------------------------------------------------------------------------

def previous_hidden(hs, h0):
    """h_{t-1} for every t, (T, B, H): h0 then hs[:-1], in a scratch array (jit.cpu.workspace).
    hs is C-contiguous (kernel_array)."""
    h_prev = scratch("h_prev", hs.shape, hs.dtype)
    if hs.shape[0]:
        h_prev[0] = h0
        copy_values(h_prev[1:].reshape(-1), hs[:-1].reshape(-1))
    return h_prev


@njit(cache=True, nogil=True, error_model="numpy")
def copy_values(dest, source):
    """dest[:] = source for flat arrays, as a compiled loop rather than NumPy's copy.

    glibc's memmove, which NumPy's copy calls, runs 12× slower when the destination lies 16
    bytes past the source modulo 4 KiB (measured on the 2-core Zen 3 guest: 400 KB in 135 µs,
    11 µs at any other offset; this loop 10–14 µs at every offset). h_prev[1:] landed just
    there against hs[:-1] at S2: two large arrays from glibc's mmap, each 16 bytes past a
    page, one step (B·H·4 = 8 KiB) apart; an S2 backward lost 120 µs to it.
    """
    for i in range(source.size):
        dest[i] = source[i]


def gru_hidden_terms(fwd, h0, w_hh, b_hh, H, n_threads):
    """hns = W_hn h_{t-1} + b_hn (T, B, H): from forward when it kept them, else one GEMM."""
    hns = getattr(fwd, "hns", None)
    if isinstance(hns, np.ndarray) and hns.shape == fwd.hs.shape and hns.dtype == fwd.hs.dtype:
        return kernel_array(hns)
    T, B, _ = fwd.hs.shape
    h_prev = previous_hidden(np.asarray(fwd.hs), h0).reshape(T * B, H)
    return (matmul_rows(h_prev, w_hh[2 * H:].T, n_threads) + b_hh[2 * H:]).reshape(T, B, H)


def weight_grad(da, inputs, n_threads):
    """daᵀ inputs: a weight's gradient summed over steps and rows, as one GEMM after the time
    loop. twin: reference.affine.affine_backward's dw, summed over t. da (T, B, G·H), inputs (T, B, K).
    """
    T, B, GH = da.shape
    return matmul_rows(da.reshape(T * B, GH).T, inputs.reshape(T * B, inputs.shape[2]), n_threads)


def bias_grad(da):
    """Σ da over steps and rows. twin: reference.affine.affine_backward's db, summed over t."""
    return da.reshape(-1, da.shape[2]).sum(axis=0)


def backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n=None):
    """Backpropagation through time; returns the gradients of L given ∂L/∂hs, ∂L/∂h_n, ∂L/∂c_n."""
    shapes = check_backward_inputs(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n, isfinite=all_finite)
    T, B, I, H, G, _ = shapes
    # The GEMMs after the loop: dx (T·B × G·H × I), dW_ih and dW_hh (G·H × T·B × I or H), and
    # for gru the recomputed W_hn h (T·B × H × H), the largest under T·B·G·H·max(I, H).
    with call_threads(2 * T * B * G * H * (I + H), T * B * G * H * max(I, H)) as n_threads:
        return _backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n, shapes, n_threads)


def _backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n, shapes, n_threads):
    T, B, I, H, G, dtype = shapes
    lstm = cell == "lstm"
    w_hh = kernel_array(params.w_hh)
    h0k, dh_nk, dhsk = kernel_array(h0), kernel_array(dh_n), kernel_array(dhs)
    hs, gates = kernel_array(fwd.hs), kernel_array(fwd.gates)
    dh0 = np.empty((B, H), dtype)
    dc0 = np.empty((B, H), dtype) if lstm else None
    da = scratch("da", (T, B, G * H), dtype)  # ∂L/∂(pre-activations), W_ih side; see jit.cpu.workspace
    da_h = da  # ∂L/∂(W_hh h + b_hh); differs from da for gru only
    h_side_inputs = None  # what W_hh multiplied at each step, when it is not h_{t-1}
    tiling = tiling_for(cell, B, H, n_threads)
    if T == 0:
        dh0[:] = dh_n
        if lstm:
            dc0[:] = 0 if dc_n is None else dc_n
    else:
        run = partial(run_on_tiles, tiling=tiling)
        if lstm:
            dc_nk = np.zeros((B, H), dtype) if dc_n is None else kernel_array(dc_n)
            run(lstm_backward_kernel, w_hh, kernel_array(c0), kernel_array(fwd.cs), gates, dhsk, dh_nk, dc_nk,
                da, dh0, dc0)
        elif cell == "gru":
            hns = gru_hidden_terms(fwd, h0k, w_hh, kernel_array(params.b_hh), H, n_threads)
            da_h = scratch("da_h", da.shape, dtype)
            run(gru_backward_kernel, w_hh, h0k, hs, gates, hns, dhsk, dh_nk, da, da_h, dh0)
        elif cell == "gru_classic":
            h_side_inputs = scratch("h_side_inputs", (T, B, H), dtype)  # r⊙h_{t-1}, filled by the kernel
            run_on_row_chunks(gru_classic_backward_kernel, w_hh[:2 * H], w_hh[2 * H:], h0k, hs,
                              gates, dhsk, dh_nk, da, h_side_inputs, dh0, tiling=tiling)
        else:
            run(rnn_backward_kernel, w_hh, hs, dhsk, dh_nk, cell == "rnn_relu", da, dh0)
    dx = matmul_rows(da.reshape(T * B, G * H), kernel_array(params.w_ih), n_threads).reshape(T, B, I)
    dw_ih, db_ih = weight_grad(da, x, n_threads), bias_grad(da)
    h_prev = previous_hidden(hs, h0k)
    # Where the same ∂L/∂a feeds both biases, db_hh is db_ih: lstm and rnn_* (da_h is da), and
    # gru_classic, whose W_hn output is not scaled by r.
    db_hh = db_ih.copy() if da_h is da else bias_grad(da_h)
    if h_side_inputs is None:
        dw_hh = weight_grad(da_h, h_prev, n_threads)
    else:  # gru_classic: the r, z rows multiplied h_{t-1}, the n rows r⊙h_{t-1}
        dw_hh = np.concatenate([weight_grad(da[:, :, :2 * H], h_prev, n_threads),
                                weight_grad(np.ascontiguousarray(da[:, :, 2 * H:]), h_side_inputs, n_threads)])
    return BackwardResult(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh)
