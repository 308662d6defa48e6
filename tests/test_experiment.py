"""run_experiments.py (refvbc/cli.py, refvbc/experiment.py): every phase, results.json, the Table 2
print, exact resume, --init-from, --jobs branches, clear errors for bad flags, bad data and an occupied
run directory, and the shape of the code (parsers refuse abbreviations, no import cycle, short
functions).

The default tier runs in this process on a tiny --quick (QUICK patched to 200 images and one epoch per
phase); the `slow` tier runs run_experiments.py itself as a subprocess (the real --quick, a SIGKILL and
--resume, --jobs 2 processes)."""
import ast
import contextlib
import dataclasses
import io
import json
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, RUN_PY, run_cli

from refvbc import cli, config, experiment, report

ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
TINY = dict(n_train=200, n_test=200, epochs={"l2": 1, "sws": 1, "vd": 1, "vdsws": 1})
PHASES = ("l2", "sws", "vd", "vdsws")


def run(args, timeout=1800):
    """run_experiments.py ARGS in a single-threaded subprocess (a --quick run takes ~1 min on an idle
    machine; the timeout leaves room for a loaded one)."""
    return run_cli(args, timeout=timeout, env=ENV)


def load(path):
    with np.load(path) as f:
        return {k: np.array(f[k]) for k in f.files if k.startswith("param/")}


def assert_same_models(a_dir, b_dir, phases=PHASES, b_dir_of=None):
    for m in phases:
        b = (b_dir_of(m) if b_dir_of else b_dir) / f"{m}.npz"
        a, c = load(a_dir / f"{m}.npz"), load(b)
        assert a.keys() == c.keys(), m
        for k in a:
            np.testing.assert_array_equal(a[k], c[k], err_msg=f"{m} {k} differs")


def main_in_process(args):
    """cli.main(args) in this process -> (exit status, stdout, stderr); SystemExit (argparse) caught."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main([str(a) for a in args])
        except SystemExit as e:
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def tiny_quick():
    """For the in-process tests of this module (a fixture of this file): --quick patched to TINY, and
    the VD codebook's 1-D GMM fitted with 2 components instead of the paper's 64 (after one epoch on 200
    images nearly every VD weight survives, and the 64-component fit of those 266k weights is ~40 s of
    CPU; these tests are about the run, tests/test_compress_*.py about the codebook)."""
    summarize = report.summarize

    def summarize_small_vd_codebook(arch, method, params, x, y, out_dir, compress_opts=None, **kw):
        opts = dict(compress_opts or {})
        if method == "vd":
            opts.setdefault("vd_components", 2)
        return summarize(arch, method, params, x, y, out_dir, opts, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(config, "QUICK", TINY)
        mp.setattr(report, "summarize", summarize_small_vd_codebook)
        yield


@pytest.fixture(scope="module")
def tiny_run(tiny_quick, tmp_path_factory):
    """The reference tiny run: every phase, seed 3, in this process. Returns (out, stdout)."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    rc, stdout, stderr = main_in_process(["--arch", "lenet300", "--quick", "--seed", "3", "--out", out,
                                          "--no-figures"])
    assert rc == 0, stdout + stderr
    return out, stdout


def tiny(out, *extra):
    return ["--arch", "lenet300", "--quick", "--seed", "3", "--out", out, "--no-figures", *extra]


# ---------------------------------------------------------------------------------------------------
# in process (default tier)


def check_every_phase_ran(out, stdout):
    """The checks a run of --method all passes in any size: an epoch line, a phase model and a file per
    phase, Table 2 printed, every ratio counted from the file's bytes. Returns results.json."""
    for phase in PHASES:
        assert f"{phase:>5} epoch    1" in stdout, f"no epoch line for {phase}:\n{stdout}"
        assert os.path.exists(out / f"{phase}.npz") and os.path.exists(out / f"{phase}.rvbc")
    assert "Table 2, lenet300" in stdout and "VD+SWS" in stdout
    res = json.loads((out / "results.json").read_text())
    assert set(res["methods"]) == set(PHASES)
    for m, r in res["methods"].items():
        assert r["file_bytes"] == os.path.getsize(out / r["file"]), m
        want = 32.0 * (266200 + 410) / (8.0 * r["file_bytes"])
        assert abs(r["ratio_file"] - want) < 1e-9 * want, (m, r["ratio_file"], want)
        assert r["test_acc_compressed"] == r["test_acc_compressed_in_memory"], m
    return res


