"""The layer benchmarks: stacked, bidirectional layers over rows of different lengths, jit.cpu's
layer_forward / layer_backward against torch.nn's RNN / LSTM / GRU, one pytest-benchmark test per
backend × cell × config × mode (float32).

    pytest reports/benchmarks/bench_layers.py --benchmark-json=OUT.json
        [--bench-matrix smoke|default|full] [--bench-backend jit.cpu --bench-backend torch.nn] [--bench-cell CELL ...]

Each case is NUM_LAYERS layers, bidirectional, at S2, M and L1 (reports.matrix's sizes, I = H), its
row lengths drawn uniformly in [T/2, T] with a fixed seed (LENGTHS_SEED). Both libraries get the
same padded input, x (T, B, I) and the lengths, and give back the same padded output:
    jit.cpu   layer_forward(training=False); training: layer_forward + layer_backward
    torch.nn  pack_padded_sequence(x, lengths, enforce_sorted=False), the module, pad_packed_sequence
              back to (T, B, 2H), under torch.no_grad(); training: autograd's gradients of
              L = Σ dhs⊙hs with respect to x, h0 (, c0) and every weight
torch's packing is inside its timed call, as it is inside every call of a model fed padded batches.

The conventions are bench_cells.py's: the first call timed apart (first_call_s), its output checked
against the float64 reference (reference.layers), a pause, one untimed call, then pytest-benchmark's
rounds; ids `<backend>-<cell>-<config>-<mode>-float32`, groups `<cell>-<config>-<mode>-float32`,
with config `S2-layers`, `M-layers`, `L1-layers` (the cells' configs are S2, M, L1), and extra_info
with reports.results' fields plus layers, directions, lengths and valid_steps. FLOPs count only the
valid steps (Σ lengths per layer-direction), as a packed sequence runs them.
"""
import functools
import time
import zlib
from typing import NamedTuple

import numpy as np
import pytest

import reference
import reference.layers
from reports.benchmarks.bench_cells import error_summary
from reports.matrix import CONFIGS, bytes_moved, flops
from reports.results import SCHEMA  # reports refuse a JSON whose benchmarks lack it

NUM_LAYERS = 2
BIDIRECTIONAL = True
#: The seed of every case's row lengths (and, through the case's name, of its inputs).
LENGTHS_SEED = 0
#: The cells with speed targets (reports.matrix.TARGET_CELLS), in the layer configs of issue 24.
CELLS = ("lstm", "gru", "rnn_tanh")
LAYER_CONFIGS = {"smoke": ("tiny",), "default": ("S2", "M", "L1"), "full": ("S2", "M", "L1")}
#: The smoke matrix's config, for the tests of the benchmark itself: (T, B, I = H).
TINY = (4, 3, 5)
MODES = ("inference", "training")
DTYPE = "float32"
#: The implementations timed: jit.cpu's native layers and PyTorch's modules.
BACKENDS = ("jit.cpu", "torch.nn")
#: As bench_cells.SETTLE_S: a pause before the timed calls, so that the previous case's idle threads
#: (OpenBLAS's ~0.1 s, torch's OpenMP 8–10 ms) have stopped.
SETTLE_S = 0.15


class Sizes(NamedTuple):
    name: str  # "S2-layers", ...
    T: int
    B: int
    I: int
    H: int


class LayerCase(NamedTuple):
    backend: str
    cell: str
    sizes: Sizes
    mode: str
    dtype: str = DTYPE

    @property
    def id(self) -> str:
        return f"{self.backend}-{self.cell}-{self.sizes.name}-{self.mode}-{self.dtype}"


def layer_sizes(config: str) -> Sizes:
    if config == "tiny":
        T, B, I = TINY
        return Sizes("tiny-layers", T, B, I, I)
    c = CONFIGS[config]
    return Sizes(f"{config}-layers", c.T, c.B, c.I, c.H)


def layer_cases(matrix: str, backends, cells=None) -> list:
    """Every case of the matrix for the backends named (those of BACKENDS), config → cell → mode → backend."""
    return [LayerCase(backend, cell, layer_sizes(config), mode)
            for config in LAYER_CONFIGS[matrix] for cell in CELLS if cells is None or cell in cells
            for mode in MODES for backend in BACKENDS if backend in backends]


def pytest_generate_tests(metafunc):
    if "layer_case" not in metafunc.fixturenames:
        return
    config = metafunc.config
    named = config.getoption("--bench-backend")
    found = layer_cases(config.getoption("--bench-matrix"), named or BACKENDS, config.getoption("--bench-cell"))
    metafunc.parametrize("layer_case", found, ids=[c.id for c in found])


