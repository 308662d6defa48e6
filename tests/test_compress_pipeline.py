"""Clustering per method, accounting, the real lenet300 shapes, and the command line."""

import numpy as np
import pytest
from conftest import slow_param

from refvbc import priors
from refvbc.arch import get_arch, n_weights
from refvbc.compress import (accuracy, compress_model, decode, encode, evaluate,
                             format_report, read_rvbc, report, write_rvbc)
from refvbc.compress.__main__ import main
from refvbc.compress.cluster import build_codebook, cluster_vd, fit_gmm_1d, gmm_argmax
from refvbc.compress.synthetic import synthetic_params


@pytest.mark.parametrize("dtype, pi0", [(np.float32, 0.999), (np.float64, 0.999), (np.float64, 1e-3)])
@pytest.mark.parametrize("method", ["sws", "vdsws"])
def test_mixture_clustering(method, dtype, pi0):
    p = synthetic_params("lenet300", method, density=0.03, dead_units=0.0, seed=2, dtype=dtype)
    cm = compress_model("lenet300", p, method, fold_constants=False, pi0=pi0)
    full = cm.to_params()
    mu = p["gmm.mu"]
    for L in get_arch("lenet300"):
        t = p[f"{L.name}.theta"]
        k = priors.mixture_responsibility_argmax(t, mu, p["gmm.log_lambda"], p["gmm.log_pi"], pi0=pi0)
        expect = np.where(k == 0, 0.0, mu[k]).astype(np.float32)
        if method == "vdsws":
            expect[priors.dropout_rate(t, p[f"{L.name}.log_sigma2"]) >= 0.95] = 0.0
        w = full[f"{L.name}.theta"]
        # removed units/inputs are zero in to_params(); everywhere else the clustered value, bit for bit
        live = cm.layers[[l.name for l in cm.layers].index(L.name)]
        rows = live.out_mask[:, None] & np.repeat(live.in_mask, 1)[None, :]
        np.testing.assert_array_equal(w[rows], expect[rows], err_msg=f"{L.name}: clustered values")
        assert not w[~rows].any()
    assert cm.codebook[0] == 0.0 and set(np.unique(cm.codebook[1:])) <= set(mu[1:].astype(np.float32))


def test_gmm_em_recovers_clusters():
    rng = np.random.default_rng(0)
    centers = np.array([-0.3, -0.1, 0.05, 0.2])
    x = np.concatenate([c + 0.002 * rng.standard_normal(500) for c in centers])
    means, var, w = fit_gmm_1d(x, n_components=4)
    np.testing.assert_allclose(means, centers, atol=1e-3, err_msg="EM means")
    np.testing.assert_allclose(w, 0.25, atol=1e-3)
    idx = gmm_argmax(x, means, var, w)
    np.testing.assert_array_equal(idx, np.repeat(np.arange(4), 500))
    # 64 components over few distinct values: reduced, deterministic, no NaN
    m2, v2, w2 = fit_gmm_1d(np.array([0.1, 0.1, 0.2]), 64)
    assert m2.size == 2 and np.isfinite(m2).all() and np.isfinite(v2).all()
    assert fit_gmm_1d(np.zeros(0))[0].size == 0


def test_vd_pipeline():
    p = synthetic_params("lenet300", "vd", density=0.004, seed=3)
    cm = compress_model("lenet300", p, "vd")
    assert cm.codebook.size <= 1 + 64 * 3, cm.codebook.size  # 64 centres per layer at most
    keep_total = 0
    for L, l in zip(get_arch("lenet300"), cm.layers):
        keep = priors.dropout_rate(p[f"{L.name}.theta"], p[f"{L.name}.log_sigma2"]) < 0.95
        keep_total += keep.sum()
        w = cm.to_params()[f"{L.name}.theta"]
        assert not w[~keep].any(), f"{L.name}: a weight with dropout rate >= 0.95 survived"
        err = np.abs(w[w != 0] - p[f"{L.name}.theta"][w != 0]).max()
        assert err < 0.05, f"{L.name}: quantization error {err}"
    assert np.count_nonzero(np.concatenate([l.weight.ravel() for l in cm.layers])) <= keep_total


@pytest.mark.parametrize("k", [1, 3, slow_param(16)])
def test_vd_components_and_prune_threshold(k):
    """vd_components bounds each layer's distinct values; prune_threshold is the dropout rate at and
    above which a weight is pruned (the synthetic model's pruned weights sit at 0.99995). k = 16 (four
    16-component EM fits per layer pair, seconds) is the slow tier's."""
    p = synthetic_params("lenet300", "vd", density=0.01, seed=3)
    cm = compress_model("lenet300", p, "vd", vd_components=k)
    for L in cm.layers:
        assert 1 <= len(np.unique(L.weight[L.weight != 0])) <= k, L.name
    nz = lambda c: sum(int(np.count_nonzero(L.weight)) for L in c.layers)
    assert nz(compress_model("lenet300", p, "vd", vd_components=k, prune_threshold=0.99999)) > nz(cm)
    with pytest.raises(ValueError, match="vd_components"):
        compress_model("lenet300", p, "vd", vd_components=0)
    with pytest.raises(ValueError, match="threshold"):
        compress_model("lenet300", p, "vd", prune_threshold=1.0)


