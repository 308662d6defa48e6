"""Numba kernels for inference on sparse weights (CSC dense layers, entry lists of conv kernels), each beside
its NumPy twin (`*_numpy`), compared in tests/test_kernels_sparse.py.

Shape legend
    N            batch size
    D0           input features per image (784)
    U0, uw       kept input units and features per unit: lenet300 784 pixels x 1, lenet5 1 channel x 784
    L, Lc        dense layers / conv layers of a network
    O, C         rows (kept output units) and columns (kept inputs) of one dense layer's matrix
    E            stored non-zero weights of all dense (or all conv) layers together
    x            (N, D0) images, float32 or float64 (the dtype of the weight values)
    in_idx       (U0,) kept input units; unit u reads x[:, in_idx[u]*uw : (in_idx[u]+1)*uw]; the last U0
                 entries of the first stack's idx (U0 = C of its first layer)
    a stack      three arrays (meta, idx, vals), built by refvbc/compress/sparse_model.py:_pack:
    meta         int64 (L, 5) per dense layer: O, C, p0, b0, layout (0 sparse, 1 dense)
    idx          uint32: the entries' row (dense) or input offset (conv) idx[k] for k < E, then the pointers,
                 then (first stack) in_idx
    vals         the entries' values vals[k] for k < E, then the dense blocks, then the biases: layer l's
                 at vals[b0 + o]
    sparse       column c holds entries idx[p0+c] .. idx[p0+c+1] (CSC: the file's non-zero entries
                 regrouped by column); entry k: row idx[k], value vals[k]
    dense        the kept (O, C) sub-matrix, transposed: vals[p0 + c*O + o] = W[o, c]
    cmeta        int64 (Lc, 8) per conv layer: O, C, H, W (input channels and size), kh, kw, p0, b0; output
                 channel f holds entries cidx[p0+f] .. cidx[p0+f+1]
    cidx, cvals  entry k: a non-zero kernel weight cvals[k] of its output channel and its input offset
                 cidx[k] = c*H*W + i*W + j (input x[c, i, j] under the kernel's top-left output position)
    h (conv)     one image's feature map (C, H, W) flattened; after ReLU + 2x2 max-pool (O, H', W')
                 flattened, which is the (C, H, W) flatten order of the next dense layer's columns
    hT (dense)   (C, nb): the activations of nb images as columns (the batch runs along contiguous memory,
                 so one weight times one input row is a vectorized axpy over the batch)

Every hidden layer is followed by ReLU (conv layers: ReLU then 2x2 max-pool, which commute); the last
layer gives the logits. Each output starts at its bias and adds value * input entry by entry in stored
order (no fastmath), which is the order of the NumPy twins, so kernel and twin agree exactly (a kernel that
skips an input equal to 0 skips adding a signed zero, which changes no value).
"""

import numba
import numpy as np

from refvbc.kernels.conv import maxpool2x2_forward_numpy

_NJIT = dict(cache=True, nogil=True, error_model="numpy")
CHUNK = 256  # images per column block of the dense stack: its activations stay in cache


# ----------------------------------------------------------------------------------------------------
# dense layers (CSC or dense blocks), batch along columns
# ----------------------------------------------------------------------------------------------------

@numba.njit(**_NJIT)
def _accumulate_block(src, dst, nb, O, C, p0, dense, idx, vals):
    """One dense layer's products for the nb images held as columns of src (C, nb) into dst (O, nb).
    Column by column: input c adds W[o, c] * src[c] to each row o it has an entry in (CSC) or to every row
    (dense layout), so every output sums its entries in increasing column order. Row views d, s indexed
    by the loop variable t: contiguous, vectorized, no gathers."""
    for c in range(C):
        s = src[c]
        if dense:  # the kept dense sub-matrix, transposed: vals[p0 + c*O + o] = W[o, c]
            for o in range(O):
                v = vals[p0 + c * O + o]
                d = dst[o]
                for t in range(nb):
                    d[t] += v * s[t]
        else:  # CSC
            for k in range(idx[p0 + c], idx[p0 + c + 1]):
                v = vals[k]
                d = dst[idx[k]]
                for t in range(nb):
                    d[t] += v * s[t]


