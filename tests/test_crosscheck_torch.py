"""Cross-check of the exported .npz (refvbc.crosscheck) against an independent PyTorch float64
implementation of docs/objective.md (tests/support/torch_spec.py), plus self-checks of that
implementation (autograd vs central differences, prior formulas vs scipy).

Optional: skipped when torch is not installed. The fast tier checks every LeNet-300-100 case and one
LeNet-5 case (FAST_LENET5); the other full-network LeNet-5 cases and trajectories run with -m slow.
"""

import math

import numpy as np
import pytest
from conftest import slow_param, tiered

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # tiny tensors; the test machine's cores are shared

from support.gradcheck import num_grad, rel_err  # noqa: E402
from support import torch_spec  # noqa: E402  (tests/ is on sys.path under pytest's default rootdir import mode)
from refvbc import arch as A  # noqa: E402
from refvbc.crosscheck import rel_err  # noqa: E402  (max|a - b| / max|b|, b the reference)
from support import xcheck_util as XU  # noqa: E402
from support.xcheck_util import ALL_CASES, ALL_IDS, BATCH, MASK_CASES, SEED  # noqa: E402

REL_TOL = 1e-7

# Tiers: the fast one checks every LeNet-300-100 case and one LeNet-5 case, tau2 = 0.02 with the mask
# (conv layers, mixture and mask at once); the other LeNet-5 cases (full network) are the slow tier's.
FAST_LENET5 = (0.02, True)
CASES = tiered(ALL_CASES, ALL_IDS, lambda a, t, m: a == "lenet5" and (t, m) != FAST_LENET5)
MASK_IDS = [f"{a}-tau2={t}" for a, t in MASK_CASES]
MASK_TIERED = tiered(MASK_CASES, MASK_IDS, lambda a, t: a == "lenet5" and (t, True) != FAST_LENET5)
# entries of the fixed mixture component (spec "Terms"): their gradient must be exactly zero
FIXED_ENTRIES = {"gmm.mu": 0, "gmm.log_pi": 0}


def param_names(arch_name):
    names = []
    for layer in A.get_arch(arch_name):
        names += [f"{layer.name}.theta", f"{layer.name}.log_sigma2", f"{layer.name}.bias"]
    return names + ["gmm.mu", "gmm.log_lambda", "gmm.log_pi"]


def param_shape(arch_name, name):
    layers = {layer.name: layer for layer in A.get_arch(arch_name)}
    prefix, suffix = name.split(".")
    if prefix == "gmm":
        return (A.N_COMPONENTS,)
    layer = layers[prefix]
    return (layer.weight_shape[0],) if suffix == "bias" else layer.weight_shape


# ---------------------------------------------------------------------------------------------
# exported files (built once per case per test module)
# ---------------------------------------------------------------------------------------------

_CACHE = {}


def exported(arch_name, tau2, mask=False):
    """refvbc's file (support.xcheck_util.build, shared with the other cross-check modules) and the
    torch recomputation of it."""
    key = (arch_name, tau2, mask)
    if key not in _CACHE:
        arrays = XU.build(arch_name, tau2, mask_pruned=mask)
        _CACHE[key] = (arrays, torch_spec.spec_loss(arrays, return_aux=True))
    return _CACHE[key]


