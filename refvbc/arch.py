"""Architectures of the spec (docs/objective.md, "Architectures"), in PyTorch layouts.

Shape legend
    B        batch size
    dense    weight (out, in), bias (out,), pre-activation (B, out)
    conv     weight (out_c, in_c, kh, kw), bias (out_c,), pre-activation (B, out_c, H-kh+1, W-kw+1)

This module is a leaf: names and shapes only, no numerics.
Parameter names are hierarchical: ``<layer>.theta``, ``<layer>.log_sigma2``, ``<layer>.bias``,
``gmm.mu``, ``gmm.log_lambda``, ``gmm.log_pi`` (the softmax logits rho of the spec).
"""

from collections import namedtuple

Layer = namedtuple("Layer", "name kind weight_shape preact_shape")
# preact_shape excludes the batch dimension.

ARCHS = {
    "lenet300": (
        Layer("fc1", "dense", (300, 784), (300,)),
        Layer("fc2", "dense", (100, 300), (100,)),
        Layer("fc3", "dense", (10, 100), (10,)),
    ),
    # conv1 -> relu -> pool -> conv2 -> relu -> pool -> flatten (C,H,W) -> fc1 -> relu -> fc2
    "lenet5": (
        Layer("conv1", "conv", (20, 1, 5, 5), (20, 24, 24)),
        Layer("conv2", "conv", (50, 20, 5, 5), (50, 8, 8)),
        Layer("fc1", "dense", (500, 800), (500,)),
        Layer("fc2", "dense", (10, 500), (10,)),
    ),
}

INPUT_SHAPES = {"lenet300": (784,), "lenet5": (1, 28, 28)}
N_CLASSES = 10
N_COMPONENTS = 17  # mixture components (Table 3; --components), component 0 fixed at mu=0, pi0=0.999
PI0 = 0.999
GAMMA_ALPHA = 1e5
GAMMA_BETA = 10.0
N_TRAIN = 60000


def get_arch(name):
    """Return the layer tuple of architecture ``name``; a clear error for an unknown name."""
    try:
        return ARCHS[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; expected one of {sorted(ARCHS)}") from None


def n_weights(name):
    """Total number of weights (no biases) of architecture ``name``."""
    total = 0
    for layer in get_arch(name):
        n = 1
        for s in layer.weight_shape:
            n *= s
        total += n
    return total


def param_group(key):
    """Adam parameter group of a parameter name (paper Table 3): theta, log_sigma2, bias, mu,
    log_lambda, log_pi."""
    suffix = key.rsplit(".", 1)[-1]
    if suffix in ("theta", "log_sigma2", "bias", "mu", "log_lambda", "log_pi"):
        return suffix
    raise ValueError(f"parameter name {key!r} has no known group suffix")
