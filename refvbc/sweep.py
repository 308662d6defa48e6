"""The accuracy-vs-compression trade-off sweep: the paper's figure of the accuracies and compression
ratios each method reaches "by changing the values of the hyper-parameters".

    python run_experiments.py --arch lenet300 --sweep --init-from docs/results/lenet300 --jobs 2

From the shared phase models in --init-from (`l2.npz`, `vd.npz`, checked by train.load_init):
    VD      vd.npz as it is (no retraining), compressed for every pruning threshold (dropout rate t)
            x number of clusters of the VD codebook (the components of its 1-D GMM) of the grid;
    SWS     the SWS phase retrained from l2.npz for every (tau2, pi0) of the grid;
    VD+SWS  the VD+SWS phase retrained from vd.npz for every (tau2, pi0) of the grid.
Every point is compressed to a real `.rvbc` file in OUT/points/<name>/, read back, and evaluated on
the decoded model (report.summarize). The retrained points are run_experiments.py processes run side
by side (refvbc/jobs.py), each the training invocation of one point (method sws or vdsws, written to
OUT/points/<name>/invocation.json and run with `run_experiments.py --config FILE`), each in its own
directory with its own log and checkpoint: `--resume` continues an interrupted sweep, and a point whose results.json was written with
the settings asked for now is not run again. The VD points are computed in this process first; each
leaves OUT/points/<name>/point.json, reused by --resume under the same settings.

Writes OUT/tradeoff.json (every point, each method's Pareto front, the command and the settings) and,
with matplotlib, OUT/tradeoff.png (test accuracy vs file compression ratio, log x axis).
"""

import hashlib
import json
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from . import report
from .config import INVOCATION_FILE, LEGACY_DEFAULTS, PHASE_SETTINGS, Config, Invocation, default_epochs, \
    setting_matters
from .data import DataError
from .experiment import load_data
from .fileio import atomic_write_bytes
from .jobs import child_argv, run_jobs
from .phases import PHASES, method_phases
from .runlog import RunLog
from .train import RunError, load_init, lock_dir

SWEEP_METHODS = ("vd", "sws", "vdsws")
START_FILE = {"vd": "vd", "sws": "l2", "vdsws": "vd"}  # the phase model each method's points start from
DEFAULTS = {  # the grids (strings as on the command line)
    "methods": "vd,sws,vdsws",
    "thresholds": "0.5,0.8,0.9,0.95,0.98,0.99",
    "clusters": "8,16,32,64",
    "tau2": "0.005,0.02,0.1",
    "pi0": "0.99,0.999",
}
class SweepError(ValueError):
    """Bad sweep input: one line on stderr, exit status 2."""


@dataclass
class SweepRequest:
    """A sweep as asked for: `base` is the training invocation every retrained point starts from
    (its config's hyper-parameters, its compression options, device, data, --max-epochs; its config's
    init_from is the directory of the phase models, its out the sweep's directory, its jobs the points
    run at once, its resume whether to continue an earlier sweep), the grids as their command-line
    text (DEFAULTS), the epochs of every retrained point (None: the phase's) and whether it is --quick."""
    base: Invocation
    methods: str = DEFAULTS["methods"]
    thresholds: str = DEFAULTS["thresholds"]
    clusters: str = DEFAULTS["clusters"]
    tau2: str = DEFAULTS["tau2"]
    pi0: str = DEFAULTS["pi0"]
    epochs: object = None
    quick: bool = False


def _values(flag, text, kind, ok, what):
    """A comma-separated grid -> sorted distinct values; SweepError naming the flag on a bad one."""
    out = []
    for tok in (t.strip() for t in text.split(",")):
        try:
            v = kind(tok)
        except ValueError:
            raise SweepError(f"{flag}: {tok!r} is not a number") from None
        if not ok(v):
            raise SweepError(f"{flag}: {tok} is not {what}")
        out.append(v)
    return sorted(set(out))


