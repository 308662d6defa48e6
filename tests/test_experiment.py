"""run_experiments.py end to end on --quick: every phase, results.json, the Table 2 print, an exact
resume after a SIGKILL, and clear errors for bad flags, bad data and an occupied run directory."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1")


def run(args, timeout=600, **kw):
    return subprocess.run([sys.executable, os.path.join(ROOT, "run_experiments.py")] + args,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=ENV, **kw)


def load(path):
    with np.load(path) as f:
        return {k: np.array(f[k]) for k in f.files if k.startswith("param/")}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick") / "run"
    p = run(["--arch", "lenet300", "--quick", "--seed", "3", "--out", str(out), "--no-figures"])
    assert p.returncode == 0, f"quick run failed:\n{p.stdout}\n{p.stderr}"
    return out, p.stdout


def test_quick_run_exercises_every_phase(quick_run):
    out, stdout = quick_run
    for phase in ("l2", "sws", "vd", "vdsws"):
        assert f"{phase:>5} epoch    1" in stdout, f"no epoch line for {phase}:\n{stdout}"
        assert os.path.exists(out / f"{phase}.npz") and os.path.exists(out / f"{phase}.rvbc")
    assert "Table 2, lenet300" in stdout and "VD+SWS" in stdout
    res = json.loads((out / "results.json").read_text())
    assert set(res["methods"]) == {"l2", "sws", "vd", "vdsws"}
    for m, r in res["methods"].items():
        assert r["file_bytes"] == os.path.getsize(out / r["file"]), m
        want = 32.0 * (266200 + 410) / (8.0 * r["file_bytes"])
        assert abs(r["ratio_file"] - want) < 1e-9 * want, (m, r["ratio_file"], want)
        assert r["test_acc_compressed"] == r["test_acc_compressed_in_memory"], m
        assert 0.0 < r["nonzero_fraction"] <= 1.0 and r["layers"], m
    assert res["methods"]["l2"]["nonzero_fraction"] == 1.0


def test_killed_and_resumed_run_ends_identical(quick_run, tmp_path):
    ref_out, _ = quick_run
    out = tmp_path / "killed"
    cmd = [sys.executable, os.path.join(ROOT, "run_experiments.py"), "--arch", "lenet300", "--quick",
           "--seed", "3", "--out", str(out), "--no-figures"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / "train.log"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / "checkpoint.npz").exists() and log.exists() and log.read_text().count(" epoch ") >= 2:
            break
        time.sleep(0.05)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert killed, "the run ended before it could be killed"
    assert not (out / "vdsws.npz").exists(), "killed too late to test anything"
    p = run(["--arch", "lenet300", "--quick", "--seed", "3", "--out", str(out), "--no-figures",
             "--resume"])
    assert p.returncode == 0, f"resume failed:\n{p.stdout}\n{p.stderr}"
    assert "# resumed" in p.stdout, p.stdout
    for phase in ("l2", "sws", "vd", "vdsws"):
        a, b = load(ref_out / f"{phase}.npz"), load(out / f"{phase}.npz")
        assert a.keys() == b.keys()
        for k in a:
            assert np.array_equal(a[k], b[k]), f"{phase} {k}: resumed run differs by {np.abs(a[k] - b[k]).max()}"


def test_existing_run_needs_resume(quick_run):
    out, _ = quick_run
    p = run(["--arch", "lenet300", "--quick", "--seed", "3", "--out", str(out)])
    assert p.returncode == 1 and "already holds a run" in p.stderr, p.stderr


def test_resume_with_other_settings_is_refused(quick_run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(quick_run[0], out)
    p = run(["--arch", "lenet300", "--quick", "--seed", "4", "--out", str(out), "--resume"])
    assert p.returncode == 1 and "seed" in p.stderr, p.stderr


@pytest.mark.parametrize("args, msg", [
    (["--arch", "lenet7"], "invalid choice: 'lenet7'"),
    (["--arch", "lenet300", "--bogus"], "unrecognized arguments: --bogus"),
    (["--arch", "lenet300", "--epochs", "-1"], "--epochs must be >= 0"),
    (["--arch", "lenet300", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["--arch", "lenet300", "--lr-theta", "nan"], "--lr-theta must be a finite"),
    (["--arch", "lenet300", "--method", "xyz"], "invalid choice: 'xyz'"),
    (["--arch", "lenet300", "--jobs", "2", "--method", "vd"], "use it with --method all"),
    (["--arch", "lenet300", "--gamma-param", "shape"], "invalid choice: 'shape'"),
    (["--arch", "lenet300", "--lr-decay-from", "1.5"], "--lr-decay-from must lie in [0, 1)"),
    (["--arch", "lenet300", "--gamma-beta", "0"], "--gamma-beta must be a finite positive"),
    (["--arch", "lenet300", "--finetune-epochs", "0"], "--finetune-epochs must be >= 1"),
    (["--arch", "lenet300", "--pi0", "1"], "--pi0 must lie in (0, 1), got 1.0"),
    (["--arch", "lenet300", "--pi0", "nan"], "--pi0 must lie in (0, 1), got nan"),
    ([], "the following arguments are required: --arch"),
])
def test_bad_flags(args, msg):
    p = run(args)
    assert p.returncode == 2 and msg in p.stderr, p.stderr


def test_corrupted_data_named(tmp_path):
    data = tmp_path / "mnist"
    shutil.copytree(os.path.join(ROOT, "data", "mnist"), data)
    f = data / "train-labels-idx1-ubyte.gz"
    os.chmod(f, 0o644)
    f.write_bytes(f.read_bytes()[:1000])
    p = run(["--arch", "lenet300", "--quick", "--data", str(data), "--out", str(tmp_path / "o")])
    assert p.returncode == 1 and "train-labels-idx1-ubyte.gz" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_figures_when_matplotlib_is_installed(quick_run, tmp_path):
    pytest.importorskip("matplotlib")
    from refvbc import report
    from refvbc.train import load_params

    finals = {m: load_params(str(quick_run[0] / f"{m}.npz"))[1] for m in ("l2", "sws", "vd", "vdsws")}
    written = report.figures(str(tmp_path), "lenet300", finals)
    names = sorted(os.path.basename(w) for w in written)
    assert names == ["hist_sws.png", "hist_vdsws.png", "sparsity.png"], names
    for w in written:
        assert open(w, "rb").read(8) == b"\x89PNG\r\n\x1a\n", w


def test_resume_may_extend_epochs_but_not_shrink_the_running_phase(tmp_path):
    from refvbc.experiment import load_data
    from refvbc.train import Config, Run, RunError

    cfg = Config(arch="lenet300", method="l2", n_train=200, n_test=200, epochs={"l2": 2})
    data = load_data(cfg)
    out = str(tmp_path / "r")
    assert Run(cfg, out, data, log=lambda s: None).run(max_epochs=1) is None
    shrunk = Config(arch="lenet300", method="l2", n_train=200, n_test=200, epochs={"l2": 0})
    with pytest.raises(RunError, match="already ran 1 epochs"):
        Run(shrunk, out, data, log=lambda s: None).run(resume=True)
    longer = Config(arch="lenet300", method="l2", n_train=200, n_test=200, epochs={"l2": 3})
    lines = []
    finals = Run(longer, out, data, log=lines.append).run(resume=True)
    assert "l2" in finals and any("resumed l2 after epoch 1" in l for l in lines), lines
    assert sum(l.startswith("   l2 epoch") for l in lines) == 2, lines


def _checkpoint_without(tmp_path, cfg, key):
    """Train cfg (its l2 phase of 2 epochs) for 1 epoch into tmp_path/r, then delete `key` from the
    checkpoint's config, as a checkpoint written before that setting existed. Returns (out, data)."""
    import json as js

    from refvbc.experiment import load_data
    from refvbc.fileio import atomic_savez, load_npz
    from refvbc.train import Run

    data = load_data(cfg)
    out = str(tmp_path / "r")
    assert Run(cfg, out, data, log=lambda s: None).run(max_epochs=1) is None
    ck = os.path.join(out, "checkpoint.npz")
    arrays = load_npz(ck)
    meta = js.loads(str(arrays["meta"]))
    del meta["config"][key]
    arrays["meta"] = np.array(js.dumps(meta))
    atomic_savez(ck, **arrays)
    return out, data


