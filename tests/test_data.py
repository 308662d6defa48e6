"""MNIST loading: checksums, IDX parsing, clear errors for missing/truncated/altered files."""
import os
import shutil

import numpy as np
import pytest

from refvbc.data import DataError, batches, default_root, load_mnist, parse_idx


def test_bundled_test_split_loads():
    x, y = load_mnist("test")
    assert x.shape == (10000, 784) and x.dtype == np.float32, (x.shape, x.dtype)
    assert y.shape == (10000,) and y.dtype == np.int64
    assert 0.0 <= x.min() and x.max() == 1.0
    assert np.bincount(y).min() > 800, np.bincount(y)


@pytest.fixture
def copy_root(tmp_path):
    root = tmp_path / "mnist"
    shutil.copytree(default_root(), root)
    for p in root.iterdir():
        os.chmod(p, 0o644)
    return root


def test_missing_file_named(copy_root):
    os.remove(copy_root / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        load_mnist("test", root=str(copy_root))


def test_truncated_file_named(copy_root):
    p = copy_root / "t10k-images-idx3-ubyte.gz"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz.*(corrupted|altered)"):
        load_mnist("test", root=str(copy_root))


def test_altered_byte_named(copy_root):
    p = copy_root / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(p.read_bytes())
    data[100] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        load_mnist("test", root=str(copy_root))


def test_missing_checksums(copy_root):
    os.remove(copy_root / "SHA256SUMS")
    with pytest.raises(DataError, match="SHA256SUMS"):
        load_mnist("test", root=str(copy_root))


@pytest.mark.parametrize("buf, msg", [
    (b"\x00\x00", "truncated"),
    (b"\x01\x02\x08\x01" + b"\x00" * 8, "not an unsigned-byte IDX"),
    (b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") + (2).to_bytes(4, "big"), "expected 1 dimensions"),
    (b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"\x01\x02", "expected 3 items"),
    (b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + b"\x01\x02", "payload is 2 bytes"),
])
def test_parse_idx_rejects(buf, msg):
    with pytest.raises(DataError, match=msg):
        parse_idx(buf, "f.idx", 1, 3)


def test_unknown_split():
    with pytest.raises(ValueError, match="unknown MNIST split"):
        load_mnist("valid")


@pytest.mark.parametrize("n, bs", [(10, 3), (12, 4), (1, 5)])
def test_batches_cover_once_and_reproducible(n, bs):
    a = list(batches(n, bs, np.random.default_rng(0)))
    b = list(batches(n, bs, np.random.default_rng(0)))
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    got = np.sort(np.concatenate(a))
    assert np.array_equal(got, np.arange(n)), got
