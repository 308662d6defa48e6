#!/usr/bin/env python
"""The pre-training study of docs/ablations.md: which L2 phase every other LeNet-300-100 row starts from.

    python scripts/pretrain_study.py l2    --out runs/pretrain --jobs 2
    python scripts/pretrain_study.py chain --out runs/pretrain --jobs 2 --candidates former,b --seeds 0,1
    python scripts/pretrain_study.py table --out runs/pretrain [--json docs/results/lenet300/pretrain_study.json]
    python scripts/pretrain_study.py table --from-json docs/results/lenet300/pretrain_study.json --md docs/ablations.md

`l2` trains the L2 phase alone (seed 0) once per grid point; `chain` runs the whole Table 2 schedule
(`run_experiments.py --arch lenet300 --seed S` with the candidate's L2 flags: L2, then SWS, VD and
VD+SWS) per candidate and seed; both run single-threaded processes, --jobs at once (refvbc/jobs.py),
and resume what a stopped study left. `table` reads every finished run's results.json (decoded-file
accuracies) and prints the grid and the chains, with the seed mean +- std of each row per candidate;
`--json` keeps those measurements, `--from-json` reads them back (the committed copy), and `--md` writes
the table into a document between the markers `<!-- pretrain_study:begin -->` / `<!-- pretrain_study:end -->`.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from refvbc.fileio import atomic_write_bytes  # noqa: E402
from refvbc.jobs import python_argv, run_jobs  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_PY = os.path.join(ROOT, "run_experiments.py")
ARCH = "lenet300"
# name: (epochs, Adam rate, decay-from fraction or None, weight decay); "former" is the default before
# the study, "b" the default it chose (refvbc/config.py, docs/objective.md item 12)
GRID = {
    "former": (30, 1e-3, None, 5e-4),
    "a": (60, 1e-3, 0.0, 5e-4),
    "b": (100, 1e-3, 0.5, 5e-4),
    "c": (60, 3e-4, None, 5e-4),
    "d": (100, 3e-4, 0.5, 5e-4),
    "e": (100, 1e-3, 0.5, 1e-4),
    "f": (60, 1e-3, 0.0, 1e-4),
    "g": (100, 3e-4, 0.5, 1e-4),
    "h": (100, 1e-3, 0.5, 0.0),
}
ROWS = ("l2", "sws", "vd", "vdsws")


def l2_flags(name):
    """run_experiments.py flags of grid point `name`."""
    epochs, lr, decay, wd = GRID[name]
    return ["--epochs-l2", epochs, "--lr-l2", lr, "--weight-decay", wd,
            "--lr-l2-decay-from", "none" if decay is None else decay]


def finished(out):
    return os.path.exists(os.path.join(out, "results.json"))


def job(name, out, flags):
    """A jobs.run_jobs entry: resume the run in `out` (a fresh start when it has no checkpoint)."""
    argv = python_argv(RUN_PY, "--arch", ARCH, *flags, "--out", out, "--no-figures", "--resume")
    return (name, argv, os.path.join(out + ".out"), None)


def run_l2(out, jobs, points):
    todo = [job(f"l2-{n}", os.path.join(out, "l2", n), ["--method", "l2", *l2_flags(n)])
            for n in points if not finished(os.path.join(out, "l2", n))]
    return run_jobs(todo, jobs)


def run_chain(out, jobs, candidates, seeds):
    todo = []
    for n in candidates:
        for s in seeds:
            d = os.path.join(out, "chain", f"{n}-seed{s}")
            if not finished(d):
                todo.append(job(f"chain-{n}-seed{s}", d, [*l2_flags(n), "--seed", s]))
    return run_jobs(todo, jobs)


def decoded(out):
    """{method: (decoded accuracy %, file CR)} of a finished run's results.json (`out`: its directory
    or the file)."""
    path = out if out.endswith(".json") else os.path.join(out, "results.json")
    with open(path) as f:
        methods = json.load(f)["methods"]
    return {m: (100 * r["test_acc_compressed"], r["ratio_file"]) for m, r in methods.items() if m in ROWS}


# the Table 2 runs at today's defaults (candidate b's L2 schedule, by the code that made Table 2):
# docs/results/lenet300/results.json and seeds/seed<N>/results.json
TABLE2 = "table2"


def add_chain(doc, name, seed, path):
    """Take the whole-chain run whose results.json is `path` as candidate `name`'s seed `seed` (`name`
    a grid point or TABLE2, the Table 2 runs: docs/results/lenet300/[seeds/seed<N>/]results.json)."""
    if name not in GRID and name != TABLE2:
        raise ValueError(f"--add-chain: unknown candidate {name!r}; the grid has {sorted(GRID)} "
                         f"(or {TABLE2!r})")
    doc["chain"].setdefault(name, {})[str(seed)] = {m: list(v) for m, v in decoded(path).items()}
    with open(path) as f:
        r = json.load(f)
    doc.setdefault("made_by", {})[f"{name}-seed{seed}"] = {k: r.get(k) for k in ("commit", "command")}


BEGIN, END = "<!-- pretrain_study:begin -->", "<!-- pretrain_study:end -->"


def write_block(path, text):
    """Replace the text between BEGIN and END in `path` (atomically); ValueError without the markers."""
    with open(path) as f:
        doc = f.read()
    i, j = doc.find(BEGIN), doc.find(END)
    if i < 0 or j < i:
        raise ValueError(f"{path} has no {BEGIN} ... {END} block")
    note = ("<!-- generated by `python scripts/pretrain_study.py table --from-json "
            "docs/results/lenet300/pretrain_study.json --md docs/ablations.md`; do not edit by hand -->")
    new = doc[:i] + BEGIN + "\n" + note + "\n\n" + text + "\n" + doc[j:]
    atomic_write_bytes(path, new.encode())


def collect(out):
    """{"l2": {name: acc}, "chain": {name: {seed: {method: [acc, cr]}}}} of every finished run."""
    doc = {"grid": {n: dict(zip(("epochs", "lr", "decay_from", "weight_decay"), v)) for n, v in GRID.items()},
           "l2": {}, "chain": {}}
    for n in GRID:
        d = os.path.join(out, "l2", n)
        if finished(d):
            doc["l2"][n] = decoded(d)["l2"][0]
        for s in range(10):
            d = os.path.join(out, "chain", f"{n}-seed{s}")
            if finished(d):
                doc["chain"].setdefault(n, {})[str(s)] = {m: list(v) for m, v in decoded(d).items()}
                with open(os.path.join(d, "results.json")) as f:
                    r = json.load(f)
                doc.setdefault("made_by", {})[f"{n}-seed{s}"] = {k: r.get(k) for k in ("commit", "command")}
    return doc


def table(doc):
    lines = ["L2 phase alone, seed 0 (decoded file):", "",
             "| point | epochs | Adam rate | decay from | weight decay | test acc |", "|---|---|---|---|---|---|"]
    for n, g in doc["grid"].items():
        acc = f"{doc['l2'][n]:.2f}%" if n in doc["l2"] else "not run"
        lines.append(f"| {n} | {g['epochs']} | {g['lr']:g} | {g['decay_from']} | {g['weight_decay']:g} | {acc} |")
    lines += ["", "Whole chain per candidate (decoded files; seed mean ± sample std over the seeds listed):", "",
              "| candidate | seeds | " + " | ".join(ROWS) + " |", "|---|---|" + "---|" * len(ROWS)]
    for n, seeds in doc["chain"].items():
        cells = []
        for m in ROWS:
            v = [seeds[s][m] for s in seeds if m in seeds[s]]
            if not v:
                cells.append("-")
                continue
            acc, cr = np.array([x[0] for x in v]), np.array([x[1] for x in v])
            spread = f" ± {acc.std(ddof=1):.2f}" if len(v) > 1 else ""
            cells.append(f"{acc.mean():.2f}{spread}%" + (f" @ {cr.mean():.1f}×" if m != "l2" else ""))
        lines.append(f"| {n} | {','.join(seeds)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("what", choices=["l2", "chain", "table"])
    p.add_argument("--out", default="runs/pretrain")
    p.add_argument("--jobs", type=int, default=2, help="processes at once (default %(default)s)")
    p.add_argument("--points", default=",".join(GRID), help="grid points for `l2`, comma-separated (default all)")
    p.add_argument("--candidates", default="former,b", help="grid points for `chain`, comma-separated")
    p.add_argument("--seeds", default="0,1", help="seeds for `chain`, comma-separated (default %(default)s)")
    p.add_argument("--json", default=None, help="`table`: also write the measurements to this JSON file")
    p.add_argument("--from-json", default=None, help="`table`: read the measurements from this JSON file "
                                                       "instead of the run directories (default %(default)s)")
    p.add_argument("--md", default=None, help="`table`: write the table into this document's "
                                              "pretrain_study block (default %(default)s)")
    p.add_argument("--add-chain", nargs=3, action="append", default=[], metavar=("NAME", "SEED", "RESULTS"),
                   help="`table`: take the run whose results.json is RESULTS as candidate NAME's seed SEED "
                        "(repeatable)")
    a = p.parse_args(argv)
    names = a.points if a.what == "l2" else a.candidates
    bad = [c for c in names.split(",") if c not in GRID]
    if bad and a.what != "table":
        p.error(f"unknown grid point(s) {bad}; the grid has {sorted(GRID)}")
    if a.what == "l2":
        status = run_l2(a.out, a.jobs, a.points.split(","))
    elif a.what == "chain":
        try:
            seeds = [int(s) for s in a.seeds.split(",")]
        except ValueError:
            p.error(f"--seeds must be comma-separated integers, got {a.seeds!r}")
        status = run_chain(a.out, a.jobs, a.candidates.split(","), seeds)
    else:
        try:
            if a.from_json:
                with open(a.from_json) as f:
                    doc = json.load(f)
            else:
                doc = collect(a.out)
            for name, seed, path in a.add_chain:
                add_chain(doc, name, seed, path)
            text = table(doc)
            print(text)
            if a.json:
                atomic_write_bytes(a.json, (json.dumps(doc, indent=2) + "\n").encode())
            if a.md:
                write_block(a.md, text)
        except (OSError, ValueError, KeyError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    return 0 if all(rc == 0 for rc in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
