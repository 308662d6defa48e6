"""Adam: PyTorch's formula checked step by step against values computed by hand, numba vs NumPy."""
import math

import numpy as np
import pytest

from refvbc.kernels.adam import adam_update
from refvbc.optim import TABLE3_LR, Adam, adam_update_numpy, flush_floors


def hand_adam(p0, gs, lr, b1=0.9, b2=0.999, eps=1e-8):
    """Scalar Adam written out from the formula, in Python floats."""
    p, m, v = p0, 0.0, 0.0
    out = []
    for t, g in enumerate(gs, 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mhat = m / (1 - b1 ** t)
        vhat = v / (1 - b2 ** t)
        p = p - lr * mhat / (math.sqrt(vhat) + eps)
        out.append(p)
    return out


def test_first_step_is_lr_times_sign():
    # With bias correction, the first Adam step is lr * g / (|g| + eps*...) ~= lr * sign(g).
    params = {"fc1.theta": np.array([1.0, -2.0, 3.0])}
    opt = Adam({"theta": 0.1})
    opt.step(params, {"fc1.theta": np.array([0.5, -4.0, 0.0])})
    want = np.array([1.0 - 0.1 * 0.5 / (0.5 + 1e-8), -2.0 + 0.1 * 4.0 / (4.0 + 1e-8), 3.0])
    np.testing.assert_allclose(params["fc1.theta"], want, rtol=0, atol=1e-15,
                               err_msg=f"expected {want}, got {params['fc1.theta']}")


@pytest.mark.parametrize("use_numba", [True, False])
def test_three_steps_match_hand_formula(use_numba):
    gs = [0.3, -0.1, 0.25]
    params = {"conv1.theta": np.array([0.7]), "gmm.log_pi": np.array([0.2])}
    opt = Adam({"theta": 1e-2, "log_pi": 3e-3}, use_numba=use_numba)
    for t, g in enumerate(gs):
        opt.step(params, {"conv1.theta": np.array([g]), "gmm.log_pi": np.array([2 * g])})
        want_t = hand_adam(0.7, gs[:t + 1], 1e-2)[-1]
        want_p = hand_adam(0.2, [2 * x for x in gs[:t + 1]], 3e-3)[-1]
        assert abs(params["conv1.theta"][0] - want_t) < 1e-15, (t, want_t, params["conv1.theta"][0])
        assert abs(params["gmm.log_pi"][0] - want_p) < 1e-15, (t, want_p, params["gmm.log_pi"][0])


def test_group_learning_rates_from_names_and_frozen_groups():
    params = {"fc1.theta": np.zeros(2), "fc1.bias": np.zeros(2), "fc1.log_sigma2": np.zeros(2),
              "gmm.mu": np.zeros(2)}
    g = {k: np.ones(2) for k in params}
    opt = Adam({k: v for k, v in TABLE3_LR.items() if k != "mu"})
    opt.step(params, g)
    for k, grp in [("fc1.theta", "theta"), ("fc1.bias", "bias"), ("fc1.log_sigma2", "log_sigma2")]:
        np.testing.assert_allclose(params[k], -TABLE3_LR[grp], rtol=1e-6, err_msg=k)
    assert np.all(params["gmm.mu"] == 0), "group without a learning rate must stay frozen"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 7, 1000, 4099, 65537])
def test_numba_kernel_matches_numpy(dtype, n):
    rng = np.random.default_rng(n)
    p, g, m, v = (rng.standard_normal(n).astype(dtype) for _ in range(4))
    v = np.abs(v)
    a = [x.copy() for x in (p, g, m, v)]
    b = [x.copy() for x in (p, g, m, v)]
    args = [dtype(x) for x in (1e-3, 0.9, 0.999, 1e-8, 1 - 0.9 ** 3, 1 - 0.999 ** 3, *flush_floors(dtype))]
    adam_update(*a, *args)
    adam_update_numpy(*b, *args)
    # bit for bit: both compute in the arrays' dtype with the same operations in the same order (a
    # float64 update of float32 arrays, as numba makes of a Python literal like 1.0, fails this)
    for name, x, y in zip("pgmv", a, b):
        np.testing.assert_array_equal(x, y, err_msg=f"{name} differs ({dtype.__name__})")


def test_state_roundtrip_continues_identically():
    rng = np.random.default_rng(0)
    p1 = {"fc1.theta": rng.standard_normal(5)}
    p2 = {"fc1.theta": p1["fc1.theta"].copy()}
    o1, o2 = Adam({"theta": 1e-2}), Adam({"theta": 1e-2})
    gs = [rng.standard_normal(5) for _ in range(4)]
    for g in gs[:2]:
        o1.step(p1, {"fc1.theta": g})
        o2.step(p2, {"fc1.theta": g})
    o3 = Adam({"theta": 1e-2})
    o3.load_state_dict(o2.state_dict())
    for g in gs[2:]:
        o1.step(p1, {"fc1.theta": g})
        o3.step(p2, {"fc1.theta": g})
    assert np.array_equal(p1["fc1.theta"], p2["fc1.theta"])


