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
from dataclasses import asdict, dataclass, field

import numpy as np

from . import models, priors
from .arch import GAMMA_ALPHA, GAMMA_BETA, PI0, get_arch
from .data import batches
from .fileio import atomic_savez, load_npz
from .objective import loss_and_grads
from .optim import TABLE3_LR, Adam
from .phases import PHASES, lr_factor, method_phases, tau2_at

# Derived views of the phase table, for callers that want one attribute of every phase.
PHASE_IDS = {k: p.id for k, p in PHASES.items()}
METHOD_PHASES = {m: method_phases(m) for m in tuple(PHASES) + ("all",)}


@dataclass
class Config:
    """Everything that determines a run; stored in the checkpoint and compared on --resume.

    The fields after `dtype` are the interpretation choices the paper leaves open
    (docs/objective.md, "Interpretation choices"; measured in docs/ablations.md)."""
    arch: str = "lenet300"
    method: str = "all"
    seed: int = 0
    batch_size: int = 100
    epochs: dict = field(default_factory=lambda: {"l2": 30, "sws": 100, "vd": 200, "vdsws": 100})
    lrs: dict = field(default_factory=lambda: dict(TABLE3_LR))
    lr_l2: float = 1e-3
    weight_decay: float = 5e-4
    lr_l2_decay_from: object = None  # l2 phase: its Adam rate decays linearly to 0 from this fraction on
    tau1: float = 1.0
    tau2: float = 0.02
    log_sigma2_init: float = -10.0
    n_train: int = 60000  # a subset (first n of a seeded permutation) for --quick
    n_test: int = 10000
    dtype: str = "float32"
    gamma_alpha: float = GAMMA_ALPHA
    gamma_beta: float = GAMMA_BETA
    gamma_param: str = "rate"  # beta read as a rate (mode (alpha-1)/beta) or a scale (priors.gamma_rate)
    pi0: float = PI0  # mixture phases: the zero component's fixed mixing proportion
    lr_decay_from: object = None  # mixture phases: Adam rates decay linearly to 0 from this fraction on
    tau2_final: object = None  # mixture phases: tau2 raised linearly to this value ...
    tau2_ramp_from: float = 0.5  # ... over the epochs from this fraction of the phase on
    mask_pruned: bool = False  # vdsws: weights with alpha >= 19 are zero in the training forward pass
    delta_mu_over: str = "survivors"  # mixture init: Table 3's std(w) over VD's survivors or all weights
    init_from: object = None  # phase model(s) the run starts from (see load_init)
    init_sha256: dict = field(default_factory=dict)

    def phases(self):
        return method_phases(self.method)


# settings whose default changed after checkpoints without them were written: the value those runs used
LEGACY_DEFAULTS = {"delta_mu_over": "all"}
# settings that only some phases read: a difference in one of them matters only to a run that trains one
# of those phases (--resume, sweep points). Δμ's reading: from the deterministic l2 model (SWS) both are one
PHASE_SETTINGS = {"delta_mu_over": ("vdsws",), "lr_l2": ("l2",), "weight_decay": ("l2",),
                  "lr_l2_decay_from": ("l2",)}


def setting_matters(key, phases):
    """Whether setting `key` is read by any of `phases` (every setting not in PHASE_SETTINGS is)."""
    return key not in PHASE_SETTINGS or not set(phases).isdisjoint(PHASE_SETTINGS[key])


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


def _sha256(path):
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
        for l in get_arch(arch):
            got = np.shape(params[f"{l.name}.theta"])
            if got != tuple(l.weight_shape):
                raise RunError(f"--init-from {path}: {l.name}.theta has shape {got}, "
                               f"expected {l.weight_shape}")
        out[phase] = params
        cfg.init_sha256[phase] = _sha256(path)
    return out


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
        mu, log_lambda, log_pi = priors.mixture_init(init_weights(cfg, params), pi0=cfg.pi0, dtype=dtype)
        params.update({"gmm.mu": mu, "gmm.log_lambda": log_lambda, "gmm.log_pi": log_pi})
    return params, {g: cfg.lrs[g] for g in spec.groups}, coefs


