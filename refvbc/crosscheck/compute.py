"""refvbc's outputs for the inputs of a cross-check file: the spec's loss, logits and gradients of a
minibatch, and K Adam steps with per-group learning rates (refvbc.objective + refvbc.optim).
Used by the exporter (to write the outputs) and by `verify` (to recompute them from another
framework's inputs).
"""

import numpy as np

from ..objective import loss_and_grads
from ..optim import Adam
from .layout import ADAM_KEYS, CONFIG_KEYS, LR_GROUPS, OPTION_KEYS, components_of, param_shapes


def config_of(arrays):
    """{tau1, tau2, n_data, pi0, gamma_alpha, gamma_beta} as Python floats and {mask_pruned} as a
    bool (False when the file has no config/mask_pruned)."""
    config = {k: float(np.asarray(arrays[f"config/{k}"])) for k in CONFIG_KEYS}
    config.update({k: bool(np.asarray(arrays.get(f"config/{k}", 0))) for k in OPTION_KEYS})
    return config


def minibatch(arch, params, arrays, prefix, config, dtype):
    """Loss, logits and gradients of the minibatch ``<prefix>input/*``, ``<prefix>noise/*``.
    Returns ({"<prefix>out/loss", "<prefix>out/logits", "<prefix>grad/<name>"}: arrays, grads)."""
    x = np.asarray(arrays[f"{prefix}input/x"], dtype=dtype)
    y = np.asarray(arrays[f"{prefix}input/y"]).astype(np.int64)
    noise = {k[len(prefix) + 6:]: np.asarray(v, dtype=dtype) for k, v in arrays.items()
             if k.startswith(f"{prefix}noise/")}
    loss, _, logits, grads = loss_and_grads(
        arch, params, x, y, noise, tau1=config["tau1"], tau2=config["tau2"], n_data=config["n_data"],
        pi0=config["pi0"], gamma_alpha=config["gamma_alpha"], gamma_beta=config["gamma_beta"],
        mask_pruned=config["mask_pruned"])
    out = {f"{prefix}out/loss": np.array(loss, dtype=dtype), f"{prefix}out/logits": np.asarray(logits, dtype)}
    out.update({f"{prefix}grad/{n}": np.asarray(grads[n], dtype=dtype) for n in params})
    return out, grads


def outputs(arrays, arch, steps, single=True, dtype=np.float64):
    """Every output key for the inputs in `arrays`, computed by refvbc in `dtype`.

    Inputs:  arrays, a mapping holding the input keys (docs/crosscheck.md); arch; steps (0: none);
             single: compute the top-level minibatch too.
    Returns: {key: array of `dtype`}: out/loss, out/logits, grad/<name> (when single) and, for
             k = 1..steps, step<k>/out/*, step<k>/grad/<name> (at the parameters before step k) and
             step<k>/param|adam.m|adam.v/<name> (after Adam step k).
    """
    dtype = np.dtype(dtype)
    config = config_of(arrays)
    names = param_shapes(arch, components_of(arrays))
    params = {n: np.array(arrays[f"param/{n}"], dtype=dtype) for n in names}
    out = {}
    if single:
        out.update(minibatch(arch, params, arrays, "", config, dtype)[0])
    if steps:
        lrs = {g: float(np.asarray(arrays[f"config/lr/{g}"])) for g in LR_GROUPS}
        b1, b2, eps = (float(np.asarray(arrays[f"config/adam/{k}"])) for k in ADAM_KEYS)
        opt = Adam(lrs, betas=(b1, b2), eps=eps)
        for k in range(1, steps + 1):
            prefix = f"step{k}/"
            part, grads = minibatch(arch, params, arrays, prefix, config, dtype)
            out.update(part)
            opt.step(params, grads)
            for n, p in params.items():
                out[f"{prefix}adam.m/{n}"] = opt.m[n].copy() if n in opt.m else np.zeros_like(p)
                out[f"{prefix}adam.v/{n}"] = opt.v[n].copy() if n in opt.v else np.zeros_like(p)
                out[f"{prefix}param/{n}"] = p.copy()
    return out
