"""Weight clustering (paper §3 "Weight Clustering", appendix B.1).

Shape legend
    n        number of weights of one layer (any shape; clustering is element-wise)
    K        mixture components: the trained mixture's (Table 3: 17; component 0: mu = 0), 64 for the
             VD-only EM
    V        codebook entries: 0.0 first, then the distinct non-zero float32 cluster centres in use

- "sws"/"vdsws": every weight mean goes to the mean of the component with the highest responsibility
  (refvbc.priors.mixture_responsibility_argmax); component 0 gives an exact 0.
- "vd": weights with dropout rate sigma^2 / (theta^2 + sigma^2) >= 0.95 are set to 0 (Molchanov et al.
  2017; spec "Evaluation and pruning"), then a 64-component 1-D Gaussian mixture is fitted by EM to the
  remaining weights (`fit_gmm_1d`) and each weight goes to the mean of its most responsible component.
- vdsws also prunes by dropout rate before the mixture argmax (spec "Evaluation and pruning": a weight is
  pruned when its dropout rate >= 0.95, *then* theta is clustered).
The result of a clustering is (codebook float32 (V,), symbols int64 per layer): weight = codebook[symbol].
"""

import numpy as np
from scipy.special import logsumexp

from refvbc.arch import PI0
from refvbc.priors import DROPOUT_THRESHOLD

VD_COMPONENTS = 64


def dropout_keep_mask(theta, log_sigma2, threshold=DROPOUT_THRESHOLD):
    """True where a weight survives: the project's one pruning rule, refvbc.priors.keep_mask."""
    from refvbc import priors

    return priors.keep_mask(theta, log_sigma2, threshold)


def build_codebook(values_by_layer):
    """Codebook and symbols from already-quantized float values.

    Inputs:  values_by_layer dict name -> float array (any shape); exact zeros are weights that are gone.
    Returns: (codebook float32 (V,), symbols dict name -> int64 array of the same shapes), with
             codebook[0] == 0.0 and the other entries the distinct non-zero float32 values, ascending.
    """
    f32 = {k: np.asarray(v, dtype=np.float32) for k, v in values_by_layer.items()}
    nz = [v[v != 0] for v in f32.values()]
    distinct = np.unique(np.concatenate(nz)) if nz else np.zeros(0, np.float32)
    codebook = np.concatenate([np.zeros(1, np.float32), distinct.astype(np.float32)])
    symbols = {}
    for k, v in f32.items():
        s = np.searchsorted(distinct, v) + 1
        s[v == 0] = 0
        symbols[k] = s.astype(np.int64)
    return codebook, symbols


def merge_components(mu, log_lambda, log_pi, max_kl, pi0=PI0):
    """Merge mixture components closer than `max_kl` (symmetric KL divergence), as Ullrich et al.'s
    soft weight-sharing code does before the collapse: the closest pair is replaced by one Gaussian
    with the pair's total weight, mean and variance (moment matching), until no pair is closer. A
    group holding component 0 keeps mean 0 (it gives the exact zeros).

    Inputs:  mu, log_lambda, log_pi (K,) the trained mixture (pi as in the spec: pi_0 = pi0 fixed,
             pi_k = (1 - pi0) softmax(log_pi[1:]) for k >= 1); max_kl >= 0.
    Returns: (means (K',), variances (K',), weights (K',), zero index) float64, zero index the
             component at mean 0.
    """
    mu = np.asarray(mu, np.float64).copy()
    var = np.exp(-np.asarray(log_lambda, np.float64))
    rho = np.asarray(log_pi, np.float64)[1:]
    soft = np.exp(rho - rho.max())
    w = np.concatenate([[pi0], (1.0 - pi0) * soft / soft.sum()])
    zero = np.zeros(mu.size, bool)
    zero[0] = True
    mu[0] = 0.0
    while mu.size > 1:
        d2 = (mu[:, None] - mu[None, :]) ** 2
        kl = 0.5 * (var[:, None] / var[None, :] + var[None, :] / var[:, None]
                    + d2 * (1.0 / var[:, None] + 1.0 / var[None, :])) - 1.0
        np.fill_diagonal(kl, np.inf)
        i, j = np.unravel_index(np.argmin(kl), kl.shape)
        if kl[i, j] >= max_kl:
            break
        i, j = min(i, j), max(i, j)
        wt = w[i] + w[j]
        m = (w[i] * mu[i] + w[j] * mu[j]) / wt
        v = (w[i] * (var[i] + mu[i] ** 2) + w[j] * (var[j] + mu[j] ** 2)) / wt - m * m
        if zero[i] or zero[j]:
            m = 0.0
            v = (w[i] * (var[i] + mu[i] ** 2) + w[j] * (var[j] + mu[j] ** 2)) / wt
        mu[i], var[i], w[i], zero[i] = m, v, wt, zero[i] or zero[j]
        mu, var, w, zero = (np.delete(a, j) for a in (mu, var, w, zero))
    return mu, var, w, int(np.flatnonzero(zero)[0])


