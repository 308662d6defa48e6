"""refvbc.parallel: results do not depend on the thread count (the parts are fixed by the shapes)."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT  # the subprocesses import refvbc from here

from refvbc import parallel

SCRIPT = r"""
import sys, numpy as np
from refvbc import models, objective, train
from refvbc.optim import Adam
rng = np.random.default_rng(0)
p = models.add_log_sigma2(models.init_params("lenet5", rng), "lenet5")
x = rng.random((100, 1, 28, 28)).astype(np.float32)
y = rng.integers(0, 10, 100)
st = train.CpuStepper("lenet5", p, Adam({"theta": 1e-3, "bias": 1e-3, "log_sigma2": 1e-3}),
                      dict(tau1=1.0, tau2=0.0, weight_decay=0.0), 60000)
for e in range(2):
    st.step(x, y, models.draw_noise("lenet5", 100, np.random.default_rng([0, 2, e]), np.float32))
logits = models.predict("lenet5", st.params, x[:60])
np.savez(sys.argv[1], logits=logits, **st.params)
"""


def _run(tmp_path, threads):
    out = tmp_path / f"t{threads}.npz"
    env = dict(os.environ, REFVBC_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads))
    subprocess.run([sys.executable, "-c", SCRIPT, str(out)], check=True, env=env,
                   cwd=ROOT)
    return np.load(out)


@pytest.mark.slow
def test_two_training_steps_identical_with_one_and_two_threads(tmp_path):
    a, b = _run(tmp_path, 1), _run(tmp_path, 2)
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{k}: 1 thread vs 2 threads")


def test_run_parts_order_and_split():
    assert parallel.split(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert parallel.split(2, 5) == [(0, 1), (1, 2)]
    assert parallel.run_parts(lambda i: i * i, 7) == [0, 1, 4, 9, 16, 25, 36]


FORK_SCRIPT = r"""
import multiprocessing as mp
from refvbc import parallel
parallel.run_parts(lambda i: i, 4)  # the parent's pool exists before the fork
with mp.get_context("fork").Pool(1) as pool:
    print(pool.apply(parallel.run_parts, (abs, 3)))
"""


@pytest.mark.slow
def test_pool_works_in_a_forked_child():
    """Forked in a fresh interpreter: forking the pytest process itself would also fork the threads of
    whatever other tests imported (JAX warns of a deadlock), which is not what this tests."""
    p = subprocess.run([sys.executable, "-c", FORK_SCRIPT], capture_output=True, text=True, timeout=300,
                       cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[0, 1, 2]", f"expected [0, 1, 2] from the forked child, got {p.stdout!r}"
