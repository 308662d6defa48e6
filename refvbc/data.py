"""MNIST from the bundled gzip IDX files, verified against SHA256SUMS; minibatching.

Shape legend
    N        number of images in a split (60000 train, 10000 test)
    x        float32 (N, 784), pixels / 255 in [0, 1]  (spec "Architectures": no other preprocessing)
    y        int64 (N,) labels 0..9

No download code: the project runs offline from `data/mnist/` (or a directory passed in).
"""

import gzip
import hashlib
import os
import struct

import numpy as np

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10000),
}


class DataError(ValueError):
    """A data file is missing, truncated, altered or not in IDX format."""


def default_root():
    """`data/mnist` of the source tree, or $REFVBC_DATA when set."""
    env = os.environ.get("REFVBC_DATA")
    if env:
        return env
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "mnist")


def read_checksums(root):
    """Parse `SHA256SUMS` in `root` -> {filename: hexdigest}."""
    path = os.path.join(root, "SHA256SUMS")
    if not os.path.isfile(path):
        raise DataError(f"checksum file missing: {path}")
    sums = {}
    with open(path, "r", encoding="ascii", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2 or len(parts[0]) != 64:
                raise DataError(f"{path}:{lineno}: malformed line {line!r}")
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def _verified_bytes(root, name, sums):
    path = os.path.join(root, name)
    if not os.path.isfile(path):
        raise DataError(f"MNIST file missing: {path} (the project ships it in data/mnist/)")
    with open(path, "rb") as f:
        raw = f.read()
    expected = sums.get(name)
    if expected is None:
        raise DataError(f"no SHA-256 sum for {name} in {os.path.join(root, 'SHA256SUMS')}")
    got = hashlib.sha256(raw).hexdigest()
    if got != expected:
        raise DataError(
            f"MNIST file {path} is corrupted or altered: SHA-256 {got} != expected {expected}"
        )
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as e:
        raise DataError(f"MNIST file {path} is not valid gzip: {e}") from None


def parse_idx(buf, name, expected_ndim, expected_count):
    """Parse an uncompressed IDX buffer of unsigned bytes -> uint8 array, validating the header."""
    if len(buf) < 4:
        raise DataError(f"{name}: truncated IDX header ({len(buf)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", buf[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{name}: not an unsigned-byte IDX file (magic {buf[:4].hex()})")
    if ndim != expected_ndim:
        raise DataError(f"{name}: expected {expected_ndim} dimensions, header says {ndim}")
    hdr = 4 + 4 * ndim
    if len(buf) < hdr:
        raise DataError(f"{name}: truncated IDX header")
    dims = struct.unpack(">" + "I" * ndim, buf[4:hdr])
    if dims[0] != expected_count:
        raise DataError(f"{name}: expected {expected_count} items, header says {dims[0]}")
    size = int(np.prod(dims, dtype=np.int64))
    if len(buf) - hdr != size:
        raise DataError(f"{name}: payload is {len(buf) - hdr} bytes, header implies {size}")
    return np.frombuffer(buf, dtype=np.uint8, offset=hdr).reshape(dims)


def load_mnist(split, root=None):
    """Load one MNIST split, verified.

    Inputs:  split "train" or "test"; root directory with the .gz files and SHA256SUMS.
    Returns: x float32 (N, 784) in [0, 1]; y int64 (N,).
    Raises DataError naming the file when one is missing, truncated or altered.
    """
    if split not in FILES:
        raise ValueError(f"unknown MNIST split {split!r}; expected 'train' or 'test'")
    root = root or default_root()
    img_name, lab_name, count = FILES[split]
    sums = read_checksums(root)
    images = parse_idx(_verified_bytes(root, img_name, sums), img_name, 3, count)
    labels = parse_idx(_verified_bytes(root, lab_name, sums), lab_name, 1, count)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{img_name}: expected 28x28 images, got {images.shape[1:]}")
    if labels.max() > 9:
        raise DataError(f"{lab_name}: label {int(labels.max())} out of range 0..9")
    x = images.reshape(count, 784).astype(np.float32) / np.float32(255.0)
    return x, labels.astype(np.int64)


def batches(n, batch_size, rng):
    """Yield index arrays of a random permutation of range(n), `batch_size` at a time (last may be
    shorter). `rng` is a numpy Generator passed in, so a run is reproducible from its seed."""
    perm = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield perm[start:start + batch_size]