ASSIGN_RULES = ("responsibility", "density")


def cluster_mixture(thetas, mu, log_lambda, log_pi, keep=None, pi0=PI0, merge_kl=None, assign="responsibility"):
    """Mixture-argmax clustering of the weight means (paper §3).

    Inputs:  thetas dict name -> float array; mu, log_lambda, log_pi (K,) the trained mixture;
             keep dict name -> bool array (weights already pruned by dropout rate are False) or None;
             merge_kl: None, or merge components closer than this first (`merge_components`);
             assign: "responsibility" (the spec's rule: argmax_k of pi_k N(theta | mu_k, 1/lambda_k)) or
             "density" (argmax_k of N(theta | mu_k, 1/lambda_k): the other reading of §3's "the mixture
             component k that assigns it the highest probability", the proportions left out).
    Returns: (codebook float32 (V,), symbols dict name -> int64 array, quantized dict name -> float32).
    """
    from refvbc import priors

    if assign not in ASSIGN_RULES:
        raise ValueError(f"assign must be one of {ASSIGN_RULES}, got {assign!r}")
    mu = np.asarray(mu, dtype=np.float64)
    merged = None if merge_kl is None else merge_components(mu, log_lambda, log_pi, merge_kl, pi0)
    if assign == "density":  # equal proportions: the argmax compares the component densities alone
        centres, var, _, zero = merged if merged is not None else (
            np.concatenate([[0.0], mu[1:]]), np.exp(-np.asarray(log_lambda, np.float64)), None, 0)
        merged = (centres, var, np.full(centres.size, 1.0 / centres.size), zero)
    quantized = {}
    for name, theta in thetas.items():
        if merged is None:
            k = np.asarray(priors.mixture_responsibility_argmax(theta, mu, log_lambda, log_pi, pi0=pi0))
            centres, zero = mu, 0
        else:
            centres, var, w, zero = merged
            k = gmm_argmax(theta, centres, var, w).reshape(np.shape(theta))
        if k.shape != np.shape(theta):
            raise ValueError(f"mixture_responsibility_argmax gave shape {k.shape} for {name}, "
                             f"expected {np.shape(theta)}")
        if k.size and (k.min() < 0 or k.max() >= centres.size):
            raise ValueError(f"component index out of range 0..{centres.size - 1} for {name}")
        q = np.where(k == zero, 0.0, centres[k]).astype(np.float32)  # the zero component -> exact 0
        if keep is not None:
            q[~keep[name]] = 0.0
        quantized[name] = q
    codebook, symbols = build_codebook(quantized)
    return codebook, symbols, quantized


FIT_MAX_POINTS = 20000


