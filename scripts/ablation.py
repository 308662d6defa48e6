#!/usr/bin/env python
"""The VD+SWS ablation of docs/ablations.md: every row starts from the same VD phase model.

    python scripts/ablation.py run   --vd docs/results/lenet300/vd.npz --out runs/ablation --jobs 2
    python scripts/ablation.py table --out runs/ablation [--md runs/ablation/table.md]

`run` trains the VD+SWS phase once per training variant (single-threaded processes, --jobs at once,
refvbc/jobs.py), each with `run_experiments.py --method vdsws --init-from VD`; `table` reads every
variant's results.json, adds the compression-only rows (no pruning before the argmax, component
merging) and the beyond-the-paper fine-tuning rows computed from the base model, and prints the table
(every figure measured on a decoded .rvbc file).
"""

import argparse
import json
import os
import shlex
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from refvbc import report  # noqa: E402
from refvbc.fileio import atomic_write_bytes  # noqa: E402
from refvbc.jobs import python_argv, run_jobs  # noqa: E402

# name, what it tests, extra flags, epochs, the variant it continues (--resume with more epochs)
VARIANTS = [
    ("base-50", "paper defaults (beta a rate, tau2 0.02 constant), 50 epochs", [], 50, None),
    ("scale-50", "Gamma beta read as a scale (rate 0.1)", ["--gamma-param", "scale"], 50, None),
    ("decay-50", "Adam rates decayed linearly to 0 over epochs 26-50", ["--lr-decay-from", "0.5"], 50, None),
    ("tau2x5-50", "tau2 = 0.1 throughout", ["--tau2", "0.1"], 50, None),
    ("mask-50", "alpha >= 19 weights masked in the training forward pass", ["--mask-pruned"], 50, None),
    ("ramp0.2-50", "tau2 raised linearly 0.02 -> 0.2 over epochs 26-50",
     ["--tau2-final", "0.2", "--tau2-ramp-from", "0.5"], 50, None),
    ("ramp2-50", "tau2 raised linearly 0.02 -> 2 over epochs 26-50",
     ["--tau2-final", "2.0", "--tau2-ramp-from", "0.5"], 50, None),
    ("base-100", "paper defaults, 100 epochs (continues base-50)", [], 100, "base-50"),
    ("base-200", "paper defaults, 200 epochs (continues base-100)", [], 200, "base-100"),
    ("seed1-50", "paper defaults, 50 epochs, seed 1 (minibatch order and noise of the phase)",
     ["--seed", "1"], 50, None),
    ("seed2-50", "paper defaults, 50 epochs, seed 2", ["--seed", "2"], 50, None),
    ("seed1-100", "paper defaults, 100 epochs, seed 1", ["--seed", "1"], 100, None),
    ("seed2-100", "paper defaults, 100 epochs, seed 2", ["--seed", "2"], 100, None),
    ("dmu-surv-100", "Table 3's delta_mu from the std of VD's survivors (alpha < 19), not of all weights, "
     "100 epochs", ["--delta-mu-over", "survivors"], 100, None),
    ("dmu-surv-100-seed1", "as dmu-surv-100, seed 1", ["--delta-mu-over", "survivors", "--seed", "1"], 100, None),
    ("dmu-surv-100-seed2", "as dmu-surv-100, seed 2", ["--delta-mu-over", "survivors", "--seed", "2"], 100, None),
    ("surv-ramp2-100", "Δμ over survivors (the default), tau2 raised linearly 0.02 -> 2 over epochs 51-100",
     ["--delta-mu-over", "survivors", "--tau2-final", "2.0", "--tau2-ramp-from", "0.5"], 100, None),
    ("surv-ramp0.2-100", "Δμ over survivors (the default), tau2 raised linearly 0.02 -> 0.2 over epochs 51-100",
     ["--delta-mu-over", "survivors", "--tau2-final", "0.2", "--tau2-ramp-from", "0.5"], 100, None),
    ("surv-ramp0.2-100-seed1", "as surv-ramp0.2-100, seed 1",
     ["--delta-mu-over", "survivors", "--tau2-final", "0.2", "--tau2-ramp-from", "0.5", "--seed", "1"], 100, None),
    ("surv-ramp0.2-100-seed2", "as surv-ramp0.2-100, seed 2",
     ["--delta-mu-over", "survivors", "--tau2-final", "0.2", "--tau2-ramp-from", "0.5", "--seed", "2"], 100, None),
    ("surv-200", "Δμ over survivors (the default), 200 epochs (continues dmu-surv-100)",
     ["--delta-mu-over", "survivors"], 200, "dmu-surv-100"),
    ("surv-decay-100", "Δμ over survivors (the default), Adam rates decayed linearly to 0 over epochs 51-100",
     ["--delta-mu-over", "survivors", "--lr-decay-from", "0.5"], 100, None),
    ("surv-decay-100-seed1", "as surv-decay-100, seed 1",
     ["--delta-mu-over", "survivors", "--lr-decay-from", "0.5", "--seed", "1"], 100, None),
    ("surv-decay-100-seed2", "as surv-decay-100, seed 2",
     ["--delta-mu-over", "survivors", "--lr-decay-from", "0.5", "--seed", "2"], 100, None),
    ("surv-mask-100", "Δμ over survivors (the default), alpha >= 19 weights masked in the training forward pass",
     ["--delta-mu-over", "survivors", "--mask-pruned"], 100, None),
    ("surv-decay-mask-100", "Δμ over survivors (the default), rates decayed over epochs 51-100 and alpha >= 19 weights "
     "masked in the training forward pass (both as Molchanov et al.'s code)",
     ["--delta-mu-over", "survivors", "--lr-decay-from", "0.5", "--mask-pruned"], 100, None),
    ("surv-scale-100", "Δμ over survivors (the default), Gamma beta read as a scale (rate 0.1)",
     ["--delta-mu-over", "survivors", "--gamma-param", "scale"], 100, None),
]
POST_HOC = [  # rows computed from a trained variant's model without retraining: name, what, base, opts, ft
    ("noprune-50", "base-50 clustered without dropout-rate pruning before the argmax", "base-50",
     {"prune_first": False}, None),
    ("merge0.1-50", "base-50 with components merged below symmetric KL 0.1 before the argmax", "base-50",
     {"merge_kl": 0.1}, None),
    ("merge1-50", "base-50 with components merged below symmetric KL 1 before the argmax", "base-50",
     {"merge_kl": 1.0}, None),
    ("merge30-50", "base-50 with components merged below symmetric KL 30 (neighbours ~0.05 apart)",
     "base-50", {"merge_kl": 30.0}, None),
    ("density-surv-100", "dmu-surv-100 with each weight collapsed onto the component of highest density "
     "N(theta; mu_k, sigma_k^2), not highest responsibility (mixing proportions left out)", "dmu-surv-100",
     {"assign": "density"}, None),
    ("density-surv-100-seed1", "as density-surv-100, from dmu-surv-100-seed1", "dmu-surv-100-seed1",
     {"assign": "density"}, None),
    ("density-surv-100-seed2", "as density-surv-100, from dmu-surv-100-seed2", "dmu-surv-100-seed2",
     {"assign": "density"}, None),
    ("merge1-surv-100", "dmu-surv-100 with components merged below symmetric KL 1 before the argmax",
     "dmu-surv-100", {"merge_kl": 1.0}, None),
    ("merge30-surv-100", "dmu-surv-100 with components merged below symmetric KL 30", "dmu-surv-100",
     {"merge_kl": 30.0}, None),
    ("noprune-surv-100", "dmu-surv-100 clustered without dropout-rate pruning before the argmax",
     "dmu-surv-100", {"prune_first": False}, None),
    ("ft-bias-50", "BEYOND THE PAPER: base-50, then 3 epochs re-training the biases (assignments fixed)",
     "base-50", {}, "bias"),
    ("ft-means-50", "BEYOND THE PAPER: base-50, then 3 epochs re-training biases and the non-zero cluster "
     "means", "base-50", {}, "bias+means"),
    ("ft-means-ramp2-50", "BEYOND THE PAPER: ramp2-50, then 3 epochs re-training biases and cluster means",
     "ramp2-50", {}, "bias+means"),
    ("ft10-means-ramp2-50", "BEYOND THE PAPER: ramp2-50, then 10 epochs re-training biases and cluster "
     "means", "ramp2-50", {}, ("bias+means", 10)),
]
FINETUNE = dict(epochs=3, lr=1e-4, seed=0)  # a row's ft may be a variant or (variant, epochs)


