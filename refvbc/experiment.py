"""`python run_experiments.py`: train the paper's Table 2 methods on the bundled MNIST, compress each
model to a real file, and print/write the results.  All logic lives here so tests can reach it;
`--sweep` (the accuracy-vs-compression trade-off) is dispatched to refvbc/sweep.py."""

import argparse
import os
import sys
import time

import numpy as np

from . import provenance, report, sweep
from .arch import ARCHS
from .data import DataError, load_mnist
from .compress.pipeline import add_clustering_arguments
from .finetune import VARIANTS as FINETUNE_VARIANTS
from .phases import METHODS, PHASES
from .train import METHOD_PHASES, Config, Run, RunError

QUICK = dict(n_train=1000, n_test=1000, epochs={"l2": 2, "sws": 1, "vd": 2, "vdsws": 1})


def build_parser():
    p = argparse.ArgumentParser(
        prog="run_experiments.py",
        description="Train L2 / SWS / VD / VD+SWS on MNIST (Federici et al. 2017, Table 2), compress "
                    "each model to a .rvbc file and report accuracy, sparsity and compression ratios.")
    p.add_argument("--arch", required=True, choices=sorted(ARCHS))
    p.add_argument("--method", default="all", choices=sorted(METHOD_PHASES),
                   help="which Table 2 row(s); earlier phases they start from run too (default all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run directory (default runs/<arch>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--quick", action="store_true",
                   help="minutes-long smoke run: 1000 train / 1000 test images, 1-2 epochs per phase")
    p.add_argument("--epochs", type=int, default=None, help="epochs of every phase (overrides below)")
    d = Config()
    for ph in ("l2", "sws", "vd", "vdsws"):
        p.add_argument(f"--epochs-{ph}", type=int, default=None,
                       help=f"epochs of phase {ph} (default {d.epochs[ph]}, --quick {QUICK['epochs'][ph]})")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr-l2", type=float, default=d.lr_l2, help="Adam rate of the L2 pretraining")
    for g, v in d.lrs.items():
        p.add_argument(f"--lr-{g.replace('_', '-')}", type=float, default=v, help=f"Table 3 rate of {g}")
    p.add_argument("--lr-l2-decay-from", type=float, default=d.lr_l2_decay_from, metavar="FRAC",
                   help="L2 pretraining: its Adam rate decays linearly to 0 from this fraction of the "
                        "phase on (default %(default)s: constant)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="L2 phase coefficient")
    p.add_argument("--tau2", type=float, default=d.tau2, help="mixture coefficient of sws/vdsws")
    g = p.add_argument_group("interpretation choices the paper leaves open (docs/objective.md, docs/ablations.md)")
    g.add_argument("--gamma-alpha", type=float, default=d.gamma_alpha, help="Gamma hyper-prior alpha")
    g.add_argument("--gamma-beta", type=float, default=d.gamma_beta, help="Gamma hyper-prior beta")
    g.add_argument("--gamma-param", choices=["rate", "scale"], default=d.gamma_param,
                   help="read beta as a rate (mode (alpha-1)/beta) or a scale (mode (alpha-1)*beta)")
    g.add_argument("--pi0", type=float, default=d.pi0,
                   help="sws/vdsws: the mixture's zero component's fixed mixing proportion, in (0, 1) "
                        "(default %(default)s)")
    g.add_argument("--lr-decay-from", type=float, default=d.lr_decay_from, metavar="FRAC",
                   help="sws/vdsws: Adam rates decay linearly to 0 from this fraction of the phase on")
    g.add_argument("--tau2-final", type=float, default=d.tau2_final,
                   help="sws/vdsws: raise tau2 linearly to this value over the end of the phase")
    g.add_argument("--tau2-ramp-from", type=float, default=d.tau2_ramp_from, metavar="FRAC",
                   help="where the tau2 ramp starts, as a fraction of the phase (default %(default)s)")
    g.add_argument("--mask-pruned", action="store_true",
                   help="vdsws: weights with alpha >= 19 are zero in the training forward pass")
    g.add_argument("--delta-mu-over", choices=["all", "survivors"], default=d.delta_mu_over,
                   help="mixture init (Table 3's delta_mu = 2 std(w) / K): std over the weights of the start "
                        "model that survive the alpha >= 19 pruning (vdsws), or over all of them; default "
                        "%(default)s")
    add_clustering_arguments(g)
    g.add_argument("--finetune", choices=FINETUNE_VARIANTS, default="none",
                   help="beyond the paper: after the collapse, re-train the biases (and the cluster "
                        "means) with assignments fixed; writes <method>-finetuned.rvbc beside the faithful file")
    g.add_argument("--finetune-epochs", type=int, default=3)
    g.add_argument("--finetune-lr", type=float, default=1e-4)
    p.add_argument("--init-from", default=None, metavar="DIR_OR_FILE",
                   help="start from saved phase models (<phase>.npz in a directory, or one file): "
                        "phases found there are not trained again")
    p.add_argument("--max-epochs", type=int, default=None,
                   help="stop cleanly after this many epochs in this invocation (resume later)")
    p.add_argument("--data", default=None, help="directory with the MNIST .gz files and SHA256SUMS")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--jobs", type=int, default=1,
                   help="with --method all: after l2, train the sws branch and the vd -> vdsws branch as "
                        "this many single-threaded processes at once (2 uses both cores); with --sweep: "
                        "retrained points at once; default 1")
    sweep.add_arguments(p)
    return p


