"""Numba kernels of the prior terms (spec "Terms"): KL_VD and the fused Gaussian-mixture pass.

Shape legend
    D        number of weights in the flat array handed to a kernel (one layer, flattened)
    K        mixture components (17 in the spec; any K >= 1 works)
    C        number of chunks, ceil(D / chunk)

Every kernel here is a leaf (no refvbc imports) and has a plain-NumPy reference beside its caller in
``refvbc/priors.py`` (``kl_vd_numpy``, ``mixture_prior_numpy``, ``mixture_responsibility_argmax_numpy``)
that ``tests/test_priors.py`` compares against.

Conventions
- Per-weight arithmetic is done in float64 whatever the input dtype (float32 or float64); outputs are
  written into caller-allocated arrays of the caller's dtype.
- The KL_VD and mixture kernels exist twice, ``*_kernel`` (parallel=True, prange over chunks) and
  ``*_kernel_serial`` (one thread, same chunks, bitwise the same results); callers use the serial one
  below ``PARALLEL_MIN`` weights, where the thread-pool launch costs more than the work.
- Parallel kernels split the weights into fixed chunks; each chunk owns its own accumulator row, and
  the caller reduces the rows in a fixed order, so results do not depend on the thread count (no races,
  deterministic sums).
- error_model="numpy": a division by zero gives inf/nan (no Python exception, no check in the loops);
  non-finite inputs give a non-finite value, which the callers turn into a ValueError.
- No fastmath: tests compare these kernels against NumPy to round-off (argmax exactly).
"""

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

# Default number of weights per chunk of a parallel kernel.
CHUNK = 4096
# Weights per SIMD block inside a chunk of the mixture pass (scratch: a few (K, BLOCK) float64 arrays).
BLOCK = 64
# Below this many weights the callers use the serial kernels.
PARALLEL_MIN = 4 * CHUNK

# Molchanov et al. 2017 approximation constants (spec "Terms", KL_VD).
KL_K1 = 0.63576
KL_K2 = 1.87320
KL_K3 = 1.48695
LOG_ALPHA_EPS = 1e-8
LOG_ALPHA_MIN = -10.0
LOG_ALPHA_MAX = 10.0


def bitcast(src, dst):
    """An intrinsic that reinterprets the bits of a numba scalar of type `src` as type `dst` (same
    width; e.g. int64 -> float64 to build 2**n for ``_exp``). Used for the float64 and float32 (kl32.py)
    exp/log."""

    @intrinsic
    def _bitcast(typingctx, x):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(dst))

        return dst(src), codegen

    return _bitcast


_bits_as_float64 = bitcast(types.int64, types.float64)
_float64_as_bits = bitcast(types.float64, types.int64)


