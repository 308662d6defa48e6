"""Tests of refvbc/kernels/conv.py: every numba kernel against its NumPy reference, float32 and float64,
and the numba-backed conv layers against the independent einsum references."""

import numpy as np
import pytest

from support.gradcheck import rel_err
from refvbc import layers as L
from refvbc.kernels import conv as K

DTYPES = [np.float32, np.float64]
# (x shape, kernel (kh, kw)); includes the LeNet-5 conv1/conv2 geometries with a small batch
GEOMS = [((2, 1, 28, 28), (5, 5)), ((3, 20, 12, 12), (5, 5)), ((2, 3, 7, 5), (3, 2)), ((1, 2, 4, 4), (1, 1)),
         ((2, 2, 3, 6), (3, 6))]
TOL = {np.float32: 2e-6, np.float64: 1e-13}


def assert_close(name, got, ref, dtype):
    assert got.shape == ref.shape, f"{name}: shape {got.shape}, expected {ref.shape}"
    assert got.dtype == dtype, f"{name}: dtype {got.dtype}, expected {np.dtype(dtype)}"
    e = rel_err(got, ref)
    assert e <= TOL[dtype], f"{name}: relative error {e:.3e} > {TOL[dtype]:.0e}"


@pytest.mark.parametrize("xs,k", GEOMS)
def test_col2im_t_is_adjoint_of_im2col_t(xs, k):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(xs)
    colsT = K.im2col_t_pair_numba(x, k[0], k[1], False)[0]
    c = rng.standard_normal(colsT.shape)
    lhs, rhs = np.sum(colsT * c), np.sum(x * K.col2im_t_pair_numba(c, c, x, k[0], k[1], False))
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs)), f"<im2col_t x, c> = {lhs}, <x, col2im_t c> = {rhs}"


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


# "columns" layout kernels (the (K, B*P) layout of the variational conv)

CONV_SHAPES = [(2, 1, 8, 8, 3, 5, 5), (3, 4, 7, 6, 5, 3, 2), (1, 2, 5, 5, 1, 5, 5)]  # B, C, H, W, F, kh, kw


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", CONV_SHAPES)
def test_columns_layout_kernels_match_numpy(shape, dtype):
    B, C, H, W, F, kh, kw = shape
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal((B, C, H, W)).astype(dtype)
    OH, OW = H - kh + 1, W - kw + 1
    Kc, BP = C * kh * kw, B * OH * OW
    tol = 1e-6 if dtype == np.float32 else 1e-14
    cT, cTs = K.im2col_t_pair_numba(x, kh, kw, True)
    ref = K.im2col_t_numpy(x, kh, kw)
    np.testing.assert_array_equal(cT, ref, err_msg="im2col_t")
    np.testing.assert_array_equal(cTs, ref * ref, err_msg="im2col_t squared")
    assert K.im2col_t_pair_numba(x, kh, kw, False)[1].shape == (0, BP)
    d1 = rng.standard_normal((Kc, BP)).astype(dtype)
    d2 = rng.standard_normal((Kc, BP)).astype(dtype)
    got = K.col2im_t_pair_numba(d1, d2, x, kh, kw, True)
    np.testing.assert_allclose(got, K.col2im_t_pair_numpy(d1, d2, x, kh, kw), rtol=tol, atol=tol,
                               err_msg="col2im_t_pair")
    got1 = K.col2im_t_pair_numba(d1, d2, x, kh, kw, False)
    np.testing.assert_allclose(got1, K.col2im_numpy(d1.T, x.shape, kh, kw), rtol=tol, atol=tol)
    m = rng.standard_normal((F, BP)).astype(dtype)
    v = rng.random((F, BP)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    eps = rng.standard_normal((B, F, OH, OW)).astype(dtype)
    y, std = K.vconv_output_t_numba(m, v, b, eps, dtype(1e-8))
    yr, sr = K.vconv_output_t_numpy(m, v, b, eps, dtype(1e-8))
    np.testing.assert_allclose(y, yr, rtol=tol, atol=tol, err_msg="vconv_output_t y")
    np.testing.assert_allclose(std, sr, rtol=tol, atol=tol, err_msg="vconv_output_t std")
    dy = rng.standard_normal((B, F, OH, OW)).astype(dtype)
    dm, dv = K.vconv_dout_t_numba(dy, eps, std)
    dmr, dvr = K.vconv_dout_t_numpy(dy, eps, std)
    np.testing.assert_array_equal(dm, dmr, err_msg="vconv_dout_t dm")
    np.testing.assert_allclose(dv, dvr, rtol=tol, atol=tol, err_msg="vconv_dout_t dv")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_backward_kernel_matches_numpy(dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(1000).astype(dtype)
    x[::7] = 0.0
    d = rng.standard_normal(1000).astype(dtype)
    got = K.relu_backward_numba(d, x)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, K.relu_backward_numpy(d, x))


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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", CONV_SHAPES)
def test_conv_output_and_dout_without_noise_match_numpy(shape, dtype):
    B, C, H, W, F, kh, kw = shape
    rng = np.random.default_rng(7 + sum(shape))
    OH, OW = H - kh + 1, W - kw + 1
    m = rng.standard_normal((F, B * OH * OW)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    out = np.empty((B, F, OH, OW), dtype=dtype)
    K.conv_output_t_into(m, b, out)
    np.testing.assert_array_equal(out, K.conv_output_t_numpy(m, b, OH, OW), err_msg="conv_output_t_into")
    dy = rng.standard_normal((B, F, OH, OW)).astype(dtype)
    dm = np.empty((F, B * OH * OW), dtype=dtype)
    empty = np.empty((0,), dtype=dtype)
    K.vconv_dout_t_into(dy, empty, empty, dm, np.empty((0, B * OH * OW), dtype=dtype))
    np.testing.assert_array_equal(dm, K.nchw_to_rows_numpy(dy).T, err_msg="vconv_dout_t_into without noise")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (7, 30), (100, 500)])