@pytest.mark.parametrize("arch_name,tau2,mask", CASES)
def test_keys_shapes_dtypes(arch_name, tau2, mask):
    arrays, _ = exported(arch_name, tau2, mask)
    names = param_names(arch_name)
    layers = A.get_arch(arch_name)
    expected = {f"config/{k}" for k in ("arch",) + torch_spec.CONFIG_KEYS + tuple(torch_spec.OPTIONS)}
    expected |= {"input/x", "input/y", "out/loss", "out/logits"}
    expected |= {f"param/{n}" for n in names} | {f"grad/{n}" for n in names}
    expected |= {f"noise/{layer.name}" for layer in layers}
    got = set(arrays)
    assert got == expected, f"missing keys {sorted(expected - got)}, unexpected keys {sorted(got - expected)}"

    arch_arr = np.asarray(arrays["config/arch"])
    assert arch_arr.shape == () and arch_arr.dtype.kind == "U", \
        f"config/arch: expected a 0-d str array, got shape {arch_arr.shape} dtype {arch_arr.dtype}"
    assert str(arch_arr[()]) == arch_name, f"config/arch: expected {arch_name!r}, got {arch_arr[()]!r}"
    want_config = {"tau1": 1.0, "tau2": tau2, "n_data": float(A.N_TRAIN), "pi0": A.PI0,
                   "gamma_alpha": A.GAMMA_ALPHA, "gamma_beta": A.GAMMA_BETA, "mask_pruned": int(mask)}
    for k, v in want_config.items():
        a = np.asarray(arrays[f"config/{k}"])
        assert a.shape == (), f"config/{k}: expected a scalar, got shape {a.shape}"
        ok_dtype = a.dtype == np.float64 or (k in ("n_data", "mask_pruned") and a.dtype.kind in "iu")
        assert ok_dtype, f"config/{k}: expected float64, got {a.dtype}"
        assert float(a) == v, f"config/{k}: expected {v}, got {float(a)}"

    shapes = {"input/x": (BATCH,) + A.INPUT_SHAPES[arch_name], "input/y": (BATCH,),
              "out/loss": (), "out/logits": (BATCH, A.N_CLASSES)}
    for n in names:
        shapes[f"param/{n}"] = shapes[f"grad/{n}"] = param_shape(arch_name, n)
    for layer in layers:
        shapes[f"noise/{layer.name}"] = (BATCH,) + layer.preact_shape
    for key, shape in shapes.items():
        a = np.asarray(arrays[key])
        assert a.shape == shape, f"{key}: expected shape {shape}, got {a.shape}"
        want = np.int64 if key == "input/y" else np.float64
        assert a.dtype == want, f"{key}: expected dtype {np.dtype(want)}, got {a.dtype}"
    y = np.asarray(arrays["input/y"])
    assert y.min() >= 0 and y.max() < A.N_CLASSES, f"input/y outside [0, 10): {y}"
    x = np.asarray(arrays["input/x"])
    assert x.min() >= 0.0 and x.max() <= 1.0, f"input/x outside [0, 1]: [{x.min()}, {x.max()}]"
    assert float(arrays["param/gmm.mu"][0]) == 0.0, f"gmm.mu[0]: expected 0, got {arrays['param/gmm.mu'][0]}"


@pytest.mark.parametrize("arch_name,tau2,mask", CASES)
def test_matches_torch(arch_name, tau2, mask):
    arrays, (loss, logits, grads, _) = exported(arch_name, tau2, mask)
    errors = torch_disagreements(arrays, loss, logits, grads, tau2)
    assert not errors, "exported file differs from the torch recomputation:\n" + "\n".join(errors)


# --components K beyond Table 3's 17 (K from param/gmm.mu everywhere): LeNet-300-100 at K = 33 with the
# VD+SWS objective (tau1 = 1) and the mixture and data terms alone (tau1 = 0, SWS's prior), fast tier.
K_OTHER = 33


@pytest.mark.parametrize("tau1", [1.0, 0.0], ids=["vdsws", "tau1=0"])
def test_matches_torch_with_other_components(tau1):
    arrays = XU.build("lenet300", 0.02, tau1=tau1, components=K_OTHER)
    for n in ("gmm.mu", "gmm.log_lambda", "gmm.log_pi"):
        for kind in ("param", "grad"):
            got = np.shape(arrays[f"{kind}/{n}"])
            assert got == (K_OTHER,), f"{kind}/{n}: expected shape ({K_OTHER},), got {got}"
    loss, logits, grads = torch_spec.spec_loss(arrays)
    errors = torch_disagreements(arrays, loss, logits, grads, 0.02)
    assert not errors, f"K={K_OTHER} tau1={tau1}: exported file differs from torch:\n" + "\n".join(errors)