def test_resume_of_a_checkpoint_older_than_a_setting(tmp_path):
    """A checkpoint written before a setting existed (here pi0) resumes: the missing setting is read
    as its default, the value that run used."""
    from refvbc.train import Config, Run

    cfg = Config(arch="lenet300", method="l2", n_train=200, n_test=200, epochs={"l2": 2})
    out, data = _checkpoint_without(tmp_path, cfg, "pi0")
    lines = []
    assert "l2" in Run(cfg, out, data, log=lines.append).run(resume=True)
    assert any("resumed l2 after epoch 1" in l for l in lines), lines


@pytest.mark.parametrize("method, now, ok", [("all", "all", True), ("all", "survivors", False),
                                             ("l2", "survivors", True), ("sws", "survivors", True)])
def test_resume_of_a_checkpoint_older_than_a_changed_default(tmp_path, method, now, ok):
    """A checkpoint written before --delta-mu-over existed was made with Δμ over all weights (the
    default then, train.LEGACY_DEFAULTS): a run that trains vdsws resumes with "all" and is refused with
    today's default; a run without vdsws (the only phase that reads the setting) resumes either way."""
    from refvbc.train import Config, Run, RunError

    cfg = Config(arch="lenet300", method=method, n_train=200, n_test=200,
                 epochs={"l2": 2, "sws": 1, "vd": 1, "vdsws": 1}, delta_mu_over="all")
    out, data = _checkpoint_without(tmp_path, cfg, "delta_mu_over")
    cfg.delta_mu_over = now
    if ok:
        lines = []
        Run(cfg, out, data, log=lines.append).run(resume=True, max_epochs=1)
        assert any("resumed l2 after epoch 1" in l for l in lines), lines
    else:
        with pytest.raises(RunError, match="delta_mu_over: checkpoint 'all' vs now 'survivors'"):
            Run(cfg, out, data, log=lambda s: None).run(resume=True)


