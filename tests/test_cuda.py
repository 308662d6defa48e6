"""Tests of the numba.cuda path (refvbc/kernels/cuda_*.py, refvbc/cuda_train.py) against the CPU
references (refvbc.layers, refvbc.priors, refvbc.optim, refvbc.train.CpuStepper), tiny shapes.

Where they run
- NUMBA_ENABLE_CUDASIM=1 in the environment: in this process, under the CUDA simulator.
- a real GPU present (refvbc.kernels.cuda_available()): in this process, on the GPU.
- neither (CI, laptops): `test_simulator_subprocess` (marked slow: `python -m pytest -q -m slow
  tests/test_cuda.py`) re-runs this file in a child pytest with NUMBA_ENABLE_CUDASIM=1 (the simulator
  must be chosen before numba is first imported, and the rest of the suite has imported numba already);
  the in-process tests are skipped here.
- everywhere, in the default tier: `test_plan_*` and `test_loss_terms` check refvbc.cuda_train's
  per-batch plan and loss terms with NumPy arrays standing in for device arrays (no numba.cuda needed).
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from refvbc import arch as arch_mod
from refvbc import layers, models, optim, priors
from refvbc.arch import Layer
from refvbc.train import CpuStepper

from conftest import ROOT

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
if SIM:
    MODE = "sim"
else:
    from refvbc.kernels import cuda_available
    MODE = "gpu" if cuda_available()[0] else "delegate"

pytestmark = pytest.mark.cuda
inproc = pytest.mark.skipif(MODE == "delegate", reason="no GPU: run under the CUDA simulator by "
                                                       "test_simulator_subprocess")
DTYPES = [np.float64, np.float32]
TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=2e-4, atol=2e-5)}


@pytest.mark.slow
def test_simulator_subprocess():
    if MODE != "delegate":
        pytest.skip(f"CUDA tests run in this process ({MODE})")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        os.path.abspath(__file__)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, ("simulator run failed:\n" + r.stdout[-6000:] + "\n" + r.stderr[-3000:])
    assert " passed" in r.stdout, r.stdout[-2000:]


# ------------------------------------------------------------------------------------------------
# helpers


def dev(a):
    from numba import cuda
    return cuda.to_device(np.ascontiguousarray(a).reshape(-1))


def empty(shape, dtype):
    from numba import cuda
    return cuda.device_array(int(np.prod(shape)), dtype)


def zeros(shape, dtype):
    return dev(np.zeros(shape, dtype))


def host(d, shape):
    return d.copy_to_host().reshape(shape)


def close(name, got, want, dtype):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{name}: shape {got.shape}, expected {want.shape}"
    tol = TOL[np.dtype(dtype).type]
    err = np.max(np.abs(got - want) / (tol["atol"] / tol["rtol"] + np.abs(want)), initial=0.0)
    assert np.allclose(got, want, **tol), (f"{name}: max relative error {err:.3g}\n expected "
                                            f"{want.ravel()[:6]}\n actual   {got.ravel()[:6]}")


# ------------------------------------------------------------------------------------------------
# layers


@inproc
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,I,O", [(3, 5, 4), (1, 7, 2)])
def test_dense_and_vdense(dtype, B, I, O):
    from refvbc.kernels import cuda_layers as L
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, I)).astype(dtype)
    th = rng.standard_normal((O, I)).astype(dtype)
    ls = rng.uniform(-4, 0, (O, I)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    eps = rng.standard_normal((B, O)).astype(dtype)
    dout = rng.standard_normal((B, O)).astype(dtype)
    # deterministic
    want, cache = layers.dense_forward(x, th, b)
    dx_w, dw_w, db_w = layers.dense_backward(dout, cache)
    out = empty((B, O), dtype)
    L.dense_forward(dev(x), dev(th), dev(b), out, B, I, O)
    close("dense out", host(out, (B, O)), want, dtype)
    dw, dx, db = empty((O, I), dtype), empty((B, I), dtype), empty(O, dtype)
    L.dense_dweight(dev(dout), dev(x), dw, B, I, O)
    L.dense_dx(dev(dout), dev(th), dx, B, I, O)
    L.bias_grad(dev(dout), db, B, O, 1)
    close("dense dw", host(dw, (O, I)), dw_w, dtype)
    close("dense dx", host(dx, (B, I)), dx_w, dtype)
    close("dense db", host(db, O), db_w, dtype)
    # variational
    want, cache = layers.vdense_forward(x, th, ls, b, eps)
    dx_w, dth_w, dls_w, db_w = layers.vdense_backward(dout, cache)
    es, std = empty((O, I), dtype), empty((B, O), dtype)
    d_eps, d_dout = dev(eps), dev(dout)
    L.exp(dev(ls), es)
    L.vdense_forward(dev(x), dev(th), es, dev(b), d_eps, out, std, B, I, O)
    close("vdense out", host(out, (B, O)), want, dtype)
    dv, dth, dls = empty((B, O), dtype), empty((O, I), dtype), empty((O, I), dtype)
    L.dv(d_dout, d_eps, std, dv)
    L.vdense_dweight(d_dout, dv, dev(x), es, dth, dls, B, I, O)
    L.vdense_dx(d_dout, dv, dev(th), es, dev(x), dx, B, I, O)
    close("vdense dtheta", host(dth, (O, I)), dth_w, dtype)
    close("vdense dlog_sigma2", host(dls, (O, I)), dls_w, dtype)
    close("vdense dx", host(dx, (B, I)), dx_w, dtype)
    close("dout unchanged", host(d_dout, (B, O)), dout, dtype)


@inproc
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,ws", [((2, 2, 6, 5), (3, 2, 3, 2)), ((1, 1, 5, 5), (2, 1, 5, 5))])
def test_conv_and_vconv(dtype, xs, ws):
    from refvbc.kernels import cuda_layers as L
    rng = np.random.default_rng(1)
    B, C, H, W = xs
    F, _, KH, KW = ws
    OH, OW = H - KH + 1, W - KW + 1
    dims = (B, C, H, W, F, KH, KW)
    x = rng.standard_normal(xs).astype(dtype)
    th = rng.standard_normal(ws).astype(dtype)
    ls = rng.uniform(-4, 0, ws).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    eps = rng.standard_normal((B, F, OH, OW)).astype(dtype)
    dout = rng.standard_normal((B, F, OH, OW)).astype(dtype)
    os_ = (B, F, OH, OW)
    want, cache = layers.conv2d_forward(x, th, b)
    dx_w, dw_w, db_w = layers.conv2d_backward(dout, cache)
    out, dw, dx, db = empty(os_, dtype), empty(ws, dtype), empty(xs, dtype), empty(F, dtype)
    L.conv_forward(dev(x), dev(th), dev(b), out, *dims)
    L.conv_dweight(dev(dout), dev(x), dw, *dims)
    L.conv_dx(dev(dout), dev(th), dx, *dims)
    L.bias_grad(dev(dout), db, B, F, OH * OW)
    close("conv out", host(out, os_), want, dtype)
    close("conv dw", host(dw, ws), dw_w, dtype)
    close("conv dx", host(dx, xs), dx_w, dtype)
    close("conv db", host(db, F), db_w, dtype)
    want, cache = layers.vconv2d_forward(x, th, ls, b, eps)
    dx_w, dth_w, dls_w, db_w = layers.vconv2d_backward(dout, cache)
    es, std, dv = empty(ws, dtype), empty(os_, dtype), empty(os_, dtype)
    dth, dls = empty(ws, dtype), empty(ws, dtype)
    d_eps, d_dout = dev(eps), dev(dout)
    L.exp(dev(ls), es)
    L.vconv_forward(dev(x), dev(th), es, dev(b), d_eps, out, std, *dims)
    L.dv(d_dout, d_eps, std, dv)
    L.vconv_dweight(d_dout, dv, dev(x), es, dth, dls, *dims)
    L.vconv_dx(d_dout, dv, dev(th), es, dev(x), dx, *dims)
    close("vconv out", host(out, os_), want, dtype)
    close("vconv dtheta", host(dth, ws), dth_w, dtype)
    close("vconv dlog_sigma2", host(dls, ws), dls_w, dtype)
    close("vconv dx", host(dx, xs), dx_w, dtype)


@inproc
@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_maxpool(dtype):
    from refvbc.kernels import cuda_layers as L
    rng = np.random.default_rng(2)
    shape = (2, 3, 4, 6)
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, 0, :2] = 1.5  # a tie inside one window: the first maximum wins, as on the CPU
    dout = rng.standard_normal(shape).astype(dtype)
    want, cache = layers.relu_forward(x)
    out, dx = empty(shape, dtype), empty(shape, dtype)
    L.relu_forward(dev(x), out)
    L.relu_backward(dev(dout), dev(x), dx)
    close("relu out", host(out, shape), want, dtype)
    close("relu dx", host(dx, shape), layers.relu_backward(dout, cache), dtype)
    ps = (2, 3, 2, 3)
    want, cache = layers.maxpool2x2_forward(x)
    dpo = rng.standard_normal(ps).astype(dtype)
    pout, arg = empty(ps, dtype), empty(ps, np.int32)
    L.maxpool_forward(dev(x), pout, arg, 6, 4, 6)
    L.maxpool_backward(dev(dpo), arg, dx, 6, 4, 6)
    close("maxpool out", host(pout, ps), want, dtype)
    close("maxpool dx", host(dx, shape), layers.maxpool2x2_backward(dpo, cache), dtype)


@inproc
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_ce(dtype):
    from refvbc.kernels import cuda_layers as L
    rng = np.random.default_rng(3)
    B, K = 13, 10
    logits = (3 * rng.standard_normal((B, K))).astype(dtype)
    y = rng.integers(0, K, B)
    want, cache = layers.softmax_ce_forward(logits, y)
    dl, out = empty((B, K), dtype), zeros(4, np.float64)
    L.softmax_ce(dev(logits), dev(y.astype(np.int64)), dl, out, 1, B, K)
    close("ce", host(out, 4)[1] / B, want, dtype)
    close("dlogits", host(dl, (B, K)), layers.softmax_ce_backward(1.0, cache), dtype)


# ------------------------------------------------------------------------------------------------
# priors, L2, Adam


@inproc
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 37])
def test_kl_vd(dtype, n):
    from refvbc.kernels import cuda_common, cuda_prior
    rng = np.random.default_rng(4)
    th = rng.standard_normal(n).astype(dtype) * 0.3
    ls = rng.uniform(-14, 8, n).astype(dtype)  # log alpha on both sides of the clip range
    want, dth_w, dls_w = priors.kl_vd_numpy(th, ls)
    g0 = rng.standard_normal(n).astype(dtype)  # the kernel adds into existing gradients
    dth, dls = dev(g0), dev(g0)
    part, out = zeros(cuda_common.REDUCE_BLOCKS, np.float64), zeros(2, np.float64)
    cuda_prior.kl_vd(dev(th), dev(ls), dth, dls, 0.5, part, out, 1)
    close("kl", host(out, 2)[1], want, np.float64)
    close("kl dtheta", host(dth, n), g0 + 0.5 * dth_w.astype(np.float64), dtype)
    close("kl dlog_sigma2", host(dls, n), g0 + 0.5 * dls_w.astype(np.float64), dtype)


@inproc
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K", [17, 3])
def test_mixture_prior(dtype, K):
    from refvbc.kernels import cuda_prior
    rng = np.random.default_rng(5)
    thetas = [(0.2 * rng.standard_normal(s)).astype(dtype) for s in [(4, 5), (9,)]]
    mu, ll, lp = priors.mixture_init(thetas, K=K, dtype=dtype)
    mu = (mu + 0.01 * rng.standard_normal(K)).astype(dtype)
    mu[0] = 0
    ll = (ll + rng.uniform(-1, 1, K)).astype(dtype)
    lp = (lp + rng.uniform(-1, 1, K)).astype(dtype)
    val, dths_w, dmu_w, dll_w, dlp_w = priors.mixture_prior_numpy(thetas, mu, ll, lp)
    consts, out = zeros(4 * K, np.float64), zeros(3, np.float64)
    part = zeros(cuda_prior.mixture_part_size(K), np.float64)
    d_mu = dev(mu)
    cuda_prior.mixture_prep(d_mu, dev(ll), dev(lp), arch_mod.PI0, consts)
    s = -0.25
    d_th = []
    for th in thetas:
        d = zeros(th.shape, dtype)
        cuda_prior.mixture_pass(dev(th), d_mu, consts, d, s, part)
        d_th.append(d)
    dmu, dll, dlp = empty(K, dtype), empty(K, dtype), empty(K, dtype)
    cuda_prior.mixture_finalize(part, consts, dev(ll), arch_mod.GAMMA_ALPHA,
                                arch_mod.GAMMA_BETA, s, dmu, dll, dlp, out, 2)
    close("log prior", host(out, 3)[2], val, dtype)
    for j, (d, th) in enumerate(zip(d_th, thetas)):
        close(f"dtheta[{j}]", host(d, th.shape), s * dths_w[j].astype(np.float64), dtype)
    close("dmu", host(dmu, K), s * dmu_w.astype(np.float64), dtype)
    close("dlog_lambda", host(dll, K), s * dll_w.astype(np.float64), dtype)
    close("dlog_pi", host(dlp, K), s * dlp_w.astype(np.float64), dtype)


@inproc
@pytest.mark.parametrize("dtype", DTYPES)
def test_l2_and_adam(dtype):
    from refvbc.kernels import cuda_adam, cuda_common, cuda_prior
    rng = np.random.default_rng(6)
    n = 29
    th, g0 = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    dth, part, out = dev(g0), zeros(cuda_common.REDUCE_BLOCKS, np.float64), zeros(4, np.float64)
    cuda_prior.l2(dev(th), dth, 5e-4, part, out, 3)
    close("l2", host(out, 4)[3], 0.5 * np.sum(th.astype(np.float64) ** 2), np.float64)
    close("l2 grad", host(dth, n), g0 + dtype(5e-4) * th, dtype)
    p, g = th.copy(), g0.copy()
    m, v = (0.1 * rng.standard_normal(n)).astype(dtype), rng.uniform(0, 1, n).astype(dtype)
    dp, dm, dv = dev(p), dev(m), dev(v)
    args = (1e-3, 0.9, 0.999, 1e-8, 1 - 0.9 ** 3, 1 - 0.999 ** 3, *optim.flush_floors(dtype))
    cuda_adam.adam_update(dp, dev(g), dm, dv, *args)
    optim.adam_update_numpy(p, g, m, v, *[dtype(a) for a in args])
    close("adam p", host(dp, n), p, dtype)
    close("adam m", host(dm, n), m, dtype)
    close("adam v", host(dv, n), v, dtype)


# ------------------------------------------------------------------------------------------------
# whole step: CudaStepper vs CpuStepper on tiny LeNet-shaped nets

TINY = {
    "lenet300": ((Layer("fc1", "dense", (8, 12), (8,)), Layer("fc2", "dense", (6, 8), (6,)),
                  Layer("fc3", "dense", (10, 6), (10,))), (12,)),
    "lenet5": ((Layer("conv1", "conv", (2, 1, 3, 3), (2, 8, 8)), Layer("conv2", "conv", (3, 2, 3, 3), (3, 2, 2)),
                Layer("fc1", "dense", (5, 3), (5,)), Layer("fc2", "dense", (10, 5), (10,))), (1, 10, 10)),
}


def _phase(arch, phase, rng, dtype):
    params = models.init_params(arch, rng, dtype)
    if phase in ("vd", "vdsws"):
        params = models.add_log_sigma2(params, arch, -10.0)
        for k in params:
            if k.endswith("log_sigma2"):
                params[k] = rng.uniform(-12, -1, params[k].shape).astype(dtype)
    if phase in ("sws", "vdsws"):
        flat = np.concatenate([params[k].ravel() for k in models.weight_keys(arch)])
        params.update(zip(("gmm.mu", "gmm.log_lambda", "gmm.log_pi"), priors.mixture_init(flat, dtype=dtype)))
    lrs = dict(optim.TABLE3_LR, theta=1e-2, bias=1e-2, log_sigma2=1e-2)
    coefs = {"l2": dict(tau1=0.0, tau2=0.0, weight_decay=5e-4), "vd": dict(tau1=1.0, tau2=0.0, weight_decay=0.0),
             "sws": dict(tau1=0.0, tau2=0.5, weight_decay=0.0),
             "vdsws": dict(tau1=1.0, tau2=0.5, weight_decay=0.0)}[phase]
    return params, lrs, coefs


@inproc
@pytest.mark.parametrize("dtype", [np.float64])
@pytest.mark.parametrize("phase", ["l2", "vd", "sws", "vdsws"])
@pytest.mark.parametrize("arch", ["lenet300", "lenet5"])
def test_stepper_matches_cpu(monkeypatch, arch, phase, dtype):
    from refvbc.cuda_train import CudaStepper
    net, in_shape = TINY[arch]
    monkeypatch.setitem(arch_mod.ARCHS, arch, net)
    monkeypatch.setitem(arch_mod.INPUT_SHAPES, arch, in_shape)
    rng = np.random.default_rng(7)
    params, lrs, coefs = _phase(arch, phase, rng, dtype)
    cpu_p = {k: v.copy() for k, v in params.items()}
    cpu_opt, gpu_opt = optim.Adam(lrs), optim.Adam(lrs)
    cpu = CpuStepper(arch, cpu_p, cpu_opt, coefs, 100)
    gpu = CudaStepper(arch, params, gpu_opt, coefs, 100)
    for it, B in enumerate([4, 3]):
        x = rng.uniform(0, 1, (B,) + in_shape).astype(dtype)
        y = rng.integers(0, 10, B)
        noise = models.draw_noise(arch, B, rng, dtype) if phase in ("vd", "vdsws") else None
        lc, pc, gc = cpu.step(x, y, noise)
        lg, pg, gg = gpu.step(x, y, noise)
        close(f"step {it} loss", lg, lc, dtype)
        for k in pc:
            close(f"step {it} part {k}", pg[k], pc[k], dtype)
        close(f"step {it} logits", gg, gc, dtype)
    gpu.sync()
    assert gpu_opt.step_count == cpu_opt.step_count == 2
    for k in cpu_p:
        close(f"param {k}", params[k], cpu_p[k], dtype)
        close(f"adam m {k}", gpu_opt.m[k], cpu_opt.m[k], dtype)
        close(f"adam v {k}", gpu_opt.v[k], cpu_opt.v[k], dtype)


# ------------------------------------------------------------------------------------------------
# the step's per-batch plan and loss terms (refvbc.cuda_train), without numba.cuda: default tier


class HostArrays:
    """Stands in for numba.cuda in cuda_train.plan_batch: NumPy arrays instead of device arrays."""

    @staticmethod
    def device_array(n, dtype):
        return np.empty(n, dtype)

    pinned_array = device_array


@pytest.mark.parametrize("variational", [False, True])
def test_plan_wiring(monkeypatch, variational):
    """Geometry, buffer sizes, the inputs each layer reads (x_in), where its input gradient goes (dx)
    and the noise views of the packed staging buffer, on the tiny LeNet-5 (conv, conv, dense, dense)."""
    from refvbc.cuda_train import plan_batch
    net, in_shape = TINY["lenet5"]
    monkeypatch.setitem(arch_mod.ARCHS, "lenet5", net)
    monkeypatch.setitem(arch_mod.INPUT_SHAPES, "lenet5", in_shape)
    B = 3
    plan = plan_batch(HostArrays, True, "lenet5", B, np.dtype(np.float64), variational)
    c1, c2, f1, f2 = plan.layers
    assert (c1.dims, c1.pool_dims, c1.P, c1.n_bias, c1.n_out) == ((B, 1, 10, 10, 2, 3, 3), (B * 2, 8, 8), 64, 2,
                                                                   B * 2 * 64)
    assert (c2.dims, c2.pool_dims, c2.P, c2.n_out) == ((B, 2, 4, 4, 3, 3, 3), (B * 3, 2, 2), 4, B * 3 * 4)
    assert (f1.dims, f1.pool_dims, f1.P, f1.n_bias) == ((B, 3, 5), None, 1, 5)
    assert f2.last and f2.act is None and f2.dact is None and f2.dims == (B, 5, 10)
    assert [L.x_in for L in plan.layers[1:]] == [c1.pool, c2.pool, f1.act]
    assert plan.x is c1.x_in and plan.n_x == B * 100 and np.shares_memory(plan.x, plan.stage)
    assert c1.dx is None and c2.dx is c1.dpool and f1.dx is c2.dpool and f2.dx is f1.dact
    for L in (c1, c2):
        assert L.pool.shape == L.dpool.shape == L.arg.shape == (L.n_out // 4,) and L.arg.dtype == np.int32
    assert plan.y.dtype == np.int64 and plan.logits_host.shape == (B * 10,)
    n_noise = sum(L.n_out for L in plan.layers) if variational else 0
    assert plan.stage.shape == plan.stage_host.shape == (plan.n_x + n_noise,)
    off = plan.n_x
    for L in plan.layers:
        assert L.pre.shape == L.dpre.shape == (L.n_out,)
        if variational:
            assert L.eps.shape == L.std.shape == L.dv.shape == (L.n_out,) and L.noise_off == off - plan.n_x
            assert np.shares_memory(L.eps, plan.stage[off:off + L.n_out])
            off += L.n_out
        else:
            assert L.eps is None and L.std is None and L.dv is None


def test_plan_errors(monkeypatch):
    from refvbc.cuda_train import plan_batch
    odd = (Layer("conv1", "conv", (2, 1, 3, 3), (2, 7, 7)), Layer("fc1", "dense", (10, 18), (10,)))
    monkeypatch.setitem(arch_mod.ARCHS, "lenet5", odd)
    monkeypatch.setitem(arch_mod.INPUT_SHAPES, "lenet5", (1, 9, 9))
    with pytest.raises(ValueError, match="max-pool needs even H, W"):
        plan_batch(HostArrays, True, "lenet5", 2, np.dtype(np.float32), False)
    chain = (Layer("fc1", "dense", (8, 11), (8,)), Layer("fc2", "dense", (10, 8), (10,)))
    monkeypatch.setitem(arch_mod.ARCHS, "lenet300", chain)
    monkeypatch.setitem(arch_mod.INPUT_SHAPES, "lenet300", (12,))
    with pytest.raises(ValueError, match="expects 11 inputs"):
        plan_batch(HostArrays, True, "lenet300", 2, np.dtype(np.float32), False)


def test_loss_terms():
    from refvbc.cuda_train import loss_terms
    t = loss_terms({"tau1": 1.0, "tau2": 0.02}, True, False)
    assert (t.tau1, t.tau2, t.weight_decay, t.kl, t.mixture) == (1.0, 0.02, 0.0, True, False)
    t = loss_terms({"tau1": 1.0, "tau2": 0.02}, False, True)
    assert (t.kl, t.mixture) == (False, True)
    assert loss_terms({}, True, True) == loss_terms({"tau1": 0.0, "tau2": 0.0, "weight_decay": 0.0}, True, True)
    with pytest.raises(ValueError, match="unknown loss coefficients"):
        loss_terms({"tau3": 1.0}, True, True)