def test_tiny_run_exercises_every_phase(tiny_run):
    out, stdout = tiny_run
    res = check_every_phase_ran(out, stdout)
    assert res["methods"]["l2"]["nonzero_fraction"] == 1.0
    assert res["config"]["n_train"] == 200 and res["config"]["epochs"] == TINY["epochs"]
    assert res["compress"] == {"prune_first": True, "merge_kl": None, "pi0": 0.999, "assign": "responsibility"}
    assert res["command"].startswith("python run_experiments.py --arch lenet300 --quick --seed 3")
    assert "invocation_file" not in res


def test_stopped_and_resumed_run_ends_identical(tiny_run, tmp_path):
    """--max-epochs stops between epochs (as a kill after a checkpoint does); --resume ends with the
    models of the uninterrupted run, bit for bit."""
    out = tmp_path / "stopped"
    rc, stdout, _ = main_in_process(tiny(out, "--max-epochs", "2"))
    assert rc == 0 and "stopping after the requested number of epochs" in stdout, stdout
    assert (out / "sws.npz").exists() and not (out / "vd.npz").exists()
    rc, stdout, stderr = main_in_process(tiny(out, "--resume"))
    assert rc == 0, stdout + stderr
    assert "# resumed: l2 finished earlier" in stdout, stdout
    assert_same_models(tiny_run[0], out)


def test_run_carried_without_its_checkpoint_resumes_from_its_phase_models(tiny_run, tmp_path):
    """A run directory carried to another machine with only its finished phase models (l2.npz, vd.npz;
    no checkpoint) continues with --resume: those phases are taken as done and the rest ends with the
    uninterrupted run's models, bit for bit."""
    out = tmp_path / "carried"
    out.mkdir()
    for ph in ("l2", "vd"):
        shutil.copy(tiny_run[0] / f"{ph}.npz", out / f"{ph}.npz")
    rc, stdout, err = main_in_process(tiny(out, "--resume"))
    assert rc == 0, stdout + err
    assert "its phase models up to vd are taken as finished" in stdout, stdout
    for ph in ("l2", "vd"):
        assert f"# resumed: {ph} finished earlier" in stdout, stdout
    assert "sws epoch" in stdout and "vdsws epoch" in stdout and " vd epoch" not in stdout, stdout
    assert_same_models(tiny_run[0], out)


@pytest.mark.parametrize("flags, msg", [
    (["--seed", "4"], "seed: file 3 vs now 4"),
    (["--epochs-l2", "3"], "epochs: file"),
])
def test_carried_phase_models_with_other_settings_are_refused(tiny_run, tmp_path, flags, msg):
    out = tmp_path / "carried"
    out.mkdir()
    shutil.copy(tiny_run[0] / "l2.npz", out / "l2.npz")
    seed = [] if "--seed" in flags else ["--seed", "3"]
    rc, _, err = main_in_process(["--arch", "lenet300", "--quick", "--out", out, "--no-figures", "--resume",
                                  *seed, *flags])
    assert rc == 1 and msg in err and "l2.npz was made with other settings" in err and err.count("\n") == 1, err


def test_existing_run_needs_resume(tiny_run):
    rc, _, err = main_in_process(["--arch", "lenet300", "--quick", "--seed", "3", "--out", tiny_run[0]])
    assert rc == 1 and err == f"error: {tiny_run[0]} already holds a run (checkpoint.npz); pass --resume to " \
                              "continue it or choose another --out\n", err


def test_results_and_checkpoint_record_the_components(tiny_run):
    """Config.components is in results.json's config and in the checkpoint; each mixture method's entry
    holds its K; Table 3's 17 is no beyond-the-paper label."""
    out, _ = tiny_run
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["components"] == 17, res["config"]
    for m in ("sws", "vdsws"):
        assert res["methods"][m]["mixture"]["components"] == 17, (m, res["methods"][m]["mixture"])
        assert "beyond the paper" not in res["methods"][m]["label"], res["methods"][m]["label"]
    with np.load(out / "checkpoint.npz") as f:
        assert json.loads(str(f["meta"]))["config"]["components"] == 17


