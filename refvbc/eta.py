"""The time-remaining estimate of the epoch log lines ("eta phase ..., run ..."), and its replay
against the epoch times of a recorded train.log.

Every epoch of phase p is expected to take cost(p) x scale, where cost(p) is the phase's relative
epoch cost for the arch (refvbc/phases.py, EPOCH_COST) and scale is the median, over the last WINDOW
epochs this process has seen (its own and those of a resumed phase), of observed seconds / cost(phase).
So the estimate uses each phase's own cost from the first epoch on (the L2 epochs of LeNet-300-100 are
~4x cheaper than the SWS ones); the median is not thrown by one slow epoch, and the window follows the
machine when its load changes (another run starting or ending beside this one) within a few epochs.

With --jobs N each branch is its own process and prints the ETA of its own branch (sws; vd -> vdsws);
the whole run ends when the longest branch does.

    python -m refvbc.eta docs/results/lenet300/train.log --arch lenet300

replays a log's epoch times (the phases in training order l2, sws, vd, vdsws) and prints the run ETA
against the actual remaining time after the first epoch and at every phase change.
"""

import argparse
import re
import sys
from dataclasses import dataclass

import numpy as np

from .phases import METHODS, epoch_cost

WINDOW = 10  # epochs whose observed / expected ratios set the scale
_EPOCH_LINE = re.compile(r"^\s*(\w+) epoch\s+(\d+)\s.*?\s(\d+(?:\.\d+)?)s(?:\s|$)")


class Eta:
    """Estimated time remaining of a run that trains the phases `todo` with `epochs` {phase: n}."""

    def __init__(self, arch, epochs, todo):
        self.todo = list(todo)
        self.epochs = {ph: epochs[ph] for ph in self.todo}
        self.cost = {ph: epoch_cost(arch, ph) for ph in self.todo}
        self.pos = {ph: 0 for ph in self.todo}
        self.ratios = []  # observed seconds / relative cost of every epoch seen

    def start(self, phase, history):
        """Phase `phase` starts (or resumes after the epochs of `history`, records with "seconds")."""
        self.pos[phase] = len(history)
        self.ratios += [r["seconds"] / self.cost[phase] for r in history]

    def done(self, phase):
        self.pos[phase] = self.epochs[phase]

    def record(self, phase, epoch, seconds):
        """Epoch `epoch` (1-based) of `phase` took `seconds`."""
        self.pos[phase] = epoch
        self.ratios.append(seconds / self.cost[phase])

    def remaining(self, phase):
        """(seconds left in `phase`, seconds left in the run); needs one recorded epoch."""
        scale = float(np.median(self.ratios[-WINDOW:]))
        left = {ph: max(self.epochs[ph] - self.pos[ph], 0) * self.cost[ph] * scale for ph in self.todo}
        return left[phase], sum(left.values())

    def after_epoch(self, phase, epoch, seconds):
        """Record one epoch; returns the text appended to its log line."""
        self.record(phase, epoch, seconds)
        ph, run = self.remaining(phase)
        return f"  eta phase {fmt_seconds(ph)}, run {fmt_seconds(run)}"


def fmt_seconds(s):
    return f"{s / 60:.1f} min" if s < 5400 else f"{s / 3600:.1f} h"


def epoch_seconds(path):
    """{phase: [seconds of epoch 1, 2, ...]} of the epoch lines of a train.log (the last line of an
    epoch logged twice counts)."""
    seen = {}
    with open(path) as f:
        for line in f:
            m = _EPOCH_LINE.match(line)
            if m and m.group(1) in METHODS:
                seen.setdefault(m.group(1), {})[int(m.group(2))] = float(m.group(3))
    return {ph: [by_epoch[e] for e in sorted(by_epoch)] for ph, by_epoch in seen.items()}


@dataclass
class ReplayPoint:
    """The run ETA printed after one epoch of a replay, and the time the log says was left."""
    when: str  # "l2 epoch 1", "end of l2", ...
    eta_s: float
    actual_s: float

    @property
    def ratio(self):
        return self.eta_s / self.actual_s


def replay(arch, seconds, order=METHODS):
    """Feed the epoch times `seconds` {phase: [s, ...]} through Eta, phases in `order`, as one run.

    Returns the ReplayPoints after the first epoch, after the last epoch of every phase but the last
    (a phase change) and after the first epoch of every later phase."""
    todo = [ph for ph in order if seconds.get(ph)]
    seq = [(ph, i + 1, s) for ph in todo for i, s in enumerate(seconds[ph])]
    eta = Eta(arch, {ph: len(seconds[ph]) for ph in todo}, todo)
    left = sum(s for _, _, s in seq)
    points = []
    for k, (ph, epoch, s) in enumerate(seq):
        if epoch == 1:
            eta.start(ph, [])
        eta.record(ph, epoch, s)
        left -= s
        last = epoch == len(seconds[ph])
        if (epoch == 1 or last) and k + 1 < len(seq):
            when = f"end of {ph}" if last else f"{ph} epoch 1"
            points.append(ReplayPoint(when, eta.remaining(ph)[1], left))
    return points


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m refvbc.eta", allow_abbrev=False,
                                description="Replay a train.log's epoch times through the ETA.")
    p.add_argument("log", help="a train.log of run_experiments.py")
    p.add_argument("--arch", required=True, choices=sorted(("lenet300", "lenet5")),
                   help="whose relative phase costs to use (refvbc/phases.py EPOCH_COST)")
    a = p.parse_args(argv)
    try:
        seconds = epoch_seconds(a.log)
    except OSError as e:
        p.error(f"cannot read {a.log}: {e.strerror or e}")
    if not seconds:
        p.error(f"{a.log} holds no epoch lines")
    print(f"# {a.log}: " + ", ".join(f"{ph} {len(seconds[ph])} epochs" for ph in METHODS if ph in seconds))
    print(f"{'after':16s} {'ETA':>10s} {'actual':>10s} {'ETA/actual':>10s}")
    for pt in replay(a.arch, seconds):
        print(f"{pt.when:16s} {fmt_seconds(pt.eta_s):>10s} {fmt_seconds(pt.actual_s):>10s} {pt.ratio:10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