def command(vd, out, name, flags, epochs):
    """run_experiments.py for one variant (seed 0 unless its flags say otherwise)."""
    return python_argv("run_experiments.py", "--arch", "lenet300", "--method", "vdsws",
                       "--init-from", vd, "--epochs-vdsws", epochs, "--out", os.path.join(out, name),
                       "--no-figures", *flags)


def cmd_run(a):
    jobs = []
    for name, _, flags, epochs, after in VARIANTS:
        if a.only and name not in a.only:
            continue
        argv = command(a.vd, a.out, name, flags, epochs)
        if after is not None:  # continue the earlier variant's run in a copy of its directory
            src, dst = os.path.join(a.out, after), os.path.join(a.out, name)
            argv = ["bash", "-c", f"rm -rf {shlex.quote(dst)} && cp -r {shlex.quote(src)} {shlex.quote(dst)} "
                    f"&& rm -f {shlex.quote(os.path.join(dst, 'results.json'))} && exec "
                    + " ".join(shlex.quote(x) for x in argv + ["--resume"])]
        jobs.append((name, argv, os.path.join(a.out, f"{name}.log"), after if not a.only else None))
    status = run_jobs(jobs, a.jobs)
    return 0 if all(v == 0 for v in status.values()) else 1


def _row(name, what, r, cmd):
    sig = r.get("mixture", {}).get("sigma_median")
    return (f"| {name} | {what} | {100 * r['test_acc_uncompressed']:.2f}% | {100 * r['test_acc_compressed']:.2f}% "
            f"| {100 * r['nonzero_fraction']:.2f}% | {r['ratio_file']:.1f}x | {r['ratio_paper']:.1f}x "
            f"| {'' if sig is None else f'{sig:.4f}'} | `{cmd}` |")


