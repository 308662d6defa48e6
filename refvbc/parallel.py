"""The CPU step's threads: one pool, one parallel layer per operation.

Policy
- BLAS runs single-threaded. numpy's OpenBLAS is set to one thread through its exported
  ``*openblas_set_num_threads*`` symbol (found with ctypes among the libraries loaded in this process);
  when that fails (another BLAS, no symbol) nothing happens and a note is kept in ``BLAS_NOTE``.
  OpenBLAS's own workers spin for a while after every GEMM; on a 2-core machine they steal the core
  that the next numba kernel needs, and that collapse (measured 20x under load) is what this avoids.
- Numba's parallel kernels use the ``workqueue`` threading layer (its idle workers sleep on a
  condition variable; GNU OpenMP's spin), unless NUMBA_THREADING_LAYER is set by the user.
- The GEMM-heavy layers split their work into a fixed number of parts (a function of the shapes only,
  never of the thread count) and hand the parts to ``run_parts``, which runs them on this module's
  thread pool (np.dot and the numba kernels called there release the GIL; the kernels called inside a
  part are the serial twins). Reductions over parts are summed by the caller in part order, so results
  do not depend on the number of threads or on which thread ran which part.
- Never two pools busy at once: numba's parallel kernels run on the main thread while this pool is idle
  (its workers block on a queue), and the parts never call numba's parallel kernels.

Threads: ``REFVBC_THREADS`` (default: the CPUs this process may run on). numba's own thread count is
left as numba sets it (NUMBA_NUM_THREADS).

Shape legend: none (no arrays of its own; parts are callables).
"""

import ctypes
import os
import itertools
import threading
from concurrent.futures import ThreadPoolExecutor

import numba

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"


def _default_threads():
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, n)


def _env_threads():
    v = os.environ.get("REFVBC_THREADS", "").strip()
    if not v:
        return _default_threads()
    try:
        return max(1, int(v))
    except ValueError:
        raise ValueError(f"REFVBC_THREADS must be a positive integer, got {v!r}") from None


N_THREADS = _env_threads()
BLAS_NOTE = ""


def _loaded_blas_libs():
    """Paths of the OpenBLAS libraries mapped into this process (Linux /proc/self/maps)."""
    paths = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                p = line.split()[-1]
                if "openblas" in os.path.basename(p).lower() and p not in paths:
                    paths.append(p)
    except OSError:
        pass
    return paths


def set_blas_threads(n):
    """Set every loaded OpenBLAS to n threads; returns the number of libraries set (0 if none)."""
    global BLAS_NOTE
    import numpy as np  # noqa: F401  (loads numpy's OpenBLAS)
    done = 0
    for path in _loaded_blas_libs():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for sym in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                    "openblas_set_num_threads64_", "openblas_set_num_threads"):
            fn = getattr(lib, sym, None)
            if fn is not None:
                fn.argtypes = [ctypes.c_int]
                fn(int(n))
                done += 1
                break
    BLAS_NOTE = f"BLAS threads set to {n} in {done} OpenBLAS librar{'y' if done == 1 else 'ies'}" if done \
        else "no OpenBLAS found: BLAS threads left as they are"
    return done


set_blas_threads(1)

_pool = None
_pool_lock = threading.Lock()


def _forget_pool_after_fork():
    """A forked child has none of the parent's pool threads: start a fresh pool when it needs one."""
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _get_pool():
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=N_THREADS - 1, thread_name_prefix="refvbc")
    return _pool


def run_parts(fn, n_parts):
    """Run fn(0), ..., fn(n_parts - 1) on N_THREADS threads (the caller's thread takes parts too; each
    thread takes the next unclaimed part, so a thread slowed by another process takes fewer); returns
    the results in part order. An exception of a part is re-raised here."""
    if n_parts <= 1 or N_THREADS <= 1 or threading.current_thread().name.startswith("refvbc"):
        return [fn(i) for i in range(n_parts)]
    results = [None] * n_parts
    counter = itertools.count()  # next() is atomic under the GIL

    def worker():
        while True:
            i = next(counter)
            if i >= n_parts:
                return
            results[i] = fn(i)

    pool = _get_pool()
    futs = [pool.submit(worker) for _ in range(min(N_THREADS, n_parts) - 1)]
    try:
        worker()
    finally:
        for f in futs:
            f.result()
    return results


def split(n, n_parts):
    """Boundaries of n items cut into n_parts nearly equal runs: list of (start, stop)."""
    n_parts = max(1, min(n_parts, n))
    q, r = divmod(n, n_parts)
    out, s = [], 0
    for i in range(n_parts):
        e = s + q + (1 if i < r else 0)
        out.append((s, e))
        s = e
    return out


def keep_freed_memory():
    """glibc only: serve large allocations from the heap and do not give freed memory back to the OS
    (mallopt M_MMAP_THRESHOLD and M_TRIM_THRESHOLD = 1 GiB), so the step's large temporaries are not
    page-faulted in afresh every step (measured ~5% of the LeNet-5 VD step). A process-wide setting:
    training processes call it (run_experiments.py, and benchmarks/bench_step.py to time the step as
    training runs it), the library never does on import. Returns
    True when both settings took, False elsewhere (another libc: nothing changes)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        return False