def test_verify_torch_file_with_other_components(tmp_path):
    """A PyTorch-written 5-step trajectory with a 33-component mixture passes verify at rtol 1e-7."""
    arrays = torch_spec.spec_file(XU.inputs("lenet300", 0.02, steps=XU.STEPS, components=K_OTHER))
    assert arrays["step5/adam.v/gmm.mu"].shape == (K_OTHER,), arrays["step5/adam.v/gmm.mu"].shape
    code, out, err = XU.run_verify(arrays, tmp_path / "torch33.npz")
    XU.assert_passes(code, out, err, REL_TOL, f"torch lenet300 K={K_OTHER} steps={XU.STEPS}")


def torch_disagreements(arrays, loss, logits, grads, tau2):
    """Lines naming every output of the exported `arrays` that differs from the torch recomputation
    (loss, logits, grads) by more than REL_TOL, and fixed or tau2 = 0 entries that are not exactly 0."""
    errors = []
    e = rel_err(arrays["out/loss"], loss)
    if not e <= REL_TOL:
        errors.append(f"out/loss: exported {float(arrays['out/loss'])!r} torch {loss!r} rel err {e:.3e}")
    e = rel_err(arrays["out/logits"], logits)
    if not e <= REL_TOL:
        errors.append(f"out/logits: rel err {e:.3e}")
    assert set(grads) == {k[len("param/"):] for k in arrays if k.startswith("param/")}
    for name, g_torch in grads.items():
        key = f"grad/{name}"
        if key not in arrays:
            errors.append(f"{key}: missing")
            continue
        g = np.asarray(arrays[key])
        if name in FIXED_ENTRIES:
            i = FIXED_ENTRIES[name]
            if g[i] != 0.0:
                errors.append(f"{key}[{i}]: expected exactly 0, got {g[i]!r}")
        if tau2 == 0.0 and name.startswith("gmm."):
            if np.any(g != 0.0):
                errors.append(f"{key}: expected exactly 0 at tau2=0, max |g| {np.max(np.abs(g)):.3e}")
            continue
        e = rel_err(g, g_torch)
        if not e <= REL_TOL:
            i = np.unravel_index(np.argmax(np.abs(g - g_torch)), g.shape)
            errors.append(f"{key}: rel err {e:.3e} (worst at {tuple(int(j) for j in i)}: exported "
                          f"{g[i]!r} torch {g_torch[i]!r}, max|torch| {np.max(np.abs(g_torch)):.3e})")
    return errors


