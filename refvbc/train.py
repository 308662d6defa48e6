"""Training phases of the paper's Table 2 (l2, sws, vd, vdsws), epochs, logging, atomic checkpoints
and exact resume.

The phases (what each trains, where it starts, its coefficients) are the table in refvbc/phases.py;
docs/objective.md, "Phases", is its contract.

Reproducibility: the minibatch order and the noise of epoch e of phase p come from
numpy.random.default_rng([seed, p.id, e]), and every schedule (learning-rate decay, tau2 ramp) is a
function of the epoch, so a resumed run replays exactly what an uninterrupted run does. A checkpoint
(params, Adam state, position) is written atomically after every epoch; the previous one is kept
beside it (checkpoint.prev.npz) and used when the latest cannot be read. A run holds a lock on its
directory, so two runs cannot write into the same --out.

Shape legend: x (N, 784) float32 in [0, 1] (reshaped per arch by models.check_input); y (N,) int64.
"""

import fcntl
import hashlib
import json
import os
import time
from dataclasses import asdict

import numpy as np

from . import models, priors
from .arch import GAMMA_ALPHA, GAMMA_BETA, PI0, get_arch
# Config and the prune-mask helpers live in refvbc/config.py and refvbc/models.py; re-exported here for
# older callers (scripts, benchmarks, tests that import them from refvbc.train).
from .config import LEGACY_DEFAULTS, PHASE_SETTINGS, Config, setting_matters  # noqa: F401
from .data import batches
from .eta import Eta
from .fileio import atomic_savez, load_npz
from .models import prune_masks, pruned_fraction
from .objective import loss_and_grads
from .optim import Adam
from .phases import PHASES, lr_factor, method_phases, tau2_at

# Derived views of the phase table, for callers that want one attribute of every phase.
PHASE_IDS = {k: p.id for k, p in PHASES.items()}
METHOD_PHASES = {m: method_phases(m) for m in tuple(PHASES) + ("all",)}


def lineage(phase):
    """`phase` and the phases its model starts from, back to the first (vdsws -> [vdsws, vd, l2])."""
    out = [phase]
    while PHASES[out[-1]].start:
        out.append(PHASES[out[-1]].start)
    return out


def settings_diff(saved, cfg, phases, skip=("epochs",)):
    """(saved config completed, [keys]) of the settings read by `phases` in which the config `saved`
    (a dict, from a checkpoint or a phase model) differs from `cfg`, `skip` left out. A setting that an
    older file lacks was added later with its default, the value that run used (LEGACY_DEFAULTS where
    the default has changed since)."""
    saved = {**asdict(Config()), **LEGACY_DEFAULTS, **saved}
    mine = asdict(cfg)
    return saved, [k for k in mine if k not in skip and saved.get(k) != mine[k] and setting_matters(k, phases)]


class RunError(RuntimeError):
    """A run directory or checkpoint that cannot be used as asked."""


def save_params(path, arch, params, extra=None, phase=None):
    """Params file: `param/<name>` arrays, `config/arch` and `config/phase` (the compress CLI's
    input format)."""
    arrays = {f"param/{k}": v for k, v in params.items()}
    arrays["config/arch"] = np.array(arch)
    if phase is not None:
        arrays["config/phase"] = np.array(phase)
    if extra:
        arrays.update(extra)
    atomic_savez(path, **arrays)


