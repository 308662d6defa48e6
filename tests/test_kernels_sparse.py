"""Tests of refvbc/kernels/sparse.py: the numba network kernels against their NumPy twins (exactly: both add
in the same order), float32 and float64, and the twins against independent dense references."""

import numpy as np
import pytest

from refvbc.compress.sparse_model import _pack
from refvbc.kernels import conv as kc
from refvbc.kernels import sparse as ks

DTYPES = [np.float32, np.float64]


def random_dense_layers(rng, dims, layouts, density, dtype, in_idx=None):
    """Packed dense stack (meta, idx, vals) for layer sizes dims = [C0, O1, O2, ...] (idx ending with
    in_idx when given) and the matrices W_l (O, C)."""
    layers, mats = [], []
    for C, O, lay in zip(dims[:-1], dims[1:], layouts):
        W = np.where(rng.random((O, C)) < density, rng.standard_normal((O, C)), 0).astype(np.float32)
        b = (0.1 * rng.standard_normal(O)).astype(np.float32)
        rows, cols = np.nonzero(W)
        layers.append((O, (C,), C, cols, rows, W[rows, cols], b, W if lay == "dense" else None))
        mats.append((W, b))
    meta, idx, vals = _pack(layers, with_layout=True, in_idx=in_idx)
    return (meta, idx, vals.astype(dtype)), mats


def random_input(rng, N, D, dtype):
    """Images with about half the pixels exactly 0 (as MNIST has), so the zero-skipping path is exercised."""
    x = rng.random((N, D)) * (rng.random((N, D)) < 0.5)
    return x.astype(dtype)


def assert_same(name, got, ref):
    assert got.shape == ref.shape and got.dtype == ref.dtype, \
        f"{name}: got {got.shape} {got.dtype}, expected {ref.shape} {ref.dtype}"
    bad = np.argwhere(got != ref)
    assert bad.size == 0, (f"{name}: {len(bad)} entries differ, first at {tuple(bad[0])}: "
                           f"got {got[tuple(bad[0])]!r}, expected {ref[tuple(bad[0])]!r}")


# (input features, kept inputs, layer sizes, layouts, batch sizes): batches 1 (one-image path), 3,
# 257 = CHUNK + 1 (a full block and a one-image block) and 600; an empty hidden layer; a dense-layout layer
MLP_CASES = [
    (784, 389, [74, 77, 10], ["csr", "dense", "dense"]),
    (20, 13, [7, 5, 3], ["csr", "csr", "csr"]),
    (30, 30, [6, 4], ["dense", "csr"]),
    (12, 9, [0, 4, 2], ["csr", "csr", "dense"]),
    (10, 0, [4, 3], ["csr", "csr"]),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N", [1, 3, 257, 600])
@pytest.mark.parametrize("case", range(len(MLP_CASES)))
def test_mlp_forward_matches_numpy(case, N, dtype):
    D0, U0, sizes, layouts = MLP_CASES[case]
    rng = np.random.default_rng(case * 1000 + N)
    in_idx = np.sort(rng.choice(D0, U0, replace=False)).astype(np.uint32)
    dense, _ = random_dense_layers(rng, [U0] + sizes, layouts, 0.3, dtype, in_idx)
    x = random_input(rng, N, D0, dtype)
    out = np.empty((N, sizes[-1]), dtype)
    ks.mlp_forward_numba(x, *dense, out)
    assert_same(f"mlp case {case}, N={N}, {np.dtype(dtype)}", out, ks.mlp_forward_numpy(x, *dense))


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_stack_numpy_is_the_matrix_product(dtype):
    """The twin itself against x Wᵀ + b with ReLU, written with dense matrices."""
    rng = np.random.default_rng(7)
    dense, mats = random_dense_layers(rng, [50, 20, 15, 10], ["csr", "dense", "csr"], 0.2, dtype, np.arange(50))
    x = random_input(rng, 9, 50, dtype)
    h = x
    for i, (W, b) in enumerate(mats):
        h = h @ W.T.astype(dtype) + b.astype(dtype)
        h = np.maximum(h, 0) if i < len(mats) - 1 else h
    got = ks.mlp_forward_numpy(x, *dense)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, h, rtol=tol, atol=tol, err_msg="dense_stack_numpy vs x @ W.T + b")


def random_convnet(rng, in_idx, H0, convs, fc, density, dtype):
    """Packed conv stack for kept input channels in_idx of size (H0, H0), conv layers [(O, k)], then dense
    sizes fc; also the dense conv weights (O, C, k, k) and biases for an independent reference."""
    layers, weights = [], []
    C, H = len(in_idx), H0
    for O, k in convs:
        w = np.where(rng.random((O, C, k, k)) < density, rng.standard_normal((O, C, k, k)), 0).astype(np.float32)
        b = (0.1 * rng.standard_normal(O)).astype(np.float32)
        f, c, i, j = np.nonzero(w)
        layers.append((O, (C, H, H, k, k), O, f, c * H * H + i * H + j, w[f, c, i, j], b, None))
        weights.append((w, b))
        C, H = O, (H - k + 1) // 2
    cmeta, cidx, cvals = _pack(layers, in_idx=in_idx)
    conv = (cmeta, cidx, cvals.astype(dtype))
    dense, mats = random_dense_layers(rng, [C * H * H] + fc, ["csr", "dense"][:len(fc)], 0.3, dtype)
    return conv, dense, weights, mats


# (input channels, size, conv layers (O, k), dense sizes, kept input channels)
CONV_CASES = [
    (1, 28, [(5, 5), (4, 5)], [7, 10], 1),
    (2, 8, [(3, 3), (2, 2)], [4, 3], 2),
    (3, 10, [(2, 3)], [5, 2], 2),
    (1, 12, [(0, 5), (3, 3)], [2, 2], 1),
    (1, 12, [(2, 5), (3, 3)], [2, 2], 0),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N", [1, 4, 257])
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_convnet_forward_matches_numpy(case, N, dtype):
    C0, H0, convs, fc, U0 = CONV_CASES[case]
    rng = np.random.default_rng(100 + case * 1000 + N)
    in_idx = np.sort(rng.choice(C0, U0, replace=False)).astype(np.uint32)
    conv, dense, _, _ = random_convnet(rng, in_idx, H0, convs, fc, 0.4, dtype)
    x = random_input(rng, N, C0 * H0 * H0, dtype)
    out = np.empty((N, fc[-1]), dtype)
    ks.convnet_forward_numba(x, H0 * H0, *conv, *dense, out)
    ref = ks.convnet_forward_numpy(x, H0 * H0, *conv, *dense)
    assert_same(f"convnet case {case}, N={N}, {np.dtype(dtype)}", out, ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [0, 1, 2])
def test_conv_relu_pool_numpy_is_a_convolution(case, dtype):
    """The conv twin against conv2d_forward_numpy (einsum, kernels/conv.py) on the dense weights, then
    ReLU and the reference max-pool."""
    C0, H0, convs, fc, _ = CONV_CASES[case]
    rng = np.random.default_rng(case)
    conv, _, weights, _ = random_convnet(rng, np.arange(C0), H0, convs, fc, 0.4, dtype)
    h = random_input(rng, 3, C0 * H0 * H0, dtype).reshape(3, C0, H0, H0)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for l, (w, b) in enumerate(weights):
        ref = kc.maxpool2x2_forward_numpy(np.maximum(kc.conv2d_forward_numpy(h, w.astype(dtype), b.astype(dtype)),
                                                     0))[0]
        got = ks.conv_relu_pool_numpy(h, conv[0][l], *conv[1:])
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol, err_msg=f"conv layer {l}")
        h = got
