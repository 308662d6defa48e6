"""Numba kernels for convolution (valid, stride 1) and 2x2 max-pooling, each beside its NumPy reference.

Shape legend
    B            batch size
    C, H, W      input channels, height, width            x     (B, C, H, W)
    F, kh, kw    filters and kernel size                   w     (F, C, kh, kw)
    OH, OW       output size H-kh+1, W-kw+1                out   (B, F, OH, OW)
    P            OH * OW, output positions per image
    K            C * kh * kw, length of one receptive field
    cols         im2col matrix, "rows = output positions": (B*P, K); row b*P + oh*OW + ow holds the
                 patch x[b, :, oh:oh+kh, ow:ow+kw] flattened in (c, i, j) order, i.e. the same order as
                 w.reshape(F, K), so that conv(x, w) in row layout is cols @ w.reshape(F, K).T -> (B*P, F).
    rows layout  (B*P, F): a pre-activation with positions as rows (what the GEMM gives);
                 nchw layout (B, F, OH, OW) is what the layers return.

Division of labour (see refvbc/layers.py): the GEMMs go to BLAS via np.dot on contiguous arrays; the data
movement (im2col, col2im, layout changes fused with the elementwise work) is done here. The layers use the
serial "columns" kernels (`*_into`, one call per batch part and thread).
Every kernel is a plain-Python function compiled with numba.njit(cache=True), no fastmath; parallel loops
(prange) only write disjoint slices, so there are no races. Every kernel has a NumPy reference
(`*_numpy`) beside it that tests/test_kernels_conv.py compares against; the references of the columns
kernels are built from the rows-layout NumPy functions of the first section (im2col / col2im and the
rows <-> nchw layout changes); `conv2d_forward_numpy` and `conv2d_backward_numpy` are independent
references (einsum over sliding windows, no im2col).
"""

import numba
import numpy as np
from numba import prange

# error_model="numpy": divisions carry no ZeroDivisionError branch, which would stop vectorization (the
# only division, by 2 std, has std >= sqrt(1e-8) > 0).
# float32 arithmetic for float32 arrays: 2 s is written s + s (exact), because numba types the literal 2
# as int64 and int64 * float32 as float64 (the loop would run in float64, as NumPy 1's rules had it).
_NJIT = dict(cache=True, nogil=True, error_model="numpy")
_NJIT_PAR = dict(cache=True, nogil=True, parallel=True, error_model="numpy")


# ----------------------------------------------------------------------------------------------------
# NumPy building blocks of the references, rows layout: im2col / col2im, rows (B*P, F) <-> nchw (B, F, OH, OW)
# ----------------------------------------------------------------------------------------------------

def im2col_numpy(x, kh, kw):
    """Reference im2col.

    Inputs:  x (B, C, H, W); kh, kw kernel size.
    Returns: cols (B*OH*OW, C*kh*kw), contiguous, x's dtype.
    """
    B, C, H, W = x.shape
    OH, OW = H - kh + 1, W - kw + 1
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))  # (B, C, OH, OW, kh, kw)
    return np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(B * OH * OW, C * kh * kw)


