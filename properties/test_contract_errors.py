"""Each kind of bad input gets a clear TypeError or ValueError, on every selected backend.

The message must name the argument and the value given (the words each case lists). The
project's own backends are also held to the contract's wording, "expected …; got …"; a
third-party backend is judged by what its message names, not by those literal words. The
Hypothesis robustness family generates malformed inputs at random; these are the cases named
by the contract, one by one, so that a regression says exactly which broke. The backends are
the run's (``--backend``, or every built-in one): the ``backend`` fixture of properties.conftest.
"""
from types import SimpleNamespace

import numpy as np
import pytest

import reference
from properties.backends import declared_dtypes, has_backward, is_own

T, B, I, H = 3, 2, 4, 5


def good_args(cell, dtype):
    rng = np.random.default_rng(0)
    return dict(cell=cell, params=reference.init_params(cell, I, H, dtype=dtype),
                x=rng.standard_normal((T, B, I)).astype(dtype), h0=np.zeros((B, H), dtype),
                c0=np.zeros((B, H), dtype) if cell == "lstm" else None)


def with_param(args, **changes):
    return args | {"params": args["params"]._replace(**changes)}


def other_dtype(a):
    """The same values in the other float dtype: a mix the contract rejects whichever came first."""
    return a.astype(np.float32 if a.dtype == np.float64 else np.float64)


def with_nan(a, value=np.nan):
    a = a.copy()
    a.flat[-1] = value
    return a


# name -> (cell, a function of good args returning bad args, exception, what the message names,
#          the contract's further words). "What it names" is the argument and the value given (a tuple
#          lists equivalent spellings); every backend is held to it. The further words (what was
#          expected, "expected … got …") are the contract's wording, held to the project's own backends.
FORWARD_CASES = {
    "unknown cell": ("lstm", lambda a: a | {"cell": "lstmm"}, ValueError, ["cell", "lstmm"], ["'lstmm'"]),
    "cell not a str": ("lstm", lambda a: a | {"cell": 4}, TypeError, ["cell", ("int", "4")], []),
    "x with 2 dims": ("gru", lambda a: a | {"x": a["x"][0]}, ValueError, ["x", ("(2, 4)", "2")],
                      ["3 dimensions", "(2, 4)"]),
    "h0 with 3 dims": ("gru", lambda a: a | {"h0": a["h0"][None]}, ValueError, ["h0", ("(1, 2, 5)", "3")],
                       ["2 dimensions"]),
    "B disagrees": ("rnn_tanh", lambda a: a | {"h0": np.zeros((B + 1, H), a["x"].dtype)}, ValueError,
                    ["h0", ("(3, 5)", "3")], ["(2, 5)"]),
    "I disagrees": ("gru", lambda a: a | {"x": np.zeros((T, B, I + 1), a["x"].dtype)}, ValueError,
                    [("w_ih", "x"), ("(15, 4)", "(3, 2, 5)", "5")], ["w_ih", "(15, 5)", "(15, 4)"]),
    "H disagrees in c0": ("lstm", lambda a: a | {"c0": np.zeros((B, H + 1), a["x"].dtype)}, ValueError,
                          ["c0", ("(2, 6)", "6")], ["(2, 5)"]),
    "params of gru for lstm": ("lstm", lambda a: a | {"params": reference.init_params("gru", I, H, a["x"].dtype)},
                               ValueError, [("w_hh", "w_ih", "params"), ("(15, 5)", "(15, 4)", "gru", "15")],
                               ["w_hh", "lstm", "gru"]),
    "params of lstm for rnn": ("rnn_relu", lambda a: a | {"params": reference.init_params("lstm", I, H, a["x"].dtype)},
                               ValueError, [("w_hh", "w_ih", "params"), ("(20, 5)", "(20, 4)", "lstm", "20")],
                               ["w_hh", "rnn_relu", "lstm"]),
    "c0 missing for lstm": ("lstm", lambda a: a | {"c0": None}, TypeError, ["c0"], ["None"]),
    "c0 given for gru": ("gru", lambda a: a | {"c0": np.zeros((B, H), a["x"].dtype)}, TypeError, ["c0"],
                         ["None", "gru"]),
    "mixed dtypes": ("lstm", lambda a: a | {"x": other_dtype(a["x"])}, TypeError, [("float32", "float64")],
                     ["float32", "float64"]),
    "integer x": ("rnn_tanh", lambda a: a | {"x": np.ones((T, B, I), np.int64)}, TypeError, ["x", "int64"], []),
    "float16 params": ("gru", lambda a: with_param(a, w_hh=a["params"].w_hh.astype(np.float16)), TypeError,
                       ["w_hh", "float16"], []),
    "x a list": ("gru", lambda a: a | {"x": a["x"].tolist()}, TypeError, ["x", "list"], []),
    "params without b_hh": ("gru", lambda a: a | {"params": SimpleNamespace(w_ih=1, w_hh=1, b_ih=1)}, TypeError,
                            ["b_hh"], ["params"]),
    "NaN in x": ("lstm", lambda a: a | {"x": with_nan(a["x"])}, ValueError, ["x", ("NaN", "nan")], ["finite", "NaN"]),
    "inf in h0": ("gru_classic", lambda a: a | {"h0": with_nan(a["h0"], np.inf)}, ValueError, ["h0", ("inf", "finite")],
                  ["finite"]),
    "inf in w_hh": ("rnn_relu", lambda a: with_param(a, w_hh=with_nan(a["params"].w_hh, -np.inf)), ValueError,
                    ["w_hh", ("inf", "finite")], ["finite"]),
    "NaN in b_ih": ("lstm", lambda a: with_param(a, b_ih=with_nan(a["params"].b_ih)), ValueError,
                    ["b_ih", ("NaN", "nan", "finite")], ["finite"]),
}


