"""A second, independent NumPy implementation of the five cells, with an optional planted bug.

Written from the equations in the README without importing reference/ (it has its own input
checks, sigmoid and result records), so that the property suite can be shown to accept a correct
backend it was not built around. ``IndependentCells(bug=None)`` is that correct backend;
``IndependentCells(bug="...")`` carries exactly one realistic kernel bug (properties.mutants lists
them), each confined to one ``if self.bug == ...`` branch.

Layout differs from the reference on purpose: the input projection of all steps is one product
before the time loop, backward keeps the pre-activation gradients of every step and forms the
weight gradients with one tensordot after the loop, the sigmoid is 0.5·(1 + tanh(a/2)).
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3, "gru_classic": 3}
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
PARAM_NAMES = ("w_ih", "w_hh", "b_ih", "b_hh")


def sigmoid(a):
    """σ(a) = (1 + tanh(a/2))/2: tanh saturates, so no overflow for any finite a."""
    return 0.5 * (1 + np.tanh(0.5 * a))


class IndependentCells:
    def __init__(self, name="independent", bug=None):
        self.name = name
        self.bug = bug
        self.cells = frozenset(GATES)
        self._kept_outputs = {}  # reused_output_buffer, shared_state_buffer: arrays kept by shape and dtype

    def __repr__(self):
        return f"IndependentCells(name={self.name!r}, bug={self.bug!r})"

    # ----- input checks ------------------------------------------------------------------------

    def _check(self, cell, params, x, h0, c0, extra=()):
        if not isinstance(cell, str):
            raise TypeError(f"cell: expected a str; got {type(cell).__name__}")
        if cell not in GATES:
            raise ValueError(f"cell: expected one of {sorted(GATES)}; got {cell!r}")
        arrays = {"x": (x, 3), "h0": (h0, 2)}
        if cell == "lstm":
            if c0 is None:
                raise TypeError("c0: required for lstm")
            arrays["c0"] = (c0, 2)
        elif c0 is not None:
            raise TypeError(f"c0: only lstm takes c0, not {cell}")
        for pname, ndim in zip(PARAM_NAMES, (2, 2, 1, 1)):
            if not hasattr(params, pname):
                raise TypeError(f"params: no attribute {pname}")
            arrays[pname] = (getattr(params, pname), ndim)
        arrays.update(extra)
        dtype = None
        for aname, (a, ndim) in arrays.items():
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{aname}: expected numpy.ndarray, got {type(a).__name__}")
            if a.dtype not in FLOATS:
                raise TypeError(f"{aname}: dtype {a.dtype} is not float32 or float64")
            if dtype is None:
                dtype = a.dtype
            elif a.dtype != dtype:
                raise TypeError(f"{aname}: dtype {a.dtype} differs from {dtype}")
            if a.ndim != ndim:
                raise ValueError(f"{aname}: expected {ndim} dimensions, got {a.ndim}")
        T, B, I = x.shape
        H = h0.shape[1]
        G = GATES[cell]
        expected = {"h0": (B, H), "c0": (B, H), "w_ih": (G * H, I), "w_hh": (G * H, H), "b_ih": (G * H,),
                    "b_hh": (G * H,), "dhs": (T, B, H), "dh_n": (B, H), "dc_n": (B, H)}
        for aname, (a, _) in arrays.items():
            if aname in expected and a.shape != expected[aname]:
                raise ValueError(f"{aname}: expected shape {expected[aname]}, got {a.shape}")
        if self.bug != "no_finite_check":
            for aname, (a, _) in arrays.items():
                if not np.isfinite(a).all():
                    raise ValueError(f"{aname}: contains NaN or inf")
        return T, B, I, H, dtype

    # ----- forward -----------------------------------------------------------------------------

    def _sigmoid(self, a):
        if self.bug == "unstable_sigmoid":
            e = np.exp(a)  # overflows to inf for large a: inf/inf = NaN
            return e / (1 + e)
        return sigmoid(a)

    def _recurrent(self, h, w, b):
        if self.bug == "float16_recurrent_product":
            return (h.astype(np.float16) @ w.astype(np.float16).T).astype(h.dtype) + b
        if self.bug == "dropped_bias":
            return h @ w.T
        return h @ w.T + b

    def forward(self, cell, params, x, h0, c0=None, *, training=True):
        T, B, I, H, dtype = self._check(cell, params, x, h0, c0)
        if self.bug == "c_order_assumed":  # a C kernel handed x's data pointer and nothing else
            x = np.lib.stride_tricks.as_strided(x, x.shape, np.empty(x.shape, x.dtype).strides, writeable=False)
        if self.bug == "empty_batch_crash":
            x[:, 0]  # sizing its tiles from the first row: IndexError when B = 0
        work = np.float32 if self.bug == "downcast_float64" else dtype
        w_ih, w_hh, b_ih, b_hh = (np.asarray(getattr(params, p), work) for p in ("w_ih", "w_hh", "b_ih", "b_hh"))
        xw = x.astype(work) @ w_ih.T + b_ih  # (T, B, G·H): every step's input projection at once
        h = h0 if self.bug == "inplace_state" else h0.astype(work)
        if self.bug == "shared_state_buffer":  # a workspace kept per backend, not per call or thread
            h = self._kept_outputs.setdefault(("state", h.shape, h.dtype), np.empty_like(h))
            h[...] = h0
        c = c0.astype(work) if cell == "lstm" else None
        hs = np.empty((T, B, H), work)
        gates = np.empty((T, B, GATES[cell] * H), work)
        cs = np.empty((T, B, H), work) if cell == "lstm" else None
        rows = B - B % 4 if self.bug == "batch_tail" else B  # a 4-row kernel that forgot the remainder
        units = H - H % 8 if self.bug == "hidden_tail" else H  # an 8-wide kernel that forgot the tail
        h_before_last = h
        for t in range(T):
            h_before_last = h
            new_h, new_c, gates[t] = self._step(cell, xw[t], h, c, w_hh, b_hh, H)
            if rows < B or units < H:
                new_h[rows:], new_h[:, units:] = h[rows:], h[:, units:]
                if c is not None:
                    new_c[rows:], new_c[:, units:] = c[rows:], c[:, units:]
            if self.bug in ("inplace_state", "shared_state_buffer"):
                h[...] = new_h  # writes into the caller's h0, or into the shared buffer
            else:
                h = new_h
            c = new_c
            hs[t] = h
            if cs is not None:
                cs[t] = c
        h_n = h_before_last if self.bug == "stale_h_n" else h
        out_dtype = np.float64 if self.bug == "upcast_output" else dtype
        cast = (lambda a: None if a is None else np.array(a, out_dtype))
        hs_out = cast(hs)
        if self.bug == "reused_output_buffer":  # a workspace cache that hands its buffer to the caller
            hs_out = self._kept_outputs.setdefault((hs_out.shape, hs_out.dtype), hs_out)
            hs_out[...] = hs
        return SimpleNamespace(hs=hs_out, h_n=cast(h_n), c_n=cast(c), cs=cast(cs) if training else None,
                               gates=cast(gates) if training else None)

    def _step(self, cell, xw_t, h, c, w_hh, b_hh, H):
        """One step from the input projection xw_t (B, G·H); returns (h', c' or None, gates (B, G·H))."""
        if cell in ("rnn_tanh", "rnn_relu"):
            a = xw_t + self._recurrent(h, w_hh, b_hh)
            new_h = np.tanh(a) if cell == "rnn_tanh" else np.maximum(a, 0)
            return new_h, None, new_h
        if cell == "lstm":
            a = xw_t + self._recurrent(h, w_hh, b_hh)
            first, second = (1, 0) if self.bug == "swapped_gates" else (0, 1)
            i, f = self._sigmoid(a[:, first * H:(first + 1) * H]), self._sigmoid(a[:, second * H:(second + 1) * H])
            g, o = np.tanh(a[:, 2 * H:3 * H]), self._sigmoid(a[:, 3 * H:])
            new_c = f * c + i * g
            return o * np.tanh(new_c), new_c, np.concatenate([i, f, g, o], axis=1)
        first, second = (1, 0) if self.bug == "swapped_gates" else (0, 1)
        if cell == "gru" and self.bug != "gru_reset_before_product":
            hw = self._recurrent(h, w_hh, b_hh)  # (B, 3H) including W_hn h + b_hn
            r = self._sigmoid(xw_t[:, first * H:(first + 1) * H] + hw[:, first * H:(first + 1) * H])
            z = self._sigmoid(xw_t[:, second * H:(second + 1) * H] + hw[:, second * H:(second + 1) * H])
            n = np.tanh(xw_t[:, 2 * H:] + r * hw[:, 2 * H:])
        else:  # gru_classic: the reset gate scales h before W_hn
            hw = self._recurrent(h, w_hh[:2 * H], b_hh[:2 * H])
            r = self._sigmoid(xw_t[:, first * H:(first + 1) * H] + hw[:, first * H:(first + 1) * H])
            z = self._sigmoid(xw_t[:, second * H:(second + 1) * H] + hw[:, second * H:(second + 1) * H])
            n = np.tanh(xw_t[:, 2 * H:] + self._recurrent(r * h, w_hh[2 * H:], b_hh[2 * H:]))
        return n + z * (h - n), None, np.concatenate([r, z, n], axis=1)

    # ----- backward ----------------------------------------------------------------------------

    def backward(self, cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n=None):
        extra = {"dhs": (dhs, 3), "dh_n": (dh_n, 2)}
        if dc_n is not None:
            if cell != "lstm":
                raise TypeError(f"dc_n: only lstm takes dc_n, not {cell}")
            extra["dc_n"] = (dc_n, 2)
        T, B, I, H, dtype = self._check(cell, params, x, h0, c0, extra)
        for field in ("hs", "gates") + (("cs",) if cell == "lstm" else ()):
            if getattr(fwd, field, None) is None:
                raise ValueError(f"fwd.{field}: backward needs forward(..., training=True)")
        G = GATES[cell]
        w_ih, w_hh, b_hh = params.w_ih, params.w_hh, params.b_hh
        hs, gates = np.asarray(fwd.hs), np.asarray(fwd.gates)
        h_prev_all = np.concatenate([h0[None], hs[:-1]]) if T else np.empty((0, B, H), dtype)
        da_x = np.zeros((T, B, G * H), dtype)  # ∂L/∂(input-side pre-activation), every step
        da_h = np.zeros((T, B, G * H), dtype)  # ∂L/∂(recurrent-side pre-activation)
        h_in = h_prev_all.copy()  # what W_hh multiplied: h, or for gru_classic's n rows r⊙h
        h_in_n = h_prev_all.copy()
        dh = dh_n.copy()
        dc = (dc_n.copy() if dc_n is not None else np.zeros_like(h0)) if cell == "lstm" else None
        first_step = 1 if self.bug == "time_off_by_one" else 0
        for t in range(T - 1, first_step - 1, -1):
            dh = dh + dhs[t]
            h_prev = h_prev_all[t]
            if cell in ("rnn_tanh", "rnn_relu"):
                y = hs[t]
                da = dh * (1 - y * y) if cell == "rnn_tanh" else dh * (y > 0)
                da_x[t] = da_h[t] = da
                dh = da @ w_hh
            elif cell == "lstm":
                i, f, g, o = np.split(gates[t], 4, axis=1)
                c_t = fwd.cs[t]
                c_prev = fwd.cs[t - 1] if t else c0
                tanh_c = np.tanh(c_t)
                dc = dc + dh * o * (1 - tanh_c * tanh_c)
                da = np.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g),
                                     dh * tanh_c * o * (1 - o)], axis=1)
                da_x[t] = da_h[t] = da
                dc = dc if self.bug == "missing_forget_factor" else dc * f
                dh = da @ w_hh
            else:
                r, z, n = np.split(gates[t], 3, axis=1)
                dan = dh * (1 - z) * (1 - n * n)
                daz = dh * (h_prev - n) * z * (1 - z)
                if cell == "gru":
                    hn = h_prev @ w_hh[2 * H:].T + b_hh[2 * H:]
                    dar = dan * hn * r * (1 - r)
                    da_x[t] = np.concatenate([dar, daz, dan], axis=1)
                    da_h[t] = np.concatenate([dar, daz, dan * r], axis=1)
                    dh = dh * z + da_h[t] @ w_hh
                else:
                    d_rh = dan @ w_hh[2 * H:]
                    dar = d_rh * h_prev * r * (1 - r)
                    da_x[t] = da_h[t] = np.concatenate([dar, daz, dan], axis=1)
                    h_in_n[t] = r * h_prev
                    dh = dh * z + d_rh * r + da_h[t, :, :2 * H] @ w_hh[:2 * H]
        dw_hh = np.tensordot(da_h, h_in, axes=([0, 1], [0, 1]))
        if cell == "gru_classic":
            dw_hh[2 * H:] = np.tensordot(da_h[..., 2 * H:], h_in_n, axes=([0, 1], [0, 1]))
        if self.bug == "overwritten_weight_gradient" and T:
            dw_hh = da_h[0].T @ h_in[0]  # "=" where "+=" was meant: only the last step processed remains
        return SimpleNamespace(
            dx=da_x @ w_ih, dh0=dh, dc0=dc, dw_ih=np.tensordot(da_x, x, axes=([0, 1], [0, 1])), dw_hh=dw_hh,
            db_ih=da_x.sum(axis=(0, 1)), db_hh=da_h.sum(axis=(0, 1)))


backend = IndependentCells()
