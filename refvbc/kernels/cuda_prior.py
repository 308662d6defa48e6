"""numba.cuda kernels of the prior terms (GPU counterparts of refvbc/priors.py and the L2 term of
refvbc/objective.py): KL_VD, the fused Gaussian-mixture pass with the Gamma hyper-prior, and L2.

Shape legend
    D              weights of one layer (flat theta, log_sigma2, and their gradient buffers)
    K              mixture components (<= KMAX); mu, log_lambda, log_pi (K,)
    G              REDUCE_BLOCKS (cuda_common): blocks of a reduction kernel, one partial row each
    consts         (4, K) float64: lam, half_lam, const, soft (see mixture_prep_kernel)
    part           float64 partial sums: (G,) for KL and L2; (G, 1 + 3K) for the mixture

Formulas (docs/objective.md, "Terms"; CPU references priors.kl_vd / priors.mixture_prior):
    log α = clip(s - log(θ² + 1e-8), -10, 10) (no gradient outside);
    KL_VD = Σ k1 - k1 sigmoid(k2 + k3 log α) + 0.5 log1p(exp(-log α))
    log GM(θ) = logsumexp_k [log π_k + ½ log λ_k - ½ log 2π - ½ λ_k (θ - μ_k)²],
    r_ik = responsibilities; dθ_i = -Σ_k r_ik λ_k d_ik (d_ik = θ_i - μ_k); the (K,) sums
    R_k = Σ_i r_ik, Rd_k = Σ_i r_ik d_ik, Rd2_k = Σ_i r_ik d_ik² give the mixture-parameter gradients
    (priors._mixture_param_grads).  No (D, K) array is formed: each thread keeps K-sized local sums.
Per-weight arithmetic is float64 (as on the CPU). Gradient kernels ADD `scale * gradient` into the
given buffers (the layer backward has written the data term there first).
"""

import math

import numpy as np
from numba import cuda

from .cuda_common import MIX_TPB, REDUCE_BLOCKS, TPB, block_sum, sum_rows_kernel
from .mixture import KL_K1, KL_K2, KL_K3, LOG_ALPHA_EPS, LOG_ALPHA_MAX, LOG_ALPHA_MIN

KMAX = 24  # largest number of mixture components the kernels accept (shared-array size:
          # MIX_TPB * (1 + 3 KMAX) float64 = 37 KB on a GPU, under the 48 KB limit)
MIX_COLS = 1 + 3 * KMAX  # columns of the mixture pass's shared array (a compile-time constant)
HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


# --------------------------------------------------------------------------------------------------
# KL_VD


@cuda.jit
def kl_vd_kernel(theta, ls, dtheta, dls, scale, part, n):
    """part[block] += Σ KL_VD over this block's weights; dθ += scale dKL/dθ, dls += scale dKL/ds."""
    sh = cuda.shared.array(TPB, dtype=np.float64)
    tid = cuda.threadIdx.x
    acc = 0.0
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        t = np.float64(theta[i])
        t2e = t * t + LOG_ALPHA_EPS
        a = np.float64(ls[i]) - math.log(t2e)
        inside = a >= LOG_ALPHA_MIN and a <= LOG_ALPHA_MAX
        la = min(max(a, LOG_ALPHA_MIN), LOG_ALPHA_MAX)
        sg = 1.0 / (1.0 + math.exp(-(KL_K2 + KL_K3 * la)))
        e = math.exp(-la)
        acc += KL_K1 - KL_K1 * sg + 0.5 * math.log1p(e)
        g = 0.0
        if inside:
            g = -KL_K1 * KL_K3 * sg * (1.0 - sg) - 0.5 * e / (1.0 + e)
        dtheta[i] += scale * (g * (-2.0 * t / t2e))
        dls[i] += scale * g
    sh[tid] = acc
    block_sum(sh, tid)
    if tid == 0:
        part[cuda.blockIdx.x] += sh[0]


# --------------------------------------------------------------------------------------------------
# L2 (weight decay of the L2 baseline, objective.py)


