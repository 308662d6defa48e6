"""Direct convolution kernels for layers with a short receptive field (LeNet-5's conv1: K = 25), each
beside its NumPy reference.

Shape legend
    Bc           images of one part of the batch (the layers cut the batch into parts, one per thread)
    C, H, W      input channels, height, width            x      (Bc, C, H, W)
    F, kh, kw    filters and kernel size                   w2, es2 (F, K), K = C*kh*kw, (c, i, j) order
    OH, OW       output size H-kh+1, W-kw+1                y, std, eps, dy (Bc, F, OH, OW)
    L            (OH-1)*W + OW: length of a "wide row"; position p = oh*W + ow of one image's output,
                 with the W-OW positions ow >= OW of each row being padding (never read back, zero in
                 the backward's wide dout)

Why: with K = 25 the im2col matrix is mostly memory traffic (the columns are 25x the input) and the
GEMMs have an inner dimension of 25, where BLAS runs far below its peak. Written directly, tap
k = (c, i, j) of filter f adds w2[f, k] * x[n, c, i:i+OH, j:j+OW] to the output, and in the wide layout
that is one contiguous run: acc[p] += w2[f, k] * xflat[c*H*W + i*W + j + p] for p in [0, L), a loop
that vectorizes (the padding positions are computed and dropped). The weight gradient is the adjoint:
gw[f, k] = sum_p dm_wide[p] * xflat[c*H*W + i*W + j + p], with dm_wide zero at the padding.

Arithmetic (spec "Variational layer"): m = conv(x, θ) + b, v = conv(x⊙x, exp s),
y = m + sqrt(v + jitter) ⊙ ε; backward dm = dy, dv = dy ⊙ ε / (2 std), dθ = Σ dm ⊗ x-patches,
d(exp s) = Σ dv ⊗ (x⊙x)-patches, db = Σ dm, dx = col2im(θᵀ dm) + 2x ⊙ col2im(exp(s)ᵀ dv).
The forward kernel has no reductions (plain njit, exact IEEE order: taps in k order from 0, then the
bias). The backward's dot products are reductions, which LLVM vectorizes only when allowed to
reassociate: that kernel is compiled with fastmath={"reassoc"} (no other fast-math flag), so its sums
are a fixed re-ordering, deterministic for a given machine and build; tests compare it to the NumPy
reference within a tolerance, never exactly. Every reduction runs in a loop that only loads: a loop that
also stores gets LLVM's runtime alias check, whose outcome (vector body or scalar fallback, two summation
orders) depends on where the arrays happen to lie in memory — a first version summed db inside the loop
that writes the wide dout and gave run-to-run differences of 1e-16 (tests/test_kernels_conv_direct.py
checks bit-equal results for inputs at different addresses). Serial kernels (the layers run one part per thread), written
into caller-given arrays; numba.njit(cache=True), intp loop indices. The inner loops index slices
(xs = xn[o:o + L]; xs[p]) rather than xn[o + p]: an index computed from a runtime offset gets numba's
negative-index wraparound check, which stops LLVM's vectorizer (as in kernels/kl32.py).
"""

import numba
import numpy as np

from refvbc.kernels.conv import conv2d_backward_numpy, conv2d_forward_numpy

# loop runs are padded to whole blocks of BLOCK elements (16 float32 lanes x 4 interleaved, what LLVM's
# vectorized loop body takes per iteration): a remainder would run in the scalar epilogue, which for a
# 668-long run (conv1) cost most of the kernel's time.
BLOCK = 64
_NJIT = dict(cache=True, nogil=True, error_model="numpy")
_NJIT_REASSOC = dict(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})


@numba.njit(inline="always", **_NJIT)
def _axpy5(acc, wrow, k, src, o, L):
    """acc[p] += Σ_t wrow[k + t] * src[o + t + p], t = 0..4, p in [0, L) (five taps of a row in one pass;
    slices indexed from 0, see the note on indices above)."""
    a0, a1, a2, a3, a4 = wrow[k], wrow[k + 1], wrow[k + 2], wrow[k + 3], wrow[k + 4]
    x0, x1, x2, x3, x4 = (src[o:o + L], src[o + 1:o + 1 + L], src[o + 2:o + 2 + L], src[o + 3:o + 3 + L],
                          src[o + 4:o + 4 + L])
    for p in range(L):
        acc[p] += (((a0 * x0[p] + a1 * x1[p]) + a2 * x2[p]) + a3 * x3[p]) + a4 * x4[p]


