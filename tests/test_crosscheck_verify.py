"""`python -m refvbc.crosscheck verify` on files written by refvbc itself (no other framework needed):
exit 0 on agreement, 1 naming the first tensor (and step) that differs, 2 with a one-line message for
a file that is not a cross-check file; float32 files and the measured float32 drift bound."""

import numpy as np
import pytest
from conftest import slow_param, tiered

from refvbc import crosscheck
from refvbc.crosscheck import verify as V
from support import xcheck_util as XU
from support.xcheck_util import BATCH, CASE_IDS, CASES, SEED, STEPS, perturb_largest, run_verify, \
    run_verify_path, tensor_errors


def exported(arch, tau2=0.02, steps=0, dtype="float64"):
    """refvbc's own file (built once per process, shared with the other cross-check modules)."""
    return XU.build(arch, tau2, steps=steps, dtype=dtype)


@pytest.mark.parametrize("arch,steps", [("lenet300", 0), ("lenet5", 0), ("lenet300", STEPS),
                                        slow_param("lenet5", STEPS)])
def test_own_file_passes(tmp_path, arch, steps):
    arrays = exported(arch, steps=steps)
    code, out, err = run_verify(arrays, tmp_path / "cc.npz")
    n_out = 2 + 15 if arch == "lenet5" else 2 + 12
    n_rows = n_out + steps * (n_out + 3 * (n_out - 2))
    errs = tensor_errors(out)
    assert code == 0, f"expected exit 0, got {code}\n{out}\n{err}"
    assert len(errs) == n_rows, f"expected {n_rows} tensor lines, got {len(errs)}"
    assert out.rstrip().splitlines()[-1].startswith(f"PASS: all {n_rows} tensors"), out[-300:]
    assert max(errs.values()) == 0.0, f"refvbc against itself: expected 0, got {max(errs.values())}"


@pytest.mark.parametrize("key", ["grad/fc1.theta", "grad/fc2.bias", "grad/gmm.log_lambda", "out/loss",
                                 "out/logits"])
def test_changed_entry_fails(tmp_path, key):
    arrays = perturb_largest(exported("lenet300"), key, 1e-4)
    code, out, _ = run_verify(arrays, tmp_path / "cc.npz")
    errs = tensor_errors(out)
    assert code == 1, f"expected exit 1, got {code}"
    bad = [k for k, e in errs.items() if e > 1e-7]
    assert bad == [key], f"expected only {key} to differ, got {bad}"
    assert abs(errs[key] - 1e-4) < 1e-6, f"{key}: expected rel error 1e-4, got {errs[key]}"
    line = [ln for ln in out.splitlines() if ln.startswith(key + " ")][0]
    assert line.endswith("DIFFERS"), line
    assert f"first disagreement: {key} " in out.splitlines()[-1], out.splitlines()[-1]


@pytest.mark.parametrize("key,step", [("step1/grad/fc1.theta", 1), ("step3/adam.v/gmm.mu", 3),
                                      ("step5/param/fc3.bias", 5), ("step2/out/logits", 2)])
def test_trajectory_first_disagreement(tmp_path, key, step):
    arrays = perturb_largest(exported("lenet300", steps=STEPS), key, 1e-4)
    code, out, _ = run_verify(arrays, tmp_path / "cc.npz")
    last = out.splitlines()[-1]
    assert code == 1, f"expected exit 1, got {code}: {last}"
    assert f"first disagreement: step {step}, {key} " in last, f"expected step {step}, {key}; got: {last}"


def test_nan_fails(tmp_path):
    arrays = dict(exported("lenet300"))
    g = arrays["grad/fc2.theta"].copy()
    g[3, 4] = np.nan
    arrays["grad/fc2.theta"] = g
    code, out, _ = run_verify(arrays, tmp_path / "cc.npz")
    assert code == 1 and "first disagreement: grad/fc2.theta" in out, out.splitlines()[-1]
    assert "worst at [3,4]" in [ln for ln in out.splitlines() if ln.startswith("grad/fc2.theta ")][0]


def _drop(*keys):
    def edit(a):
        for k in keys:
            del a[k]
    return edit


def _set(key, value):
    def edit(a):
        a[key] = value
    return edit


def _mu0(a):
    a["param/gmm.mu"] = a["param/gmm.mu"].copy()
    a["param/gmm.mu"][0] = 0.5


