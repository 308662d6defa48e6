"""Beyond the paper: a short re-training after the collapse onto the cluster centres, with every
assignment fixed (Deep Compression's "trained quantization", Han et al. 2016).

The paper collapses the weights and stops; this module is an option whose rows and files are labelled
as such (`<method>-finetuned.rvbc`). Two variants:
    "bias"        only the biases train; the quantized weights stay as they are
    "bias+means"  the biases and the non-zero codebook values train; a codebook value's gradient is the
                  sum of the gradients of the weights that use it (zeros stay zero, so the sparsity
                  pattern and the assignments do not change)

Shape legend
    quantized[name]  float32 weight of layer `name` (its weight_shape), exact zeros where pruned
    symbols[name]    int64, same shape: index into the codebook (0 <-> the value 0)
    codebook         float32 (V,), codebook[0] == 0
    x, y             training images (N, 784) float32 and labels (N,)
"""

import numpy as np

from . import layers, models
from .arch import get_arch
from .compress.cluster import build_codebook
from .data import batches
from .optim import Adam

VARIANTS = ("none", "bias", "bias+means")
FINETUNE_PHASE_ID = 4  # per-epoch random stream default_rng([seed, 4, epoch]); ids 0-3 are the phases


def finetune_quantized(arch, quantized, biases, x, y, variant="bias", epochs=3, lr=1e-4,
                       batch_size=100, seed=0, log=None):
    """Re-train the biases (and the non-zero codebook values) of a quantized network with the
    cross-entropy of the training data, deterministic forward pass, Adam at rate `lr`.

    Inputs:  quantized {layer: float32 weight}; biases {layer: (out,)}; x, y training data;
             variant "bias" or "bias+means"; epochs, lr, batch_size, seed.
    Returns: (quantized', biases') of the same shapes, float32; zeros of `quantized` stay zeros.
    """
    if variant not in VARIANTS[1:]:
        raise ValueError(f"fine-tuning variant must be one of {VARIANTS[1:]}, got {variant!r}")
    net = get_arch(arch)
    codebook, symbols = build_codebook(quantized)
    params = {f"{l.name}.bias": np.array(biases[l.name], np.float32) for l in net}
    params["codebook.mu"] = codebook.astype(np.float32)  # the parameter group "mu" (Table 3 names)
    lrs = {"bias": lr}
    if variant == "bias+means":
        lrs["mu"] = lr
    opt = Adam(lrs)
    for epoch in range(epochs):
        rng = np.random.default_rng([seed, FINETUNE_PHASE_ID, epoch])
        tot, nb = 0.0, 0
        for idx in batches(x.shape[0], batch_size, rng):
            cb = params["codebook.mu"]
            weights = {l.name: cb[symbols[l.name]] for l in net}
            logits, caches = models.forward(arch, params, x[idx], weights=weights)
            ce, c = layers.softmax_ce_forward(logits, y[idx])
            g = models.backward(arch, layers.softmax_ce_backward(1.0, c), caches)
            grads = {f"{l.name}.bias": g[f"{l.name}.bias"] for l in net}
            dcb = np.zeros(cb.size)
            for l in net:
                dcb += np.bincount(symbols[l.name].ravel(), weights=g[f"{l.name}.theta"].ravel(),
                                   minlength=cb.size)
            dcb[0] = 0.0  # the zero stays zero
            grads["codebook.mu"] = dcb.astype(np.float32)
            opt.step(params, grads)
            tot += float(ce)
            nb += 1
        if log:
            log(f"# fine-tune ({variant}) epoch {epoch + 1}/{epochs}: mean cross-entropy {tot / max(nb, 1):.5f}")
    cb = params["codebook.mu"]
    return ({l.name: cb[symbols[l.name]].astype(np.float32) for l in net},
            {l.name: params[f"{l.name}.bias"].copy() for l in net})
