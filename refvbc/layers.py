"""Layer forward/backward pairs: dense, conv, their variational (local reparameterization) versions,
ReLU, 2x2 max-pooling, flatten and softmax cross-entropy.

Shape legend
    B                batch size
    x (dense)        (B, in);           w, theta, log_sigma2 (out, in);   b (out,);   out, eps (B, out)
    x (conv)         (B, C, H, W);      w, theta, log_sigma2 (F, C, kh, kw);   b (F,)
    out, eps (conv)  (B, F, OH, OW),    OH = H - kh + 1, OW = W - kw + 1 (valid, stride 1)
    logits           (B, K) ;  y (B,) integer labels in [0, K)

Conventions (CS231n style): ``*_forward(...) -> (out, cache)``, ``*_backward(dout, cache) -> grads``.
Backward passes return new arrays and never mutate dout. Noise ε is an argument, never drawn here.
All functions are dtype-preserving: float32 in, float32 out; float64 in, float64 out. Every array argument
of one call must share one floating dtype (float32 or float64); anything else raises ValueError.

Variational layers follow docs/objective.md, "Variational layer (training), local
reparameterization":  m = x θᵀ + b (dense) or conv(x, θ) + b (conv),  v = (x⊙x)(exp s)ᵀ or
conv(x⊙x, exp s),  y = m + sqrt(v + 1e-8) ⊙ ε.

Convolutions (valid, stride 1) run in the (K, B*P) "columns" layout of refvbc/kernels/conv.py: the batch
is cut into parts of PART_IMAGES images (a function of B only), and each part, on one thread of
refvbc.parallel, does one im2col pass that writes the columns of x and of x⊙x (im2col(x⊙x) =
im2col(x)⊙im2col(x)), the GEMMs in single-threaded BLAS (np.dot into reused buffers), and one fused numba
pass for the output (bias, sqrt(v + 1e-8), ε); backward likewise (one fused pass dout -> dm, dv, the
weight-gradient and dx GEMMs, one col2im pass), the parts' weight gradients summed in part order. The
deterministic conv takes the same path without the variance half. Convolutions whose receptive field
has at most CONV_DIRECT_MAX_K weights (LeNet-5's conv1, 25) skip the columns: per part, one direct
kernel (refvbc/kernels/conv_direct.py) computes the output with the bias, sqrt(v + 1e-8) and ε, and one
computes the weight, variance and bias gradients (and dx when asked). When large, the deterministic dense
layers split their GEMMs into DENSE_PARTS row ranges; the variational ones run the mean path and the
variance path as the two parts (each GEMM whole). Results do not depend on the thread count.
Optional workspace: conv2d_forward / vconv2d_forward take ws (a dict) to keep their buffers from call to
call (the training step passes one per layer); without it every call allocates afresh.
"""

import numpy as np

from refvbc import parallel as _par
from refvbc.kernels import conv as _k
from refvbc.kernels import conv_direct as _kd

# images per part of a batch in the conv layers (parts run on the threads of refvbc.parallel)
PART_IMAGES = 25
# parts of the dense layers' GEMMs, for layers with at least DENSE_MIN_WORK weights x rows: row ranges
# (deterministic layers) or the mean and variance paths (variational layers)
DENSE_PARTS = 2
DENSE_MIN_WORK = 2_000_000
# the variational dense layers run their two paths on two threads from this many weights x rows on
# (LeNet-300-100's fc2, 3M, runs faster on one thread: measured 0.154 against 0.179 ms forward)
VDENSE_MIN_WORK = 10_000_000

# convolutions with a receptive field of at most this many weights (C*kh*kw; LeNet-5's conv1: 25) run as
# direct convolutions (refvbc/kernels/conv_direct.py) instead of im2col + GEMM: measured on conv1, batch
# 100, float32, one thread: forward 4.2 against 6.9 ms, backward 3.8 against 4.7 ms (variational)
CONV_DIRECT_MAX_K = 32

_JITTER = 1e-8  # spec "Variational layer": sqrt(v + 1e-8)


