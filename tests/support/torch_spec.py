"""An independent PyTorch (float64 or float32, autograd) implementation of docs/objective.md.

Written from docs/objective.md alone: it imports no refvbc numerics (no layers/priors/models/objective), and it
reads nothing but the arrays of a cross-check file (``config/``, ``input/``, ``param/``, ``noise/``).
Its loss, logits and autograd gradients are compared against the file's ``out/`` and ``grad/`` arrays by
tests/test_crosscheck_torch.py, and ``spec_file`` writes a whole cross-check file (one minibatch and a
trajectory of torch.optim.Adam steps with per-group learning rates) that ``refvbc.crosscheck verify``
reads.

Shape legend
    B        batch size
    K        mixture components (the length of param/gmm.mu; 17 in the paper's Table 3), component 0
             fixed (mu_0 = 0, pi_0 = config/pi0)
    dense    theta, log_sigma2 (out, in); bias (out,); x (B, in); pre-activation (B, out)
    conv     theta, log_sigma2 (out_c, in_c, kh, kw); bias (out_c,); pre-activation (B, out_c, H', W')
    lenet300 input (B, 784): fc1, fc2, fc3
    lenet5   input (B, 1, 28, 28): conv1, conv2, fc1, fc2

Public API
    spec_loss(arrays) -> (loss: float, logits: np.ndarray (B, 10), grads: dict name -> np.ndarray)
    spec_forward(arch, params, x, y, noise, config) -> (loss tensor, logits tensor, aux dict)
    spec_terms(arch, params, x, y, noise, config) -> (logits, {"ce", "kl", "prior"} -> tensor, aux)
    spec_term_grads(arrays) -> {"ce", "kl", "prior"} -> {param name -> np.ndarray}
    keep_mask(theta, log_sigma2) -> bool tensor, False where the --mask-pruned option zeroes the weight
    spec_outputs(arrays, dtype) -> {output key -> np.ndarray}: out/*, grad/* and step<k>/... of the
        docs/crosscheck.md layout, from the file's input keys alone
    spec_file(arrays, dtype) -> the input keys (cast to dtype) plus spec_outputs: a complete file
    log_alpha_unclipped(theta, log_sigma2), kl_vd(log_alpha), log_mixture(theta, mu, log_lambda,
    log_pi, pi0), log_gamma(log_lambda, alpha, beta)
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

# spec "Terms": KL_VD constants (Molchanov et al. 2017)
K1, K2, K3 = 0.63576, 1.87320, 1.48695
LOG_ALPHA_MIN, LOG_ALPHA_MAX = -10.0, 10.0
VAR_EPS = 1e-8  # spec "Variational layer": y = m + sqrt(v + 1e-8) * eps
THETA_EPS = 1e-8  # spec "Terms": log alpha = s - log(theta^2 + 1e-8)
LOG_ALPHA_PRUNE = math.log(19.0)  # spec "Evaluation and pruning": pruned when clipped log alpha >= log 19

# The network as the spec's "Architectures" section writes it: (layer, kind, what follows it).
# "pool" = ReLU then max-pool 2x2/2; "flatten" = ReLU, max-pool, then flatten in (C, H, W) order.
NETWORKS = {
    "lenet300": (("fc1", "dense", "relu"), ("fc2", "dense", "relu"), ("fc3", "dense", "logits")),
    "lenet5": (
        ("conv1", "conv", "pool"),
        ("conv2", "conv", "pool_flatten"),
        ("fc1", "dense", "relu"),
        ("fc2", "dense", "logits"),
    ),
}
CONFIG_KEYS = ("tau1", "tau2", "n_data", "pi0", "gamma_alpha", "gamma_beta")
OPTIONS = {"mask_pruned": 0.0}  # optional config keys (docs/crosscheck.md) and their value when absent


def variational_layer(kind, x, theta, log_sigma2, bias, eps, keep=None):
    """Local reparameterization (spec "Variational layer").

    Inputs:  x (B, in) or (B, C, H, W); theta, log_sigma2 weight-shaped; bias (out,);
             eps pre-activation-shaped standard normal noise; keep: None, or a weight-shaped bool
             tensor (keep_mask): where False, theta = 0 and sigma^2 = 0 in both paths (--mask-pruned).
    Returns: y = m + sqrt(v + 1e-8) * eps, pre-activation shaped.
    """
    sigma2 = torch.exp(log_sigma2)
    if keep is not None:
        theta = torch.where(keep, theta, torch.zeros_like(theta))
        sigma2 = torch.where(keep, sigma2, torch.zeros_like(sigma2))
    if kind == "dense":
        m = x @ theta.T + bias
        v = (x * x) @ sigma2.T
    elif kind == "conv":
        m = F.conv2d(x, theta, bias)  # valid, stride 1
        v = F.conv2d(x * x, sigma2)
    else:
        raise ValueError(f"unknown layer kind {kind!r}")
    if eps.shape != m.shape:
        raise ValueError(f"noise shape {tuple(eps.shape)} != pre-activation shape {tuple(m.shape)}")
    return m + torch.sqrt(v + VAR_EPS) * eps


def log_alpha_unclipped(theta, log_sigma2):
    """s - log(theta^2 + 1e-8), before the clip (spec "Terms")."""
    return log_sigma2 - torch.log(theta * theta + THETA_EPS)


def clip_log_alpha(raw):
    """clip(raw, -10, 10) with no gradient outside the range (spec "Terms").

    torch.clamp's backward is grad * (min <= raw <= max): zero strictly outside, identity inside (the
    boundary itself counts as inside, as docs/objective.md "Terms" says; tests keep exported values off it).
    """
    return torch.clamp(raw, LOG_ALPHA_MIN, LOG_ALPHA_MAX)


def keep_mask(theta, log_sigma2):
    """True where a weight survives the pruning rule, clipped log alpha < log 19 (spec "Evaluation and
    pruning"); the --mask-pruned option zeroes the others in the forward pass.  Computed without
    gradient: a constant of the step, recomputed from the current parameters at every step."""
    with torch.no_grad():
        return clip_log_alpha(log_alpha_unclipped(theta, log_sigma2)) < LOG_ALPHA_PRUNE


def kl_vd(log_alpha):
    """Sum of k1 - k1*sigmoid(k2 + k3*log_alpha) + 0.5*log1p(exp(-log_alpha)) (spec "Terms")."""
    per = K1 - K1 * torch.sigmoid(K2 + K3 * log_alpha) + 0.5 * torch.log1p(torch.exp(-log_alpha))
    return per.sum()


def mixture_log_weights(log_pi, pi0):
    """log pi_k: log pi0 for k = 0, log((1 - pi0) * softmax(rho[1:])_k) for k >= 1 (spec "Terms").

    rho[0] (log_pi[0]) is not used, so it gets an exactly-zero gradient.
    """
    head = torch.full((1,), math.log(pi0), dtype=log_pi.dtype)
    tail = math.log1p(-pi0) + torch.log_softmax(log_pi[1:], dim=0)
    return torch.cat([head, tail])


def log_mixture(theta_flat, mu, log_lambda, log_pi, pi0):
    """Sum_i log GM(theta_i), log GM = logsumexp_k[log pi_k + 1/2 log lam_k - 1/2 log 2pi
    - 1/2 lam_k (theta_i - mu_k)^2] (spec "Terms"). mu_0 = 0 is fixed: mu[0] gets zero gradient.

    Inputs: theta_flat (W,); mu, log_lambda, log_pi (K,). Returns a scalar.
    """
    mu_used = torch.cat([torch.zeros(1, dtype=mu.dtype), mu[1:]])
    lam = torch.exp(log_lambda)
    log_w = mixture_log_weights(log_pi, pi0)
    d = theta_flat[:, None] - mu_used[None, :]  # (W, K)
    comp = log_w + 0.5 * log_lambda - 0.5 * math.log(2.0 * math.pi) - 0.5 * lam * d * d
    return torch.logsumexp(comp, dim=1).sum()


def log_gamma(log_lambda, alpha, beta):
    """Sum_k (alpha - 1) log lam_k - beta lam_k, the Gamma hyper-prior without its constant."""
    return ((alpha - 1.0) * log_lambda - beta * torch.exp(log_lambda)).sum()


def spec_forward(arch, params, x, y, noise, config):
    """The spec's minibatch loss: mean CE + [tau1 KL_VD - tau2 (sum log GM + sum log Gamma)] / N.

    Inputs:  arch "lenet300" | "lenet5"; params dict name -> tensor (``<layer>.theta|log_sigma2|bias``,
             ``gmm.mu|log_lambda|log_pi``); x (B, 784) or (B, 1, 28, 28); y (B,) int64;
             noise dict layer -> pre-activation-shaped tensor; config dict of floats (CONFIG_KEYS,
             and OPTIONS where given: mask_pruned 1 zeroes the pruned weights in the forward pass).
    Returns: loss (scalar tensor), logits (B, 10), aux dict with ``preact/<layer>`` (pre-activations),
             ``pooled/<layer>`` (post-ReLU pool inputs) and ``log_alpha_raw/<layer>`` (detached).
    """
    logits, terms, aux = spec_terms(arch, params, x, y, noise, config)
    return sum(terms.values()), logits, aux


def spec_terms(arch, params, x, y, noise, config):
    """The three terms of the spec's loss, each as a graph-connected scalar tensor.

    Returns: logits (B, 10); terms dict: "ce" (mean cross-entropy), "kl" (tau1 KL_VD / N),
             "prior" (-tau2 (sum log GM + sum log Gamma) / N); aux as in spec_forward.
    """
    if arch not in NETWORKS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {sorted(NETWORKS)}")
    aux = {}
    h = x
    kl = torch.zeros((), dtype=x.dtype)
    thetas = []
    for name, kind, after in NETWORKS[arch]:
        theta = params[f"{name}.theta"]
        s = params[f"{name}.log_sigma2"]
        keep = keep_mask(theta, s) if config.get("mask_pruned") else None  # KL and prior see all weights
        pre = variational_layer(kind, h, theta, s, params[f"{name}.bias"], noise[name], keep)
        aux[f"preact/{name}"] = pre.detach()
        raw = log_alpha_unclipped(theta, s)
        aux[f"log_alpha_raw/{name}"] = raw.detach()
        kl = kl + kl_vd(clip_log_alpha(raw))
        thetas.append(theta.reshape(-1))
        if after == "logits":
            h = pre
        else:
            h = torch.relu(pre)
            if after.startswith("pool"):
                aux[f"pooled/{name}"] = h.detach()
                h = F.max_pool2d(h, kernel_size=2, stride=2)
            if after == "pool_flatten":
                h = h.reshape(h.shape[0], -1)  # (C, H, W) order
    logits = h
    ce = F.cross_entropy(logits, y, reduction="mean")
    gm = log_mixture(torch.cat(thetas), params["gmm.mu"], params["gmm.log_lambda"],
                     params["gmm.log_pi"], config["pi0"])
    lg = log_gamma(params["gmm.log_lambda"], config["gamma_alpha"], config["gamma_beta"])
    n = config["n_data"]
    terms = {"ce": ce, "kl": config["tau1"] * kl / n,
             "prior": -config["tau2"] * (gm + lg) / n}  # tau2 = 0 gives exactly-zero gmm grads
    return logits, terms, aux


def unpack(arrays, dtype=torch.float64):
    """Read a cross-check mapping (dict or np.load result) into (arch, params, x, y, noise, config).

    Only ``config/``, ``input/``, ``param/`` and ``noise/`` keys are read; params are `dtype` leaf
    tensors with requires_grad. Raises ValueError on a missing key or a non-float32/64 array.
    """
    keys = list(arrays.keys())

    def get(key):
        if key not in keys:
            raise ValueError(f"cross-check arrays lack key {key!r}")
        return np.asarray(arrays[key])

    arch = str(get("config/arch")[()])
    config = {k: float(get(f"config/{k}")) for k in CONFIG_KEYS}
    config.update({k: float(np.asarray(arrays[f"config/{k}"])) if f"config/{k}" in keys else v
                   for k, v in OPTIONS.items()})
    params = {}
    for key in keys:
        if key.startswith("param/"):
            params[key[len("param/"):]] = as_tensor(key, get(key), dtype).requires_grad_(True)
    if "gmm.mu" in params and float(params["gmm.mu"][0].detach()) != 0.0:
        mu0 = float(params["gmm.mu"][0].detach())
        raise ValueError(f"param/gmm.mu[0] must be 0 (spec: mu_0 fixed), got {mu0}")
    x, y, noise = unpack_batch(arrays, "", dtype)
    return arch, params, x, y, noise, config


def as_tensor(key, a, dtype):
    if a.dtype not in (np.float32, np.float64):
        raise ValueError(f"{key} must be float32 or float64, got {a.dtype}")
    return torch.tensor(a, dtype=dtype)


def unpack_batch(arrays, prefix, dtype):
    """(x, y, noise) of the minibatch ``<prefix>input/*``, ``<prefix>noise/<layer>``."""
    if f"{prefix}input/x" not in arrays:
        raise ValueError(f"cross-check arrays lack key {prefix + 'input/x'!r}")
    x = as_tensor(f"{prefix}input/x", np.asarray(arrays[f"{prefix}input/x"]), dtype)
    y = np.asarray(arrays[f"{prefix}input/y"])
    if y.dtype.kind not in "iu":
        raise ValueError(f"{prefix}input/y must be integer, got {y.dtype}")
    n = len(prefix) + len("noise/")
    noise = {k[n:]: as_tensor(k, np.asarray(v), dtype) for k, v in arrays.items()
             if k.startswith(f"{prefix}noise/")}
    return x, torch.tensor(y, dtype=torch.int64), noise


def spec_term_grads(arrays):
    """Gradient of each loss term separately (to see which terms a cross-check file can resolve).

    Returns: dict term ("ce", "kl", "prior") -> dict param name -> np.ndarray.
    """
    arch, params, x, y, noise, config = unpack(arrays)
    _, terms, _ = spec_terms(arch, params, x, y, noise, config)
    names = sorted(params)
    out = {}
    for term, value in terms.items():
        gs = torch.autograd.grad(value, [params[n] for n in names], allow_unused=True, retain_graph=True)
        out[term] = {n: np.zeros(tuple(params[n].shape)) if g is None else g.numpy().copy()
                     for n, g in zip(names, gs)}
    return out


def spec_loss(arrays, return_aux=False):
    """Recompute loss, logits and gradients of a cross-check file from its inputs alone.

    Inputs:  arrays, a mapping with the spec's keys (dict of np.ndarray or an np.load NpzFile).
    Returns: (loss float, logits (B, 10) np.ndarray, grads dict param name -> np.ndarray), plus the
             aux dict of spec_forward (numpy) when return_aux.
    """
    arch, params, x, y, noise, config = unpack(arrays)
    loss, logits, aux = spec_forward(arch, params, x, y, noise, config)
    names = sorted(params)
    gs = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
    grads = {}
    for n, g in zip(names, gs):
        grads[n] = np.zeros(tuple(params[n].shape)) if g is None else g.detach().numpy().copy()
    out = (float(loss.detach()), logits.detach().numpy().copy(), grads)
    if return_aux:
        out = out + ({k: v.numpy().copy() for k, v in aux.items()},)
    return out


def _numpy(t):
    return t.detach().numpy().copy()


def spec_outputs(arrays, dtype=torch.float64):
    """Every output key of the docs/crosscheck.md layout, computed by PyTorch from the input keys.

    Inputs:  arrays with config/*, param/* and input/*, noise/* (one minibatch, optional when the
             file is a trajectory) and, when config/steps = K is present, config/lr/<group>,
             config/adam/{beta1,beta2,eps}, step<k>/input/*, step<k>/noise/*.
    Returns: {key: np.ndarray of `dtype`}: out/loss, out/logits, grad/<name>; and per step k:
             step<k>/out/*, step<k>/grad/<name> (before the update), step<k>/param/<name>,
             step<k>/adam.m/<name>, step<k>/adam.v/<name> (after torch.optim.Adam's step k).
    """
    arch, params, x, y, noise, config = unpack(arrays, dtype) if "input/x" in arrays else \
        unpack({**arrays, **_first_step_batch(arrays)}, dtype)
    out = {}
    if "input/x" in arrays:
        loss, logits, _ = spec_forward(arch, params, x, y, noise, config)
        loss.backward()
        out.update({"out/loss": _numpy(loss), "out/logits": _numpy(logits)})
        out.update({f"grad/{n}": _grad(p) for n, p in params.items()})
    steps = int(np.asarray(arrays["config/steps"])) if "config/steps" in arrays else 0
    if not steps:
        return out
    groups = {}
    for n, p in params.items():
        groups.setdefault(n.rsplit(".", 1)[1], []).append(p)
    opt = torch.optim.Adam(
        [{"params": ps, "lr": float(np.asarray(arrays[f"config/lr/{g}"]))} for g, ps in groups.items()],
        betas=(float(np.asarray(arrays["config/adam/beta1"])), float(np.asarray(arrays["config/adam/beta2"]))),
        eps=float(np.asarray(arrays["config/adam/eps"])))
    for k in range(1, steps + 1):
        pre = f"step{k}/"
        x, y, noise = unpack_batch(arrays, pre, dtype)
        opt.zero_grad(set_to_none=False)
        loss, logits, _ = spec_forward(arch, params, x, y, noise, config)
        loss.backward()
        out.update({f"{pre}out/loss": _numpy(loss), f"{pre}out/logits": _numpy(logits)})
        out.update({f"{pre}grad/{n}": _grad(p) for n, p in params.items()})
        opt.step()
        for n, p in params.items():
            state = opt.state.get(p, {})
            zeros = torch.zeros_like(p)
            out[f"{pre}param/{n}"] = _numpy(p)
            out[f"{pre}adam.m/{n}"] = _numpy(state.get("exp_avg", zeros))
            out[f"{pre}adam.v/{n}"] = _numpy(state.get("exp_avg_sq", zeros))
    return out


def _grad(p):
    return np.zeros(tuple(p.shape), dtype=_numpy(p).dtype) if p.grad is None else _numpy(p.grad)


def _first_step_batch(arrays):
    """A trajectory file without a top-level minibatch: borrow step 1's for unpacking."""
    return {k[len("step1/"):]: v for k, v in arrays.items() if k.startswith(("step1/input/", "step1/noise/"))}


def spec_file(arrays, dtype=torch.float64):
    """A complete cross-check file: the input keys of `arrays` (floats cast to `dtype`) and
    spec_outputs(arrays, dtype) -- what a PyTorch user writes with np.savez."""
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    out = {k: (np.asarray(v).astype(np_dtype) if np.asarray(v).dtype.kind == "f" and not k.startswith("config/")
               else np.asarray(v)) for k, v in arrays.items()}
    out.update(spec_outputs(out, dtype))
    return out
