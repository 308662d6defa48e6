"""refvbc/train.py units: the time-remaining estimate, which phases run given --init-from, the plan
line, the mixture's initial spacing (--delta-mu-over)."""
import numpy as np
import pytest

from refvbc import models, priors
from refvbc.train import Config, Eta, phase_setup, phases_to_train


def test_eta_follows_recent_epochs():
    cfg = Config(method="vdsws", epochs={"l2": 10, "sws": 0, "vd": 20, "vdsws": 5})
    eta = Eta(cfg, ["l2", "vd", "vdsws"])
    eta.start("l2", [])
    for e in range(1, 4):
        text = eta.after_epoch("l2", e, 10.0)
    # l2: 7 epochs x 10 s left; vd and vdsws not started: estimated at l2's 10 s per epoch
    assert text == "  eta phase 1.2 min, run 5.3 min", text
    for e in range(4, 10):
        text = eta.after_epoch("l2", e, 60.0)  # load went up: the last 5 epochs decide
    assert text == "  eta phase 1.0 min, run 26.0 min", text
    eta.done("l2")
    eta.start("vd", [{"seconds": 6.0}] * 10)
    text = eta.after_epoch("vd", 11, 6.0)
    assert text == "  eta phase 0.9 min, run 1.4 min", text


@pytest.mark.parametrize("method, provided, want", [
    ("vdsws", {}, ["l2", "vd", "vdsws"]),
    ("vdsws", {"vd"}, ["vdsws"]),
    ("vdsws", {"l2"}, ["vd", "vdsws"]),
    ("all", {"l2"}, ["sws", "vd", "vdsws"]),
    ("all", {"l2", "vd"}, ["sws", "vdsws"]),
    ("all", {"l2", "sws", "vd", "vdsws"}, []),
    ("sws", {"sws"}, []),
])
def test_phases_to_train(method, provided, want):
    assert phases_to_train(Config(method=method), provided) == want


def _vd_start(seed=0):
    """A LeNet-300-100 VD start model with ~90% of its weights pruned (small theta, log sigma2 = -2)."""
    rng = np.random.default_rng(seed)
    params = models.init_params("lenet300", rng, dtype=np.float64)
    params = models.add_log_sigma2(params, "lenet300", -10.0)
    for k in models.weight_keys("lenet300"):
        pruned = rng.random(params[k].shape) < 0.9
        params[k] = np.where(pruned, 1e-3 * params[k], 10.0 * params[k])
        ls = k.replace(".theta", ".log_sigma2")
        params[ls] = np.where(pruned, -2.0, -10.0)
    return params


@pytest.mark.parametrize("over", ["all", "survivors"])
def test_delta_mu_over(over):
    params = _vd_start()
    keys = models.weight_keys("lenet300")
    flat = np.concatenate([params[k].ravel() for k in keys])
    keep = np.concatenate([priors.keep_mask(params[k], params[k.replace(".theta", ".log_sigma2")]).ravel()
                           for k in keys])
    assert 0.05 < keep.mean() < 0.15, keep.mean()
    cfg = Config(arch="lenet300", method="vdsws", dtype="float64", delta_mu_over=over)
    got, _, _ = phase_setup(cfg, "vdsws", params)
    want = priors.mixture_init(flat if over == "all" else flat[keep], dtype=np.float64)
    for name, w in zip(("gmm.mu", "gmm.log_lambda", "gmm.log_pi"), want):
        np.testing.assert_array_equal(got[name], w, err_msg=f"{name} with delta_mu_over={over}")
    # the survivors' spread is ~10x wider here: the two readings give different spacings
    other = priors.mixture_init(flat[keep] if over == "all" else flat, dtype=np.float64)[0]
    assert not np.allclose(got["gmm.mu"], other), (got["gmm.mu"], other)


def test_delta_mu_over_deterministic_start_uses_every_weight():
    params = models.init_params("lenet300", np.random.default_rng(1), dtype=np.float64)
    cfg = Config(arch="lenet300", method="sws", dtype="float64", delta_mu_over="survivors")
    got, _, _ = phase_setup(cfg, "sws", params)
    flat = np.concatenate([params[k].ravel() for k in models.weight_keys("lenet300")])
    np.testing.assert_array_equal(got["gmm.mu"], priors.mixture_init(flat, dtype=np.float64)[0])


def test_delta_mu_over_rejects_unknown_reading():
    with pytest.raises(ValueError, match="delta_mu_over must be 'all' or 'survivors', got 'some'"):
        phase_setup(Config(method="vdsws", delta_mu_over="some"), "vdsws", _vd_start())
