"""The accuracy-vs-compression trade-off sweep: the paper's figure of the accuracies and compression
ratios each method reaches "by changing the values of the hyper-parameters".

    python run_experiments.py --arch lenet300 --sweep --init-from docs/results/lenet300 --jobs 2

From the shared phase models in --init-from (`l2.npz`, `vd.npz`, checked by train.load_init):
    VD      vd.npz as it is (no retraining), compressed for every pruning threshold (dropout rate t)
            x number of clusters of the VD codebook (the components of its 1-D GMM) of the grid;
    SWS     the SWS phase retrained from l2.npz for every (K, tau2, pi0) of the grid;
    VD+SWS  the VD+SWS phase retrained from vd.npz for every (K, tau2, gamma beta, pi0) of the grid
            (K: mixture components, Config.components; gamma beta: the Gamma hyper-prior's beta with
            alpha kept, which sets the mode of the mixture's precisions).
Every point is compressed to a real `.rvbc` file, read back, and evaluated on the decoded model
(report.summarize). The retrained points are run_experiments.py processes run side by side
(refvbc/jobs.py), each the training invocation of one point (method sws or vdsws, written to
OUT/points/<name>/invocation.json and run with `run_experiments.py --config FILE`), each in its own
directory with its own log and checkpoint: `--resume` continues an interrupted sweep, and a point whose
results.json was written with the settings asked for now is not run again. The VD points are computed
in this process first; each leaves OUT/points/<name>/point.json, reused by --resume under the same
settings.

A point is "done" when a directory holds its results.json (config and decoded-file evaluation) and its
.rvbc, made from the same start model (the config's init_sha256) with the settings of this sweep
(Sweep.mismatch). Such directories can come from elsewhere:
    --sweep-done DIR     read-only directories of finished points (as committed under
                         docs/results/<arch>/sweep/<point>/), or of a whole-table run (docs/results/<arch>/:
                         its SWS and VD+SWS phases are the points at its settings, started from the l2.npz
                         and vd.npz beside them): their points are neither trained nor printed;
    --print-commands F   one self-contained run_experiments.py command per retrained point not done yet,
                         for any scheduler; each makes OUT/points/<name>/ (then --resume or --collect);
    --collect DIR        tradeoff.json/.png from point directories made anywhere, without training.

Writes OUT/tradeoff.json (every point with its settings and epochs, each method's Pareto front, the
best points by the rule BEST_RULE, our default Table 2 rows, the command and the settings) and, with
matplotlib, OUT/tradeoff.png (test accuracy vs file compression ratio, log x axis).
"""

import hashlib
import json
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from . import report
from .config import INVOCATION_FILE, Config, Invocation, default_epochs
from .data import DataError
from .experiment import load_data
from .fileio import atomic_write_bytes
from .jobs import child_argv, run_jobs
from .phases import PHASES, method_phases
from .runlog import RunLog
from .train import RunError, file_sha256, load_init, lock_dir, settings_diff

SWEEP_METHODS = ("vd", "sws", "vdsws")
RETRAINED = ("sws", "vdsws")
START_FILE = {"vd": "vd", "sws": "l2", "vdsws": "vd"}  # the phase model each method's points start from
DEFAULTS = {  # the grids (strings as on the command line)
    "methods": "vd,sws,vdsws",
    "thresholds": "0.5,0.8,0.9,0.95,0.98,0.99",
    "clusters": "8,16,32,64",
    "components": f"{Config().components}",
    "tau2": "0.005,0.02,0.1",
    "gamma_beta": f"{Config().gamma_beta:g}",
    "pi0": "0.99,0.999",
}
ENTRY_KEYS = ("test_acc_compressed", "nonzero_fraction", "file_bytes", "ratio_file", "ratio_paper", "file")
COMMAND = ("python", "run_experiments.py")  # how --print-commands starts each line
BEST_RULE = ("selected on test accuracy, per method, against the paper's Table 2 row: at_paper_ratio = the "
             "highest test accuracy among the points whose file compression ratio is >= the paper's ratio "
             "(ties: the larger ratio); at_paper_accuracy = the highest file compression ratio among the "
             "points whose test accuracy is >= the paper's accuracy (ties: the higher accuracy)")


class SweepError(ValueError):
    """Bad sweep input: one line on stderr, exit status 2."""


@dataclass
class SweepRequest:
    """A sweep as asked for: `base` is the training invocation every retrained point starts from
    (its config's hyper-parameters, its compression options, device, data, --max-epochs; its config's
    init_from is the directory of the phase models, its out the sweep's directory, its jobs the points
    run at once, its resume whether to continue an earlier sweep), the grids as their command-line
    text (DEFAULTS), the epochs of every retrained point (None: the phase's) and whether it is --quick.

    print_commands: file for the commands of the points not done (then no training); collect: point
    directories to build the trade-off from (then no training); done_dirs: read-only directories of
    finished points; defaults_file: a results.json whose rows the figure shows as our defaults (None:
    --init-from's results.json when present); argv_of: Invocation -> the run_experiments.py flags that
    make it (cli.invocation_argv; needed by print_commands)."""
    base: Invocation
    methods: str = DEFAULTS["methods"]
    thresholds: str = DEFAULTS["thresholds"]
    clusters: str = DEFAULTS["clusters"]
    components: str = DEFAULTS["components"]
    tau2: str = DEFAULTS["tau2"]
    gamma_beta: str = DEFAULTS["gamma_beta"]
    pi0: str = DEFAULTS["pi0"]
    epochs: object = None
    quick: bool = False
    print_commands: object = None
    collect: tuple = ()
    done_dirs: tuple = ()
    defaults_file: object = None
    argv_of: object = None