def load_params(path, with_phase=False):
    """Inverse of save_params -> (arch, params), or (arch, params, phase or None)."""
    try:
        f = load_npz(path, "parameter file")
        arch = str(f["config/arch"])
    except (ValueError, KeyError) as e:
        raise RunError(f"cannot read parameter file {path}: {e}") from None
    params = {k[len("param/"):]: v for k, v in f.items() if k.startswith("param/")}
    try:
        get_arch(arch)
    except ValueError as e:
        raise RunError(f"parameter file {path}: {e}") from None
    if with_phase:
        return arch, params, (str(f["config/phase"]) if "config/phase" in f else None)
    return arch, params


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_init(cfg):
    """The phase models named by cfg.init_from: a directory holding `<phase>.npz` files, or one such
    file. Each is checked to belong to cfg.arch and to be a phase of cfg.method, and to carry the
    parameters of its phase (log sigma^2 for variational phases, gmm.* for mixture phases).
    Returns {phase: params}; records each file's SHA-256 in cfg.init_sha256 (compared on --resume)."""
    if cfg.init_from is None:
        return {}
    src = cfg.init_from
    if os.path.isdir(src):
        files = {ph: os.path.join(src, f"{ph}.npz") for ph in cfg.phases()
                 if os.path.isfile(os.path.join(src, f"{ph}.npz"))}
        if not files:
            raise RunError(f"--init-from {src}: no phase model ({', '.join(p + '.npz' for p in cfg.phases())}) "
                           "in that directory")
    elif os.path.isfile(src):
        files = {None: src}
    else:
        raise RunError(f"--init-from {src}: no such file or directory")
    out = {}
    for guess, path in files.items():
        arch, params, phase = load_params(path, with_phase=True)
        phase = phase or guess or os.path.splitext(os.path.basename(path))[0]
        if arch != cfg.arch:
            raise RunError(f"--init-from {path}: a {arch} model, but this run is --arch {cfg.arch}")
        if phase not in PHASES:
            raise RunError(f"--init-from {path}: cannot tell which phase it holds (name it <phase>.npz, "
                           f"one of {', '.join(PHASES)})")
        if phase not in cfg.phases():
            raise RunError(f"--init-from {path}: a {phase} model, but --method {cfg.method} trains "
                           f"{', '.join(cfg.phases())}")
        spec = PHASES[phase]
        want = [f"{l.name}.{s}" for l in get_arch(arch) for s in ("theta", "bias")]
        if spec.variational:
            want += [f"{l.name}.log_sigma2" for l in get_arch(arch)]
        if spec.mixture:
            want += ["gmm.mu", "gmm.log_lambda", "gmm.log_pi"]
        missing = [k for k in want if k not in params]
        if missing:
            raise RunError(f"--init-from {path}: a {phase} model must hold {', '.join(missing)}")
        _check_init_shapes(path, cfg, params)
        out[phase] = params
        cfg.init_sha256[phase] = file_sha256(path)
    return out


def _check_init_shapes(path, cfg, params):
    """Raise RunError unless the start model at `path` has cfg.arch's weight shapes and, when it holds a
    mixture, cfg.components components."""
    for l in get_arch(cfg.arch):
        got = np.shape(params[f"{l.name}.theta"])
        if got != tuple(l.weight_shape):
            raise RunError(f"--init-from {path}: {l.name}.theta has shape {got}, expected {l.weight_shape}")
    if "gmm.mu" in params and np.shape(params["gmm.mu"]) != (cfg.components,):
        raise RunError(f"--init-from {path}: a mixture of shape {np.shape(params['gmm.mu'])}, but this run "
                       f"is --components {cfg.components}")


def phases_to_train(cfg, provided):
    """The method's phases that must run, given the phase models `provided`: every phase the method
    reports (all of them for "all", else the method itself) and the phases those start from, minus
    the provided ones and what only provided phases start from."""
    targets = set(cfg.phases()) if cfg.method == "all" else {cfg.method}
    run = []
    for ph in reversed(cfg.phases()):
        if ph in provided:
            continue
        if ph in targets or any(PHASES[q].start == ph for q in run):
            run.insert(0, ph)
    return run