def fit_gmm_1d(x, n_components=VD_COMPONENTS, max_iter=300, tol=1e-8, chunk=1 << 16,
               max_points=FIT_MAX_POINTS):
    """Maximum-likelihood 1-D Gaussian mixture by EM (Dempster et al. 1977), deterministic.

    Inputs:  x float (n,); n_components K (reduced to the number of distinct values when fewer).
    Returns: (means (K',), variances (K',), weights (K',)) float64, means ascending.
    Initialisation: means at the (k + 0.5)/K quantiles, common variance (range / K)^2, equal weights.
    Stops when the mean log-likelihood improves by less than `tol` (absolute). A variance floor of
    1e-6 * var(x) (or 1e-30) keeps a component from collapsing onto a single value.
    More than `max_points` values are thinned to `max_points` evenly spaced order statistics before
    the fit (deterministic; keeps the empirical distribution), so a model where many weights survive
    (e.g. a short VD run) is clustered in seconds; every weight is still quantized by `gmm_argmax`.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    if max_points and x.size > max_points:
        x = np.sort(x)[np.linspace(0, x.size - 1, max_points).round().astype(np.intp)]
    K = int(min(n_components, np.unique(x).size))
    means = np.quantile(x, (np.arange(K) + 0.5) / K)
    spread = float(x.max() - x.min())
    floor = max(1e-6 * float(x.var()), 1e-30)
    var = np.full(K, max((spread / K) ** 2, floor))
    w = np.full(K, 1.0 / K)
    prev = -np.inf
    for _ in range(max_iter):
        # E-step in chunks (memory n x K stays bounded), accumulating sufficient statistics
        s0 = np.zeros(K)
        s1 = np.zeros(K)
        s2 = np.zeros(K)
        ll = 0.0
        for a in range(0, x.size, chunk):
            xc = x[a:a + chunk, None]
            logp = np.log(w) - 0.5 * np.log(2 * np.pi * var) - 0.5 * (xc - means) ** 2 / var
            lse = logsumexp(logp, axis=1, keepdims=True)
            r = np.exp(logp - lse)
            ll += float(lse.sum())
            s0 += r.sum(0)
            s1 += (r * xc).sum(0)
            s2 += (r * xc * xc).sum(0)
        ll /= x.size
        # M-step; a component that lost all mass keeps its parameters with a tiny weight
        alive = s0 > 1e-12
        means = np.where(alive, s1 / np.where(alive, s0, 1.0), means)
        var = np.where(alive, s2 / np.where(alive, s0, 1.0) - means ** 2, var)
        var = np.maximum(var, floor)
        w = np.maximum(s0 / x.size, 1e-300)
        w /= w.sum()
        if ll - prev < tol:
            break
        prev = ll
    order = np.argsort(means, kind="stable")
    return means[order], var[order], w[order]


def gmm_argmax(x, means, variances, weights):
    """Index of the most responsible component for each x (float (n,)) -> int64 (n,)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    out = np.empty(x.size, dtype=np.int64)
    for a in range(0, x.size, 1 << 16):
        xc = x[a:a + (1 << 16), None]
        logp = np.log(weights) - 0.5 * np.log(2 * np.pi * variances) - 0.5 * (xc - means) ** 2 / variances
        out[a:a + (1 << 16)] = np.argmax(logp, axis=1)
    return out


def cluster_vd(thetas, keep, n_components=VD_COMPONENTS, per_layer=True):
    """VD-only clustering (appendix B.1): an `n_components` (64) GMM over the surviving weights, each
    weight quantized to the mean of its most responsible component.

    per_layer=True (default) fits one GMM per layer; False fits one GMM over all layers as the paper's
    text can be read. The paper does not say which; one shared fit gives the many small weights of the
    big layers nearly all the components, so the few large weights of the first layers are quantized
    coarsely (measured: a LeNet-300-100 VD model loses 0.45 points of test accuracy with one shared
    fit and none per layer; the codebook grows by at most 64 float32 per layer).
    Inputs:  thetas dict name -> float array; keep dict name -> bool array (dropout rate < 0.95).
    Returns: (codebook float32 (V,), symbols dict, quantized dict name -> float32 array).
    """
    names = list(thetas)
    groups = [[n] for n in names] if per_layer else [names]
    quantized = {}
    for group in groups:
        pool = np.concatenate([np.asarray(thetas[n], np.float64)[keep[n]] for n in group])
        means, var, w = fit_gmm_1d(pool, n_components)
        for n in group:
            theta = np.asarray(thetas[n], np.float64)
            q = np.zeros(theta.shape, dtype=np.float32)
            if means.size:
                idx = gmm_argmax(theta[keep[n]], means, var, w)
                q[keep[n]] = means[idx].astype(np.float32)
            quantized[n] = q
    codebook, symbols = build_codebook(quantized)
    return codebook, symbols, quantized
