"""Table 2 of the paper beside ours, generated from the committed results.json files.

    python -m refvbc.tables docs/results/lenet300 docs/results/lenet5            # print the blocks
    python -m refvbc.tables docs/results/lenet300 docs/results/lenet5 --write    # write them into the docs
    python -m refvbc.tables docs/results/lenet300 docs/results/lenet5 --check    # exit 1 if a doc differs

Each result directory DIR (its name, e.g. `lenet300`, names the table) holds:

- `DIR/results.json`: seed 0 of the whole pipeline (`run_experiments.py --method all`), one entry per
  method (`l2`, `sws`, `vd`, `vdsws`) and the beyond-the-paper `<method>-finetuned` entries;
- `DIR/seeds/seed<N>/results.json`: further seeds of the same pipeline (N >= 1; optional);
- `DIR/<method>-<tag>.results.json`: labelled variants of one phase (e.g. `vdsws-tau2ramp`), each
  with its own seeds as `DIR/seeds/seed<N>/<method>-<tag>.results.json`. A tag `best...` (e.g.
  `vdsws-best`) is a point of the full-length hyper-parameter search chosen by its selection rule
  (docs/objective.md item 18; refvbc/sweep.py BEST_RULE): labelled "best of the full-length sweep",
  compared with the paper's row, and shown in the README beside the default rows.

The block is written between `<!-- table2:<name>:begin -->` and `<!-- table2:<name>:end -->` in the
README at the repository root (compact: the paper's four methods and the sweep's best rows) and in
`DIR/README.md` (every row, labelled rows included, and where each number comes from). The paper's numbers are the
`paper_table2` that every results.json carries (refvbc.report.PAPER_TABLE2). Standard library and
numpy only.
"""

import argparse
import glob
import json
import os
import re
import sys

import numpy as np

METHODS = ("l2", "sws", "vd", "vdsws")
LABELS = {"l2": "L2", "sws": "SWS", "vd": "VD", "vdsws": "VD+SWS"}
SEEDS_DIR = "seeds"
_SEED_RE = re.compile(r"^seed(\d+)$")
# config keys that say where a run started, not how it trained: left out of a variant's label
_NOT_A_SETTING = ("method", "init_from", "init_sha256")
REGENERATE = "python -m refvbc.tables docs/results/lenet300 docs/results/lenet5 --write"


class TableError(Exception):
    """A result directory or document the generator cannot use (one-line message)."""


def begin_marker(name):
    return f"<!-- table2:{name}:begin -->"


def end_marker(name):
    return f"<!-- table2:{name}:end -->"


# ---------------------------------------------------------------------------------------------------
# reading the JSON files