def phase_setup(cfg, phase, start_params):
    """Initial params, Adam learning rates and loss coefficients of `phase` (refvbc/phases.py)."""
    dtype = np.dtype(cfg.dtype)
    spec = PHASES[phase]
    coefs = dict(tau1=cfg.tau1 if spec.variational else 0.0, tau2=cfg.tau2 if spec.mixture else 0.0,
                 weight_decay=cfg.weight_decay if spec.weight_decay else 0.0)
    if spec.mixture:
        coefs.update(gamma_alpha=cfg.gamma_alpha,
                     gamma_beta=priors.gamma_rate(cfg.gamma_beta, cfg.gamma_param), pi0=cfg.pi0)
    if spec.variational and cfg.mask_pruned and spec.mixture:
        coefs["mask_pruned"] = True
    if spec.start is None:
        params = models.init_params(cfg.arch, np.random.default_rng([cfg.seed, 99]), dtype=dtype)
        return params, {g: cfg.lr_l2 for g in spec.groups}, coefs
    params = {k: np.array(v, dtype=dtype) for k, v in start_params.items() if not k.startswith("gmm.")}
    if spec.variational and not models.is_variational(params, cfg.arch):
        params = models.add_log_sigma2(params, cfg.arch, cfg.log_sigma2_init)
    if spec.mixture:
        w = models.mixture_init_weights(cfg.arch, params, cfg.delta_mu_over)
        mu, log_lambda, log_pi = priors.mixture_init(w, K=cfg.components, pi0=cfg.pi0, dtype=dtype)
        params.update({"gmm.mu": mu, "gmm.log_lambda": log_lambda, "gmm.log_pi": log_pi})
    return params, {g: cfg.lrs[g] for g in spec.groups}, coefs


def epoch_schedule(cfg, phase, epoch, lrs, coefs):
    """Learning rates and coefficients of one epoch: the phase's, with the optional learning-rate
    decay of the L2 phase, and the learning-rate decay and tau2 ramp of the mixture phases, applied
    (refvbc/phases.py)."""
    n = cfg.epochs[phase]
    if PHASES[phase].weight_decay:
        f = lr_factor(epoch, n, cfg.lr_l2_decay_from)
        return {g: v * f for g, v in lrs.items()}, coefs
    if not PHASES[phase].mixture:
        return lrs, coefs
    f = lr_factor(epoch, n, cfg.lr_decay_from)
    coefs = dict(coefs, tau2=tau2_at(epoch, n, cfg.tau2, cfg.tau2_final, cfg.tau2_ramp_from))
    return {g: v * f for g, v in lrs.items()}, coefs


class CpuStepper:
    """One optimisation step on the CPU: the spec's loss and gradients, then Adam, in place.

    The optional GPU path (refvbc.cuda_train.CudaStepper) has the same interface: constructed from
    the host params and optimizer, `step` runs on the device, `sync` copies parameters and Adam state
    back into the host dict / optimizer (before evaluation and checkpoints)."""

    def __init__(self, arch, params, opt, coefs, n_data):
        self.arch, self.params, self.opt, self.coefs, self.n_data = arch, params, opt, coefs, n_data
        self.ws = {}  # the layers' buffers, reused from step to step

    def step(self, x, y, noise):
        """Returns loss (float), parts (dict), logits (B, 10) of the minibatch before the update."""
        loss, parts, logits, grads = loss_and_grads(self.arch, self.params, x, y, noise,
                                                    n_data=self.n_data, ws=self.ws, **self.coefs)
        if np.isfinite(loss):
            self.opt.step(self.params, grads)
        return loss, parts, logits

    def sync(self):
        pass