def test_init_from_a_phase_model_continues_exactly(quick_run, tmp_path):
    """--init-from vd.npz trains only vdsws, and ends bit-identical to the run that trained vd itself."""
    ref, _ = quick_run
    out = tmp_path / "cont"
    p = run(["--arch", "lenet300", "--quick", "--seed", "3", "--method", "vdsws", "--out", str(out),
             "--init-from", str(ref / "vd.npz"), "--no-figures"])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "# plan: vd from file -> vdsws 1 epochs (from vd)" in p.stdout, p.stdout
    assert "l2 epoch" not in p.stdout and "   vd epoch" not in p.stdout, p.stdout
    a, b = load(ref / "vdsws.npz"), load(out / "vdsws.npz")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{k} differs after --init-from")
    res = json.loads((out / "results.json").read_text())
    assert set(res["methods"]) == {"vd", "vdsws"} and len(res["config"]["init_sha256"]["vd"]) == 64


@pytest.mark.parametrize("args, msg", [
    (["--arch", "lenet5", "--init-from", "{ref}/l2.npz"], "a lenet300 model, but this run is --arch lenet5"),
    (["--arch", "lenet300", "--method", "sws", "--init-from", "{ref}/vd.npz"],
     "a vd model, but --method sws trains l2, sws"),
    (["--arch", "lenet300", "--init-from", "{ref}/nope.npz"], "no such file or directory"),
    (["--arch", "lenet300", "--method", "vd", "--init-from", "{ref}/results.json"], "cannot read"),
])
def test_init_from_errors(quick_run, tmp_path, args, msg):
    ref, _ = quick_run
    args = [a.format(ref=ref) for a in args]
    p = run(args + ["--quick", "--out", str(tmp_path / "o"), "--no-figures"])
    assert p.returncode == 1 and msg in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_second_run_on_the_same_directory_is_refused(tmp_path):
    from refvbc.train import lock_dir

    out = tmp_path / "busy"
    held = lock_dir(str(out))
    try:
        p = run(["--arch", "lenet300", "--quick", "--out", str(out), "--no-figures"])
    finally:
        held.close()
    assert p.returncode == 1 and "in use by another run (pid" in p.stderr, p.stderr


def test_damaged_checkpoint_falls_back_to_the_previous(quick_run, tmp_path):
    out = tmp_path / "damaged"
    shutil.copytree(quick_run[0], out, ignore=shutil.ignore_patterns("vdsws.npz"))
    ck = out / "checkpoint.npz"
    assert (out / "checkpoint.prev.npz").exists()
    ck.write_bytes(ck.read_bytes()[:500])
    p = run(["--arch", "lenet300", "--quick", "--seed", "3", "--out", str(out), "--resume", "--no-figures"])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "is unreadable" in p.stdout and "resuming from the previous one" in p.stdout, p.stdout
    a, b = load(quick_run[0] / "vdsws.npz"), load(out / "vdsws.npz")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{k} differs after the fallback")


def test_jobs_2_runs_the_branches_in_parallel(quick_run, tmp_path):
    """--jobs 2: the same four models as the sequential run (single-threaded on both sides)."""
    out = tmp_path / "jobs"
    p = run(["--arch", "lenet300", "--quick", "--seed", "3", "--jobs", "2", "--out", str(out), "--no-figures"])
    assert p.returncode == 0, p.stdout + p.stderr
    for b in ("l2", "sws", "vdsws"):
        assert (out / f"branch-{b}" / "train.log").exists(), b
    for m in ("l2", "sws", "vd", "vdsws"):
        a, c = load(quick_run[0] / f"{m}.npz"), load(out / f"branch-{'vdsws' if m == 'vd' else m}" / f"{m}.npz")
        for k in a:
            np.testing.assert_array_equal(a[k], c[k], err_msg=f"{m} {k} differs with --jobs 2")
    res = json.loads((out / "results.json").read_text())
    assert set(res["methods"]) == {"l2", "sws", "vd", "vdsws"}


@pytest.mark.slow
def test_quick_lenet5_end_to_end(tmp_path):
    out = tmp_path / "q5"
    p = run(["--arch", "lenet5", "--quick", "--out", str(out), "--no-figures"])
    assert p.returncode == 0, f"lenet5 quick run failed:\n{p.stdout}\n{p.stderr}"
    res = json.loads((out / "results.json").read_text())
    assert set(res["methods"]) == {"l2", "sws", "vd", "vdsws"}
    for m, r in res["methods"].items():
        assert r["test_acc_compressed"] == r["test_acc_compressed_in_memory"], m
        want = 32.0 * (430500 + 580) / (8.0 * r["file_bytes"])
        assert abs(r["ratio_file"] - want) < 1e-9 * want, (m, r["ratio_file"], want)
