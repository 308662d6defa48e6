"""Tests of refvbc/kernels/noise.py (the seeded numba ziggurat) against its NumPy twin, its distribution,
and models.draw_noise's use of it."""

import numba
import numpy as np
import pytest
from scipy import stats

from refvbc import models
from refvbc.kernels import noise as N

DTYPES = [np.float32, np.float64]
SHAPES = [(1, 1), (3, 5000), (7, 20, 4, 4), (64, 10)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed,stream", [(0, 0), (2 ** 63 - 1, 3), (123456789, 1)])
def test_normal_fill_matches_numpy_twin(dtype, shape, seed, stream):
    got = N.normal_fill_numba(np.empty(shape, dtype=dtype), seed, stream)
    ref = N.normal_fill_numpy(shape, seed, stream, dtype)
    bad = np.flatnonzero(got.ravel() != ref.ravel())
    assert bad.size == 0, (f"{bad.size} numbers differ; first at {bad[0]}: expected {ref.ravel()[bad[0]]!r}, "
                           f"got {got.ravel()[bad[0]]!r}")


def test_normal_fill_distribution():
    x = N.normal_fill_numba(np.empty((400, 5000)), 2024, 0).ravel()  # 2e6 numbers
    assert abs(x.mean()) < 5 / np.sqrt(x.size), f"mean {x.mean():.2e}, expected 0"
    assert abs(x.var() - 1) < 5 * np.sqrt(2 / x.size), f"variance {x.var():.5f}, expected 1"
    p = stats.kstest(x, "norm").pvalue
    assert p > 1e-3, f"Kolmogorov-Smirnov p-value {p:.2e} against N(0, 1)"
    tail = np.mean(np.abs(x) > N.ZIG_R)
    expected = 2 * stats.norm.sf(N.ZIG_R)
    assert abs(tail - expected) < 5 * np.sqrt(expected / x.size), f"tail mass {tail:.2e}, expected {expected:.2e}"
    rows = N.normal_fill_numba(np.empty((2, 200000)), 5, 0)
    r = np.corrcoef(rows[0], rows[1])[0, 1]
    assert abs(r) < 5 / np.sqrt(200000), f"correlation between rows {r:.2e}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_serial_and_parallel_kernels_agree(dtype):
    shape = (7, 3001)
    a = np.empty(shape, dtype)
    b = np.empty(shape, dtype)
    N.normal_fill(a, np.uint64(11), np.uint64(4), N.KN, N.WN, N.FN)
    N.normal_fill_serial(b, np.uint64(11), np.uint64(4), N.KN, N.WN, N.FN)
    np.testing.assert_array_equal(a, b, err_msg="parallel vs serial kernel")
    big = np.empty((3, N.PARALLEL_MIN // 3 + 1), dtype)  # normal_fill_numba takes the parallel kernel here
    ref = N.normal_fill_numpy(big.shape, 11, 4, dtype)
    np.testing.assert_array_equal(N.normal_fill_numba(big, 11, 4), ref, err_msg="parallel kernel vs NumPy twin")


def test_normal_fill_independent_of_thread_count():
    a = N.normal_fill_numba(np.empty((33, 1000), np.float32), 9, 2)
    n = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        b = N.normal_fill_numba(np.empty((33, 1000), np.float32), 9, 2)
    finally:
        numba.set_num_threads(n)
    np.testing.assert_array_equal(a, b, err_msg="noise with 1 thread vs the default thread count")


@pytest.mark.parametrize("arch", ["lenet300", "lenet5"])
def test_draw_noise_fixed_by_rng_and_reuses_buffers(arch):
    a = models.draw_noise(arch, 5, np.random.default_rng([0, 2, 7]), np.float32)
    buf = {}
    b = models.draw_noise(arch, 5, np.random.default_rng([0, 2, 7]), np.float32, out=buf)
    assert b is buf
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"noise[{k}] from the same rng")
        assert a[k].dtype == np.float32 and a[k].shape[0] == 5
    first = dict(b)
    c = models.draw_noise(arch, 5, np.random.default_rng([0, 2, 8]), np.float32, out=buf)
    for k in a:
        assert c[k] is first[k], f"noise[{k}] buffer not reused"
        assert not np.array_equal(a[k], c[k]), f"noise[{k}]: another rng gave the same noise"
    e = models.draw_noise(arch, 5, np.random.default_rng(1), np.float64)
    ref = np.random.default_rng(1)
    for layer in e:
        want = ref.standard_normal(e[layer].shape)
        np.testing.assert_array_equal(e[layer], want, err_msg=f"float64 noise[{layer}] vs numpy's generator")
