"""refvbc.tables: Table 2 generated from the committed results.json files into README.md and
docs/results/<arch>/README.md; --check catches a hand edit."""

import io
import json
import os
import shutil

import pytest

from conftest import ROOT
from refvbc import tables

NETS = ("lenet300", "lenet5")
RESULTS = os.path.join(ROOT, "docs", "results")


def run(dirs, mode, readme=None):
    out, err = io.StringIO(), io.StringIO()
    code = tables.run([str(d) for d in dirs], readme=readme, mode=mode, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------------------------------------------
# the committed documents


def test_committed_documents_agree_with_the_json():
    code, out, err = run([os.path.join(RESULTS, n) for n in NETS], "check")
    assert code == 0, err
    assert "README.md" in out and err == ""


def test_paper_numbers_are_report_paper_table2():
    from refvbc.report import PAPER_TABLE2

    for n in NETS:
        with open(os.path.join(RESULTS, n, "results.json"), encoding="utf-8") as f:
            doc = json.load(f)
        assert {m: tuple(v) for m, v in doc["paper_table2"].items()} == PAPER_TABLE2[doc["arch"]]


def copy_tree(tmp_path):
    """README.md and the two result directories (JSON, .rvbc, README.md) under tmp_path."""
    shutil.copy(os.path.join(ROOT, "README.md"), tmp_path / "README.md")
    for n in NETS:
        shutil.copytree(os.path.join(RESULTS, n), tmp_path / "docs" / "results" / n,
                        ignore=shutil.ignore_patterns("*.npz", "*.png", "*.log"))
    return [tmp_path / "docs" / "results" / n for n in NETS]


def edit_first_in_block(path, name, old, new):
    text = path.read_text(encoding="utf-8")
    i = text.index(tables.begin_marker(name))
    j = text.index(old, i)
    assert j < text.index(tables.end_marker(name))
    path.write_text(text[:j] + new + text[j + len(old):], encoding="utf-8")


@pytest.mark.parametrize("doc", ["README.md", "docs/results/lenet5/README.md"])
def test_check_fails_on_a_hand_edited_number(tmp_path, doc):
    dirs = copy_tree(tmp_path)
    assert run(dirs, "check")[0] == 0  # the copy agrees before the edit
    with open(os.path.join(RESULTS, "lenet5", "results.json"), encoding="utf-8") as f:
        acc = tables.pct(json.load(f)["methods"]["vdsws"]["test_acc_compressed"])
    edit_first_in_block(tmp_path / doc, "lenet5", f"| {acc} |", "| 99.99% |")
    code, out, err = run(dirs, "check")
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{doc}: table lenet5 differs"), err
    # --write puts the JSON's number back
    assert run(dirs, "write")[0] == 0
    assert run(dirs, "check")[0] == 0
    assert (tmp_path / doc).read_text(encoding="utf-8") == open(os.path.join(ROOT, doc), encoding="utf-8").read()


def test_check_fails_when_the_json_changes(tmp_path):
    dirs = copy_tree(tmp_path)
    p = dirs[0] / "results.json"
    doc = json.loads(p.read_text(encoding="utf-8"))
    doc["methods"]["vd"]["ratio_file"] += 1.0
    p.write_text(json.dumps(doc), encoding="utf-8")
    code, _, err = run(dirs, "check")
    assert code == 1
    assert err.splitlines() == [l for l in err.splitlines() if "table lenet300 differs" in l]
    assert {l.split(":")[0] for l in err.splitlines()} == {"README.md", "docs/results/lenet300/README.md"}


# ---------------------------------------------------------------------------------------------------
# synthetic JSON


def entry(method, acc, cr, nz=0.01, label=None, file=None):
    return {"method": method, "label": label or tables.LABELS[method], "test_acc_compressed": acc,
            "test_acc_uncompressed": acc + 0.001, "nonzero_fraction": nz, "ratio_file": cr,
            "ratio_paper": cr * 1.3, "file": file or f"{method}.rvbc", "file_bytes": 12345}


PAPER = {"l2": [98.39, 100.0, 1], "sws": [98.16, 8.6, 34], "vd": [98.05, 1.6, 131], "vdsws": [98.24, 1.5, 161]}


def results(seed, methods, **extra):
    doc = {"arch": "lenet300", "methods": methods, "paper_table2": PAPER,
           "config": {"seed": seed, "method": "all", "tau2": 0.02, "tau2_final": None, "init_from": None},
           "compress": {"prune_first": True}}
    doc.update(extra)
    return doc


def make_tree(tmp_path, seeds=(), variant=None):
    net = tmp_path / "docs" / "results" / "net"
    net.mkdir(parents=True)
    block = f"{tables.begin_marker('net')}\n{tables.end_marker('net')}\n"
    (tmp_path / "README.md").write_text(f"# front\n\n{block}\nafter\n", encoding="utf-8")
    (net / "README.md").write_text(f"# page\n\n{block}", encoding="utf-8")
    ms = {"l2": entry("l2", 0.9787, 0.9998, nz=0.99997), "vdsws": entry("vdsws", 0.9815, 234.9504, nz=0.0114),
          "vdsws-finetuned": entry("vdsws", 0.9827, 234.9504, label="VD+SWS fine-tuned (beyond the paper)",
                                   file="vdsws-finetuned.rvbc")}
    (net / "results.json").write_text(json.dumps(results(0, ms)), encoding="utf-8")
    for f in ("l2.rvbc", "vdsws.rvbc", "vdsws-finetuned.rvbc"):
        (net / f).write_bytes(b"x")
    for seed, acc, cr in seeds:
        d = net / "seeds" / f"seed{seed}"
        d.mkdir(parents=True)
        doc = results(seed, {"vdsws": entry("vdsws", acc, cr)}, commit="0123456789abcdef", code_dirty=False,
                      command=f"python run_experiments.py --arch lenet300 --jobs 2 --seed {seed}")
        (d / "results.json").write_text(json.dumps(doc), encoding="utf-8")
    if variant:
        doc = results(0, {"vd": entry("vd", 0.9822, 121.0), "vdsws": entry("vdsws", 0.983, 234.69)})
        doc["config"].update(method="vdsws", tau2_final=0.2, init_from="vd.npz")
        (net / f"{variant}.results.json").write_text(json.dumps(doc), encoding="utf-8")
    return net


def test_formatting_helpers():
    assert tables.pct(0.9815) == "98.15%"
    assert tables.pct(0.99997) == "100.00%"
    assert tables.ratio(234.95042961004626) == "235.0×"
    assert tables.ratio(0.9998) == "1.0×"
    assert tables.paper_cells([98.24, 1.5, 161]) == ("98.24%", "1.5%", "161×")
    assert tables.paper_cells([98.39, 100.0, 1]) == ("98.39%", "100%", "1×")
    assert tables.paper_cells(None) == ("", "", "")
    e = entry("vdsws", 0.9815, 234.9504)
    assert tables.versus(e, [98.24, 1.5, 161]) == "-0.09 pt, 1.46×"
    assert tables.versus(e, None) == ""


def test_one_seed_says_n_1_and_earlier_code(tmp_path):
    net = make_tree(tmp_path)
    code, out, err = run([net], "print")
    assert code == 0, err
    readme = out.split("# net: docs/results/net/README.md")[0]
    assert "| VD+SWS | 98.24% | 161× | 98.15% | 235.0× | 1.14% | -0.09 pt, 1.46× | — (n = 1) |" in readme
    assert "| L2 | 98.39% | 1× | 97.87% | 1.0× | 100.00% | -0.52 pt, 1.00× | — (n = 1) |" in readme
    assert "made by earlier code; command not recorded" in readme
    assert "docs/results/net/seeds/seed<N>/results.json" in readme
    assert "fine-tuned" not in readme  # labelled rows only on the result page
    page = out.split("# net: docs/results/net/README.md")[1]
    assert "| VD+SWS fine-tuned (beyond the paper) |  | 98.27% |" in page
    assert "`vdsws-finetuned.rvbc` 12,345 B" in page and "[vdsws-finetuned]" in page


def test_seeds_give_mean_and_sample_std(tmp_path):
    net = make_tree(tmp_path, seeds=[(1, 0.9815, 234.5), (2, 0.9821, 234.8)])
    code, out, err = run([net], "print")
    assert code == 0, err
    # accuracies 98.15, 98.15, 98.21: mean 98.17, sample std 0.0346; CR 234.9504, 234.5, 234.8
    assert "98.17% ± 0.03 at 234.8× ± 0.2 (n = 3: seeds 0, 1, 2)" in out
    assert "— (n = 1)" in out  # L2 has no seed files
    assert "`docs/results/net/seeds/seed1/results.json` (seed 1): made by commit `0123456789`; " \
           "`python run_experiments.py --arch lenet300 --jobs 2 --seed 1`." in out


def test_provenance_sentences(tmp_path):
    net = make_tree(tmp_path)
    p = net / "results.json"
    doc = json.loads(p.read_text(encoding="utf-8"))
    doc.update(commit="abcdef0123456789", code_dirty=True, command="python run_experiments.py --arch lenet300")
    p.write_text(json.dumps(doc), encoding="utf-8")
    assert tables.Source(str(p), str(tmp_path)).provenance() == (
        "made by commit `abcdef0123` with uncommitted changes to the code; "
        "`python run_experiments.py --arch lenet300`.")
    doc.update(commit=None, code_dirty=None, command=None)
    p.write_text(json.dumps(doc), encoding="utf-8")
    assert tables.Source(str(p), str(tmp_path)).provenance() == (
        "made outside a git checkout (commit not recorded); command not recorded.")


def test_labelled_variant_is_its_own_row(tmp_path):
    net = make_tree(tmp_path, variant="vdsws-tau2ramp")
    (net / "vdsws-tau2ramp.rvbc").write_bytes(b"x")
    code, out, err = run([net], "print")
    assert code == 0, err
    page = out.split("# net: docs/results/net/README.md")[1]
    row = [l for l in page.splitlines() if "variant `vdsws-tau2ramp`" in l]
    assert len(row) == 1  # only the phase the file is named for, not the VD entry it also holds
    assert row[0].startswith("| VD+SWS, variant `vdsws-tau2ramp`: `--tau2-final 0.2` |  | 98.30% |")
    assert "`vdsws-tau2ramp.rvbc` 12,345 B" in row[0] and "(not committed)" not in row[0]
    assert "`docs/results/net/vdsws-tau2ramp.results.json` [vdsws]" in row[0]


def test_best_point_of_the_sweep_is_labelled_and_in_the_readme(tmp_path):
    """A `<method>-best` file is a row "best of the full-length sweep (selected on test accuracy)" with
    its settings, compared with the paper's row, on the page and in the README's table (a plain variant
    is on the page only)."""
    net = make_tree(tmp_path, variant="vdsws-best")
    code, out, err = run([net], "print")
    assert code == 0, err
    readme, page = out.split("# net: docs/results/net/README.md")
    want = ("| VD+SWS, best of the full-length sweep (selected on test accuracy) `vdsws-best`: "
            "`--tau2-final 0.2` | 98.24% | 161× | 98.30% | 234.7× | 1.00% | +0.06 pt, 1.46× | — (n = 1) |")
    assert want in readme, readme
    row = [l for l in page.splitlines() if "`vdsws-best`" in l]
    assert len(row) == 1 and "| 98.24% / 1.5% / 161× | 98.30% |" in row[0], row


def test_write_then_check_and_text_outside_the_markers_kept(tmp_path):
    net = make_tree(tmp_path, seeds=[(1, 0.9815, 234.5)])
    assert run([net], "check")[0] == 1  # the blocks are empty
    code, out, err = run([net], "write")
    assert code == 0, err
    text = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert text.startswith("# front\n\n") and text.endswith("\nafter\n")
    assert "| VD+SWS | 98.24% | 161× | 98.15% |" in text
    code, out, err = run([net], "check")
    assert code == 0 and err == ""


def test_missing_markers_and_bad_seed_directory(tmp_path):
    net = make_tree(tmp_path)
    assert run([net], "write")[0] == 0
    (net / "README.md").write_text("# page without markers\n", encoding="utf-8")
    code, _, err = run([net], "check")
    assert code == 1 and err.strip().splitlines() == [
        "error: docs/results/net/README.md: table net: needs exactly one "
        "<!-- table2:net:begin --> ... <!-- table2:net:end --> pair"]
    d = net / "seeds" / "seed3"
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps(results(4, {"vdsws": entry("vdsws", 0.98, 230.0)})),
                                    encoding="utf-8")
    code, _, err = run([net], "print")
    assert code == 2 and "config says seed 4, its directory seed3" in err


def test_cli_main_exit_status(tmp_path, capsys):
    net = make_tree(tmp_path)
    assert tables.main([str(net), "--check"]) == 1
    assert tables.main([str(net), "--write"]) == 0
    assert tables.main([str(net), "--check"]) == 0
    assert tables.main([str(tmp_path / "nowhere")]) == 2