def _load(path):
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise TableError(f"{path}: cannot read ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("methods"), dict):
        raise TableError(f"{path}: not a results.json (no 'methods')")
    return doc


class Source:
    """One results.json: its path relative to the repository root, its seed and its content."""

    def __init__(self, path, root, seed=None):
        self.path = path
        self.rel = os.path.relpath(path, root).replace(os.sep, "/")
        self.doc = _load(path)
        cfg = self.doc.get("config") or {}
        recorded = cfg.get("seed")
        if seed is not None and recorded is not None and int(recorded) != seed:
            raise TableError(f"{self.rel}: config says seed {recorded}, its directory seed{seed}")
        self.seed = seed if seed is not None else (int(recorded) if recorded is not None else 0)

    def provenance(self):
        """One sentence: which commit and command made the numbers, as far as the JSON records them."""
        d = self.doc
        if "commit" not in d and "command" not in d:
            return "made by earlier code; command not recorded."
        commit = d.get("commit")
        if commit:
            made = f"made by commit `{commit[:10]}`"
            if d.get("code_dirty"):
                made += " with uncommitted changes to the code"
        else:
            made = "made outside a git checkout (commit not recorded)"
        cmd = d.get("command")
        return f"{made}; `{cmd}`." if cmd else f"{made}; command not recorded."


class Row:
    """One table row: the seed-0 entry, the same entry in every seed file, where it comes from."""

    def __init__(self, key, label, method, source, entry, seeds, paper=None, file=None, best=False):
        self.key, self.label, self.method = key, label, method
        self.source, self.entry, self.seeds, self.paper = source, entry, seeds, paper
        self.file = file or entry.get("file", "")
        self.best = best  # a best point of the full-length sweep (a `<method>-best...` file)

    def values(self):
        """[(seed, entry)] for seed 0 and every seed file holding this row's entry."""
        return [(self.source.seed, self.entry)] + self.seeds


class NetTables:
    """The rows of one result directory."""

    def __init__(self, result_dir, root):
        self.dir = os.path.normpath(result_dir)
        self.root = root
        self.name = os.path.basename(self.dir)
        main = os.path.join(self.dir, "results.json")
        if not os.path.isfile(main):
            raise TableError(f"{os.path.relpath(main, root)}: no such file")
        self.main = Source(main, root)
        self.arch = self.main.doc.get("arch")
        self.paper = self.main.doc.get("paper_table2")
        if not isinstance(self.paper, dict):
            raise TableError(f"{self.main.rel}: no paper_table2")
        self.seed_dirs = self._seed_dirs()
        self.seed_sources = {}  # file name -> [Source] over the seed directories
        self.rows = self._default_rows() + self._labelled_rows()

    def _seed_dirs(self):
        out = []
        for d in sorted(glob.glob(os.path.join(self.dir, SEEDS_DIR, "seed*"))):
            m = _SEED_RE.match(os.path.basename(d))
            if m and os.path.isdir(d):
                out.append((int(m.group(1)), d))
        if any(s == 0 for s, _ in out):
            raise TableError(f"{os.path.relpath(self.dir, self.root)}/{SEEDS_DIR}/seed0: seed 0 is results.json")
        return sorted(out)

    def seeds_of(self, fname):
        if fname not in self.seed_sources:
            srcs = []
            for seed, d in self.seed_dirs:
                p = os.path.join(d, fname)
                if os.path.isfile(p):
                    src = Source(p, self.root, seed)
                    if src.doc.get("arch") != self.arch:
                        raise TableError(f"{src.rel}: arch {src.doc.get('arch')}, not {self.arch}")
                    srcs.append(src)
            self.seed_sources[fname] = srcs
        return self.seed_sources[fname]

    def _row(self, key, label, method, source, fname, paper=None, file=None, best=False):
        entry = source.doc["methods"][key]
        seeds = [(s.seed, s.doc["methods"][key]) for s in self.seeds_of(fname) if key in s.doc["methods"]]
        return Row(key, label, method, source, entry, seeds, paper, file, best)

    def _default_rows(self):
        ms = self.main.doc["methods"]
        rows = [self._row(m, LABELS[m], m, self.main, "results.json", self.paper.get(m))
                for m in METHODS if m in ms]
        for key in sorted(k for k in ms if k not in METHODS):  # e.g. vdsws-finetuned
            e = ms[key]
            rows.append(self._row(key, e.get("label", key), e.get("method", key.split("-")[0]),
                                  self.main, "results.json"))
        return rows

    def _labelled_rows(self):
        rows = []
        for path in sorted(glob.glob(os.path.join(self.dir, "*.results.json"))):
            fname = os.path.basename(path)
            stem = fname[: -len(".results.json")]
            src = Source(path, self.root)
            if src.doc.get("arch") != self.arch:
                raise TableError(f"{src.rel}: arch {src.doc.get('arch')}, not {self.arch}")
            ms = src.doc["methods"]
            prefix = stem.split("-")[0]
            keys = [prefix] if prefix in ms else sorted(ms)
            for key in keys:
                method = ms[key].get("method", key.split("-")[0])
                best = stem[len(prefix) + 1:].startswith("best")
                how = ("best of the full-length sweep (selected on test accuracy)" if best else "variant")
                label = f"{LABELS.get(method, method)}, {how} `{stem}`: {describe(src.doc, self.main.doc)}"
                # the run wrote <method>.rvbc; its committed copy beside this file is <stem>.rvbc
                file = ms[key].get("file", "")
                if file.startswith(prefix):
                    file = stem + file[len(prefix):]
                rows.append(self._row(key, label, method, src, fname, self.paper.get(method) if best else None,
                                      file, best))
        return rows

    def sources(self):
        """Every file a number of the full table comes from, seed 0 first."""
        out = [self.main] + self.seeds_of("results.json")
        for r in self.rows:
            for s in [r.source] + self.seeds_of(os.path.basename(r.source.path)):
                if s not in out:
                    out.append(s)
        return out


def describe(doc, base):
    """How a labelled variant's settings differ from seed 0's, as the flags that set them."""
    cfg, ref = doc.get("config") or {}, base.get("config") or {}
    flags = []
    for k in sorted(cfg):
        if k in _NOT_A_SETTING or cfg[k] == ref.get(k):
            continue
        flag = "--" + k.replace("_", "-")
        flags.append(flag if cfg[k] is True else f"{flag} {_plain(cfg[k])}")
    for k in sorted(doc.get("compress") or {}):
        if k in (base.get("compress") or {}) and doc["compress"][k] != base["compress"][k]:
            flags.append(f"--{k.replace('_', '-')} {_plain(doc['compress'][k])}")
    return "`" + " ".join(flags) + "`" if flags else "the settings of seed 0"


def _plain(v):
    if isinstance(v, dict):
        return ",".join(f"{k}={_plain(x)}" for k, x in sorted(v.items()))
    return f"{v:g}" if isinstance(v, float) else str(v)


# ---------------------------------------------------------------------------------------------------
# formatting


def pct(x):
    """A fraction as a percentage with two decimals: 0.9815 -> '98.15%'."""
    return f"{100 * x:.2f}%"


def ratio(x):
    """A compression ratio: 234.95 -> '235.0×'."""
    return f"{x:.1f}×"


def paper_cells(paper):
    """(accuracy, non-zero, CR) of the paper's row as printed: (98.24, 1.5, 161) -> '98.24%', '1.5%', '161×'."""
    if not paper:
        return "", "", ""
    acc, nz, cr = paper
    return f"{acc:.2f}%", f"{nz:g}%", f"{cr:g}×"


def versus(entry, paper):
    """Ours against the paper's row: decoded-file accuracy minus the paper's, in points, and the file CR
    over the paper's CR: '-0.09 pt, 1.46×'."""
    if not paper:
        return ""
    return f"{100 * entry['test_acc_compressed'] - paper[0]:+.2f} pt, {entry['ratio_file'] / paper[2]:.2f}×"


def seed_cell(row):
    """'mean ± std over seeds (n)' of the decoded-file accuracy and the file CR; '— (n = 1)' alone."""
    vals = row.values()
    n = len(vals)
    if n < 2:
        return "— (n = 1)"
    acc = np.array([e["test_acc_compressed"] for _, e in vals], np.float64) * 100
    cr = np.array([e["ratio_file"] for _, e in vals], np.float64)
    seeds = ", ".join(str(s) for s, _ in vals)
    return (f"{acc.mean():.2f}% ± {acc.std(ddof=1):.2f} at {cr.mean():.1f}× ± {cr.std(ddof=1):.1f} "
            f"(n = {n}: seeds {seeds})")


def _table(header, lines):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return out


def compact_block(net):
    """The README's table: the paper's four methods, seed 0 and the seeds' mean, and the full-length
    sweep's best rows."""
    lines = []
    for r in net.rows:
        if not r.best and (r.source is not net.main or r.key not in METHODS):
            continue
        pa, _, pc = paper_cells(r.paper)
        e = r.entry
        lines.append([r.label, pa, pc, pct(e["test_acc_compressed"]), ratio(e["ratio_file"]),
                      pct(e["nonzero_fraction"]), versus(e, r.paper), seed_cell(r)])
    header = ["method", "paper: acc.", "paper: CR", "ours, seed 0: acc. (decoded file)", "ours: CR (file)",
              "ours: non-zero", "ours vs paper: acc., CR", "ours: mean ± std over seeds (n)"]
    seeds = net.seeds_of("results.json")
    seed_note = (f"seeds: `{net.main.rel}` (0) and " + ", ".join(f"`{s.rel}`" for s in seeds)
                 if seeds else f"no other seeds committed yet (they go to "
                 f"`{_rel_dir(net)}/{SEEDS_DIR}/seed<N>/results.json`)")
    foot = [f"From `{net.main.rel}`: {net.main.provenance()} {seed_note[0].upper() + seed_note[1:]}."]
    return _table(header, lines) + [""] + foot


def full_block(net):
    """The result page's table: every row (labelled ones included), with its source file."""
    lines = []
    for r in net.rows:
        pa, pn, pc = paper_cells(r.paper)
        e = r.entry
        where = f"`{r.source.rel}` [{r.key}]"
        kept = os.path.isfile(os.path.join(net.dir, r.file))
        file = f"`{r.file}` {e['file_bytes']:,} B" + ("" if kept else " (not committed)")
        lines.append([r.label, f"{pa} / {pn} / {pc}" if r.paper else "", pct(e["test_acc_compressed"]),
                      pct(e["test_acc_uncompressed"]), pct(e["nonzero_fraction"]), ratio(e["ratio_file"]),
                      ratio(e["ratio_paper"]), file, versus(e, r.paper or net.paper.get(r.method)), seed_cell(r),
                      where])
    header = ["row", "paper: acc. / non-zero / CR", "acc. (decoded file)", "acc. (masked, before the file)",
              "non-zero", "CR file", "CR paper-acct", "file", "vs paper's row: acc., CR", "mean ± std over seeds (n)",
              "from [entry]"]
    foot = ["Where the numbers come from:", ""]
    foot += [f"- `{s.rel}` (seed {s.seed}): {s.provenance()}" for s in net.sources()]
    if not net.seeds_of("results.json"):
        foot += [f"- no other seeds committed yet: seed N of the whole pipeline goes to "
                 f"`{_rel_dir(net)}/{SEEDS_DIR}/seed<N>/results.json`, a seed of a labelled variant to "
                 f"`{_rel_dir(net)}/{SEEDS_DIR}/seed<N>/<variant>.results.json`."]
    return _table(header, lines) + [""] + foot


def _rel_dir(net):
    return os.path.relpath(net.dir, net.root).replace(os.sep, "/")


def render(net, full):
    """The text between the markers (markers excluded), ending in a newline."""
    body = full_block(net) if full else compact_block(net)
    head = (f"<!-- generated by `{REGENERATE}` from the JSON files named below; "
            f"do not edit by hand (`--check` compares) -->")
    return "\n".join([head, ""] + body) + "\n"


# ---------------------------------------------------------------------------------------------------
# documents


def splice(text, name, block, doc_name):
    """`text` with the block between `name`'s markers replaced by `block`."""
    b, e = begin_marker(name), end_marker(name)
    i, j = text.find(b), text.find(e)
    if i < 0 or j < 0 or j < i or text.count(b) != 1 or text.count(e) != 1:
        raise TableError(f"{doc_name}: table {name}: needs exactly one {b} ... {e} pair")
    return text[: i + len(b)] + "\n" + block + text[j:]


def targets(net, readme):
    """[(document path, full?)] that hold this net's table."""
    return [(readme, False), (os.path.join(net.dir, "README.md"), True)]


def run(dirs, readme=None, mode="print", out=sys.stdout, err=sys.stderr):
    """The CLI's work; returns the exit status (0 fine, 1 a document differs, 2 unusable input)."""
    if not dirs:
        print("error: give at least one result directory (e.g. docs/results/lenet300)", file=err)
        return 2
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(dirs[0]))))
    readme = os.path.abspath(readme) if readme else os.path.join(root, "README.md")
    if readme and os.path.dirname(readme) != root:
        root = os.path.dirname(readme)
    try:
        nets = [NetTables(os.path.abspath(d), root) for d in dirs]
    except TableError as e:
        print(f"error: {e}", file=err)
        return 2
    if mode == "print":
        for net in nets:
            print(f"# {net.name}: README\n{render(net, False)}\n# {net.name}: "
                  f"{_rel_dir(net)}/README.md\n{render(net, True)}", file=out)
        return 0
    texts = {}
    status = 0
    for net in nets:
        for path, full in targets(net, readme):
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            if path not in texts:
                try:
                    with open(path, encoding="utf-8") as f:
                        texts[path] = f.read()
                except OSError as e:
                    print(f"error: {rel}: cannot read ({e.strerror})", file=err)
                    return 2 if mode == "write" else 1
            try:
                new = splice(texts[path], net.name, render(net, full), rel)
            except TableError as e:
                print(f"error: {e}", file=err)
                return 1
            if mode == "check" and new != texts[path]:
                print(f"{rel}: table {net.name} differs from {net.main.rel} and the files it names; "
                      f"run `{REGENERATE}`", file=err)
                status = 1
            texts[path] = new
    if mode == "write":
        for path, text in texts.items():
            tmp = path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
            print(f"wrote {os.path.relpath(path, root)}", file=out)
    elif status == 0:
        print("tables agree with the JSON: " + ", ".join(
            sorted({os.path.relpath(p, root) for p in texts})), file=out)
    return status


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m refvbc.tables", allow_abbrev=False,
                                description="Table 2 beside the paper's, from the committed results.json "
                                            "files, written between markers in the README and each "
                                            "result directory's README.md")
    p.add_argument("dirs", nargs="+", help="result directories, e.g. docs/results/lenet300")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--write", action="store_true", help="write the tables into the documents")
    g.add_argument("--check", action="store_true",
                   help="exit 1 with a one-line message when a document differs from the JSON")
    p.add_argument("--readme", help="the front-page README (default: README.md three levels above the "
                                    "first directory, i.e. the repository root)")
    a = p.parse_args(argv)
    return run(a.dirs, a.readme, "write" if a.write else "check" if a.check else "print")


if __name__ == "__main__":
    sys.exit(main())
