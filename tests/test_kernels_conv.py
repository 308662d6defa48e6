"""Tests of refvbc/kernels/conv.py: every numba kernel against its NumPy reference, float32 and float64,
and the numba-backed conv layers against the independent einsum references."""

import numpy as np
import pytest

from refvbc import layers as L
from refvbc.kernels import conv as K

DTYPES = [np.float32, np.float64]
# (x shape, kernel (kh, kw)); includes the LeNet-5 conv1/conv2 geometries with a small batch
GEOMS = [((2, 1, 28, 28), (5, 5)), ((3, 20, 12, 12), (5, 5)), ((2, 3, 7, 5), (3, 2)), ((1, 2, 4, 4), (1, 1)),
         ((2, 2, 3, 6), (3, 6))]
TOL = {np.float32: 2e-6, np.float64: 1e-13}


def rel_err(a, b):
    """max|a-b| / max(max|a|, max|b|, 1e-12)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.max(np.abs(a - b)) / max(np.max(np.abs(a)), np.max(np.abs(b)), 1e-12)


def assert_close(name, got, ref, dtype):
    assert got.shape == ref.shape, f"{name}: shape {got.shape}, expected {ref.shape}"
    assert got.dtype == dtype, f"{name}: dtype {got.dtype}, expected {np.dtype(dtype)}"
    e = rel_err(got, ref)
    assert e <= TOL[dtype], f"{name}: relative error {e:.3e} > {TOL[dtype]:.0e}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,k", GEOMS)
def test_im2col_pair_exact(dtype, xs, k):
    x = np.random.default_rng(0).standard_normal(xs).astype(dtype)
    cols, cols_sq = K.im2col_pair_numba(x, k[0], k[1], True)
    ref = K.im2col_numpy(x, *k)
    np.testing.assert_array_equal(cols, ref, err_msg="im2col_pair_numba cols vs im2col_numpy")
    np.testing.assert_array_equal(cols_sq, ref * ref, err_msg="im2col_pair_numba cols_sq vs im2col_numpy**2")
    assert cols.dtype == dtype and cols_sq.dtype == dtype
    np.testing.assert_array_equal(K.im2col_numba(x, *k), ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,k", GEOMS)
def test_col2im(dtype, xs, k):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(xs).astype(dtype)
    P = (xs[2] - k[0] + 1) * (xs[3] - k[1] + 1)
    dcols = rng.standard_normal((xs[0] * P, xs[1] * k[0] * k[1])).astype(dtype)
    dcols_sq = rng.standard_normal(dcols.shape).astype(dtype)
    assert_close("col2im_numba", K.col2im_numba(dcols, xs, *k), K.col2im_numpy(dcols, xs, *k), dtype)
    assert_close("col2im_pair_numba", K.col2im_pair_numba(dcols, dcols_sq, x, k[0], k[1], True),
                 K.col2im_pair_numpy(dcols, dcols_sq, x, *k), dtype)


@pytest.mark.parametrize("xs,k", GEOMS)
def test_col2im_is_adjoint_of_im2col(xs, k):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(xs)
    cols = K.im2col_numba(x, *k)
    c = rng.standard_normal(cols.shape)
    lhs, rhs = np.sum(cols * c), np.sum(x * K.col2im_numba(c, xs, *k))
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs)), f"<im2col x, c> = {lhs}, <x, col2im c> = {rhs}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,F,OH,OW", [(3, 4, 5, 2), (1, 50, 8, 8)])
def test_layout_kernels(dtype, B, F, OH, OW):
    rng = np.random.default_rng(3)
    rows = rng.standard_normal((B * OH * OW, F)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    d = rng.standard_normal((B, F, OH, OW)).astype(dtype)
    np.testing.assert_array_equal(K.rows_to_nchw_bias_numba(rows, b, B, OH, OW),
                                  K.rows_to_nchw_bias_numpy(rows, b, B, OH, OW))
    np.testing.assert_array_equal(K.nchw_to_rows_numba(d), K.nchw_to_rows_numpy(d))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,k", GEOMS)
@pytest.mark.parametrize("F", [1, 6])
def test_conv2d_numba_vs_numpy(dtype, xs, k, F):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal((F, xs[1]) + k).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    out, cache = L.conv2d_forward(x, w, b)
    x64, w64, b64 = x.astype(np.float64), w.astype(np.float64), b.astype(np.float64)
    # the reference in float64: what the float32 result approximates
    assert_close("conv2d_forward", out, K.conv2d_forward_numpy(x64, w64, b64), dtype)
    dout = rng.standard_normal(out.shape).astype(dtype)
    refs = K.conv2d_backward_numpy(dout.astype(np.float64), x64, w64)
    for name, got, ref in zip(["dx", "dw", "db"], L.conv2d_backward(dout, cache), refs):
        assert_close(f"conv2d_backward {name}", got, ref, dtype)


def test_conv2d_numpy_reference_is_dtype_preserving():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    w = rng.standard_normal((3, 2, 2, 2)).astype(np.float32)
    out = K.conv2d_forward_numpy(x, w, np.zeros(3, np.float32))
    assert out.dtype == np.float32
    assert all(g.dtype == np.float32 for g in K.conv2d_backward_numpy(np.ones_like(out), x, w))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 4, 6), (1, 20, 24, 24), (3, 1, 2, 2)])
def test_maxpool_numba_vs_numpy(dtype, shape):
    rng = np.random.default_rng(6)
    x = rng.standard_normal(shape).astype(dtype)
    x.reshape(-1)[::7] = 0.5  # ties inside windows: both must pick the first maximum
    out, arg = K.maxpool2x2_forward_numba(x)
    out_r, arg_r = K.maxpool2x2_forward_numpy(x)
    np.testing.assert_array_equal(out, out_r, err_msg="maxpool2x2_forward_numba out")
    np.testing.assert_array_equal(arg, arg_r, err_msg="maxpool2x2_forward_numba arg")
    d = rng.standard_normal(out.shape).astype(dtype)
    np.testing.assert_array_equal(K.maxpool2x2_backward_numba(d, arg), K.maxpool2x2_backward_numpy(d, arg_r),
                                  err_msg="maxpool2x2_backward_numba")
    assert out.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 4, 6), (5, 20, 24, 24), (1, 1, 2, 2)])
def test_relu_maxpool_fused_matches_relu_then_pool(dtype, shape):
    rng = np.random.default_rng(11)
    x = rng.standard_normal(shape).astype(dtype)
    x[..., ::3, ::2] = 0.0                      # ties and zeros
    x[0, 0, :2, :2] = -1.0                      # an all-negative window
    x.reshape(-1)[5::7] = x.reshape(-1)[4::7][:x.reshape(-1)[5::7].size]  # equal neighbours
    out, arg = K.relu_maxpool2x2_forward_numba(x)
    ro, ra = K.relu_maxpool2x2_forward_numpy(x)
    np.testing.assert_array_equal(out, ro, err_msg="relu_maxpool forward vs NumPy twin")
    np.testing.assert_array_equal(arg, ra, err_msg="relu_maxpool arg vs NumPy twin")
    d = rng.standard_normal(out.shape).astype(dtype)
    dx = K.relu_maxpool2x2_backward_numba(d, arg)
    np.testing.assert_array_equal(dx, K.relu_maxpool2x2_backward_numpy(d, arg), err_msg="backward vs twin")
    # the layer pair against the separate ReLU and max-pool layers (each checked by central differences)
    lo, lc = L.relu_maxpool2x2_forward(x)
    r1, c1 = L.relu_forward(x)
    p1, c2 = L.maxpool2x2_forward(r1)
    np.testing.assert_array_equal(lo, p1, err_msg="relu_maxpool2x2_forward vs maxpool(relu)")
    np.testing.assert_array_equal(L.relu_maxpool2x2_backward(d, lc), L.relu_backward(L.maxpool2x2_backward(d, c2), c1),
                                  err_msg="relu_maxpool2x2_backward vs relu_backward(maxpool_backward)")
    assert lo.dtype == dtype
