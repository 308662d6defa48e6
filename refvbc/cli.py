"""The command line of run_experiments.py: the parser (its flags in groups), the checks of the
values, and the dispatch to a training invocation (refvbc/experiment.py) or a trade-off sweep
(refvbc/sweep.py).

Nothing else imports this module: the parsed flags become typed records (refvbc/config.py: Config,
Invocation; sweep.SweepRequest) that the training and sweep code take. `run_experiments.py --config
FILE` runs an invocation file instead (written by --jobs and --sweep for their child processes).

Every parser refuses abbreviated flags (`--job 2` is an unknown flag, not --jobs) and reports bad
input as one line on stderr with exit status 2.
"""

import argparse
import os
import sys
from dataclasses import asdict

import numpy as np

from . import experiment, sweep
from .arch import ARCHS
from .compress.pipeline import add_clustering_arguments
from .config import QUICK, CompressOptions, Config, InvocationError, Invocation, default_epochs, \
    invocation_from_args
from .finetune import VARIANTS as FINETUNE_VARIANTS
from .priors import check_components
from .train import METHOD_PHASES

PROG = "run_experiments.py"
PHASE_NAMES = ("l2", "sws", "vd", "vdsws")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that refuses abbreviated flags and reports an error as one line on stderr
    (exit status 2), without the usage block."""

    def __init__(self, **kw):
        super().__init__(allow_abbrev=False, **kw)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _with_default(kw):
    """`kw` of add_argument with "(default ...)" appended to a help text that does not show it."""
    if "help" in kw and "%(default)" not in kw["help"]:
        kw = dict(kw, help=kw["help"] + " (default %(default)s)")
    return kw


class _Route:
    """Stands in for a parser in a function that adds flags (compress.pipeline's clustering options):
    each flag goes to the group `where` names for it, the others to `default`; every help text shows
    the default."""

    def __init__(self, default, where):
        self.default, self.where = default, where

    def add_argument(self, *names, **kw):
        return self.where.get(names[0], self.default).add_argument(*names, **_with_default(kw))


def _run_control(p):
    g = p.add_argument_group("run control")
    g.add_argument("--arch", required=True, choices=sorted(ARCHS), help="the network (required; no default)")
    g.add_argument("--method", default="all", choices=sorted(METHOD_PHASES),
                   help="which Table 2 row(s) to train and compress; the phases they start from run too "
                        "(default %(default)s: every row)")
    g.add_argument("--seed", type=int, default=0, metavar="N",
                   help="minibatch order, noise and initialisation (default %(default)s)")
    g.add_argument("--out", default=None, metavar="DIR", help="run directory (default %(default)s: runs/<arch>, with "
                                               "--quick runs/<arch>-quick, with --sweep runs/<arch>-sweep[-quick])")
    g.add_argument("--resume", action="store_true",
                   help="continue the run (or sweep) in --out from its checkpoint(s) (default %(default)s)")
    g.add_argument("--quick", action="store_true",
                   help=f"minutes-long smoke run: {QUICK['n_train']} train / {QUICK['n_test']} test images, "
                        "1-2 epochs per phase (default %(default)s)")
    g.add_argument("--max-epochs", type=int, default=None, metavar="N",
                   help="stop cleanly after N epochs in this invocation, continue later with --resume "
                        "(default %(default)s: no limit)")
    g.add_argument("--init-from", default=None, metavar="DIR_OR_FILE",
                   help="start from saved phase models (<phase>.npz in a directory, or one file): phases "
                        "found there are not trained again (default %(default)s: train every phase)")
    g.add_argument("--data", default=None, metavar="DIR",
                   help="directory with the MNIST .gz files and SHA256SUMS (default %(default)s: data/mnist)")
    g.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="where the training steps run: the CPU, or an NVIDIA GPU through numba.cuda "
                        "(default %(default)s)")
    g.add_argument("--no-figures", action="store_true",
                   help="write no PNG figures (default %(default)s)")
    g.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="training processes at once, each single-threaded (2 uses both cores of a 2-core "
                        "machine): with --method all the branches after L2 (sws; vd -> vdsws), with --sweep "
                        "the retrained points (default %(default)s: one process)")
    g.add_argument("--config", default=None, metavar="FILE",
                   help="internal: run the invocation file FILE that --jobs and --sweep write for their "
                        "child processes (<dir>/invocation.json); takes no other flag (default %(default)s)")


def _hyper_parameters(p, d):
    g = p.add_argument_group("the paper's hyper-parameters (Table 3, appendix A; docs/objective.md)")
    g.add_argument("--epochs", type=int, default=None, metavar="N",
                   help="epochs of every phase, overriding the --epochs-<phase> below (default %(default)s)")
    for ph in PHASE_NAMES:
        g.add_argument(f"--epochs-{ph}", type=int, default=None, metavar="N",
                       help=f"epochs of phase {ph} (default %(default)s: {d.epochs[ph]}, with --quick "
                            f"{QUICK['epochs'][ph]})")
    g.add_argument("--batch-size", type=int, default=d.batch_size, metavar="N",
                   help="minibatch size (default %(default)s)")
    g.add_argument("--lr-l2", type=float, default=d.lr_l2, metavar="RATE",
                   help="Adam rate of the L2 pretraining (default %(default)s)")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, metavar="C",
                   help="L2 pretraining: weight-decay coefficient (default %(default)s)")
    for grp, v in d.lrs.items():
        g.add_argument(f"--lr-{grp.replace('_', '-')}", type=float, default=v, metavar="RATE",
                       help=f"Table 3 Adam rate of {grp} (default %(default)s)")
    g.add_argument("--tau2", type=float, default=d.tau2, metavar="T",
                   help="sws/vdsws: coefficient of the mixture term (default %(default)s)")
    g.add_argument("--pi0", type=float, default=d.pi0, metavar="P",
                   help="sws/vdsws: the mixture's zero component's fixed mixing proportion, in (0, 1) "
                        "(default %(default)s)")
    g.add_argument("--components", type=int, default=d.components, metavar="K",
                   help="sws/vdsws: mixture components K, an odd integer >= 3 (component 0 fixed at 0, the "
                        "others at k*delta_mu, k = -(K-1)/2..(K-1)/2; Table 3: 17, other values are beyond "
                        "the paper) (default %(default)s)")
    g.add_argument("--gamma-alpha", type=float, default=d.gamma_alpha, metavar="A",
                   help="Gamma hyper-prior alpha (default %(default)s)")
    g.add_argument("--gamma-beta", type=float, default=d.gamma_beta, metavar="B",
                   help="Gamma hyper-prior beta (default %(default)s)")


def _open_choices(p, d):
    g = p.add_argument_group("the paper's open choices (docs/objective.md, 'Interpretation choices'; "
                             "docs/ablations.md)")
    g.add_argument("--gamma-param", choices=["rate", "scale"], default=d.gamma_param,
                   help="read beta as a rate (mode (alpha-1)/beta) or a scale (mode (alpha-1)*beta) "
                        "(default %(default)s)")
    g.add_argument("--delta-mu-over", choices=["all", "survivors"], default=d.delta_mu_over,
                   help="mixture init (Table 3's delta_mu = 2 std(w) / K): std over the weights of the start "
                        "model that survive the alpha >= 19 pruning (vdsws), or over all of them "
                        "(default %(default)s)")
    return g


def _fraction_or_none(text):
    """argparse type: a float, or None for the word 'none'."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1) or 'none', got {text!r}") from None


