"""Tests of the benchmark tools in benchmarks/: no argument parsing at import, the parsers' rules (no
abbreviations, every flag's help shows its default), the JSON records' keys against docs/bench_step.json,
one tiny timed step (1 step, no warm-up, 1 repeat, no torch) and the micro-benchmarks with one repeat."""

import importlib
import json
import os
import sys

import numpy as np
import pytest

from conftest import ROOT

BENCH = os.path.join(ROOT, "benchmarks")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

TOOLS = ["bench_step", "bench_kernels"]
MODULES = ["common", "torch_step", "bench_kernels", "step_compare", "bench_step"]


def docs_keys():
    """{kind: [keys in order]} of the records in docs/bench_step.json."""
    with open(os.path.join(ROOT, "docs", "bench_step.json")) as f:
        return {r["kind"]: list(r) for r in json.load(f)}


def test_no_parsing_at_import(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bench", "--not-a-flag"])
    for name in MODULES:
        mod = sys.modules.get(name)
        mod = importlib.reload(mod) if mod is not None else importlib.import_module(name)
        assert not hasattr(mod, "ARGS"), f"{name} keeps parsed arguments at import"


@pytest.mark.parametrize("tool", TOOLS)
def test_parsers(tool):
    parser = importlib.import_module(tool).build_parser()
    assert parser.allow_abbrev is False
    for action in parser._actions:
        if action.option_strings == ["-h", "--help"]:
            continue
        assert action.help and "(default: %(default)s" in action.help, (tool, action.option_strings, action.help)
    with pytest.raises(SystemExit):
        parser.parse_args(["--arc", "lenet5"])  # an abbreviation of --arch


def test_bench_step_flags():
    import bench_step
    args = bench_step.parse_args(["--dtype", "float32", "--json", "x.json", "--epoch", "--torch-threads", "2,1"])
    assert (args.dtype, args.json, args.epoch, args.torch_thread_list, args.device) == ("float32", "x.json", True,
                                                                                         [2, 1], "cpu")
    assert bench_step.parse_args(["--device", "cuda"]).device == "cuda"


def test_records_match_docs_schema():
    import step_compare
    keys = docs_keys()
    assert list(step_compare.epoch_record("lenet5", "vd", 1.0, 2.0, 3.0, [1.0, 1.0, 1.0])) == keys["epoch"]
    assert list(step_compare.sgemm_record(1.0, 2.0)) == keys["sgemm"]
    row = dict(arch="lenet5", phase="vd", dtype="float32", ours=0.02, cpu=0.03, load=None,
               torch={2: (0.03, 0.03, 0.03, 0.05), 1: (0.025, 0.02, 0.03, 0.025)})
    rec = step_compare.step_record(row)
    rec["gflop"] = step_compare.step_gflop("lenet5", "vd")
    assert list(rec) == keys["step"]
    assert rec["torch_threads"] == 1 and rec["ratio"] == 0.02 / 0.025 and rec["torch_all"] == {"2": 0.03, "1": 0.025}


def test_tiny_step():
    """One configuration with 1 timed step, no warm-up, 1 repeat and no torch: a row and its record."""
    import bench_step
    import step_compare
    args = bench_step.parse_args(["--steps", "1", "--warmup", "0", "--repeat", "1", "--no-torch"])
    row = step_compare.bench_config("lenet300", "l2", np.float32, args, None)
    assert row["ours"] > 0 and row["torch"] == {} and abs(sum(row["shares"].values()) - 1.0) < 1e-9
    rec = step_compare.step_record(row)
    assert rec["kind"] == "step" and rec["torch_s"] is None and list(rec) == docs_keys()["step"][:len(rec)]
    assert step_compare.fmt_row(row).startswith("lenet300  l2")


def test_micro_benchmarks():
    import bench_kernels
    assert bench_kernels.bench_noise("lenet300", None, repeat=1).startswith("noise draw lenet300: refvbc ")
    s1, s2 = bench_kernels.sgemm_rate(repeat=1)
    assert s1 > 0 and s2 > 0


def test_cuda_unavailable_exits(capsys):
    from refvbc.kernels import cuda_available
    if cuda_available()[0]:
        pytest.skip("a GPU is present: --device cuda would run the benchmark")
    import bench_step
    assert bench_step.main(["--device", "cuda", "--no-torch"]) == 1
    assert "# --device cuda unavailable:" in capsys.readouterr().out
