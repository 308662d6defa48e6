"""Where a result came from: the code's commit and the exact command, recorded in every results.json
(and tradeoff.json) so that a committed number can be traced to what made it and made again."""

import os
import shlex
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def git_commit(repo=REPO):
    """(commit hash, dirty) of the checkout holding this package; (None, None) outside a git checkout
    or without git. `dirty` is True when tracked files under refvbc/ differ from the commit (the code
    that ran is then not exactly the commit's)."""
    try:
        head = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None, None
        diff = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no", "--",
                               "refvbc", "run_experiments.py"], capture_output=True, text=True, timeout=10)
        return head.stdout.strip(), bool(diff.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def command_line(argv, program="run_experiments.py"):
    """The shell command that ran: `python <program> <argv...>`, quoted so it can be pasted."""
    return shlex.join(["python", program, *[str(a) for a in argv]])


def record(argv, program="run_experiments.py"):
    """{"commit", "code_dirty", "command"} for results.json."""
    commit, dirty = git_commit()
    return {"commit": commit, "code_dirty": dirty, "command": command_line(argv, program)}