def test_vdense_elementwise_kernels_match_numpy(shape, dtype):
    rng = np.random.default_rng(shape[1])
    m, eps, dy = (rng.standard_normal(shape).astype(dtype) for _ in range(3))
    v = rng.random(shape).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    y, std = np.empty_like(m), np.empty_like(m)
    K.vdense_output_into(m, v, b, eps, dtype(1e-8), y, std)
    yr, sr = K.vdense_output_numpy(m, v, b, eps, dtype(1e-8))
    np.testing.assert_array_equal(std, sr, err_msg="vdense_output_into std")
    np.testing.assert_array_equal(y, yr, err_msg="vdense_output_into y")
    dv = np.empty_like(m)
    K.vdense_dv_into(dy, eps, std, dv)
    np.testing.assert_array_equal(dv, K.vdense_dv_numpy(dy, eps, std), err_msg="vdense_dv_into")


def _float32_kernel_cases():
    f = np.float32
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 6, 6), dtype=f)
    B, F, OH, OW = 2, 4, 2, 2
    Kc, n = 3 * 5 * 5, B * OH * OW
    r = rng.random
    e4 = lambda: r((B, F, OH, OW), dtype=f) + f(0.5)  # noqa: E731
    return {
        "vdense_output_into": (K.vdense_output_into, (r((3, 5), dtype=f), r((3, 5), dtype=f), r(5, dtype=f),
                                                      r((3, 5), dtype=f), f(1e-8), np.empty((3, 5), f),
                                                      np.empty((3, 5), f))),
        "vdense_dv_into": (K.vdense_dv_into, (r((3, 5), dtype=f), r((3, 5), dtype=f), r((3, 5), dtype=f) + f(1),
                                              np.empty((3, 5), f))),
        "vconv_output_t_into": (K.vconv_output_t_into, (r((F, n), dtype=f), r((F, n), dtype=f), r(F, dtype=f),
                                                        e4(), f(1e-8), np.empty((B, F, OH, OW), f),
                                                        np.empty((B, F, OH, OW), f))),
        "vconv_dout_t_into": (K.vconv_dout_t_into, (e4(), e4(), e4(), np.empty((F, n), f), np.empty((F, n), f))),
        "col2im_t_into": (K.col2im_t_into, (r((Kc, B * 2 * 2), dtype=f), r((Kc, B * 2 * 2), dtype=f),
                                            x[:B], 5, 5, True, np.empty((B, 3, 6, 6), f))),
        "im2col_t_into": (K.im2col_t_into, (x[:B], 5, 5, np.empty((Kc, n), f), np.empty((Kc, n), f), True)),
        "conv_output_t_into": (K.conv_output_t_into, (r((F, n), dtype=f), r(F, dtype=f),
                                                      np.empty((B, F, OH, OW), f))),
    }


@pytest.mark.parametrize("name", sorted(_float32_kernel_cases()))
def test_float32_kernels_run_in_float32(name):
    """The training-step kernels compute float32 arrays in float32: no float64 arithmetic in their LLVM IR
    (numba types the literal 2 in `2 * std` as int64 and int64 * float32 as float64)."""
    from support.numba_ir import float64_arithmetic
    kernel, args = _float32_kernel_cases()[name]
    lines = float64_arithmetic(kernel, *args)
    assert not lines, f"{name}: expected no float64 arithmetic, found {len(lines)} instructions, e.g. {lines[:3]}"
