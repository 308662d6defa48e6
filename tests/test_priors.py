"""Tests of refvbc/priors.py and refvbc/kernels/mixture.py: central differences (float64, rel. error
<= 1e-6), numba vs NumPy references (float32 and float64), fixed entries, Table-3 initialisation."""

import numpy as np
import pytest

from support.gradcheck import num_grad, rel_err
from refvbc import priors
from refvbc.arch import GAMMA_ALPHA, GAMMA_BETA, N_COMPONENTS, PI0
from refvbc.kernels.mixture import (
    CHUNK,
    PARALLEL_MIN,
    exp_kernel,
    kl_vd_kernel,
    kl_vd_kernel_serial,
    log_kernel,
    mixture_pass_kernel,
    mixture_pass_kernel_serial,
)
from refvbc.priors import (
    dropout_rate,
    kl_vd,
    kl_vd_numpy,
    log_alpha,
    mixture_init,
    mixture_prior,
    mixture_prior_numpy,
    mixture_responsibility_argmax,
    mixture_responsibility_argmax_numpy,
)

DTYPES = [np.float32, np.float64]
# tiny, below one chunk, exactly one chunk, not divisible by the chunk size
SIZES = [1, 7, CHUNK, PARALLEL_MIN + 37]  # the last one runs the parallel kernels


def assert_rel(actual, expected, tol, what):
    err = rel_err(actual, expected, per_entry=True)
    assert err <= tol, (f"{what}: relative error {err:.3e} > {tol:.0e}\n"
                        f"expected {np.asarray(expected).ravel()[:8]}\nactual   {np.asarray(actual).ravel()[:8]}")


# ----------------------------------------------------------------------------------------------
# KL_VD


def kl_inputs(rng, targets):
    """theta with |theta| in [0.01, 1] and s chosen so that s - log(theta^2 + 1e-8) = target."""
    n = len(targets)
    theta = rng.uniform(0.01, 1.0, n) * rng.choice([-1.0, 1.0], n)
    s = np.log(theta ** 2 + 1e-8) + np.asarray(targets, dtype=np.float64)
    return theta, s


@pytest.mark.parametrize("region", ["inside", "below", "above"])
def test_kl_vd_central_difference(region):
    rng = np.random.default_rng(0)
    targets = {"inside": rng.uniform(-9.5, 9.5, 24),
               "below": rng.uniform(-20.0, -10.5, 8),
               "above": rng.uniform(10.5, 20.0, 8)}[region]
    theta, s = kl_inputs(rng, targets)
    value, dtheta, ds = kl_vd(theta, s)
    idx = range(theta.size)
    h = 1e-5
    # KL_VD is a sum over weights: difference one weight at a time (less round-off in the value)
    num_t = np.array([num_grad(lambda x: kl_vd(x, s[i:i + 1])[0], theta[i:i + 1].copy(), [0], h * abs(theta[i]))[0]
                      for i in idx])
    num_s = np.array([num_grad(lambda x: kl_vd(theta[i:i + 1], x)[0], s[i:i + 1].copy(), [0], h)[0]
                      for i in idx])
    if region == "inside":
        assert_rel(dtheta, num_t, 1e-6, "dtheta")
        assert_rel(ds, num_s, 1e-6, "dlog_sigma2")
    else:
        assert np.all(dtheta == 0) and np.all(ds == 0), f"clipped gradients must be 0, got {dtheta}, {ds}"
        assert np.all(num_t == 0) and np.all(num_s == 0), "numerical gradients outside the clip not 0"
    # value formula, element by element
    la = np.clip(s - np.log(theta ** 2 + 1e-8), -10, 10)
    k1, k2, k3 = 0.63576, 1.87320, 1.48695
    expect = np.sum(k1 - k1 / (1 + np.exp(-(k2 + k3 * la))) + 0.5 * np.log1p(np.exp(-la)))
    assert abs(value - expect) <= 1e-13 * theta.size, f"value {value} != {expect}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
