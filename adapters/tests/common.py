"""What the adapters' tests share: a fixed small problem, float64 copies, the oracle tolerance, and the
check that a finding's presence matches the versions its adapter's FOUND_IN lists."""
import numpy as np
import pytest

import reference

UNIT_ROUNDOFF = {np.dtype(np.float32): 2.0 ** -24, np.dtype(np.float64): 2.0 ** -53}


def problem(cell, dtype=np.float32, T=5, B=3, I=4, H=6, seed=0):
    """params (PyTorch's init), x, h0, c0 (lstm) and upstream gradients of a fixed small example."""
    rng = np.random.default_rng(seed)
    params = reference.init_params(cell, I, H, dtype=dtype, seed=seed)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = (0.5 * rng.standard_normal((B, H))).astype(dtype)
    c0 = (0.5 * rng.standard_normal((B, H))).astype(dtype) if cell == "lstm" else None
    dhs = rng.standard_normal((T, B, H)).astype(dtype)
    dh_n = rng.standard_normal((B, H)).astype(dtype)
    dc_n = rng.standard_normal((B, H)).astype(dtype) if cell == "lstm" else None
    return params, x, h0, c0, dhs, dh_n, dc_n


def float64(a):
    """An array, a params record or a list of them, in float64 (exact from float32)."""
    if a is None:
        return None
    if isinstance(a, (list, tuple)) and a and hasattr(a[0], "w_ih"):
        return [type(p)(*(np.asarray(v, np.float64) for v in p)) for p in a]
    if hasattr(a, "w_ih"):
        return type(a)(*(np.asarray(v, np.float64) for v in a))
    return np.asarray(a, np.float64)


def oracle_tolerance(T, B, I, H, dtype):
    """|framework − reference in float64| relative to max(1, |value|): docs/tolerances.md's oracle bound
    8·(T + 1)·(I + H + 2 + B)·u. T steps of (I + H + 2)-term pre-activations at PyTorch's (contracting)
    init add T·(I + H + 2)·u; weight gradients sum T·B terms more; ×2 for two summation orders, ×4 for
    the activations' last bits. In float32 the float64 reference's own error is 2^29 times smaller."""
    return 8 * (T + 1) * (I + H + 2 + B) * UNIT_ROUNDOFF[np.dtype(dtype)]


def expect_found(framework, installed, found_in, page, finding, present):
    """A finding is present exactly in the versions ``found_in[finding]`` lists; anything else means
    the record (FOUND_IN and the findings page) is out of date."""
    listed = installed in found_in[finding]
    if present and not listed:
        pytest.fail(f"{finding} is present in {framework} {installed}, which FOUND_IN and {page.name} do not "
                    f"list: add it to both")
    if listed and not present:
        pytest.fail(f"{finding} is absent from {framework} {installed}, which FOUND_IN lists: fixed? Remove the "
                    f"version from FOUND_IN and {page.name}, and the guard or KnownDefect if no version in use "
                    f"has it")