def _schedules(p, d):
    g = p.add_argument_group("schedules the paper does not state (off by default, except the L2 "
                             "pre-training's decay: docs/objective.md item 12)")
    g.add_argument("--lr-l2-decay-from", type=_fraction_or_none, default=d.lr_l2_decay_from, metavar="FRAC",
                   help="L2 pre-training: its Adam rate decays linearly to 0 from this fraction of the "
                        "phase on; 'none' keeps it constant (default %(default)s)")
    g.add_argument("--lr-decay-from", type=float, default=d.lr_decay_from, metavar="FRAC",
                   help="sws/vdsws: Adam rates decay linearly to 0 from this fraction of the phase on "
                        "(default %(default)s: constant)")
    g.add_argument("--tau2-final", type=float, default=d.tau2_final, metavar="T",
                   help="sws/vdsws: raise tau2 linearly to this value over the end of the phase "
                        "(default %(default)s: constant tau2)")
    g.add_argument("--tau2-ramp-from", type=float, default=d.tau2_ramp_from, metavar="FRAC",
                   help="where the tau2 ramp starts, as a fraction of the phase (default %(default)s)")
    g.add_argument("--mask-pruned", action="store_true",
                   help="vdsws: weights with alpha >= 19 are zero in the training forward pass "
                        "(default %(default)s)")


