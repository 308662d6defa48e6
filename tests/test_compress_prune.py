"""Structural pruning across layers: the pruned network computes the masked full network's logits."""

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from support.gradcheck import rel_err
from refvbc import priors
from refvbc.arch import get_arch
from refvbc.compress import compress_model, decode, encode, evaluate
from refvbc.compress.prune import geometry
from refvbc.compress.synthetic import synthetic_params


def reference_forward(arch, weights, biases, x):
    """Independent float64 forward of the full network (dense / valid conv + ReLU + 2x2 max-pool)."""
    h = x.astype(np.float64)
    layers = get_arch(arch)
    for i, L in enumerate(layers):
        w, b = weights[L.name].astype(np.float64), biases[L.name].astype(np.float64)
        if L.kind == "conv":
            win = sliding_window_view(h, w.shape[2:], axis=(2, 3))  # (N, C, OH, OW, kh, kw)
            h = np.einsum("nchwij,fcij->nfhw", win, w) + b[None, :, None, None]
            h = np.maximum(h, 0)
            n, c, hh, ww = h.shape
            h = h.reshape(n, c, hh // 2, 2, ww // 2, 2).max(axis=(3, 5))
        else:
            h = h.reshape(h.shape[0], -1) @ w.T + b
            if i < len(layers) - 1:
                h = np.maximum(h, 0)
    return h


def quantized_reference(arch, p):
    """Mixture-argmax weights (component 0 -> 0) and float32 biases, computed without the compressor."""
    mu = p["gmm.mu"]
    w, b = {}, {}
    for L in get_arch(arch):
        k = priors.mixture_responsibility_argmax(p[f"{L.name}.theta"], mu, p["gmm.log_lambda"], p["gmm.log_pi"])
        w[L.name] = np.where(k == 0, 0.0, mu[k].astype(np.float32).astype(np.float64))
        b[L.name] = p[f"{L.name}.bias"].astype(np.float32)
    return w, b


def _inputs(arch, n=6, seed=1):
    rng = np.random.default_rng(seed)
    return rng.random((n, 784)) if arch == "lenet300" else rng.random((n, 1, 28, 28))


def crafted_lenet300():
    p = synthetic_params("lenet300", "sws", density=0.05, dead_units=0.2, seed=3)
    t1, t2 = p["fc1.theta"], p["fc2.theta"]
    mu = p["gmm.mu"]
    t1[3], p["fc1.bias"][3] = 0.0, 0.5  # constant unit (relu(0.5) > 0): folded into fc2's bias
    t2[:, 3] = 0.0
    t2[::7, 3] = mu[2]
    t1[4], p["fc1.bias"][4] = 0.0, -0.3  # zero row, negative bias: outputs 0, removed
    t1[5] = mu[5]                        # live row, but fc2 never reads it: dead-out
    p["fc1.bias"][5] = 0.7
    t2[:, 5] = 0.0
    p["fc2.theta"][7], p["fc2.bias"][7] = 0.0, 0.4  # constant unit of fc2, folded into fc3's bias
    p["fc3.theta"][:, 7] = mu[13]
    return p


def crafted_lenet5():
    p = synthetic_params("lenet5", "sws", density=0.05, dead_units=0.1, seed=4)
    mu = p["gmm.mu"]
    c1, c2, f1 = p["conv1.theta"], p["conv2.theta"], p["fc1.theta"]
    c1[1], p["conv1.bias"][1] = 0.0, 0.2   # constant conv1 channel: folded into conv2 (kernel sums)
    c2[:, 1] = 0.0
    c2[::3, 1, 2, 2] = mu[3]
    c2[::5, 1, 0, 4] = mu[12]
    c1[3], p["conv1.bias"][3] = 0.0, -0.1  # dead conv1 channel
    c2[2], p["conv2.bias"][2] = 0.0, 0.3   # constant conv2 channel: folded into fc1 through 16 columns
    f1[:, 32:48] = 0.0
    f1[::4, 32:48] = mu[14]
    c2[4] = mu[6]                          # live conv2 channel whose 16 fc1 columns are all zero
    p["conv2.bias"][4] = 0.5
    f1[:, 64:80] = 0.0
    return p


@pytest.mark.parametrize("arch,make", [("lenet300", crafted_lenet300), ("lenet5", crafted_lenet5)])
@pytest.mark.parametrize("fold", [True, False])
def test_pruned_equals_masked_full(arch, make, fold):
    p = make()
    cm = compress_model(arch, p, "sws", fold_constants=fold)
    w, b = quantized_reference(arch, p)
    x = _inputs(arch)
    ref = reference_forward(arch, w, b, x)
    got = evaluate(cm, x)
    # folded biases are rounded to float32 once; without folding only summation order differs
    tol = 1e-5 if fold else 1e-10
    err = rel_err(got, ref)
    assert err < tol, f"pruned logits differ from the masked full network: rel err {err:.3g} (tol {tol})"
    # the decoded file computes the very same logits as the in-memory model
    np.testing.assert_array_equal(evaluate(decode(encode(cm)), x), got)
    # and the equivalent full-shape parameters of to_params() too
    full = cm.to_params()
    ref2 = reference_forward(arch, {k[:-6]: v for k, v in full.items() if k.endswith(".theta")},
                             {k[:-5]: v for k, v in full.items() if k.endswith(".bias")}, x)
    assert np.abs(ref2 - got).max() <= 1e-10 * max(np.abs(got).max(), 1.0)


def test_lenet300_units_removed_as_designed():
    p = crafted_lenet300()
    cm = compress_model("lenet300", p, "sws")
    fc1, fc2, fc3 = cm.layers
    assert not fc1.out_mask[[3, 4, 5]].any(), f"fc1 units 3,4,5 should go: {fc1.out_mask[[3, 4, 5]]}"
    assert not fc2.out_mask[7], "fc2 constant unit 7 should be folded away"
    assert fc3.out_mask.all(), "logits are never pruned"
    cm_keep = compress_model("lenet300", p, "sws", fold_constants=False)
    assert cm_keep.layers[0].out_mask[3] and cm_keep.layers[1].out_mask[7], "constant units kept without folding"
    assert not cm_keep.layers[0].out_mask[[4, 5]].any()
    # input pixels never read by fc1 are gone
    dead_pixels = ~(p["fc1.theta"][fc1.out_mask] != 0).any(axis=0)
    assert not fc1.in_mask[dead_pixels].any()
    assert fc1.weight.shape == (fc1.out_mask.sum(), fc1.in_mask.sum())


def test_lenet5_flatten_boundary():
    p = crafted_lenet5()
    cm = compress_model("lenet5", p, "sws")
    conv1, conv2, fc1, fc2 = cm.layers
    assert not conv1.out_mask[[1, 3]].any(), "conv1 channels 1 (folded) and 3 (dead) should go"
    assert not conv2.out_mask[[2, 4]].any(), "conv2 channels 2 (folded) and 4 (unread) should go"
    assert conv2.weight.shape[1] == conv1.out_mask.sum(), "conv2 input channels follow conv1's kept channels"
    assert fc1.weight.shape[1] == 16 * conv2.out_mask.sum(), \
        f"fc1 must keep 16 columns per kept conv2 channel: {fc1.weight.shape} vs {conv2.out_mask.sum()}"
    g = geometry("lenet5")[2]
    assert (g.n_in_units, g.unit_width) == (50, 16)
    # the kept fc1 columns are exactly the 16-column blocks of the kept channels, in (C, H, W) order
    kept_cols = (np.flatnonzero(conv2.out_mask)[:, None] * 16 + np.arange(16)).ravel()
    full = cm.to_params()["fc1.theta"]
    np.testing.assert_array_equal(full[fc1.out_mask][:, kept_cols], fc1.weight)