@pytest.mark.parametrize("arch_name,tau2,mask", CASES)
def test_exercises_branches(arch_name, tau2, mask):
    """The spec's "Cross-check file": log alpha inside and outside the clip, ReLU inputs away from 0,
    weights near several mixture components (plus: no max-pool ties that matter)."""
    arrays, (_, _, _, aux) = exported(arch_name, tau2, mask)
    raw = np.concatenate([aux[f"log_alpha_raw/{layer.name}"].ravel() for layer in A.get_arch(arch_name)])
    n_lo, n_hi = int(np.sum(raw < -10)), int(np.sum(raw > 10))
    n_in = int(np.sum((raw > -10) & (raw < 10)))
    assert n_lo > 0 and n_hi > 0 and n_in > 0, \
        f"log alpha: expected some < -10, > 10 and inside; got {n_lo} below, {n_hi} above, {n_in} inside"
    margin = float(np.min(np.abs(np.abs(raw) - 10.0)))
    assert margin > 1e-6, f"log alpha within {margin:.3e} of the clip boundary"

    for name, kind, after in torch_spec.NETWORKS[arch_name]:
        if after == "logits":
            continue
        pre = aux[f"preact/{name}"]
        ratio = float(np.min(np.abs(pre)) / np.max(np.abs(pre)))
        assert ratio > 1e-9, f"{name}: ReLU input min|pre|/max|pre| = {ratio:.3e}, too close to 0"
        if after.startswith("pool"):
            h = aux[f"pooled/{name}"]
            b, c, hh, ww = h.shape
            win = h.reshape(b, c, hh // 2, 2, ww // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(-1, 4)
            win = np.sort(win, axis=1)
            live = win[:, 3] > 0
            # relative to each window's max; blank-image regions give tiny (1e-4 * eps) but real gaps,
            # far above float64 round-off (1e-16), so 1e-12 still keeps the argmax unambiguous
            gap = float(np.min((win[live, 3] - win[live, 2]) / win[live, 3]))
            assert gap > 1e-12, f"{name}: max-pool near-tie, relative gap {gap:.3e}"

    theta = np.concatenate([np.asarray(arrays[f"param/{layer.name}.theta"]).ravel()
                            for layer in A.get_arch(arch_name)])
    mu = np.asarray(arrays["param/gmm.mu"]).copy()
    mu[0] = 0.0
    lam = np.exp(np.asarray(arrays["param/gmm.log_lambda"]))
    rho = np.asarray(arrays["param/gmm.log_pi"])
    log_w = np.concatenate([[math.log(A.PI0)], math.log1p(-A.PI0) + rho[1:] - np.logaddexp.reduce(rho[1:])])
    comp = log_w + 0.5 * np.log(lam) - 0.5 * lam * (theta[:, None] - mu[None, :]) ** 2
    used = np.unique(np.argmax(comp, axis=1))
    assert used.size >= 3, f"weights are nearest (by responsibility) to only components {used.tolist()}"


TERM_RESOLVE = 1e-5  # a term this size of a tensor's gradient shows a 1% error of it at REL_TOL


@pytest.mark.parametrize("arch_name,tau2,mask", CASES)
def test_terms_resolvable(arch_name, tau2, mask):
    """Every loss term that depends on a parameter tensor must be large enough in that tensor's total
    gradient for the per-tensor comparison at REL_TOL to detect an error in it.  With the mask, the
    pruned weights alone must show their KL (and prior) parts too, and no cross-entropy part."""
    arrays, (_, _, grads, _) = exported(arch_name, tau2, mask)
    term_grads = torch_spec.spec_term_grads(arrays)
    weak = []
    for name, total in grads.items():
        layer, suffix = name.rsplit(".", 1)
        expected = {"theta": ["ce", "kl"] + (["prior"] if tau2 else []), "log_sigma2": ["ce", "kl"],
                    "bias": ["ce"]}.get(suffix, ["prior"] if tau2 else [])
        scale = float(np.max(np.abs(total)))
        parts = [("", slice(None))]
        if mask and suffix in ("theta", "log_sigma2"):
            pruned = ~pruned_keep(arrays, layer)
            parts.append((" (pruned weights)", pruned))
            ce = float(np.max(np.abs(term_grads["ce"][name][pruned])))
            assert ce == 0.0, f"{name}: pruned weights get a cross-entropy gradient (max {ce:.2e}); expected 0"
        for what, where in parts:
            for term in expected:
                if what and term == "ce":
                    continue
                ratio = float(np.max(np.abs(term_grads[term][name][where]))) / max(scale, 1e-300)
                if ratio < TERM_RESOLVE:
                    weak.append(f"{name}{what}: {term} is {ratio:.2e} of max|grad| {scale:.2e}")
    assert not weak, f"terms below {TERM_RESOLVE} of their tensor's gradient:\n" + "\n".join(weak)


def pruned_keep(arrays, layer, prefix="param/"):
    """torch_spec's keep mask (np bool) of `layer` for the parameters ``<prefix><layer>.*``."""
    return torch_spec.keep_mask(torch.tensor(arrays[f"{prefix}{layer}.theta"]),
                                torch.tensor(arrays[f"{prefix}{layer}.log_sigma2"])).numpy()


def log_alpha_margin(arrays, arch_name, prefix="param/"):
    """min over all weights of |clipped log alpha - log 19|: how far the nearest weight is from
    switching the mask."""
    margin = np.inf
    for layer in A.get_arch(arch_name):
        th = torch.tensor(arrays[f"{prefix}{layer.name}.theta"])
        s = torch.tensor(arrays[f"{prefix}{layer.name}.log_sigma2"])
        la = torch_spec.clip_log_alpha(torch_spec.log_alpha_unclipped(th, s)).numpy()
        margin = min(margin, float(np.min(np.abs(la - torch_spec.LOG_ALPHA_PRUNE))))
    return margin


@pytest.mark.parametrize("arch_name,tau2", MASK_TIERED)
def test_mask_case_prunes_every_layer(arch_name, tau2):
    """A mask_pruned file: in every layer 20-60% of the weights pruned (some with log alpha inside the
    clip range, where KL_VD passes a gradient) and the rest kept, none within 0.5 of log 19; and the
    mask matters: the unmasked loss of the same inputs differs."""
    arrays, (loss, _, _, aux) = exported(arch_name, tau2, mask=True)
    for layer in A.get_arch(arch_name):
        frac = 1.0 - float(np.mean(pruned_keep(arrays, layer.name)))
        assert 0.2 <= frac <= 0.6, f"{layer.name}: expected 20-60% of the weights pruned, got {frac:.1%}"
        raw = aux[f"log_alpha_raw/{layer.name}"]
        n_in = int(np.sum((raw >= torch_spec.LOG_ALPHA_PRUNE) & (raw < 10.0)))
        assert n_in > 0, f"{layer.name}: no pruned weight with log alpha inside the clip range"
    margin = log_alpha_margin(arrays, arch_name)
    assert margin > 0.5, f"a weight's log alpha lies within {margin:.3e} of log 19"
    unmasked = torch_spec.spec_loss(dict(arrays, **{"config/mask_pruned": np.array(0)}))[0]
    assert rel_err(unmasked, loss) > 1e-3, f"the mask changes the loss by only {rel_err(unmasked, loss):.1e}"


def test_write_roundtrip(tmp_path):
    from refvbc import crosscheck

    arrays, ref = exported("lenet5", 0.02)
    path = tmp_path / "cc.npz"
    crosscheck.write(str(path), arrays)
    with np.load(path) as f:  # no allow_pickle: the file must be plain arrays
        loaded = {k: f[k] for k in f.files}
    assert set(loaded) == set(arrays), f"keys changed: {sorted(set(loaded) ^ set(arrays))}"
    for k, v in arrays.items():
        v = np.asarray(v)
        assert loaded[k].dtype == v.dtype and loaded[k].shape == v.shape, \
            f"{k}: wrote {v.dtype}{v.shape}, read {loaded[k].dtype}{loaded[k].shape}"
        assert np.array_equal(loaded[k], v), f"{k}: values changed through write/read"
    loss, logits, grads = torch_spec.spec_loss(loaded)
    assert loss == ref[0] and np.array_equal(logits, ref[1])
    for n in grads:
        assert np.array_equal(grads[n], ref[2][n]), f"grad {n} changed through write/read"


@pytest.mark.parametrize("runner", ["in-process", slow_param("subprocess")])
@pytest.mark.parametrize("mask", [False, True], ids=["", "mask"])
def test_cli_matches_build(tmp_path, mask, runner):
    """The exporter's command line (crosscheck.main here; the real `python -m refvbc.crosscheck` in the
    slow tier) writes what build() returns."""
    arrays, _ = exported("lenet300", 0.02, mask)
    path = tmp_path / "cli.npz"
    args = ["--arch", "lenet300", "--tau2", "0.02", "--batch", BATCH, "--seed", SEED,
            "--out", path] + ["--mask-pruned"] * mask
    code, out, err = XU.run_command(args, runner)
    assert code == 0, f"CLI failed ({code}):\n{out}\n{err}"
    with np.load(path) as f:
        loaded = {k: f[k] for k in f.files}
    assert set(loaded) == set(arrays), f"CLI keys differ: {sorted(set(loaded) ^ set(arrays))}"
    for k in arrays:
        a, b = loaded[k], np.asarray(arrays[k])
        if k.startswith(("out/", "grad/")):  # allow reduction-order round-off between processes
            e = rel_err(a, b)
            assert e <= 1e-12, f"{k}: CLI output differs from build() by rel err {e:.3e}"
        else:
            assert np.array_equal(a, b), f"{k}: CLI output differs from build()"
    loss, _, _ = torch_spec.spec_loss(loaded)
    assert rel_err(loaded["out/loss"], loss) <= REL_TOL


# ---------------------------------------------------------------------------------------------
# self-checks of torch_spec (independent of the exporter)
# ---------------------------------------------------------------------------------------------

TINY = {
    "lenet300": ((1, 12), (("fc1", (6, 12), (6,)), ("fc2", (5, 6), (5,)), ("fc3", (10, 5), (10,)))),
    "lenet5": ((1, 1, 28, 28), (("conv1", (2, 1, 5, 5), (2, 24, 24)), ("conv2", (3, 2, 5, 5), (3, 8, 8)),
                                ("fc1", (5, 48), (5,)), ("fc2", (10, 5), (10,)))),
}


def tiny_arrays(arch_name, tau2, batch=2, seed=0, mask=False):
    """A spec-format dict (inputs only) for a shrunken network of the same topology; mask: with
    config/mask_pruned = 1 (the weights above the clip range, a quarter, are pruned)."""
    rng = np.random.default_rng(seed)
    xshape, layers = TINY[arch_name]
    out = {"config/arch": np.array(arch_name), "config/tau1": np.float64(1.0), "config/tau2": np.float64(tau2),
           "config/n_data": np.float64(100.0), "config/pi0": np.float64(0.5),  # not 0.999: gives the learnable components a visible gradient
           "config/gamma_alpha": np.float64(A.GAMMA_ALPHA), "config/gamma_beta": np.float64(A.GAMMA_BETA),
           "config/mask_pruned": np.float64(mask),
           "input/x": rng.uniform(0, 1, (batch,) + xshape[1:]), "input/y": rng.integers(0, 10, batch)}
    for name, wshape, pshape in layers:
        # per weight a branch: log alpha below, inside (twice as likely) or above [-10, 10]; the
        # "above" weights get small means so that their variance (and the loss) stays moderate
        branch = rng.integers(0, 4, wshape)
        theta = rng.normal(0, 0.3, wshape) * np.where(branch == 3, 1e-3, 1.0)
        offset = np.array([-14.0, -3.0, 0.5, 12.5])[branch] + rng.uniform(-1, 1, wshape)
        s = np.log(theta ** 2 + 1e-8) + offset
        out[f"param/{name}.theta"] = theta
        out[f"param/{name}.log_sigma2"] = s
        out[f"param/{name}.bias"] = rng.normal(0, 0.1, wshape[0])
        out[f"noise/{name}"] = rng.standard_normal((batch,) + pshape)
    k = A.N_COMPONENTS
    out["param/gmm.mu"] = np.concatenate([[0.0], np.linspace(-0.6, 0.6, k - 1)])
    # sum(log lambda) = 0 keeps the Gamma term (1e5 * sum log lambda - ...) small, so that central
    # differences of the loss are not swamped by its round-off
    log_lam = rng.uniform(-1.0, 1.0, k)
    out["param/gmm.log_lambda"] = log_lam - log_lam.mean()
    out["param/gmm.log_pi"] = rng.normal(0, 1, k)
    return out


@pytest.mark.parametrize("arch_name", ["lenet300", "lenet5"])
@pytest.mark.parametrize("tau2,mask", [(0.0, False), (1.0, False), (1.0, True)],
                         ids=["tau2=0", "tau2=1", "tau2=1-mask"])  # tau2 = 1: mixture gradients above round-off
def test_torch_spec_central_differences(arch_name, tau2, mask):
    """torch_spec's autograd gradient vs float64 central differences, on a tiny network
    (per-tensor relative error <= 1e-6); with the mask, recomputed at every evaluation, it is a
    constant of the step (no weight lies near log 19)."""
    arrays = tiny_arrays(arch_name, tau2, mask=mask)
    arch, params, x, y, noise, config = torch_spec.unpack(arrays)
    _, _, grads = torch_spec.spec_loss(arrays)
    h = 1e-6
    pick = np.random.default_rng(1)
    with torch.no_grad():
        for name, p in params.items():
            # every entry of small tensors, 40 random ones (plus entry 0) of larger ones
            idx = np.arange(p.numel())
            if idx.size > 60:
                idx = np.union1d([0], pick.choice(idx.size, 40, replace=False))
            num = num_grad(lambda _: torch_spec.spec_forward(arch, params, x, y, noise, config)[0], p, idx, h)
            ana = grads[name].ravel()[idx]
            e = rel_err(num, ana) if np.any(ana) else float(np.max(np.abs(num)))
            assert e <= 1e-6, \
                f"{arch_name} tau2={tau2} mask={mask} {name}: autograd vs central differences rel err {e:.3e}"
    assert grads["gmm.mu"][0] == 0.0 and grads["gmm.log_pi"][0] == 0.0
    if tau2 == 0.0:
        for n in ("gmm.mu", "gmm.log_lambda", "gmm.log_pi"):
            assert np.all(grads[n] == 0.0), f"{n}: nonzero gradient at tau2=0"


def test_torch_spec_keep_mask():
    """The pruning rule of the mask: clipped log alpha >= log 19 ~ 2.944 is pruned, computed without
    gradient from parameters that require one."""
    la = torch.tensor([-12.0, 2.9, 2.95, 9.0, 12.0], dtype=torch.float64)
    theta = torch.full((5,), 0.1, dtype=torch.float64, requires_grad=True)
    s = (la + torch.log(theta.detach() ** 2 + 1e-8)).requires_grad_(True)
    keep = torch_spec.keep_mask(theta, s)
    assert keep.tolist() == [True, True, False, False, False], f"keep mask: {keep.tolist()}"
    assert keep.dtype == torch.bool and not keep.requires_grad, "the mask must be a constant (no gradient)"


def test_torch_spec_priors_against_scipy():
    """KL_VD, the clip, the mixture and the Gamma term against direct NumPy/SciPy formulas."""
    stats = pytest.importorskip("scipy.stats")
    special = pytest.importorskip("scipy.special")
    rng = np.random.default_rng(5)
    la = rng.uniform(-10, 10, 50)
    want = np.sum(0.63576 - 0.63576 / (1 + np.exp(-(1.87320 + 1.48695 * la))) + 0.5 * np.log1p(np.exp(-la)))
    got = float(torch_spec.kl_vd(torch.tensor(la)))
    assert abs(got - want) <= 1e-12 * abs(want), f"KL_VD: expected {want}, got {got}"

    raw = torch.tensor([-12.0, -9.5, 0.0, 9.5, 12.0], dtype=torch.float64, requires_grad=True)
    clipped = torch_spec.clip_log_alpha(raw)
    clipped.sum().backward()
    assert clipped.tolist() == [-10.0, -9.5, 0.0, 9.5, 10.0]
    assert raw.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0], f"clip gradient: {raw.grad.tolist()}"

    k = A.N_COMPONENTS
    theta = rng.normal(0, 0.3, 40)
    mu = np.concatenate([[0.0], rng.normal(0, 0.5, k - 1)])
    log_lam = rng.uniform(0, 4, k)
    rho = rng.normal(0, 1, k)
    pi = np.concatenate([[A.PI0], (1 - A.PI0) * special.softmax(rho[1:])])
    dens = stats.norm.logpdf(theta[:, None], loc=mu[None, :], scale=np.exp(-0.5 * log_lam)[None, :])
    want = float(np.sum(special.logsumexp(dens + np.log(pi), axis=1)))
    got = float(torch_spec.log_mixture(torch.tensor(theta), torch.tensor(mu), torch.tensor(log_lam),
                                       torch.tensor(rho), A.PI0))
    assert abs(got - want) <= 1e-12 * abs(want), f"log GM: expected {want}, got {got}"

    want = float(np.sum((A.GAMMA_ALPHA - 1) * log_lam - A.GAMMA_BETA * np.exp(log_lam)))
    got = float(torch_spec.log_gamma(torch.tensor(log_lam), A.GAMMA_ALPHA, A.GAMMA_BETA))
    assert abs(got - want) <= 1e-12 * abs(want), f"log Gamma: expected {want}, got {got}"


