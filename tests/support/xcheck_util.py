"""Helpers shared by the cross-check tests: refvbc's exported files, built once per process for every
test module; write a file the way a user would (np.savez) and run the real
`python -m refvbc.crosscheck verify` entry point on it in-process."""

import contextlib
import functools
import inspect
import io
import subprocess
import sys
from unittest import mock

import numpy as np

from refvbc import crosscheck
from refvbc.crosscheck import export
from refvbc.data import load_mnist

CASES = [(a, t) for a in ("lenet300", "lenet5") for t in (0.0, 0.02)]
CASE_IDS = [f"{a}-tau2={t}" for a, t in CASES]
# the same cases without and with the loss's mask_pruned option (config/mask_pruned = 1)
ALL_CASES = [(a, t, m) for a, t in CASES for m in (False, True)]
ALL_IDS = [f"{a}-tau2={t}" + "-mask" * m for a, t, m in ALL_CASES]
MASK_CASES = [(a, t) for a, t, m in ALL_CASES if m]
SEED = 1234
BATCH = 4
STEPS = 5


_BUILT = {}


@functools.lru_cache(maxsize=None)
def _mnist(split):
    return load_mnist(split)  # checksummed and decompressed once (tests/test_data.py tests the loader)


def _once(fn, arch, tau2, batch, seed, kw):
    def norm(k, v):
        return np.dtype(v).name if k == "dtype" else v

    defaults = {k: norm(k, p.default) for k, p in inspect.signature(fn).parameters.items()}
    given = {k: norm(k, v) for k, v in kw.items()}
    given = {k: v for k, v in given.items() if not (k in defaults and v == defaults[k])}  # one key per file
    key = (fn.__name__, arch, float(tau2), batch, seed, tuple(sorted(given.items())))
    if key not in _BUILT:
        with mock.patch.object(export, "load_mnist", _mnist):
            _BUILT[key] = fn(arch, tau2, batch, seed, **kw)
    return dict(_BUILT[key])  # a new dict (tests add, drop and replace keys); arrays are shared: copy to edit


def build(arch, tau2, batch=BATCH, seed=SEED, **kw):
    """crosscheck.build(arch, tau2, batch, seed, **kw), computed once per process."""
    return _once(crosscheck.build, arch, tau2, batch, seed, kw)


def inputs(arch, tau2, batch=BATCH, seed=SEED, **kw):
    """crosscheck.inputs(arch, tau2, batch, seed, **kw) (the input keys only), computed once per process."""
    return _once(crosscheck.inputs, arch, tau2, batch, seed, kw)


def run_verify(arrays, path, *args):
    """np.savez(path, **arrays), then main(["verify", path, *args]).
    Returns (exit code, stdout, stderr)."""
    np.savez(path, **arrays)
    return run_verify_path(path, *args)


def run_verify_path(path, *args, runner="in-process"):
    return run_command(["verify", str(path), *args], runner)


def run_command(args, runner="in-process"):
    """`python -m refvbc.crosscheck ARGS`: runner "in-process" calls crosscheck.main(ARGS) here with
    stdout and stderr captured; "subprocess" runs the real command line in a child process.
    Returns (exit code, stdout, stderr)."""
    args = [str(a) for a in args]
    if runner == "subprocess":
        proc = subprocess.run([sys.executable, "-m", "refvbc.crosscheck"] + args, capture_output=True, text=True,
                              timeout=300)
        return proc.returncode, proc.stdout, proc.stderr
    assert runner == "in-process", f"unknown runner {runner!r}"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = crosscheck.main(args)
    return code, out.getvalue(), err.getvalue()


def tensor_errors(stdout):
    """{key: relative error} from verify's per-tensor lines."""
    errs = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[1] == "rel":
            errs[parts[0]] = float(parts[2])
    return errs


def assert_passes(code, out, err, rtol, what):
    errs = tensor_errors(out)
    worst = max(errs.items(), key=lambda kv: kv[1]) if errs else None
    assert code == 0 and "PASS" in out, \
        f"{what}: expected verify to pass at rtol {rtol} (exit 0), got exit {code}; worst {worst}\n{err}" + \
        "\n".join(line for line in out.splitlines() if "DIFFERS" in line or "FAIL" in line)
    assert worst[1] <= rtol, f"{what}: expected every tensor <= {rtol}, worst {worst}"
    return worst


def perturb_largest(arrays, key, rel=1e-4):
    """Copy of `arrays` with the largest-magnitude entry of `key` multiplied by (1 + rel)."""
    out = dict(arrays)
    a = np.array(arrays[key], copy=True)
    i = np.unravel_index(int(np.argmax(np.abs(a))), a.shape)
    a[i] = a[i] * (1.0 + rel)
    out[key] = a
    return out