def test_shape_mismatch_is_clear():
    with pytest.raises(ValueError, match="fc1.theta"):
        Adam({"theta": 1.0}).step({"fc1.theta": np.zeros(3)}, {"fc1.theta": np.zeros(4)})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_tensor_in_halves_matches_one_pass(dtype):
    """Adam.step updates tensors of >= PARALLEL_MIN entries in two halves (two threads): the same numbers
    as one adam_update call over the whole tensor."""
    from refvbc import optim
    rng = np.random.default_rng(4)
    n = optim.PARALLEL_MIN + 1001
    p0 = rng.standard_normal(n).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    opt = Adam({"theta": 1e-2})
    params = {"fc.theta": p0.copy()}
    opt.step(params, {"fc.theta": g})
    p, m, v = p0.copy(), np.zeros(n, dtype), np.zeros(n, dtype)
    d = dtype
    adam_update(p, g, m, v, d(1e-2), d(0.9), d(0.999), d(1e-8), d(1 - 0.9), d(1 - 0.999), *map(d, flush_floors(d)))
    np.testing.assert_array_equal(params["fc.theta"], p, err_msg="Adam in halves vs one pass")
    np.testing.assert_array_equal(opt.m["fc.theta"], m, err_msg="first moment")
    np.testing.assert_array_equal(opt.v["fc.theta"], v, err_msg="second moment")


@pytest.mark.parametrize("use_numba", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_results_are_flushed_to_zero(dtype, use_numba):
    """Moments that an update leaves below the smallest normal number `tiny`, and parameters below
    sqrt(tiny), are stored as 0 (refvbc/optim.py, "Subnormals"); other values are untouched by the rule."""
    tiny, floor = flush_floors(dtype)
    assert floor == np.sqrt(tiny) and floor * floor >= tiny * (1 - 1e-6), (tiny, floor)
    # a zero gradient and m = 0 leave p unchanged unless flushed
    p = np.array([tiny / 4, -tiny / 1024, 3 * tiny, floor / 2, -floor * 0.999, floor, 1.0], dtype)
    m = np.zeros(7, dtype)
    v = np.zeros(7, dtype)
    m[6], v[6] = tiny / 8, tiny / 2  # 0.9 * tiny/8 is subnormal -> 0 (p[6] moves by ~1e-33)
    opt = Adam({"theta": 1e-3}, use_numba=use_numba)
    opt.m["fc.theta"], opt.v["fc.theta"] = m, v
    params = {"fc.theta": p}
    opt.step(params, {"fc.theta": np.zeros(7, dtype)})
    got = params["fc.theta"]
    assert np.all(got[:5] == 0), f"parameters below sqrt(tiny) = {floor:.3g} not flushed: {got[:5]}"
    assert got[5] == dtype(floor) and got[6] == 1.0, f"parameters at or above the floor changed: {got[5:]}"
    assert opt.m["fc.theta"][6] == 0 and opt.v["fc.theta"][6] == 0, \
        f"subnormal moments not flushed: m {opt.m['fc.theta'][6]}, v {opt.v['fc.theta'][6]}"


def test_small_but_normal_moments_are_kept():
    """The moments' floor stays at tiny: a second moment of 1e-30 (a gradient of 1e-15) is kept."""
    opt = Adam({"theta": 1e-3})
    params = {"fc.theta": np.ones(1, np.float32)}
    opt.step(params, {"fc.theta": np.full(1, 1e-15, np.float32)})
    assert opt.v["fc.theta"][0] > 0 and opt.m["fc.theta"][0] > 0, (opt.m["fc.theta"], opt.v["fc.theta"])


def test_float32_update_runs_in_float32():
    """No float64 arithmetic in the float32 specialization of the Adam kernel (a Python literal such as
    1.0 - beta1 made numba compute the whole update in float64: 3.4x slower, and not float32 Adam)."""
    from support.numba_ir import float64_arithmetic
    f = np.float32
    arrays = [np.ones(16, f) for _ in range(4)]
    args = [f(x) for x in (1e-3, 0.9, 0.999, 1e-8, 0.1, 0.001, *flush_floors(f))]
    lines = float64_arithmetic(adam_update, *arrays, *args)
    assert not lines, f"expected no float64 arithmetic, found {len(lines)} instructions, e.g. {lines[:3]}"