@cuda.jit
def l2_kernel(theta, dtheta, wd, part, n):
    """part[block] += Σ ½ θ²;  dθ += wd θ."""
    sh = cuda.shared.array(TPB, dtype=np.float64)
    tid = cuda.threadIdx.x
    acc = 0.0
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        t = np.float64(theta[i])
        acc += 0.5 * t * t
        dtheta[i] += wd * theta[i]
    sh[tid] = acc
    block_sum(sh, tid)
    if tid == 0:
        part[cuda.blockIdx.x] += sh[0]


# --------------------------------------------------------------------------------------------------
# mixture prior


@cuda.jit
def mixture_prep_kernel(mu, log_lambda, log_pi, pi0, consts, K):
    """One thread. consts[0] = λ = exp(log λ), consts[1] = ½ λ, consts[2] = log π_k + ½ log λ_k - ½ log 2π,
    consts[3, 1:] = softmax(ρ[1:]) (π_0 = pi0, π_k = (1 - pi0) softmax(ρ[1:])_k; ρ[0] unused)."""
    if cuda.grid(1) != 0:
        return
    mx = np.float64(log_pi[1])
    for k in range(2, K):
        mx = max(mx, np.float64(log_pi[k]))
    se = 0.0
    for k in range(1, K):
        se += math.exp(np.float64(log_pi[k]) - mx)
    lse = mx + math.log(se)
    for k in range(K):
        ll = np.float64(log_lambda[k])
        lam = math.exp(ll)
        consts[k] = lam
        consts[K + k] = 0.5 * lam
        if k == 0:
            lp = math.log(pi0)
            consts[3 * K] = 0.0
        else:
            ls = np.float64(log_pi[k]) - lse
            lp = math.log1p(-pi0) + ls
            consts[3 * K + k] = math.exp(ls)
        consts[2 * K + k] = lp + 0.5 * ll - HALF_LOG_2PI


@cuda.jit
def mixture_pass_kernel(theta, mu, consts, dtheta, scale, part, n, K):
    """Fused pass over one layer's weights. Adds into row `block` of part (G, 1 + 3K):
    [Σ log GM(θ_i) | Σ r_ik | Σ r_ik d_ik | Σ r_ik d_ik²];  dθ_i += scale * d log GM / dθ_i.
    Each thread accumulates its sums in its own row of a shared (MIX_TPB, 1 + 3 KMAX) array; one tree
    pass reduces all 1 + 3K columns together."""
    sh = cuda.shared.array((MIX_TPB, MIX_COLS), dtype=np.float64)
    lg = cuda.local.array(KMAX, dtype=np.float64)
    tid = cuda.threadIdx.x
    R = 1 + 3 * K
    for j in range(R):
        sh[tid, j] = 0.0
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        t = np.float64(theta[i])
        mx = -math.inf
        for k in range(K):
            d = t - np.float64(mu[k])
            lg[k] = consts[2 * K + k] - consts[K + k] * d * d
            mx = max(mx, lg[k])
        se = 0.0
        for k in range(K):
            se += math.exp(lg[k] - mx)
        lse = mx + math.log(se)
        sh[tid, 0] += lse
        g = 0.0
        for k in range(K):
            d = t - np.float64(mu[k])
            r = math.exp(lg[k] - lse)
            rd = r * d
            g -= rd * consts[k]
            sh[tid, 1 + k] += r
            sh[tid, 1 + K + k] += rd
            sh[tid, 1 + 2 * K + k] += rd * d
        dtheta[i] += scale * g
    s = MIX_TPB // 2
    while s > 0:
        cuda.syncthreads()
        if tid < s:
            for j in range(R):
                sh[tid, j] += sh[tid + s, j]
        s //= 2
    cuda.syncthreads()
    blk = cuda.blockIdx.x
    for j in range(tid, R, MIX_TPB):
        part[blk * R + j] += sh[0, j]


