"""Hypothesis strategies of the property suite: sizes, dtypes, parameters and inputs of a cell problem.

Everything a property draws comes from here (array-api-tests' ``hypothesis_helpers`` style):

    sizes(limits, cell)           T, B, I, H: mostly small, sometimes awkward (next to multiples of
                                  4, 8, 32), rarely large (up to a few hundred), within a work budget
    problems(...)                 a whole Problem: params in a chosen regime, x, h0, c0, upstream grads
    malformed_calls(...)          forward/backward arguments with exactly one defect (robustness)
    layer_problems(...)           a whole LayerProblem: L layers, D directions, row lengths, lstm projections

Dense arrays: shapes, dtypes, regimes, scales, seeds and the special values (spikes, saturating
biases, non-finite entries) are Hypothesis draws, and shrink; the dense values themselves come
from a NumPy generator seeded by a drawn integer. Drawing a (1200, 300) weight element by element
would exhaust Hypothesis' buffer (and ``hnp.arrays`` fills large arrays with one repeated value,
which would hide a swapped gate block); the seed keeps every example reproducible from Hypothesis'
own database and ``@reproduce_failure`` blob all the same.

A slow backend (jit.cuda under the CUDA simulator) may declare ``max_test_sizes``, a dict with
any of T, B, I, H: ``limits_for(backend)`` honours it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from reference.contract import NUM_GATES, Params
from reference.layers import ProjectedParams

from .backends import declared_dtypes, has_backward, layer_features
from .conditioning import direction_conditioning
from .verification_run import note_example

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def dtypes_of(backend) -> st.SearchStrategy[np.dtype]:
    """One of the dtypes the backend declares (both floats unless it declares ``dtypes``)."""
    return st.sampled_from([d for d in DTYPES if d in declared_dtypes(backend)])

#: Largest sizes any property draws (a backend's max_test_sizes can only lower them).
SIZE_LIMITS = {"T": 300, "B": 300, "I": 300, "H": 300}
#: Multiply-adds of one forward, T·B·G·H·(I + H), kept under this so that one example costs
#: milliseconds with the reference: H = 300 still comes with B up to about 45, B = 300 with H ≈ 100.
WORK_LIMIT = 2 ** 24
#: Sizes next to the tile widths kernels use (4, 8, 32 and their multiples), where tails are handled.
AWKWARD_SIZES = (1, 2, 3, 5, 7, 9, 15, 17, 31, 33, 63, 65, 127, 129, 255, 257)

#: Parameter regimes. The first is what failing examples shrink towards.
REGIMES = ("pytorch_init", "contracting", "wide", "saturating")


def limits_for(backend, cap: Optional[dict] = None) -> dict:
    """SIZE_LIMITS lowered by the backend's optional ``max_test_sizes`` (None or missing: no change)
    and by a property's own ``cap``."""
    declared = getattr(backend, "max_test_sizes", None) or {}
    cap = cap or {}
    return {dim: max(1, min(limit, int(declared.get(dim, limit)), int(cap.get(dim, limit))))
            for dim, limit in SIZE_LIMITS.items()}


def dimension(limit: int) -> st.SearchStrategy[int]:
    """One size in [1, limit]: small (6 in 9 draws), awkward (2 in 9) or anything up to the limit (1 in 9)."""
    awkward = [n for n in AWKWARD_SIZES if n <= limit]
    return st.sampled_from(("small",) * 6 + ("awkward",) * 2 + ("any",)).flatmap(
        lambda kind: {"small": st.integers(1, min(6, limit)),
                      "awkward": st.sampled_from(awkward),
                      "any": st.integers(1, limit)}[kind])


