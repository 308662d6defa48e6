"""numba.cuda kernels of the layers (GPU counterparts of refvbc/layers.py): dense and conv (valid,
stride 1), their variational versions with local reparameterization, ReLU, 2x2 max-pool and softmax
cross-entropy, forward and backward.

Shape legend (every device array is flat, C-order; the dims are passed as ints)
    B               batch size
    dense           x (B, I); theta, es = exp(log_sigma2), w (O, I); b (O,); out, eps, std, dv (B, O)
    conv            x (B, C, H, W); theta, es, w (F, C, KH, KW); b (F,);
                    out, eps, std, dv (B, F, OH, OW), OH = H - KH + 1, OW = W - KW + 1
    pool            x (B*C, H, W) -> out, arg (B*C, H/2, W/2); arg in 0..3 = position in the window
    logits          (B, K); y (B,) int labels

Formulas (docs/objective.md, "Variational layer"; the CPU reference is refvbc/layers.py):
    forward   m = x θᵀ + b (or conv(x, θ) + b),  v = (x⊙x)(exp s)ᵀ (or conv(x⊙x, exp s)),
              std = sqrt(v + 1e-8),  y = m + std ⊙ ε
    backward  dv = dy ⊙ ε / (2 std);  dθ = dyᵀ x;  d(log σ²) = exp(s) ⊙ (dvᵀ (x⊙x));  db = Σ dy;
              dx = dy θ + 2 x ⊙ (dv exp(s))                 (conv: the same sums over the windows)
Each thread computes one output element with float64 accumulators (one thread per output: no races,
deterministic); every kernel is a grid-stride loop. Backward kernels write new arrays, never dout.
"""

import math

import numpy as np
from numba import cuda

from .cuda_common import TPB, block_sum, launch

JITTER = 1e-8  # spec "Variational layer": sqrt(v + 1e-8)


# --------------------------------------------------------------------------------------------------
# elementwise helpers


@cuda.jit
def exp_kernel(s, es, n):
    """es = exp(s) (the variances exp(log σ²), computed once per step)."""
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        es[i] = math.exp(s[i])


@cuda.jit
def dv_kernel(dout, eps, std, dv, n):
    """dv = dout ⊙ ε / (2 std): gradient w.r.t. the variance v of a variational layer."""
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        dv[i] = dout[i] * eps[i] / (std[i] + std[i])


@cuda.jit
def relu_forward_kernel(x, out, n):
    """out = max(x, 0)."""
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        out[i] = x[i] if x[i] > 0 else 0


@cuda.jit
def relu_backward_kernel(dout, x, dx, n):
    """dx = dout where x > 0, else 0 (gradient 0 at the kink, as in layers.relu_backward)."""
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        dx[i] = dout[i] if x[i] > 0 else 0


@cuda.jit
def bias_grad_kernel(dout, db, B, O, P):
    """db[o] = Σ_b Σ_p dout[b, o, p]  (dout (B, O, P); P = 1 for dense, OH*OW for conv)."""
    for o in range(cuda.grid(1), O, cuda.gridsize(1)):
        acc = 0.0
        for b in range(B):
            base = (b * O + o) * P
            for p in range(P):
                acc += dout[base + p]
        db[o] = acc


# --------------------------------------------------------------------------------------------------
# dense


@cuda.jit
def dense_forward_kernel(x, w, bias, out, B, I, O):
    """out[b, o] = Σ_i x[b, i] w[o, i] + bias[o]."""
    for idx in range(cuda.grid(1), B * O, cuda.gridsize(1)):
        b = idx // O
        o = idx - b * O
        acc = 0.0
        for i in range(I):
            acc += x[b * I + i] * w[o * I + i]
        out[idx] = acc + bias[o]


@cuda.jit
def vdense_forward_kernel(x, theta, es, bias, eps, out, std, B, I, O):
    """Variational dense forward: m, v, std = sqrt(v + 1e-8), out = m + std ε (writes std for backward)."""
    for idx in range(cuda.grid(1), B * O, cuda.gridsize(1)):
        b = idx // O
        o = idx - b * O
        m = 0.0
        v = 0.0
        for i in range(I):
            xi = x[b * I + i]
            m += xi * theta[o * I + i]
            v += xi * xi * es[o * I + i]
        s = math.sqrt(v + JITTER)
        std[idx] = s
        out[idx] = m + bias[o] + s * eps[idx]


@cuda.jit
def dense_dweight_kernel(dout, x, dw, B, I, O):
    """dw[o, i] = Σ_b dout[b, o] x[b, i]."""
    for idx in range(cuda.grid(1), O * I, cuda.gridsize(1)):
        o = idx // I
        i = idx - o * I
        acc = 0.0
        for b in range(B):
            acc += dout[b * O + o] * x[b * I + i]
        dw[idx] = acc