def init_weights(cfg, params):
    """The weights w whose std sets the mixture's spacing (Table 3: delta_mu = 2 std(w) / K), flat:
    only those that survive the pruning rule (priors.keep_mask) when the start model is variational and
    cfg.delta_mu_over == "survivors" (the default), or every weight of the start model ("all")
    (docs/objective.md, "Interpretation choices", item 9; a deterministic start model has no pruned
    weights, so both readings agree there)."""
    if cfg.delta_mu_over not in ("all", "survivors"):
        raise ValueError(f"delta_mu_over must be 'all' or 'survivors', got {cfg.delta_mu_over!r}")
    flat = np.concatenate([params[k].ravel() for k in models.weight_keys(cfg.arch)])
    masks = prune_masks(cfg.arch, params) if cfg.delta_mu_over == "survivors" else None
    if masks is None:  # "all", or a deterministic start model
        return flat
    keep = np.concatenate([masks[l.name].ravel() for l in get_arch(cfg.arch)])
    if not keep.any():
        raise ValueError("delta_mu_over='survivors': no weight of the start model survives the pruning rule")
    return flat[keep]


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


def prune_masks(arch, params):
    """Keep-masks {layer: bool} of the one pruning rule (priors.keep_mask); None if deterministic."""
    if not models.is_variational(params, arch):
        return None
    return {l.name: priors.keep_mask(params[f"{l.name}.theta"], params[f"{l.name}.log_sigma2"])
            for l in get_arch(arch)}


def pruned_fraction(masks):
    """Fraction of weights that `prune_masks` prunes (0.0 for a deterministic model, masks None)."""
    if masks is None:
        return 0.0
    kept = sum(int(m.sum()) for m in masks.values())
    return 1.0 - kept / sum(m.size for m in masks.values())


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
        saved = meta["config"]
        mine = asdict(self.cfg)
        # A setting that an older checkpoint lacks was added later with its default, the value that
        # run used. Epoch counts may change on resume (to extend or shorten a run), except for the
        # phase in progress when it has already run more epochs than now asked for.
        saved = {**asdict(Config()), **LEGACY_DEFAULTS, **saved}
        diff = [k for k in mine if k != "epochs" and saved.get(k) != mine[k]
                and setting_matters(k, self.cfg.phases())]
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
        cfg = self.cfg
        self.lock()
        provided = load_init(cfg)
        state = None
        if os.path.exists(self.ckpt) or os.path.exists(self.ckpt_prev):
            if not resume:
                raise RunError(f"{self.out} already holds a run (checkpoint.npz); pass --resume to "
                               "continue it or choose another --out")
            state = self._read_checkpoint()
        elif resume:
            self.log(f"# --resume: no checkpoint in {self.out}, starting from scratch")
        todo, plan = self.plan(provided)
        self.log(plan)
        finals = {}
        for ph, params in provided.items():
            finals[ph] = params
            if not os.path.exists(self.phase_file(ph)):
                save_params(self.phase_file(ph), cfg.arch, params, phase=ph)
        eta = Eta(cfg, todo)
        budget = max_epochs
        for phase in todo:
            if os.path.exists(self.phase_file(phase)) and state is not None:
                finals[phase] = load_params(self.phase_file(phase))[1]
                if not (state[0]["phase"] == phase and state[0]["epoch"] < cfg.epochs[phase]):
                    self.log(f"# resumed: {phase} finished earlier ({self.phase_file(phase)})")
                    eta.done(phase)
                    continue
            start = finals.get(PHASES[phase].start) if PHASES[phase].start else None
            params, lrs, coefs = phase_setup(cfg, phase, start)
            opt = Adam(lrs)
            history = []
            first = 0
            if state is not None and state[0]["phase"] == phase:
                meta, saved_params, adam = state
                params = {k: v.astype(np.dtype(cfg.dtype)) for k, v in saved_params.items()}
                opt.load_state_dict(adam)
                history, first = meta["history"], meta["epoch"]
                self.log(f"# resumed {phase} after epoch {first}")
            eta.start(phase, history)
            stepper, stepper_key = None, None
            for epoch in range(first, cfg.epochs[phase]):
                if budget is not None and budget <= 0:
                    self.log("# stopping after the requested number of epochs; continue with --resume")
                    return None
                t0 = time.perf_counter()
                opt.lrs, ecoefs = epoch_schedule(cfg, phase, epoch, lrs, coefs)
                if stepper is None or stepper_key != ecoefs:
                    if stepper is not None:
                        stepper.sync()
                    stepper = make_stepper(self.device, cfg.arch, params, opt, ecoefs, cfg.n_train)
                    stepper_key = ecoefs
                means, train_acc = train_epoch(cfg, phase, epoch, stepper, self.x_train, self.y_train)
                masks = prune_masks(cfg.arch, params)
                test_acc = models.accuracy(cfg.arch, params, self.x_test, self.y_test, masks)
                rec = dict(phase=phase, epoch=epoch + 1, **means, train_acc=train_acc,
                           test_acc=test_acc, pruned=pruned_fraction(masks),
                           seconds=time.perf_counter() - t0)
                if ecoefs.get("tau2") != coefs.get("tau2"):
                    rec["tau2"] = ecoefs["tau2"]
                history.append(rec)
                self.log(format_epoch(rec) + eta.after_epoch(phase, epoch + 1, rec["seconds"]))
                self._write_checkpoint(phase, epoch + 1, params, opt, history)
                if budget is not None:
                    budget -= 1
            extra = {"history": np.array(json.dumps(history))}
            if PHASES[phase].mixture:  # the compressor's argmax needs it (python -m refvbc.compress)
                extra["config/pi0"] = np.array(cfg.pi0)
            save_params(self.phase_file(phase), cfg.arch, params, phase=phase, extra=extra)
            finals[phase] = params
            eta.done(phase)
            state = None
        return finals


