"""The trade-off sweep (refvbc/sweep.py, `run_experiments.py --sweep`): the Pareto front, the VD grid
re-evaluated without retraining, a tiny end-to-end sweep with retrained points (every .rvbc decoded and
re-evaluated), --resume, --pi0 reaching training and compression, and bad input."""
import json
import os
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, run_cli

from refvbc import compress, sweep
from refvbc.arch import get_arch
from refvbc.cli import main
from refvbc.config import Config, Invocation
from refvbc.experiment import load_data
from refvbc.train import Run, load_params, phase_setup, save_params

ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
# the surviving fraction of each layer's weights at dropout rate 0.99 in the test VD model
KEEP = {"fc1": 0.02, "fc2": 0.1, "fc3": 0.5}


def make_vd(arch, l2, keep=KEEP):
    """A VD-looking model from L2 weights: in each layer the largest |theta| (a fraction keep[layer])
    get log alpha rising linearly with the magnitude rank from -3 to 4.6 (dropout rates 0.05 .. 0.99),
    every other weight log alpha 6 (pruned at every threshold of the grids here)."""
    vd = {k: v.copy() for k, v in l2.items()}
    for L in get_arch(arch):
        t = l2[f"{L.name}.theta"].astype(np.float64)
        rank = np.empty(t.size)
        rank[np.argsort(-np.abs(t).ravel(), kind="stable")] = np.arange(t.size) / t.size
        rank = rank.reshape(t.shape)
        q = keep[L.name]
        log_alpha = np.where(rank < q, -3.0 + 7.6 * rank / q, 6.0)
        vd[f"{L.name}.log_sigma2"] = (log_alpha + np.log(t * t + 1e-8)).astype(np.float32)
    return vd


@pytest.fixture(scope="module")
def phase_dir(tmp_path_factory):
    """l2.npz (one epoch of L2 on 1000 images, seed 0) and vd.npz (make_vd of it)."""
    d = tmp_path_factory.mktemp("phases")
    cfg = Config(arch="lenet300", method="l2", n_train=1000, n_test=1000, epochs={"l2": 1})
    l2 = Run(cfg, str(d / "train"), load_data(cfg), log=lambda s: None).run()["l2"]
    save_params(str(d / "l2.npz"), "lenet300", l2, phase="l2")
    save_params(str(d / "vd.npz"), "lenet300", make_vd("lenet300", l2), phase="vd")
    return d


def sweep_args(phase_dir, out, *extra):
    return ["--arch", "lenet300", "--sweep", "--quick", "--init-from", str(phase_dir), "--out", str(out), *extra]


def run_sweep(args):
    p = run_cli(args, timeout=1800, env=ENV)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def check_points(out, doc, epochs=1):
    """Every point's file exists, is counted as recorded, decodes, and scores the recorded accuracy."""
    x, y = load_data(Config(arch="lenet300", n_train=1000, n_test=1000))[2:]  # --quick's test subset
    for p in doc["points"]:
        path = out / p["rvbc"]
        assert p["file_bytes"] == os.path.getsize(path), p["name"]
        want = 32.0 * (266200 + 410) / (8.0 * p["file_bytes"])
        assert abs(p["ratio_file"] - want) < 1e-9 * want, p["name"]
        cm = compress.read_rvbc(str(path))
        assert cm.method == p["method"] and compress.accuracy(cm, x, y) == p["test_acc"], p["name"]
        assert p["epochs"] == (0 if p["method"] == "vd" else epochs), p["name"]
        assert 0 < p["nonzero_percent"] <= 100 and p["ratio_paper"] > 0, p["name"]
    for m, names in doc["pareto"].items():
        mine = [sweep.Result(**p) for p in doc["points"] if p["method"] == m]
        assert [p.name for p in sweep.pareto_front(mine)] == names and names, m


def check_pi0(d, method, pi0):
    """--pi0 is recorded in the checkpoint config and results.json, saved with the model (the
    compressor's argmax reads it), used by the compression, and initialises the mixture."""
    res = json.loads((d / "results.json").read_text())
    assert res["config"]["pi0"] == pi0 and res["compress"]["pi0"] == pi0
    with np.load(d / "checkpoint.npz") as f:
        assert json.loads(str(f["meta"]))["config"]["pi0"] == pi0
    with np.load(d / f"{method}.npz") as f:
        assert float(f["config/pi0"]) == pi0
        log_pi = f["param/gmm.log_pi"]
    assert np.isclose(log_pi[0], np.log(pi0)), log_pi[0]  # Table 3's init; log_pi[0] is never trained


def P(name, ratio, acc, method="vd"):
    return sweep.Result(name=name, method=method, test_acc=acc, ratio_file=ratio)


@pytest.mark.parametrize("points, front", [
    ([], []),
    ([P("a", 10, 0.9)], ["a"]),
    # a trade-off: all three on the front, in ascending ratio
    ([P("c", 100, 0.95), P("a", 10, 0.99), P("b", 50, 0.97)], ["a", "b", "c"]),
    # d is beaten by b on both; e by c on accuracy at the same ratio; f by b on ratio at the same accuracy
    ([P("a", 10, 0.99), P("b", 50, 0.97), P("c", 100, 0.95), P("d", 40, 0.96), P("e", 100, 0.94),
      P("f", 30, 0.97)], ["a", "b", "c"]),
    # two identical points: the first kept; one point better on both than all others
    ([P("a", 10, 0.9), P("b", 10, 0.9), P("c", 5, 0.8)], ["a"]),
    ([P("a", 10, 0.9), P("b", 20, 0.95), P("c", 15, 0.5)], ["b"]),
])
def test_pareto_front(points, front):
    assert [p.name for p in sweep.pareto_front(points)] == front


@pytest.fixture(scope="module")
def test_data():
    cfg = Config(arch="lenet300", n_train=1000, n_test=500)
    return load_data(cfg)[2:]