def _beyond_the_paper(p):
    g = p.add_argument_group("beyond the paper (rows and files labelled as such)")
    g.add_argument("--finetune", choices=FINETUNE_VARIANTS, default="none",
                   help="after the collapse, re-train the biases (and the cluster means) with assignments "
                        "fixed; writes <method>-finetuned.rvbc beside the faithful file (default %(default)s)")
    g.add_argument("--finetune-epochs", type=int, default=3, metavar="N",
                   help="epochs of the fine-tuning (default %(default)s)")
    g.add_argument("--finetune-lr", type=float, default=1e-4, metavar="RATE",
                   help="Adam rate of the fine-tuning (default %(default)s)")


def _sweep(p):
    g = p.add_argument_group("trade-off sweep (--sweep; refvbc/sweep.py; --jobs: retrained points at once)")
    g.add_argument("--sweep", action="store_true",
                   help="accuracy vs compression over hyper-parameter grids, from the phase models in "
                        "--init-from DIR (l2.npz, vd.npz); writes tradeoff.json and tradeoff.png "
                        "(default %(default)s)")
    D = sweep.DEFAULTS
    g.add_argument("--sweep-methods", default=D["methods"], metavar="LIST",
                   help="methods to sweep, of vd,sws,vdsws (default %(default)s)")
    g.add_argument("--sweep-thresholds", default=D["thresholds"], metavar="LIST",
                   help="VD: pruning thresholds, dropout rates in (0, 1) (default %(default)s)")
    g.add_argument("--sweep-clusters", default=D["clusters"], metavar="LIST",
                   help="VD: clusters of the codebook's 1-D GMM, integers >= 1 (default %(default)s)")
    g.add_argument("--sweep-components", default=D["components"], metavar="LIST",
                   help="SWS, VD+SWS: numbers K of mixture components, integers >= 2, each point run with "
                        "--components K (default %(default)s, Table 3)")
    g.add_argument("--sweep-tau2", default=D["tau2"], metavar="LIST",
                   help="SWS, VD+SWS: tau2 values >= 0 (default %(default)s)")
    g.add_argument("--sweep-gamma-beta", default=D["gamma_beta"], metavar="LIST",
                   help="VD+SWS: Gamma hyper-prior beta values > 0, each point run with --gamma-beta B and "
                        "--gamma-alpha kept; the SWS points keep the default. With alpha 1e5 and beta a rate "
                        "(--gamma-param rate) the mode precision is (alpha-1)/beta, so the mode width "
                        "sigma_mode = sqrt(beta/(alpha-1)): beta 10 -> sigma 0.01, beta 1.6 -> 0.004 "
                        "(default %(default)s)")
    g.add_argument("--sweep-pi0", default=D["pi0"], metavar="LIST",
                   help="SWS, VD+SWS: pi0 values in (0, 1) (default %(default)s)")
    g.add_argument("--sweep-epochs", type=int, default=None, metavar="N",
                   help="epochs of every retrained point (default %(default)s: the phase's, 100; fewer give "
                        "a shorter, cheaper sweep whose points are not the full phase)")
    _sweep_points(g)