@cuda.jit
def vdense_dweight_kernel(dout, dv, x, es, dtheta, dls, B, I, O):
    """dθ[o, i] = Σ_b dout[b, o] x[b, i];  d(log σ²)[o, i] = es[o, i] Σ_b dv[b, o] x[b, i]²."""
    for idx in range(cuda.grid(1), O * I, cuda.gridsize(1)):
        o = idx // I
        i = idx - o * I
        a1 = 0.0
        a2 = 0.0
        for b in range(B):
            xi = x[b * I + i]
            a1 += dout[b * O + o] * xi
            a2 += dv[b * O + o] * xi * xi
        dtheta[idx] = a1
        dls[idx] = es[idx] * a2


@cuda.jit
def dense_dx_kernel(dout, w, dx, B, I, O):
    """dx[b, i] = Σ_o dout[b, o] w[o, i]."""
    for idx in range(cuda.grid(1), B * I, cuda.gridsize(1)):
        b = idx // I
        i = idx - b * I
        acc = 0.0
        for o in range(O):
            acc += dout[b * O + o] * w[o * I + i]
        dx[idx] = acc


@cuda.jit
def vdense_dx_kernel(dout, dv, theta, es, x, dx, B, I, O):
    """dx[b, i] = Σ_o dout[b, o] θ[o, i] + 2 x[b, i] Σ_o dv[b, o] es[o, i]."""
    for idx in range(cuda.grid(1), B * I, cuda.gridsize(1)):
        b = idx // I
        i = idx - b * I
        a1 = 0.0
        a2 = 0.0
        for o in range(O):
            a1 += dout[b * O + o] * theta[o * I + i]
            a2 += dv[b * O + o] * es[o * I + i]
        dx[idx] = a1 + (x[idx] + x[idx]) * a2


# --------------------------------------------------------------------------------------------------
# conv (cross-correlation, valid, stride 1)


@cuda.jit
def conv_forward_kernel(x, w, bias, out, B, C, H, W, F, KH, KW):
    """out[b, f, p, q] = Σ_{c,i,j} x[b, c, p+i, q+j] w[f, c, i, j] + bias[f]."""
    OH = H - KH + 1
    OW = W - KW + 1
    for idx in range(cuda.grid(1), B * F * OH * OW, cuda.gridsize(1)):
        q = idx % OW
        r = idx // OW
        p = r % OH
        r = r // OH
        f = r % F
        b = r // F
        acc = 0.0
        for c in range(C):
            xb = ((b * C + c) * H + p) * W + q
            wb = ((f * C + c) * KH) * KW
            for i in range(KH):
                for j in range(KW):
                    acc += x[xb + i * W + j] * w[wb + i * KW + j]
        out[idx] = acc + bias[f]


@cuda.jit
def vconv_forward_kernel(x, theta, es, bias, eps, out, std, B, C, H, W, F, KH, KW):
    """Variational conv forward: m = conv(x, θ) + b, v = conv(x⊙x, es), out = m + sqrt(v + 1e-8) ε."""
    OH = H - KH + 1
    OW = W - KW + 1
    for idx in range(cuda.grid(1), B * F * OH * OW, cuda.gridsize(1)):
        q = idx % OW
        r = idx // OW
        p = r % OH
        r = r // OH
        f = r % F
        b = r // F
        m = 0.0
        v = 0.0
        for c in range(C):
            xb = ((b * C + c) * H + p) * W + q
            wb = ((f * C + c) * KH) * KW
            for i in range(KH):
                for j in range(KW):
                    xi = x[xb + i * W + j]
                    m += xi * theta[wb + i * KW + j]
                    v += xi * xi * es[wb + i * KW + j]
        s = math.sqrt(v + JITTER)
        std[idx] = s
        out[idx] = m + bias[f] + s * eps[idx]


@cuda.jit
def conv_dweight_kernel(dout, x, dw, B, C, H, W, F, KH, KW):
    """dw[f, c, i, j] = Σ_{b,p,q} dout[b, f, p, q] x[b, c, p+i, q+j]."""
    OH = H - KH + 1
    OW = W - KW + 1
    for idx in range(cuda.grid(1), F * C * KH * KW, cuda.gridsize(1)):
        j = idx % KW
        r = idx // KW
        i = r % KH
        r = r // KH
        c = r % C
        f = r // C
        acc = 0.0
        for b in range(B):
            db = (b * F + f) * OH * OW
            xb = ((b * C + c) * H + i) * W + j
            for p in range(OH):
                for q in range(OW):
                    acc += dout[db + p * OW + q] * x[xb + p * W + q]
        dw[idx] = acc


