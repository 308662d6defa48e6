"""LeNet-300-100 and LeNet-5 (spec "Architectures"): initialisation, training forward/backward
(variational with noise passed in, or deterministic), evaluation forward with weight means and masks.

Shape legend
    B            batch size
    x            lenet300: (B, 784); lenet5: (B, 1, 28, 28)   float32 or float64
    y            (B,) int labels
    logits       (B, 10)
    noise[name]  standard-normal eps in the pre-activation shape of layer `name`: (B,) + preact_shape
    params       flat dict: "<layer>.theta", "<layer>.bias", ["<layer>.log_sigma2"], ["gmm.*"]

Network: every layer but the last is followed by ReLU; conv layers by ReLU then 2x2 max-pool (one
fused layer, layers.relu_maxpool2x2_*); the conv->dense boundary flattens in (C, H, W) order.
"""

import numpy as np

from . import layers, priors
from .kernels import noise as _noise
from .arch import INPUT_SHAPES, get_arch


def is_variational(params, arch):
    """True when the parameter dict carries log-variances (VD / VD+SWS models)."""
    return f"{get_arch(arch)[0].name}.log_sigma2" in params


def init_params(arch, rng, dtype=np.float32):
    """PyTorch-default initialisation of a deterministic network (U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    for weights and biases).  Inputs: arch name, numpy Generator.  Returns a params dict."""
    params = {}
    for layer in get_arch(arch):
        fan_in = int(np.prod(layer.weight_shape[1:]))
        bound = 1.0 / np.sqrt(fan_in)
        params[f"{layer.name}.theta"] = rng.uniform(-bound, bound, layer.weight_shape).astype(dtype)
        params[f"{layer.name}.bias"] = rng.uniform(-bound, bound, layer.weight_shape[0]).astype(dtype)
    return params


def add_log_sigma2(params, arch, init=-10.0):
    """Return a copy of deterministic `params` with `<layer>.log_sigma2` = init (paper Table 3)."""
    out = {k: v.copy() for k, v in params.items()}
    for layer in get_arch(arch):
        theta = out[f"{layer.name}.theta"]
        out[f"{layer.name}.log_sigma2"] = np.full(theta.shape, init, dtype=theta.dtype)
    return out


def weight_keys(arch):
    """Names of the weight-mean tensors, in layer order."""
    return [f"{layer.name}.theta" for layer in get_arch(arch)]


def draw_noise(arch, batch, rng, dtype=np.float32, out=None):
    """Standard-normal noise for every layer's pre-activation: {layer name: (B,) + preact_shape}.

    float32 (training): one seed is drawn from the numpy Generator rng per call and the numbers come from
    the seeded numba ziggurat of kernels/noise.py (stream = layer index, one row per example; the same
    for any thread count), so rng fixes them exactly (resume replays them) at ~4x the speed of numpy's
    generator. float64 (the checks, the cross-check file): rng.standard_normal, as NumPy draws it.
    out: optional dict of arrays from an earlier call, filled again when shape and dtype match (so a
    training loop reuses one set of buffers); the returned dict is then `out` itself.
    """
    dtype = np.dtype(dtype)
    res = {} if out is None else out
    seed = int(rng.integers(0, 2 ** 63)) if dtype == np.float32 else None
    for i, layer in enumerate(get_arch(arch)):
        shape = (batch,) + layer.preact_shape
        a = res.get(layer.name)
        if a is None or a.shape != shape or a.dtype != dtype:
            a = res[layer.name] = np.empty(shape, dtype=dtype)
        if seed is None:
            rng.standard_normal(shape, dtype=dtype, out=a)
        else:
            _noise.normal_fill_numba(a, seed, i)
    return res


def check_input(arch, x, y=None):
    """Validate the input batch shape (and labels) for `arch`; returns x reshaped for the network."""
    get_arch(arch)
    shape = INPUT_SHAPES[arch]
    x = np.asarray(x)
    if x.ndim >= 1 and x.shape[1:] != tuple(shape):
        if x.ndim == 2 and x.shape[1] == int(np.prod(shape)):
            x = x.reshape((x.shape[0],) + tuple(shape))
        else:
            raise ValueError(f"{arch}: input must have shape (B, {', '.join(map(str, shape))}), got {x.shape}")
    if x.ndim < 2:
        raise ValueError(f"{arch}: input must be a batch (B, ...), got shape {x.shape}")
    if y is not None:
        y = np.asarray(y)
        if y.shape != (x.shape[0],):
            raise ValueError(f"{arch}: labels must have shape ({x.shape[0]},), got {y.shape}")
        if y.size and (y.min() < 0 or y.max() > 9):
            raise ValueError(f"{arch}: labels must lie in 0..9, got range {y.min()}..{y.max()}")
    return x


