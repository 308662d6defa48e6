"""The phase table (refvbc/phases.py) and the per-epoch schedules of the mixture phases."""
import numpy as np
import pytest

from refvbc.phases import (EPOCH_COST, METHODS, PHASES, epoch_cost, lr_factor, method_phases, ramp_factor,
                           tau2_at)


def test_table_is_the_papers():
    assert METHODS == ("l2", "sws", "vd", "vdsws")
    assert [PHASES[m].id for m in METHODS] == [0, 1, 2, 3], "phase ids seed the random streams: never renumber"
    assert {m: PHASES[m].start for m in METHODS} == {"l2": None, "sws": "l2", "vd": "l2", "vdsws": "vd"}
    assert PHASES["l2"].groups == ("theta", "bias")
    assert PHASES["vd"].groups == ("theta", "bias", "log_sigma2")
    assert PHASES["sws"].groups == ("theta", "bias", "mu", "log_lambda", "log_pi")
    assert set(PHASES["vdsws"].groups) == {"theta", "bias", "log_sigma2", "mu", "log_lambda", "log_pi"}
    assert [m for m in METHODS if PHASES[m].weight_decay] == ["l2"]


@pytest.mark.parametrize("method, want", [("l2", ["l2"]), ("sws", ["l2", "sws"]), ("vd", ["l2", "vd"]),
                                          ("vdsws", ["l2", "vd", "vdsws"]),
                                          ("all", ["l2", "sws", "vd", "vdsws"])])
def test_method_phases(method, want):
    assert method_phases(method) == want


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match="unknown method 'foo'"):
        method_phases("foo")


@pytest.mark.parametrize("n", [1, 4, 50, 101])
def test_schedules(n):
    assert all(lr_factor(e, n, None) == 1.0 for e in range(n))
    assert all(tau2_at(e, n, 0.02, None, 0.5) == 0.02 for e in range(n))
    f = [lr_factor(e, n, 0.5) for e in range(n)]
    first = int(round(0.5 * n))
    assert f[:first] == [1.0] * first, f
    assert all(b < a for a, b in zip(f[first:], f[first + 1:])), f"not decreasing: {f}"
    assert f[-1] > 0 and abs(f[-1] - 1.0 / (n - first)) < 1e-12, f
    t = [tau2_at(e, n, 0.02, 0.2, 0.5) for e in range(n)]
    assert t[:first] == [0.02] * first and abs(t[-1] - 0.2) < 1e-12, t
    assert np.all(np.diff(t) >= 0), t
    assert ramp_factor(0, n, 0.0) == pytest.approx(1.0 / n)


def test_file_format_codes_cover_the_phases():
    from refvbc.compress.model import METHODS as FILE_CODES

    assert set(FILE_CODES) == set(METHODS), (FILE_CODES, METHODS)


def test_epoch_costs():
    """Every measured arch has a relative epoch cost for every phase; an arch not measured costs 1 per
    epoch in every phase (the ETA then extrapolates the observed epochs evenly)."""
    for arch, cost in EPOCH_COST.items():
        assert tuple(cost) == METHODS and all(c > 0 for c in cost.values()), arch
        assert [epoch_cost(arch, ph) for ph in METHODS] == list(cost.values())
    assert epoch_cost("lenet1", "vd") == 1.0