@dataclass(frozen=True)
class Grid:
    """The parsed grids of a SweepRequest (sorted distinct values; gamma_beta: the VD+SWS points')."""
    methods: tuple
    thresholds: tuple
    clusters: tuple
    components: tuple
    tau2: tuple
    gamma_beta: tuple
    pi0: tuple


@dataclass(frozen=True)
class VDHyper:
    """A VD point's settings: the pruning threshold (a dropout rate) and the codebook's clusters."""
    threshold: float
    clusters: int


@dataclass(frozen=True)
class Hyper:
    """A retrained point's settings that the grid varies: mixture components K, tau2, the Gamma
    hyper-prior's beta and pi0."""
    components: int
    tau2: float
    gamma_beta: float
    pi0: float

    @classmethod
    def of_config(cls, cfg):
        """The settings of a results.json config (a dict); K 17 when it predates Config.components."""
        return cls(int(cfg.get("components", Config().components)), float(cfg["tau2"]), float(cfg["gamma_beta"]),
                   float(cfg["pi0"]))


@dataclass(frozen=True)
class Point:
    """A point of the sweep: its name (its directory under OUT/points), method and settings."""
    name: str
    method: str
    hyper: object  # VDHyper for "vd", else Hyper


@dataclass
class Start:
    """A phase model the points start from: its path, parameters and SHA-256."""
    path: str
    params: dict
    sha256: str


@dataclass
class Result:
    """A point of tradeoff.json: its accuracy on the decoded file, its file's size and ratios, its
    settings (`hyper`), the epochs it was retrained (0: the VD model as it is), its .rvbc relative to
    the sweep's directory, and whether its settings are a point of the grid (--collect)."""
    name: str
    method: str
    test_acc: float
    ratio_file: float
    label: str = ""
    hyper: dict = field(default_factory=dict)
    nonzero_percent: float = 0.0
    file_bytes: int = 0
    ratio_paper: float = 0.0
    rvbc: str = ""
    epochs: int = 0
    in_grid: bool = True


@dataclass
class FoundPoint:
    """A retrained point's directory: its results.json config (a dict) and entry of its method."""
    path: str
    method: str
    hyper: Hyper
    config: dict
    entry: dict
    epochs: int  # of its method
    of_table: bool = False  # one phase of a whole-table run (read_points)


@dataclass
class DefaultRow:
    """One of our default Table 2 rows (a results.json entry) as the figure shows it."""
    method: str
    test_acc: float
    ratio_file: float


@dataclass
class Best:
    """The points best_points selects for one method against the paper's row (None: no point
    qualifies)."""
    method: str
    paper_acc: float
    paper_ratio: float
    at_paper_ratio: object = None
    at_paper_accuracy: object = None


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
    return tuple(sorted(set(out)))


def _positive_finite(v):
    return bool(np.isfinite(v)) and v > 0.0


def grids(req):
    """The parsed Grid of a SweepRequest; SweepError naming the flag of a bad value."""
    methods = [m.strip() for m in req.methods.split(",")]
    bad = [m for m in methods if m not in SWEEP_METHODS]
    if bad or not methods:
        raise SweepError(f"--sweep-methods: unknown method(s) {', '.join(bad)}; choose from "
                         f"{','.join(SWEEP_METHODS)}")
    return Grid(
        methods=tuple(m for m in SWEEP_METHODS if m in methods),
        thresholds=_values("--sweep-thresholds", req.thresholds, float, lambda v: 0.0 < v < 1.0,
                           "a dropout rate in (0, 1)"),
        clusters=_values("--sweep-clusters", req.clusters, int, lambda v: v >= 1, "an integer >= 1"),
        components=_values("--sweep-components", req.components, int, lambda v: v >= 2, "an integer >= 2"),
        tau2=_values("--sweep-tau2", req.tau2, float, lambda v: np.isfinite(v) and v >= 0.0, "a finite number >= 0"),
        gamma_beta=_values("--sweep-gamma-beta", req.gamma_beta, float, _positive_finite, "a finite number > 0"),
        pi0=_values("--sweep-pi0", req.pi0, float, lambda v: 0.0 < v < 1.0, "a proportion in (0, 1)"),
    )


def check_request(req):
    """The settings that make no sense in a sweep (it sets them per point), the sweep's epochs, its
    start directory and the directories and files it reads; SweepError on a bad one."""
    cfg, d = req.base.config, Config()
    for flag, given, hint in (("--method", cfg.method != "all", ""),
                              ("--tau2", cfg.tau2 != d.tau2, " (use --sweep-tau2)"),
                              ("--pi0", cfg.pi0 != d.pi0, " (use --sweep-pi0)"),
                              ("--components", cfg.components != d.components, " (use --sweep-components)"),
                              ("--gamma-beta", cfg.gamma_beta != d.gamma_beta, " (use --sweep-gamma-beta)"),
                              ("--finetune", req.base.finetune.variant != "none", "")):
        if given:
            raise SweepError(f"{flag} cannot be used with --sweep{hint}")
    if req.epochs is not None and req.epochs < 1:
        raise SweepError(f"--sweep-epochs must be >= 1, got {req.epochs}")
    if cfg.init_from is None:
        raise SweepError("--sweep needs --init-from DIR, a directory holding the phase models l2.npz and "
                         "vd.npz (as docs/results/lenet300/)")
    if not os.path.isdir(cfg.init_from):
        raise SweepError(f"--init-from {cfg.init_from}: not a directory (--sweep needs one holding l2.npz "
                         "and vd.npz)")
    for flag, dirs in (("--collect", req.collect), ("--sweep-done", req.done_dirs)):
        for d in dirs:
            if not os.path.isdir(d):
                raise SweepError(f"{flag} {d}: not a directory")
    if req.defaults_file is not None and not os.path.isfile(req.defaults_file):
        raise SweepError(f"--sweep-defaults {req.defaults_file}: no such file")
    if req.print_commands is not None:
        check_commands_target(req.print_commands)


