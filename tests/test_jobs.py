"""refvbc/jobs.py: jobs side by side, dependencies, failures, single-threaded environment."""
import os
import sys

import pytest

from refvbc.jobs import run_jobs


def job(name, code, tmp, after=None):
    return (name, [sys.executable, "-c", code], str(tmp / f"{name}.log"), after)


def test_dependencies_and_env(tmp_path):
    order = tmp_path / "order"
    w = f"import os; open({str(order)!r}, 'a').write('%s ' + os.environ['NUMBA_NUM_THREADS'] + os.environ['REFVBC_THREADS'] + '\\n')"
    jobs = [job("a", w % "a", tmp_path), job("b", w % "b", tmp_path, after="a"),
            job("c", w % "c", tmp_path, after="a")]
    status = run_jobs(jobs, 2, log=lambda s: None, poll_s=0.05)
    assert status == {"a": 0, "b": 0, "c": 0}, status
    lines = order.read_text().split("\n")
    assert lines[0] == "a 11", lines  # single-threaded children
    assert sorted(lines[1:3]) == ["b 11", "c 11"], lines


def test_failure_skips_dependents(tmp_path):
    msgs = []
    jobs = [job("a", "import sys; print('boom'); sys.exit(3)", tmp_path),
            job("b", "pass", tmp_path, after="a"), job("c", "pass", tmp_path)]
    status = run_jobs(jobs, 1, log=msgs.append, poll_s=0.05)
    assert status == {"a": 3, "b": None, "c": 0}, status
    assert "boom" in (tmp_path / "a.log").read_text()
    assert any("b not started: a failed" in m for m in msgs), msgs


@pytest.mark.parametrize("jobs, workers, msg", [
    ([("a", ["true"], "x", None), ("a", ["true"], "y", None)], 1, "unique"),
    ([("a", ["true"], "x", "z")], 1, "unknown"),
    ([], 0, "at least one worker")])
def test_bad_job_lists(jobs, workers, msg):
    with pytest.raises(ValueError, match=msg):
        run_jobs(jobs, workers)


def test_child_argv_runs_an_invocation_file():
    from conftest import RUN_PY

    from refvbc.jobs import child_argv

    assert child_argv("out/branch-l2/invocation.json") == [sys.executable, RUN_PY, "--config",
                                                           "out/branch-l2/invocation.json"]
