"""The one table of training phases (paper §4 and appendix A; docs/objective.md, "Phases") and the
per-epoch schedules of the mixture phases.

Every module that needs to know what a phase is (training, reporting, compression, the benchmark,
the tests) reads `PHASES`; nothing else declares coefficients, groups or start phases.

    phase  id  label   starts from  variational  KL_VD (tau1)  mixture (tau2)  weight decay  Adam groups
    l2     0   L2      (fresh init) no           no            no              yes           theta, bias (lr_l2)
    sws    1   SWS     l2           no           no            yes             no            theta, bias, mu, log_lambda, log_pi
    vd     2   VD      l2           yes          yes           no              no            theta, bias, log_sigma2
    vdsws  3   VD+SWS  vd           yes          yes           yes             no            all six

The id is part of the per-epoch random stream default_rng([seed, id, epoch]); never renumber.

EPOCH_COST holds, per arch, each phase's measured time per epoch; only the ratios between phases are
used (refvbc/eta.py: the time-remaining estimate of the epoch log lines).
"""

from dataclasses import dataclass

MIXTURE_GROUPS = ("mu", "log_lambda", "log_pi")


@dataclass(frozen=True)
class Phase:
    """One row of the phase table (see the module docstring)."""
    id: int
    name: str
    label: str
    start: object  # name of the phase whose final parameters this one starts from, or None
    variational: bool  # log sigma^2 trained, noise drawn, KL_VD with tau1
    mixture: bool  # mixture prior with tau2, gmm.* parameters trained
    weight_decay: bool  # the L2 baseline's weight decay

    @property
    def groups(self):
        """Adam parameter groups trained in this phase (paper Table 3)."""
        g = ("theta", "bias")
        if self.variational:
            g += ("log_sigma2",)
        if self.mixture:
            g += MIXTURE_GROUPS
        return g


PHASES = {p.name: p for p in (
    Phase(0, "l2", "L2", None, variational=False, mixture=False, weight_decay=True),
    Phase(1, "sws", "SWS", "l2", variational=False, mixture=True, weight_decay=False),
    Phase(2, "vd", "VD", "l2", variational=True, mixture=False, weight_decay=False),
    Phase(3, "vdsws", "VD+SWS", "vd", variational=True, mixture=True, weight_decay=False),
)}
METHODS = tuple(PHASES)  # the Table 2 rows, in the paper's order of training

# Seconds per epoch of each phase (full MNIST, batch 100, float32), used as relative costs: the ETA
# expects an epoch of phase p to take cost(p) times the median observed/cost ratio of the epochs seen so
# far (refvbc/eta.py).
#   lenet300  the medians of the epoch lines of docs/results/lenet300/seeds/seed2/train.log: the README's
#             command, one process on 2 otherwise idle cores, the whole default schedule in 33.3 minutes
#             of epochs (100 x 1.9 + 100 x 6.0 + 200 x 2.5 + 100 x 7.0 s). The per-epoch step benchmarks
#             (docs/bench_step.json: 1.6, 6.3, 2.4, 7.7 s) leave out each epoch's test evaluation and
#             checkpoint, which weigh most on the short L2 epochs: with them the ETA after the first
#             epoch of that run was 1.27x the time left, with these 1.05x (python -m refvbc.eta LOG).
#   lenet5    the medians of the "seconds" of docs/results/lenet5/train.log's epoch lines (three branch
#             processes on 2 cores; vdsws over both of its VD+SWS runs).
EPOCH_COST = {
    "lenet300": {"l2": 1.9, "sws": 6.0, "vd": 2.5, "vdsws": 7.0},
    "lenet5": {"l2": 29.5, "sws": 38.45, "vd": 44.25, "vdsws": 39.5},
}


def epoch_cost(arch, phase):
    """Relative cost of one epoch of `phase` for `arch` (EPOCH_COST; 1.0 for an arch not measured)."""
    return EPOCH_COST.get(arch, {}).get(phase, 1.0)


def method_phases(method):
    """Phases that `method` trains, in order: its chain of start phases, then itself; "all" trains
    every phase (l2, sws, vd, vdsws)."""
    if method == "all":
        return list(METHODS)
    if method not in PHASES:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS + ('all',)}")
    chain = [method]
    while PHASES[chain[0]].start is not None:
        chain.insert(0, PHASES[chain[0]].start)
    return chain


# ----------------------------------------------------------------------------------------------
# Per-epoch schedules of the mixture phases (options beyond the paper's text; docs/objective.md,
# "Interpretation choices"). Both are functions of the epoch alone, so --resume replays them exactly.


def ramp_factor(epoch, n_epochs, start_frac):
    """0 before epoch round(start_frac * n_epochs), then rising linearly to 1 at the last epoch.

    epoch is 0-based; returns a float in [0, 1]; start_frac None -> always 0."""
    if start_frac is None or n_epochs <= 0:
        return 0.0
    first = int(round(start_frac * n_epochs))
    if epoch < first:
        return 0.0
    return (epoch - first + 1) / max(n_epochs - first, 1)


def lr_factor(epoch, n_epochs, decay_from):
    """Adam rate multiplier: 1, then decaying linearly towards 0 over the epochs from
    round(decay_from * n_epochs) on (Molchanov et al.'s code decays over the second half);
    the last epoch runs at 1 / (number of decay epochs)."""
    r = ramp_factor(epoch, n_epochs, decay_from)
    if r == 0.0:
        return 1.0
    first = int(round(decay_from * n_epochs))
    return 1.0 - (epoch - first) / max(n_epochs - first, 1)


def tau2_at(epoch, n_epochs, tau2, tau2_final, ramp_from):
    """tau2 of an epoch: `tau2`, raised linearly to `tau2_final` over the epochs from
    round(ramp_from * n_epochs) on (tau2_final None: constant)."""
    if tau2_final is None:
        return tau2
    return tau2 + (tau2_final - tau2) * ramp_factor(epoch, n_epochs, ramp_from)
