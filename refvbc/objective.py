"""The training objective of docs/objective.md ("Loss"), assembled for one minibatch.

    loss = mean_b CE(logits_b, y_b) + [ tau1 * KL_VD - tau2 * (sum_i log GM(theta_i) + sum_k log Gamma(lambda_k)) ] / N
           (+ weight_decay/2 * sum theta^2 for the L2 baseline)

Shape legend
    B        batch size; N = n_data (60000 for MNIST)
    params   flat dict (see models.py); grads use the same keys and dtypes
    noise    {layer: eps (B,)+preact_shape} for variational models, None for deterministic ones

Which terms are active follows from the parameters and the coefficients:
    variational (log_sigma2 present and noise given), tau1 != 0  -> KL_VD          (phase "vd")
    gmm.* present, tau2 != 0                                       -> mixture prior  (phases "vdsws", "sws")
"""

import numpy as np

from . import layers, models, priors
from .arch import GAMMA_ALPHA, GAMMA_BETA, N_TRAIN, PI0, get_arch

GMM_KEYS = ("gmm.mu", "gmm.log_lambda", "gmm.log_pi")


MASKED_LOG_SIGMA2 = -1e4  # exp() of it is exactly 0 in float32 and float64


def _masked_params(net, params):
    """Keep-masks of the pruning rule and a params dict whose pruned weights have theta = 0 and
    sigma^2 = 0 (log sigma^2 = MASKED_LOG_SIGMA2), for the masked forward pass."""
    masks, out = {}, dict(params)
    for layer in net:
        th, ls = params[f"{layer.name}.theta"], params[f"{layer.name}.log_sigma2"]
        m = priors.keep_mask(th, ls)
        masks[layer.name] = m
        out[f"{layer.name}.theta"] = np.where(m, th, 0).astype(th.dtype)
        out[f"{layer.name}.log_sigma2"] = np.where(m, ls, MASKED_LOG_SIGMA2).astype(ls.dtype)
    return masks, out


def loss_and_grads(arch, params, x, y, noise=None, tau1=1.0, tau2=0.0, n_data=N_TRAIN,
                   weight_decay=0.0, pi0=PI0, gamma_alpha=GAMMA_ALPHA, gamma_beta=GAMMA_BETA,
                   mask_pruned=False, ws=None):
    """Loss of the spec and its gradient for every parameter.

    Inputs:  arch; params dict; x (B, ...) ; y (B,) int; noise dict or None; coefficients;
             mask_pruned: (option, off in the spec's loss) weights that priors.keep_mask prunes
             (alpha >= 19) are zero in the forward pass, mean and variance, as in Molchanov et al.'s
             code; they get no gradient from the data term, the prior terms still see them;
             ws: optional workspace dict for models.forward (buffers reused from step to step).
    Returns: loss (float), parts {"ce", "kl", "log_prior", "l2"} (unscaled sums; kl and log_prior are
             the spec's KL_VD and sum log GM + sum log Gamma), logits (B, 10), grads {name: array}.
    """
    net = get_arch(arch)
    y = np.asarray(y)
    x = models.check_input(arch, x, y)
    variational = models.is_variational(params, arch)
    if noise is not None and not variational:
        raise ValueError("noise given but the parameters have no log_sigma2 (deterministic model)")
    if variational and noise is None:
        raise ValueError("variational parameters need noise (pass models.draw_noise(...))")
    if noise is not None:
        for layer in net:
            want = (x.shape[0],) + layer.preact_shape
            got = np.shape(noise.get(layer.name))
            if got != want:
                raise ValueError(f"noise[{layer.name!r}] must have shape {want}, got {got}")

    masks = None
    fparams = params
    if mask_pruned and variational:
        masks, fparams = _masked_params(net, params)
    logits, caches = models.forward(arch, fparams, x, noise=noise, ws=ws)
    ce, ce_cache = layers.softmax_ce_forward(logits, y)
    grads = models.backward(arch, layers.softmax_ce_backward(1.0, ce_cache), caches)
    if masks is not None:
        for layer in net:
            grads[f"{layer.name}.theta"] *= masks[layer.name]
            grads[f"{layer.name}.log_sigma2"] *= masks[layer.name]
    parts = {"ce": float(ce), "kl": 0.0, "log_prior": 0.0, "l2": 0.0}
    reg = 0.0
    inv_n = 1.0 / float(n_data)

    if variational and tau1 != 0.0:
        # adds tau1/N * the KL gradients into the data-term gradients in place, all layers in one call
        kl_total = sum(priors.kl_vd_add_layers([(params[f"{l.name}.theta"], params[f"{l.name}.log_sigma2"],
                                                 grads[f"{l.name}.theta"], grads[f"{l.name}.log_sigma2"])
                                                for l in net], tau1 * inv_n))
        parts["kl"] = kl_total
        reg += tau1 * kl_total

    if "gmm.mu" in params and tau2 != 0.0:
        thetas = [params[f"{layer.name}.theta"] for layer in net]
        val, dthetas, dmu, dll, dlp = priors.mixture_prior(
            thetas, params["gmm.mu"], params["gmm.log_lambda"], params["gmm.log_pi"],
            pi0=pi0, gamma_alpha=gamma_alpha, gamma_beta=gamma_beta)
        parts["log_prior"] = val
        reg -= tau2 * val
        s = -tau2 * inv_n
        for layer, d in zip(net, dthetas):
            d *= d.dtype.type(s)  # a fresh array of mixture_prior: scaled in place
            grads[f"{layer.name}.theta"] += d
        for key, d in zip(GMM_KEYS, (dmu, dll, dlp)):
            grads[key] = (s * d).astype(params[key].dtype, copy=False)
    elif "gmm.mu" in params:
        for key in GMM_KEYS:
            grads[key] = np.zeros_like(params[key])

    if weight_decay:
        l2 = 0.0
        for layer in net:
            th = params[f"{layer.name}.theta"]
            l2 += 0.5 * float(np.dot(th.ravel().astype(np.float64), th.ravel().astype(np.float64)))
            grads[f"{layer.name}.theta"] += (weight_decay * th).astype(th.dtype, copy=False)
        parts["l2"] = l2

    loss = float(ce) + reg * inv_n + weight_decay * parts["l2"]
    return loss, parts, logits, grads