def load_starts(arch, src, methods):
    """The phase models the methods' points start from: {phase: Start}, each checked to be of `arch`
    and of its phase by train.load_init; SweepError when one is missing or wrong."""
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
        out[ph] = Start(path, got[ph], cfg.init_sha256[ph])
    return out


def pareto_front(points):
    """The points (Results) no other point beats on both ratio_file and test_acc (both larger is
    better), ascending in ratio_file.

    Of points equal in both, the first is kept; a point equal to another in one and worse in the other
    is dominated."""
    best, front = -np.inf, []
    for p in sorted(points, key=lambda p: (-p.ratio_file, -p.test_acc)):  # stable: ties keep their input order
        if p.test_acc > best:
            front.append(p)
            best = p.test_acc
    return front[::-1]


def _at_least(value, bound):
    """value >= bound, up to float rounding (accuracies in percent of 10000 test images)."""
    return value >= bound - 1e-9 * max(1.0, abs(bound))


def best_points(points, paper):
    """Per method of `points` (Results), the points BEST_RULE selects against `paper` ({method:
    (accuracy %, non-zero %, compression ratio)}, report.PAPER_TABLE2[arch]): {method: Best}."""
    out = {}
    for m in [m for m in SWEEP_METHODS if any(p.method == m for p in points)]:
        acc, _, ratio = paper[m]
        mine = [p for p in points if p.method == m]
        small = [p for p in mine if _at_least(p.ratio_file, ratio)]
        good = [p for p in mine if _at_least(100.0 * p.test_acc, acc)]
        out[m] = Best(m, float(acc), float(ratio),
                      at_paper_ratio=max(small, key=lambda p: (p.test_acc, p.ratio_file), default=None),
                      at_paper_accuracy=max(good, key=lambda p: (p.ratio_file, p.test_acc), default=None))
    return out


def best_document(best):
    """tradeoff.json's "best": the rule and, per method, the paper's row and the selected points."""
    def brief(p):
        return None if p is None else {"name": p.name, "test_acc": p.test_acc, "ratio_file": p.ratio_file,
                                        "epochs": p.epochs}
    return {"rule": BEST_RULE,
            "methods": {m: {"paper": {"test_acc_percent": b.paper_acc, "ratio": b.paper_ratio},
                            "at_paper_ratio": brief(b.at_paper_ratio),
                            "at_paper_accuracy": brief(b.at_paper_accuracy)} for m, b in best.items()}}


def point_name(method, hyper):
    """A point's name: every setting the grid varies, the mixture's K and gamma beta only when they are
    not the defaults (17, 10), so a point keeps its name in every grid that holds it."""
    if method == "vd":
        return f"vd-t{hyper.threshold:g}-k{hyper.clusters}"
    d = Config()
    parts = [method] + ([f"k{hyper.components}"] if hyper.components != d.components else [])
    parts.append(f"tau2_{hyper.tau2:g}")
    parts += [f"gbeta_{hyper.gamma_beta:g}"] if hyper.gamma_beta != d.gamma_beta else []
    return "-".join(parts + [f"pi0_{hyper.pi0:g}"])


def vd_point(arch, params, threshold, clusters, x_test, y_test, out_dir):
    """One VD point: `params` (a VD model) pruned at dropout rate `threshold`, its codebook fitted
    with `clusters` components, written to out_dir/vd.rvbc, decoded and evaluated. Returns the
    results.json-style entry (report.summarize)."""
    return report.summarize(arch, "vd", params, x_test, y_test, out_dir,
                            {"prune_threshold": float(threshold), "vd_components": int(clusters)})


def result_of(point, entry, rvbc, epochs, in_grid=True):
    """The Result of `point` from its report.summarize entry (`rvbc`: its file relative to the sweep's
    directory)."""
    return Result(name=point.name, method=point.method, label=PHASES[point.method].label,
                  hyper=asdict(point.hyper), test_acc=entry["test_acc_compressed"],
                  nonzero_percent=100.0 * entry["nonzero_fraction"], file_bytes=entry["file_bytes"],
                  ratio_file=entry["ratio_file"], ratio_paper=entry["ratio_paper"], rvbc=rvbc, epochs=epochs,
                  in_grid=in_grid)


def _sha256_arrays(*arrays):
    h = hashlib.sha256()
    for x in arrays:
        h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()


def _json_roundtrip(obj):
    return json.loads(json.dumps(obj, default=float))


def config_differences(saved, want, method):
    """[(setting, saved value, wanted value)] where results.json config `saved` (a dict) differs from
    Config `want` of a `method` point: train.settings_diff (as on --resume: a setting missing from a
    file made before it existed reads as the value those runs used), the start model's path and hash
    left out (the hash is compared on its own)."""
    full, keys = settings_diff(saved, want, method_phases(method), skip=("init_from", "init_sha256"))
    mine = asdict(want)
    return [(k, full.get(k), mine[k]) for k in sorted(keys)]


def _found_in(res_path, cfg, entry, method):
    """FoundPoint of `method` from results.json `res_path`'s config and that method's entry."""
    missing = [k for k in ENTRY_KEYS if k not in entry]
    if missing:
        raise SweepError(f"{res_path}: not a sweep point's results.json (its {method} entry has no "
                         f"{', '.join(missing)})")
    return FoundPoint(os.path.dirname(res_path), method, Hyper.of_config(cfg), cfg, dict(entry),
                      int(cfg["epochs"][method]))