_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 split in two (fdlibm's constants): n * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_EXP_MIN = -708.0  # exp(-708) ~ 3e-308, the bottom of the normal range


@njit(inline="always")
def _exp(x):
    """exp(x) for x <= 709, to ~1 ulp (relative error <= 4.5e-16 against np.exp, checked in the tests),
    and 0 for x < -708 (where np.exp gives a subnormal < 3e-308 or 0). Not for x > 709 (overflow).

    Unlike a libm call, this inlines into a loop that LLVM vectorizes (no SVML here): range reduction
    x = n ln2 + r with |r| <= ln2 / 2 (Cody-Waite, two-part ln 2), degree-13 Taylor polynomial of
    exp(r) (truncation < 5e-18), times 2**n built from its exponent bits.
    """
    xc = max(x, _EXP_MIN)
    n = np.floor(xc * _LOG2E + 0.5)
    r = (xc - n * _LN2_HI) - n * _LN2_LO
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    y = p * _bits_as_float64((np.int64(n) + 1023) << 52)
    return y if x >= _EXP_MIN else 0.0


@njit(cache=True, error_model="numpy")
def exp_kernel(x, out):
    """out[i] = exp(x[i]) for x[i] <= 709 with ``_exp`` (exposed so the tests can check it)."""
    for i in range(x.shape[0]):
        out[i] = _exp(x[i])


_SQRT2 = 1.4142135623730951
_DBL_MIN = 2.2250738585072014e-308
_MANT_MASK = (1 << 52) - 1
_ONE_BITS = 1023 << 52


@njit(inline="always")
def _log(x):
    """Natural log of a normal positive finite float64 x (x >= 2.2e-308), to a few ulp (relative error
    <= 1e-15 against np.log, checked in tests/test_kernels_fast.py); nan for every other x (0,
    subnormals, negatives, inf, nan), so that bad inputs stay non-finite.

    Like ``_exp`` it inlines into loops that LLVM vectorizes: x = 2**e m with m in [sqrt(1/2), sqrt(2))
    from the exponent bits, log m = 2 atanh(f) with f = (m - 1) / (m + 1), |f| <= 0.1716, as the odd
    series 2 (f + f^3/3 + ... + f^21/21) (truncation < 1e-18 relative), plus e ln 2 in two parts.
    """
    bits = _float64_as_bits(x)
    e = (bits >> 52) - 1023
    m = _bits_as_float64((bits & _MANT_MASK) | _ONE_BITS)  # in [1, 2)
    if m > _SQRT2:
        m = 0.5 * m
        e += 1
    f = (m - 1.0) / (m + 1.0)
    f2 = f * f
    p = 1.0 / 21.0
    p = p * f2 + 1.0 / 19.0
    p = p * f2 + 1.0 / 17.0
    p = p * f2 + 1.0 / 15.0
    p = p * f2 + 1.0 / 13.0
    p = p * f2 + 1.0 / 11.0
    p = p * f2 + 1.0 / 9.0
    p = p * f2 + 1.0 / 7.0
    p = p * f2 + 1.0 / 5.0
    p = p * f2 + 1.0 / 3.0
    ef = np.float64(e)
    y = ef * _LN2_HI + (ef * _LN2_LO + (2.0 * f + (2.0 * f) * (f2 * p)))
    return y if (x >= _DBL_MIN and x < np.inf) else np.nan


@njit(cache=True, error_model="numpy")
def log_kernel(x, out):
    """out[i] = log(x[i]) with ``_log`` (exposed so the tests can check it)."""
    for i in range(x.shape[0]):
        out[i] = _log(x[i])


@njit(cache=True, error_model="numpy")
def _kl_vd_chunk(theta, log_sigma2, dtheta, dlog_sigma2, start, stop):
    """KL_VD of weights [start, stop): writes their gradients, returns their float64 sum.

    Per weight, with a = s - log(theta^2 + 1e-8) (spec "Terms"):
        la = clip(a, -10, 10); z = k2 + k3*la; sg = sigmoid(z); e = exp(-la)
        kl = k1 - k1*sg + 0.5*log1p(e)
        dkl/dla = -k1*k3*sg*(1-sg) - 0.5*e/(1+e)
        dla/ds = 1, dla/dtheta = -2 theta / (theta^2 + 1e-8), both 0 when a is outside [-10, 10]
        (the clip's gradient passes on the closed interval, like torch.clamp).

    Speed: the loop body is branch-free and uses the inlined ``_log`` / ``_exp`` (no libm calls), and
    the sum goes into BLOCK lane accumulators (a single scalar accumulator would be a loop-carried
    dependency that stops vectorization without fastmath), so LLVM vectorizes it; the lanes are summed
    at the end. log1p(e) = log(u) e / (u - 1) with u = 1 + e (exact to a few ulp; u > 1 since
    e >= exp(-10)). A non-finite theta or s makes `a` non-finite; `a - a` (nan then, 0 otherwise) is
    added to the sum, so the value comes out nan and the caller raises.
    """
    acc = np.zeros(BLOCK)
    t_ = np.empty(BLOCK)
    s_ = np.empty(BLOCK)
    g_ = np.empty(BLOCK)
    dt_ = np.empty(BLOCK)
    for b0 in range(start, stop, BLOCK):
        nb = min(BLOCK, stop - b0)
        for j in range(nb):  # load (and widen) into L1 scratch: the compute loop sees no aliasing
            t_[j] = np.float64(theta[b0 + j])
            s_[j] = np.float64(log_sigma2[b0 + j])
        for j in range(nb):
            t = t_[j]
            t2e = t * t + LOG_ALPHA_EPS
            a = s_[j] - _log(t2e)
            inside = a >= LOG_ALPHA_MIN and a <= LOG_ALPHA_MAX
            la = min(max(a, LOG_ALPHA_MIN), LOG_ALPHA_MAX)
            sg = 1.0 / (1.0 + _exp(-(KL_K2 + KL_K3 * la)))
            e = _exp(-la)
            u = 1.0 + e
            acc[j] += (KL_K1 - KL_K1 * sg + 0.5 * (_log(u) * e / (u - 1.0))) + (a - a)
            g = -KL_K1 * KL_K3 * sg * (1.0 - sg) - 0.5 * e / u
            g = g if inside else 0.0
            g_[j] = g
            dt_[j] = g * (-2.0 * t / t2e)
        for j in range(nb):
            dlog_sigma2[b0 + j] = g_[j]
            dtheta[b0 + j] = dt_[j]
    total = 0.0
    for j in range(BLOCK):
        total += acc[j]
    return total


@njit(parallel=True, cache=True, error_model="numpy")
def kl_vd_kernel(theta, log_sigma2, dtheta, dlog_sigma2, chunk):
    """Fused KL_VD value and gradients (spec "Terms": log alpha and KL_VD), chunks in parallel.

    Inputs
        theta, log_sigma2   (D,) float32 or float64, contiguous
        dtheta, dlog_sigma2 (D,) outputs, same dtype as theta; fully overwritten
        chunk               weights per chunk (> 0)
    Returns
        partial             (C,) float64: per-chunk sums of KL_VD (reduce with .sum())
    """
    n = theta.shape[0]
    nchunks = (n + chunk - 1) // chunk
    partial = np.zeros(nchunks)
    for c in prange(nchunks):
        start = c * chunk
        partial[c] = _kl_vd_chunk(theta, log_sigma2, dtheta, dlog_sigma2, start, min(start + chunk, n))
    return partial


@njit(cache=True, error_model="numpy")
def kl_vd_kernel_serial(theta, log_sigma2, dtheta, dlog_sigma2, chunk):
    """``kl_vd_kernel`` on one thread (same chunks, same results): no thread-pool launch for small D."""
    n = theta.shape[0]
    nchunks = (n + chunk - 1) // chunk
    partial = np.zeros(nchunks)
    for c in range(nchunks):
        start = c * chunk
        partial[c] = _kl_vd_chunk(theta, log_sigma2, dtheta, dlog_sigma2, start, min(start + chunk, n))
    return partial


@njit(cache=True, error_model="numpy")
def _mixture_chunk(theta, mu, lam, half_lam, const, dtheta, start, stop, resp, resp_d, resp_d2):
    """Mixture pass over weights [start, stop) (spec "Terms", log GM); returns sum_i log GM(theta_i)
    and writes the chunk's sums of r_ik, r_ik d_ik, r_ik d_ik^2 into the (K,) rows resp, resp_d, resp_d2.

    Per weight: d_k = theta - mu_k, l_k = const_k - 0.5 lambda_k d_k^2, log GM = max_k l_k + log sum_k
    exp(l_k - max), r_k = exp(l_k - max) / sum, dtheta = -sum_k r_k lambda_k d_k.
    One exp per component per weight, one log per weight (the inlined ``_exp`` / ``_log``).

    Layout for SIMD: weights go in blocks of BLOCK; every loop runs over the block's weights j for a
    fixed component k, so it has no loop-carried dependency and LLVM vectorizes it (the (K, BLOCK)
    scratch and accumulators stay in L1; a (D, K) array is never formed). Each accumulator lane
    [k, j] is summed over blocks, then the lanes are summed at the end of the chunk.
    """
    K = mu.shape[0]
    L = np.empty((K, BLOCK))  # log-terms, then exp(l - max)
    t = np.empty(BLOCK)
    mx = np.empty(BLOCK)
    ssum = np.empty(BLOCK)
    g = np.empty(BLOCK)
    acc_r = np.zeros((K, BLOCK))
    acc_rd = np.zeros((K, BLOCK))
    acc_rd2 = np.zeros((K, BLOCK))
    lse_acc = 0.0
    for b0 in range(start, stop, BLOCK):
        nb = min(BLOCK, stop - b0)
        for j in range(nb):
            t[j] = np.float64(theta[b0 + j])
            mx[j] = -np.inf
            ssum[j] = 0.0
            g[j] = 0.0
        for k in range(K):
            mk = mu[k]
            hk = half_lam[k]
            ck = const[k]
            for j in range(nb):
                d = t[j] - mk
                lk = ck - hk * (d * d)
                L[k, j] = lk
                mx[j] = max(mx[j], lk)
        for k in range(K):
            for j in range(nb):
                e = _exp(L[k, j] - mx[j])
                L[k, j] = e
                ssum[j] += e
        for j in range(nb):
            lse_acc += mx[j] + _log(ssum[j])  # ssum >= 1: in _log's domain
            ssum[j] = 1.0 / ssum[j]
        for k in range(K):
            mk = mu[k]
            lamk = lam[k]
            for j in range(nb):
                r = L[k, j] * ssum[j]
                d = t[j] - mk
                rd = r * d
                acc_r[k, j] += r
                acc_rd[k, j] += rd
                acc_rd2[k, j] += rd * d
                g[j] += rd * lamk
        for j in range(nb):
            dtheta[b0 + j] = -g[j]
    for k in range(K):
        sr = 0.0
        srd = 0.0
        srd2 = 0.0
        for j in range(BLOCK):
            sr += acc_r[k, j]
            srd += acc_rd[k, j]
            srd2 += acc_rd2[k, j]
        resp[k] = sr
        resp_d[k] = srd
        resp_d2[k] = srd2
    return lse_acc


@njit(parallel=True, cache=True, error_model="numpy")
def mixture_pass_kernel(theta, mu, lam, half_lam, const, dtheta, chunk):
    """One fused pass of the mixture log-density over a flat weight array, chunks in parallel
    (spec "Terms", log GM).

    Inputs
        theta     (D,) float32 or float64, contiguous
        mu        (K,) float64 component means
        lam       (K,) float64 precisions lambda_k
        half_lam  (K,) float64, 0.5 * lambda_k
        const     (K,) float64, log pi_k + 0.5 log lambda_k - 0.5 log 2 pi
        dtheta    (D,) output, dtype of theta; fully overwritten with d log GM(theta_i) / d theta_i
        chunk     weights per chunk (> 0)
    Returns (each chunk owns one row; reduce with .sum(axis=0))
        lse       (C,)   float64, per-chunk sums of log GM(theta_i)
        resp      (C, K) float64, per-chunk sums of r_ik
        resp_d    (C, K) float64, per-chunk sums of r_ik (theta_i - mu_k)
        resp_d2   (C, K) float64, per-chunk sums of r_ik (theta_i - mu_k)^2
    The K log-terms live in a per-chunk (K, BLOCK) buffer, never in a (D, K) array.
    """
    n = theta.shape[0]
    K = mu.shape[0]
    nchunks = (n + chunk - 1) // chunk
    lse = np.zeros(nchunks)
    resp = np.zeros((nchunks, K))
    resp_d = np.zeros((nchunks, K))
    resp_d2 = np.zeros((nchunks, K))
    for c in prange(nchunks):
        start = c * chunk
        lse[c] = _mixture_chunk(theta, mu, lam, half_lam, const, dtheta, start, min(start + chunk, n),
                                resp[c], resp_d[c], resp_d2[c])
    return lse, resp, resp_d, resp_d2


@njit(cache=True, error_model="numpy")
def mixture_pass_kernel_serial(theta, mu, lam, half_lam, const, dtheta, chunk):
    """``mixture_pass_kernel`` on one thread (same chunks, same results): no thread-pool launch for
    small D."""
    n = theta.shape[0]
    K = mu.shape[0]
    nchunks = (n + chunk - 1) // chunk
    lse = np.zeros(nchunks)
    resp = np.zeros((nchunks, K))
    resp_d = np.zeros((nchunks, K))
    resp_d2 = np.zeros((nchunks, K))
    for c in range(nchunks):
        start = c * chunk
        lse[c] = _mixture_chunk(theta, mu, lam, half_lam, const, dtheta, start, min(start + chunk, n),
                                resp[c], resp_d[c], resp_d2[c])
    return lse, resp, resp_d, resp_d2


@njit(parallel=True, cache=True, error_model="numpy")
def responsibility_argmax_kernel(theta, mu, half_lam, const, out, chunk):
    """Index of the most responsible component per weight (paper section 3, clustering).

    Inputs
        theta     (D,) float32 or float64, contiguous
        mu, half_lam, const  (K,) float64 as in ``mixture_pass_kernel``
        out       (D,) intp output, fully overwritten
        chunk     weights per chunk (> 0)
    argmax_k r_ik = argmax_k (const_k - 0.5 lambda_k (theta_i - mu_k)^2); ties go to the lowest k
    (same as np.argmax), and the arithmetic is the NumPy reference's, op for op.
    """
    n = theta.shape[0]
    K = mu.shape[0]
    nchunks = (n + chunk - 1) // chunk
    for c in prange(nchunks):
        start = c * chunk
        stop = min(start + chunk, n)
        for i in range(start, stop):
            t = np.float64(theta[i])
            best = 0
            m = -np.inf
            for k in range(K):
                d = t - mu[k]
                lk = const[k] - half_lam[k] * (d * d)
                if lk > m:
                    m = lk
                    best = k
            out[i] = best
