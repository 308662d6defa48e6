"""scripts/ablation.py table: a variant not run is a row that says so, the table goes to a new --md
file, and an existing --md file is refused before anything is computed or written."""
import importlib.util
import json
import os

from conftest import ROOT

SPEC = importlib.util.spec_from_file_location("ablation", os.path.join(ROOT, "scripts", "ablation.py"))
ab = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(ab)


def test_table_of_nothing_run_lists_every_variant(tmp_path, capsys):
    md = tmp_path / "table.md"
    assert ab.main(["table", "--out", str(tmp_path / "none"), "--md", str(md)]) == 0
    rows = md.read_text().splitlines()[2:]
    names = [n for n, *_ in ab.VARIANTS] + [n for n, *_ in ab.POST_HOC]
    assert [r.split(" | ")[0].lstrip("| ") for r in rows] == names, rows
    assert all("| not run |" in r for r in rows), rows
    assert capsys.readouterr().out.strip() == md.read_text().strip()


def test_existing_md_is_refused_before_any_row_is_computed(tmp_path, capsys, monkeypatch):
    md, out = tmp_path / "table.md", tmp_path / "runs"
    md.write_text("kept\n")
    (out / ab.VARIANTS[0][0]).mkdir(parents=True)  # a finished variant: its row would be computed
    (out / ab.VARIANTS[0][0] / "results.json").write_text(json.dumps({"methods": {"vdsws": {}}}))
    monkeypatch.setattr(ab, "_row", lambda *a: (_ for _ in ()).throw(AssertionError("a row was computed")))
    assert ab.main(["table", "--out", str(out), "--md", str(md)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--md {md} exists" in err, err
    assert md.read_text() == "kept\n"