BAD_FILES = {
    "missing-grad": (_drop("grad/fc1.theta"), "missing 1 key: grad/fc1.theta"),
    "missing-grads": (_drop("grad/fc3.bias", "grad/gmm.mu"), "missing 2 keys: grad/fc3.bias, grad/gmm.mu"),
    "missing-noise": (_drop("noise/fc2"), "missing 1 key: noise/fc2"),
    "missing-config": (_drop("config/tau2"), "missing 1 key: config/tau2"),
    "missing-arch": (_drop("config/arch"), "missing key config/arch"),
    "missing-step-state": (_drop("step2/adam.m/fc1.bias"), "missing 1 key: step2/adam.m/fc1.bias"),
    "missing-lr": (_drop("config/lr/log_pi"), "missing 1 key: config/lr/log_pi"),
    "missing-mu": (_drop("param/gmm.mu"), "missing key param/gmm.mu"),
    "mu-2d": (_set("param/gmm.mu", np.zeros((17, 1))), "param/gmm.mu must be a (K,) array with K >= 2"),
    "mu-one": (_set("param/gmm.mu", np.zeros(1)), "got shape (1,)"),
    "other-K": (_set("param/gmm.log_pi", np.zeros(33)), "param/gmm.log_pi (33,) (expected (17,))"),
    "wrong-shape": (_set("grad/fc2.theta", np.zeros((300, 100))), "grad/fc2.theta (300, 100) (expected (100, 300))"),
    "wrong-batch": (_set("noise/fc1", np.zeros((3, 300))), "noise/fc1 (3, 300) (expected (4, 300))"),
    "int-grad": (_set("grad/fc3.bias", np.zeros(10, dtype=np.int64)), "grad/fc3.bias must be float32 or float64"),
    "float-labels": (_set("input/y", np.zeros(BATCH)), "input/y must hold integer labels"),
    "label-range": (_set("input/y", np.full(BATCH, 10)), "input/y must lie in 0..9"),
    "nan-input": (_set("input/x", np.full((BATCH, 784), np.nan)), "input/x has non-finite values"),
    "mu0": (_mu0, "param/gmm.mu[0] must be 0"),
    "arch": (_set("config/arch", np.array("lenet7")), "config/arch is 'lenet7'"),
    "steps": (_set("config/steps", np.array(0)), "config/steps must lie in 1..10000"),
    "steps-float": (_set("config/steps", np.array(2.0)), "config/steps must be a numeric scalar"),
    "n_data": (_set("config/n_data", np.array(0.0)), "config/n_data must be > 0, got 0.0"),
    "pi0": (_set("config/pi0", np.array(1.0)), "config/pi0 must be in (0, 1), got 1.0"),
    "step-eps": (_set("config/adam/eps", np.array(0.0)), "config/adam/eps must be > 0"),
    "step-lr": (_set("config/lr/mu", np.array(-1e-4)), "config/lr/mu must be >= 0"),
    "string-tau2": (_set("config/tau2", np.array("0.02")), "config/tau2 must be a numeric scalar"),
    "empty-batch": (_set("input/x", np.zeros((0, 784))), "input/x holds an empty batch"),
    "dtype": (_set("config/dtype", np.array("float16")), "config/dtype must be 'float32' or 'float64'"),
    "mask-value": (_set("config/mask_pruned", np.array(2)), "config/mask_pruned must be 0 or 1, got 2"),
    "mask-string": (_set("config/mask_pruned", np.array("yes")), "config/mask_pruned must be a numeric scalar"),
    "inputs-only": (lambda a: [a.pop(k) for k in list(a) if k.startswith(("out/", "grad/"))],
                    "holds no outputs"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_invalid_file_exit2(tmp_path, name):
    edit, want = BAD_FILES[name]
    arrays = dict(exported("lenet300", steps=2 if "step" in name or "lr" in name else 0))
    edit(arrays)
    code, out, err = run_verify(arrays, tmp_path / "bad.npz")
    assert code == 2, f"expected exit 2, got {code}\n{out}\n{err}"
    assert out == "", f"expected no report on stdout, got {out!r}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"expected a one-line error, got {err!r}"
    assert want in lines[0], f"expected {want!r} in the message, got {lines[0]!r}"


def _pickled(path):
    np.savez(path, **{"config/arch": np.array([{"a": 1}], dtype=object)})


def _text(path):
    path.write_text("config/arch,lenet300\n")


def _truncated(path):
    np.savez(path, **exported("lenet300"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("make,want", [(_pickled, "pickled"), (_text, "not an .npz archive"),
                                       (_truncated, "damaged"), (None, "cannot read")],
                         ids=["pickled", "text", "truncated", "absent"])
def test_unreadable_file_exit2(tmp_path, make, want):
    path = tmp_path / "bad.npz"
    if make:
        make(path)
    code, out, err = run_verify_path(path)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and want in lines[0], f"exit {code}, stderr {err!r}"


@pytest.mark.parametrize("runner", ["in-process", slow_param("subprocess")])
def test_cli_exit_codes(tmp_path, runner):
    """The command line (crosscheck.main here; the real `python -m refvbc.crosscheck verify` in the
    slow tier): exit 2 with one line and no traceback for a removed key, 1 for a changed gradient
    entry, 0 for the file as written."""
    arrays = exported("lenet300")
    cases = {"ok.npz": (arrays, 0), "changed.npz": (perturb_largest(arrays, "grad/fc2.theta"), 1)}
    removed = dict(arrays)
    del removed["grad/fc2.theta"]
    cases["removed.npz"] = (removed, 2)
    for name, (a, want) in cases.items():
        np.savez(tmp_path / name, **a)
        code, out, err = run_verify_path(tmp_path / name, runner=runner)
        assert code == want, f"{name}: expected exit {want}, got {code}\n{err}"
        assert "Traceback" not in err, f"{name}: traceback\n{err}"
        if want == 2:
            assert err.strip() == (f"error: {tmp_path / name} is not a valid cross-check file: "
                                   "missing 1 key: grad/fc2.theta"), err
        if want == 1:
            assert "grad/fc2.theta" in out.splitlines()[-1], out.splitlines()[-1]


def test_trajectory_without_top_level_minibatch(tmp_path):
    """The top-level minibatch is optional in a trajectory file: without it, only the steps count."""
    arrays = {k: v for k, v in exported("lenet300", steps=STEPS).items()
              if not k.startswith(("input/", "noise/", "out/", "grad/"))}
    code, out, err = run_verify(arrays, tmp_path / "cc.npz")
    assert code == 0, f"expected exit 0, got {code}: {err}{out[-300:]}"
    assert len(tensor_errors(out)) == STEPS * (14 + 3 * 12), out.splitlines()[-1]
    assert not any(k.startswith(("out/", "grad/")) for k in tensor_errors(out))


def test_export_alias_and_trajectory_cli(tmp_path):
    """`export` is the same command as the bare form; --steps writes the trajectory keys."""
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    base = ["--arch", "lenet300", "--tau2", "0.02", "--batch", "2", "--seed", "3", "--steps", "2"]
    assert crosscheck.main(base + ["--out", str(a)]) == 0
    assert crosscheck.main(["export"] + base + ["--out", str(b)]) == 0
    with np.load(a) as fa, np.load(b) as fb:
        assert sorted(fa.files) == sorted(fb.files)
        for k in fa.files:
            assert np.array_equal(fa[k], fb[k]), f"{k}: export alias differs"
        assert int(fa["config/steps"]) == 2 and float(fa["config/lr/log_pi"]) == 3e-3
        assert fa["step2/adam.v/fc1.theta"].shape == (300, 784)


# ---------------------------------------------------------------------------------------------
# float32: refvbc's own float32 path against its float64 reference, from the same inputs
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch,tau2", tiered(CASES, CASE_IDS, lambda a, t: a == "lenet5"))  # LeNet-5: slow tier
def test_float32_drift_bound(arch, tau2):
    """The documented bounds (docs/crosscheck.md "float32"): one minibatch (loss, logits, gradients
    from identical float32 inputs) <= FLOAT32_DRIFT["minibatch"]; every tensor of 5 Adam steps <=
    FLOAT32_DRIFT["steps"]; both below the float32 default --rtol."""
    arrays = XU.build(arch, tau2, 8, 0, steps=STEPS, dtype="float32")
    layout = crosscheck.check(arrays)
    assert layout.dtype == np.float32
    ref = crosscheck.outputs(arrays, arch, STEPS, dtype=np.float64)
    rows = V.compare(arrays, ref, layout.outputs, 1.0)
    single = max((r for r in rows if not r[0].startswith("step")), key=lambda r: r[1])
    steps = max(rows, key=lambda r: r[1])
    assert single[1] <= V.FLOAT32_DRIFT["minibatch"], f"one minibatch: {single[0]} drifts {single[1]:.2e}"
    assert steps[1] <= V.FLOAT32_DRIFT["steps"], f"{STEPS} steps: {steps[0]} drifts {steps[1]:.2e}"
    assert single[1] > 1e-9, f"float32 path suspiciously exact ({single[1]:.1e}): is it float64?"
    assert V.FLOAT32_DRIFT["steps"] < V.RTOL[np.dtype(np.float32)]


def test_float32_file_note_and_default_rtol(tmp_path):
    arrays = exported("lenet5", steps=2, dtype="float32")
    code, out, err = run_verify(arrays, tmp_path / "f32.npz")
    assert code == 0, f"float32 file at the default rtol: exit {code}\n{out[-500:]}"
    assert "float32" in out.splitlines()[0]
    assert "note: float32 file: comparing at --rtol 0.001" in out, out[:600]
    code, out, err = run_verify_path(tmp_path / "f32.npz", "--rtol", "1e-7")
    assert code == 1, "float32 file at --rtol 1e-7 should differ"
    assert "is below float32 round-off" in out, out[:600]


@pytest.mark.parametrize("key,value,first", [
    ("config/lr/theta", 1e-4, "step1/param/fc1.theta"),
    ("config/lr/log_pi", 3e-4, "step1/param/gmm.log_pi"),
    ("config/adam/beta2", 0.99, "step1/adam.v/fc1.theta"),
    ("config/adam/eps", 1e-6, "step1/param/fc1.theta"),
], ids=["lr-theta", "lr-log_pi", "beta2", "eps"])
def test_wrong_optimizer_setting_is_caught(tmp_path, key, value, first):
    """A trajectory computed with one Adam setting different from what the file's config says
    (learning rate of one group, beta2, eps) fails at step 1, in the tensor that setting moves."""
    arrays = XU.build("lenet300", 0.02, steps=2, with_outputs=False)
    wrong = dict(arrays, **{key: np.array(value)})
    arrays.update(crosscheck.outputs(wrong, "lenet300", 2))
    code, out, _ = run_verify(arrays, tmp_path / "cc.npz")
    last = out.splitlines()[-1]
    assert code == 1 and f"first disagreement: step 1, {first} " in last, f"exit {code}: {last}"


def test_mask_pruned_key(tmp_path):
    """config/mask_pruned is optional (a file without it, as written before the option, verifies with
    the mask off) and read: the outputs of a mask_pruned file computed without the mask fail at
    out/loss, and the header says mask_pruned."""
    old = {k: v for k, v in exported("lenet300").items() if k != "config/mask_pruned"}
    code, out, err = run_verify(old, tmp_path / "old.npz")
    assert code == 0 and "note:" not in out, f"file without config/mask_pruned: exit {code}\n{err}{out[:300]}"
    arrays = XU.build("lenet300", 0.02, with_outputs=False, mask_pruned=True)
    arrays.update(crosscheck.outputs(dict(arrays, **{"config/mask_pruned": np.array(0)}), "lenet300", 0))
    code, out, _ = run_verify(arrays, tmp_path / "unmasked.npz")
    lines = out.splitlines()
    assert "tau2 0.02, mask_pruned, batch" in lines[0], lines[0]
    assert code == 1 and "first disagreement: out/loss " in lines[-1], f"exit {code}: {lines[-1]}"


def test_float32_results_stored_as_float64(tmp_path):
    """float32 results written as float64 arrays: a hint without config/dtype, a pass with it."""
    arrays = {k: v.astype(np.float64) if v.dtype == np.float32 else v
              for k, v in exported("lenet300", steps=2, dtype="float32").items()}
    code, out, _ = run_verify(arrays, tmp_path / "f.npz")
    assert code == 1 and "look like float32 arithmetic stored as float64" in out, out.splitlines()[-2:]
    arrays["config/dtype"] = np.array("float32")
    code, out, _ = run_verify(arrays, tmp_path / "f.npz")
    assert code == 0 and "note: float32 file: comparing at --rtol 0.001" in out, out.splitlines()[-1]


@pytest.mark.parametrize("K", [5, 33])
def test_export_and_verify_other_components(tmp_path, capsys, K):
    """`--components K` writes a file whose mixture has K entries (K from param/gmm.mu, not Table 3's
    17), and verify recomputes it exactly; an even K is refused."""
    path = tmp_path / "k.npz"
    args = ["--arch", "lenet300", "--tau2", "0.02", "--batch", "2", "--seed", "3", "--steps", "1"]
    code, out, err = XU.run_command(args + ["--components", K, "--out", path])
    assert code == 0, f"export --components {K}: exit {code}\n{out}{err}"
    with np.load(path) as f:
        shapes = {k: f[k].shape for k in f.files if "gmm." in k}
    assert shapes and set(shapes.values()) == {(K,)}, f"expected every gmm.* of shape ({K},), got {shapes}"
    assert crosscheck.check(dict(np.load(path))).param_names[-3:] == ["gmm.mu", "gmm.log_lambda", "gmm.log_pi"]
    code, out, err = run_verify_path(path)
    assert code == 0 and max(tensor_errors(out).values()) == 0.0, f"verify: exit {code}\n{out[-300:]}{err}"
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        crosscheck.main(args + ["--components", str(K + 1), "--out", str(tmp_path / "even.npz")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"error: --components: K must be an odd integer >= 3 (component 0 at 0, the " \
        f"others in pairs at +-k*delta_mu), got {K + 1}" in err, f"exit {e.value.code}: {err!r}"
