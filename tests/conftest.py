"""Shared fixtures and helpers of the test suite.

Two tiers:
    python -m pytest -q           the fast unit tier (pytest.ini deselects `slow`): every layer, kernel,
                                  prior, encoder and the cross-checks at unit level
    python -m pytest -q -m slow   subprocesses, end-to-end runs, sweeps, the CUDA simulator child and
                                  the full-network LeNet-5 cross-check trajectories

Mark a test `@pytest.mark.slow`, or one case of a parametrization `slow_param(...)`.
Helper modules (the PyTorch/JAX spec implementations, central differences, numba IR probes, the
cross-check file cache) live in tests/support/.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository (subprocesses import refvbc from here)
RUN_PY = os.path.join(ROOT, "run_experiments.py")

slow = pytest.mark.slow

def run_cli(args, timeout=600, env=None, **kw):
    """`python run_experiments.py ARGS` in a subprocess; returns the CompletedProcess (text output)."""
    return subprocess.run([sys.executable, RUN_PY] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, cwd=kw.pop("cwd", ROOT), env=env, **kw)


def slow_param(*values, id=None):
    """One case of a parametrization that belongs to the slow tier."""
    return pytest.param(*values, id=id, marks=pytest.mark.slow)


def tiered(cases, ids, is_slow):
    """The cases of a parametrization (tuples, with their ids) as pytest.param, those for which
    is_slow(*case) is true marked `slow`."""
    return [pytest.param(*case, id=i, marks=[pytest.mark.slow] if is_slow(*case) else [])
            for case, i in zip(cases, ids)]


@pytest.fixture
def rng():
    """A fixed-seed generator for tests that need random inputs."""
    return np.random.default_rng(1234)


def phase_params(arch, phase, rng, dtype=np.float64, log_alpha=(-8.0, 1.0), components=None):
    """The parameters a phase trains, at a moderate point away from every kink of the loss.

    arch: "lenet300" | "lenet5" (or any name refvbc.arch knows); phase: "l2" | "vd" | "sws" | "vdsws";
    rng: a numpy Generator; dtype of every array; components: K of the mixture (None: Table 3's 17).
    Every tensor is drawn whatever the phase (PyTorch-default theta and bias, the Table-3 mixture moved
    off its symmetric start, log alpha uniform in `log_alpha`), then the phase's keys are kept, so
    the generator ends in the same state for every phase.
    Returns {name: array}: <layer>.theta/.bias, <layer>.log_sigma2 (vd, vdsws), gmm.mu/.log_lambda/
    .log_pi (sws, vdsws).
    """
    from refvbc import models, priors
    from refvbc.arch import N_COMPONENTS, get_arch
    from refvbc.phases import PHASES

    params = models.init_params(arch, rng, dtype=np.float64)
    flat = np.concatenate([params[k].ravel() for k in models.weight_keys(arch)])
    K = N_COMPONENTS if components is None else components
    mu, ll, lp = priors.mixture_init(flat, K=K, dtype=np.float64)
    params["gmm.mu"] = mu + np.r_[0.0, rng.normal(0, 0.1 * np.abs(mu[1:]).min(), mu.size - 1)]
    params["gmm.log_lambda"] = ll + rng.normal(0, 0.3, ll.size)
    params["gmm.log_pi"] = lp + np.r_[0.0, rng.normal(0, 0.5, lp.size - 1)]
    for layer in get_arch(arch):
        th = params[f"{layer.name}.theta"]
        params[f"{layer.name}.log_sigma2"] = rng.uniform(*log_alpha, th.shape) + np.log(th ** 2 + 1e-8)
    spec = PHASES[phase]
    return {k: v.astype(dtype) for k, v in params.items()
            if (spec.variational or not k.endswith(".log_sigma2")) and (spec.mixture or not k.startswith("gmm."))}


def phase_coefs(phase, n_data=60000.0):
    """The loss coefficients (tau1, tau2, weight_decay, n_data) of `phase` for gradient checks: the
    terms of refvbc.phases.PHASES switched on, the weight decay 1e-3 (larger than training's, to be
    seen in a gradient)."""
    from refvbc.phases import PHASES

    spec = PHASES[phase]
    return dict(tau1=1.0 if spec.variational else 0.0, tau2=0.02 if spec.mixture else 0.0,
                weight_decay=1e-3 if spec.weight_decay else 0.0, n_data=n_data)