def col2im_numpy(cols, x_shape, kh, kw):
    """Reference col2im: the adjoint of im2col (overlapping patches are summed).

    Inputs:  cols (B*OH*OW, C*kh*kw); x_shape (B, C, H, W); kh, kw.
    Returns: dx (B, C, H, W), cols' dtype.
    """
    B, C, H, W = x_shape
    OH, OW = H - kh + 1, W - kw + 1
    c6 = cols.reshape(B, OH, OW, C, kh, kw)
    dx = np.zeros(x_shape, dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            dx[:, :, i:i + OH, j:j + OW] += c6[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return dx


def col2im_pair_numpy(dcols, dcols_sq, x, kh, kw):
    """col2im of dcols plus the chain rule through x -> x⊙x of dcols_sq (spec "Variational layer": the
    variance path convolves x⊙x): dx = col2im(dcols) + 2 x ⊙ col2im(dcols_sq).

    Inputs:  dcols, dcols_sq (B*OH*OW, C*kh*kw); x (B, C, H, W); kh, kw.
    Returns: dx (B, C, H, W).
    """
    return col2im_numpy(dcols, x.shape, kh, kw) + 2 * x * col2im_numpy(dcols_sq, x.shape, kh, kw)


def rows_to_nchw_bias_numpy(m_rows, b, B, OH, OW):
    """out[b, f, oh, ow] = m_rows[b*P + oh*OW + ow, f] + bias[f].

    Inputs:  m_rows (B*P, F); b (F,); B, OH, OW ints.  Returns: out (B, F, OH, OW).
    """
    F = m_rows.shape[1]
    return np.ascontiguousarray(m_rows.reshape(B, OH, OW, F).transpose(0, 3, 1, 2)) + b[None, :, None, None]


def nchw_to_rows_numpy(d):
    """d_rows[b*P + oh*OW + ow, f] = d[b, f, oh, ow].  Inputs: d (B, F, OH, OW).  Returns (B*P, F)."""
    B, F, OH, OW = d.shape
    return np.ascontiguousarray(d.transpose(0, 2, 3, 1)).reshape(B * OH * OW, F)


def vconv_output_numpy(m_rows, v_rows, b, eps, jitter):
    """Local reparameterization output y = m + b + sqrt(v + jitter) ⊙ ε from rows-layout m, v
    (B*P, F) -> (y, std) (B, F, OH, OW); the reference behind vconv_output_t_numpy."""
    B, F, OH, OW = eps.shape
    m = rows_to_nchw_bias_numpy(m_rows, b, B, OH, OW)
    std = np.sqrt(rows_to_nchw_bias_numpy(v_rows, np.zeros_like(b), B, OH, OW) + jitter)
    return m + std * eps, std


def vconv_dout_numpy(dy, eps, std):
    """Backward of y = m + std ⊙ ε into rows layout: dm = dy, dv = dy ⊙ ε / (2 std), each (B*P, F);
    the reference behind vconv_dout_t_numpy."""
    return nchw_to_rows_numpy(dy), nchw_to_rows_numpy(dy * eps / (2 * std))


# ----------------------------------------------------------------------------------------------------
# "columns" layout: the fast path of layers.conv2d_* and layers.vconv2d_*
#
#   colsT   (K, Bc*P): the transpose of cols for a part of Bc images; column n*P + oh*OW + ow holds the
#           receptive field of output position (n, oh, ow). With it the pre-activation comes out of the GEMM
#           w2 (F, K) @ colsT as (F, Bc*P), whose rows are contiguous images, so every copy between layouts,
#           and the im2col / col2im themselves, run over contiguous OW- or P-long runs.
#
# These kernels are serial and write into caller-given arrays (`*_into`): the layers cut the batch into
# parts, run one part per thread of refvbc.parallel (GEMMs in single-threaded BLAS between the kernels)
# and reuse the buffers across steps. The `*_numba` functions below them allocate and call the same
# kernels (what the tests compare against the NumPy references).
# ----------------------------------------------------------------------------------------------------

@numba.njit(**_NJIT)
def im2col_t_into(x, kh, kw, colsT, colsT_sq, want_sq):
    """colsT = im2col(x).T and, when want_sq, colsT_sq = colsT ⊙ colsT in the same pass.

    Inputs:  x (Bc, C, H, W) C-contiguous; kh, kw; colsT (K, Bc*P) and colsT_sq (K, Bc*P) (any shape when
             not want_sq) written here; want_sq bool.
    Row k = (c, i, j) of colsT is, image by image and output row by output row, the OW-long run
    x[b, c, oh + i, j:j + OW]. Runs are copied eight elements per step, written out (a run of OW = 8, as in
    LeNet-5's conv2, is shorter than the vectorized loop body LLVM would build, and would run in the scalar
    remainder loop): measured 0.61 against 0.85 ms for 25 images of conv2 (the earlier gather through an
    offset table).
    """
    B, C, H, W = x.shape
    OH = H - kh + 1
    OW = W - kw + 1
    P = OH * OW
    OW8 = OW - OW % 8
    xf = x.reshape(B, C * H * W)
    for k in range(C * kh * kw):
        c = k // (kh * kw)
        ij = k - c * (kh * kw)
        i = ij // kw
        j = ij - i * kw
        ck = colsT[k]
        cq = colsT_sq[k] if want_sq else colsT[k, 0:0]
        for b in range(B):
            xb = xf[b]
            for oh in range(OH):
                o = (c * H + oh + i) * W + j
                src = xb[o:o + OW]
                q = b * P + oh * OW
                dst = ck[q:q + OW]
                dsq = cq[q:q + OW] if want_sq else cq
                ow = 0
                while ow < OW8:
                    v0, v1, v2, v3 = src[ow], src[ow + 1], src[ow + 2], src[ow + 3]
                    v4, v5, v6, v7 = src[ow + 4], src[ow + 5], src[ow + 6], src[ow + 7]
                    dst[ow], dst[ow + 1], dst[ow + 2], dst[ow + 3] = v0, v1, v2, v3
                    dst[ow + 4], dst[ow + 5], dst[ow + 6], dst[ow + 7] = v4, v5, v6, v7
                    if want_sq:
                        dsq[ow], dsq[ow + 1], dsq[ow + 2], dsq[ow + 3] = v0 * v0, v1 * v1, v2 * v2, v3 * v3
                        dsq[ow + 4], dsq[ow + 5], dsq[ow + 6], dsq[ow + 7] = v4 * v4, v5 * v5, v6 * v6, v7 * v7
                    ow += 8
                while ow < OW:
                    v = src[ow]
                    dst[ow] = v
                    if want_sq:
                        dsq[ow] = v * v
                    ow += 1


def im2col_t_pair_numba(x, kh, kw, want_sq):
    """Allocating im2col_t_into: returns colsT (K, B*P), colsT_sq (K, B*P) (shape (0, B*P) when not want_sq)."""
    x = np.ascontiguousarray(x)
    B, C, H, W = x.shape
    N = B * (H - kh + 1) * (W - kw + 1)
    colsT = np.empty((C * kh * kw, N), dtype=x.dtype)
    colsT_sq = np.empty((C * kh * kw if want_sq else 0, N), dtype=x.dtype)
    im2col_t_into(x, kh, kw, colsT, colsT_sq, want_sq)
    return colsT, colsT_sq


def im2col_t_numpy(x, kh, kw):
    """Reference for im2col_t_into: im2col_numpy(x).T, contiguous (K, B*P)."""
    return np.ascontiguousarray(im2col_numpy(x, kh, kw).T)


@numba.njit(**_NJIT)
def col2im_t_into(dcolsT, dcolsT_sq, x, kh, kw, with_sq, dx):
    """Adjoint of im2col_t_into: dx = col2im(dcolsT) + 2 x ⊙ col2im(dcolsT_sq) (the second term only when
    with_sq), with dcolsT, dcolsT_sq in the (K, Bc*P) layout.

    Inputs:  dcolsT (K, Bc*P); dcolsT_sq (K, Bc*P) or unused; x (Bc, C, H, W) (only its shape is used when
             not with_sq); kh, kw; with_sq bool; dx (Bc, C, H, W) overwritten with the result.
    """
    B, C, H, W = x.shape
    OH = H - kh + 1
    OW = W - kw + 1
    P = OH * OW
    acc_sq = np.zeros((C, H, W) if with_sq else (1, 1, 1), dtype=dx.dtype)
    for b in range(B):
        dx[b] = 0
        if with_sq:
            acc_sq[:] = 0
        for c in range(C):
            for i in range(kh):
                for j in range(kw):
                    k = (c * kh + i) * kw + j
                    for oh in range(OH):
                        q = b * P + oh * OW
                        for ow in range(OW):
                            dx[b, c, oh + i, ow + j] += dcolsT[k, q + ow]
                        if with_sq:
                            for ow in range(OW):
                                acc_sq[c, oh + i, ow + j] += dcolsT_sq[k, q + ow]
        if with_sq:
            for c in range(C):
                for h in range(H):
                    for w_ in range(W):
                        dx[b, c, h, w_] += (x[b, c, h, w_] + x[b, c, h, w_]) * acc_sq[c, h, w_]


def col2im_t_pair_numba(dcolsT, dcolsT_sq, x, kh, kw, with_sq):
    """Allocating col2im_t_into: returns dx (B, C, H, W), dcolsT's dtype."""
    dx = np.empty(x.shape, dtype=dcolsT.dtype)
    col2im_t_into(dcolsT, dcolsT_sq, x, kh, kw, with_sq, dx)
    return dx


def col2im_t_pair_numpy(dcolsT, dcolsT_sq, x, kh, kw):
    """Reference for col2im_t_into with with_sq=True."""
    return col2im_pair_numpy(dcolsT.T, dcolsT_sq.T, x, kh, kw)


@numba.njit(**_NJIT)
def vconv_output_t_into(m_t, v_t, b, eps, jitter, y, std):
    """Local reparameterization output (spec "Variational layer") from the (F, Bc*P) GEMM results:
    y[n, f] = m_t[f, n*P:(n+1)*P] + b[f] + sqrt(v_t[f, ...] + jitter) ⊙ eps[n, f].

    Inputs:  m_t, v_t (F, Bc*P); b (F,); eps (Bc, F, OH, OW) contiguous; jitter scalar of the dtype;
             y, std (Bc, F, OH, OW) contiguous, written here (std = sqrt(v + jitter)).
    """
    B, F, OH, OW = eps.shape
    P = OH * OW
    y2 = y.reshape(B, F, P)
    s2 = std.reshape(B, F, P)
    e2 = eps.reshape(B, F, P)
    for n in range(B):
        for f in range(F):
            bf = b[f]
            q = n * P
            for p in range(P):
                s = np.sqrt(v_t[f, q + p] + jitter)
                s2[n, f, p] = s
                y2[n, f, p] = (m_t[f, q + p] + bf) + s * e2[n, f, p]


def vconv_output_t_numba(m_t, v_t, b, eps, jitter):
    """Allocating vconv_output_t_into: returns y, std (B, F, OH, OW)."""
    eps = np.ascontiguousarray(eps)
    y = np.empty(eps.shape, dtype=m_t.dtype)
    std = np.empty(eps.shape, dtype=m_t.dtype)
    vconv_output_t_into(m_t, v_t, b, eps, jitter, y, std)
    return y, std


def vconv_output_t_numpy(m_t, v_t, b, eps, jitter):
    """Reference for vconv_output_t_into."""
    return vconv_output_numpy(np.ascontiguousarray(m_t.T), np.ascontiguousarray(v_t.T), b, eps, jitter)


@numba.njit(**_NJIT)
def conv_output_t_into(m_t, b, out):
    """Deterministic conv output from the (F, Bc*P) GEMM result: out[n, f] = m_t[f, n*P:(n+1)*P] + b[f].

    Inputs:  m_t (F, Bc*P); b (F,); out (Bc, F, OH, OW) contiguous, written here.
    """
    B, F, OH, OW = out.shape
    P = OH * OW
    o2 = out.reshape(B, F, P)
    for n in range(B):
        for f in range(F):
            bf = b[f]
            q = n * P
            for p in range(P):
                o2[n, f, p] = m_t[f, q + p] + bf


def conv_output_t_numpy(m_t, b, OH, OW):
    """Reference for conv_output_t_into -> out (B, F, OH, OW)."""
    B = m_t.shape[1] // (OH * OW)
    return rows_to_nchw_bias_numpy(np.ascontiguousarray(m_t.T), b, B, OH, OW)


@numba.njit(**_NJIT)
def vconv_dout_t_into(dy, eps, std, dm, dv):
    """Backward of y = m + std ⊙ ε into the (F, Bc*P) layout: dm = dy, dv = dy ⊙ ε / (2 std)
    (dv only when eps has the shape of dy; a deterministic conv passes an empty eps and gets dm alone).

    Inputs:  dy (Bc, F, OH, OW) contiguous; eps, std (Bc, F, OH, OW) contiguous or empty;
             dm, dv (F, Bc*P), written here (dv untouched when eps is empty).
    """
    B, F, OH, OW = dy.shape
    P = OH * OW
    d2 = dy.reshape(B, F, P)
    with_v = eps.size == dy.size
    e2 = eps.reshape(B if with_v else 0, F, P)
    s2 = std.reshape(B if with_v else 0, F, P)
    for f in range(F):
        for n in range(B):
            q = n * P
            for p in range(P):
                dm[f, q + p] = d2[n, f, p]
            if with_v:
                for p in range(P):
                    dv[f, q + p] = d2[n, f, p] * e2[n, f, p] / (s2[n, f, p] + s2[n, f, p])


def vconv_dout_t_numba(dy, eps, std):
    """Allocating vconv_dout_t_into: returns dm_t, dv_t (F, B*P)."""
    dy = np.ascontiguousarray(dy)
    B, F, OH, OW = dy.shape
    dm = np.empty((F, B * OH * OW), dtype=dy.dtype)
    dv = np.empty((F, B * OH * OW), dtype=dy.dtype)
    vconv_dout_t_into(dy, np.ascontiguousarray(eps), np.ascontiguousarray(std), dm, dv)
    return dm, dv


def vconv_dout_t_numpy(dy, eps, std):
    """Reference for vconv_dout_t_into."""
    dm, dv = vconv_dout_numpy(dy, eps, std)
    return np.ascontiguousarray(dm.T), np.ascontiguousarray(dv.T)


# ----------------------------------------------------------------------------------------------------
# elementwise passes of the variational dense layer (layers.vdense_*)
# ----------------------------------------------------------------------------------------------------

@numba.njit(**_NJIT)
def vdense_output_into(m, v, b, eps, jitter, y, std):
    """y = m + b + sqrt(v + jitter) ⊙ ε, std = sqrt(v + jitter) in one pass.

    Inputs:  m, v (R, out) GEMM results; b (out,); eps (R, out); jitter scalar; y, std (R, out) written here.
    """
    R, n = m.shape
    for r in range(R):
        for j in range(n):
            s = np.sqrt(v[r, j] + jitter)
            std[r, j] = s
            y[r, j] = (m[r, j] + b[j]) + s * eps[r, j]


def vdense_output_numpy(m, v, b, eps, jitter):
    """Reference for vdense_output_into -> (y, std)."""
    std = np.sqrt(v + jitter)
    return (m + b) + std * eps, std


@numba.njit(**_NJIT)
def vdense_dv_into(dy, eps, std, dv):
    """dv = dy ⊙ ε / (2 std) in one pass.  Inputs: dy, eps, std (R, out); dv (R, out) written here."""
    R, n = dy.shape
    for r in range(R):
        for j in range(n):
            dv[r, j] = dy[r, j] * eps[r, j] / (std[r, j] + std[r, j])


def vdense_dv_numpy(dy, eps, std):
    """Reference for vdense_dv_into."""
    return dy * eps / (2 * std)


# ----------------------------------------------------------------------------------------------------
# Independent NumPy references for the whole deterministic convolution (no im2col)
# ----------------------------------------------------------------------------------------------------

def conv2d_forward_numpy(x, w, b):
    """Reference valid, stride-1 cross-correlation (PyTorch conv2d semantics).

    Inputs:  x (B, C, H, W); w (F, C, kh, kw); b (F,).
    Returns: out (B, F, OH, OW).
    """
    kh, kw = w.shape[2:]
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))  # (B, C, OH, OW, kh, kw)
    out = np.einsum("bchwij,fcij->bfhw", win, w, optimize=True)
    return out + b[None, :, None, None]


