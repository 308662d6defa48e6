"""KL_VD in float32 arithmetic (the training dtype), and the float32 exp/log it is built from.

Shape legend
    D        number of weights in the flat array handed to a kernel (one layer, flattened)
    C        number of chunks, ceil(D / chunk)

Why a float32 kernel: the float64 kernel (refvbc/kernels/mixture.py ``kl_vd_kernel``) widens every
float32 weight, so its vector loop runs 4 lanes of AVX2 doubles with degree-13/21 polynomials; this one
runs 8 float32 lanes with polynomials sized to float32 (exp: degree 7, log: 5 terms): measured
2.0 ms against 5.5 ms for 266,200 weights on one core. It is used for float32 inputs only; float64 inputs (the gradient checks, the
cross-check) keep the float64 kernel, so their results do not change. PyTorch computes this term in
float32 too. The KL values are summed in float32 lanes of at most 64 values each, then in float64.

The kernel *accumulates* ``scale *`` the gradients into caller arrays (the objective's gradient
buffers), instead of writing fresh arrays that are then scaled and added in three more passes (the
float64 kernel writes fresh arrays; ``refvbc.priors.kl_vd_add`` adds them for float64 inputs).

NumPy twin: ``refvbc.priors.kl_vd_numpy`` (float64 reference); tests/test_priors.py compares this kernel
against it to float32 round-off, and ``expf_kernel`` / ``logf_kernel`` against np.exp / np.log in ulps.
No fastmath (results are compared against NumPy); intp loop indices.
"""

import numpy as np
from numba import njit, types

from refvbc.kernels.mixture import (BLOCK, KL_K1, KL_K2, KL_K3, LOG_ALPHA_EPS, LOG_ALPHA_MAX, LOG_ALPHA_MIN,
                                    bitcast)

F32 = np.float32
# float32 constants: a bare Python float literal would promote the arithmetic to float64.
_ZERO, _HALF, _ONE, _TWO = F32(0.0), F32(0.5), F32(1.0), F32(2.0)
_K1, _K2, _K3 = F32(KL_K1), F32(KL_K2), F32(KL_K3)
_K1K3 = F32(KL_K1 * KL_K3)
_EPS = F32(LOG_ALPHA_EPS)
_LA_MIN, _LA_MAX = F32(LOG_ALPHA_MIN), F32(LOG_ALPHA_MAX)
_LOG2E = F32(1.4426950408889634)
_LN2_HI = F32(0.693359375)  # ln 2 = _LN2_HI + _LN2_LO; _LN2_HI has 9 significant bits, so n * _LN2_HI
_LN2_LO = F32(-2.12194440e-4)  # is exact for |n| < 2**15 (Cody-Waite, as cephes' expf/logf)
_EXP_MIN = F32(-87.0)  # exp(-87) ~ 1.6e-38, the bottom of float32's normal range
_EXP_MAX = F32(88.0)
_SQRT2 = F32(1.4142135623730951)
_FLT_MIN = F32(1.1754943508222875e-38)
_INF = F32(np.inf)
_NAN = F32(np.nan)
# Taylor coefficients 1/k! of exp(r), |r| <= ln2/2: truncation r^8/8! < 6e-9 (float32 ulp: 6e-8)
_E7, _E6, _E5, _E4 = F32(1 / 5040), F32(1 / 720), F32(1 / 120), F32(1 / 24)
_E3 = F32(1 / 6)
# odd series of atanh: log m = 2 (f + f^3/3 + ... + f^9/9), |f| <= 0.1716: truncation < 3e-9 relative
_L9, _L7, _L5, _L3 = F32(1 / 9), F32(1 / 7), F32(1 / 5), F32(1 / 3)
_MANT_MASK = np.int32((1 << 23) - 1)
_ONE_BITS = np.int32(127 << 23)


_bits_as_float32 = bitcast(types.int32, types.float32)
_float32_as_bits = bitcast(types.float32, types.int32)


@njit(inline="always")
def _expf(x):
    """float32 exp(x) for x <= 88, to ~2 ulp (checked in the tests), 0 for x < -87 (np.exp gives a
    subnormal < 1.6e-38 there). Inlines into vectorizable loops: x = n ln2 + r, |r| <= ln2/2, degree-7
    Taylor polynomial of exp(r), times 2**n from its exponent bits."""
    xc = min(max(x, _EXP_MIN), _EXP_MAX)
    n = np.floor(xc * _LOG2E + _HALF)
    r = (xc - n * _LN2_HI) - n * _LN2_LO
    p = _E7
    p = p * r + _E6
    p = p * r + _E5
    p = p * r + _E4
    p = p * r + _E3
    p = p * r + _HALF
    p = p * r + _ONE
    p = p * r + _ONE
    y = p * _bits_as_float32(np.int32(np.int32(n) + np.int32(127)) << np.int32(23))
    return y if x >= _EXP_MIN else _ZERO


