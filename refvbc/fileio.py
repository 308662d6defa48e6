"""Atomic file writes: write to a temporary file in the target's folder, fsync, then os.replace, so a
kill or a full disk never leaves a half-written file in place of a good one."""

import io
import os
import tempfile

import numpy as np


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