def grids(req):
    """The parsed grids of a SweepRequest: dict methods, thresholds, clusters, tau2, pi0; SweepError
    naming the flag of a bad value."""
    methods = [m.strip() for m in req.methods.split(",")]
    bad = [m for m in methods if m not in SWEEP_METHODS]
    if bad or not methods:
        raise SweepError(f"--sweep-methods: unknown method(s) {', '.join(bad)}; choose from "
                         f"{','.join(SWEEP_METHODS)}")
    return {
        "methods": [m for m in SWEEP_METHODS if m in methods],
        "thresholds": _values("--sweep-thresholds", req.thresholds, float, lambda v: 0.0 < v < 1.0,
                              "a dropout rate in (0, 1)"),
        "clusters": _values("--sweep-clusters", req.clusters, int, lambda v: v >= 1, "an integer >= 1"),
        "tau2": _values("--sweep-tau2", req.tau2, float, lambda v: np.isfinite(v) and v >= 0.0,
                        "a finite number >= 0"),
        "pi0": _values("--sweep-pi0", req.pi0, float, lambda v: 0.0 < v < 1.0, "a proportion in (0, 1)"),
    }


def check_request(req):
    """The settings that make no sense in a sweep (it sets them per point), the sweep's epochs and its
    start directory; SweepError on a bad one."""
    cfg, d = req.base.config, Config()
    for flag, given in (("--method", cfg.method != "all"), ("--tau2", cfg.tau2 != d.tau2),
                        ("--pi0", cfg.pi0 != d.pi0), ("--finetune", req.base.finetune.variant != "none")):
        if given:
            hint = {"--tau2": " (use --sweep-tau2)", "--pi0": " (use --sweep-pi0)"}.get(flag, "")
            raise SweepError(f"{flag} cannot be used with --sweep{hint}")
    if req.epochs is not None and req.epochs < 1:
        raise SweepError(f"--sweep-epochs must be >= 1, got {req.epochs}")
    if cfg.init_from is None:
        raise SweepError("--sweep needs --init-from DIR, a directory holding the phase models l2.npz and "
                         "vd.npz (as docs/results/lenet300/)")
    if not os.path.isdir(cfg.init_from):
        raise SweepError(f"--init-from {cfg.init_from}: not a directory (--sweep needs one holding l2.npz "
                         "and vd.npz)")


def load_starts(arch, src, methods):
    """The phase models the methods' points start from: {phase: (path, params, sha256)}, each checked
    to be of `arch` and of its phase by train.load_init; SweepError when one is missing or wrong."""
    out = {}
    for m in methods:
        ph = START_FILE[m]
        if ph in out:
            continue
        path = os.path.abspath(os.path.join(src, f"{ph}.npz"))
        if not os.path.isfile(path):
            raise SweepError(f"--init-from {src}: no {ph}.npz there (the {PHASES[m].label} points start "
                             "from it)")
        cfg = Config(arch=arch, method="all", init_from=path)
        try:
            got = load_init(cfg)
        except RunError as e:
            raise SweepError(str(e)) from None
        if ph not in got:
            raise SweepError(f"--init-from {path}: holds a {', '.join(got)} model, not a {ph} model")
        out[ph] = (path, got[ph], cfg.init_sha256[ph])
    return out


def pareto_front(points, x="ratio_file", y="test_acc"):
    """The points no other point beats on both `x` and `y` (both larger is better), ascending in x.

    Of points equal in both, the first is kept; a point equal to another in one and worse in the other
    is dominated."""
    best, front = -np.inf, []
    for p in sorted(points, key=lambda p: (-p[x], -p[y])):  # stable: ties keep their input order
        if p[y] > best:
            front.append(p)
            best = p[y]
    return front[::-1]


def point_name(method, hyper):
    if method == "vd":
        return f"vd-t{hyper['threshold']:g}-k{hyper['clusters']}"
    return f"{method}-tau2_{hyper['tau2']:g}-pi0_{hyper['pi0']:g}"


def vd_point(arch, params, threshold, clusters, x_test, y_test, out_dir):
    """One VD point: `params` (a VD model) pruned at dropout rate `threshold`, its codebook fitted
    with `clusters` components, written to out_dir/vd.rvbc, decoded and evaluated. Returns the
    results.json-style entry (report.summarize)."""
    return report.summarize(arch, "vd", params, x_test, y_test, out_dir,
                            {"prune_threshold": float(threshold), "vd_components": int(clusters)})


def record(name, method, hyper, entry, epochs):
    """A point of tradeoff.json from its report.summarize entry (the .rvbc path relative to the sweep's
    directory)."""
    rvbc = os.path.join("points", name, entry["file"])
    return {"name": name, "method": method, "label": PHASES[method].label, "hyper": hyper,
            "test_acc": entry["test_acc_compressed"], "nonzero_percent": 100.0 * entry["nonzero_fraction"],
            "file_bytes": entry["file_bytes"], "ratio_file": entry["ratio_file"],
            "ratio_paper": entry["ratio_paper"], "rvbc": rvbc, "epochs": epochs}