@njit(inline="always")
def _logf(x):
    """float32 natural log of a normal positive finite x, to ~2 ulp (checked in the tests); nan for 0,
    subnormals, negatives, inf and nan. x = 2**e m, m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(f),
    f = (m - 1)/(m + 1), plus e ln 2 in two parts."""
    bits = _float32_as_bits(x)
    e = np.int32(bits >> np.int32(23)) - np.int32(127)
    m = _bits_as_float32(np.int32((bits & _MANT_MASK) | _ONE_BITS))  # in [1, 2)
    if m > _SQRT2:
        m = _HALF * m
        e += np.int32(1)
    f = (m - _ONE) / (m + _ONE)
    f2 = f * f
    p = _L9
    p = p * f2 + _L7
    p = p * f2 + _L5
    p = p * f2 + _L3
    ef = F32(e)
    tf = _TWO * f
    y = ef * _LN2_HI + (ef * _LN2_LO + (tf + tf * (f2 * p)))
    return y if (x >= _FLT_MIN and x < _INF) else _NAN


@njit(cache=True, error_model="numpy")
def expf_kernel(x, out):
    """out[i] = _expf(x[i]) (float32 arrays; exposed so the tests can check it)."""
    for i in range(x.shape[0]):
        out[i] = _expf(x[i])


@njit(cache=True, error_model="numpy")
def logf_kernel(x, out):
    """out[i] = _logf(x[i]) (float32 arrays; exposed so the tests can check it)."""
    for i in range(x.shape[0]):
        out[i] = _logf(x[i])


@njit(inline="always")
def _kl_vd_one32(t, s, scale):
    """One weight of KL_VD in float32 (spec "Terms", KL_VD; clip gradient on the closed interval):
    returns (kl, scale * dkl/ds, scale * dkl/dtheta). k1 - k1 sigmoid(z) is written k1 exp(-z)
    sigmoid(z), which float32 keeps accurate where sigmoid(z) rounds to 1. A non-finite t or s makes ``a`` non-finite and
    ``a - a`` (nan then, 0 otherwise) carries it into kl."""
    t2e = t * t + _EPS
    a = s - _logf(t2e)
    inside = a >= _LA_MIN and a <= _LA_MAX
    la = min(max(a, _LA_MIN), _LA_MAX)
    ez = _expf(-(_K2 + _K3 * la))
    sg = _ONE / (_ONE + ez)
    osg = ez * sg  # 1 - sg without the cancellation (1 - sg < float32's eps for la > ~5)
    e = _expf(-la)
    u = _ONE + e
    # log1p(e) = log(u) e / (u - 1), u = 1 + e > 1 (exact to a few ulp; e >= exp(-10))
    kl = (_K1 * osg + _HALF * (_logf(u) * e / (u - _ONE))) + (a - a)
    g = -_K1K3 * sg * osg - _HALF * e / u
    g = g * scale if inside else _ZERO
    return kl, g, g * (-_TWO * t / t2e)


@njit(cache=True, nogil=True, error_model="numpy")
def _kl_vd_chunk32(theta, log_sigma2, dtheta, dlog_sigma2, scale, start, stop):
    """KL_VD of float32 weights [start, stop) in float32 arithmetic: adds scale * the gradients into
    dtheta / dlog_sigma2 and returns the float64 sum of the values.

    Speed (measured on an idle core, 266k weights: 2.0 ms; the float64 kernel 5.5 ms): the values go
    into BLOCK float32 lane accumulators (a loop-carried scalar sum would stop the vectorizer; float64
    lanes cost another 2 ms), each lane sums at most chunk / BLOCK values (64 for the default chunk)
    and the lanes are summed in float64."""
    # slices indexed from 0: an index computed from the runtime ``start`` gets a negative-index
    # wraparound check, which stops the vectorizer (7x slower)
    th = theta[start:stop]
    ls = log_sigma2[start:stop]
    dth = dtheta[start:stop]
    dls = dlog_sigma2[start:stop]
    acc = np.zeros(BLOCK, np.float32)
    nblocks = th.shape[0] // BLOCK
    for b in range(nblocks):
        for j in range(BLOCK):
            i = b * BLOCK + j
            kl, gs, gt = _kl_vd_one32(th[i], ls[i], scale)
            acc[j] += kl
            dls[i] += gs
            dth[i] += gt
    for i in range(nblocks * BLOCK, th.shape[0]):
        kl, gs, gt = _kl_vd_one32(th[i], ls[i], scale)
        acc[0] += kl
        dls[i] += gs
        dth[i] += gt
    total = 0.0
    for j in range(BLOCK):
        total += np.float64(acc[j])
    return total


@njit(cache=True, nogil=True, error_model="numpy")
def kl_vd_add_kernel32(theta, log_sigma2, dtheta, dlog_sigma2, scale, chunk):
    """Fused float32 KL_VD over chunks of `chunk` weights: dtheta += scale dKL/dtheta, dlog_sigma2 +=
    scale dKL/ds. Serial and nogil: the caller (refvbc.priors.kl_vd_add) runs runs of whole chunks on
    refvbc's thread pool, so the per-chunk partials, and the results, do not depend on the thread count.

    Inputs
        theta, log_sigma2   (D,) float32, contiguous
        dtheta, dlog_sigma2 (D,) float32, contiguous: gradients accumulated into
        scale               float32
        chunk               weights per chunk (> 0)
    Returns
        partial             (C,) float64 per-chunk sums of KL_VD (reduce with .sum())
    """
    n = theta.shape[0]
    nchunks = (n + chunk - 1) // chunk
    partial = np.zeros(nchunks)
    for c in range(nchunks):
        start = c * chunk
        partial[c] = _kl_vd_chunk32(theta, log_sigma2, dtheta, dlog_sigma2, scale, start,
                                    min(start + chunk, n))
    return partial