def make_stepper(device, arch, params, opt, coefs, n_data):
    """CpuStepper, or the numba.cuda one for device "cuda"."""
    if device == "cuda":
        from .cuda_train import CudaStepper
        extra = {k: v for k, v in coefs.items() if k not in ("tau1", "tau2", "weight_decay")}
        if extra.pop("mask_pruned", False):
            raise RunError("--mask-pruned is not implemented on --device cuda")
        if extra and (extra.get("gamma_alpha") != GAMMA_ALPHA or extra.get("gamma_beta") != GAMMA_BETA):
            raise RunError("--device cuda uses the spec's Gamma hyper-prior (alpha 1e5, rate 10) only")
        if extra.get("pi0", PI0) != PI0:
            raise RunError(f"--device cuda uses the spec's pi0 = {PI0} only")
        from .kernels.cuda_prior import KMAX
        if "gmm.mu" in params and params["gmm.mu"].shape[0] > KMAX:
            raise RunError(f"--device cuda: the kernels hold at most {KMAX} mixture components, got "
                           f"{params['gmm.mu'].shape[0]}")
        return CudaStepper(arch, params, opt, {k: coefs[k] for k in ("tau1", "tau2", "weight_decay")},
                           n_data)
    if device != "cpu":
        raise ValueError(f"unknown device {device!r}; expected 'cpu' or 'cuda'")
    return CpuStepper(arch, params, opt, coefs, n_data)


def train_epoch(cfg, phase, epoch, stepper, x, y):
    """One pass over (x, y) in minibatches. Returns mean loss and parts, running train accuracy."""
    rng = np.random.default_rng([cfg.seed, PHASE_IDS[phase], epoch])
    variational = models.is_variational(stepper.params, cfg.arch)
    dtype = np.dtype(cfg.dtype)
    tot = {"loss": 0.0, "ce": 0.0, "kl": 0.0, "log_prior": 0.0, "l2": 0.0}
    correct = 0
    nb = 0
    noise_buf = {}  # one set of noise arrays, refilled every step
    for idx in batches(x.shape[0], cfg.batch_size, rng):
        xb, yb = x[idx], y[idx]
        noise = models.draw_noise(cfg.arch, len(idx), rng, dtype, out=noise_buf) if variational else None
        loss, parts, logits = stepper.step(xb, yb, noise)
        if not np.isfinite(loss):
            raise RunError(f"{phase} epoch {epoch + 1}: loss became {loss} (parts {parts})")
        tot["loss"] += loss
        for k, v in parts.items():
            tot[k] += v
        correct += int(np.sum(np.argmax(logits, axis=1) == yb))
        nb += 1
    stepper.sync()
    return {k: v / nb for k, v in tot.items()}, correct / x.shape[0]


def lock_dir(path):
    """An exclusive lock on run directory `path` for this process (released at exit, also on a
    kill): a second run on the same directory is refused with a RunError. Returns the open lock file
    (keep a reference to it for as long as the lock is needed)."""
    os.makedirs(path, exist_ok=True)
    f = open(os.path.join(path, "run.lock"), "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        who = f.read().strip() or "another process"
        f.close()
        raise RunError(f"{path} is in use by another run ({who}); wait for it to finish or "
                       "choose another --out") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}\n")
    f.flush()
    return f


