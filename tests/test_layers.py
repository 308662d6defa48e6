"""Tests of refvbc/layers.py: float64 central-difference checks of every backward, dtype preservation,
numerical stability, shape validation."""

import numpy as np
import pytest

from support.gradcheck import num_grad, rel_err
from refvbc import layers as L
from refvbc.kernels import conv as K

DTYPES = [np.float32, np.float64]


@pytest.fixture(params=["gemm", "direct"])
def conv_path(request, monkeypatch):
    """Run a conv test through both paths of layers._conv_forward: im2col + GEMM, and the direct kernels
    of refvbc/kernels/conv_direct.py (chosen by the receptive field size, CONV_DIRECT_MAX_K)."""
    monkeypatch.setattr(L, "CONV_DIRECT_MAX_K", 0 if request.param == "gemm" else 10 ** 9)
    return request.param


def check_grads(name, forward, backward_grads, inputs, wrt, seed=0, tol=1e-6):
    """forward(*inputs) -> (out, cache); backward_grads(dout, cache) -> tuple aligned with wrt (indices
    into inputs). Checks each analytic gradient of sum(out * dout) against central differences."""
    rng = np.random.default_rng(seed)
    out, cache = forward(*inputs)
    dout = rng.standard_normal(out.shape)
    dout_copy = dout.copy()
    grads = backward_grads(dout, cache)
    np.testing.assert_array_equal(dout, dout_copy, err_msg=f"{name}: backward mutated dout")

    def f(*arrs):
        return float(np.sum(forward(*arrs)[0] * dout))

    for g, i in zip(grads, wrt):
        arrs = [a.copy() for a in inputs]
        ng = num_grad(lambda _: f(*arrs), arrs[i])
        assert g.shape == ng.shape, f"{name} grad of input {i}: shape {g.shape}, expected {ng.shape}"
        e = rel_err(g, ng)
        assert e <= tol, f"{name} grad of input {i}: relative error {e:.3e} > {tol:.0e}"


# ----------------------------------------------------------------------------------------------------
# finite differences, float64
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("B,nin,nout", [(3, 4, 5), (1, 7, 2)])
def test_dense_gradcheck(B, nin, nout):
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((B, nin)), rng.standard_normal((nout, nin)), rng.standard_normal(nout)
    check_grads("dense", L.dense_forward, lambda d, c: L.dense_backward(d, c), [x, w, b], [0, 1, 2])


@pytest.mark.parametrize("B,nin,nout", [(3, 4, 5), (2, 6, 3)])
def test_vdense_gradcheck(B, nin, nout):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((B, nin))
    th = rng.standard_normal((nout, nin))
    ls = rng.uniform(-3, 0.5, (nout, nin))
    b = rng.standard_normal(nout)
    eps = rng.standard_normal((B, nout))
    check_grads("vdense", L.vdense_forward, lambda d, c: L.vdense_backward(d, c),
                [x, th, ls, b, eps], [0, 1, 2, 3])


@pytest.mark.parametrize("xs,ws", [((2, 2, 6, 5), (3, 2, 3, 2)), ((1, 1, 5, 5), (2, 1, 5, 5)),
                                   ((3, 3, 4, 6), (2, 3, 1, 3))])
def test_conv2d_gradcheck(xs, ws, conv_path):
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    check_grads("conv2d", L.conv2d_forward, lambda d, c: L.conv2d_backward(d, c), [x, w, b], [0, 1, 2])


@pytest.mark.parametrize("xs,ws", [((2, 2, 6, 5), (3, 2, 3, 2)), ((1, 3, 5, 5), (2, 3, 3, 3))])
def test_vconv2d_gradcheck(xs, ws, conv_path):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(xs)
    th = rng.standard_normal(ws)
    ls = rng.uniform(-3, 0.5, ws)
    b = rng.standard_normal(ws[0])
    eps = rng.standard_normal((xs[0], ws[0], xs[2] - ws[2] + 1, xs[3] - ws[3] + 1))
    check_grads("vconv2d", L.vconv2d_forward, lambda d, c: L.vconv2d_backward(d, c),
                [x, th, ls, b, eps], [0, 1, 2, 3])


def test_relu_gradcheck():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 2, 4, 4))
    x += np.where(x >= 0, 0.1, -0.1)  # away from the kink
    check_grads("relu", lambda a: L.relu_forward(a), lambda d, c: (L.relu_backward(d, c),), [x], [0])