@numba.njit(**_NJIT)
def _accumulate_one(src, dst, nzc, O, C, p0, dense, idx, vals):
    """_accumulate_block for one image, on 1-D buffers (unit stride, so the dense-layout loop vectorizes).
    Only the inputs that are not 0 are visited (adding a signed zero changes no value): their columns are
    first listed in nzc (int, >= C) without a branch per input."""
    n = 0
    for c in range(C):
        nzc[n] = c
        n += src[c] != 0
    for i in range(n):
        c = nzc[i]
        xc = src[c]
        if dense:
            w = vals[p0 + c * O:p0 + (c + 1) * O]  # W[:, c], a view indexed by the loop variable
            for o in range(O):
                dst[o] += w[o] * xc
        else:
            for k in range(idx[p0 + c], idx[p0 + c + 1]):
                dst[idx[k]] += vals[k] * xc


@numba.njit(**_NJIT)
def _dense_stack_to_out(buf_a, buf_b, nb, n0, meta, idx, vals, out):
    """Run every dense layer on the nb images held as columns of buf_a[:, :nb] and write their logits to
    out[n0:n0+nb]. buf_a, buf_b: C-contiguous ping-pong buffers (D, nbmax); when nbmax is 1 they are
    used as flat vectors (the one-image path)."""
    src, dst = buf_a, buf_b
    one = buf_a.shape[1] == 1
    nzc = np.empty(buf_a.shape[0] if one else 0, dtype=np.intp)
    L = meta.shape[0]
    for l in range(L):
        O = meta[l, 0]
        b0 = meta[l, 3]
        for o in range(O):
            bv = vals[b0 + o]
            for t in range(nb):
                dst[o, t] = bv
        if one:
            _accumulate_one(src.reshape(src.size), dst.reshape(dst.size), nzc, O, meta[l, 1], meta[l, 2],
                            meta[l, 4], idx, vals)
        else:
            _accumulate_block(src, dst, nb, O, meta[l, 1], meta[l, 2], meta[l, 4], idx, vals)
        if l < L - 1:
            for o in range(O):
                for t in range(nb):
                    if dst[o, t] < 0:
                        dst[o, t] = 0
        src, dst = dst, src
    for t in range(nb):
        for o in range(out.shape[1]):
            out[n0 + t, o] = src[o, t]


@numba.njit(**_NJIT)
def _gather(x, n, in_idx, uw, dst):
    """dst[u*uw + q] = x[n, in_idx[u]*uw + q]: the kept input units of image n, side by side."""
    for u in range(in_idx.shape[0]):
        s0 = in_idx[u] * uw
        for q in range(uw):
            dst[u * uw + q] = x[n, s0 + q]


@numba.njit(**_NJIT)
def _stack_buffers(meta, C0, N, vals):
    """The ping-pong buffers of the dense stack for N images with C0 inputs: (D, nbmax) each, D the
    largest layer width, nbmax the images per block."""
    D = C0
    for l in range(meta.shape[0]):
        D = max(D, meta[l, 0])
    nbmax = max(min(CHUNK, N), 1)
    return np.empty((D, nbmax), dtype=vals.dtype), np.empty((D, nbmax), dtype=vals.dtype)