# ----------------------------------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------------------------------

def _check_dtypes(fn, **arrays):
    """All arrays float32 or all float64; returns the common dtype."""
    dtype = None
    for name, a in arrays.items():
        if not isinstance(a, np.ndarray):
            raise ValueError(f"{fn}: {name} must be a numpy array, got {type(a).__name__}")
        if a.dtype not in (np.float32, np.float64):
            raise ValueError(f"{fn}: {name} has dtype {a.dtype}, expected float32 or float64")
        if dtype is None:
            dtype, first = a.dtype, name
        elif a.dtype != dtype:
            raise ValueError(f"{fn}: {name} has dtype {a.dtype} but {first} has dtype {dtype}; "
                             "all arrays must share one dtype")
    return dtype


def _check_ndim(fn, name, a, ndim, legend):
    if a.ndim != ndim:
        raise ValueError(f"{fn}: {name} must be {ndim}-D {legend}, got shape {a.shape}")


def _check_shape(fn, name, a, expected):
    if a.shape != tuple(expected):
        raise ValueError(f"{fn}: {name} has shape {a.shape}, expected {tuple(expected)}")


# ----------------------------------------------------------------------------------------------------
# dense
# ----------------------------------------------------------------------------------------------------

def dense_forward(x, w, b):
    """Affine layer out = x wᵀ + b.

    Inputs:  x (B, in); w (out, in); b (out,).
    Returns: out (B, out); cache.
    """
    fn = "dense_forward"
    _check_dtypes(fn, x=x, w=w, b=b)
    _check_ndim(fn, "x", x, 2, "(B, in)")
    _check_ndim(fn, "w", w, 2, "(out, in)")
    _check_shape(fn, "w", w, (w.shape[0], x.shape[1]))
    _check_shape(fn, "b", b, (w.shape[0],))
    x = np.ascontiguousarray(x)
    out = np.empty((x.shape[0], w.shape[0]), dtype=x.dtype)

    def part(r):
        np.dot(x[r], w.T, out=out[r])
        out[r] += b

    _dense_parts(part, x.shape[0], w.size)
    return out, (x, w)


def dense_backward(dout, cache, need_dx=True):
    """Inputs:  dout (B, out); cache from dense_forward; need_dx: compute dx (False for the first layer).
    Returns: dx (B, in) or None, dw (out, in), db (out,).
    """
    x, w = cache
    fn = "dense_backward"
    _check_dtypes(fn, dout=dout, x=x)
    _check_shape(fn, "dout", dout, (x.shape[0], w.shape[0]))
    dw = np.empty(w.shape, dtype=w.dtype)
    dx = np.empty(x.shape, dtype=x.dtype) if need_dx else None
    _dense_parts(lambda r: np.dot(dout[:, r].T, x, out=dw[r]), w.shape[0], w.size)
    if need_dx:
        _dense_parts(lambda r: np.dot(dout[r], w, out=dx[r]), x.shape[0], w.size)
    return dx, dw, dout.sum(axis=0)


def vdense_forward(x, theta, log_sigma2, b, eps):
    """Variational dense layer with local reparameterization (spec "Variational layer"):
    m = x θᵀ + b, v = (x⊙x)(exp s)ᵀ, y = m + sqrt(v + 1e-8) ⊙ ε.

    Inputs:  x (B, in); theta, log_sigma2 (out, in); b (out,); eps (B, out) standard-normal noise.
    Returns: y (B, out); cache.
    """
    fn = "vdense_forward"
    dtype = _check_dtypes(fn, x=x, theta=theta, log_sigma2=log_sigma2, b=b, eps=eps)
    _check_ndim(fn, "x", x, 2, "(B, in)")
    _check_ndim(fn, "theta", theta, 2, "(out, in)")
    _check_shape(fn, "theta", theta, (theta.shape[0], x.shape[1]))
    _check_shape(fn, "log_sigma2", log_sigma2, theta.shape)
    _check_shape(fn, "b", b, (theta.shape[0],))
    _check_shape(fn, "eps", eps, (x.shape[0], theta.shape[0]))
    x = np.ascontiguousarray(x)
    B, n_out = eps.shape
    y = np.empty((B, n_out), dtype=dtype)
    std = np.empty((B, n_out), dtype=dtype)
    jitter = dtype.type(_JITTER)
    paths = [None, None]

    def part(i):  # part 0: the mean path's GEMM; part 1: exp(s), x⊙x and the variance path's GEMM
        if i == 0:
            paths[0] = np.dot(x, theta.T)
        else:
            es, x_sq = np.exp(log_sigma2), x * x
            paths[1] = (np.dot(x_sq, es.T), es, x_sq)

    _dense_paths(part, theta.size * B)
    m, (v, es, x_sq) = paths
    _k.vdense_output_into(m, v, b, np.ascontiguousarray(eps), jitter, y, std)  # y = m + b + sqrt(v + 1e-8) ⊙ ε
    return y, (x, x_sq, theta, es, eps, std)


