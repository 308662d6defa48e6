"""Training phases of the paper's Table 2 (l2, sws, vd, vdsws), epochs, logging, atomic checkpoints
and exact resume.

Phases and where each starts (paper §4 and appendix A; spec "Loss"):
    l2     fresh PyTorch-default init, deterministic, Adam lr `lr_l2`, weight decay      -> "L2" row
    sws    from l2, deterministic weights + mixture prior (tau2), mixture init Table 3   -> "SWS" row
    vd     from l2, log sigma^2 = -10, tau1 = 1, tau2 = 0, Table 3 rates                 -> "VD" row
    vdsws  from vd, mixture initialised from the weights (Table 3), tau1 = 1, tau2       -> "VD+SWS" row

Reproducibility: the minibatch order and the noise of epoch e of phase p come from
numpy.random.default_rng([seed, p, e]), so a resumed run replays exactly what an uninterrupted run
does. A checkpoint (params, Adam state, position) is written atomically after every epoch.

Shape legend: x (N, 784) float32 in [0, 1] (reshaped per arch by models.check_input); y (N,) int64.
"""

import json
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import models, priors
from .arch import get_arch
from .data import batches
from .fileio import atomic_savez, load_npz
from .objective import loss_and_grads
from .optim import TABLE3_LR, Adam

PHASE_IDS = {"l2": 0, "sws": 1, "vd": 2, "vdsws": 3}
PHASE_START = {"l2": None, "sws": "l2", "vd": "l2", "vdsws": "vd"}
METHOD_PHASES = {"l2": ["l2"], "sws": ["l2", "sws"], "vd": ["l2", "vd"],
                 "vdsws": ["l2", "vd", "vdsws"], "all": ["l2", "sws", "vd", "vdsws"]}
PHASE_LABEL = {"l2": "L2", "sws": "SWS", "vd": "VD", "vdsws": "VD+SWS"}
LOG_ALPHA_PRUNE = float(np.log(19.0))  # dropout rate >= 0.95  <=>  alpha >= 19 (spec "Evaluation")


@dataclass
class Config:
    """Everything that determines a run; stored in the checkpoint and compared on --resume."""
    arch: str = "lenet300"
    method: str = "all"
    seed: int = 0
    batch_size: int = 100
    epochs: dict = field(default_factory=lambda: {"l2": 30, "sws": 100, "vd": 200, "vdsws": 100})
    lrs: dict = field(default_factory=lambda: dict(TABLE3_LR))
    lr_l2: float = 1e-3
    weight_decay: float = 5e-4
    tau1: float = 1.0
    tau2: float = 0.02
    log_sigma2_init: float = -10.0
    n_train: int = 60000  # a subset (first n of a seeded permutation) for --quick
    n_test: int = 10000
    dtype: str = "float32"

    def phases(self):
        return METHOD_PHASES[self.method]


class RunError(RuntimeError):
    """A run directory or checkpoint that cannot be used as asked."""


def save_params(path, arch, params, extra=None):
    """Params file: `param/<name>` arrays and `config/arch` (the compress CLI's input format)."""
    arrays = {f"param/{k}": v for k, v in params.items()}
    arrays["config/arch"] = np.array(arch)
    if extra:
        arrays.update(extra)
    atomic_savez(path, **arrays)


def load_params(path):
    """Inverse of save_params -> (arch, params)."""
    try:
        f = load_npz(path, "parameter file")
        arch = str(f["config/arch"])
    except (ValueError, KeyError) as e:
        raise RunError(f"cannot read parameter file {path}: {e}") from None
    params = {k[len("param/"):]: v for k, v in f.items() if k.startswith("param/")}
    get_arch(arch)
    return arch, params


def phase_setup(cfg, phase, start_params):
    """Initial params, Adam learning rates and loss coefficients of `phase`."""
    dtype = np.dtype(cfg.dtype)
    if phase == "l2":
        params = models.init_params(cfg.arch, np.random.default_rng([cfg.seed, 99]), dtype=dtype)
        return params, {"theta": cfg.lr_l2, "bias": cfg.lr_l2}, dict(tau1=0.0, tau2=0.0,
                                                                     weight_decay=cfg.weight_decay)
    params = {k: np.array(v, dtype=dtype) for k, v in start_params.items() if not k.startswith("gmm.")}
    if phase == "vd":
        params = models.add_log_sigma2(params, cfg.arch, cfg.log_sigma2_init)
        lrs = {g: cfg.lrs[g] for g in ("theta", "bias", "log_sigma2")}
        return params, lrs, dict(tau1=cfg.tau1, tau2=0.0, weight_decay=0.0)
    flat = np.concatenate([params[k].ravel() for k in models.weight_keys(cfg.arch)])
    mu, log_lambda, log_pi = priors.mixture_init(flat, dtype=dtype)
    params.update({"gmm.mu": mu, "gmm.log_lambda": log_lambda, "gmm.log_pi": log_pi})
    groups = ["theta", "bias", "mu", "log_lambda", "log_pi"]
    if phase == "vdsws":
        groups.append("log_sigma2")
    return params, {g: cfg.lrs[g] for g in groups}, dict(
        tau1=cfg.tau1 if phase == "vdsws" else 0.0, tau2=cfg.tau2, weight_decay=0.0)


