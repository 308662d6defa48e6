"""Tests of the vectorizable math helpers added for speed (issue 5): ``_log`` of
refvbc/kernels/mixture.py against np.log (its NumPy reference)."""

import numpy as np

from refvbc.kernels.mixture import log_kernel


def test_vectorizable_log_matches_numpy():
    rng = np.random.default_rng(31)
    x = np.concatenate([np.exp(rng.uniform(-700, 700, 20000)), rng.uniform(0.5, 2.0, 20000),
                        1.0 + rng.uniform(-1e-6, 1e-6, 1000), [1.0, 2.0, 0.5, 1e-8, 2.2250738585072014e-308,
                                                              1.7976931348623157e308]])
    out = np.empty_like(x)
    log_kernel(x, out)
    ref = np.log(x)
    err = np.max(np.abs(out - ref) / np.maximum(np.abs(ref), 1e-300))
    assert err <= 1e-15, f"log relative error {err:.3e} > 1e-15"
    near1 = np.max(np.abs(out - ref)[40000:41000])
    assert near1 <= 1e-21, f"log absolute error near 1: {near1:.3e}"


def test_vectorizable_log_bad_input_is_nan():
    bad = np.array([0.0, -0.0, -1.0, 1e-310, np.inf, -np.inf, np.nan])
    out = np.zeros_like(bad)
    log_kernel(bad, out)
    assert np.all(np.isnan(out)), f"expected nan for {bad}, got {out}"
