"""scripts/pretrain_study.py: the grid's flags (every setting explicit, so a grid point means the same
whatever the defaults), the table from the measurements, --add-chain, and the document block it writes."""
import importlib.util
import json
import os

import pytest
from conftest import ROOT

SPEC = importlib.util.spec_from_file_location("pretrain_study", os.path.join(ROOT, "scripts", "pretrain_study.py"))
ps = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(ps)


@pytest.mark.parametrize("name, decay", [("former", "none"), ("b", 0.5), ("a", 0.0)])
def test_grid_flags_name_every_l2_setting(name, decay):
    flags = ps.l2_flags(name)
    got = dict(zip(flags[::2], flags[1::2]))
    assert set(got) == {"--epochs-l2", "--lr-l2", "--weight-decay", "--lr-l2-decay-from"}, flags
    assert got["--lr-l2-decay-from"] == decay, f"expected decay {decay!r}, got {got['--lr-l2-decay-from']!r}"


def results(tmp_path, name, accs):
    """A results.json with decoded accuracies `accs` {method: (acc %, CR)}."""
    doc = {"commit": "abc", "command": "python run_experiments.py --arch lenet300",
           "methods": {m: {"test_acc_compressed": a / 100, "ratio_file": cr} for m, (a, cr) in accs.items()}}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_add_chain_and_table_mean_and_std(tmp_path):
    doc = {"grid": {}, "l2": {}, "chain": {}}
    ps.add_chain(doc, "b", 0, results(tmp_path, "s0", {"l2": (98.4, 1.0), "vdsws": (98.0, 240.0)}))
    ps.add_chain(doc, "b", 1, results(tmp_path, "s1", {"l2": (98.2, 1.0), "vdsws": (97.8, 230.0)}))
    assert doc["made_by"]["b-seed1"] == {"commit": "abc", "command": "python run_experiments.py --arch lenet300"}
    row = [l for l in ps.table(doc).split("\n") if l.startswith("| b |")]
    assert row == ["| b | 0,1 | 98.30 ± 0.14% | - | - | 97.90 ± 0.14% @ 235.0× |"], row  # sample std


def test_add_chain_takes_the_table2_runs(tmp_path):
    doc = {"chain": {}}
    ps.add_chain(doc, ps.TABLE2, 2, results(tmp_path, "s2", {"vdsws": (97.7, 240.0)}))
    assert doc["chain"] == {"table2": {"2": {"vdsws": [97.7, 240.0]}}}, doc


def test_add_chain_refuses_an_unknown_candidate(tmp_path):
    with pytest.raises(ValueError, match="unknown candidate 'zz'"):
        ps.add_chain({"chain": {}}, "zz", 0, results(tmp_path, "s0", {"l2": (98.0, 1.0)}))


def test_write_block_replaces_only_the_block(tmp_path):
    doc = tmp_path / "d.md"
    doc.write_text(f"before\n{ps.BEGIN}\nold\n{ps.END}\nafter\n")
    ps.write_block(str(doc), "new table")
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith(f"{ps.END}\nafter\n") and "new table" in text
    assert "old" not in text, text
    (tmp_path / "none.md").write_text("no markers\n")
    with pytest.raises(ValueError, match="has no"):
        ps.write_block(str(tmp_path / "none.md"), "x")