def _sweep_points(g):
    g.add_argument("--sweep-done", action="append", default=None, metavar="DIR[,DIR...]",
                   help="read-only directories of finished points, <point>/ each with results.json and its "
                        ".rvbc (as committed under docs/results/<arch>/sweep/), or a whole-table run directory "
                        "(its SWS and VD+SWS phases, started from the l2.npz/vd.npz beside them, are the points "
                        "at its settings): a point of the grid found there, made from --init-from's model with "
                        "this sweep's settings, is done (not "
                        "trained, not printed); nothing is written there; repeatable (default %(default)s)")
    g.add_argument("--print-commands", default=None, metavar="FILE",
                   help="write one self-contained command per retrained point not done yet (in "
                        "--sweep-done or OUT/points), one a line: python run_experiments.py --arch A --method "
                        "sws|vdsws --init-from <start model> --out OUT/points/<point> <its flags> --resume; "
                        "run them in any order, under any scheduler, from this directory (paths as given "
                        "here); each makes a point that --resume and --collect take as done. Trains nothing; "
                        "an existing FILE that is not a commands file is refused (default %(default)s)")
    g.add_argument("--collect", action="append", default=None, metavar="DIR[,DIR...]",
                   help="build tradeoff.json and tradeoff.png in --out (replacing those two) from finished "
                        "point directories made anywhere (DIR/<point>/results.json, or DIR itself a point), "
                        "training nothing; the VD points are computed from --init-from as in a sweep. Refused "
                        "with a one-line error: a point made from another start model than --init-from's "
                        "(the init_sha256 of its config) or with other settings than this sweep's (epochs, "
                        "rates, seed, ...). Included with a warning line and in_grid false: a point whose K, "
                        "tau2, gamma beta or pi0 is not in the grid. Repeatable (default %(default)s)")
    g.add_argument("--sweep-defaults", default=None, metavar="FILE",
                   help="results.json whose rows the figure shows as our default Table 2 rows (default "
                        "%(default)s: --init-from DIR/results.json when there)")


def build_parser(cls=Parser):
    """The parser of run_experiments.py (its groups: run control, the paper's hyper-parameters, its
    open choices, schedules it does not state, beyond the paper, compression, sweep); `cls`: the
    parser class (one that raises instead of exiting checks a command line)."""
    p = cls(prog=PROG,
               description="Train L2 / SWS / VD / VD+SWS on MNIST (Federici et al. 2017, Table 2), compress "
                           "each model to a .rvbc file and report accuracy, sparsity and compression ratios.")
    d = Config()
    _run_control(p)
    _hyper_parameters(p, d)
    open_choices = _open_choices(p, d)
    _schedules(p, d)
    _beyond_the_paper(p)
    compression = p.add_argument_group("compression (the clustering before the file is written; "
                                       "refvbc/compress/pipeline.py)")
    add_clustering_arguments(_Route(compression, {"--assign": open_choices}))
    _sweep(p)
    return p


def validate(p, a):
    """Exit with a one-line error (p.error) on a value no run can use."""
    if a.batch_size < 1:
        p.error(f"--batch-size must be >= 1, got {a.batch_size}")
    for name in ["epochs"] + [f"epochs_{ph}" for ph in PHASE_NAMES]:
        v = getattr(a, name)
        if v is not None and v < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0, got {v}")
    for name in ["lr_l2"] + [f"lr_{g}" for g in Config().lrs]:
        v = getattr(a, name)
        if not (v >= 0 and np.isfinite(v)):
            p.error(f"--{name.replace('_', '-')} must be a finite non-negative number, got {v}")
    for name in ("lr_decay_from", "tau2_ramp_from", "lr_l2_decay_from"):
        v = getattr(a, name)
        if v is not None and not (0.0 <= v < 1.0):
            p.error(f"--{name.replace('_', '-')} must lie in [0, 1), got {v}")
    for name, low, what in (("gamma_alpha", 0.0, "positive"), ("gamma_beta", 0.0, "positive"),
                            ("tau2", None, "non-negative"), ("tau2_final", None, "non-negative")):
        v = getattr(a, name)
        if v is not None and not (np.isfinite(v) and (v >= 0 if low is None else v > low)):
            p.error(f"--{name.replace('_', '-')} must be a finite {what} number, got {v}")
    if not (0.0 < a.pi0 < 1.0):
        p.error(f"--pi0 must lie in (0, 1), got {a.pi0}")
    try:
        check_components(a.components)
    except ValueError as e:
        p.error(f"--components: {e}")
    if a.merge_kl is not None and not (a.merge_kl >= 0 and np.isfinite(a.merge_kl)):
        p.error(f"--merge-kl must be a finite non-negative number, got {a.merge_kl}")
    if a.finetune_epochs < 1 or not (a.finetune_lr > 0 and np.isfinite(a.finetune_lr)):
        p.error("--finetune-epochs must be >= 1 and --finetune-lr a positive number")
    _validate_processes(p, a)
    _validate_sweep(p, a)


