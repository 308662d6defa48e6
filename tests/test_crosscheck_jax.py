"""Files written by an independent JAX implementation of docs/objective.md (tests/support/jax_spec.py:
jax.value_and_grad, Adam written out) through the real `verify` command: both architectures,
tau2 0 and 0.02, without and with the mask_pruned option, one minibatch and 5 Adam steps, float64 at
rtol 1e-7; a float32 file at the float32 default.  Skipped when JAX is not installed.

Each new (architecture, dtype) costs jax.jit seconds of compilation: the fast tier compiles LeNet-300-100
in float64 only; LeNet-5 (full network) and the float32 file are the slow tier's."""

import numpy as np
import pytest

pytest.importorskip("jax")

from conftest import tiered  # noqa: E402
from support import jax_spec  # noqa: E402  (tests/ is on sys.path)
from support import xcheck_util as XU  # noqa: E402
from refvbc import crosscheck  # noqa: E402

REL_TOL = 1e-7
_FILES = {}


def jax_file(arch, tau2, steps=XU.STEPS, mask=False, dtype="float64"):
    """The JAX-written file for refvbc's inputs (support.xcheck_util.inputs), computed once per process."""
    key = (arch, tau2, steps, mask, dtype)
    if key not in _FILES:
        _FILES[key] = jax_spec.jax_file(XU.inputs(arch, tau2, steps=steps, mask_pruned=mask), dtype=dtype)
    return dict(_FILES[key])


@pytest.mark.parametrize("arch,tau2,mask", tiered(XU.ALL_CASES, XU.ALL_IDS, lambda a, t, m: a == "lenet5"))
def test_verify_jax_file(tmp_path, arch, tau2, mask):
    """One file holds both: the top-level minibatch and a 5-step trajectory."""
    arrays = jax_file(arch, tau2, mask=mask)
    assert arrays["step5/param/fc1.theta"].dtype == np.float64, "jax_enable_x64 is not in effect"
    code, out, err = XU.run_verify(arrays, tmp_path / "jax.npz")
    XU.assert_passes(code, out, err, REL_TOL, f"jax {arch} tau2={tau2} mask={mask}")
    assert (", mask_pruned," in out.splitlines()[0]) == mask, out.splitlines()[0]
    assert len(XU.tensor_errors(out)) == len(crosscheck.check(arrays).outputs)


def test_verify_jax_file_with_other_components(tmp_path):
    """--components beyond Table 3's 17: a JAX-written LeNet-300-100 file (VD+SWS objective, minibatch
    and 5 Adam steps) with a 33-component mixture passes verify at rtol 1e-7."""
    arrays = jax_spec.jax_file(XU.inputs("lenet300", 0.02, steps=XU.STEPS, components=33))
    assert arrays["step5/param/gmm.log_pi"].shape == (33,), arrays["step5/param/gmm.log_pi"].shape
    code, out, err = XU.run_verify(arrays, tmp_path / "jax33.npz")
    XU.assert_passes(code, out, err, REL_TOL, "jax lenet300 K=33")


@pytest.mark.slow
def test_verify_jax_minibatch_only(tmp_path):
    code, out, err = XU.run_verify(jax_file("lenet5", 0.02, steps=0), tmp_path / "jax.npz")
    XU.assert_passes(code, out, err, REL_TOL, "jax lenet5 minibatch")


def test_verify_jax_changed_adam_state(tmp_path):
    """A trajectory whose Adam second moment is off by 1e-4 at step 4: exit 1, step 4 named."""
    arrays = XU.perturb_largest(jax_file("lenet300", 0.02), "step4/adam.v/fc2.theta", 1e-4)
    code, out, _ = XU.run_verify(arrays, tmp_path / "jax.npz")
    last = out.splitlines()[-1]
    assert code == 1 and "first disagreement: step 4, step4/adam.v/fc2.theta " in last, f"exit {code}: {last}"


@pytest.mark.slow  # a second compilation (float32); the fast tier checks a float32 PyTorch file
def test_verify_jax_float32(tmp_path):
    arrays = jax_file("lenet300", 0.02, dtype="float32")
    assert arrays["step1/grad/fc1.theta"].dtype == np.float32
    code, out, err = XU.run_verify(arrays, tmp_path / "jax32.npz")
    XU.assert_passes(code, out, err, crosscheck.RTOL[np.dtype(np.float32)], "jax float32")
    assert "note: float32 file" in out
