"""Synthetic trained-looking parameters, for tests, benchmarks and trying the file format without training.

Shape legend
    K        mixture components (`components`; default arch.N_COMPONENTS = 17), component 0 at mu = 0
    params   the project's flat dict: "<layer>.theta" / ".log_sigma2" / ".bias" in arch shapes, "gmm.*" (K,)

A weight survives with probability `density`; survivors sit near a random non-zero mixture mean, the rest
near 0. For "vd"/"vdsws" the survivors get log sigma^2 = log(1e-4 theta^2) (dropout rate ~1e-4) and the
others log sigma^2 = 0 (dropout rate ~1), so the 0.95 threshold separates them. Units of a hidden layer
die with probability `dead_units` (row and bias zeroed), which exercises the structural pruning.
"""

import numpy as np

from refvbc.arch import N_COMPONENTS, get_arch


def synthetic_params(arch, method, density=0.02, dead_units=0.1, seed=0, dtype=np.float64,
                     components=N_COMPONENTS):
    """Random parameters for `arch` and `method` ("l2", "vd", "sws", "vdsws") -> flat dict of `dtype`.
    `density` is a float or a dict {layer name: float}; `components` is K (>= 2)."""
    rng = np.random.default_rng(seed)
    K = components
    mu = np.concatenate([[0.0], np.linspace(-0.4, 0.4, K - 1)])
    mu[1:] += 0.01 * rng.standard_normal(K - 1)  # no exact ties, no zero besides mu[0]
    p = {}
    layers = get_arch(arch)
    for i, L in enumerate(layers):
        n = int(np.prod(L.weight_shape))
        d = density[L.name] if isinstance(density, dict) else density
        alive = rng.random(n) < d
        if method == "l2":
            theta = 0.1 * rng.standard_normal(n)
        else:
            theta = np.where(alive, rng.choice(mu[1:], n) + 1e-3 * rng.standard_normal(n),
                             1e-4 * rng.standard_normal(n))
        theta = theta.reshape(L.weight_shape)
        bias = 0.05 * rng.standard_normal(L.weight_shape[0])
        if i < len(layers) - 1 and method != "l2":
            dead = rng.random(L.weight_shape[0]) < dead_units
            theta[dead] = 0.0
            bias[dead] = 0.0
        p[f"{L.name}.theta"] = theta.astype(dtype)
        p[f"{L.name}.bias"] = bias.astype(dtype)
        if method in ("vd", "vdsws"):
            ls2 = np.where(alive.reshape(L.weight_shape), np.log(1e-4 * theta ** 2 + 1e-30), 0.0)
            p[f"{L.name}.log_sigma2"] = ls2.astype(dtype)
    if method in ("sws", "vdsws"):
        p["gmm.mu"] = mu.astype(dtype)
        p["gmm.log_lambda"] = np.full(K, np.log(1e4), dtype=dtype)
        p["gmm.log_pi"] = np.zeros(K, dtype=dtype)
    return p