def _sha256_arrays(*arrays):
    h = hashlib.sha256()
    for x in arrays:
        h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()


def _json_roundtrip(obj):
    return json.loads(json.dumps(obj, default=float))


class Sweep:
    """One sweep: its grids, points and output directory (see the module docstring)."""

    def __init__(self, req):
        check_request(req)
        self.req, self.base, self.cfg = req, req.base, req.base.config
        self.grid = grids(req)
        self.starts = load_starts(self.cfg.arch, self.cfg.init_from, self.grid["methods"])
        self.out = req.base.out
        self.epochs = {m: (req.epochs if req.epochs is not None else self.cfg.epochs[m]) for m in ("sws", "vdsws")}
        self.points = self._plan()

    def _plan(self):
        """[(name, method, hyper)] in the order of the grids."""
        g, pts = self.grid, []
        for m in g["methods"]:
            if m == "vd":
                hypers = [{"threshold": t, "clusters": k} for t in g["thresholds"] for k in g["clusters"]]
            else:
                hypers = [{"tau2": t, "pi0": p} for t in g["tau2"] for p in g["pi0"]]
            pts += [(point_name(m, h), m, h) for h in hypers]
        return pts

    def point_dir(self, name):
        return os.path.join(self.out, "points", name)

    def point_invocation(self, method, hyper):
        """The training invocation of one retrained point: the sweep's settings (hyper-parameters,
        compression options, device, data, --max-epochs), the point's method, start model, tau2 and
        pi0, the phases' default epochs with the point's own for `method`, in the point's directory;
        resuming when the point left a checkpoint there."""
        epochs = default_epochs(self.req.quick)
        epochs[method] = self.epochs[method]
        d = self.point_dir(point_name(method, hyper))
        inv = self.base.child(d, method=method, init_from=self.starts[START_FILE[method]][0],
                              tau2=hyper["tau2"], pi0=hyper["pi0"], epochs=epochs)
        inv.resume = any(os.path.exists(os.path.join(d, f)) for f in ("checkpoint.npz", "checkpoint.prev.npz"))
        return inv

    def finished(self, name, method, inv):
        """The results.json entry of a retrained point finished with the config of invocation `inv`,
        else None."""
        path = os.path.join(self.point_dir(name), "results.json")
        if not os.path.exists(path):
            return None
        try:
            with open(path) as f:
                res = json.load(f)
            saved = dict(res["config"])
            entry = res["methods"][method]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        want = _json_roundtrip(asdict(inv.config))
        start = START_FILE[method]
        if saved.pop("init_sha256", {}).get(start) != self.starts[start][2]:
            return None
        want.pop("init_sha256")
        saved = {**_json_roundtrip(LEGACY_DEFAULTS), **saved}  # a point made before a setting existed
        for key in PHASE_SETTINGS:  # a setting that the point's phases do not read (Δμ's for SWS points)
            if not setting_matters(key, method_phases(method)):
                saved.pop(key, None)
                want.pop(key, None)
        return entry if saved == want else None

    def run(self, log):
        """Compute every point not done yet; write tradeoff.json and tradeoff.png (not with
        --no-figures). Returns the exit status: 0, or 1 when a retrained point failed."""
        lock = lock_dir(self.out)
        try:
            return self._run(log)
        finally:
            lock.close()

    def _vd_entry(self, name, hyper, data):
        """A VD point's entry: the one point.json holds when --resume finds it made with the same
        model, hyper-parameters and test set, else computed now. Returns (entry, how)."""
        d = self.point_dir(name)
        settings = _json_roundtrip({"arch": self.cfg.arch, "hyper": hyper, "vd_sha256": self.starts["vd"][2],
                                    "test_sha256": _sha256_arrays(data[2], data[3])})
        done = os.path.join(d, "point.json")
        if self.base.resume and os.path.exists(done):
            with open(done) as f:
                saved = json.load(f)
            if saved.get("settings") == settings:
                return saved["entry"], "done earlier"
        entry = vd_point(self.cfg.arch, self.starts["vd"][1], hyper["threshold"], hyper["clusters"], data[2],
                         data[3], d)
        atomic_write_bytes(done, json.dumps({"settings": settings, "entry": entry}, default=float).encode())
        return entry, "compressed"

    def _check_fresh(self):
        """RunError when the directory already holds a sweep and this is not --resume."""
        pts_dir = os.path.join(self.out, "points")
        if not self.base.resume and (os.path.exists(os.path.join(self.out, "tradeoff.json"))
                                     or (os.path.isdir(pts_dir) and os.listdir(pts_dir))):
            raise RunError(f"{self.out} already holds a sweep; pass --resume to continue it or choose "
                           "another --out")

    def _done_or_queued(self, log):
        """The VD points (computed now or found done) and the retrained points finished earlier, as
        {name: tradeoff.json point}, and the jobs of the retrained points still to run (each point's
        invocation file written into its directory)."""
        data = load_data(self.cfg, self.base.data) if "vd" in self.grid["methods"] else None
        results, jobs = {}, []
        for name, m, hyper in self.points:
            if m == "vd":
                entry, how = self._vd_entry(name, hyper, data)
                results[name] = record(name, m, hyper, entry, 0)
                log(_line(results[name], how))
                continue
            inv = self.point_invocation(m, hyper)
            entry = self.finished(name, m, inv) if self.base.resume else None
            if entry is not None:
                results[name] = record(name, m, hyper, entry, self.epochs[m])
                log(_line(results[name], "done earlier"))
                continue
            path = inv.write(os.path.join(inv.out, INVOCATION_FILE))
            jobs.append((name, child_argv(path), os.path.join(inv.out, "stdout.log"), None))
        return results, jobs

    def _trained(self, status, results, log):
        """Add the retrained points that ran (`status` {name: exit status}) to `results`. Returns
        (failed, unfinished): the records of the points that failed, the names of those stopped early."""
        failed, unfinished = [], []
        for name, m, hyper in self.points:
            if name not in status:
                continue
            if status[name] != 0:
                failed.append({"name": name, "exit_status": status[name],
                               "log": os.path.join("points", name, "stdout.log")})
                continue
            entry = self.finished(name, m, self.point_invocation(m, hyper))
            if entry is None:
                unfinished.append(name)
                continue
            results[name] = record(name, m, hyper, entry, self.epochs[m])
            log(_line(results[name], "trained"))
        return failed, unfinished

    def _run(self, log):
        self._check_fresh()
        log(f"# sweep {self.cfg.arch}: {len(self.points)} points ({', '.join(self.grid['methods'])}) in "
            f"{self.out}; retrained epochs {self.epochs}")
        results, jobs = self._done_or_queued(log)
        status = run_jobs(jobs, self.base.jobs, log=log) if jobs else {}
        failed, unfinished = self._trained(status, results, log)
        points = [results[n] for n, _, _ in self.points if n in results]
        doc = self.document(points, failed, unfinished)
        figures = self.base.figures
        doc["figure"] = figure(os.path.join(self.out, "tradeoff.png"), self.cfg.arch, points,
                               doc["pareto"]) if figures else None
        if doc["figure"] is None and figures:
            log("# matplotlib is not installed: tradeoff.png skipped (pip install -e '.[figures]')")
        atomic_write_bytes(os.path.join(self.out, "tradeoff.json"), json.dumps(doc, indent=1, default=float).encode())
        log(table(points, doc["pareto"]))
        log(f"# trade-off in {os.path.join(self.out, 'tradeoff.json')}")
        if unfinished:
            log(f"# {len(unfinished)} point(s) stopped before their last epoch; continue with --resume")
        if failed:
            log("# failed: " + ", ".join(f"{f['name']} (see {os.path.join(self.out, f['log'])})" for f in failed))
            return 1
        return 0

    def document(self, points, failed, unfinished):
        """The content of tradeoff.json."""
        arch = self.cfg.arch
        return {
            "arch": arch,
            "command": "python run_experiments.py " + " ".join(shlex.quote(x) for x in self.base.command),
            "settings": {
                "init_from": os.path.abspath(self.cfg.init_from),
                "init_sha256": {ph: s[2] for ph, s in self.starts.items()},
                "methods": self.grid["methods"], "vd_thresholds": self.grid["thresholds"],
                "vd_clusters": self.grid["clusters"], "tau2": self.grid["tau2"], "pi0": self.grid["pi0"],
                "epochs": {m: self.epochs[m] for m in ("sws", "vdsws") if m in self.grid["methods"]},
                "epochs_full_phase": {m: Config().epochs[m] for m in ("sws", "vdsws")},
                "seed": self.cfg.seed, "quick": self.req.quick, "n_test": self.cfg.n_test, "jobs": self.base.jobs,
            },
            "notes": "test_acc on the decoded .rvbc file; ratio_file = 32 * (weights + biases) / (8 * file "
                     "bytes); ratio_paper the paper's accounting; epochs = epochs the point was retrained "
                     "(0: the VD model compressed as it is); rvbc relative to this file's directory",
            "points": points,
            "pareto": {m: [p["name"] for p in pareto_front([q for q in points if q["method"] == m])]
                       for m in self.grid["methods"]},
            "paper_table2": {m: report.PAPER_TABLE2[arch][m] for m in self.grid["methods"]},
            "failed": failed, "unfinished": unfinished,
        }


