"""Cross-check exporter (docs/objective.md "Cross-check file"): one float64 minibatch with inputs,
parameters, noise, loss, logits and every gradient, and optionally K Adam steps (docs/crosscheck.md),
for re-derivation in PyTorch / JAX.

    python -m refvbc.crosscheck --arch {lenet300,lenet5} --tau2 T --batch B --seed S [--steps K]
                                [--mask-pruned] [--components K] --out FILE.npz

Parameters are chosen to exercise every branch of the objective: log alpha below, inside and above the
clip range [-10, 10] (kept at least 0.5 away from the edges), weights near several mixture components,
moderate variances (so that every term shows in every gradient), and real MNIST test images as input.
With mask_pruned (config/mask_pruned = 1) 40% of the weights are pruned (log alpha >= log 19): half of
them above the clip range, half inside it at log alpha in [4, 9.5], where KL_VD still passes a gradient;
no log alpha lies within 1 of log 19.
"""

import numpy as np

from .. import models, priors
from ..arch import GAMMA_ALPHA, GAMMA_BETA, INPUT_SHAPES, N_COMPONENTS, N_TRAIN, PI0, get_arch
from ..data import load_mnist
from ..fileio import atomic_savez
from ..optim import TABLE3_LR
from .compute import outputs
from .layout import LR_GROUPS


def _branchy(theta, rng, pruned_inside=False):
    """(theta, log sigma^2) so that log alpha = s - log(theta^2+1e-8) is below (20%), inside (60%) or
    above (20%) the clip range, never within 0.5 of its edges.  Weights above the range get a small
    |theta| (5e-5..2e-4), and those inside have log alpha <= 1, so the variances stay moderate and the
    KL and mixture terms remain visible next to the data term in every gradient.
    pruned_inside: a third of the inside weights (20% of all) get log alpha in [4, 9.5] instead: pruned
    by the rule log alpha >= log 19 ~ 2.94, for the mask_pruned option (their large variances never
    reach the masked forward pass); the draws before it are the same as without."""
    u = rng.random(theta.shape)
    above = u > 0.8
    theta = np.where(above, np.sign(theta) * rng.uniform(5e-5, 2e-4, theta.shape), theta)
    la = np.where(u < 0.2, rng.uniform(-14.0, -10.5, theta.shape),
                  np.where(above, rng.uniform(10.5, 14.0, theta.shape),
                           rng.uniform(-9.5, 1.0, theta.shape)))
    if pruned_inside:
        la = np.where((u > 0.6) & ~above, rng.uniform(4.0, 9.5, theta.shape), la)
    return theta, la + np.log(theta * theta + 1e-8)


def _params(arch, rng, mask_pruned=False, components=N_COMPONENTS):
    """Branchy float64 parameters of `arch` with a mixture of `components` (see the module docstring)."""
    net = get_arch(arch)
    params = models.init_params(arch, rng, dtype=np.float64)
    flat = np.concatenate([params[f"{l.name}.theta"].ravel() for l in net])
    mu, log_lambda, log_pi = priors.mixture_init(flat, K=components, dtype=np.float64)
    # Move the parameters of the mixture off their symmetric initialisation.
    mu = mu + np.concatenate([[0.0], rng.normal(0.0, 0.1 * np.abs(mu[1:]).min(), mu.size - 1)])
    log_lambda = log_lambda + rng.normal(0.0, 0.3, log_lambda.size)
    log_pi = log_pi + np.concatenate([[0.0], rng.normal(0.0, 0.5, log_pi.size - 1)])
    params.update({"gmm.mu": mu, "gmm.log_lambda": log_lambda, "gmm.log_pi": log_pi})
    for l in net:
        th = params[f"{l.name}.theta"]
        # Half of the weights sit near a random mixture component (within a quarter of its std).
        near = rng.random(th.shape) < 0.5
        k = rng.integers(0, mu.size, th.shape)
        jitter = rng.normal(0.0, 0.25, th.shape) * np.exp(-0.5 * log_lambda[k])
        th = np.where(near, mu[k] + jitter, th)
        th = np.where(np.abs(th) < 1e-3, 1e-3 + np.abs(th), th)  # keep log(theta^2) well defined
        params[f"{l.name}.theta"], params[f"{l.name}.log_sigma2"] = _branchy(th, rng, mask_pruned)
    return params