def test_maxpool_gradcheck():
    rng = np.random.default_rng(6)
    shape = (2, 3, 4, 6)
    # distinct values 0.1 apart: every window's max is unique and far from a tie (kink)
    x = (rng.permutation(np.prod(shape)) * 0.1).reshape(shape).astype(np.float64)
    check_grads("maxpool2x2", lambda a: L.maxpool2x2_forward(a), lambda d, c: (L.maxpool2x2_backward(d, c),),
                [x], [0])


def test_flatten_gradcheck():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 2, 2))
    check_grads("flatten", lambda a: L.flatten_forward(a), lambda d, c: (L.flatten_backward(d, c),), [x], [0])


@pytest.mark.parametrize("B,Kc", [(4, 10), (1, 3)])
def test_softmax_ce_gradcheck(B, Kc):
    rng = np.random.default_rng(8)
    logits = rng.standard_normal((B, Kc)) * 2
    y = rng.integers(0, Kc, B)
    dloss = 1.7
    loss, cache = L.softmax_ce_forward(logits, y)
    g = L.softmax_ce_backward(dloss, cache)
    ng = num_grad(lambda z: dloss * float(L.softmax_ce_forward(z, y)[0]), logits.copy())
    e = rel_err(g, ng)
    assert e <= 1e-6, f"softmax_ce grad: relative error {e:.3e} > 1e-6"


# ----------------------------------------------------------------------------------------------------
# values against references
# ----------------------------------------------------------------------------------------------------

def test_softmax_ce_value_and_stability():
    logits = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
    y = np.array([2, 0])
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = -np.mean(np.log(p[np.arange(2), y]))
    loss, _ = L.softmax_ce_forward(logits, y)
    assert abs(loss - expected) < 1e-14, f"loss {loss}, expected {expected}"
    for dt in DTYPES:
        big = np.array([[1000.0, 0.0, -1000.0]], dtype=dt)
        loss, cache = L.softmax_ce_forward(big, np.array([1]))
        g = L.softmax_ce_backward(1.0, cache)
        assert np.isfinite(loss) and abs(loss - 1000.0) < 1e-3, f"loss {loss}, expected 1000"
        assert np.all(np.isfinite(g)), f"non-finite gradient {g}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,ws", [((4, 1, 12, 12), (5, 1, 5, 5)), ((3, 4, 8, 9), (6, 4, 3, 2))])