@cuda.jit
def mixture_finalize_kernel(part, G, consts, log_lambda, gamma_alpha, gamma_beta, scale, dmu, dll, dlp,
                            out, slot, K):
    """One thread. Sums the partial rows of part (G, 1 + 3K) in order, then
    (priors._mixture_param_grads):  dμ_k = λ_k Rd_k (dμ_0 = 0);
    d log λ_k = ½ R_k - ½ λ_k Rd2_k + (α - 1) - β λ_k;  dρ_k = R_k - soft_k Σ_{j>=1} R_j (dρ_0 = 0);
    each times `scale`, written (not added).  out[slot] += Σ_i log GM(θ_i) + Σ_k [(α - 1) log λ_k - β λ_k]."""
    if cuda.grid(1) != 0:
        return
    R = 1 + 3 * K
    total = 0.0
    for g in range(G):
        total += part[g * R]
    rsum = 0.0
    for k in range(1, K):
        r = 0.0
        for g in range(G):
            r += part[g * R + 1 + k]
        rsum += r
    for k in range(K):
        r = 0.0
        rd = 0.0
        rd2 = 0.0
        for g in range(G):
            r += part[g * R + 1 + k]
            rd += part[g * R + 1 + K + k]
            rd2 += part[g * R + 1 + 2 * K + k]
        lam = consts[k]
        ll = np.float64(log_lambda[k])
        total += (gamma_alpha - 1.0) * ll - gamma_beta * lam
        dll[k] = scale * (0.5 * r - 0.5 * lam * rd2 + (gamma_alpha - 1.0) - gamma_beta * lam)
        if k == 0:
            dmu[k] = 0.0
            dlp[k] = 0.0
        else:
            dmu[k] = scale * (lam * rd)
            dlp[k] = scale * (r - consts[3 * K + k] * rsum)
    out[slot] += total


# --------------------------------------------------------------------------------------------------
# launch wrappers


def kl_vd(theta, ls, dtheta, dls, scale, part, out=None, slot=0):
    """Adds scale * gradients of KL_VD into dtheta, dls and the layer's KL into part (G,) rows;
    with `out`, also reduces part into out[slot] (part must be zeroed by the caller first)."""
    kl_vd_kernel[REDUCE_BLOCKS, TPB](theta, ls, dtheta, dls, np.float64(scale), part, theta.shape[0])
    if out is not None:
        sum_rows_kernel[1, 1](part, REDUCE_BLOCKS, out, slot)


def l2(theta, dtheta, wd, part, out=None, slot=0):
    """Adds wd θ into dtheta and Σ ½θ² into the part rows; with `out`, reduces into out[slot]."""
    l2_kernel[REDUCE_BLOCKS, TPB](theta, dtheta, dtheta.dtype.type(wd), part, theta.shape[0])
    if out is not None:
        sum_rows_kernel[1, 1](part, REDUCE_BLOCKS, out, slot)


def mixture_prep(mu, log_lambda, log_pi, pi0, consts):
    K = mu.shape[0]
    if K > KMAX:
        raise ValueError(f"mixture with K={K} components; the CUDA kernels support at most {KMAX}")
    mixture_prep_kernel[1, 1](mu, log_lambda, log_pi, np.float64(pi0), consts, K)


def mixture_part_size(K):
    """Length of the float64 partial-sum buffer of mixture_pass / mixture_finalize: G (1 + 3K)."""
    return REDUCE_BLOCKS * (1 + 3 * K)


def mixture_pass(theta, mu, consts, dtheta, scale, part):
    """Adds scale * d log GM / dθ into dtheta and this layer's sums into part (zeroed by the caller
    before the first layer)."""
    mixture_pass_kernel[REDUCE_BLOCKS, MIX_TPB](theta, mu, consts, dtheta, np.float64(scale), part,
                                                theta.shape[0], mu.shape[0])


def mixture_finalize(part, consts, log_lambda, gamma_alpha, gamma_beta, scale, dmu, dll, dlp, out, slot):
    """Writes scale * the mixture-parameter gradients and adds the log-prior value into out[slot]."""
    mixture_finalize_kernel[1, 1](part, REDUCE_BLOCKS, consts, log_lambda, np.float64(gamma_alpha),
                                  np.float64(gamma_beta), np.float64(scale), dmu, dll, dlp, out, slot,
                                  log_lambda.shape[0])