def _validate_sweep(p, a):
    if not a.sweep:
        for flag in ("print_commands", "collect", "sweep_done", "sweep_defaults"):
            if getattr(a, flag) is not None:
                p.error(f"--{flag.replace('_', '-')} needs --sweep")
    if a.print_commands is not None and a.collect is not None:
        p.error("--print-commands and --collect cannot be used together")


def _validate_processes(p, a):
    if a.jobs < 1:
        p.error(f"--jobs must be >= 1, got {a.jobs}")
    if a.jobs > 1 and a.method != "all":
        p.error("--jobs > 1 runs the independent branches of --method all; use it with --method all")
    if a.jobs > 1 and a.device != "cpu":
        p.error("--jobs > 1 runs CPU processes; use --jobs 1 with --device cuda")
    if a.max_epochs is not None and a.max_epochs < 1:
        p.error(f"--max-epochs must be >= 1, got {a.max_epochs}")
    if a.device == "cuda":
        from .kernels import cuda_available
        ok, why = cuda_available()
        if not ok:
            p.error(f"--device cuda: {why}")
        from .kernels.cuda_prior import KMAX
        if a.components > KMAX:
            p.error(f"--device cuda: the kernels hold at most {KMAX} mixture components, got --components "
                    f"{a.components}")


def _dirs(values):
    """The directories of a repeatable DIR[,DIR...] flag, in order."""
    return tuple(d.strip() for v in values or () for d in v.split(",") if d.strip())


def sweep_request(a, inv):
    """The SweepRequest of parsed arguments `a` whose training settings are invocation `inv`."""
    return sweep.SweepRequest(base=inv, methods=a.sweep_methods, thresholds=a.sweep_thresholds,
                              clusters=a.sweep_clusters, components=a.sweep_components, tau2=a.sweep_tau2,
                              gamma_beta=a.sweep_gamma_beta, pi0=a.sweep_pi0, epochs=a.sweep_epochs,
                              quick=a.quick, print_commands=a.print_commands, collect=_dirs(a.collect),
                              done_dirs=_dirs(a.sweep_done), defaults_file=a.sweep_defaults,
                              argv_of=invocation_argv)


# Config fields that invocation_argv writes as `flag value` when they differ from the default
VALUE_FLAGS = (("seed", "--seed"), ("batch_size", "--batch-size"), ("lr_l2", "--lr-l2"),
               ("weight_decay", "--weight-decay"), ("lr_l2_decay_from", "--lr-l2-decay-from"), ("tau2", "--tau2"),
               ("gamma_alpha", "--gamma-alpha"), ("gamma_beta", "--gamma-beta"), ("gamma_param", "--gamma-param"),
               ("pi0", "--pi0"), ("components", "--components"), ("lr_decay_from", "--lr-decay-from"),
               ("tau2_final", "--tau2-final"), ("tau2_ramp_from", "--tau2-ramp-from"),
               ("delta_mu_over", "--delta-mu-over"))


def _text(v):
    return "none" if v is None else repr(v) if isinstance(v, float) else str(v)