def config_from_args(a):
    cfg = Config(arch=a.arch, method=a.method, seed=a.seed, batch_size=a.batch_size, lr_l2=a.lr_l2,
                 lr_l2_decay_from=a.lr_l2_decay_from, weight_decay=a.weight_decay, tau2=a.tau2, gamma_alpha=a.gamma_alpha,
                 gamma_beta=a.gamma_beta, gamma_param=a.gamma_param, pi0=a.pi0, lr_decay_from=a.lr_decay_from,
                 tau2_final=a.tau2_final, tau2_ramp_from=a.tau2_ramp_from, mask_pruned=a.mask_pruned,
                 delta_mu_over=a.delta_mu_over, init_from=a.init_from)
    cfg.lrs = {g: getattr(a, f"lr_{g}") for g in cfg.lrs}
    if a.quick:
        cfg.n_train, cfg.n_test = QUICK["n_train"], QUICK["n_test"]
        cfg.epochs = dict(QUICK["epochs"])
    for ph in cfg.epochs:
        v = a.epochs if a.epochs is not None else getattr(a, f"epochs_{ph}")
        if v is not None:
            cfg.epochs[ph] = v
    return cfg


def compress_options(a):
    """Options of the compression step (recorded in results.json); the mixture argmax uses the pi0
    the model was trained with."""
    return {"prune_first": not a.no_prune_first, "merge_kl": a.merge_kl, "pi0": a.pi0, "assign": a.assign}


def validate(p, a):
    if a.batch_size < 1:
        p.error(f"--batch-size must be >= 1, got {a.batch_size}")
    for name in ["epochs"] + [f"epochs_{ph}" for ph in ("l2", "sws", "vd", "vdsws")]:
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
    if a.merge_kl is not None and not (a.merge_kl >= 0 and np.isfinite(a.merge_kl)):
        p.error(f"--merge-kl must be a finite non-negative number, got {a.merge_kl}")
    if a.finetune_epochs < 1 or not (a.finetune_lr > 0 and np.isfinite(a.finetune_lr)):
        p.error("--finetune-epochs must be >= 1 and --finetune-lr a positive number")
    if a.jobs < 1:
        p.error(f"--jobs must be >= 1, got {a.jobs}")
    if a.jobs > 1 and a.method != "all":
        p.error("--jobs > 1 runs the independent branches of --method all; use it with --method all")
    if a.jobs > 1 and a.device != "cpu":
        p.error("--jobs > 1 runs CPU processes; use --jobs 1 with --device cuda")
    if a.max_epochs is not None and a.max_epochs < 1:
        p.error(f"--max-epochs must be >= 1, got {a.max_epochs}")


def load_data(cfg, root=None):
    """Train/test arrays; --quick takes the first n of a seeded permutation of each split."""
    x_tr, y_tr = load_mnist("train", root)
    x_te, y_te = load_mnist("test", root)
    rng = np.random.default_rng([cfg.seed, 7])
    if cfg.n_train < x_tr.shape[0]:
        i = rng.permutation(x_tr.shape[0])[:cfg.n_train]
        x_tr, y_tr = x_tr[i], y_tr[i]
    if cfg.n_test < x_te.shape[0]:
        i = rng.permutation(x_te.shape[0])[:cfg.n_test]
        x_te, y_te = x_te[i], y_te[i]
    return x_tr, y_tr, x_te, y_te


def strip_options(argv, with_value, flags=()):
    """argv without the options named in `with_value` (and their values, "--opt v" or "--opt=v")
    and the flags in `flags`."""
    out, skip = [], False
    for tok in argv:
        if skip:
            skip = False
            continue
        name = tok.split("=", 1)[0]
        if name in with_value:
            skip = "=" not in tok
            continue
        if tok in flags:
            continue
        out.append(tok)
    return out