@numba.njit(**_NJIT)
def mlp_forward_numba(x, meta, idx, vals, out):
    """Logits of an all-dense network (lenet300), one call for the whole forward, in blocks of CHUNK
    images.

    Inputs:  x (N, D0), vals' dtype; the stack (meta, idx, vals) as in the legend, idx ending with in_idx
             (uw = 1); out (N, O_last), vals' dtype, receives the logits (passed in: returning an array
             costs about a microsecond at batch 1).
    """
    N = x.shape[0]
    in_idx = idx[idx.shape[0] - meta[0, 1]:]
    buf_a, buf_b = _stack_buffers(meta, in_idx.shape[0], N, vals)
    for n0 in range(0, N, buf_a.shape[1]):
        nb = min(buf_a.shape[1], N - n0)
        for t in range(nb):
            _gather(x, n0 + t, in_idx, 1, buf_a[:, t])
        _dense_stack_to_out(buf_a, buf_b, nb, n0, meta, idx, vals, out)


def dense_stack_numpy(hT, meta, idx, vals):
    """Reference for the dense stack: hT (C0, N) -> logits (O_last, N), adding column by column in stored
    order as the kernel does (CSC: np.add.at, which adds entry by entry)."""
    h = hT
    L = meta.shape[0]
    for l in range(L):
        O, C, p0, b0, dense = (int(v) for v in meta[l])
        out = np.repeat(vals[b0:b0 + O, None], h.shape[1], axis=1)
        if dense:
            wT = vals[p0:p0 + C * O].reshape(C, O)
            for c in range(C):
                out += wT[c][:, None] * h[c][None, :]
        else:
            cp = idx[p0:p0 + C + 1].astype(np.int64)
            k = slice(int(cp[0]), int(cp[-1]))
            np.add.at(out, idx[k], vals[k, None] * h[np.repeat(np.arange(C), np.diff(cp))])
        h = np.maximum(out, 0) if l < L - 1 else out
    return h


def mlp_forward_numpy(x, meta, idx, vals):
    """Reference for mlp_forward_numba (the blocking changes no result); returns the logits (N, O_last)."""
    in_idx = idx[idx.size - int(meta[0, 1]):]
    return np.ascontiguousarray(dense_stack_numpy(x[:, in_idx].T, meta, idx, vals).T)


# ----------------------------------------------------------------------------------------------------
# conv layers: sparse kernels over one image, then the dense stack
# ----------------------------------------------------------------------------------------------------

def conv_geometry(cmeta_row):
    """(O, C, H, W, kh, kw, OH, OW, PH, PW) of one conv layer's meta row (PH, PW: after the 2x2 pool)."""
    O, C, H, W, kh, kw = (int(v) for v in cmeta_row[:6])
    OH, OW = H - kh + 1, W - kw + 1
    return O, C, H, W, kh, kw, OH, OW, OH // 2, OW // 2


@numba.njit(**_NJIT)
def _conv_relu_pool(src, dst, acc, m, cidx, cvals):
    """One conv layer on one image: src (C*H*W,) -> dst (O*PH*PW,), through acc (>= OH*W,).
    acc holds the output map in rows of W (not OW) positions: then output (oh, ow) reads src[off + oh*W +
    ow] for every kernel entry, so one entry updates the P = (OH-1)*W + OW consecutive positions in one
    contiguous (vectorized) loop; the W - OW extra positions per row are computed and never read."""
    O = m[0]
    W = m[3]
    OH = m[2] - m[4] + 1
    OW = W - m[5] + 1
    p0 = m[6]
    b0 = m[7]
    PH = OH // 2
    PW = OW // 2
    P = (OH - 1) * W + OW
    for f in range(O):
        bv = cvals[b0 + f]
        for p in range(P):
            acc[p] = bv
        for k in range(cidx[p0 + f], cidx[p0 + f + 1]):
            v = cvals[k]
            win = src[cidx[k]:cidx[k] + P]  # a view indexed by the loop variable: no gathers
            for p in range(P):
                acc[p] += v * win[p]
        d0 = f * PH * PW
        for i in range(PH):
            r0 = 2 * i * W
            r1 = r0 + W
            for j in range(PW):
                best = max(max(acc[r0 + 2 * j], acc[r0 + 2 * j + 1]), max(acc[r1 + 2 * j], acc[r1 + 2 * j + 1]))
                dst[d0 + i * PW + j] = best if best > 0 else 0


