"""Shared helpers of the benchmark tools (bench_step.py, bench_kernels.py): timing, load average, machine
facts, JSON writing, the thread environment and the argument parser they all use.

Imports only the standard library, so that a tool can set the thread environment (set_thread_env) after
importing this module and before numpy's BLAS, numba or refvbc are loaded.

Shape legend: none (timings are lists of floats, seconds; BATCH is the training batch, 100).
"""

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 100  # the training batch of every benchmark


def add_repo_to_path():
    """Put the repository first on sys.path, so that `python benchmarks/TOOL.py` imports this checkout's
    refvbc without an install."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)


def set_thread_env(threads):
    """REFVBC_THREADS and NUMBA_NUM_THREADS = threads (nothing when None). Must run before refvbc or
    numba is imported: both read them once, at import."""
    if threads is not None:
        for var in ("REFVBC_THREADS", "NUMBA_NUM_THREADS"):
            os.environ[var] = str(threads)


def make_parser(description):
    """An ArgumentParser of a benchmark tool: no abbreviated flags (allow_abbrev=False)."""
    return argparse.ArgumentParser(description=description, allow_abbrev=False)


# ----------------------------------------------------------------------------------------------------
# timing


def time_steps(step, n, cpu=None):
    """Call step() n times.

    Inputs:  step, a callable; n, calls; cpu, a list that receives each call's process CPU seconds
             (all threads) when given.
    Returns: wall seconds of each call [n].
    """
    ts = []
    for _ in range(n):
        c0 = time.process_time()
        t0 = time.perf_counter()
        step()
        ts.append(time.perf_counter() - t0)
        if cpu is not None:
            cpu.append(time.process_time() - c0)
    return ts


# ----------------------------------------------------------------------------------------------------
# machine facts


def load_average():
    """The 1, 5 and 15-minute load averages as one string ("n/a" where the OS has none)."""
    try:
        return "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "n/a"


def load_list():
    """The 1, 5 and 15-minute load averages rounded to 0.01, or None where the OS has none."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# ----------------------------------------------------------------------------------------------------
# output


def write_json(path, records):
    """Write the records (a list of dicts) to path as JSON, indent 1; nothing when path is None."""
    if path:
        with open(path, "w") as f:
            json.dump(records, f, indent=1)
