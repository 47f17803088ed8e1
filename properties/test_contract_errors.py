"""Each kind of bad input gets a clear TypeError or ValueError, on every backend.

The message must name the argument and say what was expected and what was given. The
Hypothesis robustness family generates malformed inputs at random; these are the cases
named by the contract, one by one, so that a regression says exactly which broke.
"""
from types import SimpleNamespace

import numpy as np
import pytest

import reference
from properties.backends import selected

T, B, I, H = 3, 2, 4, 5


def good_args(cell, dtype=np.float64):
    rng = np.random.default_rng(0)
    return dict(cell=cell, params=reference.init_params(cell, I, H, dtype=dtype),
                x=rng.standard_normal((T, B, I)).astype(dtype), h0=np.zeros((B, H), dtype),
                c0=np.zeros((B, H), dtype) if cell == "lstm" else None)


def with_param(args, **changes):
    return args | {"params": args["params"]._replace(**changes)}


def with_nan(a, value=np.nan):
    a = a.copy()
    a.flat[-1] = value
    return a


# name -> (cell, a function of good args returning bad args, exception, words the message must hold)
FORWARD_CASES = {
    "unknown cell": ("lstm", lambda a: a | {"cell": "lstmm"}, ValueError, ["cell", "'lstmm'"]),
    "cell not a str": ("lstm", lambda a: a | {"cell": 4}, TypeError, ["cell", "int"]),
    "x with 2 dims": ("gru", lambda a: a | {"x": a["x"][0]}, ValueError, ["x", "3 dimensions", "(2, 4)"]),
    "h0 with 3 dims": ("gru", lambda a: a | {"h0": a["h0"][None]}, ValueError, ["h0", "2 dimensions"]),
    "B disagrees": ("rnn_tanh", lambda a: a | {"h0": np.zeros((B + 1, H))}, ValueError, ["h0", "(2, 5)", "(3, 5)"]),
    "I disagrees": ("gru", lambda a: a | {"x": np.zeros((T, B, I + 1))}, ValueError, ["w_ih", "(15, 5)", "(15, 4)"]),
    "H disagrees in c0": ("lstm", lambda a: a | {"c0": np.zeros((B, H + 1))}, ValueError, ["c0", "(2, 5)", "(2, 6)"]),
    "params of gru for lstm": ("lstm", lambda a: a | {"params": reference.init_params("gru", I, H, np.float64)},
                               ValueError, ["w_hh", "lstm", "gru"]),
    "params of lstm for rnn": ("rnn_relu", lambda a: a | {"params": reference.init_params("lstm", I, H, np.float64)},
                               ValueError, ["w_hh", "rnn_relu", "lstm"]),
    "c0 missing for lstm": ("lstm", lambda a: a | {"c0": None}, TypeError, ["c0", "None"]),
    "c0 given for gru": ("gru", lambda a: a | {"c0": np.zeros((B, H))}, TypeError, ["c0", "None", "gru"]),
    "mixed dtypes": ("lstm", lambda a: a | {"x": a["x"].astype(np.float32)}, TypeError, ["float32", "float64"]),
    "integer x": ("rnn_tanh", lambda a: a | {"x": np.ones((T, B, I), np.int64)}, TypeError, ["x", "int64"]),
    "float16 params": ("gru", lambda a: with_param(a, w_hh=a["params"].w_hh.astype(np.float16)), TypeError,
                       ["w_hh", "float16"]),
    "x a list": ("gru", lambda a: a | {"x": a["x"].tolist()}, TypeError, ["x", "list"]),
    "params without b_hh": ("gru", lambda a: a | {"params": SimpleNamespace(w_ih=1, w_hh=1, b_ih=1)}, TypeError,
                            ["params", "b_hh"]),
    "NaN in x": ("lstm", lambda a: a | {"x": with_nan(a["x"])}, ValueError, ["x", "finite", "NaN"]),
    "inf in h0": ("gru_classic", lambda a: a | {"h0": with_nan(a["h0"], np.inf)}, ValueError, ["h0", "finite"]),
    "inf in w_hh": ("rnn_relu", lambda a: with_param(a, w_hh=with_nan(a["params"].w_hh, -np.inf)), ValueError,
                    ["w_hh", "finite"]),
    "NaN in b_ih": ("lstm", lambda a: with_param(a, b_ih=with_nan(a["params"].b_ih)), ValueError, ["b_ih", "finite"]),
}

BACKENDS = selected()


def backend_cases(cases):
    """Every case on every backend that has its cell, as a list (pytest deprecates generators here)."""
    return [pytest.param(backend, cell, *rest, id=f"{backend_name}-{case_name}")
            for backend_name, backend in BACKENDS.items()
            for case_name, (cell, *rest) in cases.items() if cell in backend.cells]


def assert_clear_error(excinfo, words):
    message = str(excinfo.value)
    assert "expected" in message and "got" in message, f"message does not say expected/got: {message}"
    for word in words:
        assert word in message, f"message {message!r} does not mention {word!r}"


@pytest.mark.parametrize("backend,cell,make_bad,error,words", backend_cases(FORWARD_CASES))
def test_bad_forward_input_gets_a_clear_error(backend, cell, make_bad, error, words):
    args = make_bad(good_args(cell))
    with pytest.raises(error) as excinfo:
        backend.forward(args.pop("cell"), **args)
    assert_clear_error(excinfo, words)


def good_backward_args(backend, cell):
    args = good_args(cell)
    fwd = backend.forward(**args)
    return args | dict(fwd=fwd, dhs=np.ones((T, B, H)), dh_n=np.ones((B, H)),
                       dc_n=np.ones((B, H)) if cell == "lstm" else None)


BACKWARD_CASES = {
    "dhs of the wrong shape": ("gru", lambda a: a | {"dhs": np.ones((T + 1, B, H))}, ValueError, ["dhs", "(3, 2, 5)"]),
    "dh_n float32": ("lstm", lambda a: a | {"dh_n": a["dh_n"].astype(np.float32)}, TypeError, ["dh_n", "float32"]),
    "dc_n for gru": ("gru", lambda a: a | {"dc_n": np.ones((B, H))}, TypeError, ["dc_n", "None"]),
    "NaN in dhs": ("rnn_tanh", lambda a: a | {"dhs": with_nan(a["dhs"])}, ValueError, ["dhs", "finite"]),
    "fwd from inference": ("lstm", lambda a: a | {"fwd": SimpleNamespace(hs=a["fwd"].hs, gates=None, cs=None)},
                           ValueError, ["fwd", "training=True"]),
}


@pytest.mark.parametrize("backend,cell,make_bad,error,words", backend_cases(BACKWARD_CASES))
def test_bad_backward_input_gets_a_clear_error(backend, cell, make_bad, error, words):
    args = make_bad(good_backward_args(backend, cell))
    with pytest.raises(error) as excinfo:
        backend.backward(args.pop("cell"), **args)
    assert_clear_error(excinfo, words)