class Run:
    """A training run in directory `out`: phases in order, checkpoint after each epoch, resume."""

    def __init__(self, cfg, out, data, log=print, device="cpu"):
        self.cfg, self.out, self.log, self.device = cfg, out, log, device
        self.x_train, self.y_train, self.x_test, self.y_test = data
        self.ckpt = os.path.join(out, "checkpoint.npz")
        self.ckpt_prev = os.path.join(out, "checkpoint.prev.npz")
        self._lock = None

    def phase_file(self, phase):
        return os.path.join(self.out, f"{phase}.npz")

    def lock(self):
        """Hold the run directory's lock for this process (`lock_dir`)."""
        self._lock = lock_dir(self.out)

    def _write_checkpoint(self, phase, epoch, params, opt, history):
        meta = {"config": asdict(self.cfg), "phase": phase, "epoch": epoch, "history": history}
        arrays = {f"param/{k}": v for k, v in params.items()}
        arrays.update(opt.state_dict())
        arrays["meta"] = np.array(json.dumps(meta))
        if os.path.exists(self.ckpt):
            os.replace(self.ckpt, self.ckpt_prev)  # the last good checkpoint stays beside the new one
        atomic_savez(self.ckpt, **arrays)

    def _load_checkpoint_file(self, path):
        f = load_npz(path, "checkpoint")
        meta = json.loads(str(f["meta"]))
        params = {k[6:]: v for k, v in f.items() if k.startswith("param/")}
        adam = {k: v for k, v in f.items() if k.startswith("adam.")}
        return meta, params, adam

    def _read_checkpoint(self):
        try:
            meta, params, adam = self._load_checkpoint_file(self.ckpt)
        except (ValueError, KeyError, OSError) as e:
            if not os.path.exists(self.ckpt_prev):
                raise RunError(f"checkpoint {self.ckpt} is unreadable ({e}) and there is no earlier "
                               "one to fall back to") from None
            try:
                meta, params, adam = self._load_checkpoint_file(self.ckpt_prev)
            except (ValueError, KeyError, OSError) as e2:
                raise RunError(f"checkpoint {self.ckpt} is unreadable ({e}), and so is the earlier "
                               f"{self.ckpt_prev} ({e2})") from None
            self.log(f"# checkpoint {self.ckpt} is unreadable ({e}); resuming from the previous one, "
                     f"{self.ckpt_prev} ({meta['phase']} after epoch {meta['epoch']})")
        mine = asdict(self.cfg)
        # Epoch counts may change on resume (to extend or shorten a run), except for the phase in
        # progress when it has already run more epochs than now asked for.
        saved, diff = settings_diff(meta["config"], self.cfg, self.cfg.phases())
        if diff:
            raise RunError("--resume with different settings than the checkpoint: " + ", ".join(
                f"{k}: checkpoint {saved.get(k)!r} vs now {mine[k]!r}" for k in diff))
        if meta["epoch"] > self.cfg.epochs.get(meta["phase"], 0):
            raise RunError(f"--resume: phase {meta['phase']} already ran {meta['epoch']} epochs, more "
                           f"than the {self.cfg.epochs.get(meta['phase'])} now asked for")
        if saved.get("epochs") != mine["epochs"]:
            self.log(f"# resume with epochs {mine['epochs']} (checkpoint had {saved.get('epochs')})")
        return meta, params, adam

    def plan(self, provided):
        """The phases this run trains, and a line that says so (printed at the start)."""
        todo = phases_to_train(self.cfg, provided)
        parts = [f"{ph} from file" for ph in self.cfg.phases() if ph in provided]
        parts += [f"{ph} {self.cfg.epochs[ph]} epochs"
                  + (f" (from {PHASES[ph].start})" if PHASES[ph].start else "") for ph in todo]
        return todo, "# plan: " + " -> ".join(parts)

    def run(self, resume=False, max_epochs=None):
        """Train every phase of the method. Returns {phase: final params} of finished phases, or
        None when `max_epochs` (epochs to run in this call) stopped the run early."""
        self.lock()
        provided = load_init(self.cfg)
        state = self._state_to_resume(resume)
        todo, plan = self.plan(provided)
        self.log(plan)
        finals = self._provided(provided)
        eta = Eta(self.cfg.arch, self.cfg.epochs, todo)
        budget = EpochBudget(max_epochs)
        for phase in todo:
            if self._finished_earlier(phase, state, finals):
                eta.done(phase)
                continue
            params = self._train_phase(phase, finals, state, eta, budget)
            if params is None:
                return None
            finals[phase] = params
            eta.done(phase)
            if state is not None and not state[0].get("carried"):
                state = None  # the checkpoint's phase is done: later phases start afresh
        return finals

    def _state_to_resume(self, resume):
        """The checkpoint to continue (meta, params, adam), or None for a fresh run; RunError when the
        directory holds a run and `resume` is False. On --resume without a checkpoint, the finished
        phase models in the directory (a run carried to another machine without its checkpoint) stand
        for one taken after the last of them (`_carried_state`)."""
        if os.path.exists(self.ckpt) or os.path.exists(self.ckpt_prev):
            if not resume:
                raise RunError(f"{self.out} already holds a run (checkpoint.npz); pass --resume to "
                               "continue it or choose another --out")
            return self._read_checkpoint()
        if resume:
            state = self._carried_state()
            if state is not None:
                return state
            self.log(f"# --resume: no checkpoint in {self.out}, starting from scratch")
        return None

    def _carried_state(self):
        """(meta, None, None) standing for a checkpoint taken at the end of the last phase (in training
        order) whose <phase>.npz is in the run directory, or None when there is none; every phase with
        its file there is then taken as finished (_finished_earlier). Each such file
        must record this run's settings (`config/json`, written by _save_phase) and its epochs;
        otherwise RunError names the difference."""
        done, order = None, self.cfg.phases()
        for phase in order:
            path = self.phase_file(phase)
            if phase in self.cfg.init_sha256 or not os.path.exists(path):
                continue  # given by --init-from, or not finished
            f = load_npz(path, "phase model")
            if "config/json" not in f:
                raise RunError(f"--resume: {path} does not record the settings it was made with (a file "
                               "from before they were recorded); move it away or pass it with --init-from")
            saved, diff = settings_diff(json.loads(str(f["config/json"])), self.cfg, lineage(phase),
                                        skip=("epochs", "init_sha256"))
            mine = asdict(self.cfg)
            if any(saved["epochs"].get(p) != self.cfg.epochs[p] for p in lineage(phase)):
                diff.append("epochs")
            if diff:
                raise RunError(f"--resume: {path} was made with other settings: " + ", ".join(
                    f"{k}: file {saved.get(k)!r} vs now {mine[k]!r}" for k in diff))
            done = phase
        if done is None:
            return None
        self.log(f"# --resume: no checkpoint in {self.out}; its phase models up to {done} are taken as finished")
        return {"phase": done, "epoch": self.cfg.epochs[done], "history": [], "carried": True}, None, None

    def _provided(self, provided):
        """The phase models given by --init-from as finals, each saved as <phase>.npz in the run
        directory (once)."""
        for ph, params in provided.items():
            if not os.path.exists(self.phase_file(ph)):
                save_params(self.phase_file(ph), self.cfg.arch, params, phase=ph)
        return dict(provided)

    def _finished_earlier(self, phase, state, finals):
        """On --resume, whether `phase` finished before the checkpoint (its <phase>.npz is read into
        `finals`; the phase the checkpoint is in the middle of is not finished)."""
        if state is None or not os.path.exists(self.phase_file(phase)):
            return False
        finals[phase] = load_params(self.phase_file(phase))[1]
        if state[0]["phase"] == phase and state[0]["epoch"] < self.cfg.epochs[phase]:
            return False
        self.log(f"# resumed: {phase} finished earlier ({self.phase_file(phase)})")
        return True

    def _phase_start(self, phase, finals, state):
        """Where `phase` starts: (params, optimizer, lrs, coefs, history, first epoch), from its start
        phase's final params, or from the checkpoint when it is the phase the checkpoint is in."""
        cfg = self.cfg
        start = finals.get(PHASES[phase].start) if PHASES[phase].start else None
        params, lrs, coefs = phase_setup(cfg, phase, start)
        opt = Adam(lrs)
        history, first = [], 0
        if state is not None and state[0]["phase"] == phase:
            meta, saved_params, adam = state
            params = {k: v.astype(np.dtype(cfg.dtype)) for k, v in saved_params.items()}
            opt.load_state_dict(adam)
            history, first = meta["history"], meta["epoch"]
            self.log(f"# resumed {phase} after epoch {first}")
        return params, opt, lrs, coefs, history, first

    def _train_phase(self, phase, finals, state, eta, budget):
        """Train `phase` to its last epoch (checkpoint after each), save <phase>.npz. Returns its final
        params, or None when the epoch budget ran out first."""
        params, opt, lrs, coefs, history, first = self._phase_start(phase, finals, state)
        eta.start(phase, history)
        steppers = Steppers(self.device, self.cfg, params, opt)
        for epoch in range(first, self.cfg.epochs[phase]):
            if budget.exhausted():
                self.log("# stopping after the requested number of epochs; continue with --resume")
                return None
            rec = self._epoch(phase, epoch, params, opt, lrs, coefs, steppers)
            history.append(rec)
            self.log(format_epoch(rec) + eta.after_epoch(phase, epoch + 1, rec["seconds"]))
            self._write_checkpoint(phase, epoch + 1, params, opt, history)
            budget.spend()
        self._save_phase(phase, params, history)
        return params

    def _epoch(self, phase, epoch, params, opt, lrs, coefs, steppers):
        """One epoch of `phase` (0-based `epoch`): the schedule's rates and coefficients, the training
        pass, the test accuracy with the pruning masks. Returns its log record."""
        cfg = self.cfg
        t0 = time.perf_counter()
        opt.lrs, ecoefs = epoch_schedule(cfg, phase, epoch, lrs, coefs)
        stepper = steppers.for_coefs(ecoefs)
        means, train_acc = train_epoch(cfg, phase, epoch, stepper, self.x_train, self.y_train)
        masks = prune_masks(cfg.arch, params)
        test_acc = models.accuracy(cfg.arch, params, self.x_test, self.y_test, masks)
        rec = dict(phase=phase, epoch=epoch + 1, **means, train_acc=train_acc, test_acc=test_acc,
                   pruned=pruned_fraction(masks), seconds=time.perf_counter() - t0)
        if ecoefs.get("tau2") != coefs.get("tau2"):
            rec["tau2"] = ecoefs["tau2"]
        return rec

    def _save_phase(self, phase, params, history):
        """<phase>.npz: the final params with the phase's epoch history (and pi0 for the compressor's
        argmax in mixture phases: python -m refvbc.compress)."""
        extra = {"history": np.array(json.dumps(history)), "config/json": np.array(json.dumps(asdict(self.cfg)))}
        if PHASES[phase].mixture:
            extra["config/pi0"] = np.array(self.cfg.pi0)
        save_params(self.phase_file(phase), self.cfg.arch, params, phase=phase, extra=extra)


