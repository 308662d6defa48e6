"""Tests of refvbc/kernels/conv_direct.py: the direct convolution kernels against their NumPy references
(the einsum convolutions of kernels/conv.py), float32 and float64, variational and deterministic, with
and without dx; geometries with kw = 5 (the five-tap passes), kw < 5 and kw = 7 (five taps and a
remainder), several channels, and LeNet-5's conv1."""

import numpy as np
import pytest

from support.gradcheck import rel_err
from refvbc.kernels import conv_direct as D

DTYPES = [np.float32, np.float64]
# B, C, H, W, F, kh, kw
GEOMS = [(2, 1, 28, 28, 20, 5, 5), (3, 2, 9, 8, 4, 3, 2), (2, 3, 10, 11, 3, 2, 7), (1, 1, 5, 5, 2, 5, 5),
         (2, 2, 4, 6, 3, 1, 1)]
TOL = {np.float32: 5e-6, np.float64: 1e-12}


def _inputs(geom, dtype, seed=0):
    B, C, H, W, F, kh, kw = geom
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, C, H, W)).astype(dtype)
    w2 = rng.standard_normal((F, C * kh * kw)).astype(dtype)
    es2 = rng.uniform(0.01, 1.0, (F, C * kh * kw)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    eps = rng.standard_normal((B, F, H - kh + 1, W - kw + 1)).astype(dtype)
    dy = rng.standard_normal(eps.shape).astype(dtype)
    return x, w2, es2, b, eps, dy


def _check(name, got, ref, dtype):
    assert got.shape == ref.shape, f"{name}: shape {got.shape}, expected {ref.shape}"
    assert got.dtype == dtype, f"{name}: dtype {got.dtype}, expected {np.dtype(dtype)}"
    e = rel_err(got, ref)
    assert e <= TOL[dtype], f"{name}: relative error {e:.3e} > {TOL[dtype]:.0e} (expected vs actual)"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("var", [True, False])
@pytest.mark.parametrize("geom", GEOMS)
def test_forward_matches_numpy(geom, var, dtype):
    x, w2, es2, b, eps, _ = _inputs(geom, dtype)
    kh, kw = geom[5:]
    y, std = np.empty_like(eps), np.empty_like(eps)
    jit = dtype(1e-8)
    D.conv_direct_forward_into(x, w2, es2 if var else w2, b, eps, jit, kh, kw, var, y, std)
    f64 = [a.astype(np.float64) for a in (x, w2, es2, b, eps)]
    y_ref, std_ref = D.conv_direct_forward_numpy(f64[0], f64[1], f64[2] if var else None, f64[3], f64[4],
                                                 1e-8, kh, kw)
    _check("y", y, y_ref, dtype)
    if var:
        _check("std", std, std_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("need_dx", [True, False])
@pytest.mark.parametrize("var", [True, False])
@pytest.mark.parametrize("geom", GEOMS)
def test_backward_matches_numpy(geom, var, need_dx, dtype):
    x, w2, es2, b, eps, dy = _inputs(geom, dtype, seed=1)
    kh, kw = geom[5:]
    F = w2.shape[0]
    std = np.sqrt(np.random.default_rng(2).uniform(0.1, 2.0, eps.shape)).astype(dtype)
    gw, gs, gb = np.full_like(w2, np.nan), np.full_like(w2, np.nan), np.full(F, np.nan, dtype)
    dx = np.full_like(x, np.nan)
    dy_before = dy.copy()
    D.conv_direct_backward_into(x, dy, eps, std, w2, es2 if var else w2, kh, kw, var, need_dx, gw, gs, gb, dx)
    np.testing.assert_array_equal(dy, dy_before, err_msg="conv_direct_backward_into changed dy")
    f64 = [a.astype(np.float64) for a in (x, dy, eps, std, w2, es2)]
    gw_r, gs_r, gb_r, dx_r = D.conv_direct_backward_numpy(*f64[:5], f64[5] if var else None, kh, kw)
    _check("gw", gw, gw_r, dtype)
    _check("gb", gb, gb_r, dtype)
    if var:
        _check("gs", gs, gs_r, dtype)
    if need_dx:
        _check("dx", dx, dx_r, dtype)
    else:
        assert np.isnan(dx).all(), "dx written although need_dx is False"


def test_backward_overwrites_gradient_buffers():
    """gw, gs, gb are overwritten (not accumulated into): two calls give the same numbers."""
    x, w2, es2, b, eps, dy = _inputs(GEOMS[1], np.float64)
    kh, kw = GEOMS[1][5:]
    std = np.ones_like(eps)
    out = []
    for fill in (0.0, 7.0):
        gw, gs, gb = np.full_like(w2, fill), np.full_like(w2, fill), np.full(w2.shape[0], fill)
        D.conv_direct_backward_into(x, dy, eps, std, w2, es2, kh, kw, True, False, gw, gs, gb,
                                    np.empty((0, 0, 0, 0)))
        out.append((gw, gs, gb))
    for a, b_ in zip(*out):
        np.testing.assert_array_equal(a, b_, err_msg="gradient buffers accumulated the earlier contents")


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_is_deterministic_wherever_the_arrays_lie(dtype):
    """The same inputs at different memory addresses give bit-identical gradients (the reductions never
    share a loop with stores, whose runtime alias check could switch the summation order)."""
    x, w2, es2, b, eps, dy = _inputs(GEOMS[0], dtype, seed=4)
    std = (np.random.default_rng(5).random(eps.shape) + 0.5).astype(dtype)
    rng = np.random.default_rng(6)
    first = None
    for _ in range(12):
        pad = int(rng.integers(0, 16))
        keep = [np.empty(int(rng.integers(1, 5000)), dtype) for _ in range(3)]  # move the heap around

        def moved(a):
            buf = np.empty(a.size + pad, dtype)
            v = buf[pad:].reshape(a.shape)
            v[...] = a
            return v

        out = [np.empty_like(w2), np.empty_like(w2), np.empty(w2.shape[0], dtype), np.empty_like(x)]
        D.conv_direct_backward_into(moved(x), moved(dy), moved(eps), moved(std), w2, es2, 5, 5, True, True,
                                    *out)
        del keep
        if first is None:
            first = out
            continue
        for name, a, b_ in zip(("gw", "gs", "gb", "dx"), first, out):
            np.testing.assert_array_equal(b_, a, err_msg=f"{name}: inputs at other addresses changed the result")


def test_float32_kernels_run_in_float32():
    """No float64 arithmetic in the float32 kernels (see tests/support/numba_ir.py)."""
    from support.numba_ir import float64_arithmetic
    f = np.float32
    x, w2, es2, b, eps, dy = _inputs(GEOMS[0], f)
    y, std = np.empty_like(eps), np.ones_like(eps)
    fwd = float64_arithmetic(D.conv_direct_forward_into, x, w2, es2, b, eps, f(1e-8), 5, 5, True, y, std)
    assert not fwd, f"forward: float64 arithmetic, e.g. {fwd[:3]}"
    bwd = float64_arithmetic(D.conv_direct_backward_into, x, dy, eps, std, w2, es2, 5, 5, True, True,
                             np.empty_like(w2), np.empty_like(w2), np.empty_like(b), np.empty_like(x))
    assert not bwd, f"backward: float64 arithmetic, e.g. {bwd[:3]}"