def conv2d_backward_numpy(dout, x, w):
    """Reference gradients of conv2d_forward_numpy.

    Inputs:  dout (B, F, OH, OW); x (B, C, H, W); w (F, C, kh, kw).
    Returns: dx (B, C, H, W), dw (F, C, kh, kw), db (F,).
    """
    kh, kw = w.shape[2:]
    OH, OW = dout.shape[2:]
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    dw = np.einsum("bfhw,bchwij->fcij", dout, win, optimize=True)
    db = dout.sum(axis=(0, 2, 3))
    dx = np.zeros_like(x)
    for i in range(kh):
        for j in range(kw):
            dx[:, :, i:i + OH, j:j + OW] += np.einsum("bfhw,fc->bchw", dout, w[:, :, i, j], optimize=True)
    return dx, dw, db


# ----------------------------------------------------------------------------------------------------
# ReLU backward
# ----------------------------------------------------------------------------------------------------

@numba.njit(**_NJIT)
def relu_backward_numba(dout, x):
    """dx = dout where x > 0, else 0, in one pass (no boolean temporary, no dtype conversion).

    Inputs:  dout, x (N,) flat contiguous, same dtype.  Returns: dx (N,).
    """
    dx = np.empty_like(dout)
    for i in range(dout.shape[0]):
        dx[i] = dout[i] if x[i] > 0 else 0.0
    return dx


