"""Files written by an independent JAX implementation of docs/objective.md (tests/support/jax_spec.py:
jax.value_and_grad, Adam written out) through the real `verify` command: both architectures,
tau2 0 and 0.02, without and with the mask_pruned option, one minibatch and 5 Adam steps, float64 at
rtol 1e-7; a float32 file at the float32 default.  Skipped when JAX is not installed."""

import numpy as np
import pytest

pytest.importorskip("jax")

from support import jax_spec  # noqa: E402  (tests/ is on sys.path)
from support import xcheck_util as XU  # noqa: E402
from refvbc import crosscheck  # noqa: E402

REL_TOL = 1e-7


# the LeNet-5 files (full network, 5 steps) are the slow tier's; its minibatch is checked below
JAX_CASES = [pytest.param(a, t, m, id=i, marks=[pytest.mark.slow] if a == "lenet5" else [])
             for (a, t, m), i in zip(XU.ALL_CASES, XU.ALL_IDS)]


@pytest.mark.parametrize("arch,tau2,mask", JAX_CASES)
def test_verify_jax_file(tmp_path, arch, tau2, mask):
    """One file holds both: the top-level minibatch and a 5-step trajectory."""
    inputs = XU.inputs(arch, tau2, steps=XU.STEPS, mask_pruned=mask)
    arrays = jax_spec.jax_file(inputs)
    assert arrays["step5/param/fc1.theta"].dtype == np.float64, "jax_enable_x64 is not in effect"
    code, out, err = XU.run_verify(arrays, tmp_path / "jax.npz")
    XU.assert_passes(code, out, err, REL_TOL, f"jax {arch} tau2={tau2} mask={mask}")
    assert (", mask_pruned," in out.splitlines()[0]) == mask, out.splitlines()[0]
    assert len(XU.tensor_errors(out)) == len(crosscheck.check(arrays).outputs)


def test_verify_jax_minibatch_only(tmp_path):
    inputs = XU.inputs("lenet5", 0.02)
    code, out, err = XU.run_verify(jax_spec.jax_file(inputs), tmp_path / "jax.npz")
    XU.assert_passes(code, out, err, REL_TOL, "jax lenet5 minibatch")


def test_verify_jax_changed_adam_state(tmp_path):
    """A trajectory whose Adam second moment is off by 1e-4 at step 4: exit 1, step 4 named."""
    inputs = XU.inputs("lenet300", 0.02, steps=XU.STEPS)
    arrays = XU.perturb_largest(jax_spec.jax_file(inputs), "step4/adam.v/fc2.theta", 1e-4)
    code, out, _ = XU.run_verify(arrays, tmp_path / "jax.npz")
    last = out.splitlines()[-1]
    assert code == 1 and "first disagreement: step 4, step4/adam.v/fc2.theta " in last, f"exit {code}: {last}"


def test_verify_jax_float32(tmp_path):
    inputs = XU.inputs("lenet300", 0.02, steps=XU.STEPS)
    arrays = jax_spec.jax_file(inputs, dtype="float32")
    assert arrays["step1/grad/fc1.theta"].dtype == np.float32
    code, out, err = XU.run_verify(arrays, tmp_path / "jax32.npz")
    XU.assert_passes(code, out, err, crosscheck.RTOL[np.dtype(np.float32)], "jax float32")
    assert "note: float32 file" in out
