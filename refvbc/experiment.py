"""One training invocation of run_experiments.py (refvbc/config.py, Invocation): load the data, train
the phases (in this process, or with --jobs N as the branches of --method all side by side), compress
each model to a real `.rvbc` file, evaluate the decoded file, and print/write the results.

refvbc/cli.py parses the command line into an Invocation and calls `run`; a child process of --jobs
(or of a sweep) is `run_experiments.py --config FILE`, the same `run` on the invocation in FILE.
"""

import os
import sys
import time

import numpy as np

from . import provenance, report
from .config import INVOCATION_FILE
from .data import DataError, load_mnist
from .jobs import child_argv, run_jobs
from .phases import METHODS, PHASES
from .runlog import RunLog
from .train import Run, RunError, load_params, lock_dir

# --jobs N with --method all: the processes after l2 (vd trains in the vdsws branch, before vdsws)
BRANCHES = ("l2", "sws", "vdsws")
BRANCH_OF = {"l2": "l2", "sws": "sws", "vd": "vdsws", "vdsws": "vdsws"}


def load_data(cfg, root=None):
    """Train/test arrays; --quick takes the first n of a seeded permutation of each split.

    Inputs: cfg (config.Config: seed, n_train, n_test); root, the MNIST directory (None: bundled).
    Returns: x_train, y_train, x_test, y_test."""
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


def run(inv, invocation_file=None):
    """Run invocation `inv` (config.Invocation) in its run directory.

    invocation_file: the file `inv` was read from (a child process), recorded in results.json.
    Returns the exit status: 0, or 1 after a one-line error on stderr (bad data, a run directory or
    checkpoint that cannot be used as asked, a failed branch)."""
    cfg = inv.config
    try:
        data = load_data(cfg, inv.data)
        with RunLog(os.path.join(inv.out, "train.log")) as log:
            log(f"# {cfg.arch} method={cfg.method} seed={cfg.seed} out={inv.out} epochs={cfg.epochs} "
                f"n_train={cfg.n_train} device={inv.device}")
            t0 = time.perf_counter()
            if inv.jobs > 1:
                finals = run_branches(inv, log)
            else:
                finals = Run(cfg, inv.out, data, log=log, device=inv.device).run(resume=inv.resume,
                                                                                max_epochs=inv.max_epochs)
            if finals is not None:
                report_results(inv, finals, data, log, time.perf_counter() - t0, invocation_file)
        return 0
    except (DataError, RunError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def summarize_methods(inv, finals, data, log):
    """The results.json entries {method[-finetuned]: entry} of the Table 2 rows in `finals`: each
    model compressed to <out>/<method>.rvbc and evaluated decoded (report.summarize), and with
    --finetune the re-trained file of every mixture method beside it."""
    cfg, ft = inv.config, inv.finetune
    copts = inv.compress.as_dict(cfg.pi0)
    results = {}
    for m in METHODS:
        if m not in finals:
            continue
        results[m] = report.summarize(cfg.arch, m, finals[m], data[2], data[3], inv.out, copts,
                                      gamma_beta=cfg.gamma_beta)
        if ft.variant != "none" and PHASES[m].mixture:
            spec = dict(variant=ft.variant, epochs=ft.epochs, lr=ft.lr, seed=cfg.seed, x=data[0], y=data[1],
                        log=log)
            results[f"{m}-finetuned"] = report.summarize(cfg.arch, m, finals[m], data[2], data[3], inv.out,
                                                         copts, finetune=spec, gamma_beta=cfg.gamma_beta)
    return results


def report_results(inv, finals, data, log, train_s, invocation_file=None):
    """Compress and evaluate `finals`, write results.json (with the config, the compression options
    and where the result came from: commit and the user's command), print Table 2, draw the figures."""
    cfg = inv.config
    results = summarize_methods(inv, finals, data, log)
    extra = {"train_seconds_this_invocation": train_s, "config": vars(cfg),
             "compress": inv.compress.as_dict(cfg.pi0), "finetune": inv.finetune.variant,
             **provenance.record(inv.command)}
    if invocation_file is not None:
        extra["invocation_file"] = invocation_file
    report.write_results(inv.out, cfg.arch, results, extra=extra)
    log(report.table2(cfg.arch, results))
    if inv.figures:
        for f in report.figures(inv.out, cfg.arch, finals, pi0=cfg.pi0, delta_mu_over=cfg.delta_mu_over):
            log(f"# figure {f}")
    log(f"# results in {os.path.join(inv.out, 'results.json')}")


def branch_jobs(inv):
    """The jobs of --jobs N with --method all: l2, then the two branches that start from it (sws;
    vd -> vdsws), each a child invocation in its own subdirectory `branch-<b>` of the run directory
    (its invocation file written there). Returns [(name, argv, log path, after)] for jobs.run_jobs."""
    cfg = inv.config
    dirs = {b: os.path.join(inv.out, f"branch-{b}") for b in BRANCHES}
    start = cfg.init_from or os.path.join(dirs["l2"], "l2.npz")
    jobs = []
    for b, d in dirs.items():
        child = inv.child(d, method=b, init_from=cfg.init_from if b == "l2" else start)
        path = child.write(os.path.join(d, INVOCATION_FILE))
        after = None if (b == "l2" or cfg.init_from) else "l2"
        jobs.append((b, child_argv(path), os.path.join(inv.out, f"branch-{b}.out"), after))
    return jobs


def run_branches(inv, log):
    """--jobs N with --method all: the branches (`branch_jobs`) as separate single-threaded processes
    (refvbc/jobs.py), each with its own train.log and checkpoint. Returns {phase: params} when every
    branch finished, None when one stopped early (--max-epochs); raises RunError when one failed."""
    lock = lock_dir(inv.out)
    try:
        status = run_jobs(branch_jobs(inv), inv.jobs, log=log)
    finally:
        lock.close()
    failed = [b for b, rc in status.items() if rc != 0]
    if failed:
        raise RunError(f"branch(es) {', '.join(failed)} failed; see " + ", ".join(
            os.path.join(inv.out, f"branch-{b}.out") for b in failed))
    finals = {}
    for phase, b in BRANCH_OF.items():
        path = os.path.join(inv.out, f"branch-{b}", f"{phase}.npz")
        if not os.path.exists(path):
            log("# a branch stopped before its last phase; continue with --resume")
            return None
        finals[phase] = load_params(path)[1]
    return finals
