"""Correct backends that declare limits, and one that kills the process: the suite's fairness and
its crash isolation are checked against them (properties/test_suite_power.py).

``ForwardOnlyFloat32`` is the independent backend as a framework looks to the suite: forward only
(``backward = None``), float32 only (``dtypes``), no gates and no cs in its results, and no layers of
its own. It is correct within those limits, so the whole suite must pass it: nothing may fail
because of a declared limit.

``AbortsOnEmptyBatch`` is the independent backend with one fatal defect: B = 0 aborts the process
(SIGABRT), as some frameworks' kernels do. A verification run must report the test that died, with
its example, and go on with the rest.
"""
from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np

from .independent import PARAM_NAMES, IndependentCells


class ForwardOnlyFloat32:
    backward = None
    dtypes = frozenset({np.dtype(np.float32)})

    def __init__(self, name="forward_only_float32"):
        self.name = name
        self._cells = IndependentCells(name=name)
        self.cells = self._cells.cells

    def forward(self, cell, params, x, h0, c0=None, *, training=True):
        arrays = {"x": x, "h0": h0, "c0": c0, **{name: getattr(params, name, None) for name in PARAM_NAMES}}
        for argument, value in arrays.items():
            if getattr(value, "dtype", None) == np.float64:
                raise TypeError(f"{argument}: expected float32 (this backend has no float64); got float64")
        result = self._cells.forward(cell, params, x, h0, c0, training=training)
        return SimpleNamespace(hs=result.hs, h_n=result.h_n, c_n=result.c_n, cs=None, gates=None)


class AbortsOnEmptyBatch(IndependentCells):
    def forward(self, cell, params, x, h0, c0=None, *, training=True):
        if np.shape(x)[1:2] == (0,):
            os.abort()  # what a framework's kernel does on an empty batch; the suite must survive it
        return super().forward(cell, params, x, h0, c0, training=training)