def row_lengths(T: int, B: int) -> np.ndarray:
    """(B,) lengths drawn uniformly in [T/2, T] (integers, ⌈T/2⌉ … T), the same in every run."""
    return np.random.default_rng(LENGTHS_SEED).integers(-(-T // 2), T, size=B, endpoint=True)


@functools.lru_cache(maxsize=4)
def layer_inputs(cell: str, sizes: Sizes):
    """(params, x, h0, c0, dhs, lengths) in float64, every value exactly representable in float32:
    PyTorch's init for each layer-direction, inputs N(0, 1), states N(0, 0.1²)."""
    rng = np.random.default_rng(zlib.crc32(f"layers-{cell}-{sizes}".encode()))
    D = 2 if BIDIRECTIONAL else 1
    L, T, B, I, H = NUM_LAYERS, sizes.T, sizes.B, sizes.I, sizes.H

    def f32_exact(a):
        return a.astype(np.float32).astype(np.float64)
    params = tuple(reference.Params(*(f32_exact(a) for a in reference.init_params(
        cell, I if k < D else D * H, H, dtype=np.float64, seed=int(rng.integers(2 ** 31))))) for k in range(L * D))
    x = f32_exact(rng.standard_normal((T, B, I)))
    h0 = f32_exact(0.1 * rng.standard_normal((L * D, B, H)))
    c0 = f32_exact(0.1 * rng.standard_normal((L * D, B, H))) if cell == "lstm" else None
    dhs = f32_exact(rng.standard_normal((T, B, D * H)))
    return params, x, h0, c0, dhs, row_lengths(T, B)


def as_float32(inputs):
    params, x, h0, c0, dhs, lengths = inputs
    cast = (lambda a: None if a is None else np.ascontiguousarray(a, dtype=np.float32))
    return tuple(reference.Params(*(cast(a) for a in p)) for p in params), cast(x), cast(h0), cast(c0), cast(dhs), \
        lengths


def compared(mode, hs, h_n, grads=None) -> dict:
    """The outputs checked against the reference: hs and h_n, and in training dx, dh0 and every
    layer-direction's weight gradients."""
    arrays = {"hs": hs, "h_n": h_n}
    if mode == "training":
        arrays.update(grads)
    return {k: np.asarray(v, np.float64) for k, v in arrays.items()}


def gradient_arrays(dx, dh0, weight_grads) -> dict:
    """{dx, dh0, dparams[k].dw_ih, ...} from per layer-direction (dw_ih, dw_hh, db_ih, db_hh)."""
    named = {"dx": dx, "dh0": dh0}
    for k, per_direction in enumerate(weight_grads):
        named.update({f"dparams[{k}].{f}": g for f, g in zip(("dw_ih", "dw_hh", "db_ih", "db_hh"), per_direction)})
    return named


def contract_call(layers, cell, mode, inputs):
    """The timed call on a backend with layer_forward / layer_backward, and its compared arrays."""
    params, x, h0, c0, dhs, lengths = inputs
    params = list(params)
    dh_n = np.zeros_like(h0)

    def inference():
        return (layers.layer_forward(cell, params, x, h0, c0, bidirectional=BIDIRECTIONAL, lengths=lengths,
                                     training=False),)

    def training():
        fwd = layers.layer_forward(cell, params, x, h0, c0, bidirectional=BIDIRECTIONAL, lengths=lengths)
        return fwd, layers.layer_backward(cell, params, x, h0, c0, fwd, dhs, dh_n, bidirectional=BIDIRECTIONAL,
                                          lengths=lengths)

    def to_numpy(result):
        grads = None
        if mode == "training":
            g = result[1]
            grads = gradient_arrays(g.dx, g.dh0, [(d.dw_ih, d.dw_hh, d.db_ih, d.db_hh) for d in g.dparams])
        return compared(mode, result[0].hs, result[0].h_n, grads)

    return (inference if mode == "inference" else training), to_numpy


def torch_call(cell, mode, inputs):
    """The timed call of torch.nn with the same weights (reference.torch_backend.make_layer_module),
    the input packed and the output padded back inside it; and its compared arrays."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from reference.torch_backend import layer_weights, make_layer_module

    params, x, h0, c0, dhs, lengths = inputs
    shapes = reference.layers.check_layer_forward_inputs(cell, list(params), x, h0, c0, BIDIRECTIONAL, lengths)
    module = make_layer_module(cell, params, shapes)
    weights = [w for per_direction in layer_weights(module, shapes) for w in per_direction.values()]
    training = mode == "training"
    tx = torch.from_numpy(x).requires_grad_(training)
    th0 = torch.from_numpy(h0).requires_grad_(training)
    tc0 = torch.from_numpy(c0).requires_grad_(training) if c0 is not None else None
    tlengths = torch.as_tensor(lengths, dtype=torch.int64)
    tdhs = torch.from_numpy(dhs)
    T = x.shape[0]

    def run():
        out, state = module(pack_padded_sequence(tx, tlengths, enforce_sorted=False),
                            (th0, tc0) if tc0 is not None else th0)
        hs, _ = pad_packed_sequence(out, total_length=T)
        return hs, (state[0] if tc0 is not None else state)

    def inference():
        with torch.no_grad():
            return run()

    def train():
        hs, h_n = run()
        leaves = [tx, th0] + ([tc0] if tc0 is not None else []) + weights
        return hs.detach(), h_n.detach(), torch.autograd.grad((hs * tdhs).sum(), leaves)

    def to_numpy(result):
        grads = None
        if training:
            g = [t.numpy() for t in result[2]]
            per_direction = g[3 if tc0 is not None else 2:]
            grads = gradient_arrays(g[0], g[1], [per_direction[i:i + 4] for i in range(0, len(per_direction), 4)])
        return compared(mode, result[0].numpy(), result[1].numpy(), grads)

    return (train if training else inference), to_numpy


@functools.lru_cache(maxsize=2)
def reference_result(cell, sizes, mode):
    call, to_numpy = contract_call(reference.layers.REFERENCE, cell, mode, layer_inputs(cell, sizes))
    return to_numpy(call())


def errors_against_reference(case, got):
    """Max and mean absolute error over all compared outputs, and the max error relative to max|ref|."""
    return error_summary(reference_result(case.cell, case.sizes, case.mode), got)


def work(cell, sizes: Sizes, lengths, mode):
    """(FLOPs, bytes) of one call: per layer-direction, the cell's count (reports.matrix) over the
    valid steps only, Σ lengths (a cell's count is proportional to T·B)."""
    D = 2 if BIDIRECTIONAL else 1
    valid = int(np.sum(lengths))
    widths = [sizes.I] + [D * sizes.H] * (NUM_LAYERS - 1)
    total_flops = sum(D * flops(cell, 1, valid, width, sizes.H, mode) for width in widths)
    total_bytes = sum(D * bytes_moved(cell, 1, valid, width, sizes.H, mode, np.dtype(DTYPE).itemsize)
                      for width in widths)
    return total_flops, total_bytes


def test_layer(benchmark, layer_case):
    case = layer_case
    inputs = as_float32(layer_inputs(case.cell, case.sizes))
    if case.backend == "torch.nn":
        pytest.importorskip("torch")
        call, to_numpy = torch_call(case.cell, case.mode, inputs)
    else:
        from jit.cpu import backend
        call, to_numpy = contract_call(backend, case.cell, case.mode, inputs)

    start = time.perf_counter()
    first = call()
    first_call_s = time.perf_counter() - start

    sizes, lengths = case.sizes, inputs[-1]
    D = 2 if BIDIRECTIONAL else 1
    case_flops, case_bytes = work(case.cell, sizes, lengths, case.mode)
    benchmark.group = f"{case.cell}-{sizes.name}-{case.mode}-{case.dtype}"
    benchmark.extra_info.update({
        "schema": SCHEMA,
        "backend": case.backend,
        "cell": case.cell,
        "config": sizes.name,
        "sweep": "",
        "mode": case.mode,
        "dtype": case.dtype,
        "T": sizes.T, "B": sizes.B, "I": sizes.I, "H": sizes.H,
        "layers": NUM_LAYERS, "directions": D, "lengths": [int(n) for n in lengths],
        "valid_steps": int(np.sum(lengths)),
        "shapes": {"x": [sizes.T, sizes.B, sizes.I], "h0": [NUM_LAYERS * D, sizes.B, sizes.H],
                   "hs": [sizes.T, sizes.B, D * sizes.H]},
        "flops": case_flops,
        "bytes": case_bytes,
        "first_call_s": first_call_s,
        **errors_against_reference(case, to_numpy(first)),
    })
    time.sleep(SETTLE_S)
    call()
    benchmark(call)