def test_vd_grid_higher_threshold_keeps_more(phase_dir, test_data, tmp_path):
    """The pruning rule prunes a weight whose dropout rate is >= t: a higher t keeps more weights, so
    more non-zeros and a larger file; every point's file decodes to the accuracy it reports."""
    _, vd = load_params(str(phase_dir / "vd.npz"))
    x, y = test_data
    got = []
    for t in (0.5, 0.8, 0.9, 0.95, 0.99):
        e = sweep.vd_point("lenet300", vd, t, 4, x, y, str(tmp_path / f"t{t}"))
        cm = compress.read_rvbc(str(tmp_path / f"t{t}" / e["file"]))
        assert compress.accuracy(cm, x, y) == e["test_acc_compressed"]
        for L in cm.layers:
            assert len(np.unique(L.weight[L.weight != 0])) <= 4, (t, L.name)
        got.append((e["nonzero_fraction"], e["file_bytes"], e["test_acc_compressed"]))
    nz, size, acc = zip(*got)
    assert all(a < b for a, b in zip(nz, nz[1:])), nz
    assert all(a < b for a, b in zip(size, size[1:])), size
    assert acc[-1] > 0.3, acc  # the test model is a real (if weak) classifier


@pytest.mark.parametrize("clusters", [1, 3, 16])
def test_vd_grid_clusters_bound_the_codebook(phase_dir, test_data, tmp_path, clusters):
    _, vd = load_params(str(phase_dir / "vd.npz"))
    e = sweep.vd_point("lenet300", vd, 0.95, clusters, *test_data, str(tmp_path))
    cm = compress.read_rvbc(str(tmp_path / "vd.rvbc"))
    for L in cm.layers:
        assert 1 <= len(np.unique(L.weight[L.weight != 0])) <= clusters, L.name
    assert len(cm.codebook) <= 1 + 3 * clusters and e["ratio_file"] > 1


def in_process_jobs(launched=None):
    """A stand-in for jobs.run_jobs that runs each retrained point in this process, one after the
    other (`run_experiments.py --config FILE` is cli.main(["--config", FILE]))."""
    def run_jobs(jobs, n, log=print, poll_s=1.0):
        if launched is not None:
            launched.extend(jobs)
        return {name: main(argv[2:]) for name, argv, _, _ in jobs}
    return run_jobs


IN_PROCESS_GRID = ("--sweep-thresholds", "0.9,0.95", "--sweep-clusters", "4", "--sweep-tau2", "0.05",
                   "--sweep-pi0", "0.99", "--sweep-epochs", "1", "--jobs", "2", "--no-figures")


@pytest.fixture(scope="module")
def sweep_in_process(phase_dir, tmp_path_factory):
    """A tiny sweep in this process: VD 2 thresholds x 4 clusters, SWS and VD+SWS tau2 0.05, pi0 0.99, one
    epoch each on --quick's 1000 images, every retrained point run in this process. Returns (out, argv)."""
    out = tmp_path_factory.mktemp("sweep-in-process") / "s"
    argv = sweep_args(phase_dir, out, *IN_PROCESS_GRID)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sweep, "run_jobs", in_process_jobs())
        assert main(argv) == 0
    return out, argv


def test_sweep_in_process_writes_every_point_measured_on_its_file(sweep_in_process):
    out, argv = sweep_in_process
    doc = json.loads((out / "tradeoff.json").read_text())
    count = {m: sum(p["method"] == m for p in doc["points"]) for m in ("vd", "sws", "vdsws")}
    assert count == {"vd": 2, "sws": 1, "vdsws": 1}, count
    assert doc["settings"]["epochs"] == {"sws": 1, "vdsws": 1} and doc["settings"]["jobs"] == 2
    assert doc["command"] == "python run_experiments.py " + shlex.join(argv)
    assert not doc["failed"] and not doc["unfinished"] and doc["figure"] is None
    check_points(out, doc)
    for m in ("sws", "vdsws"):
        check_pi0(out / "points" / f"{m}-tau2_0.05-pi0_0.99", m, 0.99)


def test_points_get_the_sweep_settings(sweep_in_process, phase_dir):
    """Each retrained point's invocation file: the point's method, start model, tau2, pi0 and epochs, the
    sweep's other settings, one process, no figures, and the user's command (also in its results.json)."""
    out, argv = sweep_in_process
    for m, start in (("sws", "l2"), ("vdsws", "vd")):
        d = out / "points" / f"{m}-tau2_0.05-pi0_0.99"
        inv = Invocation.read(str(d / "invocation.json"))
        want = Config(arch="lenet300", method=m, n_train=1000, n_test=1000, tau2=0.05, pi0=0.99,
                      epochs={"l2": 2, "sws": 1, "vd": 2, "vdsws": 1}, init_from=str(phase_dir / f"{start}.npz"))
        assert inv.config == want
        assert (inv.out, inv.jobs, inv.figures, inv.resume, inv.command) == (str(d), 1, False, False, argv)
        res = json.loads((d / "results.json").read_text())
        assert res["command"] == "python run_experiments.py " + shlex.join(argv)


def test_point_epochs_and_flags_follow_the_sweep(phase_dir, tmp_path):
    """--epochs N without --sweep-epochs: the points retrain N epochs, the other phases keep --quick's;
    flags the sweep does not set (learning rates, seed, clustering, --max-epochs) reach every point."""
    from refvbc import cli, config

    argv = sweep_args(phase_dir, tmp_path / "o", "--epochs", "5", "--lr-theta", "1e-4", "--seed", "2",
                      "--merge-kl", "0.5", "--max-epochs", "3", "--sweep-methods", "sws")
    a = cli.build_parser().parse_args(argv)
    sw = sweep.Sweep(cli.sweep_request(a, config.invocation_from_args(a, argv)))
    inv = sw.point_invocation(sweep.Point("sws-tau2_0.1-pi0_0.9", "sws", sweep.Hyper(17, 0.1, 10.0, 0.9)))
    assert inv.config.epochs == {"l2": 2, "sws": 5, "vd": 2, "vdsws": 1}
    assert (inv.config.lrs["theta"], inv.config.seed, inv.config.tau2, inv.config.pi0) == (1e-4, 2, 0.1, 0.9)
    assert inv.compress.merge_kl == 0.5 and inv.max_epochs == 3 and inv.config.init_sha256 == {}
    assert inv.out == str(tmp_path / "o" / "points" / "sws-tau2_0.1-pi0_0.9")