def _table_points(res_path, cfg, methods):
    """The retrained points of a whole-table run (--method all, e.g. docs/results/<arch>/): its sws and
    vdsws phases, each read as a point started from the phase model saved beside it (l2.npz, vd.npz;
    their SHA-256 stands where a point's config has its start model's, init_sha256)."""
    out = []
    for m in (m for m in RETRAINED if m in methods):
        start = os.path.join(os.path.dirname(res_path), f"{START_FILE[m]}.npz")
        if not os.path.isfile(start):
            raise SweepError(f"{res_path}: a whole-table run without {START_FILE[m]}.npz beside it (the "
                             f"start model of its {PHASES[m].label} phase)")
        own = {**cfg, "method": m, "init_from": start, "init_sha256": {START_FILE[m]: file_sha256(start)}}
        out.append(replace(_found_in(res_path, own, methods[m], m), of_table=True))
    return out


def read_points(path):
    """The FoundPoints of directory `path`: none when it holds no results.json; one for a retrained
    point's directory (--method sws or vdsws); the sws and vdsws phases of a whole-table run (--method
    all: Table 2's own phases are the grid's points at the default settings). SweepError when
    results.json is unreadable, incomplete, or of a method that retrains no point (l2, vd)."""
    res_path = os.path.join(path, "results.json")
    if not os.path.isfile(res_path):
        return []
    try:
        with open(res_path) as f:
            res = json.load(f)
        cfg, methods = dict(res["config"]), dict(res["methods"])
        method = cfg["method"]
        if method == "all":
            return _table_points(res_path, cfg, methods)
        if method in RETRAINED:
            return [_found_in(res_path, cfg, methods[method], method)]
    except SweepError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise SweepError(f"{res_path}: not a sweep point's results.json ({type(e).__name__}: {e})") from None
    raise SweepError(f"{path}: results.json of --method {method}, not a retrained sweep point (sws or vdsws) "
                     "nor a whole-table run (all)")


def point_dirs(root):
    """The point directories under `root`: root itself when it holds results.json, else its
    subdirectories that do, in name order."""
    if os.path.isfile(os.path.join(root, "results.json")):
        return [root]
    subs = [os.path.join(root, n) for n in sorted(os.listdir(root))]
    return [d for d in subs if os.path.isfile(os.path.join(d, "results.json"))]


def load_defaults(path, arch, methods, explicit):
    """Our default Table 2 rows {method: DefaultRow} from results.json `path` (the methods of the
    sweep found there). A file that cannot be read: SweepError when `explicit` (--sweep-defaults),
    else no rows."""
    why = None
    try:
        with open(path) as f:
            res = json.load(f)
        rows = {m: DefaultRow(m, float(res["methods"][m]["test_acc_compressed"]),
                              float(res["methods"][m]["ratio_file"]))
                for m in methods if m in res["methods"]}
        if res.get("arch") != arch:
            why = f"results of {res.get('arch')}, but this sweep is --arch {arch}"
    except OSError as e:
        why = f"cannot read it: {e.strerror or e}"
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        why = f"not a results.json ({type(e).__name__}: {e})"
    if why is None:
        return rows
    if explicit:
        raise SweepError(f"--sweep-defaults {path}: {why}")
    return {}


