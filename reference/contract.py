"""The backend contract: the cells, the parameter and result records, and input validation.

Every backend in the project (and any third-party one) follows this contract; the
validation here is shared so that every backend rejects the same bad input with the
same message, before any computation.

Shapes, everywhere in cellbench:
    T  time steps, B  batch rows, I  input features, H  hidden units, G  gate blocks.
    x (T, B, I), h0 / c0 (B, H), w_ih (G·H, I), w_hh (G·H, H), b_ih / b_hh (G·H,).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

#: The cells, in the order reports list them.
CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru", "gru_classic")

#: Gate blocks of each cell, in PyTorch's row order of w_ih / w_hh.
GATE_NAMES = {
    "rnn_tanh": ("h",),
    "rnn_relu": ("h",),
    "lstm": ("i", "f", "g", "o"),
    "gru": ("r", "z", "n"),
    "gru_classic": ("r", "z", "n"),
}
NUM_GATES = {cell: len(names) for cell, names in GATE_NAMES.items()}

#: The floating dtypes every backend supports; anything else is a TypeError.
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class Params(NamedTuple):
    """Weights in PyTorch's layout, so that ``torch.nn.LSTM(...).weight_ih_l0`` loads as it is."""

    w_ih: np.ndarray  # (G·H, I)
    w_hh: np.ndarray  # (G·H, H)
    b_ih: np.ndarray  # (G·H,)
    b_hh: np.ndarray  # (G·H,)


class ForwardResult(NamedTuple):
    hs: np.ndarray  # (T, B, H) hidden state after each step
    h_n: np.ndarray  # (B, H) last hidden state (h0 when T = 0)
    c_n: Optional[np.ndarray]  # (B, H) last cell state, lstm only
    cs: Optional[np.ndarray]  # (T, B, H) cell states, lstm with training=True only
    gates: Optional[np.ndarray]  # (T, B, G·H) post-activation gates, training=True only


class BackwardResult(NamedTuple):
    dx: np.ndarray  # (T, B, I)
    dh0: np.ndarray  # (B, H)
    dc0: Optional[np.ndarray]  # (B, H), lstm only
    dw_ih: np.ndarray  # (G·H, I)
    dw_hh: np.ndarray  # (G·H, H)
    db_ih: np.ndarray  # (G·H,)
    db_hh: np.ndarray  # (G·H,)


class Shapes(NamedTuple):
    T: int
    B: int
    I: int
    H: int
    G: int
    dtype: np.dtype


PARAM_NAMES = ("w_ih", "w_hh", "b_ih", "b_hh")


def check_cell(cell, supported=CELLS) -> str:
    if not isinstance(cell, str):
        raise TypeError(f"cell: expected a str, one of {', '.join(supported)}; got {type(cell).__name__}")
    if cell not in supported:
        raise ValueError(f"cell: expected one of {', '.join(supported)}; got {cell!r}")
    return cell


def _describe(a) -> str:
    shape = getattr(a, "shape", None)
    dtype = getattr(a, "dtype", None)
    if shape is None:
        return type(a).__name__
    return f"{type(a).__name__} of shape {tuple(shape)} and dtype {dtype}"


