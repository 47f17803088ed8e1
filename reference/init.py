"""PyTorch's default initialisation of recurrent weights: every entry U(−1/√H, 1/√H)."""
import numpy as np

from .contract import DTYPES, NUM_GATES, Params, check_cell


def init_params(cell, input_size, hidden_size, dtype=np.float32, seed=0) -> Params:
    """Draw w_ih (G·H, I), w_hh (G·H, H), b_ih, b_hh (G·H,) from U(−1/√H, 1/√H).

    The same distribution as torch.nn.RNN/LSTM/GRU, not the same numbers: the draw uses
    NumPy's generator seeded with ``seed``, in float64, then rounds once to ``dtype``.
    """
    check_cell(cell)
    for name, size in (("input_size", input_size), ("hidden_size", hidden_size)):
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
            raise TypeError(f"{name}: expected an int; got {type(size).__name__}")
    if input_size < 1 or hidden_size < 1:
        raise ValueError(f"input_size, hidden_size: expected ≥ 1; got {input_size}, {hidden_size}")
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype: expected float32 or float64; got {dtype!r}") from None
    if dtype not in DTYPES:
        raise TypeError(f"dtype: expected float32 or float64; got {dtype}")
    rng = np.random.default_rng(seed)
    bound = 1 / np.sqrt(hidden_size)
    rows = NUM_GATES[cell] * hidden_size

    def draw(*shape):
        return rng.uniform(-bound, bound, shape).astype(dtype)

    return Params(draw(rows, input_size), draw(rows, hidden_size), draw(rows), draw(rows))