def invocation_argv(inv):
    """The run_experiments.py flags of invocation `inv` (one process, --method other than all): every
    setting that differs from its default, --quick when the config has --quick's data subset. Checked
    by parsing them back: sweep.SweepError naming the first setting they would not reproduce."""
    cfg, d = inv.config, Config()
    quick = (cfg.n_train, cfg.n_test) == (QUICK["n_train"], QUICK["n_test"])
    argv = ["--arch", cfg.arch, "--method", cfg.method] + (["--init-from", cfg.init_from] if cfg.init_from else [])
    argv += ["--out", inv.out] + (["--quick"] if quick else [])
    base = default_epochs(quick)
    argv += [x for ph, n in cfg.epochs.items() if n != base.get(ph) for x in (f"--epochs-{ph}", str(n))]
    argv += [x for key, flag in VALUE_FLAGS if getattr(cfg, key) != getattr(d, key)
             for x in (flag, _text(getattr(cfg, key)))]
    argv += [x for g, v in cfg.lrs.items() if v != d.lrs[g] for x in (f"--lr-{g.replace('_', '-')}", _text(v))]
    argv += ["--mask-pruned"] if cfg.mask_pruned else []
    c = inv.compress
    argv += (["--no-prune-first"] if not c.prune_first else []) + (["--assign", c.assign] if c.assign !=
                                                                    CompressOptions().assign else [])
    argv += ["--merge-kl", _text(c.merge_kl)] if c.merge_kl is not None else []
    argv += ["--max-epochs", str(inv.max_epochs)] if inv.max_epochs is not None else []
    argv += (["--device", inv.device] if inv.device != "cpu" else []) + (["--data", inv.data] if inv.data else [])
    argv += (["--no-figures"] if not inv.figures else []) + (["--resume"] if inv.resume else [])
    _check_round_trip(argv, inv)
    return argv


class _RaisingParser(Parser):
    def error(self, message):
        raise ValueError(message)


def _check_round_trip(argv, inv):
    """sweep.SweepError unless run_experiments.py ARGV makes invocation `inv` (its command aside; the
    start model compared by absolute path)."""
    def norm(x):
        doc = asdict(x)
        doc.pop("command")
        doc["config"].pop("init_sha256")
        if doc["config"]["init_from"]:
            doc["config"]["init_from"] = os.path.abspath(doc["config"]["init_from"])
        return doc

    try:
        p = build_parser(_RaisingParser)
        a = p.parse_args(argv)
        validate(p, a)
    except ValueError as e:
        raise sweep.SweepError(f"cannot write {inv.out} as a command: {' '.join(argv)}: {e}") from None
    got, want = norm(invocation_from_args(a, argv)), norm(inv)
    for part in ("config", "compress", "finetune"):
        got.update({f"{part}.{k}": v for k, v in got.pop(part).items()})
        want.update({f"{part}.{k}": v for k, v in want.pop(part).items()})
    bad = [k for k in want if got.get(k) != want[k]]
    if bad:
        raise sweep.SweepError(f"cannot write {inv.out} as a command: its flags would make {bad[0]} "
                               f"{got.get(bad[0])!r}, not {want[bad[0]]!r}")


def run_invocation_file(argv):
    """`run_experiments.py --config FILE`: run the invocation in FILE (config.Invocation)."""
    p = Parser(prog=f"{PROG} --config")
    p.add_argument("--config", required=True, metavar="FILE")
    a, rest = p.parse_known_args(argv)
    if rest:
        p.error(f"--config FILE takes no other flag (the file holds every setting); got {' '.join(rest)}")
    try:
        inv = Invocation.read(a.config)
    except InvocationError as e:
        p.error(str(e))
    return experiment.run(inv, invocation_file=a.config)


def main(argv=None):
    """run_experiments.py with command-line arguments `argv` (default sys.argv[1:]). Returns the exit
    status; bad flags exit with status 2 and one line on stderr."""
    argv = sys.argv[1:] if argv is None else [str(x) for x in argv]
    if any(t == "--config" or t.startswith("--config=") for t in argv):
        return run_invocation_file(argv)
    p = build_parser()
    a = p.parse_args(argv)
    validate(p, a)
    inv = invocation_from_args(a, argv)
    if a.sweep:
        return sweep.main(sweep_request(a, inv))
    return experiment.run(inv)
