"""What the benchmarks measure: the configs, the matrices of cases, and the work formulas.

One job: describe each benchmark case (backend × cell × config × mode × dtype) and the
napkin math that goes with it (FLOPs and compulsory bytes), so that the benchmark suite,
the reports and the tests agree on one definition.

Shapes: T time steps, B batch rows, I input features, H hidden units, G gate blocks.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from reference.contract import CELLS, NUM_GATES


class Config(NamedTuple):
    name: str
    T: int
    B: int
    I: int
    H: int
    sweep: str = ""  # "T", "B" or "H" for the points of a scaling sweep, else ""


#: The named configs of the jit/cpu issue: small batch-1 latency up to DeepBench-sized layers.
CONFIGS = {
    "S1": Config("S1", 50, 1, 64, 64),
    "S2": Config("S2", 50, 16, 128, 128),
    "M": Config("M", 50, 32, 256, 256),
    "L1": Config("L1", 25, 64, 512, 512),
    "L2": Config("L2", 25, 16, 1024, 1024),
}

#: Scaling sweeps around S2 (T=50, B=16, I=H=128): one size varies, the others stay put.
SWEEP_BASE = CONFIGS["S2"]
SWEEP_POINTS = {"T": (10, 25, 50, 100, 200), "B": (1, 4, 16, 64, 128), "H": (32, 64, 128, 256, 512)}


def sweep_configs(axes=("T", "B", "H"), points=SWEEP_POINTS) -> list[Config]:
    configs = []
    for axis in axes:
        for value in points[axis]:
            sizes = dict(T=SWEEP_BASE.T, B=SWEEP_BASE.B, I=SWEEP_BASE.I, H=SWEEP_BASE.H)
            sizes[axis] = value
            if axis == "H":
                sizes["I"] = value  # the named configs keep I = H; the H sweep does too
            configs.append(Config(f"sweep{axis}={value}", sweep=axis, **sizes))
    return configs


MODES = ("inference", "training")
DTYPES = ("float32", "float64")


class Group(NamedTuple):
    """A block of a matrix: every cell × config × mode × dtype listed (the backends are chosen apart)."""
    cells: tuple
    configs: tuple  # of Config
    modes: tuple
    dtypes: tuple


NAMED = tuple(CONFIGS.values())
TARGET_CELLS = ("lstm", "gru", "rnn_tanh")  # the cells the jit issues set speed targets for

#: The matrices a run can ask for, each a list of groups.
#: `default` keeps `cellbench run` (property suite included) near 5 minutes on 2 cores: the target
#: cells at S1..L1 in both modes, L2 in inference only (its training alone would take over a minute
#: with the reference), fp32, and a short sweep per axis for lstm inference.
#: `full` (`cellbench run --full`) is every cell, config, mode and dtype, and every sweep point.
#: `smoke` is for the tests: one tiny config and a three-point T sweep.
MATRICES = {
    "smoke": [Group(("lstm",), (Config("tiny", 4, 2, 3, 5),), MODES, ("float32",)),
              Group(("lstm",), tuple(sweep_configs(("T",), {"T": (2, 4, 8)})), ("inference",), ("float32",))],
    "default": [Group(TARGET_CELLS, NAMED[:4], MODES, ("float32",)),
                Group(TARGET_CELLS, NAMED[4:], ("inference",), ("float32",)),
                Group(("lstm",), tuple(sweep_configs(("T", "B", "H"), {"T": (10, 50, 200), "B": (1, 16, 128),
                                                                        "H": (32, 128, 512)})),
                      ("inference",), ("float32",))],
    "full": [Group(CELLS, NAMED, MODES, DTYPES),
             Group(TARGET_CELLS, tuple(sweep_configs()), MODES, ("float32",))],
}


class Case(NamedTuple):
    backend: str
    cell: str
    config: Config
    mode: str
    dtype: str

    @property
    def id(self) -> str:
        return f"{self.backend}-{self.cell}-{self.config.name}-{self.mode}-{self.dtype}"


def cases(matrix_name: str, backends: dict, cells=None) -> list[Case]:
    """Every case of a matrix, skipping cells a backend does not support.

    Ordered config → cell → mode → dtype → backend, so that the backends of one case run
    back to back and share their float64 reference result.
    """
    found = []
    for group_cells, configs, modes, dtypes in MATRICES[matrix_name]:
        for config in configs:
            for cell in group_cells:
                if cells is not None and cell not in cells:
                    continue
                for mode in modes:
                    for dtype in dtypes:
                        for name, backend in backends.items():
                            if cell in backend.cells:
                                found.append(Case(name, cell, config, mode, dtype))
    return found


# ---------------------------------------------------------------------------------------------
# Napkin math
# ---------------------------------------------------------------------------------------------

#: Pointwise FLOPs per hidden unit per step, counting each add, multiply and activation as one:
#:   rnn_*: 2 bias adds + 1 add of the two products + 1 activation                         = 4
#:   lstm:  4 gates × (2 bias adds + 1 add + 1 activation) + c' = f⊙c + i⊙g (3)
#:          + tanh(c') (1) + o⊙tanh(c') (1)                                                 = 21
#:   gru:   3 gates × (2 bias adds + 1 activation) + r and z adds (2) + r⊙(W_hn h + b_hn) (1)
#:          + n's add (1) + h' = (1−z)⊙n + z⊙h (4)                                          = 17
#:   gru_classic: as gru, with r⊙h (1) in place of r⊙(·) (1)                               = 17
POINTWISE_FLOPS = {"rnn_tanh": 4, "rnn_relu": 4, "lstm": 21, "gru": 17, "gru_classic": 17}


def flops(cell: str, T: int, B: int, I: int, H: int, mode: str) -> int:
    """FLOPs of one call.

    forward   = 2·T·B·G·H·(I+H)  (the input and recurrent matrix products, a multiply-add = 2)
              + T·B·H·POINTWISE_FLOPS[cell]
    training  = 3 × forward      (backward does two products per forward product: dX and dW)
    """
    G = NUM_GATES[cell]
    forward = 2 * T * B * G * H * (I + H) + T * B * H * POINTWISE_FLOPS[cell]
    return forward if mode == "inference" else 3 * forward


def bytes_moved(cell: str, T: int, B: int, I: int, H: int, mode: str, itemsize: int) -> int:
    """Compulsory memory traffic of one call, in bytes: every array read or written once.

    inference: read x (T·B·I), the weights (G·H·(I+H) + 2·G·H) and h0 (and c0); write hs (T·B·H)
               and h_n (and c_n).
    training:  forward as above, plus writing the gates (T·B·G·H) and, for lstm, cs (T·B·H);
               backward reads x, hs, gates (and cs), dhs and the weights again, and writes dx and
               the four weight gradients.
    """
    G = NUM_GATES[cell]
    states = 2 if cell == "lstm" else 1
    weights = G * H * (I + H) + 2 * G * H
    inference = T * B * I + weights + 2 * states * B * H + T * B * H
    if mode == "inference":
        return inference * itemsize
    cs = T * B * H if cell == "lstm" else 0
    forward_saved = T * B * G * H + cs
    backward = (T * B * I + T * B * H + forward_saved + T * B * H + weights  # reads: x, hs, saved, dhs, W
                + T * B * I + weights + 2 * states * B * H)                    # writes: dx, dW, dh0 (dc0)
    return (inference + forward_saved + backward) * itemsize


def itemsize(dtype: str) -> int:
    return np.dtype(dtype).itemsize