def test_kl_vd_numba_matches_numpy(size, dtype):
    rng = np.random.default_rng(size)
    theta, s = kl_inputs(rng, rng.uniform(-14, 14, size))
    theta[::5] = 0.0  # theta = 0 is fine (eps 1e-8 inside the log)
    theta, s = theta.astype(dtype), s.astype(dtype)
    v, dt, ds = kl_vd(theta, s)
    vr, dtr, dsr = kl_vd_numpy(theta, s)
    assert isinstance(v, float)
    assert dt.dtype == dtype and ds.dtype == dtype and dt.shape == theta.shape
    # float32 inputs are computed in float32 arithmetic (every term >= 0, so |sum| = sum of |terms|)
    vtol = 2e-6 * abs(vr) if dtype == np.float32 else 1e-12 * max(abs(vr), 1.0)
    assert abs(v - vr) <= vtol, f"value {v} != {vr} (tolerance {vtol:.1e})"
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(dt, dtr, rtol=tol, atol=tol * np.abs(dtr).max())
    np.testing.assert_allclose(ds, dsr, rtol=tol, atol=tol * np.abs(dsr).max())


def test_kl_vd_shapes_and_chunking():
    rng = np.random.default_rng(3)
    theta, s = kl_inputs(rng, rng.uniform(-12, 12, 4 * 5 * 3 * 3))
    theta, s = theta.reshape(4, 5, 3, 3), s.reshape(4, 5, 3, 3)
    v, dt, ds = kl_vd(theta, s)
    assert dt.shape == theta.shape and ds.shape == theta.shape
    # per-chunk partials do not depend on the chunk size (up to round-off)
    for chunk, kernel in [(c, k) for c in (1, 7, 1000) for k in (kl_vd_kernel, kl_vd_kernel_serial)]:
        dt2 = np.empty(theta.size)
        ds2 = np.empty(theta.size)
        p = kernel(theta.ravel(), s.ravel(), dt2, ds2, chunk)
        assert p.shape == (-(-theta.size // chunk),)
        assert abs(p.sum() - v) <= 1e-12 * abs(v)
        np.testing.assert_array_equal(dt2, dt.ravel())
    # non-contiguous input
    v2, dt2, _ = kl_vd(theta.T, s.T)
    assert abs(v2 - v) <= 1e-12 * abs(v) and dt2.shape == theta.T.shape
    np.testing.assert_array_equal(dt2, dt.T)


def test_log_alpha_and_dropout_rate():
    rng = np.random.default_rng(4)
    theta = rng.standard_normal(50) * 0.1
    s = rng.uniform(-15, 2, 50)
    for dtype in DTYPES:
        t, ls = theta.astype(dtype), s.astype(dtype)
        la = log_alpha(t, ls)
        assert la.dtype == dtype
        t, ls = t.astype(np.float64), ls.astype(np.float64)
        expect = np.clip(ls - np.log(t ** 2 + 1e-8), -10, 10)
        np.testing.assert_allclose(la, expect, rtol=1e-6 if dtype == np.float32 else 1e-14)
        rate = dropout_rate(theta.astype(dtype), s.astype(dtype))
        assert rate.dtype == dtype
        np.testing.assert_allclose(rate, np.exp(ls) / (t ** 2 + np.exp(ls)),
                                   rtol=1e-6 if dtype == np.float32 else 1e-13)
    # alpha = 19 <=> rate = 0.95; theta = 0 -> 1; underflowing theta^2 and sigma^2 -> no nan
    r = dropout_rate(np.array([1.0, 0.0, 1e-200, 1e3]), np.array([np.log(19.0), -10.0, -900.0, 1000.0]))
    x = -900.0 + 400.0 * np.log(10.0)  # s - log theta^2 for theta = 1e-200
    np.testing.assert_allclose(r, [0.95, 1.0, 1.0 / (1.0 + np.exp(-x)), 1.0], rtol=1e-12)
    assert np.all(np.isfinite(r))


def test_kl_vd_bad_input():
    x = np.zeros(3)
    with pytest.raises(ValueError, match="same shape"):
        kl_vd(x, np.zeros(4))
    with pytest.raises(ValueError, match="float32 or float64"):
        kl_vd(np.zeros(3, dtype=np.int64), np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="same dtype"):
        kl_vd(x, x.astype(np.float32))
    with pytest.raises(ValueError, match="numpy array"):
        log_alpha([0.0], x)
    with pytest.raises(ValueError, match="log_sigma2 contains non-finite"):
        kl_vd(x, np.array([0.0, np.nan, 0.0]))


# ----------------------------------------------------------------------------------------------
# mixture prior


def mixture_setup(rng, n, dtype=np.float64, std=0.05, K=N_COMPONENTS):
    """Mixture parameters from Table 3 (K components, >= 15), jittered, and weights near several
    components (uneven counts) plus a few halfway between neighbouring means."""
    mu, ll, lp = mixture_init(std * rng.standard_normal(1000), K=K, dtype=np.float64)
    K = mu.shape[0]
    mu = mu + np.r_[0.0, 0.1 * (mu[2] - mu[1]) * rng.standard_normal(K - 1)]
    ll = ll + 0.3 * rng.standard_normal(K)
    lp = lp + 0.5 * rng.standard_normal(K)
    p = np.arange(1, K + 1, dtype=np.float64)
    comp = rng.choice(K, size=n, p=p / p.sum())
    w = mu[comp] + 0.7 * np.exp(-0.5 * ll[comp]) * rng.standard_normal(n)
    order = np.argsort(mu)
    mids = 0.5 * (mu[order][:-1] + mu[order][1:])
    w[: min(n, 4)] = mids[[0, 5, 8, 12][: min(n, 4)]]
    return w.astype(dtype), mu.astype(dtype), ll.astype(dtype), lp.astype(dtype)


def split_layers(w, shapes):
    out, off = [], 0
    for shp in shapes:
        n = int(np.prod(shp))
        out.append(w[off:off + n].reshape(shp))
        off += n
    return out


def test_mixture_prior_central_difference_theta():
    rng = np.random.default_rng(10)
    w, mu, ll, lp = mixture_setup(rng, 60)
    thetas = split_layers(w, [(4, 5), (2, 2, 2, 5)])
    value, dthetas, dmu, dll, dlp = mixture_prior(thetas, mu, ll, lp)
    h = 1e-7
    # log GM is a sum over weights and the Gamma term does not involve theta: difference one weight at
    # a time, without the Gamma term (less round-off in the value)
    num = np.array([
        num_grad(lambda x: mixture_prior([x], mu, ll, lp, gamma_alpha=1.0, gamma_beta=0.0)[0],
                 w[i:i + 1].copy(), [0], h)[0]
        for i in range(w.size)])
    ana = np.concatenate([d.ravel() for d in dthetas])
    assert_rel(ana, num, 1e-6, "dtheta")


@pytest.mark.parametrize("K", [N_COMPONENTS, 33])  # 33: the --components flag beyond Table 3's 17
@pytest.mark.parametrize("gamma", [(GAMMA_ALPHA, GAMMA_BETA), (1.0, 0.0), (3.0, 1e-3)])
def test_mixture_prior_central_difference_params(gamma, K):
    rng = np.random.default_rng(11)
    w, mu, ll, lp = mixture_setup(rng, 300, K=K)
    assert mu.shape == (K,), f"mixture_setup: expected {K} components, got shape {mu.shape}"
    thetas = split_layers(w, [(100, 2), (10, 10)])
    ga, gb = gamma

    def f(m, l, p, ga=ga, gb=gb):
        return mixture_prior(thetas, m, l, p, gamma_alpha=ga, gamma_beta=gb)[0]

    value, _, dmu, dll, dlp = mixture_prior(thetas, mu, ll, lp, gamma_alpha=ga, gamma_beta=gb)
    learn = list(range(1, K))
    # The Gamma term (~1e7 with the spec's alpha) depends on log_lambda only; mu and rho are
    # differenced without it (same gradient, far less round-off in the value).
    num_mu = num_grad(lambda x: f(x, ll, lp, 1.0, 0.0), mu.copy(), learn, 1e-6, order=4)
    num_ll = num_grad(lambda x: f(mu, x, lp), ll.copy(), range(K), 1e-4, order=4)
    num_lp = num_grad(lambda x: f(mu, ll, x, 1.0, 0.0), lp.copy(), learn, 1e-3, order=4)
    assert_rel(dmu[1:], num_mu, 1e-6, "dmu[1:]")
    assert_rel(dll, num_ll, 1e-6, "dlog_lambda")
    assert_rel(dlp[1:], num_lp, 1e-6, "dlog_pi[1:]")
    # fixed entries: exactly zero gradient; rho[0] does not enter the value
    assert dmu[0] == 0.0 and dlp[0] == 0.0, f"fixed entries got gradients {dmu[0]}, {dlp[0]}"
    lp2 = lp.copy()
    lp2[0] += 3.0
    assert f(mu, ll, lp2) == value, "log_pi[0] must not change the value"


def test_mixture_prior_value_formula():
    rng = np.random.default_rng(12)
    w, mu, ll, lp = mixture_setup(rng, 40)
    value = mixture_prior([w], mu, ll, lp)[0]
    K = mu.shape[0]
    soft = np.exp(lp[1:]) / np.exp(lp[1:]).sum()
    pis = np.r_[PI0, (1 - PI0) * soft]
    lam = np.exp(ll)
    dens = np.sum(pis * np.sqrt(lam / (2 * np.pi)) * np.exp(-0.5 * lam * (w[:, None] - mu) ** 2), axis=1)
    expect = np.sum(np.log(dens)) + np.sum((GAMMA_ALPHA - 1) * ll - GAMMA_BETA * lam)
    assert K == N_COMPONENTS
    assert abs(value - expect) <= 1e-12 * abs(expect), f"value {value} != {expect}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
def test_mixture_prior_numba_matches_numpy(size, dtype):
    rng = np.random.default_rng(100 + size)
    w, mu, ll, lp = mixture_setup(rng, size + 13, dtype)
    thetas = split_layers(w, [(size,), (13,)])
    out = mixture_prior(thetas, mu, ll, lp)
    ref = mixture_prior_numpy(thetas, mu, ll, lp)
    assert isinstance(out[0], float)
    assert abs(out[0] - ref[0]) <= 1e-12 * abs(ref[0]), f"value {out[0]} != {ref[0]}"
    tol = 1e-6 if dtype == np.float32 else 1e-10
    for a, r, th in zip(out[1], ref[1], thetas):
        assert a.dtype == dtype and a.shape == th.shape
        np.testing.assert_allclose(a, r, rtol=tol, atol=tol * np.abs(r).max())
    for name, a, r in zip(["dmu", "dlog_lambda", "dlog_pi"], out[2:], ref[2:]):
        assert a.dtype == dtype and a.shape == (N_COMPONENTS,), f"{name} dtype/shape"
        np.testing.assert_allclose(a, r, rtol=tol, atol=tol * np.abs(r).max(), err_msg=name)
    assert out[2][0] == 0 and out[4][0] == 0


def test_mixture_prior_chunking_and_layers():
    rng = np.random.default_rng(13)
    w, mu, ll, lp = mixture_setup(rng, 1000)
    K = mu.shape[0]
    ref = mixture_prior([w], mu, ll, lp)
    # several layers (incl. an empty one and a non-contiguous one) give the same value and gradients
    parts = split_layers(w, [(10, 30), (0,), (700,)])
    parts[0] = np.asfortranarray(parts[0])
    out = mixture_prior(parts, mu, ll, lp)
    assert abs(out[0] - ref[0]) <= 1e-12 * abs(ref[0])
    np.testing.assert_allclose(np.concatenate([d.ravel() for d in out[1]]), ref[1][0], rtol=1e-14, atol=0)
    for a, r in zip(out[2:], ref[2:]):
        np.testing.assert_allclose(a, r, rtol=1e-10, atol=1e-10 * np.abs(r).max())
    # the kernel's chunk size only changes the summation order
    from refvbc.priors import _mixture_constants
    mu64, lam, half, const, _ = _mixture_constants(mu, ll, lp, PI0)
    base = None
    for chunk, kernel in [(c, k) for c in (1, 3, 1000, 5000)
                          for k in (mixture_pass_kernel, mixture_pass_kernel_serial)]:
        dt = np.empty_like(w)
        lse, r, rd, rd2 = kernel(w, mu64, lam, half, const, dt, chunk)
        assert lse.shape == (-(-w.size // chunk),) and r.shape == (lse.shape[0], K)
        cur = (lse.sum(), r.sum(0), rd.sum(0), rd2.sum(0), dt)
        if base is None:
            base = cur
        else:
            np.testing.assert_array_equal(cur[4], base[4])
            for a, b in zip(cur[:4], base[:4]):
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())
    # no weights: only the Gamma term
    v, dts, dmu, dll, dlp = mixture_prior([], mu, ll, lp)
    assert dts == [] and np.all(dmu == 0) and np.all(dlp == 0)
    assert v == pytest.approx(np.sum((GAMMA_ALPHA - 1) * ll - GAMMA_BETA * np.exp(ll)), rel=1e-14)


def test_mixture_prior_bad_input():
    rng = np.random.default_rng(14)
    w, mu, ll, lp = mixture_setup(rng, 10)
    with pytest.raises(ValueError, match="list of weight arrays"):
        mixture_prior(w, mu, ll, lp)
    with pytest.raises(ValueError, match="shape"):
        mixture_prior([w], mu, ll[:-1], lp)
    with pytest.raises(ValueError, match="float32 or float64"):
        mixture_prior([w.astype(np.int32)], mu, ll, lp)
    with pytest.raises(ValueError, match="finite"):
        mixture_prior([w], mu, np.r_[ll[:-1], np.nan], lp)
    with pytest.raises(ValueError, match="pi0"):
        mixture_prior([w], mu, ll, lp, pi0=1.0)
    for bad in (np.nan, np.inf):
        w2 = w.copy()
        w2[3] = bad
        with pytest.raises(ValueError, match=r"thetas\[1\] contains non-finite"):
            mixture_prior([w, w2], mu, ll, lp)


# ----------------------------------------------------------------------------------------------
# argmax and initialisation


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
def test_responsibility_argmax(size, dtype):
    rng = np.random.default_rng(200 + size)
    w, mu, ll, lp = mixture_setup(rng, size, dtype)
    idx = mixture_responsibility_argmax(w, mu, ll, lp)
    ref = mixture_responsibility_argmax_numpy(w, mu, ll, lp)
    assert idx.shape == w.shape and idx.dtype == np.intp
    np.testing.assert_array_equal(idx, ref)
    # same as the argmax of the NumPy reference's responsibilities (mixture_prior's own terms)
    mu64, ll64 = mu.astype(np.float64), ll.astype(np.float64)
    soft = np.exp(lp[1:].astype(np.float64))
    logpi = np.log(np.r_[PI0, (1 - PI0) * soft / soft.sum()])
    lam = np.exp(ll64)
    logits = logpi + 0.5 * ll64 - 0.5 * lam * (w.astype(np.float64)[:, None] - mu64) ** 2
    agree = np.mean(np.argmax(logits, axis=1) == idx)
    assert agree == 1.0, f"argmax disagrees with the responsibilities on {1 - agree:.2%} of weights"
    w2 = w.reshape(1, -1)
    assert mixture_responsibility_argmax(w2, mu, ll, lp).shape == (1, size)


@pytest.mark.parametrize("dtype", DTYPES)
def test_mixture_init_table3(dtype):
    rng = np.random.default_rng(20)
    layers = [rng.standard_normal((30, 20)) * 0.1, rng.standard_normal(77) * 0.02]
    mu, ll, lp = mixture_init([x.astype(dtype) for x in layers], dtype=dtype)
    allw = np.concatenate([x.ravel() for x in layers])
    dmu = 2 * np.std(allw) / 17
    expect_mu = np.r_[0.0, np.arange(-8, 0) * dmu, np.arange(1, 9) * dmu]
    tol = 1e-6 if dtype == np.float32 else 1e-12
    for a in (mu, ll, lp):
        assert a.dtype == dtype and a.shape == (17,)
    np.testing.assert_allclose(mu, expect_mu, rtol=tol)
    np.testing.assert_allclose(ll, np.full(17, -2 * np.log(0.9 * dmu)), rtol=tol)
    np.testing.assert_allclose(lp, np.r_[np.log(PI0), np.full(16, np.log((1 - PI0) / 17))], rtol=tol)
    assert mu[0] == 0.0
    # single array input; K and pi0 arguments
    mu5, ll5, lp5 = mixture_init(allw, K=5, pi0=0.9, dtype=np.float64)
    d5 = 2 * np.std(allw) / 5
    np.testing.assert_allclose(mu5, [0, -2 * d5, -d5, d5, 2 * d5], rtol=1e-12)
    np.testing.assert_allclose(lp5, np.r_[np.log(0.9), np.full(4, np.log(0.1 / 5))], rtol=1e-12)
    with pytest.raises(ValueError, match="odd"):
        mixture_init(allw, K=4)
    with pytest.raises(ValueError, match="std"):
        mixture_init(np.zeros(10))


@pytest.mark.parametrize("K", [5, 17, 33, 65])
@pytest.mark.parametrize("dtype", DTYPES)
def test_mixture_init_components(K, dtype):
    """Table 3's layout for any odd K (the --components flag): delta_mu = 2 std(w) / K, mu = [0, the
    (K-1)/2 negative multiples ascending, the positive ones ascending], equal precisions and logits."""
    rng = np.random.default_rng(21)
    w = 0.05 * rng.standard_normal(5000)
    mu, ll, lp = mixture_init(w.astype(dtype), K=K, dtype=dtype)
    for name, a in (("mu", mu), ("log_lambda", ll), ("log_pi", lp)):
        assert a.dtype == dtype and a.shape == (K,), \
            f"{name}: expected {np.dtype(dtype)} ({K},), got {a.dtype} {a.shape}"
    dmu = 2 * np.std(w.astype(dtype).astype(np.float64)) / K
    half = (K - 1) // 2
    expect_mu = np.r_[0.0, np.arange(-half, 0), np.arange(1, half + 1)] * dmu
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(mu, expect_mu, rtol=tol, err_msg=f"mu with K={K}")
    np.testing.assert_allclose(ll, np.full(K, -2 * np.log(0.9 * dmu)), rtol=tol, err_msg=f"log_lambda K={K}")
    np.testing.assert_allclose(lp, np.r_[np.log(PI0), np.full(K - 1, np.log((1 - PI0) / K))], rtol=tol,
                               err_msg=f"log_pi K={K}")
    assert mu[0] == 0.0 and np.array_equal(mu[1:half + 1], -mu[:half:-1]), f"K={K}: means not symmetric: {mu}"


@pytest.mark.parametrize("K", [1, 2, 4, 16, 3.0, True, "17"])
def test_mixture_init_refuses_a_bad_number_of_components(K):
    with pytest.raises(ValueError, match=f"K must be an odd integer >= 3 .*got {K!r}"):
        mixture_init(np.linspace(-1, 1, 50), K=K)


def test_vectorizable_exp_matches_numpy():
    rng = np.random.default_rng(30)
    x = np.concatenate([-rng.uniform(0, 708, 20000), rng.uniform(-20, 20, 20000), rng.uniform(-1, 1, 1000),
                        [0.0, -0.0, -1e-300, 709.0, -708.0, -700.5]])
    out = np.empty_like(x)
    exp_kernel(x, out)
    err = np.max(np.abs(out - np.exp(x)) / np.exp(x))
    assert err <= 4.5e-16, f"exp relative error {err:.3e}"
    assert exp_kernel is not None
    tiny = np.array([-708.5, -745.0, -1e4, -np.inf])
    out = np.empty_like(tiny)
    exp_kernel(tiny, out)
    np.testing.assert_array_equal(out, 0.0)


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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threshold", [0.5, 0.95, 0.99])
def test_one_pruning_rule(dtype, threshold):
    """Training's masks and the compression's keep mask are one rule; it is the dropout rate's
    (away from the threshold and from |theta| ~ 1e-4, where the 1e-8 of the spec's log alpha decides)."""
    from refvbc.arch import get_arch
    from refvbc.compress.cluster import dropout_keep_mask
    from refvbc.train import prune_masks

    rng = np.random.default_rng(0)
    params = {}
    for layer in get_arch("lenet300"):
        theta = (rng.standard_normal(layer.weight_shape) * 0.1).astype(dtype)
        ls = (np.log(theta.astype(np.float64) ** 2) + rng.uniform(-6, 6, theta.shape)).astype(dtype)
        params[f"{layer.name}.theta"], params[f"{layer.name}.log_sigma2"] = theta, ls
    masks = prune_masks("lenet300", params)
    for layer in get_arch("lenet300"):
        theta, ls = params[f"{layer.name}.theta"], params[f"{layer.name}.log_sigma2"]
        keep = priors.keep_mask(theta, ls, threshold)
        np.testing.assert_array_equal(dropout_keep_mask(theta, ls, threshold), keep)
        if threshold == 0.95:
            np.testing.assert_array_equal(masks[layer.name], keep, err_msg="training's masks differ")
        rate = priors.dropout_rate(theta.astype(np.float64), ls.astype(np.float64))
        # away from the threshold, and |theta| >> 1e-4 where the spec's 1e-8 cannot matter
        far = (np.abs(rate - threshold) > 1e-3) & (np.abs(theta) > 1e-2)
        assert far.mean() > 0.8
        np.testing.assert_array_equal(keep[far], (rate < threshold)[far],
                                      err_msg="keep_mask disagrees with the dropout rate")
    with pytest.raises(ValueError, match="threshold"):
        priors.keep_mask(theta, ls, 1.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("scale", [1.0, 3e-5])
def test_kl_vd_add_accumulates_scaled_gradients(size, dtype, scale):
    """kl_vd_add(...) adds scale * the gradients of kl_vd into the buffers it is given."""
    rng = np.random.default_rng(40 + size)
    theta, s = kl_inputs(rng, rng.uniform(-14, 14, size))
    theta, s = theta.astype(dtype), s.astype(dtype)
    base_t = rng.standard_normal(size).astype(dtype)
    base_s = rng.standard_normal(size).astype(dtype)
    dt, ds = base_t.copy(), base_s.copy()
    v = priors.kl_vd_add(theta, s, dt, ds, scale)
    vr, dtr, dsr = kl_vd_numpy(theta, s)
    vtol = 2e-6 * abs(vr) if dtype == np.float32 else 1e-12 * abs(vr)
    assert abs(v - vr) <= vtol, f"value {v} != {vr}"
    tol = 1e-6 if dtype == np.float32 else 1e-12
    for got, base, ref, name in ((dt, base_t, dtr, "dtheta"), (ds, base_s, dsr, "dlog_sigma2")):
        want = base.astype(np.float64) + scale * ref.astype(np.float64)
        err = np.max(np.abs(got - want)) / np.max(np.abs(want))
        assert err <= tol, f"{name}: max error {err:.2e} > {tol:.0e} ({dtype.__name__}, size {size})"
    # same buffers twice: the second call adds the same amount again (a pure accumulation)
    dt2, ds2 = dt.copy(), ds.copy()
    priors.kl_vd_add(theta, s, dt2, ds2, scale)
    np.testing.assert_allclose(dt2 - dt, dt - base_t, rtol=1e-5, atol=1e-6 * np.abs(dt).max())


@pytest.mark.parametrize("dtype", DTYPES)
def test_kl_vd_add_layers_equals_one_call_per_layer(dtype):
    """All layers in one call (one pool dispatch): the same values and gradients, bit for bit, as
    kl_vd_add layer by layer; sizes below and above PARALLEL_MIN, and a layer of one weight."""
    rng = np.random.default_rng(7)
    items, ref = [], []
    for size in (3 * priors.PARALLEL_MIN + 17, 1000, 1, priors.PARALLEL_MIN):
        theta, s = kl_inputs(rng, rng.uniform(-14, 14, size))
        theta, s = theta.astype(dtype), s.astype(dtype)
        dt, ds = rng.standard_normal(size).astype(dtype), rng.standard_normal(size).astype(dtype)
        items.append((theta, s, dt.copy(), ds.copy()))
        ref.append((theta, s, dt.copy(), ds.copy()))
    got = priors.kl_vd_add_layers(items, 3e-5)
    for j, (a, b) in enumerate(zip(items, ref)):
        want = priors.kl_vd_add(b[0], b[1], b[2], b[3], 3e-5)
        assert got[j] == want, f"layer {j}: value {got[j]!r}, one call per layer {want!r}"
        np.testing.assert_array_equal(a[2], b[2], err_msg=f"layer {j}: dtheta")
        np.testing.assert_array_equal(a[3], b[3], err_msg=f"layer {j}: dlog_sigma2")


def test_kl_vd_add_bad_buffers():
    theta = np.full(6, 0.1, np.float32)
    s = np.full(6, -3.0, np.float32)
    for bad, what in ((np.zeros(5, np.float32), "shape"), (np.zeros(6, np.float64), "dtype"),
                      (np.zeros(12, np.float32)[::2], "contiguous")):
        with pytest.raises(ValueError, match="dtheta must be a C-contiguous"):
            priors.kl_vd_add(theta, s, bad, np.zeros(6, np.float32), 1.0)
    with pytest.raises(ValueError, match="log_sigma2 contains non-finite"):
        priors.kl_vd_add(theta, np.array([0, np.nan, 0, 0, 0, 0], np.float32), np.zeros(6, np.float32),
                         np.zeros(6, np.float32), 1.0)


def test_float32_exp_log_match_numpy():
    """The float32 exp/log of the float32 KL_VD kernel (refvbc/kernels/kl32.py), in ulps of float32."""
    from refvbc.kernels.kl32 import expf_kernel, logf_kernel
    rng = np.random.default_rng(32)
    x = np.concatenate([rng.uniform(-87, 88, 20000), rng.uniform(-1, 1, 2000), [0.0, -87.0, 88.0]])
    x = x.astype(np.float32)
    out = np.empty_like(x)
    expf_kernel(x, out)
    ref = np.exp(x.astype(np.float64))
    ulps = np.max(np.abs(out - ref) / (ref * 2.0 ** -23))
    assert ulps <= 2.0, f"expf error {ulps:.2f} ulp > 2"
    low = np.array([-87.5, -100.0, -np.inf], np.float32)
    out = np.empty_like(low)
    expf_kernel(low, out)
    np.testing.assert_array_equal(out, 0.0)
    y = np.concatenate([np.exp(rng.uniform(-87, 88, 20000)), rng.uniform(0.5, 2, 20000),
                        1 + rng.uniform(-1e-3, 1e-3, 1000), [1.0, 2.0, 0.5, 1e-8]]).astype(np.float32)
    out = np.empty_like(y)
    logf_kernel(y, out)
    ref = np.log(y.astype(np.float64))
    err = np.abs(out - ref)
    far = np.abs(ref) >= 0.5
    ulps = np.max(err[far] / np.abs(ref[far]) / 2.0 ** -23)
    assert ulps <= 2.0, f"logf error {ulps:.2f} ulp > 2 where |log x| >= 0.5"
    assert np.max(err[~far]) <= 1e-7, f"logf absolute error {np.max(err[~far]):.2e} > 1e-7 near x = 1"
    bad = np.array([0.0, -1.0, 1e-40, np.inf, np.nan], np.float32)
    out = np.empty_like(bad)
    logf_kernel(bad, out)
    assert np.all(np.isnan(out)), f"logf of bad inputs {out}"