@st.composite
def sizes(draw, limits: dict, cell: str, *, min_T: int = 1, max_T: Optional[int] = None):
    """(T, B, I, H) within ``limits`` and WORK_LIMIT; H first, so large H stays reachable."""
    G = NUM_GATES[cell]
    H = draw(dimension(limits["H"]), label="H")
    B = draw(dimension(max(1, min(limits["B"], WORK_LIMIT // (G * H * (H + 1))))), label="B")
    I = draw(dimension(max(1, min(limits["I"], WORK_LIMIT // (G * H * B) - H))), label="I")
    T_cap = min(limits["T"], max_T if max_T is not None else limits["T"],
                max(1, WORK_LIMIT // (G * H * B * (I + H))))
    T_cap = max(min_T, T_cap)
    if T_cap == min_T:
        return min_T, B, I, H
    T = draw(dimension(T_cap).filter(lambda t: t >= min_T) | st.integers(min_T, T_cap), label="T")
    return T, B, I, H


@dataclass(frozen=True)
class Problem:
    """One call's worth of arguments: forward's, plus the upstream gradients backward takes."""

    cell: str
    params: Params
    x: np.ndarray  # (T, B, I)
    h0: np.ndarray  # (B, H)
    c0: Optional[np.ndarray]  # (B, H), lstm only
    dhs: np.ndarray  # (T, B, H)
    dh_n: np.ndarray  # (B, H)
    dc_n: Optional[np.ndarray]  # (B, H), lstm only
    regime: str = "pytorch_init"

    @property
    def dtype(self) -> np.dtype:
        return self.x.dtype

    @property
    def shape(self) -> dict:
        T, B, I = self.x.shape
        return {"T": T, "B": B, "I": I, "H": self.h0.shape[1]}

    def astype(self, dtype) -> "Problem":
        """The same problem in another dtype (float32 → float64 is exact)."""
        def cast(a):
            return None if a is None else a.astype(dtype)
        return replace(self, params=Params(*(cast(a) for a in self.params)), x=cast(self.x), h0=cast(self.h0),
                       c0=cast(self.c0), dhs=cast(self.dhs), dh_n=cast(self.dh_n), dc_n=cast(self.dc_n))

    def forward(self, backend, **kwargs):
        note_example(f"forward: {self.describe()}")  # named in the report if the backend kills the process
        return backend.forward(self.cell, self.params, self.x, self.h0, self.c0, **kwargs)

    def backward(self, backend, fwd):
        note_example(f"backward: {self.describe()}")
        return backend.backward(self.cell, self.params, self.x, self.h0, self.c0, fwd, self.dhs, self.dh_n,
                                self.dc_n)

    def describe(self) -> str:
        s = self.shape
        return f"{self.cell} {self.dtype} T={s['T']} B={s['B']} I={s['I']} H={s['H']} regime={self.regime}"


def log_uniform(rng, low, high, shape):
    return np.exp(rng.uniform(np.log(low), np.log(high), shape))


def draw_params(draw, cell, I, H, dtype, regime, rng, *, x_max=1.0, h_max=1.0) -> Params:
    """Params in one regime (all drawn in float64, rounded once to dtype):

    pytorch_init  U(−1/√H, 1/√H), PyTorch's default;
    contracting   inputs' weights scaled so that |W_ih||x| ≤ 1/2 (x_max given), biases in ±1/4, and
                  W_hh scaled so that the step's Lipschitz bound L (properties.conditioning) is
                  about gate_max + ρ(1 − gate_max), ρ ≤ 0.9: the recurrence contracts, gates stay
                  unsaturated, and rounding is amplified at most about 1/(1 − L)-fold;
    wide          N(0, s²/H) with s up to 3: expanding, even chaotic, for bounds that hold anyway;
    saturating    PyTorch's init plus biases of ±(8 … 60) on a drawn share of units, so that
                  gates sit at 0 or 1.
    """
    G = NUM_GATES[cell]
    bound = 1 / np.sqrt(H)
    if regime == "wide":
        s = draw(st.floats(0.1, 3.0), label="weight scale s")
        w_ih, w_hh = (rng.standard_normal((G * H, n)) * s / np.sqrt(H) for n in (I, H))
        b_ih, b_hh = (rng.standard_normal(G * H) * s for _ in range(2))
    elif regime == "contracting":
        rho = draw(st.sampled_from((0.5, 0.0, 0.2, 0.9)), label="rho: share of 1 − gate_max given to W_hh")
        w_ih = rng.uniform(-1, 1, (G * H, I))
        w_ih *= 0.5 / (np.abs(w_ih).sum(axis=1, keepdims=True) * max(x_max, 1.0))
        b_ih, b_hh = (rng.uniform(-0.25, 0.25, G * H) for _ in range(2))
        w_hh = rng.uniform(-1, 1, (G * H, H))
        w_hh /= max(np.abs(w_hh).sum(axis=1).max(), np.abs(w_hh).sum(axis=0).max())  # ‖W_hh‖∞, ‖W_hh‖₁ ≤ 1
        # With W_hh = 0 the pre-activations are ≤ 1 and L = gate_max (≤ σ(1)); spend a share ρ of the
        # remaining 1 − gate_max on W_hh: ‖W_hh‖·D ≤ ρ(1 − gate_max), D from properties.conditioning.
        gate_max = 1 / (1 + np.exp(-1.0))
        if cell == "lstm":
            sensitivity = max(h_max, 1 / (1 - gate_max)) / 4 + 1.5
        elif cell in ("gru", "gru_classic"):
            sensitivity = (h_max + 1) / 4 + 1.5
        else:
            sensitivity, gate_max = 1.0, 0.0
        w_hh *= rho * (1 - gate_max) / (sensitivity * max(h_max, 1.0))
    else:
        w_ih, w_hh = (rng.uniform(-bound, bound, (G * H, n)) for n in (I, H))
        b_ih, b_hh = (rng.uniform(-bound, bound, G * H) for _ in range(2))
        if regime == "saturating":
            share = draw(st.sampled_from((1.0, 0.5, 0.1)), label="share of saturated units")
            magnitude = draw(st.floats(8.0, 60.0), label="saturating bias")
            chosen = rng.random(G * H) < share
            b_ih = b_ih + chosen * rng.choice((-magnitude, magnitude), G * H)
    return Params(*(np.ascontiguousarray(a, dtype=dtype) for a in (w_ih, w_hh, b_ih, b_hh)))


X_SCALES = (1.0, 0.0, 1e-6, 1e-2, 10.0, 1e3)


@st.composite
def problems(draw, backend, cell: str, dtype, *, regimes=REGIMES, x_scales=X_SCALES, min_T: int = 1,
             max_T: Optional[int] = None, limits: Optional[dict] = None):
    """A Problem for ``cell`` in ``dtype``, sized within the backend's limits and ``limits`` (a property's cap).

    Input magnitudes go from 0 and tiny to huge (x_scales); h0 and c0 from zero to beyond the
    states' range; upstream gradients are unit normal.
    """
    dtype = np.dtype(dtype)
    T, B, I, H = draw(sizes(limits_for(backend, limits), cell, min_T=min_T, max_T=max_T), label="T, B, I, H")
    regime = draw(st.sampled_from(regimes), label="regime")
    x_scale = draw(st.sampled_from(x_scales), label="x scale")
    state_scale = draw(st.sampled_from((0.5, 0.0, 1.0, 3.0)), label="h0/c0 scale")
    seed = draw(st.integers(0, 2 ** 32 - 1), label="seed")
    rng = np.random.default_rng(seed)

    def normal(*shape, scale=1.0):
        return np.ascontiguousarray(rng.standard_normal(shape) * scale, dtype=dtype)

    lstm = cell == "lstm"
    x, h0 = normal(T, B, I, scale=x_scale), normal(B, H, scale=state_scale)
    c0 = normal(B, H, scale=state_scale) if lstm else None
    params = draw_params(draw, cell, I, H, dtype, regime, rng, x_max=float(np.abs(x).max(initial=0.0)),
                         h_max=max(float(np.abs(h0).max(initial=0.0)), float(np.abs(c0).max(initial=0.0)) if lstm else 0.0))
    return Problem(cell=cell, params=params, x=x, h0=h0, c0=c0, dhs=normal(T, B, H), dh_n=normal(B, H),
                   dc_n=normal(B, H) if lstm else None, regime=regime)


# ----- malformed calls (robustness) -------------------------------------------------------------

DEFECTS = ("ndim", "size_mismatch", "mixed_dtypes", "integer_dtype", "non_finite", "c0_presence",
           "params_for_other_cell")


@st.composite
def malformed_calls(draw, backend, cell: str, dtype):
    """(which, kwargs, defect, argument): the arguments of forward or backward with one defect.

    ``which`` is "forward" or "backward" ("forward" only on a forward-only backend); the defect
    is placed in the drawn argument. Arrays of the wrong ndim or dtype come from hypothesis.extra.numpy.
    backward's arguments include forward's trace (fwd.hs, fwd.gates, and fwd.cs for lstm), which the
    test computes; a defect drawn there is kwargs["fwd_edits"], {field: the array to put in its place}.
    """
    problem = draw(problems(backend, cell, dtype, regimes=("pytorch_init",), x_scales=(1.0,),
                            limits={"T": 4, "B": 3, "I": 4, "H": 5}), label="well-formed problem")
    which = draw(st.sampled_from(("forward", "backward") if has_backward(backend) else ("forward",)), label="call")
    defect = draw(st.sampled_from(DEFECTS), label="defect")
    args = {"params": problem.params, "x": problem.x, "h0": problem.h0, "c0": problem.c0}
    names = ["x", "h0"] + (["c0"] if cell == "lstm" else []) + ["w_ih", "w_hh", "b_ih", "b_hh"]
    T, B, _ = problem.x.shape
    H = problem.h0.shape[1]
    # forward's trace as backward reads it: the shapes are known here, the values only once the test
    # has run forward, so a defect there replaces the whole array (non-finite: zeros and one NaN or inf)
    trace = {"fwd.hs": (T, B, H), "fwd.gates": (T, B, NUM_GATES[cell] * H)}
    if cell == "lstm":
        trace["fwd.cs"] = (T, B, H)
    if which == "backward":
        args.update(dhs=problem.dhs, dh_n=problem.dh_n, dc_n=problem.dc_n, fwd_edits={})
        names += ["dhs", "dh_n"] + (["dc_n"] if cell == "lstm" else []) + list(trace)
    target = draw(st.sampled_from(names), label="argument")

    def get(name):
        if name in trace:
            return np.zeros(trace[name], dtype)
        return getattr(args["params"], name) if name.startswith(("w_", "b_")) else args[name]

    def put(name, value):
        if name in trace:
            args["fwd_edits"][name[len("fwd."):]] = value
        elif name.startswith(("w_", "b_")):
            args["params"] = args["params"]._replace(**{name: value})
        else:
            args[name] = value

    original = get(target)
    if defect == "ndim":
        ndim = draw(st.integers(0, 4).filter(lambda n: n != original.ndim), label="wrong ndim")
        put(target, draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=ndim, max_dims=ndim, min_side=1, max_side=4),
                                    elements=st.floats(-1, 1, width=dtype.itemsize * 8)), label="bad array"))
    elif defect == "size_mismatch":
        # forward reads T from x alone, so a longer x is no defect there; everywhere else it is.
        first_axis = 1 if (which, target) == ("forward", "x") else 0
        axis = draw(st.integers(first_axis, original.ndim - 1), label="axis")
        grow = draw(st.integers(1, 3), label="extra size")
        shape = list(original.shape)
        shape[axis] += grow
        put(target, np.zeros(shape, dtype))
    elif defect == "mixed_dtypes":
        other = np.float32 if dtype == np.float64 else np.float64
        put(target, original.astype(other))
    elif defect == "integer_dtype":
        int_dtype = draw(hnp.integer_dtypes() | hnp.unsigned_integer_dtypes() | st.just(np.dtype(np.float16))
                         | hnp.complex_number_dtypes(), label="unsupported dtype")
        put(target, np.zeros(original.shape, int_dtype))
    elif defect == "non_finite":
        target = draw(st.sampled_from([n for n in names if get(n).size > 0]), label="non-finite argument")
        original = get(target)
        bad = original.copy()
        index = draw(st.integers(0, bad.size - 1), label="index")
        bad.flat[index] = draw(st.sampled_from((np.nan, np.inf, -np.inf)), label="value")
        put(target, bad)
    elif defect == "c0_presence":
        if cell == "lstm":
            args["c0"] = None  # lstm needs c0
        else:
            args["c0"] = np.zeros_like(problem.h0)  # other cells must not be given one
    else:  # params_for_other_cell
        others = [c for c in NUM_GATES if NUM_GATES[c] != NUM_GATES[cell] and c in backend.cells]
        other = draw(st.sampled_from(others or ["lstm" if cell != "lstm" else "gru"]), label="other cell")
        G, H, I = NUM_GATES[other], problem.h0.shape[1], problem.x.shape[2]
        rng = np.random.default_rng(0)
        args["params"] = Params(*(rng.uniform(-0.1, 0.1, shape).astype(dtype)
                                  for shape in ((G * H, I), (G * H, H), (G * H,), (G * H,))))
        defect = f"{defect} ({other})"
    return which, args, problem, f"{defect} in {target}"


# ----- layers (reference.layers; properties/test_layers.py) ---------------------------------------

#: Largest sizes a layer property draws: a layer example runs 2·L·D·(distinct lengths) cell calls
#: and the properties call it several times, so the sizes stay small; tails and large shapes are
#: the cell-level families' job. A backend's max_test_sizes lowers them further.
LAYER_LIMITS = {"T": 6, "B": 4, "I": 8, "H": 8}
MAX_LAYERS = 2
#: A slow backend (one that declares max_test_sizes: jit.cuda under the simulator, where one cell
#: call costs ~0.1 s) gets at most these sizes and this many layer-directions, L·D, in a problem.
SLOW_BACKEND_LAYER_LIMITS = {"T": 3, "B": 2, "I": 3, "H": 4}
SLOW_BACKEND_LAYER_DIRECTIONS = 2
#: lengths: None (every row runs T steps), "drawn" (None or B integers in 1..T, any order),
#: "given" (B integers in 1..T), "short" (given, at least one row shorter than T; needs T ≥ 2).
LENGTHS = (None, "drawn", "given", "short")


@dataclass(frozen=True)
class LayerProblem:
    """One layer call's worth of arguments (reference.layers.forward's), plus backward's upstream gradients."""

    cell: str
    params: tuple  # per layer-direction, PyTorch's order: Params, or ProjectedParams (lstm with w_hr)
    x: np.ndarray  # (T, B, I)
    h0: np.ndarray  # (L·D, B, H_out)
    c0: Optional[np.ndarray]  # (L·D, B, H), lstm only
    lengths: Optional[np.ndarray]  # (B,) integers in 1..T, or None
    bidirectional: bool
    dhs: np.ndarray  # (T, B, D·H_out)
    dh_n: np.ndarray  # (L·D, B, H_out)
    dc_n: Optional[np.ndarray]  # (L·D, B, H), lstm only
    regime: str = "pytorch_init"

    @property
    def dtype(self) -> np.dtype:
        return self.x.dtype

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def num_layers(self) -> int:
        return len(self.params) // self.num_directions

    @property
    def proj_size(self) -> Optional[int]:
        w_hr = getattr(self.params[0], "w_hr", None)
        return None if w_hr is None else w_hr.shape[0]

    def row_lengths(self) -> np.ndarray:
        return np.full(self.x.shape[1], self.x.shape[0]) if self.lengths is None else np.asarray(self.lengths)

    def astype(self, dtype) -> "LayerProblem":
        """The same problem in another dtype (float32 → float64 is exact)."""
        def cast(a):
            return None if a is None else a.astype(dtype)
        return replace(self, params=tuple(type(p)(*(cast(a) for a in p)) for p in self.params), x=cast(self.x),
                       h0=cast(self.h0), c0=cast(self.c0), dhs=cast(self.dhs), dh_n=cast(self.dh_n),
                       dc_n=cast(self.dc_n))

    def forward(self, layers, **kwargs):
        """``layers``: anything with layer_forward (a backend's own, or reference.layers.composed(backend))."""
        note_example(f"layer_forward: {self.describe()}")
        return layers.layer_forward(self.cell, list(self.params), self.x, self.h0, self.c0,
                                    bidirectional=self.bidirectional, lengths=self.lengths, **kwargs)

    def backward(self, layers, fwd):
        note_example(f"layer_backward: {self.describe()}")
        return layers.layer_backward(self.cell, list(self.params), self.x, self.h0, self.c0, fwd, self.dhs,
                                     self.dh_n, self.dc_n, bidirectional=self.bidirectional, lengths=self.lengths)

    def describe(self) -> str:
        T, B, I = self.x.shape
        H = self.params[0].w_hh.shape[0] // NUM_GATES[self.cell]
        projection = f" P={self.proj_size}" if self.proj_size else ""
        lengths = "" if self.lengths is None else f" lengths={list(map(int, self.lengths))}"
        return (f"{self.cell} {self.dtype} L={self.num_layers} D={self.num_directions} T={T} B={B} I={I} H={H}"
                f"{projection}{lengths} regime={self.regime}")


def draw_projection(draw, P, H, dtype, regime, rng) -> np.ndarray:
    """W_hr (P, H) in the regime of the other params: PyTorch's U(−1/√H, 1/√H); contracting: scaled
    to ‖W_hr‖∞, ‖W_hr‖₁ ≤ 1, so |h| ≤ 1 and the step's Lipschitz bound is the plain lstm's
    (properties.conditioning.projected_conditioning); wide: N(0, s²/H)."""
    if regime == "contracting":
        w_hr = rng.uniform(-1, 1, (P, H))
        w_hr /= max(np.abs(w_hr).sum(axis=1).max(), np.abs(w_hr).sum(axis=0).max())
    elif regime == "wide":
        w_hr = rng.standard_normal((P, H)) * draw(st.floats(0.1, 3.0), label="w_hr scale s") / np.sqrt(H)
    else:
        w_hr = rng.uniform(-1 / np.sqrt(H), 1 / np.sqrt(H), (P, H))
    return np.ascontiguousarray(w_hr, dtype=dtype)


def draw_lengths(draw, T: int, B: int, mode) -> Optional[np.ndarray]:
    """Row lengths in 1..T, in any order (hypothesis.extra.numpy), as ``mode`` says (LENGTHS)."""
    if mode is None:
        return None
    given = hnp.arrays(np.int64, B, elements=st.integers(1, T))
    if mode == "drawn":
        return draw(st.none() | given, label="lengths")
    lengths = draw(given, label="lengths")
    if mode == "short":
        row = draw(st.integers(0, B - 1), label="short row")
        lengths[row] = draw(st.integers(1, T - 1), label="its length")
    return lengths


@st.composite
def layer_problems(draw, backend, cell: str, dtype, *, regimes=REGIMES, x_scales=(1.0, 0.1, 3.0), layers=None,
                   bidirectional=None, projection=None, lengths="drawn", min_T=1, limits=None):
    """A LayerProblem for ``cell`` in ``dtype``.

    layers: the number L, or None to draw 1..MAX_LAYERS; bidirectional: a bool, or None to draw;
    projection (lstm): True, False, or None to draw (P in 1..H−1); lengths: one of LENGTHS.
    Layer k's params are drawn in the regime for inputs bounded by layer k−1's h_max (a priori,
    properties.conditioning), so "contracting" contracts in every layer.
    """
    dtype = np.dtype(dtype)
    # What the backend's layers lack is never drawn (a property that needs it is skipped before).
    features = layer_features(backend)
    if "lengths" not in features:
        lengths = None
    if "bidirectional" not in features:
        bidirectional = False
    if "projection" not in features:
        projection = False
    slow = bool(getattr(backend, "max_test_sizes", None))
    caps = [LAYER_LIMITS, limits or {}] + ([SLOW_BACKEND_LAYER_LIMITS] if slow else [])
    limits = limits_for(backend, {dim: min(cap.get(dim, LAYER_LIMITS[dim]) for cap in caps) for dim in LAYER_LIMITS})
    if lengths == "short":
        min_T = max(min_T, 2)
    lstm = cell == "lstm"
    projected = lstm and projection is not False and draw(
        st.just(True) if projection else st.booleans(), label="projection")
    H = draw(st.integers(2 if projected else 1, max(limits["H"], 2 if projected else 1)), label="H")
    B = draw(st.integers(1, limits["B"]), label="B")
    I = draw(st.integers(1, limits["I"]), label="I")
    T = draw(st.integers(min_T, max(min_T, limits["T"])), label="T")
    if bidirectional is None:
        too_many = slow and (layers or 1) * 2 > SLOW_BACKEND_LAYER_DIRECTIONS
        bidirectional = False if too_many else draw(st.booleans(), label="bidirectional")
    D = 2 if bidirectional else 1
    most_layers = max(1, SLOW_BACKEND_LAYER_DIRECTIONS // D) if slow else MAX_LAYERS
    L = layers if layers is not None else draw(st.integers(1, most_layers), label="layers L")
    P = draw(st.integers(1, H - 1), label="proj_size P") if projected else None
    H_out = P or H
    row_lengths = draw_lengths(draw, T, B, lengths)
    regime = draw(st.sampled_from(regimes), label="regime")
    x_scale = draw(st.sampled_from(x_scales), label="x scale")
    state_scale = draw(st.sampled_from((0.5, 0.0, 1.0, 3.0)), label="h0/c0 scale")
    seed = draw(st.integers(0, 2 ** 32 - 1), label="seed")
    rng = np.random.default_rng(seed)

    def normal(*shape, scale=1.0):
        return np.ascontiguousarray(rng.standard_normal(shape) * scale, dtype=dtype)

    x = normal(T, B, I, scale=x_scale)
    h0 = normal(L * D, B, H_out, scale=state_scale)
    c0 = normal(L * D, B, H, scale=state_scale) if lstm else None
    params, x_max = [], float(np.abs(x).max(initial=0.0))
    for layer in range(L):
        width = I if layer == 0 else D * H_out
        h_bounds = []
        for k in range(layer * D, (layer + 1) * D):
            h_max = max(float(np.abs(h0[k]).max(initial=0.0)), float(np.abs(c0[k]).max(initial=0.0)) if lstm else 0.0)
            p = draw_params(draw, cell, width, H, dtype, regime, rng, x_max=x_max, h_max=h_max)
            if projected:  # W_hh reads the P-wide state: its first P columns (norms only shrink)
                p = ProjectedParams(p.w_ih, np.ascontiguousarray(p.w_hh[:, :P]), p.b_ih, p.b_hh,
                                    draw_projection(draw, P, H, dtype, regime, rng))
            params.append(p)
            h_bounds.append(direction_conditioning(cell, p, x_max, (T, B, width), h0[k],
                                                   c0[k] if lstm else None).h_max)
        x_max = max(h_bounds)
    return LayerProblem(cell=cell, params=tuple(params), x=x, h0=h0, c0=c0, lengths=row_lengths,
                        bidirectional=bidirectional, dhs=normal(T, B, D * H_out), dh_n=normal(L * D, B, H_out),
                        dc_n=normal(L * D, B, H) if lstm else None, regime=regime)
