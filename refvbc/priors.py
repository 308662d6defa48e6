"""The prior terms of the objective (docs/objective.md, "Terms"): KL_VD, the Gaussian-mixture
log-density with its Gamma hyper-prior, the mixture initialisation (paper Table 3), the clustering
argmax and the dropout rate used for pruning.

Shape legend
    theta, log_sigma2   one layer's weight means / log-variances, any shape (same shape)
    thetas              list of such weight arrays, one per layer
    D                   total number of weights (all layers)
    K                   mixture components (Table 3: arch.N_COMPONENTS = 17; Config.components);
                        index 0 is the zero component
    mu, log_lambda, log_pi   (K,) mixture means, log-precisions, softmax logits rho (spec names
                        gmm.mu, gmm.log_lambda, gmm.log_pi)

Dtypes: float32 (training) and float64 (checks) go through the same code. Per-weight arithmetic is
done in float64 (except KL_VD of float32 weights: float32 arithmetic, refvbc/kernels/kl32.py) and every
returned array has the dtype of the input it belongs to; scalar values are Python floats accumulated in
float64.

Each public function with a numba kernel (refvbc/kernels/mixture.py) has a NumPy reference here
(``*_numpy``) that the tests compare it against.
"""

import numpy as np

from refvbc.arch import GAMMA_ALPHA, GAMMA_BETA, N_COMPONENTS, PI0
from refvbc.kernels.mixture import (
    CHUNK,
    KL_K1,
    KL_K2,
    KL_K3,
    LOG_ALPHA_EPS,
    LOG_ALPHA_MAX,
    LOG_ALPHA_MIN,
    PARALLEL_MIN,
    kl_vd_kernel,
    kl_vd_kernel_serial,
    mixture_pass_kernel,
    mixture_pass_kernel_serial,
    responsibility_argmax_kernel,
)
from refvbc import parallel as _par
from refvbc.kernels.kl32 import kl_vd_add_kernel32

_HALF_LOG_2PI = 0.5 * np.log(2.0 * np.pi)
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ----------------------------------------------------------------------------------------------
# input checks


def _check_float(name, x):
    """Return x as an ndarray of float32/float64, or raise a ValueError naming the problem."""
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"{name} must be float32 or float64, got dtype {x.dtype}")
    return x


def _check_pair(theta, log_sigma2):
    _check_float("theta", theta)
    _check_float("log_sigma2", log_sigma2)
    if theta.shape != log_sigma2.shape:
        raise ValueError(
            f"theta and log_sigma2 must have the same shape, got {theta.shape} and {log_sigma2.shape}"
        )
    if theta.dtype != log_sigma2.dtype:
        raise ValueError(
            f"theta and log_sigma2 must have the same dtype, got {theta.dtype} and {log_sigma2.dtype}"
        )


def _check_thetas(thetas):
    if isinstance(thetas, np.ndarray) or not isinstance(thetas, (list, tuple)):
        raise ValueError(
            f"thetas must be a list of weight arrays (one per layer), got {type(thetas).__name__}"
        )
    for j, th in enumerate(thetas):
        _check_float(f"thetas[{j}]", th)


def _mixture_constants(mu, log_lambda, log_pi, pi0):
    """Validate the mixture parameters and precompute per-component float64 constants.

    Returns (mu64, lam, half_lam, const, soft) with lam = exp(log_lambda),
    const_k = log pi_k + 0.5 log lambda_k - 0.5 log 2 pi, and soft = softmax(rho[1:]) (K-1,).
    pi_0 = pi0, pi_k = (1 - pi0) softmax(rho[1:])_k for k >= 1 (spec "Terms"; rho[0] unused).
    """
    _check_float("mu", mu)
    _check_float("log_lambda", log_lambda)
    _check_float("log_pi", log_pi)
    if mu.ndim != 1 or mu.shape[0] < 2:
        raise ValueError(f"mu must have shape (K,) with K >= 2, got {mu.shape}")
    K = mu.shape[0]
    if log_lambda.shape != (K,) or log_pi.shape != (K,):
        raise ValueError(
            f"mu, log_lambda, log_pi must all have shape (K,)=({K},), got {mu.shape}, "
            f"{log_lambda.shape}, {log_pi.shape}"
        )
    for name, x in (("mu", mu), ("log_lambda", log_lambda), ("log_pi", log_pi)):
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} must be finite, got {x}")
    if not (0.0 < pi0 < 1.0):
        raise ValueError(f"pi0 must lie in (0, 1), got {pi0}")
    mu64 = np.ascontiguousarray(mu, dtype=np.float64)
    loglam64 = log_lambda.astype(np.float64)
    lam = np.exp(loglam64)
    rho = log_pi[1:].astype(np.float64)
    log_soft = rho - (rho.max() + np.log(np.sum(np.exp(rho - rho.max()))))
    log_pis = np.empty(K)
    log_pis[0] = np.log(pi0)
    log_pis[1:] = np.log1p(-pi0) + log_soft
    const = log_pis + 0.5 * loglam64 - _HALF_LOG_2PI
    return mu64, lam, 0.5 * lam, const, np.exp(log_soft)


