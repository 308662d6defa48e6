"""The assembled loss of the spec: central differences (float64) on sampled coordinates of every
parameter, for both architectures and every phase; float32 runs through the same code."""
import numpy as np
import pytest

from conftest import phase_coefs, phase_params
from support.gradcheck import assert_directional
from refvbc import models, priors
from refvbc.arch import INPUT_SHAPES, N_COMPONENTS, get_arch
from refvbc.objective import loss_and_grads
from refvbc.phases import PHASES


def setup(arch, phase, batch=3, seed=0, components=N_COMPONENTS):
    """Moderate float64 parameters (conftest.phase_params: log alpha in [-8, 1], perturbed mixture of
    `components`), a real batch and the phase's coefficients (conftest.phase_coefs).
    The extreme branch-covering parameters of the cross-check export are tested against PyTorch in
    test_crosscheck_torch.py; finite differences need smoother ground."""
    rng = np.random.default_rng(seed)
    params = phase_params(arch, phase, rng, components=components)
    x = rng.random((batch,) + INPUT_SHAPES[arch])
    y = rng.integers(0, 10, batch)
    noise = models.draw_noise(arch, batch, rng, np.float64) if PHASES[phase].variational else None
    return params, x, y, noise, phase_coefs(phase)


# --components 33 (beyond Table 3's 17) with h = 1e-5: at that point the round-off of the loss (~73) is 1e-6
# of fc3.log_sigma2's small directional derivative at h = 1e-6, 3e-8 at h = 1e-5 (measured)
@pytest.mark.parametrize("arch,phase,components,h", [(a, p, N_COMPONENTS, 1e-6) for a in ("lenet300", "lenet5")
                                                      for p in ("l2", "vd", "sws", "vdsws")]
                         + [("lenet300", "sws", 33, 1e-5), ("lenet300", "vdsws", 33, 1e-5)])
def test_gradients_match_central_differences(arch, phase, components, h):
    params, x, y, noise, coefs = setup(arch, phase, components=components)
    if PHASES[phase].mixture:
        assert params["gmm.mu"].shape == (components,), \
            f"expected a mixture of {components}, got gmm.mu of shape {params['gmm.mu'].shape}"
    _, _, _, grads = loss_and_grads(arch, params, x, y, noise, **coefs)
    assert set(grads) == set(params), f"grads {sorted(grads)} vs params {sorted(params)}"
    rng = np.random.default_rng(1)
    for name in ("gmm.mu", "gmm.log_pi"):
        if name in grads:
            assert grads[name][0] == 0.0, f"{name}[0] is fixed: gradient must be 0, got {grads[name][0]}"
    for name, p in params.items():
        # Directional derivative along the gradient plus a random direction (gradcheck.assert_directional).
        r = rng.standard_normal(p.shape)
        g = grads[name]
        d = g / max(np.linalg.norm(g), 1e-300) + 0.5 * r / np.linalg.norm(r)
        if name in ("gmm.mu", "gmm.log_pi"):
            d[0] = 0.0
        if noise is not None and (name.endswith(".theta") or name.endswith(".log_sigma2")):
            layer = name.split(".")[0]
            la = params[f"{layer}.log_sigma2"] - np.log(params[f"{layer}.theta"] ** 2 + 1e-8)
            d[np.abs(np.abs(la) - 10.0) < 1e-3] = 0.0  # away from the clip's kink
        d /= np.linalg.norm(d)
        assert_directional(lambda _: loss_and_grads(arch, params, x, y, noise, **coefs)[0], p, g, d,
                           h=h, tol=1e-6, what=f"{arch}/{phase} {name}")


@pytest.mark.parametrize("arch", ["lenet300", "lenet5"])
def test_float32_matches_float64(arch):
    params, x, y, noise, coefs = setup(arch, "vdsws")
    l64, _, logits64, g64 = loss_and_grads(arch, params, x, y, noise, **coefs)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    n32 = {k: v.astype(np.float32) for k, v in noise.items()}
    l32, _, logits32, g32 = loss_and_grads(arch, p32, x.astype(np.float32), y, n32, **coefs)
    assert logits32.dtype == np.float32 and all(v.dtype == np.float32 for v in g32.values())
    assert abs(l32 - l64) <= 1e-3 * abs(l64), (l32, l64)
    scale = np.abs(logits64).max()
    assert np.abs(logits32 - logits64).max() <= 1e-3 * scale