def check_commands_target(path):
    """SweepError unless `path` can take the commands: a new file, or one that holds only commands
    (a file written by an earlier --print-commands is replaced; any other file is left alone)."""
    if os.path.isdir(path):
        raise SweepError(f"--print-commands {path}: a directory")
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            lines = [ln for ln in f.read().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise SweepError(f"--print-commands {path}: exists and cannot be read ({e})") from None
    if any(not ln.startswith(" ".join(COMMAND) + " ") for ln in lines):
        raise SweepError(f"--print-commands {path}: exists and is not a commands file; not overwritten "
                         "(choose another FILE)")


class Sweep:
    """One sweep: its grids, points and output directory (see the module docstring)."""

    def __init__(self, req):
        check_request(req)
        self.req, self.base, self.cfg = req, req.base, req.base.config
        self.grid = grids(req)
        self.starts = load_starts(self.cfg.arch, self.cfg.init_from, self.grid.methods)
        self.out = req.base.out
        self.epochs = {m: (req.epochs if req.epochs is not None else self.cfg.epochs[m]) for m in RETRAINED}
        self.points = self._plan()
        self.by_name = {p.name: p for p in self.points}
        self.notes = []  # lines about the point directories read, logged when the sweep starts
        self.done = self._scan_done(req.done_dirs)
        self.collected = self._scan_collect(req.collect) if req.collect else None
        explicit = req.defaults_file is not None
        path = req.defaults_file if explicit else os.path.join(self.cfg.init_from, "results.json")
        methods = self.grid.methods
        self.defaults = load_defaults(path, self.cfg.arch, methods, explicit) if os.path.isfile(path) else {}
        self.defaults_from = os.path.abspath(path) if self.defaults else None
        self._test_sha = None

    def _plan(self):
        """[Point] in the order of the grids; SweepError when two values give one name."""
        g, pts = self.grid, []
        for m in g.methods:
            if m == "vd":
                hypers = [VDHyper(t, k) for t in g.thresholds for k in g.clusters]
            else:  # the SWS points keep the sweep's gamma beta (the default; --gamma-beta is refused)
                betas = g.gamma_beta if m == "vdsws" else (self.cfg.gamma_beta,)
                hypers = [Hyper(k, t, b, p) for k in g.components for t in g.tau2 for b in betas for p in g.pi0]
            pts += [Point(point_name(m, h), m, h) for h in hypers]
        names = [p.name for p in pts]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise SweepError(f"grid values too close to tell apart in point names (6 digits): {', '.join(clash)}")
        return pts

    def point_dir(self, name):
        return os.path.join(self.out, "points", name)

    def _changes(self, pt):
        """The config changes of retrained point `pt`: its method and settings, the phases' default
        epochs with the point's own for its method."""
        epochs = default_epochs(self.req.quick)
        epochs[pt.method] = self.epochs[pt.method]
        h = pt.hyper
        return dict(method=pt.method, tau2=h.tau2, pi0=h.pi0, gamma_beta=h.gamma_beta, components=h.components,
                    epochs=epochs)

    def point_config(self, pt):
        """The Config of retrained point `pt` (start model by its absolute path)."""
        return self.cfg.derived(init_from=self.starts[START_FILE[pt.method]].path, **self._changes(pt))

    def point_invocation(self, pt):
        """The training invocation of retrained point `pt`: the sweep's settings (hyper-parameters,
        compression options, device, data, --max-epochs), the point's method, start model and settings
        (point_config), in the point's directory; resuming when the point left a checkpoint there."""
        d = self.point_dir(pt.name)
        inv = self.base.child(d, init_from=self.starts[START_FILE[pt.method]].path, **self._changes(pt))
        inv.resume = any(os.path.exists(os.path.join(d, f)) for f in ("checkpoint.npz", "checkpoint.prev.npz"))
        return inv

    def command_invocation(self, pt):
        """The invocation --print-commands writes for `pt`: point_invocation with the paths as given on
        the command line (--init-from DIR/<phase>.npz, --out OUT/points/<name>) and always --resume (it
        continues a point stopped earlier and starts a new one from scratch)."""
        start = os.path.join(self.cfg.init_from, f"{START_FILE[pt.method]}.npz")
        inv = self.base.child(self.point_dir(pt.name), init_from=start, **self._changes(pt))
        inv.resume = True
        return inv

    def mismatch(self, found):
        """Why FoundPoint `found` is not a point of this sweep (a method not swept, another start model,
        other settings, its .rvbc missing), or None. Its K, tau2, gamma beta and pi0 may lie outside the
        grid (see self.by_name)."""
        label = PHASES[found.method].label
        if found.method not in self.grid.methods:
            return f"a {label} point, and this sweep has no {label} points"
        start = START_FILE[found.method]
        sha = (found.config.get("init_sha256") or {}).get(start)
        if sha != self.starts[start].sha256:
            return (f"trained from another {start} model than --init-from's (sha256 {str(sha)[:12]}..., "
                    f"--init-from's {self.starts[start].sha256[:12]}...)")
        diff = config_differences(found.config, self.point_config(Point("", found.method, found.hyper)),
                                  found.method)
        if diff:
            shown = ", ".join(f"{k} {_show(s)} (this sweep {_show(w)})" for k, s, w in diff[:3])
            return f"made with other settings than this sweep's: {shown}{', ...' if len(diff) > 3 else ''}"
        rvbc = os.path.join(found.path, found.entry["file"])
        if not os.path.isfile(rvbc) or os.path.getsize(rvbc) != found.entry["file_bytes"]:
            return f"its {found.entry['file']} is missing or not the file its results.json describes"
        return None

    def _found_result(self, pt, found, in_grid=True):
        rvbc = os.path.relpath(os.path.join(found.path, found.entry["file"]), self.out)
        return result_of(pt, found.entry, rvbc, found.epochs, in_grid)

    def _scan_done(self, dirs):
        """{name: FoundPoint} of the grid's retrained points finished in the --sweep-done directories
        (the first found wins); any other point there is left out with a line in self.notes."""
        done = {}
        for path in (p for root in dirs for p in point_dirs(root)):
            try:
                found = read_points(path)
            except SweepError as e:
                self.notes.append(f"# --sweep-done {path}: not used: {e}")
                continue
            for f in found:
                name = point_name(f.method, f.hyper)
                why = self.mismatch(f) or (None if name in self.by_name else "not a point of this grid")
                if why is None and name in done:
                    why = f"point {name} again ({done[name].path} used)"
                if why is None:
                    done[name] = f
                else:
                    self.notes.append(f"# --sweep-done {path}: {PHASES[f.method].label} point not used: {why}")
        return done

    def _scan_collect(self, dirs):
        """{name: (FoundPoint, in the grid)} of the point directories in the --collect directories;
        SweepError for a directory without points and for a point that is not of this sweep
        (mismatch); a point whose settings are outside the grid is kept, with a warning in self.notes."""
        found = {}
        for root in dirs:
            paths = point_dirs(root)
            if not paths:
                raise SweepError(f"--collect {root}: no point directory there (<point>/results.json)")
            for f in (f for path in paths for f in read_points(path)):
                if f.of_table and f.method not in self.grid.methods:
                    continue  # a whole-table run also holds the phases of the methods not swept
                path = f.path
                why = self.mismatch(f)
                if why:
                    raise SweepError(f"--collect {path}: {why}")
                name = point_name(f.method, f.hyper)
                if name in found:
                    self.notes.append(f"# warning: --collect {path}: point {name} again, {found[name][0].path} used")
                    continue
                if name not in self.by_name:
                    self.notes.append(f"# warning: --collect {path}: {name} is not a point of the grid; "
                                      "included, marked in_grid false")
                found[name] = (f, name in self.by_name)
        return found

    def _finished(self, pt, look_in_out):
        """(Result, how) of retrained point `pt` when it is done: in a --sweep-done directory, or (when
        look_in_out) in OUT/points/<name>; else (None, None)."""
        if pt.name in self.done:
            f = self.done[pt.name]
            return self._found_result(pt, f), f"done in {f.path}"
        if look_in_out:
            try:
                found = read_points(self.point_dir(pt.name))
            except SweepError:
                found = []
            f = found[0] if len(found) == 1 else None
            if f is not None and (f.method, f.hyper) == (pt.method, pt.hyper) and self.mismatch(f) is None:
                return self._found_result(pt, f), "done earlier"
        return None, None

    def run(self, log):
        """--print-commands: write the commands; --collect: build the trade-off from point directories;
        else compute every point not done yet. Writes tradeoff.json and tradeoff.png (not with
        --no-figures). Returns the exit status: 0, or 1 when a retrained point failed."""
        for line in self.notes:
            log(line)
        if self.req.print_commands is not None:
            return self.print_commands(log)
        lock = lock_dir(self.out)
        try:
            return self._collect(log) if self.collected is not None else self._run(log)
        finally:
            lock.close()

    def print_commands(self, log):
        """Write one run_experiments.py command per retrained point not done (in --sweep-done or in
        OUT/points) into the --print-commands file, atomically. Returns 0."""
        if self.req.argv_of is None:
            raise SweepError("--print-commands: no command-line writer (run it through run_experiments.py)")
        lines, done = [], 0
        for pt in (p for p in self.points if p.method in RETRAINED):
            if self._finished(pt, look_in_out=True)[0] is not None:
                done += 1
                continue
            lines.append(shlex.join(COMMAND + tuple(self.req.argv_of(self.command_invocation(pt)))))
        path = self.req.print_commands
        atomic_write_bytes(path, "".join(line + "\n" for line in lines).encode())
        log(f"# {len(lines)} command(s) in {path}, {done} retrained point(s) done already; run them from "
            f"{os.getcwd()} (paths as given), then --resume this sweep or --collect {os.path.join(self.out, 'points')}")
        return 0

    def _data(self):
        return load_data(self.cfg, self.base.data) if "vd" in self.grid.methods else None

    def _vd_result(self, pt, data, log, reuse):
        """A VD point's Result: the entry its point.json holds when `reuse` and it was made with the
        same model, settings and test set, else computed now (and point.json written)."""
        if self._test_sha is None:
            self._test_sha = _sha256_arrays(data[2], data[3])
        d = self.point_dir(pt.name)
        settings = _json_roundtrip({"arch": self.cfg.arch, "hyper": asdict(pt.hyper),
                                    "vd_sha256": self.starts["vd"].sha256, "test_sha256": self._test_sha})
        done = os.path.join(d, "point.json")
        entry, how = None, "compressed"
        if reuse and os.path.exists(done):
            with open(done) as f:
                saved = json.load(f)
            if saved.get("settings") == settings:
                entry, how = saved["entry"], "done earlier"
        if entry is None:
            entry = vd_point(self.cfg.arch, self.starts["vd"].params, pt.hyper.threshold, pt.hyper.clusters,
                             data[2], data[3], d)
            atomic_write_bytes(done, json.dumps({"settings": settings, "entry": entry}, default=float).encode())
        res = result_of(pt, entry, os.path.join("points", pt.name, entry["file"]), 0)
        log(_line(res, how))
        return res

    def _check_fresh(self):
        """RunError when the directory already holds a sweep and this is not --resume."""
        pts_dir = os.path.join(self.out, "points")
        if not self.base.resume and (os.path.exists(os.path.join(self.out, "tradeoff.json"))
                                     or (os.path.isdir(pts_dir) and os.listdir(pts_dir))):
            raise RunError(f"{self.out} already holds a sweep; pass --resume to continue it or choose "
                           "another --out")

    def _done_or_queued(self, log):
        """The VD points (computed now or found done) and the retrained points done earlier (in
        --sweep-done, or with --resume in OUT/points), as {name: Result}, and the jobs of the retrained
        points still to run (each point's invocation file written into its directory)."""
        data = self._data()
        results, jobs = {}, []
        for pt in self.points:
            if pt.method == "vd":
                results[pt.name] = self._vd_result(pt, data, log, reuse=self.base.resume)
                continue
            res, how = self._finished(pt, look_in_out=self.base.resume)
            if res is not None:
                results[pt.name] = res
                log(_line(res, how))
                continue
            inv = self.point_invocation(pt)
            path = inv.write(os.path.join(inv.out, INVOCATION_FILE))
            jobs.append((pt.name, child_argv(path), os.path.join(inv.out, "stdout.log"), None))
        return results, jobs

    def _trained(self, status, results, log):
        """Add the retrained points that ran (`status` {name: exit status}) to `results`. Returns
        (failed, unfinished): the records of the points that failed, the names of those stopped early."""
        failed, unfinished = [], []
        for pt in self.points:
            if pt.name not in status:
                continue
            if status[pt.name] != 0:
                failed.append({"name": pt.name, "exit_status": status[pt.name],
                               "log": os.path.join("points", pt.name, "stdout.log")})
                continue
            res, _ = self._finished(pt, look_in_out=True)
            if res is None:
                unfinished.append(pt.name)
                continue
            results[pt.name] = res
            log(_line(res, "trained"))
        return failed, unfinished

    def _run(self, log):
        self._check_fresh()
        log(f"# sweep {self.cfg.arch}: {len(self.points)} points ({', '.join(self.grid.methods)}) in "
            f"{self.out}; retrained epochs {self.epochs}")
        results, jobs = self._done_or_queued(log)
        status = run_jobs(jobs, self.base.jobs, log=log) if jobs else {}
        failed, unfinished = self._trained(status, results, log)
        self._write([results[p.name] for p in self.points if p.name in results], log, failed, unfinished)
        if unfinished:
            log(f"# {len(unfinished)} point(s) stopped before their last epoch; continue with --resume")
        if failed:
            log("# failed: " + ", ".join(f"{f['name']} (see {os.path.join(self.out, f['log'])})" for f in failed))
            return 1
        return 0

    def _collect(self, log):
        """--collect: the VD points computed (or reused from OUT/points), the retrained points read
        from the collected directories (and --sweep-done), the grid's points found nowhere listed as
        missing. Returns 0."""
        log(f"# collect {self.cfg.arch}: {len(self.collected)} point directories from "
            f"{', '.join(self.req.collect)} into {self.out}")
        data = self._data()
        results, missing = {}, []
        for pt in self.points:
            found = self.collected.get(pt.name, (None,))[0] or self.done.get(pt.name)
            if pt.method == "vd":
                results[pt.name] = self._vd_result(pt, data, log, reuse=True)
            elif found is not None:
                results[pt.name] = self._found_result(pt, found)
                log(_line(results[pt.name], f"from {found.path}"))
            else:
                missing.append(pt.name)
        points = [results[p.name] for p in self.points if p.name in results]
        for name, (f, in_grid) in self.collected.items():
            if not in_grid:
                points.append(self._found_result(Point(name, f.method, f.hyper), f, in_grid=False))
                log(_line(points[-1], f"from {f.path}, outside the grid"))
        self._write(points, log, missing=missing)
        if missing:
            log(f"# {len(missing)} point(s) of the grid not found: {', '.join(missing)}")
        return 0

    def _write(self, points, log, failed=(), unfinished=(), missing=()):
        """tradeoff.json and (unless --no-figures) tradeoff.png of `points`; the table in the log."""
        doc = self.document(points, list(failed), list(unfinished), list(missing))
        figures = self.base.figures
        doc["figure"] = figure(os.path.join(self.out, "tradeoff.png"), self.cfg.arch, points, self.grid.methods,
                               self.defaults) if figures else None
        if doc["figure"] is None and figures:
            log("# matplotlib is not installed: tradeoff.png skipped (pip install -e '.[figures]')")
        atomic_write_bytes(os.path.join(self.out, "tradeoff.json"), json.dumps(doc, indent=1, default=float).encode())
        log(table(points, doc["pareto"]))
        log(f"# trade-off in {os.path.join(self.out, 'tradeoff.json')}")

    def settings(self):
        """tradeoff.json's "settings": the start models, the grids, the epochs and the run's options."""
        g, cfg = self.grid, self.cfg
        return {
            "init_from": os.path.abspath(cfg.init_from),
            "init_sha256": {ph: s.sha256 for ph, s in self.starts.items()},
            "methods": list(g.methods), "vd_thresholds": list(g.thresholds), "vd_clusters": list(g.clusters),
            "components": list(g.components), "tau2": list(g.tau2), "gamma_beta": list(g.gamma_beta),
            "gamma_beta_sws": cfg.gamma_beta, "gamma_alpha": cfg.gamma_alpha, "gamma_param": cfg.gamma_param,
            "pi0": list(g.pi0),
            "epochs": {m: self.epochs[m] for m in RETRAINED if m in g.methods},
            "epochs_full_phase": {m: Config().epochs[m] for m in RETRAINED},
            "seed": cfg.seed, "quick": self.req.quick, "n_test": cfg.n_test, "jobs": self.base.jobs,
            "collected_from": list(self.req.collect), "done_dirs": list(self.req.done_dirs),
        }

    def document(self, points, failed, unfinished, missing):
        """The content of tradeoff.json."""
        arch = self.cfg.arch
        return {
            "arch": arch,
            "command": "python run_experiments.py " + " ".join(shlex.quote(x) for x in self.base.command),
            "settings": self.settings(),
            "notes": "test_acc on the decoded .rvbc file; ratio_file = 32 * (weights + biases) / (8 * file "
                     "bytes); ratio_paper the paper's accounting; hyper = the point's settings (gamma_beta "
                     "with settings.gamma_alpha); epochs = epochs the point was retrained (0: the VD model "
                     "compressed as it is); in_grid false: a --collect point outside the grid; rvbc "
                     "relative to this file's directory",
            "points": [asdict(p) for p in points],
            "pareto": {m: [p.name for p in pareto_front([q for q in points if q.method == m])]
                       for m in self.grid.methods},
            "best": best_document(best_points(points, report.PAPER_TABLE2[arch])),
            "paper_table2": {m: report.PAPER_TABLE2[arch][m] for m in self.grid.methods},
            "defaults": {m: asdict(r) for m, r in self.defaults.items()}, "defaults_from": self.defaults_from,
            "failed": failed, "unfinished": unfinished, "missing": missing,
        }


def _show(v):
    return repr(v) if isinstance(v, (str, int, float, dict, list, bool, type(None))) else "(missing)"


def _line(p, how):
    return (f"# point {p.name} ({how}): acc {100 * p.test_acc:.2f}%  non-zero {p.nonzero_percent:.2f}%  "
            f"CR file {p.ratio_file:.1f}x  paper {p.ratio_paper:.1f}x  {p.file_bytes} B")


def table(points, pareto):
    """The points (Results) as text, the Pareto front's marked with *."""
    on = {n for names in pareto.values() for n in names}
    lines = [f"{'point':40s} {'acc':>7s} {'non-zero':>9s} {'CR file':>8s} {'CR paper':>9s} {'bytes':>9s} epochs"]
    for p in points:
        lines.append(f"{p.name + (' *' if p.name in on else ''):40s} {100 * p.test_acc:6.2f}% "
                     f"{p.nonzero_percent:8.2f}% {p.ratio_file:7.1f}x {p.ratio_paper:8.1f}x "
                     f"{p.file_bytes:9d} {p.epochs}")
    return "\n".join(lines)


STYLE = {"vd": ("tab:blue", "o"), "sws": ("tab:green", "s"), "vdsws": ("tab:red", "^")}
Y_BELOW = 1.5  # the figure's y axis starts this many points below the paper's lowest Table 2 accuracy


def y_limits(arch, points, defaults, methods):
    """The figure's accuracy range [%]: from Y_BELOW points below the paper's lowest Table 2 accuracy
    among `methods` to a little above the best of the points, our default rows and the paper's rows."""
    paper = [report.PAPER_TABLE2[arch][m][0] for m in methods]
    lo = min(paper) - Y_BELOW
    top = max([100.0 * p.test_acc for p in points] + [100.0 * r.test_acc for r in defaults.values()] + paper)
    return lo, top + max(0.1, 0.04 * (top - lo))


def _shown(ax, xs, accs, lo, edge, color):
    """The y at which accuracies `accs` [%] are drawn: a value below `lo` at `edge`, written beside it."""
    ys = np.asarray(accs, np.float64)
    for x, a in zip(xs, ys):
        if a < lo:
            ax.annotate(f"{a:.2f}", (x, edge), xytext=(3, 3), textcoords="offset points", fontsize=6,
                        color=color, rotation=60)
    return np.where(ys < lo, edge, ys)


def _draw_method(ax, arch, m, mine, default, lo, edge):
    """One method's points (faint; below the range: a down-triangle at the edge with its value), its
    Pareto front (solid, joined by a step line), the paper's Table 2 point and our default row."""
    c, mk = STYLE[m]
    lab = PHASES[m].label
    accs = [100 * p.test_acc for p in mine]
    xs = [p.ratio_file for p in mine]
    ys = _shown(ax, xs, accs, lo, edge, c)
    below = np.asarray(accs) < lo
    ax.plot(np.asarray(xs)[~below], ys[~below], mk, color=c, alpha=0.45, label=f"{lab} ({len(mine)} points)")
    if below.any():
        ax.plot(np.asarray(xs)[below], ys[below], "v", color=c, alpha=0.6)
    front = pareto_front(mine)
    if front:
        fx = [p.ratio_file for p in front]
        fy = np.maximum([100 * p.test_acc for p in front], edge)
        ax.plot(fx, fy, mk, color=c)
        ax.step(fx, fy, where="pre", color=c, lw=1.5, label=f"{lab} Pareto front")
    acc, _, cr = report.PAPER_TABLE2[arch][m]
    ax.plot([cr], [acc], "D", color=c, mfc="none", ms=10, mew=2, label=f"{lab}, paper (Table 2)")
    if default is not None:
        y = _shown(ax, [default.ratio_file], [100 * default.test_acc], lo, edge, c)
        ax.plot([default.ratio_file], y, "*", color=c, mec="black", ms=15,
                label=f"{lab}, ours at the defaults (Table 2 row)")


def _log_x_axis(ax, ratios):
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    few = max(ratios) < 30 * min(ratios)  # a decade or so: label the minor ticks 2, 3, 5 and 7 (x 10^n) too
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}x" if f"{v:g}"[0] in "2357" else "")
                                 if few else NullFormatter())