# ---------------------------------------------------------------------------------------------
# files written by PyTorch (torch_spec.spec_file, torch.optim.Adam) through the real verify command
# ---------------------------------------------------------------------------------------------

_TORCH_FILES = {}


def torch_file(arch_name, tau2, steps, dtype=torch.float64, mask=False):
    """A complete file written by PyTorch from refvbc's exported inputs (outputs all PyTorch's)."""
    key = (arch_name, tau2, steps, dtype, mask)
    if key not in _TORCH_FILES:
        inputs = XU.inputs(arch_name, tau2, steps=steps, mask_pruned=mask)
        _TORCH_FILES[key] = torch_spec.spec_file(inputs, dtype)
    return _TORCH_FILES[key]


# Fast tier: every minibatch case of CASES' fast tier and one trajectory, LeNet-300-100 at tau2 = 0.02
# with the mask (tests/test_crosscheck_jax.py checks all four LeNet-300-100 trajectories in the fast
# tier); the other trajectories (three of LeNet-300-100, the four of LeNet-5) are the slow tier's.
FILE_CASES = tiered([(a, t, m, s) for s in (0, XU.STEPS) for a, t, m in ALL_CASES],
                    [f"{i}-{'minibatch' if s == 0 else f'{s}-steps'}" for s in (0, XU.STEPS) for i in ALL_IDS],
                    lambda a, t, m, s: (a == "lenet5" and (t, m) != FAST_LENET5) if s == 0
                    else (a, t, m) != ("lenet300", 0.02, True))