def _check_array(name: str, a, ndim: int, array_types) -> None:
    if a is None:
        raise TypeError(f"{name}: expected an array with {ndim} dimensions; got None")
    if not isinstance(a, array_types) and not hasattr(a, "__cuda_array_interface__"):
        raise TypeError(f"{name}: expected a numpy.ndarray; got {_describe(a)}")
    if np.dtype(a.dtype) not in DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64; got {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions; got shape {tuple(a.shape)} ({a.ndim} dimensions)")


def _check_same_dtype(named_arrays) -> np.dtype:
    dtypes = {name: np.dtype(a.dtype) for name, a in named_arrays if a is not None}
    first_name, first = next(iter(dtypes.items()))
    for name, dtype in dtypes.items():
        if dtype != first:
            raise TypeError(
                f"{name}: expected dtype {first} like {first_name} (dtypes must not be mixed); got {dtype}"
            )
    return first


def _check_shape(name: str, a, expected: tuple, meaning: str) -> None:
    if tuple(a.shape) != expected:
        raise ValueError(f"{name}: expected shape {expected} ({meaning}); got {tuple(a.shape)}")


def _check_finite(name: str, a, isfinite) -> None:
    if isfinite(a):
        return
    where = ""
    if isinstance(a, np.ndarray):
        bad = ~np.isfinite(a)
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        where = f" ({int(bad.sum())} of {a.size} values; first {a[first]} at index {first})"
    raise ValueError(f"{name}: expected finite values; got NaN or inf{where}")


def numpy_all_finite(a) -> bool:
    return bool(np.isfinite(a).all())


# ---- signatures that passed ---------------------------------------------------------------
# The structure checks (types, ndim, dtypes, shapes) read nothing of an array but its type,
# dtype and shape, so their verdict on a call is their verdict on its signature. A training loop
# calls with one signature over and over, and for small calls the checks' Python is a real part
# of the time (jit.cpu, lstm S1 training: 19 of 250 µs, Zen 4); a signature that passed is
# remembered, and only the values (finiteness) are checked again. Only exact array_types are
# keyed (a subclass could answer differently); a signature that failed is never remembered.

_passed_signatures = {}
#: Remembered signatures at most; past that the memo starts over (a training loop has a few).
PASSED_SIGNATURES_MAX = 256


def _signature(kind, cell, options, arrays, array_types):
    """A hashable key naming everything the structure checks of ``kind`` read, or None when an
    argument is of a type the memo does not key (the checks then run in full)."""
    if type(cell) is not str:
        return None
    key = [kind, cell, options]
    for a in arrays:
        if a is None:
            key.append(None)
        elif type(a) in array_types:
            key.append((a.dtype, a.shape))
        else:
            return None
    try:
        hash(key := tuple(key))
    except TypeError:  # an option a caller passed as a list, say
        return None
    return key


def _remember(key, shapes) -> None:
    if key is None:
        return
    if len(_passed_signatures) >= PASSED_SIGNATURES_MAX:
        _passed_signatures.clear()
    _passed_signatures[key] = shapes


def check_forward_inputs(cell, params, x, h0, c0, *, supported=CELLS, array_types=(np.ndarray,),
                         isfinite=numpy_all_finite, all_finite_together=None) -> Shapes:
    """Validate forward's arguments and return their sizes; raise TypeError or ValueError.

    Everything is checked before any computation: the cell, the type, ndim and dtype of
    each array, the sizes T, B, I, H across arrays, that params fit this cell's G, that c0
    is given exactly for lstm, and that no value is NaN or inf.

    ``isfinite(a)``: whether array ``a`` holds no NaN or inf. ``all_finite_together(arrays)``, if
    given: the same for a list of arrays at once (of the call's one float dtype), one call where
    the call's arrays are small and a call per array costs more than the check (jit.cpu); where it
    says no, ``isfinite`` finds the array to name.
    """
    named = (("x", x), ("h0", h0), ("c0", c0), *((f"params.{p}", getattr(params, p, None)) for p in PARAM_NAMES))
    key = _signature("forward", cell, (supported, array_types), [a for _, a in named], array_types)
    shapes = _passed_signatures.get(key) if key is not None else None
    if shapes is None:
        shapes = _check_forward_structure(cell, params, x, h0, c0, supported, array_types)
        _remember(key, shapes)
    _check_all_finite(named, isfinite, all_finite_together)
    return shapes


def _check_all_finite(named_arrays, isfinite, all_finite_together=None) -> None:
    if all_finite_together is not None and all_finite_together([a for _, a in named_arrays if a is not None]):
        return
    for name, a in named_arrays:
        if a is not None:
            _check_finite(name, a, isfinite)


def _check_forward_structure(cell, params, x, h0, c0, supported, array_types) -> Shapes:
    """check_forward_inputs' checks of everything but the values."""
    check_cell(cell, supported)
    for pname in PARAM_NAMES:
        if not hasattr(params, pname):
            raise TypeError(
                f"params: expected an object with attributes {', '.join(PARAM_NAMES)}; "
                f"got {type(params).__name__} without {pname!r}"
            )
    w_ih, w_hh, b_ih, b_hh = (getattr(params, p) for p in PARAM_NAMES)
    _check_array("x", x, 3, array_types)
    _check_array("h0", h0, 2, array_types)
    if cell == "lstm":
        if c0 is None:
            raise TypeError("c0: expected an array of shape (B, H) for lstm; got None")
        _check_array("c0", c0, 2, array_types)
    elif c0 is not None:
        raise TypeError(f"c0: expected None for {cell} (only lstm has a cell state); got {_describe(c0)}")
    for pname, a, ndim in (("params.w_ih", w_ih, 2), ("params.w_hh", w_hh, 2),
                           ("params.b_ih", b_ih, 1), ("params.b_hh", b_hh, 1)):
        _check_array(pname, a, ndim, array_types)
    dtype = _check_same_dtype([("x", x), ("h0", h0), ("c0", c0), ("params.w_ih", w_ih),
                               ("params.w_hh", w_hh), ("params.b_ih", b_ih), ("params.b_hh", b_hh)])

    T, B, I = x.shape
    H = h0.shape[1]
    G = NUM_GATES[cell]
    _check_shape("h0", h0, (B, H), "B from x.shape[1]")
    if c0 is not None:
        _check_shape("c0", c0, (B, H), "the shape of h0")
    rows = w_hh.shape[0]
    if rows != G * H:
        other = [c for c in CELLS if NUM_GATES[c] * H == rows]
        hint = f", which fits {other[0]} (G={NUM_GATES[other[0]]})" if other else ""
        raise ValueError(
            f"params.w_hh: expected {G}·H = {G * H} rows for {cell} (G={G}, H={H} from h0); "
            f"got shape {tuple(w_hh.shape)}{hint}"
        )
    _check_shape("params.w_hh", w_hh, (G * H, H), f"G·H, H for {cell}")
    _check_shape("params.w_ih", w_ih, (G * H, I), f"G·H, I for {cell}, I from x.shape[2]")
    _check_shape("params.b_ih", b_ih, (G * H,), f"G·H for {cell}")
    _check_shape("params.b_hh", b_hh, (G * H,), f"G·H for {cell}")
    return Shapes(T, B, I, H, G, dtype)


def trace_fields(cell) -> tuple:
    """The fields of forward's result that a backward reading its trace checks by default: all a
    training forward keeps (hs, gates, and cs for lstm)."""
    return ("hs", "gates") + (("cs",) if cell == "lstm" else ())


def check_backward_inputs(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n, *, supported=CELLS,
                          array_types=(np.ndarray,), isfinite=numpy_all_finite, all_finite_together=None,
                          fwd_fields=None) -> Shapes:
    """Validate backward's arguments: those of forward, plus fwd and the upstream gradients.

    ``fwd_fields``: the fields of fwd this backward reads (default: hs, gates, and cs for lstm, all a
    training forward keeps), each checked as an argument: an array of x's dtype, of forward's shape,
    finite. A backward that recomputes the forward pass (a framework's autodiff) reads none:
    ``fwd_fields=()``."""
    shapes = check_forward_inputs(cell, params, x, h0, c0, supported=supported, array_types=array_types,
                                  isfinite=isfinite, all_finite_together=all_finite_together)
    if fwd_fields is None:
        fwd_fields = trace_fields(cell)
    fwd_arrays = [(f"fwd.{attr}", getattr(fwd, attr, None)) for attr in fwd_fields]
    named = (("dhs", dhs), ("dh_n", dh_n), ("dc_n", dc_n), *fwd_arrays)
    key = _signature("backward", cell, (supported, array_types, tuple(fwd_fields), shapes),
                     [a for _, a in named], array_types)
    if key is None or key not in _passed_signatures:
        _check_backward_structure(cell, x, fwd, fwd_arrays, dhs, dh_n, dc_n, shapes, array_types)
        _remember(key, shapes)
    _check_all_finite(named, isfinite, all_finite_together)
    return shapes


def _check_backward_structure(cell, x, fwd, fwd_arrays, dhs, dh_n, dc_n, shapes, array_types) -> None:
    """check_backward_inputs' checks of what forward's do not cover, but the values."""
    T, B, I, H, G, dtype = shapes
    # What backward reads of forward's trace is an input like any other: a kernel indexes it by
    # T, B, H and G, so a trace of another shape or dtype would be read out of bounds.
    for name, a in fwd_arrays:
        if a is None:
            raise ValueError(
                f"fwd: expected the result of forward(..., training=True) with {name[4:]!r}; "
                f"got {type(fwd).__name__} whose {name[4:]} is missing or None"
            )
        _check_array(name, a, 3, array_types)
    _check_array("dhs", dhs, 3, array_types)
    _check_array("dh_n", dh_n, 2, array_types)
    if cell == "lstm":
        if dc_n is not None:
            _check_array("dc_n", dc_n, 2, array_types)
    elif dc_n is not None:
        raise TypeError(f"dc_n: expected None for {cell} (only lstm has a cell state); got {_describe(dc_n)}")
    _check_same_dtype([("x", x), ("dhs", dhs), ("dh_n", dh_n), ("dc_n", dc_n), *fwd_arrays])
    _check_shape("dhs", dhs, (T, B, H), "T, B from x, H from h0")
    _check_shape("dh_n", dh_n, (B, H), "the shape of h0")
    if dc_n is not None:
        _check_shape("dc_n", dc_n, (B, H), "the shape of h0")
    trace_shapes = {"fwd.hs": ((T, B, H), "T, B from x, H from h0"), "fwd.cs": ((T, B, H), "T, B from x, H from h0"),
                    "fwd.gates": ((T, B, G * H), f"T, B, G·H for {cell}")}
    for name, a in fwd_arrays:
        if name in trace_shapes:
            _check_shape(name, a, *trace_shapes[name])