@numba.njit(**_NJIT)
def convnet_forward_numba(x, uw, cmeta, cidx, cvals, meta, idx, vals, out):
    """Logits of a conv network (lenet5), one call for the whole forward.

    Inputs:  x (N, D0), vals' dtype; uw; the conv stack (cmeta, cidx, cvals), cidx ending with in_idx, and
             the dense stack (meta, idx, vals) as in the legend; out (N, O_last) receives the logits.
    """
    N = x.shape[0]
    in_idx = cidx[cidx.shape[0] - cmeta[0, 1]:]
    Lc = cmeta.shape[0]
    U0 = in_idx.shape[0]
    S = U0 * uw  # largest flattened map and largest conv pre-activation plane
    A = 1
    for l in range(Lc):
        O = cmeta[l, 0]
        OH = cmeta[l, 2] - cmeta[l, 4] + 1
        OW = cmeta[l, 3] - cmeta[l, 5] + 1
        S = max(S, O * (OH // 2) * (OW // 2))
        A = max(A, OH * cmeta[l, 3])
    cur = np.zeros(max(S, 1), dtype=vals.dtype)
    nxt = np.zeros(max(S, 1), dtype=vals.dtype)
    acc = np.empty(A, dtype=vals.dtype)
    F = meta[0, 1]  # columns of the first dense layer = the flattened last map
    buf_a, buf_b = _stack_buffers(meta, F, N, vals)
    nbmax = buf_a.shape[1]
    for n0 in range(0, N, nbmax):
        nb = min(nbmax, N - n0)
        for t in range(nb):
            _gather(x, n0 + t, in_idx, uw, cur)
            h, g = cur, nxt
            for l in range(Lc):
                _conv_relu_pool(h, g, acc, cmeta[l], cidx, cvals)
                h, g = g, h
            for d in range(F):
                buf_a[d, t] = h[d]
        _dense_stack_to_out(buf_a, buf_b, nb, n0, meta, idx, vals, out)


def conv_relu_pool_numpy(h, cmeta_row, cidx, cvals):
    """Reference for one conv layer: h (N, C, H, W) -> relu + 2x2 max-pool (N, O, PH, PW), adding the
    kernel entries one by one in stored order."""
    O, C, H, W, kh, kw, OH, OW, _, _ = conv_geometry(cmeta_row)
    p0, b0 = int(cmeta_row[6]), int(cmeta_row[7])
    out = np.empty((h.shape[0], O, OH, OW), dtype=cvals.dtype)
    for f in range(O):
        acc = np.full((h.shape[0], OH, OW), cvals[b0 + f], dtype=cvals.dtype)
        for k in range(int(cidx[p0 + f]), int(cidx[p0 + f + 1])):
            c, r = divmod(int(cidx[k]), H * W)
            i, j = divmod(r, W)
            acc += cvals[k] * h[:, c, i:i + OH, j:j + OW]
        out[:, f] = acc
    return maxpool2x2_forward_numpy(np.maximum(out, 0))[0]


def convnet_forward_numpy(x, uw, cmeta, cidx, cvals, meta, idx, vals):
    """Reference for convnet_forward_numba."""
    N = x.shape[0]
    in_idx = cidx[cidx.size - int(cmeta[0, 1]):]
    units = x.reshape(N, -1, uw)[:, in_idx]  # (N, U0, uw)
    if cmeta.shape[0]:
        _, _, H, W = (int(v) for v in cmeta[0, :4])
        h = units.reshape(N, -1, H, W)
    for l in range(cmeta.shape[0]):
        h = conv_relu_pool_numpy(h, cmeta[l], cidx, cvals)
    return np.ascontiguousarray(dense_stack_numpy(h.reshape(N, -1).T, meta, idx, vals).T)