@cuda.jit
def vconv_dweight_kernel(dout, dv, x, es, dtheta, dls, B, C, H, W, F, KH, KW):
    """dθ = Σ dout x over the windows; d(log σ²) = es ⊙ Σ dv x² over the windows."""
    OH = H - KH + 1
    OW = W - KW + 1
    for idx in range(cuda.grid(1), F * C * KH * KW, cuda.gridsize(1)):
        j = idx % KW
        r = idx // KW
        i = r % KH
        r = r // KH
        c = r % C
        f = r // C
        a1 = 0.0
        a2 = 0.0
        for b in range(B):
            db = (b * F + f) * OH * OW
            xb = ((b * C + c) * H + i) * W + j
            for p in range(OH):
                for q in range(OW):
                    xi = x[xb + p * W + q]
                    a1 += dout[db + p * OW + q] * xi
                    a2 += dv[db + p * OW + q] * xi * xi
        dtheta[idx] = a1
        dls[idx] = es[idx] * a2


@cuda.jit
def conv_dx_kernel(dout, w, dx, B, C, H, W, F, KH, KW):
    """dx[b, c, h, w] = Σ_{f,i,j} dout[b, f, h-i, w-j] w[f, c, i, j] over valid output positions."""
    OH = H - KH + 1
    OW = W - KW + 1
    for idx in range(cuda.grid(1), B * C * H * W, cuda.gridsize(1)):
        col = idx % W
        r = idx // W
        row = r % H
        r = r // H
        c = r % C
        b = r // C
        acc = 0.0
        for f in range(F):
            db = (b * F + f) * OH * OW
            wb = (f * C + c) * KH * KW
            for i in range(KH):
                p = row - i
                if p < 0 or p >= OH:
                    continue
                for j in range(KW):
                    q = col - j
                    if q >= 0 and q < OW:
                        acc += dout[db + p * OW + q] * w[wb + i * KW + j]
        dx[idx] = acc


@cuda.jit
def vconv_dx_kernel(dout, dv, theta, es, x, dx, B, C, H, W, F, KH, KW):
    """dx = conv_transpose(dout, θ) + 2 x ⊙ conv_transpose(dv, es)."""
    OH = H - KH + 1
    OW = W - KW + 1
    for idx in range(cuda.grid(1), B * C * H * W, cuda.gridsize(1)):
        col = idx % W
        r = idx // W
        row = r % H
        r = r // H
        c = r % C
        b = r // C
        a1 = 0.0
        a2 = 0.0
        for f in range(F):
            db = (b * F + f) * OH * OW
            wb = (f * C + c) * KH * KW
            for i in range(KH):
                p = row - i
                if p < 0 or p >= OH:
                    continue
                for j in range(KW):
                    q = col - j
                    if q >= 0 and q < OW:
                        a1 += dout[db + p * OW + q] * theta[wb + i * KW + j]
                        a2 += dv[db + p * OW + q] * es[wb + i * KW + j]
        dx[idx] = a1 + (x[idx] + x[idx]) * a2


# --------------------------------------------------------------------------------------------------
# 2x2 max-pool, stride 2


@cuda.jit
def maxpool_forward_kernel(x, out, arg, BC, H, W):
    """out = max over each 2x2 window; arg = its position (0..3, row-major; ties -> the first)."""
    OH = H // 2
    OW = W // 2
    for idx in range(cuda.grid(1), BC * OH * OW, cuda.gridsize(1)):
        q = idx % OW
        r = idx // OW
        p = r % OH
        n = r // OH
        base = (n * H + 2 * p) * W + 2 * q
        best = x[base]
        k = 0
        if x[base + 1] > best:
            best = x[base + 1]
            k = 1
        if x[base + W] > best:
            best = x[base + W]
            k = 2
        if x[base + W + 1] > best:
            best = x[base + W + 1]
            k = 3
        out[idx] = best
        arg[idx] = k


@cuda.jit
def maxpool_backward_kernel(dout, arg, dx, BC, H, W):
    """dx = dout routed to the max of each window, 0 elsewhere (each thread writes its own window)."""
    OH = H // 2
    OW = W // 2
    for idx in range(cuda.grid(1), BC * OH * OW, cuda.gridsize(1)):
        q = idx % OW
        r = idx // OW
        p = r % OH
        n = r // OH
        base = (n * H + 2 * p) * W + 2 * q
        k = arg[idx]
        g = dout[idx]
        dx[base] = g if k == 0 else 0
        dx[base + 1] = g if k == 1 else 0
        dx[base + W] = g if k == 2 else 0
        dx[base + W + 1] = g if k == 3 else 0


# --------------------------------------------------------------------------------------------------
# softmax cross-entropy (spec "Loss": mean_b CE)