def run_branches(a, argv, out, log):
    """--jobs N with --method all: l2, then the two branches that start from it (sws; vd -> vdsws)
    as separate single-threaded processes (refvbc/jobs.py), each in its own subdirectory of
    `out` with its own train.log and checkpoint. Returns {phase: params} when every branch finished,
    None when one stopped early (--max-epochs); raises RunError when one failed."""
    from .jobs import python_argv, run_jobs
    from .train import load_params, lock_dir

    lock = lock_dir(out)  # noqa: F841 (held until this function returns)
    base = strip_options(argv, {"--jobs", "--method", "--out", "--init-from"}, {"--no-figures"})
    run_py = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "run_experiments.py")
    dirs = {b: os.path.join(out, f"branch-{b}") for b in ("l2", "sws", "vdsws")}
    start = a.init_from or os.path.join(dirs["l2"], "l2.npz")
    jobs = []
    for b, d in dirs.items():
        init = a.init_from if b == "l2" else start
        argv_b = python_argv(run_py, *base, "--method", b, "--out", d, "--no-figures",
                             *(["--init-from", init] if init else []))
        after = None if (b == "l2" or a.init_from) else "l2"
        jobs.append((b, argv_b, os.path.join(out, f"branch-{b}.out"), after))
    status = run_jobs(jobs, a.jobs, log=log)
    failed = [b for b, rc in status.items() if rc != 0]
    if failed:
        raise RunError(f"branch(es) {', '.join(failed)} failed; see " + ", ".join(
            os.path.join(out, f"branch-{b}.out") for b in failed))
    where = {"l2": "l2", "sws": "sws", "vd": "vdsws", "vdsws": "vdsws"}
    finals = {}
    for phase, b in where.items():
        path = os.path.join(dirs[b], f"{phase}.npz")
        if not os.path.exists(path):
            log("# a branch stopped before its last phase; continue with --resume")
            return None
        finals[phase] = load_params(path)[1]
    return finals


def main(argv=None):
    p = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    a = p.parse_args(argv)
    validate(p, a)
    if a.device == "cuda":
        from .kernels import cuda_available
        ok, why = cuda_available()
        if not ok:
            p.error(f"--device cuda: {why}")
    if a.sweep:
        return sweep.main(a, argv)
    cfg = config_from_args(a)
    out = a.out or os.path.join("runs", a.arch + ("-quick" if a.quick else ""))
    logf = None
    try:
        data = load_data(cfg, a.data)
        os.makedirs(out, exist_ok=True)
        logf = open(os.path.join(out, "train.log"), "a")

        def log(line):
            print(line, flush=True)
            logf.write(line + "\n")
            logf.flush()

        log(f"# {a.arch} method={a.method} seed={a.seed} out={out} epochs={cfg.epochs} "
            f"n_train={cfg.n_train} device={a.device}")
        t0 = time.perf_counter()
        if a.jobs > 1:
            finals = run_branches(a, argv, out, log)
        else:
            finals = Run(cfg, out, data, log=log, device=a.device).run(resume=a.resume,
                                                                       max_epochs=a.max_epochs)
        if finals is None:
            return 0
        train_s = time.perf_counter() - t0
        results = {}
        copts = compress_options(a)
        for m in METHODS:
            if m in finals:
                results[m] = report.summarize(a.arch, m, finals[m], data[2], data[3], out, copts)
                if a.finetune != "none" and PHASES[m].mixture:
                    ft = dict(variant=a.finetune, epochs=a.finetune_epochs, lr=a.finetune_lr,
                              seed=a.seed, x=data[0], y=data[1], log=log)
                    results[f"{m}-finetuned"] = report.summarize(a.arch, m, finals[m], data[2], data[3],
                                                                 out, copts, finetune=ft)
        report.write_results(out, a.arch, results, extra={"train_seconds_this_invocation": train_s,
                                                          "config": vars(cfg), "compress": copts,
                                                          "finetune": a.finetune,
                                                          **provenance.record(argv)})
        log(report.table2(a.arch, results))
        if not a.no_figures:
            for f in report.figures(out, a.arch, finals, pi0=cfg.pi0, delta_mu_over=cfg.delta_mu_over):
                log(f"# figure {f}")
        log(f"# results in {os.path.join(out, 'results.json')}")
        return 0
    except (DataError, RunError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if logf:
            logf.close()
