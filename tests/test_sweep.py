"""The trade-off sweep (refvbc/sweep.py, `run_experiments.py --sweep`): the Pareto front, the VD grid
re-evaluated without retraining, a tiny end-to-end sweep with retrained points (every .rvbc decoded and
re-evaluated), --resume, --pi0 reaching training and compression, and bad input."""
import json
import os
import shlex
import shutil

import numpy as np
import pytest
from conftest import run_cli

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
        mine = [p for p in doc["points"] if p["method"] == m]
        assert [p["name"] for p in sweep.pareto_front(mine)] == names and names, m


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


def P(name, ratio, acc):
    return {"name": name, "ratio_file": ratio, "test_acc": acc}


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
    assert [p["name"] for p in sweep.pareto_front(points)] == front


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
    inv = sw.point_invocation("sws", {"tau2": 0.1, "pi0": 0.9})
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
    assert err.count("\n") == 1 and err.startswith("error: ") and msg in err, err
    assert not (tmp_path / "o").exists()