RECENT = 5  # epochs whose median time estimates the next ones (follows a change of machine load)


class Eta:
    """Estimated time remaining for the epoch log lines: the median time of each phase's last RECENT
    epochs times its remaining epochs; a phase not yet started is estimated at the median of the phase
    running now (the phases of one arch differ by a small factor; the estimate sharpens as they run)."""

    def __init__(self, cfg, todo):
        self.cfg, self.todo = cfg, list(todo)
        self.pos = {ph: 0 for ph in todo}
        self.secs = {ph: [] for ph in todo}

    def start(self, phase, history):
        self.pos[phase] = len(history)
        self.secs[phase] = [r["seconds"] for r in history]

    def done(self, phase):
        self.pos[phase] = self.cfg.epochs[phase]

    def after_epoch(self, phase, epoch, seconds):
        """Record one epoch; returns the text appended to its log line."""
        self.pos[phase] = epoch
        self.secs[phase].append(seconds)
        per = {ph: float(np.median(s[-RECENT:])) for ph, s in self.secs.items() if s}
        left = {ph: (self.cfg.epochs[ph] - self.pos[ph]) * per.get(ph, per[phase]) for ph in self.todo}
        return f"  eta phase {_fmt_s(left[phase])}, run {_fmt_s(sum(left.values()))}"


def _fmt_s(s):
    return f"{s / 60:.1f} min" if s < 5400 else f"{s / 3600:.1f} h"


def format_epoch(r):
    """One log line per epoch: phase, epoch, loss and its parts, accuracies, pruned fraction, time."""
    tau = f"  tau2 {r['tau2']:.4g}" if "tau2" in r else ""
    return (f"{r['phase']:>5} epoch {r['epoch']:4d}  loss {r['loss']:.5f}  ce {r['ce']:.5f}  "
            f"kl {r['kl']:.1f}  logprior {r['log_prior']:.1f}  train {100 * r['train_acc']:.2f}%  "
            f"test {100 * r['test_acc']:.2f}%  alpha>=19 {100 * r['pruned']:.2f}%  {r['seconds']:.1f}s{tau}")