@pytest.mark.parametrize("per_layer,n_big", [(True, 4000), slow_param(True, 40000), slow_param(False, 4000),
                                             slow_param(False, 40000)])
def test_vd_codebook_per_layer_or_shared(per_layer, n_big):
    """Two layers on very different scales (400 weights of std 0.3, n_big of std 0.01): a shared fit
    spends its components on the big layer. The 64-component EM fits take seconds (4000 weights) to
    tens of seconds (40000, thinned to cluster.FIT_MAX_POINTS): only the small per-layer case is in
    the fast tier."""
    rng = np.random.default_rng(5)
    thetas = {"a": rng.normal(0, 0.3, 400), "b": rng.normal(0, 0.01, n_big)}
    keep = {k: np.ones(v.shape, bool) for k, v in thetas.items()}
    codebook, symbols, q = cluster_vd(thetas, keep, per_layer=per_layer)
    assert codebook[0] == 0 and np.array_equal(codebook[symbols["a"]], q["a"])
    for k in thetas:
        assert len(np.unique(q[k])) <= 64, k
    rms = {k: np.sqrt(np.mean((q[k] - v) ** 2)) / v.std() for k, v in thetas.items()}
    if per_layer:  # measured 0.040 and 0.092 (n_big 40000), 0.040 and 0.064 (4000); one shared fit
        # gives 0.64 and 1.08 (40000), 0.32 and 1.09 (4000)
        assert rms["a"] < 0.08 and rms["b"] < 0.15, \
            f"per-layer fit: expected RMS error / std < 0.08 (a) and < 0.15 (b), got {rms}"
    else:
        assert len(codebook) <= 65, f"shared fit: expected at most 65 codebook entries, got {len(codebook)}"


def test_l2_keeps_float32_and_layouts():
    p = synthetic_params("lenet300", "l2", seed=4)
    cm = compress_model("lenet300", p, "l2")
    assert cm.codebook is None
    for L, l in zip(get_arch("lenet300"), cm.layers):
        assert l.layout == "dense", "an unpruned layer is cheaper stored dense"
        np.testing.assert_array_equal(l.weight, p[f"{L.name}.theta"].astype(np.float32))
    t = report(cm)["total"]
    assert 0.99 < t["cr_file"] <= 1.0, t["cr_file"]
    p["fc2.theta"][0, :50] = -0.0
    cm_csr = compress_model("lenet300", p, "l2", layout="csr")
    assert report(cm_csr)["total"]["file_bytes"] > t["file_bytes"]
    assert decode(encode(cm_csr)).equals(cm_csr)


@pytest.mark.parametrize("arch,method", [("lenet300", "vdsws"), ("lenet5", "sws"), ("lenet5", "l2")])
def test_report_accounting(arch, method):
    cm = compress_model(arch, synthetic_params(arch, method, density=0.02, seed=6), method)
    rep = report(cm)
    t = rep["total"]
    data = encode(cm)
    assert t["file_bytes"] == len(data)
    W, B = n_weights(arch), sum(L.weight_shape[0] for L in get_arch(arch))
    assert (t["n_weights"], t["n_biases"]) == (W, B)
    assert t["cr_file"] == pytest.approx(32 * (W + B) / (8 * len(data)))
    paper = t["bits_values"] + t["bits_offsets"] + t["bits_codebook"]
    assert t["cr_paper"] == pytest.approx(32 * W / paper)
    assert t["nonzeros"] == sum(int(np.count_nonzero(l.weight)) for l in cm.layers)
    for d, l in zip(rep["layers"], cm.layers):
        assert d["kept_shape"] == l.weight.shape and d["bytes_bias"] == 4 * l.bias.size
        if d["layout"] == "csr":
            assert d["n_entries"] == d["nonzeros"] + d["n_fill"]
            assert d["bits_offsets"] == d["n_entries"] * d["offset_bits"]
    assert "compression ratio" in format_report(rep)