def vdense_backward(dout, cache, need_dx=True):
    """Gradients of vdense_forward. With dm = dy and dv = dy ⊙ ε / (2 std):
    dθ = dmᵀ x, d(log σ²) = exp(s) ⊙ (dvᵀ (x⊙x)), db = Σ_B dm, dx = dm θ + 2x ⊙ (dv exp(s)).

    Inputs:  dout (B, out); cache; need_dx.
    Returns: dx (B, in) or None, dtheta (out, in), dlog_sigma2 (out, in), db (out,).
    """
    x, x_sq, theta, es, eps, std = cache
    fn = "vdense_backward"
    _check_dtypes(fn, dout=dout, x=x)
    _check_shape(fn, "dout", dout, eps.shape)
    B, n_out = dout.shape
    dout = np.ascontiguousarray(dout)
    dv = np.empty_like(dout)
    _k.vdense_dv_into(dout, eps, std, dv)  # dv = dout ⊙ ε / (2 std)
    dtheta = np.empty(theta.shape, dtype=theta.dtype)
    dlog_sigma2 = np.empty(theta.shape, dtype=theta.dtype)
    dx = np.empty(x.shape, dtype=x.dtype) if need_dx else None
    dx_v = [None]

    def part(i):  # part 0: the mean path's GEMMs (dθ, dx); part 1: the variance path's (d log σ², dx)
        if i == 0:
            np.dot(dout.T, x, out=dtheta)
            if need_dx:
                np.dot(dout, theta, out=dx)
        else:
            np.dot(dv.T, x_sq, out=dlog_sigma2)
            np.multiply(dlog_sigma2, es, out=dlog_sigma2)
            if need_dx:
                dx_v[0] = np.dot(dv, es)

    _dense_paths(part, theta.size * B)
    if need_dx:
        dx += 2 * x * dx_v[0]
    return dx, dtheta, dlog_sigma2, dout.sum(axis=0)


def _dense_parts(part, n, work):
    """Run part(rows) over DENSE_PARTS row ranges of n rows when the layer is large (work = weights),
    else over all rows at once (a function of the shapes only, never of the thread count)."""
    parts = _par.split(n, DENSE_PARTS if work * n >= DENSE_MIN_WORK else 1)
    _par.run_parts(lambda i: part(slice(*parts[i])), len(parts))


def _dense_paths(part, work):
    """Run part(0) (mean path) and part(1) (variance path) of a variational dense layer: on two threads
    when the layer is large (work = weights x rows >= VDENSE_MIN_WORK), else one after the other. Each
    GEMM runs whole on one thread, so the results do not depend on the thread count (and a whole GEMM
    with the batch's B rows runs ~25% faster in BLAS than two halves of B/2 rows, measured for fc1)."""
    if work >= VDENSE_MIN_WORK:
        _par.run_parts(part, 2)
    else:
        part(0)
        part(1)


# ----------------------------------------------------------------------------------------------------
# conv (valid, stride 1)
# ----------------------------------------------------------------------------------------------------