def _line(p, how):
    return (f"# point {p['name']} ({how}): acc {100 * p['test_acc']:.2f}%  non-zero {p['nonzero_percent']:.2f}%  "
            f"CR file {p['ratio_file']:.1f}x  paper {p['ratio_paper']:.1f}x  {p['file_bytes']} B")


def table(points, pareto):
    """The points as text, the Pareto front's marked with *."""
    on = {n for names in pareto.values() for n in names}
    lines = [f"{'point':30s} {'acc':>7s} {'non-zero':>9s} {'CR file':>8s} {'CR paper':>9s} {'bytes':>9s} epochs"]
    for p in points:
        lines.append(f"{p['name'] + (' *' if p['name'] in on else ''):30s} {100 * p['test_acc']:6.2f}% "
                     f"{p['nonzero_percent']:8.2f}% {p['ratio_file']:7.1f}x {p['ratio_paper']:8.1f}x "
                     f"{p['file_bytes']:9d} {p['epochs']}")
    return "\n".join(lines)


def figure(path, arch, points, pareto):
    """tradeoff.png: test accuracy vs file compression ratio (log x), a marker and colour per method,
    each method's Pareto front as a step line, the paper's Table 2 rows as hollow markers. Returns the
    file's name, or None when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, NullFormatter
    except ImportError:
        return None
    style = {"vd": ("tab:blue", "o"), "sws": ("tab:green", "s"), "vdsws": ("tab:red", "^")}
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for m, names in pareto.items():
        c, mk = style[m]
        mine = [p for p in points if p["method"] == m]
        ax.plot([p["ratio_file"] for p in mine], [100 * p["test_acc"] for p in mine], mk, color=c, alpha=0.45,
                label=f"{PHASES[m].label} ({len(mine)} points)")
        front = [next(p for p in mine if p["name"] == n) for n in names]
        if front:  # the front's points solid, joined by the step line
            xs, ys = [p["ratio_file"] for p in front], [100 * p["test_acc"] for p in front]
            ax.plot(xs, ys, mk, color=c)
            ax.step(xs, ys, where="pre", color=c, lw=1.5)
        acc, _, cr = report.PAPER_TABLE2[arch][m]
        ax.plot([cr], [acc], mk, color=c, mfc="none", ms=11, mew=2, label=f"{PHASES[m].label}, paper")
    ax.set_xscale("log")
    ratios = [p["ratio_file"] for p in points] + [report.PAPER_TABLE2[arch][m][2] for m in pareto]
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    few = max(ratios) < 10 * min(ratios)  # less than a decade: label the minor ticks too
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}x") if few else NullFormatter())
    ax.set_xlabel("compression ratio (file bytes, biases included)")
    ax.set_ylabel("test accuracy of the decoded file [%]")
    ax.set_title(f"{arch}: accuracy vs compression (lines: Pareto fronts)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    report.save_figure(fig, path)
    plt.close(fig)
    return os.path.basename(path)


def main(req):
    """Run the sweep `req` (a SweepRequest; refvbc/cli.py builds it from run_experiments.py --sweep).
    Returns the exit status: 0; 1 when a point failed or the data or a run directory cannot be used;
    2 after a one-line error on bad sweep input (nothing written)."""
    try:
        sweep = Sweep(req)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with RunLog(os.path.join(sweep.out, "sweep.log")) as log:
        t0 = time.perf_counter()
        try:
            rc = sweep.run(log)
        except (DataError, RunError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        log(f"# sweep took {time.perf_counter() - t0:.0f} s")
        return rc