@pytest.mark.parametrize("arch_name,tau2,mask,steps", FILE_CASES)
def test_verify_torch_file(tmp_path, arch_name, tau2, mask, steps):
    """verify passes a PyTorch-written file at rtol 1e-7 (a minibatch, or a trajectory of 5
    torch.optim.Adam steps with the Table-3 per-group learning rates); with the mask, no weight
    comes within 0.5 of log 19 along the trajectory, so the mask is the same in both."""
    arrays = torch_file(arch_name, tau2, steps, mask=mask)
    code, out, err = XU.run_verify(arrays, tmp_path / "torch.npz")
    XU.assert_passes(code, out, err, REL_TOL, f"torch {arch_name} tau2={tau2} mask={mask} steps={steps}")
    assert (", mask_pruned," in out.splitlines()[0]) == mask, out.splitlines()[0]
    for k in range(1, steps + 1) if mask else ():
        margin = log_alpha_margin(arrays, arch_name, f"step{k}/param/")
        assert margin > 0.5, f"step {k}: a weight's log alpha lies within {margin:.3e} of log 19"


@pytest.mark.parametrize("arch_name", ["lenet300", "lenet5"])
def test_verify_torch_file_changed_entry(tmp_path, arch_name):
    """The same file with one gradient entry changed by 1e-4 relative: exit 1, that tensor named."""
    key = "grad/fc1.theta"
    arrays = XU.perturb_largest(torch_file(arch_name, 0.02, 0), key, 1e-4)
    code, out, _ = XU.run_verify(arrays, tmp_path / "torch.npz")
    bad = [k for k, e in XU.tensor_errors(out).items() if e > REL_TOL]
    assert code == 1 and bad == [key], f"expected exit 1 with only {key} differing, got {code}, {bad}"
    assert f"first disagreement: {key} " in out.splitlines()[-1], out.splitlines()[-1]


