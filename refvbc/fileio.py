"""Atomic file writes: write to a temporary file in the target's folder, fsync, then os.replace, so a
kill or a full disk never leaves a half-written file in place of a good one."""

import io
import os
import tempfile
import zipfile

import numpy as np


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path, data):
    """Write `data` (bytes) to `path` atomically. Returns len(data)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-" + os.path.basename(path) + "-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file open()'s usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return len(data)


def atomic_savez(path, **arrays):
    """np.savez (uncompressed, no pickles) to `path` atomically."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_npz(path, what="file"):
    """All arrays of an .npz archive as a dict (no pickles). Raises ValueError naming `path` when it
    is missing, not an .npz archive, truncated or holds object arrays."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ValueError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if magic != b"PK\x03\x04":
        raise ValueError(f"{what} {path} is not an .npz archive (starts with {magic!r})")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: np.array(z[k]) for k in z.files}
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise ValueError(f"{what} {path} is damaged or holds pickled objects: {e}") from None