def test_resume_with_other_components_is_refused(tiny_run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(tiny_run[0], out)
    rc, _, err = main_in_process(tiny(out, "--resume", "--components", "33"))
    assert rc == 1 and err.count("\n") == 1, err
    assert err.startswith("error: --resume with different settings than the checkpoint: components: checkpoint "
                          "17 vs now 33"), err


def test_tiny_run_with_other_components(tiny_run, tmp_path):
    """--components 5 and --gamma-beta 1.6 (beyond the paper) from the reference run's VD model: the
    VD+SWS mixture has 5 components in the model, the results and the figure, and its row is labelled
    beyond the paper with both."""
    pytest.importorskip("matplotlib")
    ref, _ = tiny_run
    out = tmp_path / "k5"
    rc, stdout, err = main_in_process(["--arch", "lenet300", "--quick", "--seed", "3", "--out", out, "--method",
                                       "vdsws", "--init-from", ref / "vd.npz", "--components", "5",
                                       "--gamma-beta", "1.6"])
    assert rc == 0, stdout + err
    with np.load(out / "vdsws.npz") as f:
        assert f["param/gmm.mu"].shape == (5,), f"expected gmm.mu of shape (5,), got {f['param/gmm.mu'].shape}"
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["components"] == 5 and res["methods"]["vdsws"]["mixture"]["components"] == 5
    assert res["methods"]["vdsws"]["label"] == "VD+SWS K=5 β=1.6 (beyond the paper)", res["methods"]["vdsws"]["label"]
    assert "mixture components K = 5 (Table 3: 17): beyond the paper" in stdout, stdout
    assert (out / "hist_vdsws.png").exists(), sorted(os.listdir(out))


@pytest.mark.parametrize("K, beta, label, finetuned", [
    (17, 10.0, "VD+SWS", "VD+SWS fine-tuned (beyond the paper)"),
    (33, 10.0, "VD+SWS K=33 (beyond the paper)", "VD+SWS fine-tuned K=33 (beyond the paper)"),
    (17, 1.6, "VD+SWS β=1.6 (beyond the paper)", "VD+SWS fine-tuned β=1.6 (beyond the paper)"),
    (33, 0.4, "VD+SWS K=33 β=0.4 (beyond the paper)", "VD+SWS fine-tuned K=33 β=0.4 (beyond the paper)")])
def test_a_mixture_of_other_components_is_labelled_beyond_the_paper(K, beta, label, finetuned):
    """The row label (results.json, docs tables) and Table 2's footnote name a K other than the paper's
    17 and a Gamma hyper-prior beta other than its 10."""
    params = {"gmm.mu": np.zeros(K)}
    for ft, want in ((False, label), (True, finetuned)):
        got = report._label("vdsws", params, ft, beta)
        assert got == want, f"K={K} fine-tuned={ft}: expected label {want!r}, got {got!r}"
    entry = {"method": "vdsws", "test_acc_compressed": 0.98, "nonzero_fraction": 0.02, "ratio_file": 100.0,
             "ratio_paper": 120.0, "mixture": {"components": K}}
    note = [l for l in report.table2("lenet300", {"vdsws": entry}).splitlines() if "components" in l]
    want = [] if K == 17 else ["mixture components K = 33 (Table 3: 17): beyond the paper"]
    assert note == want, f"expected footnote {want}, got {note}"


def test_resume_with_other_settings_is_refused(tiny_run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(tiny_run[0], out)
    rc, _, err = main_in_process(["--arch", "lenet300", "--quick", "--seed", "4", "--out", out, "--resume"])
    assert rc == 1 and "seed: checkpoint 3 vs now 4" in err and err.count("\n") == 1, err


def test_init_from_a_phase_model_continues_exactly_in_process(tiny_run, tmp_path):
    ref, _ = tiny_run
    out = tmp_path / "cont"
    rc, stdout, err = main_in_process(tiny(out, "--method", "vdsws", "--init-from", ref / "vd.npz"))
    assert rc == 0, stdout + err
    assert "# plan: vd from file -> vdsws 1 epochs (from vd)" in stdout, stdout
    assert_same_models(ref, out, phases=("vdsws",))
    res = json.loads((out / "results.json").read_text())
    assert set(res["methods"]) == {"vd", "vdsws"} and len(res["config"]["init_sha256"]["vd"]) == 64


# --init-from mistakes and their one-line messages (in process here, as a subprocess in the slow tier)
INIT_FROM_ERRORS = [
    (["--arch", "lenet5", "--init-from", "{ref}/l2.npz"], "a lenet300 model, but this run is --arch lenet5"),
    (["--arch", "lenet300", "--method", "sws", "--init-from", "{ref}/vd.npz"],
     "a vd model, but --method sws trains l2, sws"),
    (["--arch", "lenet300", "--init-from", "{ref}/nope.npz"], "no such file or directory"),
    (["--arch", "lenet300", "--method", "vd", "--init-from", "{ref}/results.json"], "cannot read"),
]


@pytest.mark.parametrize("args, msg", INIT_FROM_ERRORS)
def test_init_from_errors_in_process(tiny_run, tmp_path, args, msg):
    args = [a.format(ref=tiny_run[0]) for a in args]
    rc, _, err = main_in_process(args + ["--quick", "--out", tmp_path / "o", "--no-figures"])
    assert rc == 1 and msg in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_damaged_checkpoint_falls_back_to_the_previous_in_process(tiny_run, tmp_path):
    out = tmp_path / "damaged"
    shutil.copytree(tiny_run[0], out, ignore=shutil.ignore_patterns("vdsws.npz"))
    ck = out / "checkpoint.npz"
    assert (out / "checkpoint.prev.npz").exists()
    ck.write_bytes(ck.read_bytes()[:500])
    rc, stdout, err = main_in_process(tiny(out, "--resume"))
    assert rc == 0, stdout + err
    assert "is unreadable" in stdout and "resuming from the previous one" in stdout, stdout
    assert_same_models(tiny_run[0], out, phases=("vdsws",))


def test_figures_when_matplotlib_is_installed(tiny_run, tmp_path):
    pytest.importorskip("matplotlib")
    from refvbc.train import load_params

    finals = {m: load_params(str(tiny_run[0] / f"{m}.npz"))[1] for m in PHASES}
    written = report.figures(str(tmp_path), "lenet300", finals)
    names = sorted(os.path.basename(w) for w in written)
    assert names == ["hist_sws.png", "hist_vdsws.png", "sparsity.png"], names
    for w in written:
        assert open(w, "rb").read(8) == b"\x89PNG\r\n\x1a\n", w


def test_branch_jobs_hand_each_child_its_invocation(tiny_quick, tmp_path):
    """--jobs 2: three child invocations (l2; sws and vdsws after it), each written to its branch
    directory, with the parent's settings, one process, no figures and the user's command."""
    argv = ["--arch", "lenet300", "--quick", "--jobs", "2", "--out", str(tmp_path), "--max-epochs", "5",
            "--resume", "--finetune", "bias"]
    a = cli.build_parser().parse_args(argv)
    inv = config.invocation_from_args(a, argv)
    jobs = experiment.branch_jobs(inv)
    assert [(j[0], j[3]) for j in jobs] == [("l2", None), ("sws", "l2"), ("vdsws", "l2")]
    for name, child_argv, log, _ in jobs:
        d = tmp_path / f"branch-{name}"
        assert child_argv[1:] == [RUN_PY, "--config", str(d / "invocation.json")] and log == str(d) + ".out"
        child = config.Invocation.read(child_argv[-1])
        want_init = None if name == "l2" else str(tmp_path / "branch-l2" / "l2.npz")
        assert child.config == inv.config.derived(method=name, init_from=want_init)
        assert (child.out, child.jobs, child.figures) == (str(d), 1, False)
        assert (child.resume, child.max_epochs, child.command) == (True, 5, argv)
        assert child.finetune.variant == "bias" and child.compress == inv.compress


def test_branches_in_process_give_the_sequential_models(tiny_run, tmp_path, monkeypatch):
    """The --jobs 2 path with each child run in this process (run_jobs replaced): the four models of
    the sequential run, and results.json records the user's command in every branch."""
    def in_process_jobs(jobs, n, log=print, poll_s=1.0):
        status = {}
        for name, argv, _, after in jobs:
            assert after is None or status[after] == 0
            status[name] = main_in_process(argv[2:])[0]
        return status

    monkeypatch.setattr(experiment, "run_jobs", in_process_jobs)
    out = tmp_path / "jobs"
    rc, stdout, err = main_in_process(tiny(out, "--jobs", "2"))
    assert rc == 0, stdout + err
    assert_same_models(tiny_run[0], out, b_dir_of=lambda m: out / f"branch-{'vdsws' if m == 'vd' else m}")
    for b in ("l2", "sws", "vdsws"):
        res = json.loads((out / f"branch-{b}" / "results.json").read_text())
        assert res["command"] == "python run_experiments.py " + shlex.join(map(str, tiny(out, "--jobs", "2")))
        assert res["invocation_file"] == str(out / f"branch-{b}" / "invocation.json")
    assert set(json.loads((out / "results.json").read_text())["methods"]) == set(PHASES)


def test_invocation_file_round_trip_and_errors(tmp_path):
    inv = config.Invocation(config=config.Config(arch="lenet5", epochs={"l2": 3, "sws": 1, "vd": 2, "vdsws": 1},
                                                 lr_decay_from=0.5, init_from="x/l2.npz"),
                            out="o", command=["--arch", "lenet5"], max_epochs=4,
                            compress=config.CompressOptions(merge_kl=0.1))
    path = inv.write(str(tmp_path / "inv.json"))
    assert config.Invocation.read(path) == inv
    (tmp_path / "bad.json").write_text('{"format": "refvbc-invocation", "version": 1, "out": "o", '
                                       '"config": {"arch": "lenet300", "lr_l3": 1}}')
    (tmp_path / "other.json").write_text("[1, 2]")
    for name, msg in (("bad.json", "config: unknown setting(s) lr_l3"), ("other.json", "not an invocation file"),
                      ("nope.json", "cannot read")):
        rc, _, err = main_in_process(["--config", tmp_path / name])
        assert rc == 2 and msg in err and err.count("\n") == 1, err
    rc, _, err = main_in_process(["--config", path, "--resume"])
    assert rc == 2 and "--config FILE takes no other flag" in err, err


def test_second_run_on_the_same_directory_is_refused(tmp_path):
    from refvbc.train import lock_dir

    out = tmp_path / "busy"
    held = lock_dir(str(out))
    try:
        rc, _, err = main_in_process(["--arch", "lenet300", "--quick", "--out", out, "--no-figures"])
    finally:
        held.close()
    assert rc == 1 and "in use by another run (pid" in err, err


def test_corrupted_data_named(tmp_path):
    data = tmp_path / "mnist"
    shutil.copytree(os.path.join(ROOT, "data", "mnist"), data)
    f = data / "train-labels-idx1-ubyte.gz"
    os.chmod(f, 0o644)
    f.write_bytes(f.read_bytes()[:1000])
    rc, _, err = main_in_process(["--arch", "lenet300", "--quick", "--data", data, "--out", tmp_path / "o"])
    assert rc == 1 and "train-labels-idx1-ubyte.gz" in err and err.count("\n") == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize("args, msg", [
    (["--arch", "lenet7"], "invalid choice: 'lenet7'"),
    (["--arch", "lenet300", "--bogus"], "unrecognized arguments: --bogus"),
    (["--arch", "lenet300", "--job", "2"], "unrecognized arguments: --job 2"),  # not an abbreviation of --jobs
    (["--arch", "lenet300", "--epoch", "2"], "unrecognized arguments: --epoch 2"),
    (["--arch", "lenet300", "--swe"], "unrecognized arguments: --swe"),
    (["--arch", "lenet300", "--epochs", "-1"], "--epochs must be >= 0"),
    (["--arch", "lenet300", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["--arch", "lenet300", "--lr-theta", "nan"], "--lr-theta must be a finite"),
    (["--arch", "lenet300", "--method", "xyz"], "invalid choice: 'xyz'"),
    (["--arch", "lenet300", "--jobs", "2", "--method", "vd"], "use it with --method all"),
    (["--arch", "lenet300", "--jobs", "0"], "--jobs must be >= 1, got 0"),
    (["--arch", "lenet300", "--gamma-param", "shape"], "invalid choice: 'shape'"),
    (["--arch", "lenet300", "--lr-decay-from", "1.5"], "--lr-decay-from must lie in [0, 1)"),
    (["--arch", "lenet300", "--gamma-beta", "0"], "--gamma-beta must be a finite positive"),
    (["--arch", "lenet300", "--finetune-epochs", "0"], "--finetune-epochs must be >= 1"),
    (["--arch", "lenet300", "--pi0", "1"], "--pi0 must lie in (0, 1), got 1.0"),
    (["--arch", "lenet300", "--pi0", "nan"], "--pi0 must lie in (0, 1), got nan"),
    (["--arch", "lenet300", "--max-epochs", "0"], "--max-epochs must be >= 1, got 0"),
    (["--arch", "lenet300", "--components", "1"], "--components: K must be an odd integer >= 3"),
    (["--arch", "lenet300", "--components", "2"], "--components: K must be an odd integer >= 3"),
    (["--arch", "lenet300", "--components", "16"], "got 16"),
    (["--arch", "lenet300", "--components", "17.5"], "argument --components: invalid int value: '17.5'"),
    ([], "the following arguments are required: --arch"),
])
def test_bad_flags(args, msg):
    rc, out, err = main_in_process(args)
    assert rc == 2 and out == "", out
    assert err.count("\n") == 1 and err.startswith("run_experiments.py: error: ") and msg in err, err


def test_help_groups_and_defaults():
    p = cli.build_parser()
    titles = [g.title for g in p._action_groups]
    for want in ("run control", "the paper's hyper-parameters", "the paper's open choices",
                 "schedules the paper does not state", "beyond the paper", "compression", "trade-off sweep"):
        assert any(t.startswith(want) for t in titles), (want, titles)
    group_of = {a.option_strings[0]: g.title for g in p._action_groups for a in g._group_actions}
    for flag in ("--gamma-param", "--delta-mu-over", "--assign"):
        assert group_of[flag].startswith("the paper's open choices"), flag
    for flag in ("--tau2-final", "--tau2-ramp-from", "--lr-decay-from", "--lr-l2-decay-from", "--mask-pruned"):
        assert group_of[flag].startswith("schedules the paper does not state"), flag
    for a in p._actions:
        if a.option_strings and a.dest != "help":
            assert a.help and ("%(default)" in a.help or a.required), a.option_strings
    text = " ".join(p.format_help().split())  # the help's words, unwrapped
    assert "--tau2 T sws/vdsws: coefficient of the mixture term (default 0.02)" in text
    assert "(default vd,sws,vdsws)" in text and "(default responsibility)" in text
    assert group_of["--components"].startswith("the paper's hyper-parameters"), group_of["--components"]
    k_help = text[text.index("--components K "):]
    assert "Table 3: 17" in k_help[:400] and "beyond the paper) (default 17)" in k_help[:400], k_help[:400]


# ---------------------------------------------------------------------------------------------------
# the shape of the code


def _calls(tree, names):
    for n in ast.walk(tree):
        if isinstance(n, ast.Call):
            f = n.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if name in names:
                yield n


ABBREV_PENDING = set()  # parsers not yet refusing abbreviations: none


def test_every_parser_refuses_abbreviations():
    """Every ArgumentParser (and sub-parser) of refvbc/, scripts/ and run_experiments.py is made with
    allow_abbrev=False, or by refvbc.cli.Parser, which sets it."""
    root = pathlib.Path(ROOT)
    files = [root / "run_experiments.py", *sorted((root / "refvbc").rglob("*.py")),
             *sorted((root / "scripts").glob("*.py"))]
    offenders = set()
    for f in files:
        for call in _calls(ast.parse(f.read_text()), {"ArgumentParser", "add_parser"}):
            kw = {k.arg: k.value for k in call.keywords}
            if not (isinstance(kw.get("allow_abbrev"), ast.Constant) and kw["allow_abbrev"].value is False):
                offenders.add(str(f.relative_to(root)))
    assert offenders <= ABBREV_PENDING, sorted(offenders - ABBREV_PENDING)


def _module_imports(root):
    """{module: set of refvbc modules it imports, at the top or inside functions}."""
    mods = {}
    for f in (root / "refvbc").rglob("*.py"):
        parts = f.relative_to(root).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph = {}
    for name, f in mods.items():
        pkg = name if f.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.ImportFrom):
                base = pkg.split(".")[:len(pkg.split(".")) - n.level + 1] if n.level else []
                mod = ".".join(base + [n.module]) if n.module else ".".join(base)
                deps |= {f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in n.names}
            elif isinstance(n, ast.Import):
                deps |= {a.name for a in n.names}
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def test_no_import_cycle_and_only_the_entry_point_imports_the_cli():
    graph = _module_imports(pathlib.Path(ROOT))
    importers = sorted(m for m, deps in graph.items() if "refvbc.cli" in deps)
    assert importers == [], importers
    for m in ("refvbc.report",):
        assert "refvbc.train" not in graph[m], m

    def reach(m, seen):
        for d in graph[m]:
            if d not in seen:
                seen.add(d)
                reach(d, seen)
        return seen

    cycles = sorted(m for m in graph if m in reach(m, set()))
    assert cycles == [], f"modules on an import cycle: {cycles}"


def test_functions_are_under_100_lines():
    """Every function of refvbc/ is under 100 lines (cuda_train.py and kernels/ are being split elsewhere)."""
    root = pathlib.Path(ROOT) / "refvbc"
    long = []
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root)
        if rel.parts[0] == "kernels" or rel.name == "cuda_train.py":
            continue
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 >= 100:
                long.append(f"{rel}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)")
    assert long == [], long


# ---------------------------------------------------------------------------------------------------
# Run directly (default tier: small and in process)


def test_resume_may_extend_epochs_but_not_shrink_the_running_phase(tmp_path):
    from refvbc.config import Config
    from refvbc.experiment import load_data
    from refvbc.train import Run, RunError

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
    from refvbc.config import Config
    from refvbc.train import Run

    cfg = Config(arch="lenet300", method="l2", n_train=200, n_test=200, epochs={"l2": 2})
    out, data = _checkpoint_without(tmp_path, cfg, "pi0")
    lines = []
    assert "l2" in Run(cfg, out, data, log=lines.append).run(resume=True)
    assert any("resumed l2 after epoch 1" in l for l in lines), lines


@pytest.mark.parametrize("key, then, method, now, ok", [
    ("delta_mu_over", "all", "all", "all", True), ("delta_mu_over", "all", "all", "survivors", False),
    ("delta_mu_over", "all", "l2", "survivors", True), ("delta_mu_over", "all", "sws", "survivors", True),
    ("components", 17, "all", 17, True), ("components", 17, "all", 33, False), ("components", 17, "vd", 33, True)])
def test_resume_of_a_checkpoint_older_than_a_changed_default(tmp_path, key, then, method, now, ok):
    """A checkpoint written before a phase's setting existed was made with the value of
    config.LEGACY_DEFAULTS: Δμ over all weights (--delta-mu-over; the default then) or Table 3's 17
    components (--components). A run that trains a phase reading the setting (vdsws; sws and vdsws)
    resumes with that value and is refused with another; a run without such a phase resumes either way."""
    from refvbc.config import Config
    from refvbc.train import Run, RunError

    cfg = Config(arch="lenet300", method=method, n_train=200, n_test=200,
                 epochs={"l2": 2, "sws": 1, "vd": 1, "vdsws": 1}, **{key: then})
    out, data = _checkpoint_without(tmp_path, cfg, key)
    setattr(cfg, key, now)
    if ok:
        lines = []
        Run(cfg, out, data, log=lines.append).run(resume=True, max_epochs=1)
        assert any("resumed l2 after epoch 1" in l for l in lines), lines
    else:
        with pytest.raises(RunError, match=f"{key}: checkpoint {then!r} vs now {now!r}"):
            Run(cfg, out, data, log=lambda s: None).run(resume=True)


# ---------------------------------------------------------------------------------------------------
# run_experiments.py as a subprocess (slow tier)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick") / "run"
    p = run(["--arch", "lenet300", "--quick", "--seed", "3", "--out", str(out), "--no-figures"])
    assert p.returncode == 0, f"quick run failed:\n{p.stdout}\n{p.stderr}"
    return out, p.stdout


@pytest.mark.slow
def test_quick_run_exercises_every_phase(quick_run):
    out, stdout = quick_run
    res = check_every_phase_ran(out, stdout)
    for m, r in res["methods"].items():
        assert 0.0 < r["nonzero_fraction"] <= 1.0 and r["layers"], m
    assert res["methods"]["l2"]["nonzero_fraction"] == 1.0


@pytest.mark.slow
def test_killed_and_resumed_run_ends_identical(quick_run, tmp_path):
    ref_out, _ = quick_run
    out = tmp_path / "killed"
    cmd = [sys.executable, RUN_PY, "--arch", "lenet300", "--quick", "--seed", "3", "--out", str(out), "--no-figures"]
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
    for phase in PHASES:
        a, b = load(ref_out / f"{phase}.npz"), load(out / f"{phase}.npz")
        assert a.keys() == b.keys()
        for k in a:
            assert np.array_equal(a[k], b[k]), f"{phase} {k}: resumed run differs by {np.abs(a[k] - b[k]).max()}"


@pytest.mark.slow
def test_existing_run_needs_resume_subprocess(quick_run):
    out, _ = quick_run
    p = run(["--arch", "lenet300", "--quick", "--seed", "3", "--out", str(out)])
    assert p.returncode == 1 and "already holds a run" in p.stderr, p.stderr


@pytest.mark.slow
def test_resume_with_other_settings_is_refused_subprocess(quick_run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(quick_run[0], out)
    p = run(["--arch", "lenet300", "--quick", "--seed", "4", "--out", str(out), "--resume"])
    assert p.returncode == 1 and "seed" in p.stderr, p.stderr


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("args, msg", INIT_FROM_ERRORS)
def test_init_from_errors(quick_run, tmp_path, args, msg):
    ref, _ = quick_run
    args = [a.format(ref=ref) for a in args]
    p = run(args + ["--quick", "--out", str(tmp_path / "o"), "--no-figures"])
    assert p.returncode == 1 and msg in p.stderr and "Traceback" not in p.stderr, p.stderr


@pytest.mark.slow
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


@pytest.mark.slow
def test_jobs_2_runs_the_branches_in_parallel(quick_run, tmp_path):
    """--jobs 2: the same four models as the sequential run (single-threaded on both sides)."""
    out = tmp_path / "jobs"
    p = run(["--arch", "lenet300", "--quick", "--seed", "3", "--jobs", "2", "--out", str(out), "--no-figures"])
    assert p.returncode == 0, p.stdout + p.stderr
    for b in ("l2", "sws", "vdsws"):
        assert (out / f"branch-{b}" / "train.log").exists(), b
    for m in PHASES:
        a, c = load(quick_run[0] / f"{m}.npz"), load(out / f"branch-{'vdsws' if m == 'vd' else m}" / f"{m}.npz")
        for k in a:
            np.testing.assert_array_equal(a[k], c[k], err_msg=f"{m} {k} differs with --jobs 2")
    res = json.loads((out / "results.json").read_text())
    assert set(res["methods"]) == set(PHASES)


@pytest.mark.slow
def test_quick_lenet5_end_to_end(tmp_path):
    out = tmp_path / "q5"
    p = run(["--arch", "lenet5", "--quick", "--out", str(out), "--no-figures"])
    assert p.returncode == 0, f"lenet5 quick run failed:\n{p.stdout}\n{p.stderr}"
    res = json.loads((out / "results.json").read_text())
    assert set(res["methods"]) == set(PHASES)
    for m, r in res["methods"].items():
        assert r["test_acc_compressed"] == r["test_acc_compressed_in_memory"], m
        want = 32.0 * (430500 + 580) / (8.0 * r["file_bytes"])
        assert abs(r["ratio_file"] - want) < 1e-9 * want, (m, r["ratio_file"], want)



# ---------------------------------------------------------------------------------------------------
# the committed Table 2 is what the README's command gives

COMMITTED = {arch: pathlib.Path(ROOT, "docs", "results", arch) for arch in ("lenet300",)}
# flags of the README's Table 2 command that do not change a setting of the trained models
NEUTRAL_FLAGS = ("--arch", "--out", "--jobs", "--finetune", "--no-figures")


def recorded_argv(results_json):
    """The arguments of the run_experiments.py command recorded in a results.json."""
    doc = json.loads(pathlib.Path(results_json).read_text())
    argv = shlex.split(doc.get("command") or "")
    assert argv[:2] == ["python", "run_experiments.py"], f"expected a run_experiments.py command, got {argv}"
    return doc, argv[2:]


@pytest.mark.parametrize("arch", sorted(COMMITTED))
def test_committed_seed0_is_the_readme_command_at_the_defaults(arch):
    """docs/results/<arch>/results.json was made by `python run_experiments.py --arch <arch>` (plus flags
    that change no trained setting) from a clean tree, and its config is today's defaults."""
    doc, argv = recorded_argv(COMMITTED[arch] / "results.json")
    flags = [a for a in argv if a.startswith("--")]
    assert set(flags) <= set(NEUTRAL_FLAGS), f"expected only {NEUTRAL_FLAGS}, got {argv}"
    assert doc["code_dirty"] is False, "expected results made from a committed tree"
    want = {**dataclasses.asdict(config.Config(arch=arch)), "init_sha256": {}}
    # a setting added after the run reads as the value such runs used (as --resume reads it)
    got = {**config.LEGACY_DEFAULTS, **doc["config"], "init_sha256": {}}
    diff = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
    assert not diff, f"recorded config differs from today's defaults (recorded, default): {diff}"


@pytest.mark.slow
def test_l2_phase_reproduces_the_committed_model(tmp_path):
    """The LeNet-300-100 L2 phase of the README's command, re-run here, is the committed l2.npz bit for
    bit (the later phases start from it through the same deterministic code)."""
    out = tmp_path / "l2"
    p = run_cli(["--arch", "lenet300", "--method", "l2", "--out", str(out), "--no-figures"], timeout=1800)
    assert p.returncode == 0, f"expected exit 0, got {p.returncode}: {p.stderr[-2000:]}"
    want, got = np.load(COMMITTED["lenet300"] / "l2.npz"), np.load(out / "l2.npz")
    keys = sorted(k for k in want.files if k.startswith("param/"))
    assert keys == sorted(k for k in got.files if k.startswith("param/"))
    for k in keys:
        assert got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k]), \
            f"{k}: max |delta| {np.max(np.abs(got[k].astype(np.float64) - want[k])):.3g} (expected bit-identical)"
