"""jit.cuda's tiled matmul (jit/cuda/matmul.py) against NumPy: every transpose, bias on and off,
several tiles with a tail in M, N and K, an empty K, a column-block view, and the summation order.

Sizes come from the tiles in use (jit.cuda.launch.TILES), so under the CUDA simulator (16×16 output
tiles, K step 4) and on a GPU (128×128, K step 8) every case crosses the same edges.
"""
import numpy as np
import pytest

cuda_backend = pytest.importorskip("jit.cuda").backend
if not cuda_backend.available():
    pytest.skip("jit.cuda: no CUDA GPU and the CUDA simulator is off (NUMBA_ENABLE_CUDASIM=0)",
                allow_module_level=True)

from numba import cuda  # noqa: E402  (after the availability check: numba.cuda is usable)

from jit.cuda.backend import _matmul  # noqa: E402
from jit.cuda.launch import SIMULATOR, TILES  # noqa: E402

BLOCK = TILES.matmul * TILES.matmul_work
KSTEP = TILES.matmul_depth
#: Three output tiles in M and in N, each with a partial last one, and four K steps, the last partial.
M, N, K = 2 * BLOCK + 3, 2 * BLOCK + 5, 3 * KSTEP + 1


def operands(M, N, K, dtype, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((M, K)).astype(dtype), rng.standard_normal((K, N)).astype(dtype),
            rng.standard_normal(N).astype(dtype))


def run_matmul(a, b, bias, trans_a, trans_b):
    """The kernel on op(a) = a, op(b) = b, stored transposed where the flag says; c back on the host."""
    c = cuda.device_array((a.shape[0], b.shape[1]), a.dtype)
    _matmul(cuda.to_device(np.ascontiguousarray(a.T) if trans_a else a),
            cuda.to_device(np.ascontiguousarray(b.T) if trans_b else b), c, trans_a=trans_a, trans_b=trans_b,
            bias=None if bias is None else cuda.to_device(bias))
    return c.copy_to_host()


def in_k_order(a, b, bias):
    """The kernel's summation, in a's dtype: per element one accumulator from 0 over k = 0, 1, …, then
    + bias. NumPy's elementwise + and × round like the simulator's scalar ones, so the bits agree there."""
    acc = np.zeros((a.shape[0], b.shape[1]), a.dtype)
    for k in range(a.shape[1]):
        acc = acc + a[:, k:k + 1] * b[k:k + 1, :]
    return acc if bias is None else acc + bias


def assert_within_rounding(got, a, b, bias):
    """|c − exact| ≤ γ_{K+1} (|a| |b| + |bias|) ≤ (K + 1)·eps·(…) for any summation order of K products
    and the bias (Higham, Accuracy and Stability, 3.5; γ_n = n·u/(1 − n·u), u = eps/2, so γ_n < n·eps).
    'exact' is the product in long double, whose own error is far below that bound on x86."""
    a_l, b_l = a.astype(np.longdouble), b.astype(np.longdouble)
    exact = a_l @ b_l + (0 if bias is None else bias.astype(np.longdouble))
    scale = np.abs(a_l) @ np.abs(b_l) + (0 if bias is None else np.abs(bias.astype(np.longdouble)))
    bound = (a.shape[1] + 1) * np.finfo(a.dtype).eps * scale
    bad = np.abs(got.astype(np.longdouble) - exact) > bound
    assert not bad.any(), (f"{bad.sum()} of {bad.size} elements off, first at {tuple(np.argwhere(bad)[0])}: "
                           f"got {got[tuple(np.argwhere(bad)[0])]}, want {exact[tuple(np.argwhere(bad)[0])]}")


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["NN", "TN", "NT", "TT"])
def test_matmul_matches_numpy_across_tiles_in_m_n_and_k(trans_a, trans_b, use_bias):
    a, b, bias = operands(M, N, K, np.float64, seed=2 * trans_a + trans_b)
    bias = bias if use_bias else None
    got = run_matmul(a, b, bias, trans_a, trans_b)
    assert got.dtype == np.float64 and got.shape == (M, N)
    assert_within_rounding(got, a, b, bias)
    if SIMULATOR:  # a GPU may fuse × and + into one rounding (FMA): then only the bound above holds
        np.testing.assert_array_equal(got, in_k_order(a, b, bias))


def test_float32_stays_float32_across_tiles():
    a, b, bias = operands(M, N, K, np.float32, seed=7)
    got = run_matmul(a, b, bias, True, True)
    assert got.dtype == np.float32
    assert_within_rounding(got, a, b, bias)
    if SIMULATOR:
        np.testing.assert_array_equal(got, in_k_order(a, b, bias))


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no-bias"])
def test_empty_k_gives_the_bias_or_zeros(use_bias):
    """K = 0 (an input with no features): no K step at all, c is the bias on every row, or zeros."""
    a, b, bias = operands(BLOCK + 1, 3, 0, np.float64, seed=3)
    got = run_matmul(a, b, bias if use_bias else None, True, False)
    np.testing.assert_array_equal(got, np.broadcast_to(bias if use_bias else 0.0, (BLOCK + 1, 3)))


def test_exact_zero_terms_leave_the_bits_alone():
    """dW = daᵀ x sums over T·B rows, and the layers' padded positions give da = 0 there: with rows of
    zeros inserted (K grows past another K step) every element keeps its bits, so padding cannot make
    the layers differ from the cell kernels. Holds with FMA too: fma(0, x, s) = s."""
    a, b, _ = operands(M, N, K, np.float64, seed=11)
    inserted = np.arange(0, 2 * K, 2)  # a real row at every other position of K' = 2K
    a_padded = np.zeros((M, 2 * K))
    a_padded[:, inserted] = a
    b_padded = np.zeros((2 * K, N))
    b_padded[inserted] = b
    b_padded[inserted + 1] = 1e300  # × an exact zero of a: still 0
    np.testing.assert_array_equal(run_matmul(a_padded, b_padded, None, True, False),
                                  run_matmul(a, b, None, True, False))


def test_a_column_block_view_is_read_through_its_strides():
    """Backward passes da_h[:, rows] (a column block of a wider array) as op(a)ᵀ for dW_hh."""
    a, b, _ = operands(M, N, K, np.float64, seed=5)
    wide = np.random.default_rng(6).standard_normal((K, M + 7))
    wide[:, 4:4 + M] = a.T
    c = cuda.device_array((M, N))
    _matmul(cuda.to_device(wide)[:, 4:4 + M], cuda.to_device(b), c, trans_a=True)
    got = c.copy_to_host()
    assert_within_rounding(got, a, b, None)
    if SIMULATOR:
        np.testing.assert_array_equal(got, in_k_order(a, b, None))
