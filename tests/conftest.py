"""Shared fixtures and helpers of the test suite.

The default run (`python -m pytest -q`) is the fast unit tier; tests marked `slow` (subprocesses,
end-to-end runs, sweeps, the CUDA simulator child) run with `python -m pytest -q -m slow`.
Helper modules (the PyTorch/JAX spec implementations, central differences, numba IR probes) live in
tests/support/.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository (subprocesses import refvbc from here)
RUN_PY = os.path.join(ROOT, "run_experiments.py")


def run_cli(args, timeout=600, env=None, **kw):
    """`python run_experiments.py ARGS` in a subprocess; returns the CompletedProcess (text output)."""
    return subprocess.run([sys.executable, RUN_PY] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, cwd=kw.pop("cwd", ROOT), env=env, **kw)


@pytest.fixture
def rng():
    """A fixed-seed generator for tests that need random inputs."""
    import numpy as np
    return np.random.default_rng(1234)