def _raise_non_finite(named_arrays):
    """Raise a ValueError naming the first array that holds a non-finite entry (called only when a
    computed value came out non-finite, so finite inputs pay nothing for the check)."""
    for name, x in named_arrays:
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} contains non-finite values (nan or inf)")
    raise ValueError("the value came out non-finite for finite inputs")


def _flat(x):
    """Contiguous 1-D view of x (a copy only if x is not C-contiguous)."""
    return np.ascontiguousarray(x).reshape(-1)


# ----------------------------------------------------------------------------------------------
# Sparse VD: log alpha, KL_VD, dropout rate


def log_alpha(theta, log_sigma2):
    """log alpha = clip(s - log(theta^2 + 1e-8), -10, 10) (spec "Terms").

    Inputs: theta, log_sigma2, same shape, float32/float64. Returns: array of that shape and dtype
    (computed in float64).
    """
    _check_pair(theta, log_sigma2)
    t = theta.astype(np.float64)
    a = log_sigma2.astype(np.float64) - np.log(t * t + LOG_ALPHA_EPS)
    return np.clip(a, LOG_ALPHA_MIN, LOG_ALPHA_MAX).astype(theta.dtype)


def kl_vd(theta, log_sigma2):
    """KL_VD summed over all weights, and its gradients; fused numba kernel (spec "Terms", KL_VD).

    KL_VD = sum_i k1 - k1 sigmoid(k2 + k3 log alpha_i) + 0.5 log1p(exp(-log alpha_i)),
    k1, k2, k3 = 0.63576, 1.87320, 1.48695 (Molchanov et al. 2017). The clip of log alpha passes
    no gradient outside [-10, 10] (it passes it on the closed interval, like torch.clamp).
    float64 inputs are computed in float64 (refvbc/kernels/mixture.py), float32 inputs in float32
    arithmetic (refvbc/kernels/kl32.py, the training dtype; the value is summed in float64).

    Inputs
        theta, log_sigma2: same shape (any), same dtype (float32/float64)
    Returns
        value: Python float (float64 sum)
        dtheta, dlog_sigma2: arrays with the shape and dtype of theta
    """
    _check_pair(theta, log_sigma2)
    if theta.dtype == np.float32:
        dt = np.zeros(theta.shape, np.float32)
        ds = np.zeros(theta.shape, np.float32)
        return kl_vd_add(theta, log_sigma2, dt, ds, 1.0), dt, ds
    t = _flat(theta)
    s = _flat(log_sigma2)
    dt = np.empty_like(t)
    ds = np.empty_like(s)
    kernel = kl_vd_kernel if t.shape[0] >= PARALLEL_MIN else kl_vd_kernel_serial
    partial = kernel(t, s, dt, ds, CHUNK)
    value = float(partial.sum())
    if not np.isfinite(value):
        _raise_non_finite([("theta", theta), ("log_sigma2", log_sigma2)])
    return value, dt.reshape(theta.shape), ds.reshape(theta.shape)


def kl_vd_add(theta, log_sigma2, dtheta, dlog_sigma2, scale):
    """KL_VD summed over all weights; adds scale * its gradients into dtheta and dlog_sigma2 in place
    (the objective's gradient buffers: one pass instead of fresh arrays scaled and added).

    Inputs
        theta, log_sigma2      same shape (any), same dtype (float32/float64)
        dtheta, dlog_sigma2    C-contiguous arrays of that shape and dtype, updated in place
        scale                  float (the objective's tau1 / N)
    Returns
        value: Python float (float64 sum of KL_VD, unscaled)
    """
    return kl_vd_add_layers([(theta, log_sigma2, dtheta, dlog_sigma2)], scale)[0]


