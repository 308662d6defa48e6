"""The sparse inference model (refvbc/compress/sparse_model.py) against the dense decoded model, on synthetic
models and on the committed `.rvbc` files; the `run` and `bench` commands, with good and damaged files."""

import json
import os

import numpy as np
import pytest
from conftest import ROOT

from refvbc.compress import FormatError, compress_model, encode
from refvbc.compress.__main__ import main
from refvbc.compress.fileformat import read_rvbc
from refvbc.compress.sparse_model import SparseModel, dense_logits
from refvbc.compress.synthetic import synthetic_params

COMMITTED = ["docs/results/lenet300/vdsws.rvbc", "docs/results/lenet300/vd.rvbc",
             "docs/results/lenet5-short/vdsws.rvbc"]


def images(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, 784)) * (rng.random((n, 784)) < 0.4)).astype(np.float32)


def check_logits(sm, cm, x, what):
    params = cm.to_params()
    dt = x.dtype
    ref = dense_logits(cm.arch, {k: v.astype(dt) for k, v in params.items()}, x)
    got = sm.logits(x)
    assert got.shape == ref.shape and got.dtype == ref.dtype, f"{what}: {got.shape} {got.dtype} vs {ref.shape}"
    tol = 1e-5 if dt == np.float32 else 1e-12
    err = np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1.0)
    assert err <= tol, f"{what}: max |sparse - dense| / max|dense| = {err:.2e} > {tol:.0e}"
    same = got.argmax(1) == ref.argmax(1)
    assert same.all(), f"{what}: argmax differs on images {np.flatnonzero(~same)[:10]}"


@pytest.mark.parametrize("layout", ["auto", "csr", "dense"])
@pytest.mark.parametrize("arch,method", [("lenet300", "vdsws"), ("lenet300", "sws"), ("lenet300", "l2"),
                                         ("lenet5", "vdsws"), ("lenet5", "sws")])
def test_sparse_logits_equal_dense_decoded(arch, method, layout):
    """(vd is the committed docs/results/lenet300/vd.rvbc below: its per-layer EM fit is slow to redo.)"""
    p = synthetic_params(arch, method, density=0.05, seed=3)
    cm = compress_model(arch, p, method, layout=layout)
    sm = SparseModel.from_bytes(encode(cm))
    assert (sm.arch, sm.method) == (arch, method)
    x = images(37, seed=1)
    check_logits(sm, cm, x, f"{arch}/{method}/{layout} float32")
    check_logits(sm, cm, x[:1], f"{arch}/{method}/{layout} one image")
    if arch == "lenet5":
        check_logits(sm, cm, x.reshape(-1, 1, 28, 28), f"{arch}/{method}/{layout} NCHW input")
    check_logits(sm, cm, x[:5].astype(np.float64), f"{arch}/{method}/{layout} float64")
    assert sm.logits(x[:0]).shape == (0, 10)


def test_pruned_input_channel_and_empty_layers():
    """A model whose every weight is zero: nothing is kept but the logits' biases."""
    p = synthetic_params("lenet5", "sws", density=0.0, seed=4)
    cm = compress_model("lenet5", p, "sws")
    assert not cm.input_mask.any()
    sm = SparseModel.from_bytes(encode(cm))
    check_logits(sm, cm, images(3), "empty lenet5")


def test_bad_inputs():
    sm = SparseModel.from_bytes(encode(compress_model("lenet300", synthetic_params("lenet300", "vdsws"), "vdsws")))
    with pytest.raises(ValueError, match="shape"):
        sm.logits(np.zeros((2, 783), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        sm.logits(np.zeros((2, 784), np.int64))
    with pytest.raises(ValueError, match="batch"):
        sm.predict(np.zeros((2, 784), np.float32), batch=0)
    with pytest.raises(FormatError, match="truncated"):
        SparseModel.from_bytes(encode(compress_model("lenet300", synthetic_params("lenet300", "l2"), "l2"))[:-1])


@pytest.mark.parametrize("path", COMMITTED)
def test_committed_files_predict_as_the_dense_decoded_model(path):
    """All 10,000 MNIST test images: the same argmax as the dense decoded model (no ties in these files),
    logits equal to float32 round-off, and the accuracy of the file's results.json."""
    from refvbc.data import load_mnist
    from refvbc.models import predict

    x, y = load_mnist("test")
    full = os.path.join(ROOT, path)
    sm, cm = SparseModel.from_file(full), read_rvbc(full)
    ls = sm.predict(x, 1000)
    ld = predict(cm.arch, cm.to_params(), x, batch_size=1000)
    diff = np.flatnonzero(ls.argmax(1) != ld.argmax(1))
    assert diff.size == 0, f"{path}: predictions differ on {diff.size} images, first {diff[:10]}"
    err = np.max(np.abs(ls - ld)) / np.max(np.abs(ld))
    assert err < 1e-5, f"{path}: relative logit difference {err:.2e}"
    with open(os.path.join(os.path.dirname(full), "results.json")) as f:
        expect = json.load(f)["methods"][cm.method]["test_acc_compressed"]
    acc = float(np.mean(ls.argmax(1) == y))
    assert abs(acc - expect) < 1e-9, f"{path}: accuracy {acc}, results.json says {expect}"
    assert sm.nbytes < 0.1 * sum(v.nbytes for v in cm.to_params().values())


def test_cli_run_and_bench(tmp_path, capsys):
    from refvbc.data import load_mnist
    from refvbc.models import accuracy

    path = os.path.join(ROOT, COMMITTED[0])
    cm = read_rvbc(path)
    acc = accuracy(cm.arch, cm.to_params(), *load_mnist("test"))
    assert main(["run", path, "--batch", "333"]) == 0
    assert f"test accuracy {100 * acc:.2f}%" in capsys.readouterr().out
    js = tmp_path / "b.json"
    assert main(["bench", path, "--calls", "20", "--rounds", "2", "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "latency" in out and "throughput" in out and "load average" in out
    r = json.loads(js.read_text())
    assert set(r) == {"latency_sparse_s", "latency_dense_s", "throughput_sparse", "throughput_dense",
                      "bytes_sparse", "bytes_dense", "accuracy_sparse", "accuracy_dense"}
    assert r["accuracy_sparse"] == r["accuracy_dense"] == acc
    assert r["bytes_dense"] == 4 * (784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10)
    assert all(r[k] > 0 for k in r)


@pytest.mark.parametrize("cmd", [["run"], ["bench", "--calls", "1", "--rounds", "1"]])
def test_cli_damaged_files(cmd, tmp_path, capsys):
    good = open(os.path.join(ROOT, COMMITTED[0]), "rb").read()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x10
    cases = {"truncated.rvbc": (good[:-7], "truncated"), "flipped.rvbc": (bytes(flipped), "checksum"),
             "foreign.rvbc": (b"PK\x03\x04" + good[4:], "magic"), "empty.rvbc": (b"", "truncated")}
    for name, (data, msg) in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        assert main([cmd[0], str(p)] + cmd[1:]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("error: ") and msg in err and err.count("\n") == 1, f"{name}: {err!r}"
    assert main([cmd[0], str(tmp_path / "missing.rvbc")] + cmd[1:]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    if cmd[0] == "run":
        assert main(["run", os.path.join(ROOT, COMMITTED[0]), "--batch", "0"]) == 2
        assert "--batch" in capsys.readouterr().err