def figure(path, arch, points, methods, defaults=None):
    """tradeoff.png: test accuracy of the decoded file vs file compression ratio (log x) of `points`
    (Results) of `methods`, a colour and marker per method; the y axis from Y_BELOW points below the
    paper's lowest Table 2 accuracy to just above the best point, a point below drawn at the lower edge
    with its value written; each method's Pareto front as a step line; the paper's Table 2 points as
    hollow diamonds; `defaults` ({method: DefaultRow}, our default Table 2 rows) as stars. Returns the
    file's name, or None when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    defaults = defaults or {}
    lo, hi = y_limits(arch, points, defaults, methods)
    edge = lo + 0.015 * (hi - lo)
    fig, ax = plt.subplots(figsize=(10.5, 5.5))
    for m in methods:
        _draw_method(ax, arch, m, [p for p in points if p.method == m], defaults.get(m), lo, edge)
    ax.set_ylim(lo, hi)
    _log_x_axis(ax, [p.ratio_file for p in points] + [r.ratio_file for r in defaults.values()]
                + [report.PAPER_TABLE2[arch][m][2] for m in methods])
    ax.set_xlabel("file compression ratio (weights and biases, log scale)")
    ax.set_ylabel("test accuracy of the decoded file [%]")
    ax.set_title(f"{arch}: accuracy vs compression (triangles at the bottom: below the range, value written)",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: the points stay visible
    fig.tight_layout()
    report.save_figure(fig, path)
    plt.close(fig)
    return os.path.basename(path)


def main(req):
    """Run the sweep `req` (a SweepRequest; refvbc/cli.py builds it from run_experiments.py --sweep).
    Returns the exit status: 0; 1 when a point failed or the data or a run directory cannot be used;
    2 after a one-line error on bad sweep input (nothing written but sweep.log)."""
    try:
        sweep = Sweep(req)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with RunLog(os.path.join(sweep.out, "sweep.log")) as log:
        t0 = time.perf_counter()
        try:
            rc = sweep.run(log)
        except SweepError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except (DataError, RunError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        log(f"# sweep took {time.perf_counter() - t0:.0f} s")
        return rc
