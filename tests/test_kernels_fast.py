"""Tests of the vectorizable math helpers added for speed (issue 5): ``_log`` of
refvbc/kernels/mixture.py against np.log (its NumPy reference)."""

import numpy as np

from refvbc.kernels.mixture import log_kernel


def test_vectorizable_log_matches_numpy():
    rng = np.random.default_rng(31)
    x = np.concatenate([np.exp(rng.uniform(-700, 700, 20000)), rng.uniform(0.5, 2.0, 20000),
                        1.0 + rng.uniform(-1e-6, 1e-6, 1000), [1.0, 2.0, 0.5, 1e-8, 2.2250738585072014e-308,
                                                              1.7976931348623157e308]])
    out = np.empty_like(x)
    log_kernel(x, out)
    ref = np.log(x)
    err = np.max(np.abs(out - ref) / np.maximum(np.abs(ref), 1e-300))
    assert err <= 1e-15, f"log relative error {err:.3e} > 1e-15"
    near1 = np.max(np.abs(out - ref)[40000:41000])
    assert near1 <= 1e-21, f"log absolute error near 1: {near1:.3e}"


def test_vectorizable_log_bad_input_is_nan():
    bad = np.array([0.0, -0.0, -1.0, 1e-310, np.inf, -np.inf, np.nan])
    out = np.zeros_like(bad)
    log_kernel(bad, out)
    assert np.all(np.isnan(out)), f"expected nan for {bad}, got {out}"


# ----------------------------------------------------------------------------------------------------
# "columns" layout conv kernels (refvbc/kernels/conv.py) against their NumPy references
# ----------------------------------------------------------------------------------------------------

import pytest  # noqa: E402

from refvbc.kernels import conv as K  # noqa: E402

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


# ----------------------------------------------------------------------------------------------------
# the layers cut into parts (refvbc.parallel) give what one part gives
# ----------------------------------------------------------------------------------------------------

from refvbc import layers as L  # noqa: E402


def _layer_outputs(kind, dtype, seed=3):
    rng = np.random.default_rng(seed)
    if kind in ("conv", "vconv"):
        x = rng.standard_normal((6, 3, 9, 8)).astype(dtype)
        w = (0.3 * rng.standard_normal((4, 3, 3, 2))).astype(dtype)
        b = rng.standard_normal(4).astype(dtype)
        ls = rng.uniform(-6, -1, w.shape).astype(dtype)
        eps = rng.standard_normal((6, 4, 7, 7)).astype(dtype)
    else:
        x = rng.standard_normal((6, 40)).astype(dtype)
        w = (0.3 * rng.standard_normal((30, 40))).astype(dtype)
        b = rng.standard_normal(30).astype(dtype)
        ls = rng.uniform(-6, -1, w.shape).astype(dtype)
        eps = rng.standard_normal((6, 30)).astype(dtype)
    ws = {}
    if kind == "conv":
        y, c = L.conv2d_forward(x, w, b, ws=ws)
        y = y.copy()
        grads = L.conv2d_backward(np.cos(y), c)
    elif kind == "vconv":
        y, c = L.vconv2d_forward(x, w, ls, b, eps, ws=ws)
        y = y.copy()
        grads = L.vconv2d_backward(np.cos(y), c)
    elif kind == "dense":
        y, c = L.dense_forward(x, w, b)
        grads = L.dense_backward(np.cos(y), c)
    else:
        y, c = L.vdense_forward(x, w, ls, b, eps)
        grads = L.vdense_backward(np.cos(y), c)
    return [y] + list(grads)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["conv", "vconv", "dense", "vdense"])
def test_layers_in_parts_match_one_part(kind, dtype, monkeypatch):
    one = _layer_outputs(kind, dtype)
    monkeypatch.setattr(L, "PART_IMAGES", 4)     # 6 images: parts of 3 and 3
    monkeypatch.setattr(L, "DENSE_MIN_WORK", 0)  # dense layers in DENSE_PARTS row parts
    parts = _layer_outputs(kind, dtype)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    for i, (a, b) in enumerate(zip(one, parts)):
        np.testing.assert_allclose(b, a, rtol=tol, atol=tol, err_msg=f"{kind} output {i}: parts vs one part")
