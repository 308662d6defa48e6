"""`verify`: recompute a cross-check file written by any framework with refvbc in float64, from the
file's own inputs, and compare every output tensor.

Per tensor the error is max|theirs - refvbc| / max|refvbc| (relative to the tensor's largest
reference entry); a tensor agrees when that is <= rtol.  Exit codes: 0 all agree, 1 one or more
differ, 2 the file is not a valid cross-check file.
"""

import sys

import numpy as np

from ..fileio import load_npz
from .compute import outputs
from .layout import LayoutError, check

# Default tolerances per file dtype.  float64: implementations agree to ~1e-13 (docs/crosscheck.md).
# float32: refvbc's own float32 path, from the same inputs, drifts from its float64 reference by at
# most FLOAT32_DRIFT (tested bounds, about 3x the largest drift measured over both architectures,
# tau2 0 and 0.02, seeds 0-2, batch 8: 6.9e-7 for one minibatch, 1.1e-4 over 5 Adam steps); the
# float32 default leaves room for another framework's summation order and Adam rounding.
RTOL = {np.dtype(np.float64): 1e-7, np.dtype(np.float32): 1e-3}
FLOAT32_DRIFT = {"minibatch": 2e-6, "steps": 3e-4}


def rel_err(a, b):
    """Per-tensor relative error max|a - b| / max|b| (b the reference); 0 when both are all zero,
    inf when only b is, nan when a holds a nan."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    diff = float(np.max(np.abs(a - b), initial=0.0))
    scale = float(np.max(np.abs(b), initial=0.0))
    if np.isnan(diff):
        return float("nan")
    if scale == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / scale


def worst(a, b):
    """(index of the largest |a - b| (a nan counts as largest), a there, b there)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    d = np.abs(a - b)
    d = np.where(np.isnan(d), np.inf, d)
    i = np.unravel_index(int(np.argmax(d)), d.shape) if d.size else ()
    return tuple(int(j) for j in i), float(a[i]), float(b[i])


def compare(theirs, ref, keys, rtol):
    """Rows (key, err, index, theirs value, refvbc value, ok) in the order of `keys`."""
    rows = []
    for k in keys:
        e = rel_err(theirs[k], ref[k])
        idx, va, vb = worst(theirs[k], ref[k])
        rows.append((k, e, idx, va, vb, bool(e <= rtol)))
    return rows


def format_row(row, width):
    k, e, idx, va, vb, ok = row
    where = "[" + ",".join(map(str, idx)) + "]"
    return (f"{k:<{width}}  rel {e:8.2e}  worst at {where:<14} theirs {va: .15e}  refvbc {vb: .15e}  "
            f"{'ok' if ok else 'DIFFERS'}")


def step_of(key):
    """1-based step of a trajectory key, 0 for the top-level minibatch."""
    return int(key[4:key.index("/")]) if key.startswith("step") else 0


def verify_file(path, rtol=None, out=None):
    """Verify the file at `path`; print one line per tensor and a verdict to `out` (stdout).
    Returns the exit code (0 agree, 1 differ, 2 invalid file; the reason for 2 goes to stderr)."""
    out = sys.stdout if out is None else out
    try:
        arrays = load_npz(path, what="cross-check file")
        layout = check(arrays)
    except (ValueError, LayoutError) as e:
        msg = str(e) if str(e).startswith("cross-check file") else f"{path} is not a valid cross-check file: {e}"
        print(f"error: {msg}", file=sys.stderr)
        return 2
    dtype = np.dtype(layout.dtype)
    auto = RTOL[dtype]
    batch = np.shape(arrays["input/x" if layout.single else "step1/input/x"])[0]
    what = f"{layout.steps} Adam steps" if layout.steps else "one minibatch"
    mask = ", mask_pruned" if np.asarray(arrays.get("config/mask_pruned", 0)) else ""
    print(f"{path}: {layout.arch}, tau1 {float(arrays['config/tau1']):g}, tau2 {float(arrays['config/tau2']):g}"
          f"{mask}, batch {batch}, {dtype.name}, {what}", file=out)
    if dtype == np.float32:
        if rtol is None:
            print(f"note: float32 file: comparing at --rtol {auto:g} (refvbc's own float32 path drifts up to "
                  f"{FLOAT32_DRIFT['minibatch']:g} in one minibatch, {FLOAT32_DRIFT['steps']:g} over 5 Adam "
                  f"steps; docs/crosscheck.md)", file=out)
        elif rtol < auto:
            print(f"note: float32 file: --rtol {rtol:g} is below float32 round-off; --rtol {auto:g} is "
                  f"the float32 default (docs/crosscheck.md)", file=out)
    rtol = auto if rtol is None else rtol
    if layout.unknown:
        print(f"note: ignoring {len(layout.unknown)} keys the layout does not define: "
              f"{', '.join(layout.unknown[:6])}{' ...' if len(layout.unknown) > 6 else ''}", file=out)

    try:
        with np.errstate(all="ignore"):  # extreme inputs give inf/nan, which the comparison reports
            ref = outputs(arrays, layout.arch, layout.steps, single=layout.single, dtype=np.float64)
    except ValueError as e:
        print(f"error: {path}: refvbc cannot compute these inputs: {e}", file=sys.stderr)
        return 2
    rows = compare(arrays, ref, layout.outputs, rtol)
    width = max(len(r[0]) for r in rows)
    for row in rows:
        print(format_row(row, width), file=out)
    bad = [r for r in rows if not r[5]]
    if not bad:
        top = max(rows, key=lambda r: r[1])
        print(f"PASS: all {len(rows)} tensors agree within rtol {rtol:g} (largest: {top[0]} {top[1]:.2e})",
              file=out)
        return 0
    errs = [r[1] for r in rows]
    if dtype == np.float64 and np.median(errs) > 1e-9 and max(r[1] for r in bad) < 1e-2:
        print(f"note: errors around {np.median(errs):.0e} throughout look like float32 arithmetic stored as "
              f"float64; if so, add config/dtype = 'float32' or pass --rtol {RTOL[np.dtype(np.float32)]:g}",
              file=out)
    first = bad[0]
    where = f"step {step_of(first[0])}, " if layout.steps and step_of(first[0]) else ""
    print(f"FAIL: {len(bad)} of {len(rows)} tensors differ beyond rtol {rtol:g}; first disagreement: "
          f"{where}{first[0]} (rel {first[1]:.2e})", file=out)
    return 1
