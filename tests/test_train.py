"""refvbc/train.py units: the time-remaining estimate (refvbc/eta.py) and its replay of the committed
LeNet-300-100 log, which phases run given --init-from, the plan line, the mixture's initial spacing
(--delta-mu-over), the epoch budget and the stepper's reuse."""
import os

import numpy as np
import pytest
from conftest import ROOT

from refvbc import eta as eta_mod
from refvbc import models, priors
from refvbc.config import Config
from refvbc.eta import Eta, epoch_seconds, replay
from refvbc.phases import EPOCH_COST
from refvbc.train import EpochBudget, phase_setup, phases_to_train

# a single-process full run of the README's command (seed 2 of Table 2), on an otherwise idle machine
LENET300_LOG = os.path.join(ROOT, "docs", "results", "lenet300", "seeds", "seed2", "train.log")


def test_eta_uses_each_phases_cost_from_the_first_epoch():
    """The L2 epochs of LeNet-300-100 are ~4x cheaper than the SWS ones: after the first L2 epoch at
    the measured speed the run ETA is the whole default schedule (about 34 minutes), not every epoch
    at the L2 epoch's cost."""
    c, n = EPOCH_COST["lenet300"], Config().epochs
    eta = Eta("lenet300", n, ["l2", "sws", "vd", "vdsws"])
    eta.start("l2", [])
    text = eta.after_epoch("l2", 1, c["l2"])
    left_l2 = (n["l2"] - 1) * c["l2"]
    want = left_l2 + n["sws"] * c["sws"] + n["vd"] * c["vd"] + n["vdsws"] * c["vdsws"]
    assert eta.remaining("l2") == pytest.approx((left_l2, want))
    assert text == f"  eta phase {left_l2 / 60:.1f} min, run {want / 60:.1f} min", text
    assert 30 * 60 <= want <= 40 * 60, f"expected the idle schedule to take 30-40 min, got {want / 60:.1f} min"


def test_eta_scale_is_the_median_of_observed_over_expected():
    cfg = Config(method="vdsws", epochs={"l2": 10, "sws": 0, "vd": 20, "vdsws": 5})
    c = EPOCH_COST["lenet300"]
    eta = Eta("lenet300", cfg.epochs, ["l2", "vd", "vdsws"])
    eta.start("l2", [])
    for e in range(1, 4):
        eta.after_epoch("l2", e, 2 * c["l2"])  # a machine twice as slow as the table's
    assert eta.remaining("l2") == pytest.approx((7 * 2 * c["l2"], 2 * (7 * c["l2"] + 20 * c["vd"] + 5 * c["vdsws"])))
    eta.after_epoch("l2", 4, 100 * c["l2"])  # one slow epoch does not move the median
    assert eta.remaining("l2")[1] == pytest.approx(2 * (6 * c["l2"] + 20 * c["vd"] + 5 * c["vdsws"]))
    eta.done("l2")
    eta.start("vd", [{"seconds": 3 * c["vd"]}] * 10)  # a resumed phase's epochs count too
    eta.after_epoch("vd", 11, 3 * c["vd"])
    assert eta.remaining("vd") == pytest.approx((9 * 3 * c["vd"], 3 * (9 * c["vd"] + 5 * c["vdsws"])))
    text = eta.after_epoch("vd", 12, 3 * c["vd"])
    assert text == f"  eta phase {8 * 3 * c['vd'] / 60:.1f} min, run {3 * (8 * c['vd'] + 5 * c['vdsws']) / 60:.1f} min"


def test_eta_replay_of_the_lenet300_log():
    """The epoch times of a full LeNet-300-100 run of the README's command (one process, every phase,
    the default schedule), replayed in training order: after the first epoch and at every phase change
    (after the last epoch of a phase and after the first of the next) the run ETA is within +-25% of
    the time the log says was left."""
    seconds = epoch_seconds(LENET300_LOG)
    assert {ph: len(s) for ph, s in seconds.items()} == Config().epochs
    points = replay("lenet300", seconds)
    assert [p.when for p in points] == ["l2 epoch 1", "end of l2", "sws epoch 1", "end of sws", "vd epoch 1",
                                        "end of vd", "vdsws epoch 1"]
    for p in points:
        assert 0.75 <= p.ratio <= 1.25, f"{p.when}: ETA {p.eta_s:.0f} s vs actual {p.actual_s:.0f} s"
    assert points[0].actual_s == pytest.approx(sum(map(sum, seconds.values())) - seconds["l2"][0])