def checked_dtype(backend):
    """float64 where the backend supports it (the contract's cases were written in it), else its dtype."""
    dtypes = declared_dtypes(backend)
    return np.dtype(np.float64) if np.dtype(np.float64) in dtypes else min(dtypes, key=str)


def skip_unless_supported(backend, cell, needs_backward=False):
    if cell not in backend.cells:
        pytest.skip(f"backend {backend.name} does not support {cell}")
    if needs_backward and not has_backward(backend):
        pytest.skip(f"backend {backend.name} is forward-only (backward = None)")


def assert_clear_error(backend, excinfo, named, words):
    """The message names each of ``named`` (a tuple: one of its spellings); the project's own
    backends also say "expected … got …" and hold ``words``."""
    message = str(excinfo.value)
    for item in named:
        spellings = item if isinstance(item, tuple) else (item,)
        assert any(s in message for s in spellings), \
            f"message {message!r} does not name {' or '.join(map(repr, spellings))}"
    if is_own(backend):
        assert "expected" in message and "got" in message, f"message does not say expected/got: {message}"
        for word in words:
            assert word in message, f"message {message!r} does not mention {word!r}"


@pytest.mark.parametrize("case", FORWARD_CASES)
def test_bad_forward_input_gets_a_clear_error(backend, case):
    cell, make_bad, error, named, words = FORWARD_CASES[case]
    skip_unless_supported(backend, cell)
    args = make_bad(good_args(cell, checked_dtype(backend)))
    with pytest.raises(error) as excinfo:
        backend.forward(args.pop("cell"), **args)
    assert_clear_error(backend, excinfo, named, words)


def good_backward_args(backend, cell):
    args = good_args(cell, checked_dtype(backend))
    return args | trace_and_gradients(backend, args)


def trace_and_gradients(backend, args):
    """backward's arguments beyond forward's (``args``): forward's trace and upstream gradients of ones."""
    dtype = args["x"].dtype
    return dict(fwd=backend.forward(**args), dhs=np.ones((T, B, H), dtype), dh_n=np.ones((B, H), dtype),
                dc_n=np.ones((B, H), dtype) if args["cell"] == "lstm" else None)


BACKWARD_CASES = {
    "dhs of the wrong shape": ("gru", lambda a: a | {"dhs": np.ones((T + 1, B, H), a["x"].dtype)}, ValueError,
                               ["dhs", ("(4, 2, 5)", "4")], ["(3, 2, 5)"]),
    "dh_n of the other dtype": ("lstm", lambda a: a | {"dh_n": other_dtype(a["dh_n"])}, TypeError,
                                ["dh_n", ("float32", "float64")], ["float32"]),
    "dc_n for gru": ("gru", lambda a: a | {"dc_n": np.ones((B, H), a["x"].dtype)}, TypeError, ["dc_n"], ["None"]),
    "NaN in dhs": ("gru", lambda a: a | {"dhs": with_nan(a["dhs"])}, ValueError, ["dhs", ("NaN", "nan", "finite")],
                   ["finite"]),
    "fwd from inference": ("lstm", lambda a: a | {"fwd": SimpleNamespace(hs=a["fwd"].hs, gates=None, cs=None)},
                           ValueError, ["fwd"], ["training=True"]),
}


@pytest.mark.parametrize("case", BACKWARD_CASES)
def test_bad_backward_input_gets_a_clear_error(backend, case):
    cell, make_bad, error, named, words = BACKWARD_CASES[case]
    skip_unless_supported(backend, cell, needs_backward=True)
    args = good_backward_args(backend, cell)
    if case == "fwd from inference" and args["fwd"].gates is None:
        pytest.skip(f"backend {backend.name} returns no gates even in training, so its backward cannot tell "
                    "an inference result from a training one (it recomputes what it needs)")
    args = make_bad(args)
    with pytest.raises(error) as excinfo:
        backend.backward(args.pop("cell"), **args)
    assert_clear_error(backend, excinfo, named, words)