def relu_backward_numpy(dout, x):
    """Reference for relu_backward_numba."""
    return np.where(x > 0, dout, 0).astype(dout.dtype, copy=False)


# ----------------------------------------------------------------------------------------------------
# 2x2 / stride-2 max-pooling
# ----------------------------------------------------------------------------------------------------

@numba.njit(**_NJIT_PAR)
def maxpool2x2_kernel(x, relu):
    """2x2 max-pooling (relu False) or ReLU then 2x2 max-pooling in one pass (relu True).

    Inputs:  x (B, C, H, W), H and W even; relu bool.
    Returns: out (B, C, H/2, W/2); arg (B, C, H/2, W/2) int8, the window position 0..3 (row-major, first
             maximum wins) of each maximum; with relu, out = max(maximum, 0) and arg = -1 where the
             maximum is <= 0 (ReLU passes no gradient there).
    """
    B, C, H, W = x.shape
    H2 = H // 2
    W2 = W // 2
    out = np.empty((B, C, H2, W2), dtype=x.dtype)
    arg = np.empty((B, C, H2, W2), dtype=np.int8)
    for t in prange(B * C):
        n = t // C
        c = t - n * C
        for i in range(H2):
            for j in range(W2):
                best = x[n, c, 2 * i, 2 * j]
                a = 0
                v = x[n, c, 2 * i, 2 * j + 1]
                if v > best:
                    best = v
                    a = 1
                v = x[n, c, 2 * i + 1, 2 * j]
                if v > best:
                    best = v
                    a = 2
                v = x[n, c, 2 * i + 1, 2 * j + 1]
                if v > best:
                    best = v
                    a = 3
                if relu and not best > 0:
                    best = 0
                    a = -1
                out[n, c, i, j] = best
                arg[n, c, i, j] = a
    return out, arg