class Steppers:
    """The stepper of a phase's epochs: made anew (after syncing the old one) whenever the epoch's
    loss coefficients differ from the last epoch's (a tau2 ramp), else reused."""

    def __init__(self, device, cfg, params, opt):
        self.device, self.cfg, self.params, self.opt = device, cfg, params, opt
        self.stepper, self.key = None, None

    def for_coefs(self, coefs):
        if self.stepper is None or self.key != coefs:
            if self.stepper is not None:
                self.stepper.sync()
            self.stepper = make_stepper(self.device, self.cfg.arch, self.params, self.opt, coefs,
                                        self.cfg.n_train)
            self.key = coefs
        return self.stepper


class EpochBudget:
    """The epochs this invocation may still train (--max-epochs; None: no limit)."""

    def __init__(self, epochs):
        self.left = epochs

    def exhausted(self):
        return self.left is not None and self.left <= 0

    def spend(self):
        if self.left is not None:
            self.left -= 1


def format_epoch(r):
    """One log line per epoch: phase, epoch, loss and its parts, accuracies, pruned fraction, time."""
    tau = f"  tau2 {r['tau2']:.4g}" if "tau2" in r else ""
    return (f"{r['phase']:>5} epoch {r['epoch']:4d}  loss {r['loss']:.5f}  ce {r['ce']:.5f}  "
            f"kl {r['kl']:.1f}  logprior {r['log_prior']:.1f}  train {100 * r['train_acc']:.2f}%  "
            f"test {100 * r['test_acc']:.2f}%  alpha>=19 {100 * r['pruned']:.2f}%  {r['seconds']:.1f}s{tau}")