def test_resume_in_process_redoes_nothing_finished(sweep_in_process, tmp_path, monkeypatch, capsys):
    src, argv = sweep_in_process
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    args = [str(out) if a == str(src) else a for a in argv]
    launched = []
    monkeypatch.setattr(sweep, "vd_point", lambda *a, **k: pytest.fail("a finished VD point was computed again"))
    monkeypatch.setattr(sweep, "run_jobs", in_process_jobs(launched))
    assert main(args + ["--resume"]) == 0
    assert launched == [] and "(done earlier)" in capsys.readouterr().out
    (out / "points" / "vdsws-tau2_0.05-pi0_0.99" / "results.json").unlink()
    assert main(args + ["--resume"]) == 0
    assert [j[0] for j in launched] == ["vdsws-tau2_0.05-pi0_0.99"]
    assert Invocation.read(launched[0][1][-1]).resume  # continued from its checkpoint
    after = json.loads((out / "tradeoff.json").read_text())
    assert after["points"] == json.loads((src / "tradeoff.json").read_text())["points"]


@pytest.fixture(scope="module")
def sweep_run(phase_dir, tmp_path_factory):  # used by slow tests only
    """A tiny sweep: VD 2 thresholds x 2 cluster counts; SWS and VD+SWS tau2 0.05 x pi0 {0.99, 0.999},
    one epoch each on 1000 images, two processes at once."""
    out = tmp_path_factory.mktemp("sweep") / "s"
    stdout = run_sweep(sweep_args(phase_dir, out, "--sweep-thresholds", "0.9,0.95",
                                  "--sweep-clusters", "4,8", "--sweep-tau2", "0.05", "--sweep-pi0", "0.99,0.999",
                                  "--sweep-epochs", "1", "--jobs", "2"))
    return out, stdout


