"""An independent JAX implementation of docs/objective.md (float64 with jax_enable_x64, or float32).

Written from the spec text only: it imports nothing from refvbc and reads nothing but the input keys
of a cross-check file (docs/crosscheck.md): ``config/*``, ``param/*``, ``input/*``, ``noise/*`` and,
for a trajectory, ``config/steps``, ``config/lr/<group>``, ``config/adam/*``, ``step<k>/input/*``,
``step<k>/noise/*``.  ``jax_file`` returns a complete file for ``refvbc.crosscheck verify``; the
gradients come from jax.value_and_grad, Adam is written out from its definition (PyTorch's: step
counter first, bias-corrected moments, eps outside the square root).

Shape legend: B batch; K mixture components (the length of param/gmm.mu; Table 3: 17); dense theta
(out, in), conv theta (out_c, in_c, 5, 5); pre-activations (B, out) or (B, C, H, W); params are a dict
name -> array.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

jax.config.update("jax_enable_x64", True)

KL_K1, KL_K2, KL_K3 = 0.63576, 1.87320, 1.48695  # Molchanov et al. 2017 (spec "Terms")
CLIP = 10.0  # log alpha is clipped to [-10, 10]
EPS_VAR = 1e-8  # sqrt(v + 1e-8)
EPS_THETA = 1e-8  # log(theta^2 + 1e-8)
PRUNE_AT = math.log(19.0)  # a weight is pruned when its clipped log alpha >= log 19 (dropout rate >= 0.95)
CONFIG = ("tau1", "tau2", "n_data", "pi0", "gamma_alpha", "gamma_beta")
OPTIONAL = {"mask_pruned": 0.0}  # config keys a file may omit, with their default

# spec "Architectures": (layer, is_conv, what follows)
LENETS = {
    "lenet300": [("fc1", False, "relu"), ("fc2", False, "relu"), ("fc3", False, None)],
    "lenet5": [("conv1", True, "relu+pool"), ("conv2", True, "relu+pool+flatten"), ("fc1", False, "relu"),
               ("fc2", False, None)],
}


def pre_activation(h, theta, log_var, bias, eps, conv, keep):
    """Local reparameterization: m + sqrt(v + 1e-8) * eps (spec "Variational layer"), with theta = 0 and
    sigma^2 = 0 where the weight-shaped bool `keep` is False (the --mask-pruned option)."""
    theta = jnp.where(keep, theta, 0.0)
    var_w = jnp.where(keep, jnp.exp(log_var), 0.0)
    if conv:
        def conv2d(a, w):
            return jax.lax.conv_general_dilated(a, w, window_strides=(1, 1), padding="VALID",
                                                dimension_numbers=("NCHW", "OIHW", "NCHW"))
        mean = conv2d(h, theta) + bias[None, :, None, None]
        var = conv2d(h ** 2, var_w)
    else:
        mean = jnp.dot(h, theta.T) + bias
        var = jnp.dot(h ** 2, var_w.T)
    return mean + jnp.sqrt(var + EPS_VAR) * eps


def max_pool_2x2(h):
    return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")


def log_alpha(theta, log_var):
    """clip(s - log(theta^2 + 1e-8), -10, 10) (jnp.clip passes no gradient outside the range)."""
    return jnp.clip(log_var - jnp.log(theta ** 2 + EPS_THETA), -CLIP, CLIP)


def kept(theta, log_var, mask_pruned):
    """Bool, weight-shaped: False where mask_pruned (a 0/1 float, traced) is on and log alpha >= log 19.
    A constant of the step: computed under stop_gradient from the current parameters."""
    la = jax.lax.stop_gradient(log_alpha(theta, log_var))
    return (la < PRUNE_AT) | (mask_pruned == 0.0)


def kl_vd_sum(theta, log_var):
    """Sum over weights of k1 - k1 sigmoid(k2 + k3 log alpha) + 0.5 log1p(exp(-log alpha))."""
    la = log_alpha(theta, log_var)
    return jnp.sum(KL_K1 - KL_K1 * jax.nn.sigmoid(KL_K2 + KL_K3 * la) + 0.5 * jnp.log1p(jnp.exp(-la)))


def mixture_and_gamma(w, mu, log_lam, rho, pi0, g_alpha, g_beta):
    """Sum_i log GM(w_i) + Sum_k log Gamma(lambda_k). Component 0: mean 0 and weight pi0, both fixed;
    pi_k = (1 - pi0) softmax(rho[1:]) for k >= 1."""
    means = jnp.concatenate([jnp.zeros((1,), w.dtype), mu[1:]])
    log_weights = jnp.concatenate([jnp.full((1,), jnp.log(pi0), w.dtype),
                                   jnp.log1p(-pi0) + jax.nn.log_softmax(rho[1:])])
    lam = jnp.exp(log_lam)
    logp = (log_weights + 0.5 * log_lam - 0.5 * math.log(2 * math.pi)
            - 0.5 * lam * (w[:, None] - means[None, :]) ** 2)
    return jnp.sum(logsumexp(logp, axis=1)) + jnp.sum((g_alpha - 1.0) * log_lam - g_beta * lam)


def objective(params, arch, x, y, noise, cfg):
    """The spec's minibatch loss; returns (loss, logits).  cfg["mask_pruned"] (optional, 0 when absent)
    = 1 zeroes the pruned weights in the forward pass; KL_VD and the mixture see every weight."""
    h = x
    kl = 0.0
    weights = []
    for name, conv, after in LENETS[arch]:
        th, s = params[name + ".theta"], params[name + ".log_sigma2"]
        keep = kept(th, s, cfg.get("mask_pruned", 0.0))
        h = pre_activation(h, th, s, params[name + ".bias"], noise[name], conv, keep)
        kl = kl + kl_vd_sum(th, s)
        weights.append(th.ravel())
        if after:
            h = jax.nn.relu(h)
            if "pool" in after:
                h = max_pool_2x2(h)
            if "flatten" in after:
                h = h.reshape(h.shape[0], -1)
    logits = h
    logp = jax.nn.log_softmax(logits, axis=1)
    ce = -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))
    prior = mixture_and_gamma(jnp.concatenate(weights), params["gmm.mu"], params["gmm.log_lambda"],
                              params["gmm.log_pi"], cfg["pi0"], cfg["gamma_alpha"], cfg["gamma_beta"])
    return ce + (cfg["tau1"] * kl - cfg["tau2"] * prior) / cfg["n_data"], logits


# compiled once per (architecture, shapes, dtype); cfg's floats are traced, so tau2 needs no recompile
_value_and_grad = jax.jit(jax.value_and_grad(objective, has_aux=True), static_argnums=(1,))


def _batch(arrays, prefix, dtype):
    x = jnp.asarray(np.asarray(arrays[prefix + "input/x"]), dtype)
    y = jnp.asarray(np.asarray(arrays[prefix + "input/y"]).astype(np.int64))
    noise = {k.split("/")[-1]: jnp.asarray(np.asarray(v), dtype) for k, v in arrays.items()
             if k.startswith(prefix + "noise/")}
    return x, y, noise


def jax_outputs(arrays, dtype=jnp.float64):
    """Output keys (docs/crosscheck.md) from a file's input keys: out/*, grad/* for the top-level
    minibatch when present; per step k: step<k>/out/*, step<k>/grad/* (before the update) and
    step<k>/param|adam.m|adam.v/* after Adam step k."""
    arch = str(np.asarray(arrays["config/arch"])[()])
    cfg = {k: float(np.asarray(arrays["config/" + k])) for k in CONFIG}
    cfg.update({k: float(np.asarray(arrays.get("config/" + k, v))) for k, v in OPTIONAL.items()})
    params = {k[6:]: jnp.asarray(np.asarray(v), dtype) for k, v in arrays.items() if k.startswith("param/")}
    out = {}

    def evaluate(prefix):
        x, y, noise = _batch(arrays, prefix, dtype)
        (loss, logits), grads = _value_and_grad(params, arch, x, y, noise, cfg)
        out[prefix + "out/loss"] = np.asarray(loss)
        out[prefix + "out/logits"] = np.asarray(logits)
        out.update({f"{prefix}grad/{n}": np.asarray(g) for n, g in grads.items()})
        return grads

    if "input/x" in arrays:
        evaluate("")
    steps = int(np.asarray(arrays["config/steps"])) if "config/steps" in arrays else 0
    if steps:
        b1, b2, eps = (float(np.asarray(arrays["config/adam/" + k])) for k in ("beta1", "beta2", "eps"))
        lr = {n: float(np.asarray(arrays["config/lr/" + n.split(".")[-1]])) for n in params}
        m = {n: jnp.zeros_like(p) for n, p in params.items()}
        v = {n: jnp.zeros_like(p) for n, p in params.items()}
        for t in range(1, steps + 1):
            prefix = f"step{t}/"
            grads = evaluate(prefix)
            for n in params:
                g = grads[n]
                m[n] = b1 * m[n] + (1.0 - b1) * g
                v[n] = b2 * v[n] + (1.0 - b2) * g * g
                denom = jnp.sqrt(v[n]) / math.sqrt(1.0 - b2 ** t) + eps
                params[n] = params[n] - (lr[n] / (1.0 - b1 ** t)) * m[n] / denom
                out[f"{prefix}param/{n}"] = np.asarray(params[n])
                out[f"{prefix}adam.m/{n}"] = np.asarray(m[n])
                out[f"{prefix}adam.v/{n}"] = np.asarray(v[n])
    return out


def jax_file(arrays, dtype=jnp.float64):
    """A complete cross-check file: the input keys of `arrays` (floats cast to `dtype`) plus
    jax_outputs -- what a JAX user writes with np.savez."""
    np_dtype = np.dtype(dtype)
    out = {}
    for k, v in arrays.items():
        v = np.asarray(v)
        out[k] = v.astype(np_dtype) if v.dtype.kind == "f" and not k.startswith("config/") else v
    out.update(jax_outputs(out, dtype))
    return out
