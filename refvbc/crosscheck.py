"""Cross-check exporter (spec "Cross-check file"): one float64 minibatch with inputs, parameters, noise,
loss, logits and every gradient, for re-derivation in PyTorch / JAX.

    python -m refvbc.crosscheck --arch {lenet300,lenet5} --tau2 T --batch B --seed S --out FILE.npz

Parameters are chosen to exercise every branch of the objective: log alpha below, inside and above the
clip range [-10, 10] (kept at least 0.5 away from the edges), weights near several mixture components,
moderate variances (so that every term shows in every gradient), and real MNIST test images as input.
"""

import argparse
import sys

import numpy as np

from . import models, priors
from .arch import GAMMA_ALPHA, GAMMA_BETA, INPUT_SHAPES, N_TRAIN, PI0, get_arch
from .data import load_mnist
from .fileio import atomic_savez
from .objective import loss_and_grads


def _branchy(theta, rng):
    """(theta, log sigma^2) so that log alpha = s - log(theta^2+1e-8) is below (20%), inside (60%) or
    above (20%) the clip range, never within 0.5 of its edges.  Weights above the range get a small
    |theta| (5e-5..2e-4), and those inside have log alpha <= 1, so the variances stay moderate and the
    KL and mixture terms remain visible next to the data term in every gradient."""
    u = rng.random(theta.shape)
    above = u > 0.8
    theta = np.where(above, np.sign(theta) * rng.uniform(5e-5, 2e-4, theta.shape), theta)
    la = np.where(u < 0.2, rng.uniform(-14.0, -10.5, theta.shape),
                  np.where(above, rng.uniform(10.5, 14.0, theta.shape),
                           rng.uniform(-9.5, 1.0, theta.shape)))
    return theta, la + np.log(theta * theta + 1e-8)


def build(arch, tau2, batch, seed, tau1=1.0, n_data=N_TRAIN):
    """Return the spec's {key: float64/int64 array} for one minibatch of `arch`."""
    net = get_arch(arch)
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    rng = np.random.default_rng(seed)
    params = models.init_params(arch, rng, dtype=np.float64)
    flat = np.concatenate([params[f"{l.name}.theta"].ravel() for l in net])
    mu, log_lambda, log_pi = priors.mixture_init(flat, dtype=np.float64)
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
        params[f"{l.name}.theta"], params[f"{l.name}.log_sigma2"] = _branchy(th, rng)
    x_all, y_all = load_mnist("test")
    idx = rng.choice(x_all.shape[0], size=batch, replace=False)
    x = x_all[idx].astype(np.float64).reshape((batch,) + INPUT_SHAPES[arch])
    y = y_all[idx].astype(np.int64)
    noise = models.draw_noise(arch, batch, rng, dtype=np.float64)
    loss, parts, logits, grads = loss_and_grads(arch, params, x, y, noise, tau1=tau1, tau2=tau2,
                                                n_data=n_data)
    out = {
        "config/arch": np.array(arch), "config/tau1": np.array(float(tau1)),
        "config/tau2": np.array(float(tau2)), "config/n_data": np.array(float(n_data)),
        "config/pi0": np.array(PI0), "config/gamma_alpha": np.array(GAMMA_ALPHA),
        "config/gamma_beta": np.array(GAMMA_BETA), "input/x": x, "input/y": y,
        "out/loss": np.array(loss), "out/logits": logits,
    }
    for name, v in params.items():
        out[f"param/{name}"] = np.asarray(v, dtype=np.float64)
        out[f"grad/{name}"] = np.asarray(grads[name], dtype=np.float64)
    for name, v in noise.items():
        out[f"noise/{name}"] = v
    return out


def write(path, arrays):
    """Write `arrays` to `path` as an uncompressed .npz, atomically (temp file + rename)."""
    atomic_savez(path, **arrays)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m refvbc.crosscheck", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", required=True, choices=["lenet300", "lenet5"])
    p.add_argument("--tau2", type=float, default=0.0, help="mixture coefficient (0 or 0.02 in the paper)")
    p.add_argument("--tau1", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output .npz path")
    a = p.parse_args(argv)
    if a.batch < 1:
        p.error(f"--batch must be >= 1, got {a.batch}")
    arrays = build(a.arch, a.tau2, a.batch, a.seed, tau1=a.tau1)
    write(a.out, arrays)
    print(f"wrote {a.out}: {len(arrays)} arrays, loss {float(arrays['out/loss']):.12g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