@pytest.mark.slow
def test_sweep_writes_every_point_measured_on_its_file(sweep_run):
    out, stdout = sweep_run
    doc = json.loads((out / "tradeoff.json").read_text())
    count = {m: sum(p["method"] == m for p in doc["points"]) for m in ("vd", "sws", "vdsws")}
    assert count == {"vd": 4, "sws": 2, "vdsws": 2}, count
    assert doc["settings"]["epochs"] == {"sws": 1, "vdsws": 1} and doc["settings"]["tau2"] == [0.05]
    assert doc["settings"]["vd_clusters"] == [4, 8] and doc["settings"]["pi0"] == [0.99, 0.999]
    assert "--sweep" in doc["command"] and not doc["failed"] and not doc["unfinished"]
    check_points(out, doc)
    assert doc["paper_table2"]["vdsws"] == [98.24, 1.5, 161] and set(doc["pareto"]) == {"vd", "sws", "vdsws"}
    assert "# trade-off in" in stdout
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert doc["figure"] is None and "tradeoff.png skipped" in stdout
    else:
        assert doc["figure"] == "tradeoff.png"
        assert (out / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_pi0_reaches_training_and_compression(sweep_run):
    out, _ = sweep_run
    for m in ("sws", "vdsws"):
        for pi0 in (0.99, 0.999):
            check_pi0(out / "points" / f"{m}-tau2_0.05-pi0_{pi0:g}", m, pi0)
    l2 = load_params(str(out / "points" / "sws-tau2_0.05-pi0_0.99" / "l2.npz"))[1]
    params, _, coefs = phase_setup(Config(arch="lenet300", method="sws", pi0=0.9), "sws", l2)
    assert coefs["pi0"] == 0.9 and np.isclose(params["gmm.log_pi"][0], np.log(0.9))


@pytest.mark.slow
def test_resume_redoes_nothing_finished(sweep_run, tmp_path, monkeypatch, capsys):
    """--resume: finished points (VD and retrained) are reused as they are; a point that lost its
    results.json is the only one run again, continued from its checkpoint."""
    src, _ = sweep_run
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    before = json.loads((out / "tradeoff.json").read_text())
    command = shlex.split(json.loads((src / "tradeoff.json").read_text())["command"])
    args = [str(out) if a == str(src) else a for a in command[2:]]
    assert "--resume" not in args

    def no_vd(*a, **k):
        raise AssertionError("a finished VD point was computed again")

    launched = []

    def fake_jobs(jobs, n, log=print, poll_s=1.0):
        launched.extend(jobs)
        return {j[0]: 0 for j in jobs}

    monkeypatch.setattr(sweep, "vd_point", no_vd)
    monkeypatch.setattr(sweep, "run_jobs", fake_jobs)
    assert main(args + ["--resume"]) == 0
    assert launched == []
    after = json.loads((out / "tradeoff.json").read_text())
    assert after["points"] == before["points"]
    assert "(done earlier)" in capsys.readouterr().out

    (out / "points" / "sws-tau2_0.05-pi0_0.99" / "results.json").unlink()
    assert main(args + ["--resume"]) == 0
    assert [j[0] for j in launched] == ["sws-tau2_0.05-pi0_0.99"]
    assert launched[0][1][-2] == "--config" and "--sweep" not in launched[0][1]
    assert Invocation.read(launched[0][1][-1]).resume  # continues its own checkpoint
    assert json.loads((out / "tradeoff.json").read_text())["unfinished"] == ["sws-tau2_0.05-pi0_0.99"]

    assert main(args) == 1  # without --resume an existing sweep is refused
    assert "already holds a sweep; pass --resume" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_of_points_made_before_a_setting_existed(sweep_run, tmp_path, monkeypatch):
    """A point whose results.json predates `delta_mu_over` (no such key): the SWS point is reused (from
    the deterministic l2 model both readings are one), the VD+SWS point is run again (the setting's
    legacy value, "all", is not today's default)."""
    src, _ = sweep_run
    out = tmp_path / "old"
    shutil.copytree(src, out)
    for name in ("sws-tau2_0.05-pi0_0.99", "vdsws-tau2_0.05-pi0_0.99"):
        path = out / "points" / name / "results.json"
        res = json.loads(path.read_text())
        assert res["config"].pop("delta_mu_over") == "survivors"
        path.write_text(json.dumps(res))
    command = shlex.split(json.loads((src / "tradeoff.json").read_text())["command"])
    args = [str(out) if a == str(src) else a for a in command[2:]]
    launched = []

    def fake_jobs(jobs, n, log=print, poll_s=1.0):
        launched.extend(jobs)
        return {j[0]: 0 for j in jobs}

    monkeypatch.setattr(sweep, "run_jobs", fake_jobs)
    main(args + ["--resume"])
    assert [j[0] for j in launched] == ["vdsws-tau2_0.05-pi0_0.99"], [j[0] for j in launched]


@pytest.fixture(scope="module")
def bad_dirs(phase_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "only-l2").mkdir()
    shutil.copy(phase_dir / "l2.npz", d / "only-l2" / "l2.npz")
    (d / "swapped").mkdir()  # an l2 model saved as vd.npz
    shutil.copy(phase_dir / "l2.npz", d / "swapped" / "vd.npz")
    shutil.copy(phase_dir / "l2.npz", d / "swapped" / "l2.npz")
    (d / "notes.txt").write_text("my notes\n")  # a file --print-commands must not overwrite
    return d


I = ["--init-from", "{phase}"]


@pytest.mark.parametrize("args, msg", [
    ([], "--sweep needs --init-from DIR"),
    (["--init-from", "{bad}/nope"], "not a directory"),
    (["--init-from", "{phase}/l2.npz"], "not a directory"),
    (["--init-from", "{bad}/only-l2"], "no vd.npz there (the VD points start from it)"),
    (["--init-from", "{bad}/only-l2", "--sweep-methods", "sws"], None),  # only l2.npz needed: valid
    (["--init-from", "{bad}/swapped", "--sweep-methods", "vdsws"], "vd.npz: holds a l2 model, not a vd model"),
    (I + ["--arch", "lenet5"], "a lenet300 model, but this run is --arch lenet5"),
    (I + ["--sweep-tau2=-0.1"], "--sweep-tau2: -0.1 is not a finite number >= 0"),
    (I + ["--sweep-tau2", "0.02,x"], "--sweep-tau2: 'x' is not a number"),
    (I + ["--sweep-pi0", "0.99,1"], "--sweep-pi0: 1 is not a proportion in (0, 1)"),
    (I + ["--sweep-pi0", "0"], "--sweep-pi0: 0 is not a proportion in (0, 1)"),
    (I + ["--sweep-thresholds", "0.95,1.5"], "--sweep-thresholds: 1.5 is not a dropout rate in (0, 1)"),
    (I + ["--sweep-clusters", "0"], "--sweep-clusters: 0 is not an integer >= 1"),
    (I + ["--sweep-clusters", "2.5"], "--sweep-clusters: '2.5' is not a number"),
    (I + ["--sweep-methods", "vd,l2"], "--sweep-methods: unknown method(s) l2"),
    (I + ["--sweep-epochs", "0"], "--sweep-epochs must be >= 1"),
    (I + ["--tau2", "0.1"], "--tau2 cannot be used with --sweep (use --sweep-tau2)"),
    (I + ["--pi0", "0.9"], "--pi0 cannot be used with --sweep (use --sweep-pi0)"),
    (I + ["--method", "vd"], "--method cannot be used with --sweep"),
    (I + ["--sweep-components", "1"], "--sweep-components: 1 is not an integer >= 2"),
    (I + ["--sweep-components", "17,x"], "--sweep-components: 'x' is not a number"),
    (I + ["--sweep-gamma-beta", "0"], "--sweep-gamma-beta: 0 is not a finite number > 0"),
    (I + ["--sweep-gamma-beta", "inf"], "--sweep-gamma-beta: inf is not a finite number > 0"),
    (I + ["--gamma-beta", "1.6"], "--gamma-beta cannot be used with --sweep (use --sweep-gamma-beta)"),
    (I + ["--sweep-tau2", "0.1,0.1000001"], "grid values too close to tell apart in point names"),
    (I + ["--collect", "{bad}/nope"], "nope: not a directory"),
    (I + ["--collect", "{bad}/only-l2", "--sweep-methods", "sws"], "only-l2: no point directory there"),
    (I + ["--sweep-done", "{bad}/nope"], "--sweep-done"),
    (I + ["--sweep-done", "{bad}/only-l2"], None),  # an empty committed directory: valid
    (I + ["--sweep-defaults", "{bad}/nope.json"], "nope.json: no such file"),
    (I + ["--print-commands", "{bad}/notes.txt"], "exists and is not a commands file; not overwritten"),
    (I + ["--print-commands", "{bad}"], "a directory"),
])
def test_bad_input_is_one_line_exit_2(phase_dir, bad_dirs, tmp_path, capsys, monkeypatch, args, msg):
    argv = ["--arch", "lenet300", "--sweep", "--out", str(tmp_path / "o")]
    argv += [a.format(bad=bad_dirs, phase=phase_dir) for a in args]
    if msg is None:  # valid input: stop before anything is computed
        monkeypatch.setattr(sweep.Sweep, "run", lambda self, log: 0)
        assert main(argv) == 0
        return
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and msg in err, f"expected {msg!r}, got {err!r}"
    assert not (tmp_path / "o").exists()
    assert (bad_dirs / "notes.txt").read_text() == "my notes\n"


@pytest.mark.parametrize("args, msg", [
    (["--collect", "d"], "--collect needs --sweep"),
    (["--print-commands", "f"], "--print-commands needs --sweep"),
    (["--sweep-done", "d"], "--sweep-done needs --sweep"),
    (["--sweep-defaults", "f"], "--sweep-defaults needs --sweep"),
    (["--sweep", "--collect", "d", "--print-commands", "f"], "--print-commands and --collect cannot be used together"),
])
def test_sweep_only_flags(capsys, args, msg):
    with pytest.raises(SystemExit) as e:
        main(["--arch", "lenet300", *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and msg in err, f"expected {msg!r}, got {err!r}"


# --- the grid's dimensions, the point commands, committed points, --collect, the figure, the best points


def make_sweep(phase_dir, out, *extra):
    """The Sweep that `run_experiments.py --sweep --quick --init-from PHASE_DIR --out OUT EXTRA` plans
    (nothing run)."""
    from refvbc import cli, config

    argv = sweep_args(phase_dir, out, *extra)
    a = cli.build_parser().parse_args(argv)
    cli.validate(cli.build_parser(), a)
    return sweep.Sweep(cli.sweep_request(a, config.invocation_from_args(a, argv)))


@pytest.mark.parametrize("method, hyper, name", [
    ("vd", sweep.VDHyper(0.95, 16), "vd-t0.95-k16"),
    ("sws", sweep.Hyper(17, 0.02, 10.0, 0.999), "sws-tau2_0.02-pi0_0.999"),  # the defaults: today's names
    ("vdsws", sweep.Hyper(17, 0.005, 10.0, 0.99), "vdsws-tau2_0.005-pi0_0.99"),
    ("vdsws", sweep.Hyper(33, 0.02, 10.0, 0.999), "vdsws-k33-tau2_0.02-pi0_0.999"),
    ("vdsws", sweep.Hyper(17, 0.02, 1.6, 0.999), "vdsws-tau2_0.02-gbeta_1.6-pi0_0.999"),
    ("vdsws", sweep.Hyper(65, 0.2, 0.4, 0.99), "vdsws-k65-tau2_0.2-gbeta_0.4-pi0_0.99"),
])
def test_point_name_encodes_every_setting_off_its_default(method, hyper, name):
    assert sweep.point_name(method, hyper) == name, f"expected {name}, got {sweep.point_name(method, hyper)}"


DEFAULT_RETRAINED = [f"{m}-tau2_{t}-pi0_{p}" for m in ("sws", "vdsws") for t in ("0.005", "0.02", "0.1")
                     for p in ("0.99", "0.999")]


@pytest.mark.parametrize("extra, counts, names", [
    # the default grid: today's 24 VD and 12 retrained points, under today's names
    ((), {"vd": 24, "sws": 6, "vdsws": 6}, DEFAULT_RETRAINED),
    # SWS: K x tau2 x pi0; VD+SWS: K x tau2 x gamma beta x pi0
    (("--sweep-methods", "sws,vdsws", "--sweep-components", "17,33", "--sweep-tau2", "0.02,0.2",
      "--sweep-gamma-beta", "10,1.6", "--sweep-pi0", "0.999"), {"sws": 4, "vdsws": 8}, None),
    (("--sweep-methods", "vdsws", "--sweep-components", "33", "--sweep-tau2", "0.02",
      "--sweep-gamma-beta", "0.4,1.6", "--sweep-pi0", "0.99,0.999"), {"vdsws": 4},
     ["vdsws-k33-tau2_0.02-gbeta_0.4-pi0_0.99", "vdsws-k33-tau2_0.02-gbeta_0.4-pi0_0.999",
      "vdsws-k33-tau2_0.02-gbeta_1.6-pi0_0.99", "vdsws-k33-tau2_0.02-gbeta_1.6-pi0_0.999"]),
])
def test_grid_dimensions(phase_dir, tmp_path, extra, counts, names):
    sw = make_sweep(phase_dir, tmp_path / "o", *extra)
    got = {m: sum(p.method == m for p in sw.points) for m in counts}
    assert got == counts, f"expected {counts}, got {got}"
    retrained = [p.name for p in sw.points if p.method != "vd"]
    assert len(set(retrained)) == len(retrained)
    if names is not None:
        assert retrained == names, f"expected {names}, got {retrained}"
    for p in sw.points:  # every point's config carries its settings; SWS keeps the default gamma beta
        if p.method != "vd":
            cfg = sw.point_config(p)
            assert (cfg.components, cfg.tau2, cfg.gamma_beta, cfg.pi0) == tuple(vars(p.hyper).values()), p.name
            assert p.method == "vdsws" or cfg.gamma_beta == Config().gamma_beta, p.name


ARGV_CASES = {
    "defaults": (),
    "schedules": ("--seed", "3", "--lr-theta", "1e-4", "--lr-log-pi", "0.001", "--lr-decay-from", "0.5",
                  "--tau2-final", "0.2", "--tau2-ramp-from", "0.25", "--mask-pruned", "--batch-size", "50"),
    "choices": ("--gamma-alpha", "50000", "--gamma-param", "scale", "--delta-mu-over", "all",
                "--lr-l2-decay-from", "none", "--weight-decay", "0.001"),
    "compression": ("--merge-kl", "0.5", "--no-prune-first", "--assign", "density", "--max-epochs", "2",
                    "--epochs", "3"),
}


@pytest.mark.parametrize("case", list(ARGV_CASES))
def test_point_commands_make_the_point_invocations(phase_dir, tmp_path, case):
    """Each retrained point's command, parsed as run_experiments.py parses it, makes the point's own
    invocation: the same config (start model by path), compression options, epochs and run options."""
    from refvbc import cli, config

    grid = ("--sweep-methods", "sws,vdsws", "--sweep-tau2", "0,0.05", "--sweep-gamma-beta", "1.6,10",
            "--sweep-pi0", "0.9", "--no-figures")
    sw = make_sweep(phase_dir, tmp_path / "o", *grid, *ARGV_CASES[case])
    for p in sw.points:
        argv = cli.invocation_argv(sw.command_invocation(p))
        start = str(phase_dir / f"{sweep.START_FILE[p.method]}.npz")
        head = ["--arch", "lenet300", "--method", p.method, "--init-from", start, "--out", sw.point_dir(p.name)]
        assert argv[:8] == head, f"expected {head}, got {argv[:8]}"
        a = cli.build_parser().parse_args(argv)
        got = config.invocation_from_args(a, argv)
        want = sw.point_invocation(p)
        assert got.config == want.config, f"{p.name}: expected {want.config}, got {got.config}"
        assert (got.compress, got.max_epochs, got.figures, got.resume) == (want.compress, want.max_epochs,
                                                                        False, True), p.name


def test_components_reach_the_point_command(phase_dir, tmp_path):
    """K other than 17 is written as --components K: a parser that has the flag reads it back; one that
    has not yet refuses to write the command (a one-line SweepError naming the flag)."""
    from refvbc import cli

    sw = make_sweep(phase_dir, tmp_path / "o", "--sweep-methods", "vdsws", "--sweep-components", "33",
                    "--sweep-tau2", "0.02", "--sweep-pi0", "0.999")
    (p,) = sw.points
    has_flag = "--components" in cli.build_parser()._option_string_actions
    if not has_flag:
        with pytest.raises(sweep.SweepError, match="--components 33"):
            cli.invocation_argv(sw.command_invocation(p))
        return
    argv = cli.invocation_argv(sw.command_invocation(p))
    assert argv[argv.index("--components") + 1] == "33"


def R(name, method, ratio, acc):
    return sweep.Result(name=name, method=method, test_acc=acc, ratio_file=ratio)


PAPER = {"vd": (98.05, 1.6, 131), "sws": (98.16, 8.6, 34), "vdsws": (98.24, 1.5, 161)}


@pytest.mark.parametrize("points, want", [
    # (a) the best accuracy at ratio >= 161 (b) the largest ratio at accuracy >= 98.24
    ([R("a", "vdsws", 150, 0.9830), R("b", "vdsws", 161, 0.9820), R("c", "vdsws", 240, 0.9810),
      R("d", "vdsws", 200, 0.9824)], {"vdsws": ("d", "d")}),
    # no point reaches the paper's accuracy; one exactly at the paper's ratio counts
    ([R("a", "vdsws", 161, 0.9800), R("b", "vdsws", 300, 0.9700)], {"vdsws": ("a", None)}),
    # none at the paper's ratio; ties: the larger ratio (a), the higher accuracy (b over c)
    ([R("a", "sws", 20, 0.9850), R("b", "sws", 30, 0.9820), R("c", "sws", 30, 0.9817)],
     {"sws": (None, "b")}),
    ([R("a", "vd", 140, 0.981), R("b", "vd", 150, 0.981), R("c", "vd", 100, 0.99)], {"vd": ("b", "b")}),
    # per method, never across methods
    ([R("a", "vd", 500, 0.99), R("b", "sws", 40, 0.9816)], {"vd": ("a", "a"), "sws": ("b", "b")}),
    ([], {}),
])
def test_best_points(points, want):
    best = sweep.best_points(points, PAPER)
    got = {m: (b.at_paper_ratio and b.at_paper_ratio.name, b.at_paper_accuracy and b.at_paper_accuracy.name)
           for m, b in best.items()}
    assert got == want, f"expected {want}, got {got}"
    doc = sweep.best_document(best)
    assert doc["rule"] == sweep.BEST_RULE and set(doc["methods"]) == set(want)


@pytest.mark.parametrize("arch, methods, accs, lo, top", [
    ("lenet300", ("vd", "sws", "vdsws"), [0.97, 0.983], 96.55, 98.3),
    ("lenet300", ("sws",), [0.5], 96.66, 98.16),  # every point below: the top is the paper's row
    ("lenet5", ("vd", "sws", "vdsws"), [0.992], 97.51, 99.2),
])
def test_y_limits(arch, methods, accs, lo, top):
    points = [R(f"p{i}", methods[0], 100, a) for i, a in enumerate(accs)]
    got_lo, got_hi = sweep.y_limits(arch, points, {}, methods)
    assert abs(got_lo - lo) < 1e-9, f"expected lower edge {lo}, got {got_lo}"
    assert top < got_hi <= top + max(0.1, 0.04 * (top - lo)) + 1e-9, f"expected just above {top}, got {got_hi}"


def test_figure_draws_points_below_the_range_at_the_edge(tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    points = [R(f"{m}{i}", m, float(rng.uniform(20, 400)), float(rng.uniform(0.95, 0.985)))
              for m in ("vd", "sws", "vdsws") for i in range(6)]
    points.append(R("low", "vdsws", 300, 0.5))
    defaults = {"vdsws": sweep.DefaultRow("vdsws", 0.9815, 235.0), "sws": sweep.DefaultRow("sws", 0.9, 50.0)}
    assert sweep.figure(str(tmp_path / "t.png"), "lenet300", points, ("vd", "sws", "vdsws"), defaults) == "t.png"
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_default_rows_from_a_results_json(tmp_path):
    """Our default rows come from a results.json's entries; a file of another net or not a results.json
    is a one-line SweepError when named by --sweep-defaults, no rows when only found in --init-from."""
    path = os.path.join(ROOT, "docs", "results", "lenet300", "results.json")
    res = json.loads(open(path).read())
    rows = sweep.load_defaults(path, "lenet300", ("vd", "sws", "vdsws"), explicit=True)
    for m in ("vd", "sws", "vdsws"):
        want = (res["methods"][m]["test_acc_compressed"], res["methods"][m]["ratio_file"])
        assert (rows[m].test_acc, rows[m].ratio_file) == want, m
    with pytest.raises(sweep.SweepError, match="results of lenet300, but this sweep is --arch lenet5"):
        sweep.load_defaults(path, "lenet5", ("vd",), explicit=True)
    assert sweep.load_defaults(path, "lenet5", ("vd",), explicit=False) == {}
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(sweep.SweepError, match="not a results.json"):
        sweep.load_defaults(str(tmp_path / "bad.json"), "lenet300", ("vd",), explicit=True)


CMD_GRID = IN_PROCESS_GRID + ("--sweep-methods", "sws,vdsws")  # the retrained points of sweep_in_process
CMD_POINTS = ["sws-tau2_0.05-pi0_0.99", "vdsws-tau2_0.05-pi0_0.99"]


@pytest.fixture(scope="module")
def commands_run(phase_dir, tmp_path_factory):
    """--print-commands for the retrained points of the in-process sweep, then every printed command run
    in this process (`python run_experiments.py ARGS` is cli.main(ARGS)). Returns (out, commands file,
    its lines)."""
    root = tmp_path_factory.mktemp("commands")
    out, cmds = root / "s", root / "points.sh"
    assert main(sweep_args(phase_dir, out, *CMD_GRID, "--print-commands", str(cmds))) == 0
    lines = cmds.read_text().splitlines()
    for line in lines:
        words = shlex.split(line)
        assert words[:2] == ["python", "run_experiments.py"], line
        assert main(words[2:]) == 0, line
    return out, cmds, lines


def test_printed_commands_make_points_that_resume_takes_as_done(commands_run, sweep_in_process, phase_dir,
                                                                monkeypatch):
    out, cmds, lines = commands_run
    want = [f"python run_experiments.py --arch lenet300 --method {m} --init-from {phase_dir / s} --out "
            f"{out / 'points' / n} --quick --tau2 0.05 --pi0 0.99 --no-figures --resume"
            for m, s, n in (("sws", "l2.npz", CMD_POINTS[0]), ("vdsws", "vd.npz", CMD_POINTS[1]))]
    assert lines == want, f"expected {want}, got {lines}"
    src, _ = sweep_in_process
    for name in CMD_POINTS:  # the same config as the sweep's own child process of that point
        mine = json.loads((out / "points" / name / "results.json").read_text())["config"]
        theirs = json.loads((src / "points" / name / "results.json").read_text())["config"]
        assert mine == theirs, f"{name}: expected {theirs}, got {mine}"
    assert main(sweep_args(phase_dir, out, *CMD_GRID, "--print-commands", str(cmds))) == 0
    assert cmds.read_text() == ""  # nothing left to run; the earlier commands file replaced
    monkeypatch.setattr(sweep, "run_jobs", lambda *a, **k: pytest.fail("a finished point was trained again"))
    assert main(sweep_args(phase_dir, out, *CMD_GRID, "--resume")) == 0
    doc = json.loads((out / "tradeoff.json").read_text())
    assert [p["name"] for p in doc["points"]] == CMD_POINTS and not doc["missing"]
    assert all(p["epochs"] == 1 and p["in_grid"] for p in doc["points"])
    assert doc["points"][1]["hyper"] == {"components": 17, "tau2": 0.05, "gamma_beta": 10.0, "pi0": 0.99}


def test_collect_builds_the_tradeoff_from_point_dirs(commands_run, phase_dir, tmp_path):
    """--collect: the retrained points read from directories made elsewhere, the VD points computed, a
    grid point found nowhere listed as missing; every .rvbc path leads to the point's file."""
    out = commands_run[0]
    dest = tmp_path / "c"
    grid = IN_PROCESS_GRID + ("--sweep-tau2", "0.05,0.1")
    assert main(sweep_args(phase_dir, dest, *grid, "--collect", str(out / "points"))) == 0
    doc = json.loads((dest / "tradeoff.json").read_text())
    got = [p["name"] for p in doc["points"] if p["method"] != "vd"]
    assert got == CMD_POINTS and sum(p["method"] == "vd" for p in doc["points"]) == 2, got
    assert doc["missing"] == ["sws-tau2_0.1-pi0_0.99", "vdsws-tau2_0.1-pi0_0.99"], doc["missing"]
    assert doc["settings"]["collected_from"] == [str(out / "points")]
    check_points(dest, doc)
    assert set(doc["best"]["methods"]) == {"vd", "sws", "vdsws"} and doc["best"]["rule"] == sweep.BEST_RULE


def _edit_results(path, **changes):
    res = json.loads(path.read_text())
    res["config"].update(changes)
    path.write_text(json.dumps(res))


COLLECT_CASES = {
    "other start model": (lambda d: _edit_results(d / CMD_POINTS[0] / "results.json",
                                                  init_sha256={"l2": "0" * 64}),
                          "sws-tau2_0.05-pi0_0.99: trained from another l2 model than --init-from's"),
    "other settings": (lambda d: _edit_results(d / CMD_POINTS[1] / "results.json", seed=5),
                       "made with other settings than this sweep's: seed 5 (this sweep 0)"),
    "file missing": (lambda d: (d / CMD_POINTS[0] / "sws.rvbc").unlink(),
                     "its sws.rvbc is missing or not the file its results.json describes"),
    "not a point": (lambda d: _edit_results(d / CMD_POINTS[0] / "results.json", method="l2"),
                    "results.json of --method l2, not a retrained sweep point (sws or vdsws) nor a whole-table"),
    "outside the grid": (lambda d: _edit_results(d / CMD_POINTS[0] / "results.json", tau2=0.07), None),
}


@pytest.mark.parametrize("case", list(COLLECT_CASES))
def test_collect_refuses_points_of_another_sweep(commands_run, phase_dir, tmp_path, capsys, case):
    """A point of another start model or other settings is refused in one line (exit 2, nothing
    written); one whose tau2 is not in the grid is included with a warning line, in_grid false."""
    edit, msg = COLLECT_CASES[case]
    pts = tmp_path / "pts"
    shutil.copytree(commands_run[0] / "points", pts)
    edit(pts)
    dest = tmp_path / "c"
    rc = main(sweep_args(phase_dir, dest, *CMD_GRID, "--collect", str(pts)))
    out, err = capsys.readouterr()
    if msg is not None:
        assert rc == 2 and err.count("\n") == 1 and msg in err, f"expected {msg!r}, got {err!r}"
        assert not dest.exists()
        return
    assert rc == 0, err
    assert "sws-tau2_0.07-pi0_0.99 is not a point of the grid; included, marked in_grid false" in out, out
    doc = json.loads((dest / "tradeoff.json").read_text())
    got = {p["name"]: p["in_grid"] for p in doc["points"]}
    assert got == {CMD_POINTS[1]: True, "sws-tau2_0.07-pi0_0.99": False}, got
    assert doc["missing"] == [CMD_POINTS[0]]


def test_points_made_before_components_existed_read_as_k17(commands_run, phase_dir, tmp_path):
    """A point whose results.json has no `components` (made before the setting existed, with K 17) is
    the K 17 point of the grid, as --resume reads an older checkpoint."""
    pts = tmp_path / "pts"
    shutil.copytree(commands_run[0] / "points", pts)
    for name in CMD_POINTS:
        path = pts / name / "results.json"
        res = json.loads(path.read_text())
        assert res["config"].pop("components") == 17
        path.write_text(json.dumps(res))
    assert main(sweep_args(phase_dir, tmp_path / "c", *CMD_GRID, "--collect", str(pts))) == 0
    doc = json.loads((tmp_path / "c" / "tradeoff.json").read_text())
    assert [p["name"] for p in doc["points"]] == CMD_POINTS and not doc["missing"]


SMALL_FILES = ("results.json", "{m}.rvbc", "{m}.npz", "train.log")  # what is committed of a point


def test_committed_points_are_done_on_a_new_machine(commands_run, phase_dir, tmp_path, monkeypatch, capsys):
    """Points whose small files are committed (results.json, .rvbc, .npz, train.log) and named by
    --sweep-done are neither trained nor printed, their files used where they are and never written;
    a committed point made with other settings is not done (a line says why) and is run."""
    committed = tmp_path / "docs" / "sweep"
    for name in CMD_POINTS:
        m = name.split("-")[0]
        (committed / name).mkdir(parents=True)
        for f in SMALL_FILES:
            shutil.copy(commands_run[0] / "points" / name / f.format(m=m), committed / name / f.format(m=m))
    before = {p: p.read_bytes() for p in committed.rglob("*") if p.is_file()}
    launched = []
    monkeypatch.setattr(sweep, "run_jobs", in_process_jobs(launched))
    new = tmp_path / "new"
    assert main(sweep_args(phase_dir, new, *CMD_GRID, "--sweep-done", str(committed))) == 0
    doc = json.loads((new / "tradeoff.json").read_text())
    assert launched == [] and [p["name"] for p in doc["points"]] == CMD_POINTS
    for p in doc["points"]:
        assert (new / p["rvbc"]).resolve() == (committed / p["name"] / f"{p['method']}.rvbc").resolve()
    cmds = tmp_path / "c.sh"
    assert main(sweep_args(phase_dir, tmp_path / "p", *CMD_GRID, "--sweep-done", str(committed),
                           "--print-commands", str(cmds))) == 0
    assert cmds.read_text() == ""
    assert {p: p.read_bytes() for p in committed.rglob("*") if p.is_file()} == before
    _edit_results(committed / CMD_POINTS[0] / "results.json", seed=5)
    monkeypatch.setattr(sweep, "run_jobs", lambda jobs, n, log=print, poll_s=1.0:
                        launched.extend(jobs) or {j[0]: 0 for j in jobs})  # runs nothing: the point stays unfinished
    capsys.readouterr()
    assert main(sweep_args(phase_dir, tmp_path / "new2", *CMD_GRID, "--sweep-done", str(committed))) == 0
    assert [j[0] for j in launched] == [CMD_POINTS[0]], [j[0] for j in launched]
    assert "not used: made with other settings than this sweep's: seed 5 (this sweep 0)" in capsys.readouterr().out


def make_table_dir(commands_run, phase_dir, dest):
    """A whole-table run directory as `run_experiments.py` (--method all) leaves it, made of the two
    retrained points of commands_run: one results.json holding both methods' entries under one config
    (method all, no start model), their .rvbc files, and the start models l2.npz, vd.npz beside them."""
    points = commands_run[0] / "points"
    res = [json.loads((points / n / "results.json").read_text()) for n in CMD_POINTS]
    cfg = {**res[1]["config"], "method": "all", "init_from": None, "init_sha256": {}}
    dest.mkdir()
    (dest / "results.json").write_text(json.dumps({**res[1], "config": cfg,
                                                   "methods": {**res[0]["methods"], **res[1]["methods"]}}))
    for name, m in zip(CMD_POINTS, ("sws", "vdsws")):
        shutil.copy(points / name / f"{m}.rvbc", dest / f"{m}.rvbc")
    for ph in ("l2", "vd"):
        shutil.copy(phase_dir / f"{ph}.npz", dest / f"{ph}.npz")
    return dest


def test_table_phases_are_the_default_points(commands_run, phase_dir, tmp_path, capsys):
    """A whole-table run's SWS and VD+SWS phases are the grid's points at its settings when its l2.npz
    and vd.npz are the sweep's start models: --sweep-done takes them as done, --collect reads them; a
    table whose start model differs is not used, and says why."""
    table = make_table_dir(commands_run, phase_dir, tmp_path / "table")
    cmds = tmp_path / "c.sh"
    assert main(sweep_args(phase_dir, tmp_path / "p", *CMD_GRID, "--sweep-done", str(table),
                           "--print-commands", str(cmds))) == 0
    assert cmds.read_text() == "", f"expected no command, got {cmds.read_text()!r}"
    dest = tmp_path / "collected"
    assert main(sweep_args(phase_dir, dest, *CMD_GRID, "--collect", str(table))) == 0
    doc = json.loads((dest / "tradeoff.json").read_text())
    got = {p["name"]: p for p in doc["points"] if p["method"] != "vd"}
    assert sorted(got) == CMD_POINTS and not doc["missing"], (sorted(got), doc["missing"])
    for name, m in zip(CMD_POINTS, ("sws", "vdsws")):
        assert (dest / got[name]["rvbc"]).resolve() == (table / f"{m}.rvbc").resolve()
    shutil.copy(phase_dir / "l2.npz", table / "vd.npz")  # another start model for the VD+SWS phase
    capsys.readouterr()
    assert main(sweep_args(phase_dir, tmp_path / "p2", *CMD_GRID, "--sweep-done", str(table),
                           "--print-commands", str(cmds))) == 0
    assert [shlex.split(line)[5] for line in cmds.read_text().splitlines()] == ["vdsws"], cmds.read_text()
    assert "VD+SWS point not used: trained from another vd model" in capsys.readouterr().out


@pytest.mark.slow
def test_printed_commands_run_by_a_shell(phase_dir, tmp_path):
    """The commands file as a scheduler would run it: `bash FILE` from the repository root, each line a
    run_experiments.py process; then --collect takes every point as done."""
    out, cmds = tmp_path / "s", tmp_path / "points.sh"
    p = run_cli(sweep_args(phase_dir, out, *CMD_GRID, "--print-commands", cmds), env=ENV)
    assert p.returncode == 0 and len(cmds.read_text().splitlines()) == 2, p.stdout + p.stderr
    env = dict(ENV, PATH=os.path.dirname(sys.executable) + os.pathsep + ENV["PATH"])
    r = subprocess.run(["bash", "-e", str(cmds)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr
    run_sweep(sweep_args(phase_dir, tmp_path / "c", *CMD_GRID, "--collect", out / "points"))
    doc = json.loads((tmp_path / "c" / "tradeoff.json").read_text())
    assert [p["name"] for p in doc["points"]] == CMD_POINTS and not doc["missing"]
