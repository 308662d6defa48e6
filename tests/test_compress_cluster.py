"""Tests of refvbc/compress/cluster.py's mixture clustering options: the argmax rule (`assign`:
responsibility or density) and the merging of close components (`merge_kl`)."""

import numpy as np
import pytest

from refvbc.compress.cluster import cluster_mixture, merge_components
from refvbc.compress.pipeline import quantize
from refvbc.compress.synthetic import synthetic_params

SIG = 0.01


def _mixture(K=17, spacing=0.03, sigma=SIG):
    """Means 0, ±spacing, ±2 spacing, ...; equal sigma; rho = 0 (equal non-zero proportions)."""
    k = np.arange(K) - (K - 1) // 2
    mu = np.sort(k * spacing)
    mu = np.concatenate([[0.0], mu[mu != 0]])  # component 0 at 0
    return mu, np.full(K, -2 * np.log(sigma)), np.zeros(K)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_density_rule_matches_numpy_reference(dtype):
    mu, ll, lp = _mixture()
    rng = np.random.default_rng(0)
    theta = {"a": rng.normal(0, 0.1, (30, 20)).astype(dtype), "b": rng.normal(0, 0.05, 50).astype(dtype)}
    q = cluster_mixture(theta, mu, ll, lp, assign="density")[2]
    var = np.exp(-ll)
    for name, t in theta.items():
        d = t.astype(np.float64).reshape(-1)[:, None] - mu[None, :]
        k = np.argmax(-0.5 * np.log(var)[None, :] - 0.5 * d * d / var[None, :], axis=1)
        expect = np.where(k == 0, 0.0, mu[k]).astype(np.float32).reshape(t.shape)
        np.testing.assert_array_equal(q[name], expect, err_msg=f"{name}: density argmax vs NumPy reference")


def test_responsibility_and_density_differ_where_pi0_decides():
    """pi0 = 0.999 makes the zero component claim a weight nearer a non-zero mean; density does not."""
    mu, ll, lp = _mixture()
    theta = {"w": np.array([0.02, -0.021, 0.0, 0.06, 0.001])}
    resp = cluster_mixture(theta, mu, ll, lp, pi0=0.999)[2]["w"]
    dens = cluster_mixture(theta, mu, ll, lp, pi0=0.999, assign="density")[2]["w"]
    np.testing.assert_array_equal(resp, np.float32([0.0, 0.0, 0.0, 0.06, 0.0]),
                                  err_msg="responsibility: 0.02 and -0.021 go to the zero component")
    np.testing.assert_array_equal(dens, np.float32([0.03, -0.03, 0.0, 0.06, 0.0]),
                                  err_msg="density: each weight to the nearest mean (equal sigmas)")


def test_density_rule_through_quantize_keeps_pruning_first():
    p = synthetic_params("lenet300", "vdsws", density=0.05, dead_units=0.0, seed=3, dtype=np.float32)
    resp = quantize("lenet300", p, "vdsws")
    dens = quantize("lenet300", p, "vdsws", assign="density")
    for name in resp:
        pruned_r, pruned_d = resp[name] == 0, dens[name] == 0
        assert not (pruned_d & ~pruned_r & (np.abs(p[f"{name}.theta"]) > 0.5)).any(), name
    n_r = sum(int((v != 0).sum()) for v in resp.values())
    n_d = sum(int((v != 0).sum()) for v in dens.values())
    assert n_d >= n_r, f"density keeps at least the responsibility rule's non-zeros: {n_d} vs {n_r}"


def test_bad_assign_raises():
    mu, ll, lp = _mixture()
    with pytest.raises(ValueError, match="assign must be one of"):
        cluster_mixture({"w": np.zeros(3)}, mu, ll, lp, assign="nearest")


def test_merge_components_moment_matched():
    """Two components 0.001 apart (symmetric KL 0.02) merge into their moment-matched Gaussian; a
    component that merges with the zero one keeps mean 0; far components stay."""
    mu = np.array([0.0, 0.0005, 0.5, 0.501, -0.5])
    ll = np.full(5, -2 * np.log(SIG))
    lp = np.zeros(5)
    m, v, w, zero = merge_components(mu, ll, lp, 0.1, 0.999)
    assert m.size == 3 and zero == 0, f"expected 3 components with zero first, got means {m}"
    w_nz = (1 - 0.999) / 4
    np.testing.assert_allclose(w, [0.999 + w_nz, 2 * w_nz, w_nz], rtol=1e-12)
    assert m[0] == 0.0, "a merge with the zero component keeps mean 0"
    np.testing.assert_allclose(v[0], (0.999 * SIG ** 2 + w_nz * (SIG ** 2 + 0.0005 ** 2)) / (0.999 + w_nz),
                               rtol=1e-12)
    np.testing.assert_allclose(m[1], 0.5005, rtol=1e-12)
    np.testing.assert_allclose(v[1], SIG ** 2 + 0.0005 ** 2, rtol=1e-9)
    np.testing.assert_allclose(m[2], -0.5)
    # no pair below the threshold: nothing merges
    assert merge_components(mu, ll, lp, 1e-3, 0.999)[0].size == 5