@cuda.jit
def softmax_ce_kernel(logits, y, dlogits, out, slot, B, K):
    """One block. out[slot] += Σ_b CE_b (float64; the caller divides by B);
    dlogits = (softmax(logits) - onehot(y)) / B, through the max-shifted log-softmax."""
    sh = cuda.shared.array(TPB, dtype=np.float64)
    tid = cuda.threadIdx.x
    acc = 0.0
    for b in range(tid, B, cuda.blockDim.x):
        mx = logits[b * K]
        for k in range(1, K):
            if logits[b * K + k] > mx:
                mx = logits[b * K + k]
        se = 0.0
        for k in range(K):
            se += math.exp(logits[b * K + k] - mx)
        lse = mx + math.log(se)
        lab = y[b]
        acc += lse - logits[b * K + lab]
        for k in range(K):
            pk = math.exp(logits[b * K + k] - lse)
            if k == lab:
                pk -= 1.0
            dlogits[b * K + k] = pk / B
    sh[tid] = acc
    block_sum(sh, tid)
    if tid == 0:
        out[slot] += sh[0]


# --------------------------------------------------------------------------------------------------
# launch wrappers (device arrays in, nothing returned; outputs are written into the given arrays):
# each is cuda_common.launch(kernel, its work count = its outputs, *args)


def exp(s, es):
    launch(exp_kernel, s.shape[0], s, es, s.shape[0])


def dv(dout, eps, std, out):
    launch(dv_kernel, dout.shape[0], dout, eps, std, out, dout.shape[0])


def relu_forward(x, out):
    launch(relu_forward_kernel, x.shape[0], x, out, x.shape[0])


def relu_backward(dout, x, dx):
    launch(relu_backward_kernel, x.shape[0], dout, x, dx, x.shape[0])


def bias_grad(dout, db, B, O, P):
    launch(bias_grad_kernel, O, dout, db, B, O, P)


def dense_forward(x, w, bias, out, B, I, O):
    launch(dense_forward_kernel, B * O, x, w, bias, out, B, I, O)


def vdense_forward(x, theta, es, bias, eps, out, std, B, I, O):
    launch(vdense_forward_kernel, B * O, x, theta, es, bias, eps, out, std, B, I, O)


def dense_dweight(dout, x, dw, B, I, O):
    launch(dense_dweight_kernel, O * I, dout, x, dw, B, I, O)


def vdense_dweight(dout, dv_, x, es, dtheta, dls, B, I, O):
    launch(vdense_dweight_kernel, O * I, dout, dv_, x, es, dtheta, dls, B, I, O)


def dense_dx(dout, w, dx, B, I, O):
    launch(dense_dx_kernel, B * I, dout, w, dx, B, I, O)


def vdense_dx(dout, dv_, theta, es, x, dx, B, I, O):
    launch(vdense_dx_kernel, B * I, dout, dv_, theta, es, x, dx, B, I, O)


def conv_forward(x, w, bias, out, B, C, H, W, F, KH, KW):
    launch(conv_forward_kernel, B * F * (H - KH + 1) * (W - KW + 1),
           x, w, bias, out, B, C, H, W, F, KH, KW)


def vconv_forward(x, theta, es, bias, eps, out, std, B, C, H, W, F, KH, KW):
    launch(vconv_forward_kernel, B * F * (H - KH + 1) * (W - KW + 1),
           x, theta, es, bias, eps, out, std, B, C, H, W, F, KH, KW)


def conv_dweight(dout, x, dw, B, C, H, W, F, KH, KW):
    launch(conv_dweight_kernel, F * C * KH * KW, dout, x, dw, B, C, H, W, F, KH, KW)


def vconv_dweight(dout, dv_, x, es, dtheta, dls, B, C, H, W, F, KH, KW):
    launch(vconv_dweight_kernel, F * C * KH * KW, dout, dv_, x, es, dtheta, dls, B, C, H, W, F, KH, KW)


def conv_dx(dout, w, dx, B, C, H, W, F, KH, KW):
    launch(conv_dx_kernel, B * C * H * W, dout, w, dx, B, C, H, W, F, KH, KW)


def vconv_dx(dout, dv_, theta, es, x, dx, B, C, H, W, F, KH, KW):
    launch(vconv_dx_kernel, B * C * H * W, dout, dv_, theta, es, x, dx, B, C, H, W, F, KH, KW)


def maxpool_forward(x, out, arg, BC, H, W):
    launch(maxpool_forward_kernel, BC * (H // 2) * (W // 2), x, out, arg, BC, H, W)


def maxpool_backward(dout, arg, dx, BC, H, W):
    launch(maxpool_backward_kernel, BC * (H // 2) * (W // 2), dout, arg, dx, BC, H, W)


def softmax_ce(logits, y, dlogits, out, slot, B, K):
    """out[slot] += Σ_b CE_b (one block); dlogits written."""
    softmax_ce_kernel[1, TPB](logits, y, dlogits, out, slot, B, K)