def test_eta_replay_prints_the_measurement(capsys):
    assert eta_mod.main([LENET300_LOG, "--arch", "lenet300"]) == 0
    out = capsys.readouterr().out
    assert "end of l2" in out and "ETA/actual" in out and len(out.strip().split("\n")) == 9, out


def test_epoch_budget():
    unlimited, two = EpochBudget(None), EpochBudget(2)
    for _ in range(5):
        assert not unlimited.exhausted()
        unlimited.spend()
    assert not two.exhausted()
    two.spend()
    two.spend()
    assert two.exhausted()


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


# ----------------------------------------------------------------------------------------------------
# the number of mixture components (--components, Config.components)


@pytest.mark.parametrize("phase", ["sws", "vdsws"])
@pytest.mark.parametrize("K", [5, 17, 33])
def test_phase_setup_builds_a_mixture_of_cfg_components(phase, K):
    """A mixture phase starts from Table 3's initialisation with K = cfg.components components."""
    start = _vd_start() if phase == "vdsws" else models.init_params("lenet300", np.random.default_rng(2),
                                                                     dtype=np.float64)
    cfg = Config(arch="lenet300", method=phase, dtype="float64", components=K)
    got, lrs, _ = phase_setup(cfg, phase, start)
    w = models.mixture_init_weights("lenet300", got, cfg.delta_mu_over)
    want = priors.mixture_init(w, K=K, pi0=cfg.pi0, dtype=np.float64)
    for name, a in zip(("gmm.mu", "gmm.log_lambda", "gmm.log_pi"), want):
        assert got[name].shape == (K,), f"{name}: expected shape ({K},), got {got[name].shape}"
        np.testing.assert_array_equal(got[name], a, err_msg=f"{name} with components={K}")
    assert {"mu", "log_lambda", "log_pi"} <= set(lrs), f"the mixture groups are not trained: {sorted(lrs)}"


def test_phase_setup_of_a_phase_without_mixture_ignores_components():
    cfg = Config(arch="lenet300", method="vd", dtype="float64", components=33)
    got, _, _ = phase_setup(cfg, "vd", models.init_params("lenet300", np.random.default_rng(3), np.float64))
    assert not any(k.startswith("gmm.") for k in got), sorted(got)


def test_init_from_a_mixture_of_other_components_is_refused(tmp_path):
    """A start model whose mixture has 17 components does not belong to a --components 33 run."""
    from refvbc.train import RunError, load_init, save_params

    cfg = Config(arch="lenet300", method="sws", dtype="float64", components=17)
    params, _, _ = phase_setup(cfg, "sws", models.init_params("lenet300", np.random.default_rng(4), np.float64))
    save_params(str(tmp_path / "sws.npz"), "lenet300", params, phase="sws")
    assert set(load_init(Config(arch="lenet300", method="sws", init_from=str(tmp_path)))) == {"sws"}
    with pytest.raises(RunError, match=r"sws.npz: a mixture of shape \(17,\), but this run is --components 33"):
        load_init(Config(arch="lenet300", method="sws", components=33, init_from=str(tmp_path)))


def test_cuda_stepper_refuses_more_components_than_its_kernels_hold():
    """The numba.cuda kernels keep K sums per thread in shared memory (at most KMAX): a larger mixture
    is refused with a message before anything runs on a device."""
    from refvbc.kernels.cuda_prior import KMAX
    from refvbc.optim import Adam
    from refvbc.train import RunError, make_stepper

    K = KMAX + 1 + KMAX % 2  # the smallest odd K above KMAX
    cfg = Config(arch="lenet300", method="sws", components=K)
    params, lrs, coefs = phase_setup(cfg, "sws", models.init_params("lenet300", np.random.default_rng(5)))
    with pytest.raises(RunError, match=f"at most {KMAX} mixture components, got {K}"):
        make_stepper("cuda", "lenet300", params, Adam(lrs), coefs, 60000)