@pytest.mark.parametrize("arch_name", ["lenet300", "lenet5"])
def test_verify_torch_file_key_removed(tmp_path, arch_name):
    """The same file with a key removed: exit 2, one line naming it, no report."""
    arrays = dict(torch_file(arch_name, 0.02, 0))
    del arrays["grad/fc2.bias"]
    code, out, err = XU.run_verify(arrays, tmp_path / "torch.npz")
    assert code == 2 and out == "", f"expected exit 2 and no report, got {code}\n{out}"
    assert err.count("\n") == 1 and err.rstrip().endswith("missing 1 key: grad/fc2.bias"), repr(err)


@pytest.mark.parametrize("arch_name", ["lenet300", slow_param("lenet5")])
def test_verify_torch_float32_trajectory(tmp_path, arch_name):
    """A float32 PyTorch trajectory passes at the float32 default --rtol, with the note."""
    from refvbc.crosscheck import verify as V

    arrays = torch_file(arch_name, 0.02, XU.STEPS, torch.float32)
    assert arrays["step3/param/fc1.theta"].dtype == np.float32
    code, out, err = XU.run_verify(arrays, tmp_path / "torch32.npz")
    worst = XU.assert_passes(code, out, err, V.RTOL[np.dtype(np.float32)], f"torch float32 {arch_name}")
    assert "note: float32 file" in out
    assert worst[1] > 1e-9, f"float32 file suspiciously exact ({worst}): is it float64?"