def test_loss_parts_add_up():
    arch = "lenet300"
    params, x, y, noise, coefs = setup(arch, "vdsws")
    loss, parts, _, _ = loss_and_grads(arch, params, x, y, noise, **coefs)
    want = parts["ce"] + (coefs["tau1"] * parts["kl"] - coefs["tau2"] * parts["log_prior"]) / coefs["n_data"]
    assert abs(loss - want) <= 1e-12 * abs(want), (loss, want)
    kl = sum(priors.kl_vd(params[f"{l.name}.theta"], params[f"{l.name}.log_sigma2"])[0]
             for l in get_arch(arch))
    assert abs(parts["kl"] - kl) <= 1e-9 * abs(kl)


@pytest.mark.parametrize("bad, msg", [
    (lambda x, y, n: (x[:, :100], y, n), "input must have shape"),
    (lambda x, y, n: (x, y[:2], n), "labels must have shape"),
    (lambda x, y, n: (x, y + 10, n), "labels must lie in 0..9"),
    (lambda x, y, n: (x, y, {**n, "fc2": n["fc2"][:, :5]}), "noise\\['fc2'\\]"),
    (lambda x, y, n: (x, y, None), "need noise"),
])
def test_bad_inputs_are_named(bad, msg):
    params, x, y, noise, coefs = setup("lenet300", "vd")
    x, y, noise = bad(x, y, noise)
    with pytest.raises(ValueError, match=msg):
        loss_and_grads("lenet300", params, x, y, noise, **coefs)


def test_unknown_arch():
    with pytest.raises(ValueError, match="unknown architecture"):
        models.init_params("lenet7", np.random.default_rng(0))


@pytest.mark.parametrize("arch", ["lenet300", "lenet5"])
def test_masked_forward_pass_gradients(arch):
    """mask_pruned: weights with alpha >= 19 are zero in the forward pass (no data gradient), the
    prior terms still see them; central differences away from the mask's boundary."""
    params, x, y, noise, coefs = setup(arch, "vdsws")
    rng = np.random.default_rng(5)
    for layer in get_arch(arch):
        th, ls = params[f"{layer.name}.theta"], params[f"{layer.name}.log_sigma2"]
        pruned = rng.random(th.shape) < 0.3
        ls[pruned] = rng.uniform(4.0, 8.0, pruned.sum()) + np.log(th[pruned] ** 2 + 1e-8)
    _, parts_m, logits_m, grads = loss_and_grads(arch, params, x, y, noise, mask_pruned=True, **coefs)
    _, parts_u, logits_u, _ = loss_and_grads(arch, params, x, y, noise, **coefs)
    assert not np.allclose(logits_m, logits_u), "masking ~30% of the weights changed nothing"
    assert parts_m["kl"] == parts_u["kl"] and parts_m["log_prior"] == parts_u["log_prior"]
    # a masked weight moves the cross-entropy not at all
    n = get_arch(arch)[0].name
    m = priors.keep_mask(params[f"{n}.theta"], params[f"{n}.log_sigma2"])
    i = np.flatnonzero(~m.ravel())[0]
    params[f"{n}.theta"].ravel()[i] *= 1.0 + 1e-3
    assert loss_and_grads(arch, params, x, y, noise, mask_pruned=True, **coefs)[1]["ce"] == parts_m["ce"]
    params[f"{n}.theta"].ravel()[i] /= 1.0 + 1e-3
    for name, p in params.items():
        g = grads[name]
        r = rng.standard_normal(p.shape)
        d = g / max(np.linalg.norm(g), 1e-300) + 0.5 * r / np.linalg.norm(r)
        if name in ("gmm.mu", "gmm.log_pi"):
            d[0] = 0.0
        d /= np.linalg.norm(d)
        assert_directional(lambda _: loss_and_grads(arch, params, x, y, noise, mask_pruned=True,
                                                    **coefs)[0], p, g, d, h=1e-6, tol=1e-6,
                           what=f"{arch} masked {name}")


@pytest.mark.parametrize("param, rate", [("rate", 10.0), ("scale", 0.1)])
def test_gamma_parametrization(param, rate):
    """--gamma-param: beta 10 as a rate or a scale is the same term with rate 10 or 0.1."""
    params, x, y, noise, coefs = setup("lenet300", "sws")
    coefs = dict(coefs, gamma_beta=priors.gamma_rate(10.0, param))
    assert coefs["gamma_beta"] == rate
    loss, parts, _, grads = loss_and_grads("lenet300", params, x, y, noise, **coefs)
    lam = np.exp(params["gmm.log_lambda"])
    lg = np.sum((1e5 - 1) * params["gmm.log_lambda"] - rate * lam)
    _, parts0, _, _ = loss_and_grads("lenet300", params, x, y, noise, **dict(coefs, tau2=0.02, gamma_alpha=1.0,
                                                                            gamma_beta=0.0))
    assert parts["log_prior"] - parts0["log_prior"] == pytest.approx(lg, rel=1e-12)
    with pytest.raises(ValueError, match="rate' or 'scale"):
        priors.gamma_rate(10.0, "shape")
