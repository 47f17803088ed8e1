"""A second, independent implementation of layers (stacked, bidirectional, rows of different
lengths, lstm projections) on IndependentCells, with an optional planted bug.

Written from the layer contract in the README without importing reference/, so that the layer
family can be shown to accept a correct implementation it was not built around. The layout
differs from reference.layers on purpose: each row runs alone, truncated to its length, through
IndependentCells' forward and backward (reference.layers runs the rows still running together,
span by span); the reverse direction runs a row's steps in reverse order (reference.layers reverses
the input); the projected lstm has its own time loop and backward here. Each layer bug
(properties.mutants.LAYER_MUTANTS) sits in one ``if self.bug == ...`` branch.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from .independent import IndependentCells, sigmoid

GRADIENT_FIELDS = ("dw_ih", "dw_hh", "db_ih", "db_hh")


class IndependentLayers(IndependentCells):
    """IndependentCells with native layer_forward / layer_backward."""

    # ----- one row of one direction ------------------------------------------------------------

    def _row_run(self, n: int, T: int, forward_direction: bool):
        """(the steps the row runs, in order; the run's indices whose outputs are written; the run's
        index whose state is the row's h_n)."""
        if forward_direction:
            if self.bug in ("h_n_at_the_end",):  # runs on through the padding, masks only its outputs
                return np.arange(T), np.arange(n), T - 1
            return np.arange(n), np.arange(n), n - 1
        if self.bug == "reverse_from_the_end":  # starts at step T − 1, not at the row's last step
            return np.arange(T)[::-1], np.arange(T), T - 1
        return np.arange(n)[::-1], np.arange(n), n - 1

    def _run_forward(self, cell, params, x, h0, c0):
        if getattr(params, "w_hr", None) is not None:
            return self._projected_forward(params, x, h0, c0)
        return self.forward(cell, params, x, h0, c0)

    def _run_backward(self, cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n):
        if getattr(params, "w_hr", None) is not None:
            return self._projected_backward(params, x, h0, c0, fwd, dhs, dh_n, dc_n)
        return self.backward(cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n)

    # ----- the projected lstm: h = W_hr (o⊙tanh c), the recurrence reads h (P wide) -----------------

    def _projected_forward(self, params, x, h0, c0):
        w_ih, w_hh, b_ih, b_hh, w_hr = (np.asarray(getattr(params, n))
                                        for n in ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr"))
        H = w_hr.shape[1]
        xw = x @ w_ih.T + b_ih
        h, c = h0, c0
        hs, cs, gates, ms = [], [], [], []
        for t in range(x.shape[0]):
            a = xw[t] + h @ w_hh.T + b_hh
            i, f, g, o = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), np.tanh(a[:, 2 * H:3 * H]), sigmoid(a[:, 3 * H:])
            c = f * c + i * g
            m = o * np.tanh(c)
            h = (c if self.bug == "projection_of_c" else m) @ w_hr.T
            hs.append(h), cs.append(c), gates.append((i, f, g, o)), ms.append(m)
        return SimpleNamespace(hs=np.array(hs).reshape(x.shape[0], *h0.shape), h_n=h, c_n=c, cs=cs, gates=gates, ms=ms)

    def _projected_backward(self, params, x, h0, c0, fwd, dhs, dh_n, dc_n):
        w_ih, w_hh, w_hr = (np.asarray(getattr(params, n)) for n in ("w_ih", "w_hh", "w_hr"))
        grads = {f: np.zeros_like(np.asarray(getattr(params, f[1:]))) for f in GRADIENT_FIELDS + ("dw_hr",)}
        dx = np.zeros_like(x)
        dh, dc = dh_n, np.zeros_like(c0) if dc_n is None else dc_n
        for t in reversed(range(x.shape[0])):
            i, f, g, o = fwd.gates[t]
            c_prev = fwd.cs[t - 1] if t else c0
            h_prev = fwd.hs[t - 1] if t else h0
            dh = dh + dhs[t]
            grads["dw_hr"] += dh.T @ fwd.ms[t]
            dm = dh @ w_hr
            tanh_c = np.tanh(fwd.cs[t])
            dc = dc + dm * o * (1 - tanh_c ** 2)
            da = np.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g),
                                 dm * tanh_c * o * (1 - o)], axis=1)
            dx[t] = da @ w_ih
            grads["dw_ih"] += da.T @ x[t]
            grads["dw_hh"] += da.T @ h_prev
            grads["db_ih"] += da.sum(axis=0)
            grads["db_hh"] += da.sum(axis=0)
            dh, dc = da @ w_hh, dc * f
        return SimpleNamespace(dx=dx, dh0=dh, dc0=dc, **grads)

    # ----- layers ------------------------------------------------------------------------------

    def _blocks(self, D):
        """The position of each direction's block in a layer's output."""
        return [1, 0] if self.bug == "directions_swapped" and D == 2 else list(range(D))

    def layer_forward(self, cell, params, x, h0, c0=None, *, bidirectional=False, lengths=None, training=True):
        if not isinstance(params, (list, tuple)) or (cell == "lstm") != (c0 is not None):
            raise TypeError("params: expected a list of per-layer, per-direction params; c0 exactly for lstm")
        T, B, _ = x.shape
        D = 2 if bidirectional else 1
        L = len(params) // D
        H_out = h0.shape[2]
        lengths = [T] * B if lengths is None else [int(n) for n in lengths]
        h_n = np.zeros_like(h0)
        c_n = None if c0 is None else np.zeros_like(c0)
        records, layer_input = [], x
        for layer in range(L):
            output = np.zeros((T, B, D * H_out), x.dtype)
            for d, block in zip(range(D), self._blocks(D)):
                k = layer * D + d
                rows = []
                for b, n in enumerate(lengths):
                    steps, written, last = self._row_run(n, T, forward_direction=d == 0)
                    state = (h0[k, b:b + 1], None if c0 is None else c0[k, b:b + 1])
                    run_input = np.ascontiguousarray(layer_input[steps, b:b + 1])
                    fwd = self._run_forward(cell, params[k], run_input, *state)
                    hs = np.asarray(fwd.hs)
                    output[steps[written], b, block * H_out:(block + 1) * H_out] = hs[written, 0]
                    h_n[k, b] = hs[last, 0]
                    if c0 is not None:
                        c_n[k, b] = np.asarray(fwd.c_n)[0]
                    if self.bug == "padding_not_zeroed":  # the state carried on through the padding, as written
                        output[n:, b, block * H_out:(block + 1) * H_out] = hs[last, 0]
                    rows.append((steps, written, run_input, state, fwd))
                records.append(rows)
            layer_input = output
        return SimpleNamespace(hs=layer_input, h_n=h_n, c_n=c_n, records=records if training else None)

    def layer_backward(self, cell, params, x, h0, c0, fwd, dhs, dh_n, dc_n=None, *, bidirectional=False,
                       lengths=None):
        if getattr(fwd, "records", None) is None:
            raise ValueError("fwd: expected layer_forward(..., training=True)'s result")
        D = 2 if bidirectional else 1
        L = len(params) // D
        H_out = h0.shape[2]
        dh0, dc0 = np.zeros_like(h0), None if c0 is None else np.zeros_like(c0)
        dparams = [None] * len(params)
        d_output = dhs
        for layer in reversed(range(L)):
            d_input = np.zeros(x.shape if layer == 0 else (x.shape[0], x.shape[1], D * H_out), x.dtype)
            for d, block in zip(range(D), self._blocks(D)):
                k = layer * D + d
                sums = {f: np.zeros_like(np.asarray(getattr(params[k], f[1:]))) for f in GRADIENT_FIELDS}
                if getattr(params[k], "w_hr", None) is not None:
                    sums["dw_hr"] = np.zeros_like(np.asarray(params[k].w_hr))
                for b, (steps, written, run_input, state, run) in enumerate(fwd.records[k]):
                    run_dhs = np.zeros((len(steps), 1, H_out), x.dtype)
                    run_dhs[written, 0] = d_output[steps[written], b, block * H_out:(block + 1) * H_out]
                    grads = self._run_backward(cell, params[k], run_input, *state, run, run_dhs, dh_n[k, b:b + 1],
                                               None if dc_n is None else dc_n[k, b:b + 1])
                    d_input[steps, b] += np.asarray(grads.dx)[:, 0]
                    dh0[k, b] = np.asarray(grads.dh0)[0]
                    if dc0 is not None:
                        dc0[k, b] = np.asarray(grads.dc0)[0]
                    for f in sums:
                        sums[f] += np.asarray(getattr(grads, f))
                dparams[k] = SimpleNamespace(**sums, **({} if "dw_hr" in sums else {"dw_hr": None}))
            d_output = d_input
        return SimpleNamespace(dx=d_output, dh0=dh0, dc0=dc0, dparams=dparams)
