"""refvbc/train.py units: the time-remaining estimate, which phases run given --init-from, the plan line."""
import pytest

from refvbc.train import Config, Eta, phases_to_train


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