def _check_conv_args(fn, x, w, b):
    _check_ndim(fn, "x", x, 4, "(B, C, H, W)")
    _check_ndim(fn, "weight", w, 4, "(F, C, kh, kw)")
    B, C, H, W = x.shape
    F, Cw, kh, kw = w.shape
    if Cw != C:
        raise ValueError(f"{fn}: weight has shape {w.shape}, expected (F, {C}, kh, kw) to match x channels "
                         f"(x shape {x.shape})")
    if kh < 1 or kw < 1 or kh > H or kw > W:
        raise ValueError(f"{fn}: kernel {kh}x{kw} does not fit a valid convolution of x with shape {x.shape}")
    _check_shape(fn, "b", b, (F,))
    return B, C, H, W, F, kh, kw, H - kh + 1, W - kw + 1


def _buf(ws, key, shape, dtype):
    """A (F, N)-style scratch array: fresh without a workspace, else the one kept in ws[key] (reused across
    steps when shape and dtype match)."""
    if ws is None:
        return np.empty(shape, dtype=dtype)
    a = ws.get(key)
    if a is None or a.shape != shape or a.dtype != dtype:
        a = ws[key] = np.empty(shape, dtype=dtype)
    return a


def _conv_parts(B):
    """Image ranges of the parts of a batch (PART_IMAGES images each; a function of B only)."""
    return _par.split(B, -(-B // PART_IMAGES))


def _conv_forward(fn, x, w, es2, b, eps, ws):
    """Shared forward of conv2d_forward (es2, eps None) and vconv2d_forward: per part of the batch, one
    im2col pass (x and x⊙x columns), the GEMMs w2 @ colsT (and exp(s) @ colsT_sq), one fused output pass."""
    B, C, H, W, F, kh, kw, OH, OW = _check_conv_args(fn, x, w, b)
    dtype = x.dtype
    x = np.ascontiguousarray(x)
    b = np.ascontiguousarray(b)
    w2 = np.ascontiguousarray(w).reshape(F, -1)
    K, P = w2.shape[1], OH * OW
    var = es2 is not None
    parts = _conv_parts(B)
    y = _buf(ws, "y", (B, F, OH, OW), dtype)
    std = _buf(ws, "std", (B, F, OH, OW) if var else (0, 0, 0, 0), dtype)
    jitter = dtype.type(_JITTER)
    if var:
        eps = np.ascontiguousarray(eps)
    if K <= CONV_DIRECT_MAX_K:
        def part_direct(i):  # without var, the empty std stands in for eps and w2 for exp(s)
            s, e = parts[i]
            _kd.conv_direct_forward_into(x[s:e], w2, es2 if var else w2, b, (eps if var else std)[s:e], jitter,
                                         kh, kw, var, y[s:e], std[s:e])

        _par.run_parts(part_direct, len(parts))
        return y, (x, w2, es2, eps, std, None, parts, w.shape, ws)
    cols = [None] * len(parts)

    def part(i):
        s, e = parts[i]
        n = (e - s) * P
        colsT = _buf(ws, ("colsT", i), (K, n), dtype)
        colsT_sq = _buf(ws, ("colsT_sq", i), (K if var else 0, n), dtype)
        _k.im2col_t_into(x[s:e], kh, kw, colsT, colsT_sq, var)
        m_t = np.dot(w2, colsT, out=_buf(ws, ("m_t", i), (F, n), dtype))
        if var:
            v_t = np.dot(es2, colsT_sq, out=_buf(ws, ("v_t", i), (F, n), dtype))
            _k.vconv_output_t_into(m_t, v_t, b, eps[s:e], jitter, y[s:e], std[s:e])
        else:
            _k.conv_output_t_into(m_t, b, y[s:e])
        cols[i] = (colsT, colsT_sq)

    _par.run_parts(part, len(parts))
    return y, (x, w2, es2, eps, std, cols, parts, w.shape, ws)


def _conv_backward(fn, dout, cache, need_dx):
    """Shared backward of conv2d_backward and vconv2d_backward (see their docstrings); per part: one fused
    pass dout -> (dm, dv) columns, the weight-gradient GEMMs, the dx GEMMs and one col2im pass; the parts'
    weight gradients are summed in part order."""
    x, w2, es2, eps, std, cols, parts, w_shape, ws = cache
    _check_dtypes(fn, dout=dout, x=x)
    B, _, H, W = x.shape
    F, _, kh, kw = w_shape
    _check_shape(fn, "dout", dout, (B, F, H - kh + 1, W - kw + 1))
    dtype = x.dtype
    var = es2 is not None
    dout = np.ascontiguousarray(dout)
    P = dout.shape[2] * dout.shape[3]
    K = w2.shape[1]
    dx = np.empty(x.shape, dtype=dtype) if need_dx else None
    if cols is None:  # the direct path of _conv_forward
        return _conv_direct_backward(dout, x, w2, es2, eps, std, parts, w_shape, need_dx, dx)
    no_eps = np.empty((0,), dtype=dtype)

    def part(i):
        s, e = parts[i]
        n = (e - s) * P
        colsT, colsT_sq = cols[i]
        dm = _buf(ws, ("dm", i), (F, n), dtype)
        dv = _buf(ws, ("dv", i), (F if var else 0, n), dtype)
        _k.vconv_dout_t_into(dout[s:e], eps[s:e] if var else no_eps, std[s:e] if var else no_eps, dm, dv)
        gw = np.dot(colsT, dm.T)                     # (K, F): this orientation runs ~25% faster in BLAS
        gs = np.dot(colsT_sq, dv.T) if var else None
        gb = dm.sum(axis=1)
        if need_dx:
            dcolsT = np.dot(w2.T, dm, out=_buf(ws, ("dcolsT", i), (K, n), dtype))
            dcolsT_sq = np.dot(es2.T, dv, out=_buf(ws, ("dcolsT_sq", i), (K, n), dtype)) if var else dcolsT
            _k.col2im_t_into(dcolsT, dcolsT_sq, x[s:e], kh, kw, var, dx[s:e])
        return gw, gs, gb

    gw, gs, gb = _sum_parts(_par.run_parts(part, len(parts)), var)
    return (dx, np.ascontiguousarray(gw.T).reshape(w_shape), (es2 * gs.T).reshape(w_shape) if var else None,
            gb)


def _sum_parts(res, var):
    """The parts' (gw, gs, gb) summed in part order (into the first part's arrays)."""
    gw, gs, gb = res[0]
    for r in res[1:]:
        gw += r[0]
        gb += r[2]
        if var:
            gs += r[1]
    return gw, gs, gb


def _conv_direct_backward(dout, x, w2, es2, eps, std, parts, w_shape, need_dx, dx):
    """Backward of the direct path: per part, conv_direct_backward_into writes the part's weight, variance
    and bias gradients (summed here in part order) and its slice of dx."""
    F, _, kh, kw = w_shape
    var = es2 is not None
    dtype = x.dtype
    no4 = np.empty((0, 0, 0, 0), dtype=dtype)  # stands in for eps, std (not var) and dx (not need_dx)

    def part(i):
        s, e = parts[i]
        gw = np.empty(w2.shape, dtype=dtype)
        gs = np.empty(w2.shape if var else (0, 0), dtype=dtype)
        gb = np.empty(F, dtype=dtype)
        _kd.conv_direct_backward_into(x[s:e], dout[s:e], eps[s:e] if var else no4, std[s:e] if var else no4,
                                      w2, es2 if var else w2, kh, kw, var, need_dx, gw, gs, gb,
                                      dx[s:e] if need_dx else no4)
        return gw, gs, gb

    gw, gs, gb = _sum_parts(_par.run_parts(part, len(parts)), var)
    return dx, gw.reshape(w_shape), (es2 * gs).reshape(w_shape) if var else None, gb


def conv2d_forward(x, w, b, ws=None):
    """Convolution (cross-correlation, PyTorch conv2d semantics), valid padding, stride 1.

    Inputs:  x (B, C, H, W); w (F, C, kh, kw); b (F,); ws: optional workspace dict whose buffers are reused
             from call to call (the output and the cache then live in it until the next call with ws).
    Returns: out (B, F, OH, OW); cache.
    """
    fn = "conv2d_forward"
    _check_dtypes(fn, x=x, w=w, b=b)
    return _conv_forward(fn, x, w, None, b, None, ws)


def conv2d_backward(dout, cache, need_dx=True):
    """Inputs:  dout (B, F, OH, OW); cache from conv2d_forward; need_dx.
    Returns: dx (B, C, H, W) or None, dw (F, C, kh, kw), db (F,).
    """
    dx, dw, _, db = _conv_backward("conv2d_backward", dout, cache, need_dx)
    return dx, dw, db


def vconv2d_forward(x, theta, log_sigma2, b, eps, ws=None):
    """Variational convolution with local reparameterization (spec "Variational layer"):
    m = conv(x, θ) + b, v = conv(x⊙x, exp s), y = m + sqrt(v + 1e-8) ⊙ ε.
    The columns of x⊙x are the squares of the columns of x (one im2col pass for both paths).

    Inputs:  x (B, C, H, W); theta, log_sigma2 (F, C, kh, kw); b (F,); eps (B, F, OH, OW); ws as in
             conv2d_forward.
    Returns: y (B, F, OH, OW); cache.
    """
    fn = "vconv2d_forward"
    _check_dtypes(fn, x=x, theta=theta, log_sigma2=log_sigma2, b=b, eps=eps)
    B, C, H, W, F, kh, kw, OH, OW = _check_conv_args(fn, x, theta, b)
    _check_shape(fn, "log_sigma2", log_sigma2, theta.shape)
    _check_shape(fn, "eps", eps, (B, F, OH, OW))
    es2 = np.exp(log_sigma2).reshape(F, -1)
    return _conv_forward(fn, x, theta, es2, b, eps, ws)


def vconv2d_backward(dout, cache, need_dx=True):
    """Gradients of vconv2d_forward. With dm = dy and dv = dy ⊙ ε / (2 std), in the columns layout (F, B*P):
    dθ = dm colsTᵀ, d(log σ²) = exp(s) ⊙ (dv colsT_sqᵀ), db = Σ dm,
    dx = col2im(θᵀ dm) + 2x ⊙ col2im(exp(s)ᵀ dv).

    Inputs:  dout (B, F, OH, OW); cache; need_dx.
    Returns: dx (B, C, H, W) or None, dtheta (F, C, kh, kw), dlog_sigma2 (F, C, kh, kw), db (F,).
    """
    return _conv_backward("vconv2d_backward", dout, cache, need_dx)


# ----------------------------------------------------------------------------------------------------
# ReLU, max-pool, flatten
# ----------------------------------------------------------------------------------------------------

def relu_forward(x):
    """Inputs: x, any shape.  Returns: out = max(x, 0) (same shape), cache."""
    _check_dtypes("relu_forward", x=x)
    return np.maximum(x, 0), x


def relu_backward(dout, cache):
    """Inputs: dout (shape of x); cache.  Returns: dx = dout where x > 0, else 0 (gradient 0 at the kink)."""
    x = cache
    _check_dtypes("relu_backward", dout=dout, x=x)
    _check_shape("relu_backward", "dout", dout, x.shape)
    return _k.relu_backward_numba(np.ascontiguousarray(dout).reshape(-1),
                                  np.ascontiguousarray(x).reshape(-1)).reshape(x.shape)


def _pool_forward(fn, x, kernel):
    _check_dtypes(fn, x=x)
    _check_ndim(fn, "x", x, 4, "(B, C, H, W)")
    if x.shape[2] % 2 or x.shape[3] % 2:
        raise ValueError(f"{fn}: x has shape {x.shape}, expected even H and W")
    out, arg = kernel(np.ascontiguousarray(x))
    return out, (arg, x.shape)


def _pool_backward(fn, dout, cache):
    arg, x_shape = cache
    _check_dtypes(fn, dout=dout)
    _check_shape(fn, "dout", dout, arg.shape)
    return _k.maxpool2x2_backward_numba(np.ascontiguousarray(dout), arg)


def maxpool2x2_forward(x):
    """2x2 max-pooling, stride 2 (numba kernel; ties go to the first maximum in row-major order).

    Inputs:  x (B, C, H, W), H and W even.
    Returns: out (B, C, H/2, W/2); cache.
    """
    return _pool_forward("maxpool2x2_forward", x, _k.maxpool2x2_forward_numba)


def maxpool2x2_backward(dout, cache):
    """Inputs: dout (B, C, H/2, W/2); cache.  Returns: dx (B, C, H, W)."""
    return _pool_backward("maxpool2x2_backward", dout, cache)


def relu_maxpool2x2_forward(x):
    """ReLU then 2x2 max-pooling, stride 2, in one numba pass (what every conv layer but the last is
    followed by): out = maxpool2x2(relu(x)), with the same routing of the gradient.

    Inputs:  x (B, C, H, W), H and W even.
    Returns: out (B, C, H/2, W/2); cache.
    """
    return _pool_forward("relu_maxpool2x2_forward", x, _k.relu_maxpool2x2_forward_numba)


def relu_maxpool2x2_backward(dout, cache):
    """Inputs: dout (B, C, H/2, W/2); cache.  Returns: dx (B, C, H, W) (0 where ReLU or the pool block)."""
    return _pool_backward("relu_maxpool2x2_backward", dout, cache)


def flatten_forward(x):
    """Inputs: x (B, C, H, W).  Returns: out (B, C*H*W) in (C, H, W) order (spec "Architectures"), cache."""
    fn = "flatten_forward"
    _check_dtypes(fn, x=x)
    _check_ndim(fn, "x", x, 4, "(B, C, H, W)")
    return np.ascontiguousarray(x).reshape(x.shape[0], -1), x.shape


def flatten_backward(dout, cache):
    """Inputs: dout (B, C*H*W); cache.  Returns: dx (B, C, H, W) (a new array)."""
    x_shape = cache
    fn = "flatten_backward"
    _check_dtypes(fn, dout=dout)
    _check_shape(fn, "dout", dout, (x_shape[0], int(np.prod(x_shape[1:]))))
    return dout.reshape(x_shape).copy()


# ----------------------------------------------------------------------------------------------------
# softmax cross-entropy
# ----------------------------------------------------------------------------------------------------

def softmax_ce_forward(logits, y):
    """Mean cross-entropy of softmax(logits) against integer labels (spec "Loss": mean_b CE),
    computed stably through log-softmax (max subtracted).

    Inputs:  logits (B, K); y (B,) integer labels in [0, K).
    Returns: loss (0-d scalar of logits' dtype); cache.
    """
    fn = "softmax_ce_forward"
    dtype = _check_dtypes(fn, logits=logits)
    _check_ndim(fn, "logits", logits, 2, "(B, K)")
    B, K = logits.shape
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{fn}: y has dtype {y.dtype}, expected an integer dtype")
    _check_shape(fn, "y", y, (B,))
    if B == 0:
        raise ValueError(f"{fn}: empty batch (logits shape {logits.shape})")
    if y.min() < 0 or y.max() >= K:
        raise ValueError(f"{fn}: labels must lie in [0, {K}), got range [{y.min()}, {y.max()}]")
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = dtype.type(-logp[np.arange(B), y].mean())
    return loss, (np.exp(logp), y)


def softmax_ce_backward(dloss, cache):
    """Inputs:  dloss scalar (upstream gradient of the loss); cache.
    Returns: dlogits (B, K) = dloss * (softmax(logits) - onehot(y)) / B.
    """
    probs, y = cache
    B = probs.shape[0]
    dlogits = probs.copy()
    dlogits[np.arange(B), y] -= 1
    dlogits *= probs.dtype.type(dloss) / probs.dtype.type(B)
    return dlogits