def maxpool2x2_forward_numba(x):
    """Inputs: x (B, C, H, W), H and W even.  Returns: out (B, C, H/2, W/2); arg int8 (maxpool2x2_kernel)."""
    return maxpool2x2_kernel(x, False)


def relu_maxpool2x2_forward_numba(x):
    """maxpool2x2(relu(x)) and its routing in one pass (maxpool2x2_kernel with relu)."""
    return maxpool2x2_kernel(x, True)


def maxpool2x2_forward_numpy(x):
    """Reference for maxpool2x2_forward_numba."""
    B, C, H, W = x.shape
    win = x.reshape(B, C, H // 2, 2, W // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(B, C, H // 2, W // 2, 4)
    arg = np.argmax(win, axis=-1)
    return np.take_along_axis(win, arg[..., None], axis=-1)[..., 0], arg.astype(np.int8)


@numba.njit(**_NJIT_PAR)
def maxpool2x2_backward_numba(dout, arg):
    """Inputs: dout, arg (B, C, H/2, W/2).  Returns dx (B, C, H, W): dout routed to each window's max
    (nowhere where arg is -1: relu_maxpool2x2_forward_numba's windows that ReLU blocks)."""
    B, C, H2, W2 = dout.shape
    dx = np.empty((B, C, 2 * H2, 2 * W2), dtype=dout.dtype)  # every element written once below
    for t in prange(B * C):
        n = t // C
        c = t - n * C
        for i in range(H2):
            for j in range(W2):
                a = arg[n, c, i, j]
                d = dout[n, c, i, j]
                dx[n, c, 2 * i, 2 * j] = d if a == 0 else 0
                dx[n, c, 2 * i, 2 * j + 1] = d if a == 1 else 0
                dx[n, c, 2 * i + 1, 2 * j] = d if a == 2 else 0
                dx[n, c, 2 * i + 1, 2 * j + 1] = d if a == 3 else 0
    return dx


relu_maxpool2x2_backward_numba = maxpool2x2_backward_numba


def relu_maxpool2x2_forward_numpy(x):
    """Reference for relu_maxpool2x2_forward_numba: maxpool of relu, with arg -1 where nothing passes."""
    out, arg = maxpool2x2_forward_numpy(np.maximum(x, 0).astype(x.dtype, copy=False))
    return out, np.where(out > 0, arg, -1).astype(np.int8)


def relu_maxpool2x2_backward_numpy(dout, arg):
    """Reference for relu_maxpool2x2_backward_numba."""
    return maxpool2x2_backward_numpy(np.where(arg >= 0, dout, 0).astype(dout.dtype), np.maximum(arg, 0))


def maxpool2x2_backward_numpy(dout, arg):
    """Reference for maxpool2x2_backward_numba."""
    B, C, H2, W2 = dout.shape
    d4 = np.zeros((B, C, H2, W2, 4), dtype=dout.dtype)
    np.put_along_axis(d4, arg.astype(np.intp)[..., None], dout[..., None], axis=-1)
    return d4.reshape(B, C, H2, W2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(B, C, 2 * H2, 2 * W2)