def _batch(arch, batch, rng, images, prefix=""):
    """{<prefix>input/x, <prefix>input/y, <prefix>noise/<layer>}: MNIST test images and fresh noise."""
    x_all, y_all = images
    idx = rng.choice(x_all.shape[0], size=batch, replace=False)
    out = {f"{prefix}input/x": x_all[idx].astype(np.float64).reshape((batch,) + INPUT_SHAPES[arch]),
           f"{prefix}input/y": y_all[idx].astype(np.int64)}
    for name, v in models.draw_noise(arch, batch, rng, dtype=np.float64).items():
        out[f"{prefix}noise/{name}"] = v
    return out


def inputs(arch, tau2, batch, seed, tau1=1.0, n_data=N_TRAIN, steps=0, lrs=None,
           betas=(0.9, 0.999), eps=1e-8, mask_pruned=False, components=N_COMPONENTS):
    """The input keys of a cross-check file (float64): config, params, one minibatch and, for
    steps > 0, the trajectory's config (learning rates per group, Adam betas/eps) and one
    minibatch per step.  mask_pruned: config/mask_pruned = 1 (else 0) and parameters with 40%
    of the weights pruned (see _branchy).  components: K of the mixture (priors.mixture_init:
    odd, >= 3; Table 3's 17 by default)."""
    get_arch(arch)
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    rng = np.random.default_rng(seed)
    params = _params(arch, rng, mask_pruned, components)
    images = load_mnist("test")
    out = {
        "config/arch": np.array(arch), "config/tau1": np.array(float(tau1)),
        "config/tau2": np.array(float(tau2)), "config/n_data": np.array(float(n_data)),
        "config/pi0": np.array(PI0), "config/gamma_alpha": np.array(GAMMA_ALPHA),
        "config/gamma_beta": np.array(GAMMA_BETA), "config/mask_pruned": np.array(int(mask_pruned)),
    }
    out.update(_batch(arch, batch, rng, images))
    out.update({f"param/{n}": np.asarray(v, dtype=np.float64) for n, v in params.items()})
    if steps:
        lrs = dict(TABLE3_LR if lrs is None else lrs)
        out["config/steps"] = np.array(steps, dtype=np.int64)
        out.update({f"config/lr/{g}": np.array(float(lrs[g])) for g in LR_GROUPS})
        out.update({"config/adam/beta1": np.array(float(betas[0])),
                    "config/adam/beta2": np.array(float(betas[1])), "config/adam/eps": np.array(float(eps))})
        for k in range(1, steps + 1):
            out.update(_batch(arch, batch, rng, images, prefix=f"step{k}/"))
    return out


def build(arch, tau2, batch, seed, tau1=1.0, n_data=N_TRAIN, steps=0, dtype=np.float64, with_outputs=True,
          mask_pruned=False, components=N_COMPONENTS):
    """Return the spec's {key: array} for one minibatch of `arch` (and `steps` Adam steps with the
    Table-3 learning rates), computed by refvbc in `dtype` (float64, or float32 to see what a
    float32 implementation gives: every float array of the file is then float32), with the
    mask_pruned option of the loss on or off and a mixture of `components`.  Without outputs: the
    input keys only, for another framework to add its own outputs to."""
    arrays = inputs(arch, tau2, batch, seed, tau1=tau1, n_data=n_data, steps=steps, mask_pruned=mask_pruned,
                    components=components)
    dtype = np.dtype(dtype)
    if dtype != np.float64:
        arrays = {k: v.astype(dtype) if v.dtype == np.float64 and not k.startswith("config/") else v
                  for k, v in arrays.items()}
    if with_outputs:
        arrays.update(outputs(arrays, arch, steps, single=True, dtype=dtype))
    return arrays


def write(path, arrays):
    """Write `arrays` to `path` as an uncompressed .npz, atomically (temp file + rename)."""
    atomic_savez(path, **arrays)
