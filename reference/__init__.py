"""cellbench's ground truth: readable NumPy recurrent cells and the backend contract.

    reference.backend          the NumPy backend (a module that follows the contract)
    reference.layers           stacked, bidirectional, variable-length layers (and lstm projections)
                               composed from the cells; ``layers.composed(backend)`` for any backend
    reference.torch_backend    the PyTorch oracle (needs torch; imported on first access)
    reference.CELLS, Params, init_params, ForwardResult, BackwardResult
"""
from . import backend, layers
from .contract import CELLS, DTYPES, GATE_NAMES, NUM_GATES, BackwardResult, ForwardResult, Params
from .init import init_params

__all__ = ["CELLS", "DTYPES", "GATE_NAMES", "NUM_GATES", "BackwardResult", "ForwardResult", "Params",
           "backend", "init_params", "layers", "torch_backend"]


def __getattr__(attr):
    # torch is optional and heavy: import the oracle only when someone asks for it.
    if attr == "torch_backend":
        import importlib
        return importlib.import_module(".torch_backend", __name__)
    raise AttributeError(f"module 'reference' has no attribute {attr!r}")