def forward(arch, params, x, noise=None, weights=None, ws=None):
    """Forward pass with caches for backward.

    Inputs:  params; x (B, ...); noise dict -> variational (local reparameterization) layers, None ->
             deterministic layers using `weights[name]` (default: the means `<layer>.theta`); ws: optional
             workspace dict (the conv layers keep their buffers in ws[layer name] and reuse them from
             call to call; the caches of a call are valid until the next call with the same ws).
    Returns: logits (B, 10), caches (list of (op, cache)) for `backward`.
    """
    net = get_arch(arch)
    x = check_input(arch, x)
    h = x
    caches = []
    for i, layer in enumerate(net):
        n = layer.name
        if layer.kind == "dense" and h.ndim == 4:
            caches.append(("flatten", h.shape))
            h = h.reshape(h.shape[0], -1)
        b = params[f"{n}.bias"]
        if noise is not None:
            args = (h, params[f"{n}.theta"], params[f"{n}.log_sigma2"], b, noise[n])
            if layer.kind == "dense":
                h, c = layers.vdense_forward(*args)
            else:
                h, c = layers.vconv2d_forward(*args, ws=None if ws is None else ws.setdefault(n, {}))
            caches.append(("v" + layer.kind, c))
        else:
            w = params[f"{n}.theta"] if weights is None else weights[n]
            if layer.kind == "dense":
                h, c = layers.dense_forward(h, w, b)
            else:
                h, c = layers.conv2d_forward(h, w, b, ws=None if ws is None else ws.setdefault(n, {}))
            caches.append((layer.kind, c))
        if i < len(net) - 1:
            if layer.kind == "conv":
                h, c = layers.relu_maxpool2x2_forward(h)
                caches.append(("relupool", c))
            else:
                h, c = layers.relu_forward(h)
                caches.append(("relu", c))
    return h, caches


def backward(arch, dlogits, caches):
    """Backward through `forward`'s caches.  Returns grads {"<layer>.theta", "<layer>.bias",
    ["<layer>.log_sigma2"]} with the dtype of the parameters.  The input gradient is not computed."""
    names = [layer.name for layer in get_arch(arch)]
    li = len(names)
    grads = {}
    d = dlogits
    for idx in range(len(caches) - 1, -1, -1):
        op, c = caches[idx]
        if op == "relu":
            d = layers.relu_backward(d, c)
        elif op == "relupool":
            d = layers.relu_maxpool2x2_backward(d, c)
        elif op == "flatten":
            d = d.reshape(c)
        else:
            li -= 1
            n = names[li]
            need_dx = li > 0
            if op == "vdense" or op == "vconv":
                f = layers.vdense_backward if op == "vdense" else layers.vconv2d_backward
                d, gt, gs, gb = f(d, c, need_dx=need_dx)
                grads[f"{n}.log_sigma2"] = gs
            else:
                f = layers.dense_backward if op == "dense" else layers.conv2d_backward
                d, gt, gb = f(d, c, need_dx=need_dx)
            grads[f"{n}.theta"] = gt
            grads[f"{n}.bias"] = gb
    return grads


def eval_weights(arch, params, masks=None):
    """Weight means, times the 0/1 pruning masks {layer: bool array} where given."""
    out = {}
    for layer in get_arch(arch):
        w = params[f"{layer.name}.theta"]
        if masks is not None and layer.name in masks:
            w = np.where(masks[layer.name], w, 0).astype(w.dtype)
        out[layer.name] = w
    return out


def predict(arch, params, x, masks=None, batch_size=1000):
    """Evaluation forward (deterministic, weight means, optional pruning masks) -> logits (N, 10)."""
    weights = eval_weights(arch, params, masks)
    x = check_input(arch, x)
    out = [forward(arch, params, x[i:i + batch_size], weights=weights)[0]
           for i in range(0, x.shape[0], batch_size)]
    return np.concatenate(out, axis=0)


def accuracy(arch, params, x, y, masks=None):
    """Fraction of correctly classified examples."""
    return float(np.mean(np.argmax(predict(arch, params, x, masks), axis=1) == y))


# ----------------------------------------------------------------------------------------------
# The one pruning rule (priors.keep_mask) applied to a model: training's logs, the reports, the figures
# and the mixture's initial spacing read it from here.


def prune_masks(arch, params):
    """Keep-masks {layer: bool array of the weight's shape} of the pruning rule (priors.keep_mask);
    None for a deterministic model (no log sigma^2: nothing is pruned)."""
    if not is_variational(params, arch):
        return None
    return {layer.name: priors.keep_mask(params[f"{layer.name}.theta"], params[f"{layer.name}.log_sigma2"])
            for layer in get_arch(arch)}


def pruned_fraction(masks):
    """Fraction of the weights that `prune_masks` prunes (0.0 for a deterministic model, masks None)."""
    if masks is None:
        return 0.0
    kept = sum(int(m.sum()) for m in masks.values())
    return 1.0 - kept / sum(m.size for m in masks.values())


def mixture_init_weights(arch, params, delta_mu_over):
    """The weights w whose std sets the mixture's spacing (Table 3: delta_mu = 2 std(w) / K), flat:
    only those that survive the pruning rule when the start model is variational and `delta_mu_over`
    is "survivors", or every weight of the start model ("all") (docs/objective.md, "Interpretation
    choices", item 9; a deterministic start model has no pruned weights, so both readings agree there).

    Inputs: arch; params of the start model; delta_mu_over "survivors" or "all".
    Returns: 1-D array of the weights' dtype."""
    if delta_mu_over not in ("all", "survivors"):
        raise ValueError(f"delta_mu_over must be 'all' or 'survivors', got {delta_mu_over!r}")
    flat = np.concatenate([params[k].ravel() for k in weight_keys(arch)])
    masks = prune_masks(arch, params) if delta_mu_over == "survivors" else None
    if masks is None:  # "all", or a deterministic start model
        return flat
    keep = np.concatenate([masks[layer.name].ravel() for layer in get_arch(arch)])
    if not keep.any():
        raise ValueError("delta_mu_over='survivors': no weight of the start model survives the pruning rule")
    return flat[keep]
