"""Independent training processes side by side: `--jobs N` of run_experiments.py, the ablation and
sweep drivers. Each job is a separate single-threaded process (REFVBC_THREADS=1,
OPENBLAS_NUM_THREADS=1, NUMBA_NUM_THREADS=1), so N jobs use N cores without two thread pools fighting over them.

A job is (name, argv, log path, depends-on name or None); a job starts when a worker is free and the
job it depends on has finished with exit status 0. A job whose dependency failed is not started.

A training job of run_experiments.py gets its settings as an invocation file (refvbc/config.py,
Invocation.write): `child_argv(path)` is `python run_experiments.py --config path`.
"""

import os
import subprocess
import sys
import time

RUN_PY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "run_experiments.py")
SINGLE_THREAD_ENV = {"REFVBC_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1",
                     "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_jobs(jobs, n_workers, log=print, poll_s=1.0):
    """Run `jobs` [(name, argv, log_path, after)] with at most `n_workers` at once.

    Returns {name: exit status} (None for a job not started because its dependency failed)."""
    if n_workers < 1:
        raise ValueError(f"need at least one worker, got {n_workers}")
    names = [j[0] for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"job names must be unique, got {names}")
    unknown = [j[3] for j in jobs if j[3] is not None and j[3] not in names]
    if unknown:
        raise ValueError(f"jobs depend on unknown jobs {unknown}")
    env = dict(os.environ, **SINGLE_THREAD_ENV)
    pending = list(jobs)
    running = {}
    status = {}
    while pending or running:
        for name, (proc, fh) in list(running.items()):
            rc = proc.poll()
            if rc is not None:
                fh.close()
                status[name] = rc
                del running[name]
                log(f"# job {name} finished with exit status {rc}")
        for job in list(pending):
            name, argv, log_path, after = job
            if after is not None and after not in status:
                continue  # its dependency has not finished yet
            if after is not None and status[after] != 0:
                pending.remove(job)
                status[name] = None
                log(f"# job {name} not started: {after} failed")
                continue
            if len(running) >= n_workers:
                break
            pending.remove(job)
            os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
            fh = open(log_path, "a")
            running[name] = (subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env), fh)
            log(f"# job {name} started (log {log_path})")
        if running:
            time.sleep(poll_s)
    return status


def python_argv(*args):
    """argv running this Python interpreter."""
    return [sys.executable] + [str(a) for a in args]


def child_argv(invocation_path):
    """argv of a run_experiments.py process that runs the invocation file `invocation_path`."""
    return python_argv(RUN_PY, "--config", invocation_path)