def prune_masks(arch, params):
    """Keep-masks {layer: bool} of the spec's pruning rule (alpha >= 19 pruned); None if deterministic."""
    if not models.is_variational(params, arch):
        return None
    return {l.name: priors.log_alpha(params[f"{l.name}.theta"], params[f"{l.name}.log_sigma2"])
            < LOG_ALPHA_PRUNE for l in get_arch(arch)}


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
        return CudaStepper(arch, params, opt, coefs, n_data)
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


class Run:
    """A training run in directory `out`: phases in order, checkpoint after each epoch, resume."""

    def __init__(self, cfg, out, data, log=print, device="cpu"):
        self.cfg, self.out, self.log, self.device = cfg, out, log, device
        self.x_train, self.y_train, self.x_test, self.y_test = data
        self.ckpt = os.path.join(out, "checkpoint.npz")

    def phase_file(self, phase):
        return os.path.join(self.out, f"{phase}.npz")

    def _write_checkpoint(self, phase, epoch, params, opt, history):
        meta = {"config": asdict(self.cfg), "phase": phase, "epoch": epoch, "history": history}
        arrays = {f"param/{k}": v for k, v in params.items()}
        arrays.update(opt.state_dict())
        arrays["meta"] = np.array(json.dumps(meta))
        atomic_savez(self.ckpt, **arrays)

    def _read_checkpoint(self):
        try:
            f = load_npz(self.ckpt, "checkpoint")
            meta = json.loads(str(f["meta"]))
        except (ValueError, KeyError) as e:
            raise RunError(f"checkpoint {self.ckpt} is unreadable: {e}") from None
        params = {k[6:]: v for k, v in f.items() if k.startswith("param/")}
        adam = {k: v for k, v in f.items() if k.startswith("adam.")}
        saved = meta["config"]
        mine = asdict(self.cfg)
        # Epoch counts may change on resume (to extend or shorten a run), except for the phase in
        # progress when it has already run more epochs than now asked for.
        diff = [k for k in mine if k != "epochs" and saved.get(k) != mine[k]]
        if diff:
            raise RunError("--resume with different settings than the checkpoint: " + ", ".join(
                f"{k}: checkpoint {saved.get(k)!r} vs now {mine[k]!r}" for k in diff))
        if meta["epoch"] > self.cfg.epochs.get(meta["phase"], 0):
            raise RunError(f"--resume: phase {meta['phase']} already ran {meta['epoch']} epochs, more "
                           f"than the {self.cfg.epochs.get(meta['phase'])} now asked for")
        if saved.get("epochs") != mine["epochs"]:
            self.log(f"# resume with epochs {mine['epochs']} (checkpoint had {saved.get('epochs')})")
        return meta, params, adam

    def run(self, resume=False, max_epochs=None):
        """Train every phase of the method. Returns {phase: final params} of finished phases, or
        None when `max_epochs` (epochs to run in this call) stopped the run early."""
        cfg = self.cfg
        os.makedirs(self.out, exist_ok=True)
        state = None
        if os.path.exists(self.ckpt):
            if not resume:
                raise RunError(f"{self.out} already holds a run (checkpoint.npz); pass --resume to "
                               "continue it or choose another --out")
            state = self._read_checkpoint()
        elif resume:
            self.log(f"# --resume: no checkpoint in {self.out}, starting from scratch")
        finals = {}
        budget = max_epochs
        for phase in cfg.phases():
            if os.path.exists(self.phase_file(phase)) and state is not None:
                finals[phase] = load_params(self.phase_file(phase))[1]
                if not (state[0]["phase"] == phase and state[0]["epoch"] < cfg.epochs[phase]):
                    self.log(f"# resumed: {phase} finished earlier ({self.phase_file(phase)})")
                    continue
            start = finals.get(PHASE_START[phase]) if PHASE_START[phase] else None
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
            stepper = None
            for epoch in range(first, cfg.epochs[phase]):
                if budget is not None and budget <= 0:
                    self.log("# stopping after the requested number of epochs; continue with --resume")
                    return None
                t0 = time.perf_counter()
                if stepper is None:
                    stepper = make_stepper(self.device, cfg.arch, params, opt, coefs, cfg.n_train)
                means, train_acc = train_epoch(cfg, phase, epoch, stepper, self.x_train, self.y_train)
                masks = prune_masks(cfg.arch, params)
                test_acc = models.accuracy(cfg.arch, params, self.x_test, self.y_test, masks)
                rec = dict(phase=phase, epoch=epoch + 1, **means, train_acc=train_acc,
                           test_acc=test_acc, pruned=pruned_fraction(masks),
                           seconds=time.perf_counter() - t0)
                history.append(rec)
                self.log(format_epoch(rec))
                self._write_checkpoint(phase, epoch + 1, params, opt, history)
                if budget is not None:
                    budget -= 1
            save_params(self.phase_file(phase), cfg.arch, params,
                        extra={"history": np.array(json.dumps(history))})
            finals[phase] = params
            state = None
        return finals


def format_epoch(r):
    """One log line per epoch: phase, epoch, loss and its parts, accuracies, pruned fraction, time."""
    return (f"{r['phase']:>5} epoch {r['epoch']:4d}  loss {r['loss']:.5f}  ce {r['ce']:.5f}  "
            f"kl {r['kl']:.1f}  logprior {r['log_prior']:.1f}  train {100 * r['train_acc']:.2f}%  "
            f"test {100 * r['test_acc']:.2f}%  alpha>=19 {100 * r['pruned']:.2f}%  {r['seconds']:.1f}s")