def cmd_table(a):
    from refvbc.config import Config
    from refvbc.experiment import load_data
    from refvbc.train import load_params

    if a.md and os.path.exists(a.md):  # before any post-hoc row is computed
        print(f"error: --md {a.md} exists; the table goes to a new file (copy rows into a document "
              "by hand)", file=sys.stderr)
        return 2
    lines = ["| variant | what | masked acc. | decoded .rvbc acc. | non-zero | CR file | CR paper-acct "
             "| median sigma_k | command |", "|---|---|---|---|---|---|---|---|---|"]
    for name, what, flags, epochs, _ in VARIANTS:
        path = os.path.join(a.out, name, "results.json")
        if not os.path.exists(path):
            lines.append(f"| {name} | {what} | not run | | | | | | |")
            continue
        r = json.load(open(path))["methods"]["vdsws"]
        cmd = " ".join(str(x) for x in command("VD", "OUT", name, flags, epochs)[1:])
        lines.append(_row(name, what, r, cmd))
    data = None
    for name, what, base, opts, ft in POST_HOC:
        done = os.path.join(a.out, "post-hoc", name, "entry.json")
        src = os.path.join(a.out, base, "vdsws.npz")
        if not os.path.exists(done):
            if not os.path.exists(src):
                lines.append(f"| {name} | {what} | not run | | | | | | |")
                continue
            if data is None:
                data = load_data(Config(arch="lenet300"))
            _, params = load_params(src)
            fine = None
            if ft is not None:
                variant, epochs = (ft, FINETUNE["epochs"]) if isinstance(ft, str) else ft
                fine = dict(FINETUNE, variant=variant, epochs=epochs, x=data[0], y=data[1])
            d = os.path.dirname(done)
            os.makedirs(d, exist_ok=True)
            r = report.summarize("lenet300", "vdsws", params, data[2], data[3], d, dict(opts), finetune=fine)
            atomic_write_bytes(done, json.dumps(r, default=float).encode())
        r = json.load(open(done))
        flag = {"prune_first": "--no-prune-first", "merge_kl": f"--merge-kl {opts.get('merge_kl')}",
                "assign": f"--assign {opts.get('assign')}"}
        ftf = [] if ft is None else ([f"--finetune {ft}"] if isinstance(ft, str) else
                                     [f"--finetune {ft[0]} --finetune-epochs {ft[1]}"])
        cmd = " ".join([flag[k] for k in opts] + ftf)
        lines.append(_row(name, what, r, f"{base} + {cmd}"))
    text = "\n".join(lines)
    print(text)
    if a.md:
        atomic_write_bytes(a.md, (text + "\n").encode())
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", allow_abbrev=False)
    r.add_argument("--vd", required=True, help="the VD phase model every variant starts from")
    r.add_argument("--out", default="runs/ablation")
    r.add_argument("--jobs", type=int, default=2)
    r.add_argument("--only", nargs="*", help="run only these variants (no dependencies)")
    t = sub.add_parser("table", allow_abbrev=False)
    t.add_argument("--out", default="runs/ablation")
    t.add_argument("--md", default=None, help="also write the table to this new file (an existing one is refused)")
    a = p.parse_args(argv)
    np.seterr(all="ignore")
    return cmd_run(a) if a.cmd == "run" else cmd_table(a)


if __name__ == "__main__":
    sys.exit(main())