def kl_vd_add_layers(items, scale):
    """kl_vd_add for several layers at once: items is a list of (theta, log_sigma2, dtheta, dlog_sigma2)
    (each as kl_vd_add takes them); returns the list of their KL_VD values. The float32 chunks of all
    layers go to the thread pool in one call (one wake-up of the pool per step instead of one per layer;
    each layer's chunks, partial sums and value are those of kl_vd_add, whatever the thread count)."""
    jobs, owner = [], []
    values = [None] * len(items)
    for j, (theta, log_sigma2, dtheta, dlog_sigma2) in enumerate(items):
        _check_pair(theta, log_sigma2)
        for name, d in (("dtheta", dtheta), ("dlog_sigma2", dlog_sigma2)):
            if d.shape != theta.shape or d.dtype != theta.dtype or not d.flags.c_contiguous:
                raise ValueError(f"{name} must be a C-contiguous {theta.dtype} array of shape {theta.shape}, "
                                 f"got {d.dtype} {d.shape}")
        if theta.dtype != np.float32:
            value, dt, ds = kl_vd(theta, log_sigma2)
            dtheta += scale * dt
            dlog_sigma2 += scale * ds
            values[j] = value
            continue
        t, s = _flat(theta), _flat(log_sigma2)
        dt, ds = dtheta.reshape(-1), dlog_sigma2.reshape(-1)
        # runs of whole chunks on the thread pool (refvbc/parallel.py): the same chunk partials, summed in
        # the same order, whatever the number of threads
        n_chunks = -(-t.shape[0] // CHUNK)
        for a, b in _par.split(n_chunks, 4 if t.shape[0] >= PARALLEL_MIN else 1):
            r = slice(a * CHUNK, min(b * CHUNK, t.shape[0]))
            jobs.append((t[r], s[r], dt[r], ds[r]))
            owner.append(j)
    sc = np.float32(scale)
    parts = _par.run_parts(lambda i: kl_vd_add_kernel32(*jobs[i], sc, CHUNK), len(jobs))
    for j, (theta, log_sigma2, _, _) in enumerate(items):
        if values[j] is None:
            values[j] = float(np.concatenate([p for p, o in zip(parts, owner) if o == j]).sum())
            if not np.isfinite(values[j]):
                _raise_non_finite([("theta", theta), ("log_sigma2", log_sigma2)])
    return values


def kl_vd_numpy(theta, log_sigma2):
    """NumPy reference of ``kl_vd`` (same Inputs/Returns), elementwise in float64."""
    _check_pair(theta, log_sigma2)
    t = theta.astype(np.float64)
    t2e = t * t + LOG_ALPHA_EPS
    a = log_sigma2.astype(np.float64) - np.log(t2e)
    inside = (a >= LOG_ALPHA_MIN) & (a <= LOG_ALPHA_MAX)
    la = np.clip(a, LOG_ALPHA_MIN, LOG_ALPHA_MAX)
    sg = 1.0 / (1.0 + np.exp(-(KL_K2 + KL_K3 * la)))
    e = np.exp(-la)
    value = np.sum(KL_K1 - KL_K1 * sg + 0.5 * np.log1p(e))
    # d kl / d log alpha; sigmoid' = sg (1 - sg); d/da 0.5 log1p(exp(-a)) = -0.5 e / (1 + e)
    g = np.where(inside, -KL_K1 * KL_K3 * sg * (1.0 - sg) - 0.5 * e / (1.0 + e), 0.0)
    dtheta = g * (-2.0 * t / t2e)
    return float(value), dtheta.astype(theta.dtype), g.astype(theta.dtype)


def dropout_rate(theta, log_sigma2):
    """Binary dropout rate sigma^2 / (theta^2 + sigma^2) (paper appendix B.1; prune when >= 0.95).

    Computed stably as sigmoid(s - log theta^2) in float64 (no overflow of exp(s), no 0/0 when both
    theta^2 and sigma^2 underflow; theta = 0 gives exactly 1).
    Inputs: theta, log_sigma2, same shape and dtype. Returns: array of that shape and dtype.
    """
    _check_pair(theta, log_sigma2)
    t = theta.astype(np.float64)
    with np.errstate(divide="ignore"):
        x = log_sigma2.astype(np.float64) - 2.0 * np.log(np.abs(t))  # +inf where theta == 0
    # sigmoid(x) = 1 / (1 + exp(-x)) for x >= 0, exp(x) / (1 + exp(x)) otherwise
    ex = np.exp(-np.abs(x))
    rate = np.where(x >= 0, 1.0 / (1.0 + ex), ex / (1.0 + ex))
    return rate.astype(theta.dtype)


DROPOUT_THRESHOLD = 0.95  # paper appendix B.1: prune at dropout rate >= 0.95


def keep_mask(theta, log_sigma2, threshold=DROPOUT_THRESHOLD):
    """The one pruning rule (docs/objective.md, "Evaluation and pruning"): a weight is pruned when
    its dropout rate alpha / (1 + alpha) >= threshold, i.e. log alpha >= log(t / (1 - t)) (log 19 for
    t = 0.95), with the spec's clipped log alpha (`log_alpha`, the same quantity KL_VD sees).
    Training's logs, the figures and the compression all call this function.

    Inputs: theta, log_sigma2 same shape and dtype; threshold in (0, 1).
    Returns: bool array of theta's shape, True where the weight survives.
    """
    if not (0.0 < threshold < 1.0):
        raise ValueError(f"dropout-rate threshold must lie in (0, 1), got {threshold}")
    cut = np.log(threshold / (1.0 - threshold))
    _check_pair(theta, log_sigma2)
    t = theta.astype(np.float64)
    a = np.clip(log_sigma2.astype(np.float64) - np.log(t * t + LOG_ALPHA_EPS), LOG_ALPHA_MIN, LOG_ALPHA_MAX)
    return a < cut


def gamma_rate(beta, param="rate"):
    """The rate of the Gamma hyper-prior from the paper's beta: `param` "rate" reads beta as a rate
    (log Gamma = (alpha-1) log lambda - beta lambda, mode (alpha-1)/beta), "scale" as a scale
    (NumPy's and SciPy's convention: rate 1/beta, mode (alpha-1) beta). The paper does not say which;
    docs/ablations.md measures both."""
    if param == "rate":
        return float(beta)
    if param == "scale":
        return 1.0 / float(beta)
    raise ValueError(f"gamma parametrization must be 'rate' or 'scale', got {param!r}")


# ----------------------------------------------------------------------------------------------
# Mixture prior (Soft Weight-Sharing) with the Gamma hyper-prior


def _mixture_param_grads(resp, resp_d, resp_d2, lam, soft, log_lambda, gamma_alpha, gamma_beta):
    """Gradients of value w.r.t. (mu, log_lambda, rho) from the K-sized accumulators (float64).

    resp_k = sum_i r_ik, resp_d_k = sum_i r_ik d_ik, resp_d2_k = sum_i r_ik d_ik^2, d_ik = theta_i - mu_k.
      d/dmu_k          = lambda_k resp_d_k                                       (k >= 1; 0 for k = 0)
      d/dlog lambda_k  = 0.5 resp_k - 0.5 lambda_k resp_d2_k + (alpha - 1) - beta lambda_k
      d/drho_k         = resp_k - softmax(rho[1:])_k sum_{j>=1} resp_j          (k >= 1; 0 for k = 0)
    (log pi_k = log(1 - pi0) + rho_k - logsumexp(rho[1:]); pi_0 is fixed.)
    """
    dmu = lam * resp_d
    dmu[0] = 0.0
    dlog_lambda = 0.5 * resp - 0.5 * lam * resp_d2 + (gamma_alpha - 1.0) - gamma_beta * lam
    dlog_pi = np.zeros_like(resp)
    dlog_pi[1:] = resp[1:] - soft * np.sum(resp[1:])
    return dmu, dlog_lambda, dlog_pi


def _gamma_value(log_lambda, lam, gamma_alpha, gamma_beta):
    """sum_k log Gamma(lambda_k) = (alpha - 1) log lambda_k - beta lambda_k (no constant)."""
    return float(np.sum((gamma_alpha - 1.0) * log_lambda.astype(np.float64) - gamma_beta * lam))


def mixture_prior(thetas, mu, log_lambda, log_pi, pi0=PI0, gamma_alpha=GAMMA_ALPHA,
                  gamma_beta=GAMMA_BETA):
    """Mixture log-density of all weights plus the Gamma hyper-prior, and all gradients
    (spec "Terms": log GM and log Gamma). Positive log-density; the loss multiplies it by -tau2/N.

    value = sum_i log GM(theta_i) + sum_k log Gamma(lambda_k),
    log GM(theta) = logsumexp_k [log pi_k + 0.5 log lambda_k - 0.5 log 2 pi - 0.5 lambda_k (theta - mu_k)^2],
    log Gamma(lambda) = (alpha - 1) log lambda - beta lambda, lambda_k = exp(log_lambda_k),
    pi_0 = pi0, pi_k = (1 - pi0) softmax(log_pi[1:])_k for k >= 1.

    One fused numba pass per layer over the weights (``mixture_pass_kernel``) yields the value, dtheta
    and the K-sized accumulators; no (D, K) array is formed.

    Inputs
        thetas       list of weight arrays (any shapes, float32/float64)
        mu, log_lambda, log_pi   (K,) float32/float64; mu[0] is used as given, log_pi[0] is ignored
        pi0, gamma_alpha, gamma_beta   floats
    Returns
        value        Python float
        dthetas      list of arrays, shapes and dtypes of thetas
        dmu          (K,) dtype of mu, dmu[0] = 0
        dlog_lambda  (K,) dtype of log_lambda
        dlog_pi      (K,) dtype of log_pi, dlog_pi[0] = 0
    """
    _check_thetas(thetas)
    mu64, lam, half_lam, const, soft = _mixture_constants(mu, log_lambda, log_pi, pi0)
    K = mu64.shape[0]
    total = 0.0
    resp = np.zeros(K)
    resp_d = np.zeros(K)
    resp_d2 = np.zeros(K)
    dthetas = []
    for th in thetas:
        flat = _flat(th)
        dflat = np.empty_like(flat)
        kernel = mixture_pass_kernel if flat.shape[0] >= PARALLEL_MIN else mixture_pass_kernel_serial
        lse, r, rd, rd2 = kernel(flat, mu64, lam, half_lam, const, dflat, CHUNK)
        total += lse.sum()
        resp += r.sum(axis=0)
        resp_d += rd.sum(axis=0)
        resp_d2 += rd2.sum(axis=0)
        dthetas.append(dflat.reshape(th.shape))
    dmu, dlog_lambda, dlog_pi = _mixture_param_grads(
        resp, resp_d, resp_d2, lam, soft, log_lambda, gamma_alpha, gamma_beta)
    value = float(total) + _gamma_value(log_lambda, lam, gamma_alpha, gamma_beta)
    if not np.isfinite(value):
        _raise_non_finite([(f"thetas[{j}]", th) for j, th in enumerate(thetas)])
    return (value, dthetas, dmu.astype(mu.dtype), dlog_lambda.astype(log_lambda.dtype),
            dlog_pi.astype(log_pi.dtype))


def mixture_prior_numpy(thetas, mu, log_lambda, log_pi, pi0=PI0, gamma_alpha=GAMMA_ALPHA,
                        gamma_beta=GAMMA_BETA):
    """NumPy reference of ``mixture_prior`` (same Inputs/Returns) with broadcasted (D, K) float64
    arrays; gradients written directly from the responsibilities r_ik."""
    _check_thetas(thetas)
    mu64, lam, half_lam, const, soft = _mixture_constants(mu, log_lambda, log_pi, pi0)
    sizes = [th.size for th in thetas]
    t = np.concatenate([th.astype(np.float64).reshape(-1) for th in thetas] + [np.zeros(0)])
    d = t[:, None] - mu64[None, :]  # (D, K)
    logits = const[None, :] - 0.5 * lam[None, :] * d ** 2  # (D, K)
    m = logits.max(axis=1, keepdims=True) if t.size else np.zeros((0, 1))
    lse = m[:, 0] + np.log(np.sum(np.exp(logits - m), axis=1))  # (D,)
    r = np.exp(logits - lse[:, None])  # responsibilities (D, K)
    dt = -np.sum(r * lam[None, :] * d, axis=1)
    dmu = np.sum(r * lam[None, :] * d, axis=0)
    dmu[0] = 0.0
    dlog_lambda = (np.sum(r * (0.5 - 0.5 * lam[None, :] * d ** 2), axis=0)
                   + (gamma_alpha - 1.0) - gamma_beta * lam)
    R = r.sum(axis=0)
    dlog_pi = np.zeros(mu64.shape[0])
    dlog_pi[1:] = R[1:] - soft * R[1:].sum()
    value = float(lse.sum()) + _gamma_value(log_lambda, lam, gamma_alpha, gamma_beta)
    dthetas = []
    off = 0
    for th, n in zip(thetas, sizes):
        dthetas.append(dt[off:off + n].reshape(th.shape).astype(th.dtype))
        off += n
    return (value, dthetas, dmu.astype(mu.dtype), dlog_lambda.astype(log_lambda.dtype),
            dlog_pi.astype(log_pi.dtype))


def check_components(K):
    """Raise ValueError unless K is a number of mixture components `mixture_init` can lay out: an odd
    integer >= 3 (component 0 at 0, the others in pairs at +-k delta_mu; Table 3: 17)."""
    if not isinstance(K, (int, np.integer)) or isinstance(K, bool) or K < 3 or K % 2 == 0:
        raise ValueError(f"K must be an odd integer >= 3 (component 0 at 0, the others in pairs at "
                         f"+-k*delta_mu), got {K!r}")


def mixture_init(weights, K=N_COMPONENTS, pi0=PI0, dtype=np.float32):
    """Mixture initialisation of the paper's Table 3 (spec "Loss": initialisation).

    delta_mu = 2 std(w) / K over all weights; means k delta_mu for k = -(K-1)/2 .. (K-1)/2 stored as
    mu = [0, -(K-1)/2 delta_mu, ..., -1 delta_mu, 1 delta_mu, ..., (K-1)/2 delta_mu] (index 0 is the
    zero component, then the negative means ascending, then the positive means ascending);
    log_lambda_k = -2 log(0.9 delta_mu) for all k; log_pi = [log pi0, log((1 - pi0)/K) * (K-1)]
    (rho values: equal entries, so softmax(rho[1:]) is uniform).

    Inputs
        weights  an array or a list of arrays (pre-trained weights, all layers)
        K        odd number of components >= 3
        pi0      mixing proportion of the zero component, in (0, 1)
        dtype    float32 or float64, dtype of the outputs
    Returns
        mu, log_lambda, log_pi: (K,) arrays of dtype
    """
    if isinstance(weights, np.ndarray):
        weights = [weights]
    if not isinstance(weights, (list, tuple)) or len(weights) == 0:
        raise ValueError("weights must be an array or a non-empty list of arrays")
    for j, w in enumerate(weights):
        _check_float(f"weights[{j}]", w)
    check_components(K)
    if not (0.0 < pi0 < 1.0):
        raise ValueError(f"pi0 must lie in (0, 1), got {pi0}")
    if np.dtype(dtype) not in _FLOAT_DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    w = np.concatenate([x.astype(np.float64).reshape(-1) for x in weights])
    if w.size == 0:
        raise ValueError("weights are empty")
    std = float(np.std(w))
    if not np.isfinite(std) or std <= 0.0:
        raise ValueError(f"std of the weights must be finite and > 0, got {std}")
    dmu = 2.0 * std / K
    half = (K - 1) // 2
    ks = np.concatenate([[0], np.arange(-half, 0), np.arange(1, half + 1)]).astype(np.float64)
    mu = ks * dmu
    log_lambda = np.full(K, -2.0 * np.log(0.9 * dmu))
    log_pi = np.full(K, np.log((1.0 - pi0) / K))
    log_pi[0] = np.log(pi0)
    return mu.astype(dtype), log_lambda.astype(dtype), log_pi.astype(dtype)


# ----------------------------------------------------------------------------------------------
# clustering


def mixture_responsibility_argmax(theta, mu, log_lambda, log_pi, pi0=PI0):
    """Index of the component with the highest responsibility for each weight (paper section 3:
    each weight is assigned to, and later set to, its most responsible component's mean).

    Inputs
        theta   weight array (any shape, float32/float64)
        mu, log_lambda, log_pi, pi0   as in ``mixture_prior``
    Returns
        idx     intp array of theta's shape, values in [0, K); ties go to the lowest index
    """
    _check_float("theta", theta)
    mu64, lam, half_lam, const, soft = _mixture_constants(mu, log_lambda, log_pi, pi0)
    flat = _flat(theta)
    out = np.empty(flat.shape[0], dtype=np.intp)
    responsibility_argmax_kernel(flat, mu64, half_lam, const, out, CHUNK)
    return out.reshape(theta.shape)


def mixture_responsibility_argmax_numpy(theta, mu, log_lambda, log_pi, pi0=PI0):
    """NumPy reference of ``mixture_responsibility_argmax`` (same arithmetic, (D, K) broadcast)."""
    _check_float("theta", theta)
    mu64, lam, half_lam, const, soft = _mixture_constants(mu, log_lambda, log_pi, pi0)
    t = theta.astype(np.float64).reshape(-1)
    d = t[:, None] - mu64[None, :]
    logits = const[None, :] - half_lam[None, :] * (d * d)
    return np.argmax(logits, axis=1).astype(np.intp).reshape(theta.shape)