def test_vconv2d_matches_numpy_reference(dtype, xs, ws, conv_path):
    rng = np.random.default_rng(9)
    x = rng.standard_normal(xs).astype(dtype)
    th = rng.standard_normal(ws).astype(dtype)
    ls = rng.uniform(-4, 0, ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    eps = rng.standard_normal((xs[0], ws[0], xs[2] - ws[2] + 1, xs[3] - ws[3] + 1)).astype(dtype)
    y, cache = L.vconv2d_forward(x, th, ls, b, eps)
    x64, th64, ls64, b64, e64 = (a.astype(np.float64) for a in (x, th, ls, b, eps))
    m = K.conv2d_forward_numpy(x64, th64, b64)
    v = K.conv2d_forward_numpy(x64 * x64, np.exp(ls64), np.zeros_like(b64))
    std = np.sqrt(v + 1e-8)
    y_ref = m + std * e64
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert y.dtype == dtype
    assert rel_err(y, y_ref) <= tol, f"vconv2d forward rel err {rel_err(y, y_ref):.2e} > {tol}"
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dth, dls, db = L.vconv2d_backward(dy, cache)
    dy64 = dy.astype(np.float64)
    dv = dy64 * e64 / (2 * std)
    dx_m, dth_ref, db_ref = K.conv2d_backward_numpy(dy64, x64, th64)
    dx_v, des, _ = K.conv2d_backward_numpy(dv, x64 * x64, np.exp(ls64))
    refs = [dx_m + 2 * x64 * dx_v, dth_ref, np.exp(ls64) * des, db_ref]
    for name, got, ref in zip(["dx", "dtheta", "dlog_sigma2", "db"], [dx, dth, dls, db], refs):
        assert got.dtype == dtype, f"{name} dtype {got.dtype}, expected {dtype}"
        assert rel_err(got, ref) <= tol, f"vconv2d {name} rel err {rel_err(got, ref):.2e} > {tol}"


def test_vdense_zero_noise_is_dense():
    rng = np.random.default_rng(10)
    x, th, b = rng.standard_normal((3, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5)
    y, _ = L.vdense_forward(x, th, np.full((5, 4), -3.0), b, np.zeros((3, 5)))
    yd, _ = L.dense_forward(x, th, b)
    np.testing.assert_allclose(y, yd, rtol=0, atol=1e-14)


def test_need_dx_false(conv_path):
    rng = np.random.default_rng(11)
    x, w, b = rng.standard_normal((2, 1, 6, 6)), rng.standard_normal((3, 1, 3, 3)), rng.standard_normal(3)
    out, c = L.conv2d_forward(x, w, b)
    dx, dw, db = L.conv2d_backward(np.ones_like(out), c, need_dx=False)
    assert dx is None and dw.shape == w.shape and db.shape == b.shape
    out, c = L.vconv2d_forward(x, w, w - 2, b, np.ones_like(out))
    assert L.vconv2d_backward(np.ones_like(out), c, need_dx=False)[0] is None
    out, c = L.dense_forward(x.reshape(2, -1), np.ones((4, 36)), np.ones(4))
    assert L.dense_backward(np.ones_like(out), c, need_dx=False)[0] is None
    out, c = L.vdense_forward(x.reshape(2, -1), np.ones((4, 36)), np.ones((4, 36)), np.ones(4), np.ones((2, 4)))
    assert L.vdense_backward(np.ones_like(out), c, need_dx=False)[0] is None


# ----------------------------------------------------------------------------------------------------
# dtype preservation
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_preserved(dtype, conv_path):
    rng = np.random.default_rng(12)

    def r(*s):
        return rng.standard_normal(s).astype(dtype)

    results = {}
    out, c = L.dense_forward(r(2, 3), r(4, 3), r(4))
    results["dense"] = (out,) + L.dense_backward(r(2, 4), c)
    out, c = L.vdense_forward(r(2, 3), r(4, 3), r(4, 3), r(4), r(2, 4))
    results["vdense"] = (out,) + L.vdense_backward(r(2, 4), c)
    out, c = L.conv2d_forward(r(2, 2, 6, 6), r(3, 2, 3, 3), r(3))
    results["conv2d"] = (out,) + L.conv2d_backward(r(2, 3, 4, 4), c)
    out, c = L.vconv2d_forward(r(2, 2, 6, 6), r(3, 2, 3, 3), r(3, 2, 3, 3), r(3), r(2, 3, 4, 4))
    results["vconv2d"] = (out,) + L.vconv2d_backward(r(2, 3, 4, 4), c)
    out, c = L.relu_forward(r(2, 3))
    results["relu"] = (out, L.relu_backward(r(2, 3), c))
    out, c = L.maxpool2x2_forward(r(2, 3, 4, 4))
    results["maxpool"] = (out, L.maxpool2x2_backward(r(2, 3, 2, 2), c))
    out, c = L.flatten_forward(r(2, 3, 2, 2))
    results["flatten"] = (out, L.flatten_backward(r(2, 12), c))
    loss, c = L.softmax_ce_forward(r(2, 5), np.array([0, 4]))
    results["softmax_ce"] = (np.asarray(loss), L.softmax_ce_backward(np.float64(1.0), c))
    for name, arrays in results.items():
        for k, a in enumerate(arrays):
            assert a.dtype == dtype, f"{name} output {k}: dtype {a.dtype}, expected {dtype}"


# ----------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------

def _f(*s, dtype=np.float64):
    return np.ones(s, dtype=dtype)


@pytest.mark.parametrize("call,match", [
    (lambda: L.dense_forward(_f(2, 3), _f(4, 5), _f(4)), "dense_forward: w has shape"),
    (lambda: L.dense_forward(_f(2, 3), _f(4, 3), _f(5)), "dense_forward: b has shape"),
    (lambda: L.dense_forward(_f(2, 3, 1), _f(4, 3), _f(4)), "dense_forward: x must be 2-D"),
    (lambda: L.dense_forward(_f(2, 3), _f(4, 3, dtype=np.float32), _f(4)), "dense_forward: w has dtype"),
    (lambda: L.dense_forward(_f(2, 3, dtype=np.int64), _f(4, 3), _f(4)), "dense_forward: x has dtype"),
    (lambda: L.dense_backward(_f(2, 5), L.dense_forward(_f(2, 3), _f(4, 3), _f(4))[1]),
     r"dense_backward: dout has shape \(2, 5\), expected \(2, 4\)"),
    (lambda: L.vdense_forward(_f(2, 3), _f(4, 3), _f(4, 2), _f(4), _f(2, 4)), "vdense_forward: log_sigma2"),
    (lambda: L.vdense_forward(_f(2, 3), _f(4, 3), _f(4, 3), _f(4), _f(3, 4)),
     r"vdense_forward: eps has shape \(3, 4\), expected \(2, 4\)"),
    (lambda: L.conv2d_forward(_f(2, 3, 6, 6), _f(4, 2, 3, 3), _f(4)), "conv2d_forward: weight has shape"),
    (lambda: L.conv2d_forward(_f(2, 3, 6, 6), _f(4, 3, 7, 3), _f(4)), "conv2d_forward: kernel 7x3"),
    (lambda: L.conv2d_forward(_f(3, 6, 6), _f(4, 3, 3, 3), _f(4)), "conv2d_forward: x must be 4-D"),
    (lambda: L.conv2d_forward(_f(2, 3, 6, 6), _f(4, 3, 3, 3), _f(3)), "conv2d_forward: b has shape"),
    (lambda: L.conv2d_backward(_f(2, 4, 3, 4), L.conv2d_forward(_f(2, 3, 6, 6), _f(4, 3, 3, 3), _f(4))[1]),
     r"conv2d_backward: dout has shape \(2, 4, 3, 4\), expected \(2, 4, 4, 4\)"),
    (lambda: L.vconv2d_forward(_f(2, 3, 6, 6), _f(4, 3, 3, 3), _f(4, 3, 3, 3), _f(4), _f(2, 4, 3, 3)),
     r"vconv2d_forward: eps has shape \(2, 4, 3, 3\), expected \(2, 4, 4, 4\)"),
    (lambda: L.vconv2d_forward(_f(2, 3, 6, 6), _f(4, 3, 3, 3), _f(4, 3, 2, 3), _f(4), _f(2, 4, 4, 4)),
     "vconv2d_forward: log_sigma2 has shape"),
    (lambda: L.maxpool2x2_forward(_f(2, 3, 5, 4)), "maxpool2x2_forward: x has shape"),
    (lambda: L.maxpool2x2_backward(_f(2, 3, 2, 3), L.maxpool2x2_forward(_f(2, 3, 4, 4))[1]),
     "maxpool2x2_backward: dout has shape"),
    (lambda: L.relu_backward(_f(2, 3), L.relu_forward(_f(3, 2))[1]), "relu_backward: dout has shape"),
    (lambda: L.flatten_backward(_f(2, 5), L.flatten_forward(_f(2, 3, 2, 2))[1]), "flatten_backward: dout"),
    (lambda: L.softmax_ce_forward(_f(2, 5), np.array([0, 5])), "softmax_ce_forward: labels"),
    (lambda: L.softmax_ce_forward(_f(2, 5), np.array([0.0, 1.0])), "softmax_ce_forward: y has dtype"),
    (lambda: L.softmax_ce_forward(_f(2, 5), np.array([0, 1, 2])), "softmax_ce_forward: y has shape"),
])
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------------------------------
# the layers cut into parts (refvbc/parallel.py) give what one part gives
# ----------------------------------------------------------------------------------------------------



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
def test_layers_in_parts_match_one_part(kind, dtype, monkeypatch, conv_path):
    one = _layer_outputs(kind, dtype)
    monkeypatch.setattr(L, "PART_IMAGES", 4)     # 6 images: parts of 3 and 3
    monkeypatch.setattr(L, "DENSE_MIN_WORK", 0)  # dense layers in DENSE_PARTS row parts
    monkeypatch.setattr(L, "VDENSE_MIN_WORK", 0)  # variational dense: both paths on the thread pool
    parts = _layer_outputs(kind, dtype)
    if kind == "vdense":  # the same whole GEMMs on other threads: the same numbers
        for i, (a, b) in enumerate(zip(one, parts)):
            np.testing.assert_array_equal(b, a, err_msg=f"{kind} output {i}: paths on two threads vs one")
        return
    tol = 1e-6 if dtype == np.float32 else 1e-14
    for i, (a, b) in enumerate(zip(one, parts)):
        np.testing.assert_allclose(b, a, rtol=tol, atol=tol, err_msg=f"{kind} output {i}: parts vs one part")
