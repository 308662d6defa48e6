"""Atomic writes and the guarded .npz reader."""
import os

import numpy as np
import pytest

from refvbc.fileio import atomic_savez, atomic_write_bytes, load_npz


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "sub" / "f.bin"
    assert atomic_write_bytes(str(p), b"one") == 3
    atomic_write_bytes(str(p), b"second")
    assert p.read_bytes() == b"second"
    assert os.listdir(p.parent) == ["f.bin"], os.listdir(p.parent)
    mask = os.umask(0)
    os.umask(mask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~mask, oct(p.stat().st_mode)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_savez_roundtrip(tmp_path, dtype):
    p = str(tmp_path / "a.npz")
    arrays = {"param/fc1.theta": np.arange(6, dtype=dtype).reshape(2, 3), "config/arch": np.array("lenet300")}
    atomic_savez(p, **arrays)
    got = load_npz(p)
    assert got.keys() == arrays.keys()
    for k in arrays:
        assert got[k].dtype == arrays[k].dtype and np.array_equal(got[k], arrays[k]), k


def test_load_npz_rejects_clearly(tmp_path):
    with pytest.raises(ValueError, match="cannot read checkpoint .*missing.npz"):
        load_npz(str(tmp_path / "missing.npz"), "checkpoint")
    j = tmp_path / "r.json"
    j.write_text('{"a": 1}')
    with pytest.raises(ValueError, match="r.json is not an .npz archive"):
        load_npz(str(j))
    p = tmp_path / "t.npz"
    atomic_savez(str(p), x=np.arange(1000.0))
    p.write_bytes(p.read_bytes()[:300])
    with pytest.raises(ValueError, match="t.npz is damaged"):
        load_npz(str(p))
    np.savez(str(tmp_path / "o.npz"), x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="o.npz is damaged or holds pickled objects"):
        load_npz(str(tmp_path / "o.npz"))