@numba.njit(inline="always", **_NJIT_REASSOC)
def _dot5_add(grow, k, d, src, o, L, zero):
    """grow[k + t] += Σ_p d[p] * src[o + t + p], t = 0..4, p in [0, L) (five sums in one pass over d)."""
    x0, x1, x2, x3, x4 = (src[o:o + L], src[o + 1:o + 1 + L], src[o + 2:o + 2 + L], src[o + 3:o + 3 + L],
                          src[o + 4:o + 4 + L])
    s0 = s1 = s2 = s3 = s4 = zero
    for p in range(L):
        dp = d[p]
        s0 += dp * x0[p]
        s1 += dp * x1[p]
        s2 += dp * x2[p]
        s3 += dp * x3[p]
        s4 += dp * x4[p]
    grow[k] += s0
    grow[k + 1] += s1
    grow[k + 2] += s2
    grow[k + 3] += s3
    grow[k + 4] += s4


@numba.njit(**_NJIT)
def conv_direct_forward_into(x, w2, es2, b, eps, jitter, kh, kw, var, y, std):
    """Direct (variational) convolution of one part of the batch.

    Inputs:  x (Bc, C, H, W) C-contiguous; w2 (F, K); es2 (F, K) = exp(log σ²) (any 2-D array when not
             var); b (F,); eps (Bc, F, OH, OW) (any 4-D array when not var); jitter scalar of the dtype;
             kh, kw; var bool; y, std (Bc, F, OH, OW) written here (std only when var).
    y = conv(x, w2) + b, plus sqrt(conv(x⊙x, es2) + jitter) ⊙ eps when var (std = that sqrt).
    """
    B, C, H, W = x.shape
    F = w2.shape[0]
    OH = H - kh + 1
    OW = W - kw + 1
    HW = H * W
    L = -(-((OH - 1) * W + OW) // BLOCK) * BLOCK  # the wide row, rounded up to whole vector blocks
    CHW = C * HW
    xf = x.reshape(B, CHW)
    acc_m = np.empty(L, dtype=y.dtype)
    acc_v = np.empty(L if var else 0, dtype=y.dtype)
    xn = np.zeros(CHW + L, dtype=y.dtype)  # one image, zero-padded so every run of L stays inside
    xsq = np.zeros(CHW + L if var else 0, dtype=y.dtype)
    for n in range(B):
        xn[:CHW] = xf[n]
        if var:
            for q in range(CHW):
                xsq[q] = xn[q] * xn[q]
        for f in range(F):
            acc_m[:] = 0
            if var:
                acc_v[:] = 0
            for c in range(C):
                for i in range(kh):
                    k0 = (c * kh + i) * kw
                    o0 = c * HW + i * W
                    j = 0
                    while j + 5 <= kw:  # five taps of a row per pass over the accumulator
                        _axpy5(acc_m, w2[f], k0 + j, xn, o0 + j, L)
                        if var:
                            _axpy5(acc_v, es2[f], k0 + j, xsq, o0 + j, L)
                        j += 5
                    while j < kw:  # the remaining taps one by one
                        k = k0 + j
                        o = o0 + j
                        wm = w2[f, k]
                        xs = xn[o:o + L]  # slices, not xn[o + p]: see the note on indices above
                        for p in range(L):
                            acc_m[p] += wm * xs[p]
                        if var:
                            wv = es2[f, k]
                            xqs = xsq[o:o + L]
                            for p in range(L):
                                acc_v[p] += wv * xqs[p]
                        j += 1
            bf = b[f]
            for oh in range(OH):
                r = oh * W
                if var:
                    for ow in range(OW):
                        s = np.sqrt(acc_v[r + ow] + jitter)
                        std[n, f, oh, ow] = s
                        y[n, f, oh, ow] = (acc_m[r + ow] + bf) + s * eps[n, f, oh, ow]
                else:
                    for ow in range(OW):
                        y[n, f, oh, ow] = acc_m[r + ow] + bf


def conv_direct_forward_numpy(x, w2, es2, b, eps, jitter, kh, kw):
    """Reference for conv_direct_forward_into (es2 None: deterministic) -> (y, std or None)."""
    F, C = w2.shape[0], x.shape[1]
    y = conv2d_forward_numpy(x, w2.reshape(F, C, kh, kw), b)
    if es2 is None:
        return y, None
    std = np.sqrt(conv2d_forward_numpy(x * x, es2.reshape(F, C, kh, kw), np.zeros_like(b)) + jitter)
    return y + std * eps, std


@numba.njit(**_NJIT_REASSOC)
def conv_direct_backward_into(x, dy, eps, std, w2, es2, kh, kw, var, need_dx, gw, gs, gb, dx):
    """Gradients of conv_direct_forward_into over one part of the batch.

    Inputs:  x (Bc, C, H, W) C-contiguous; dy (Bc, F, OH, OW); eps, std (Bc, F, OH, OW) (any 4-D arrays
             when not var); w2, es2 (F, K) (es2 any 2-D array when not var); kh, kw; var, need_dx bools.
    Written: gw (F, K) = Σ dm ⊗ patches of x; gs (F, K) = Σ dv ⊗ patches of x⊙x (when var; the caller
             multiplies by exp(s) for d log σ²); gb (F,) = Σ dm; dx (Bc, C, H, W) when need_dx.
    """
    B, C, H, W = x.shape
    F = dy.shape[1]
    OH = dy.shape[2]
    OW = dy.shape[3]
    HW = H * W
    L = -(-((OH - 1) * W + OW) // BLOCK) * BLOCK  # as in the forward
    CHW = C * HW
    dt = np.zeros(1, dtype=gw.dtype)
    zero = dt[0]
    xf = x.reshape(B, CHW)
    dm = np.zeros(L, dtype=gw.dtype)  # wide: the padding positions stay 0
    dv = np.zeros(L if var else 0, dtype=gw.dtype)
    xn = np.zeros(CHW + L, dtype=gw.dtype)
    xsq = np.zeros(CHW + L if var else 0, dtype=gw.dtype)
    dxa = np.empty(CHW + L if need_dx else 0, dtype=gw.dtype)
    dxs = np.empty(CHW + L if (need_dx and var) else 0, dtype=gw.dtype)
    gw[:] = 0
    gb[:] = 0
    if var:
        gs[:] = 0
    for n in range(B):
        xn[:CHW] = xf[n]
        if var:
            for q in range(CHW):
                xsq[q] = xn[q] * xn[q]
        if need_dx:
            dxa[:] = 0
            if var:
                dxs[:] = 0
        for f in range(F):
            for oh in range(OH):
                r = oh * W
                for ow in range(OW):
                    d = dy[n, f, oh, ow]
                    dm[r + ow] = d
                    if var:
                        s = std[n, f, oh, ow]
                        dv[r + ow] = d * eps[n, f, oh, ow] / (s + s)
            sb = zero
            for p in range(L):  # a loop of loads only (see the note on determinism above)
                sb += dm[p]
            gb[f] += sb
            for c in range(C):
                for i in range(kh):
                    k0 = (c * kh + i) * kw
                    o0 = c * HW + i * W
                    j = 0
                    while j + 5 <= kw:  # five taps of a row per pass over dm (five sums at once)
                        _dot5_add(gw[f], k0 + j, dm, xn, o0 + j, L, zero)
                        if var:
                            _dot5_add(gs[f], k0 + j, dv, xsq, o0 + j, L, zero)
                        j += 5
                    while j < kw:  # the remaining taps one by one
                        k = k0 + j
                        o = o0 + j
                        xs = xn[o:o + L]  # slices, not xn[o + p]: see the note on indices above
                        acc = zero
                        for p in range(L):
                            acc += dm[p] * xs[p]
                        gw[f, k] += acc
                        if var:
                            xqs = xsq[o:o + L]
                            acc = zero
                            for p in range(L):
                                acc += dv[p] * xqs[p]
                            gs[f, k] += acc
                        j += 1
                    if need_dx:
                        for j in range(kw):
                            k = k0 + j
                            o = o0 + j
                            wm = w2[f, k]
                            da = dxa[o:o + L]
                            for p in range(L):
                                da[p] += wm * dm[p]
                            if var:
                                wv = es2[f, k]
                                ds = dxs[o:o + L]
                                for p in range(L):
                                    ds[p] += wv * dv[p]
        if need_dx:
            dxn = dx[n].reshape(C * HW)
            if var:
                for q in range(C * HW):
                    dxn[q] = dxa[q] + (xn[q] + xn[q]) * dxs[q]
            else:
                for q in range(C * HW):
                    dxn[q] = dxa[q]


def conv_direct_backward_numpy(x, dy, eps, std, w2, es2, kh, kw):
    """Reference for conv_direct_backward_into (es2 None: deterministic) -> (gw, gs or None, gb, dx)."""
    F, C = w2.shape[0], x.shape[1]
    dx, gw, gb = conv2d_backward_numpy(dy, x, w2.reshape(F, C, kh, kw))
    if es2 is None:
        return gw.reshape(F, -1), None, gb, dx
    dv = dy * eps / (2 * std)
    dx_v, gs, _ = conv2d_backward_numpy(dv, x * x, es2.reshape(F, C, kh, kw))
    return gw.reshape(F, -1), gs.reshape(F, -1), gb, dx + 2 * x * dx_v