def test_real_lenet300_shapes_random_sparse(tmp_path):
    """Random sparse weights at the full lenet300 shapes (no mixture structure needed): the file round-trips,
    pruned logits equal the masked network, and the ratios are reported."""
    rng = np.random.default_rng(9)
    K = 17
    half = np.linspace(0.05, 0.5, (K - 1) // 2)
    mu = np.concatenate([[0.0], -half[::-1], half]).astype(np.float32).astype(np.float64)  # separated
    p = {"gmm.mu": mu, "gmm.log_lambda": np.full(K, np.log(1e5)), "gmm.log_pi": 0.1 * rng.standard_normal(K)}
    for L in get_arch("lenet300"):
        n = int(np.prod(L.weight_shape))
        t = np.where(rng.random(n) < 0.015, rng.choice(mu[1:], n), 0.0)
        p[f"{L.name}.theta"] = t.reshape(L.weight_shape)
        p[f"{L.name}.bias"] = 0.1 * rng.standard_normal(L.weight_shape[0])
    cm = compress_model("lenet300", p, "sws")
    path = tmp_path / "r.rvbc"
    write_rvbc(str(path), cm)
    back = read_rvbc(str(path))
    assert back.equals(cm)
    x = rng.random((8, 784))
    h = x
    for i, L in enumerate(get_arch("lenet300")):
        h = h @ p[f"{L.name}.theta"].T + p[f"{L.name}.bias"].astype(np.float32)
        h = np.maximum(h, 0) if i < 2 else h
    got = evaluate(back, x)
    assert np.abs(got - h).max() < 1e-5 * max(1.0, np.abs(h).max()), np.abs(got - h).max()
    t = report(cm)["total"]
    assert t["cr_paper"] > t["cr_file"] > 20, (t["cr_paper"], t["cr_file"])


def _write_npz(path, arch, params):
    np.savez(path, **{f"param/{k}": v for k, v in params.items()}, **{"config/arch": np.array(arch)})


def test_cli_round_trip(tmp_path, capsys):
    p = synthetic_params("lenet5", "vdsws", density=0.02, seed=8)
    src, out, dec = tmp_path / "p.npz", tmp_path / "m.rvbc", tmp_path / "d.npz"
    _write_npz(src, "lenet5", p)
    assert main(["encode", str(src), str(out), "--method", "vdsws", "--huffman-offsets"]) == 0
    assert main(["info", str(out)]) == 0
    assert "compression ratio" in capsys.readouterr().out
    assert main(["decode", str(out), str(dec)]) == 0
    with np.load(dec) as z:
        assert str(z["config/arch"]) == "lenet5"
        params = {k[6:]: z[k] for k in z.files if k.startswith("param/")}
    cm = read_rvbc(str(out))
    for k, v in cm.to_params().items():
        np.testing.assert_array_equal(params[k], v)
    # the decoded full-shape parameters, re-encoded as L2, compute the same logits
    x = np.random.default_rng(0).random((4, 784)).astype(np.float32)
    cm_l2 = compress_model("lenet5", params, "l2")
    np.testing.assert_allclose(evaluate(cm_l2, x), evaluate(cm, x), rtol=1e-5, atol=1e-6)
    bad = tmp_path / "bad.rvbc"
    bad.write_bytes(out.read_bytes()[:-3])
    assert main(["info", str(bad)]) == 2
    assert "truncated" in capsys.readouterr().err


def test_accuracy_decoded_equals_in_memory():
    """Stand-in for the end-to-end MNIST accuracy check (the trained models come from train.py): the
    decoded file's predictions equal the in-memory compressed model's on the bundled test images."""
    from refvbc.data import load_mnist

    x, y = load_mnist("test")
    x, y = x[:2000], y[:2000]
    cm = compress_model("lenet300", synthetic_params("lenet300", "vdsws", density=0.05, seed=1), "vdsws")
    assert accuracy(decode(encode(cm)), x, y) == accuracy(cm, x, y)


def test_bad_arguments():
    p = synthetic_params("lenet300", "sws", seed=0)
    with pytest.raises(ValueError, match="method"):
        compress_model("lenet300", p, "svd")
    with pytest.raises(ValueError, match="log_sigma2"):
        compress_model("lenet300", p, "vd")
    q = dict(p)
    q["fc1.theta"] = q["fc1.theta"][:, :10]
    with pytest.raises(ValueError, match="fc1.theta"):
        compress_model("lenet300", q, "sws")
    with pytest.raises(ValueError, match="architecture"):
        compress_model("lenet7", p, "sws")
    cm = compress_model("lenet300", p, "sws")
    with pytest.raises(ValueError, match="shape"):
        evaluate(cm, np.zeros((2, 700), np.float32))
    codebook, syms = build_codebook({"a": np.array([0.0, 0.5, -0.5, 0.5], np.float32)})
    assert codebook.tolist() == [0.0, -0.5, 0.5] and syms["a"].tolist() == [0, 2, 1, 2]
