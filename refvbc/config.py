"""What a run is, as typed records, with no command-line parsing in it (refvbc/cli.py parses).

    Config            everything that determines the trained models; stored in every checkpoint and
                      compared on --resume, recorded in results.json ("config")
    CompressOptions   the clustering options of the compression step (results.json "compress")
    FinetuneOptions   the beyond-the-paper re-training after the collapse (refvbc/finetune.py)
    Invocation        one training invocation of run_experiments.py: a Config, its run directory and
                      the options of this invocation (resume, max epochs, device, data, figures,
                      parallel jobs, compression, fine-tuning) and the user's command line

An Invocation is also what a parent process hands its children (the --jobs branches of
refvbc/experiment.py, the retrained points of refvbc/sweep.py): written atomically as JSON into the
child's run directory (`invocation.json`) and run with `run_experiments.py --config FILE`.
"""

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace

from .arch import GAMMA_ALPHA, GAMMA_BETA, N_COMPONENTS, PI0
from .fileio import atomic_write_bytes
from .optim import TABLE3_LR
from .phases import method_phases

INVOCATION_FORMAT = "refvbc-invocation"
INVOCATION_VERSION = 1
INVOCATION_FILE = "invocation.json"  # a child's settings, in its run directory


@dataclass
class Config:
    """Everything that determines a run; stored in the checkpoint and compared on --resume.

    The fields after `dtype` are the interpretation choices the paper leaves open
    (docs/objective.md, "Interpretation choices"; measured in docs/ablations.md)."""
    arch: str = "lenet300"
    method: str = "all"
    seed: int = 0
    batch_size: int = 100
    epochs: dict = field(default_factory=lambda: {"l2": 100, "sws": 100, "vd": 200, "vdsws": 100})
    lrs: dict = field(default_factory=lambda: dict(TABLE3_LR))
    lr_l2: float = 1e-3
    weight_decay: float = 5e-4
    lr_l2_decay_from: object = 0.5  # l2 phase: its Adam rate decays linearly to 0 from this fraction on
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
    components: int = N_COMPONENTS  # mixture phases: K, the mixture's components (Table 3: 17)
    lr_decay_from: object = None  # mixture phases: Adam rates decay linearly to 0 from this fraction on
    tau2_final: object = None  # mixture phases: tau2 raised linearly to this value ...
    tau2_ramp_from: float = 0.5  # ... over the epochs from this fraction of the phase on
    mask_pruned: bool = False  # vdsws: weights with alpha >= 19 are zero in the training forward pass
    delta_mu_over: str = "survivors"  # mixture init: Table 3's std(w) over VD's survivors or all weights
    init_from: object = None  # phase model(s) the run starts from (see train.load_init)
    init_sha256: dict = field(default_factory=dict)

    def phases(self):
        return method_phases(self.method)

    def derived(self, **changes):
        """A copy with `changes` applied, its dicts copied (never shared with this one) and no recorded
        start-model hashes (train.load_init records them when the copy runs)."""
        base = dict(epochs=dict(self.epochs), lrs=dict(self.lrs), init_sha256={})
        return replace(self, **{**base, **changes})


# settings that checkpoints (and sweep points) written before the setting existed lack: the value those runs
# used (a default that changed since, or Table 3's 17 components, whatever --components' default becomes)
LEGACY_DEFAULTS = {"delta_mu_over": "all", "lr_l2_decay_from": None, "components": N_COMPONENTS}
# settings that only some phases read: a difference in one of them matters only to a run that trains one
# of those phases (--resume, sweep points). Δμ's reading: from the deterministic l2 model (SWS) both are one
PHASE_SETTINGS = {"delta_mu_over": ("vdsws",), "lr_l2": ("l2",), "weight_decay": ("l2",),
                  "lr_l2_decay_from": ("l2",), "components": ("sws", "vdsws")}

# --quick: a minutes-long smoke run
QUICK = dict(n_train=1000, n_test=1000, epochs={"l2": 2, "sws": 1, "vd": 2, "vdsws": 1})


def setting_matters(key, phases):
    """Whether setting `key` is read by any of `phases` (every setting not in PHASE_SETTINGS is)."""
    return key not in PHASE_SETTINGS or not set(phases).isdisjoint(PHASE_SETTINGS[key])


def default_epochs(quick):
    """Epochs per phase before any --epochs flag: --quick's or the full schedule's (a new dict)."""
    return dict(QUICK["epochs"]) if quick else Config().epochs


def default_out(arch, quick, sweep=False):
    """The run directory when --out is not given: runs/<arch>[-sweep][-quick]."""
    return os.path.join("runs", arch + ("-sweep" if sweep else "") + ("-quick" if quick else ""))


@dataclass
class CompressOptions:
    """The clustering options of the compression step (compress.pipeline.quantize)."""
    prune_first: bool = True
    merge_kl: object = None
    assign: str = "responsibility"

    def as_dict(self, pi0):
        """The keyword arguments of compress.compress_model (results.json "compress"); the mixture's
        argmax uses the pi0 the model was trained with."""
        return {"prune_first": self.prune_first, "merge_kl": self.merge_kl, "pi0": pi0, "assign": self.assign}


@dataclass
class FinetuneOptions:
    """Beyond the paper: re-training after the collapse (refvbc/finetune.py); variant "none" is off."""
    variant: str = "none"
    epochs: int = 3
    lr: float = 1e-4


class InvocationError(ValueError):
    """An invocation file that cannot be read (one line, names the file)."""


@dataclass
class Invocation:
    """One training invocation of run_experiments.py (see the module docstring).

    command: the user's command-line arguments (results.json records them as the command that ran;
    a child of --jobs or of a sweep carries its parent's)."""
    config: Config
    out: str
    command: list = field(default_factory=list)
    resume: bool = False
    max_epochs: object = None  # stop cleanly after this many epochs in this invocation
    device: str = "cpu"
    data: object = None  # MNIST directory (None: the bundled one)
    figures: bool = True
    jobs: int = 1  # > 1: the branches of --method all as that many processes at once
    compress: CompressOptions = field(default_factory=CompressOptions)
    finetune: FinetuneOptions = field(default_factory=FinetuneOptions)

    def child(self, out, **config_changes):
        """The invocation of a child process in run directory `out`: this one's options, one process
        (jobs 1), no figures, and this one's config with `config_changes`."""
        return replace(self, config=self.config.derived(**config_changes), out=out, figures=False, jobs=1)

    def to_json(self):
        doc = {"format": INVOCATION_FORMAT, "version": INVOCATION_VERSION, **asdict(self)}
        return json.dumps(doc, indent=1)

    def write(self, path):
        """Write this invocation to `path` atomically. Returns `path`."""
        atomic_write_bytes(path, (self.to_json() + "\n").encode())
        return path

    @classmethod
    def read(cls, path):
        """The invocation written by `write`. Raises InvocationError naming `path` and the problem."""
        try:
            with open(path) as f:
                doc = json.load(f)
        except OSError as e:
            raise InvocationError(f"cannot read {path}: {e.strerror or e}") from None
        except ValueError as e:
            raise InvocationError(f"{path} is not JSON: {e}") from None
        if not isinstance(doc, dict) or doc.get("format") != INVOCATION_FORMAT:
            raise InvocationError(f"{path} is not an invocation file (no \"format\": \"{INVOCATION_FORMAT}\")")
        if doc.get("version") != INVOCATION_VERSION:
            raise InvocationError(f"{path}: invocation version {doc.get('version')!r}, this code reads "
                                  f"{INVOCATION_VERSION}")
        try:
            return _invocation_from_dict({k: v for k, v in doc.items() if k not in ("format", "version")})
        except (TypeError, KeyError) as e:
            raise InvocationError(f"{path}: {e}") from None


def _record(cls, d, what):
    """cls(**d) for a dataclass, naming the unknown keys of `d`."""
    if not isinstance(d, dict):
        raise TypeError(f"{what} must be an object, got {type(d).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise TypeError(f"{what}: unknown setting(s) {', '.join(unknown)}")
    return cls(**d)


def _invocation_from_dict(d):
    d = dict(d)
    for key in ("config", "out"):
        if key not in d:
            raise KeyError(f"no {key!r}")
    d["config"] = _record(Config, d["config"], "config")
    d["compress"] = _record(CompressOptions, d.get("compress", {}), "compress")
    d["finetune"] = _record(FinetuneOptions, d.get("finetune", {}), "finetune")
    return _record(Invocation, d, "invocation")


def config_from_args(a):
    """The Config of parsed run_experiments.py arguments `a` (refvbc/cli.py's parser)."""
    cfg = Config(arch=a.arch, method=a.method, seed=a.seed, batch_size=a.batch_size, lr_l2=a.lr_l2,
                 lr_l2_decay_from=a.lr_l2_decay_from, weight_decay=a.weight_decay, tau2=a.tau2,
                 gamma_alpha=a.gamma_alpha, gamma_beta=a.gamma_beta, gamma_param=a.gamma_param, pi0=a.pi0,
                 components=a.components, lr_decay_from=a.lr_decay_from, tau2_final=a.tau2_final,
                 tau2_ramp_from=a.tau2_ramp_from, mask_pruned=a.mask_pruned, delta_mu_over=a.delta_mu_over,
                 init_from=a.init_from)
    cfg.lrs = {g: getattr(a, f"lr_{g}") for g in cfg.lrs}
    if a.quick:
        cfg.n_train, cfg.n_test = QUICK["n_train"], QUICK["n_test"]
        cfg.epochs = default_epochs(True)
    for ph in cfg.epochs:
        v = a.epochs if a.epochs is not None else getattr(a, f"epochs_{ph}")
        if v is not None:
            cfg.epochs[ph] = v
    return cfg


def invocation_from_args(a, argv):
    """The Invocation of parsed run_experiments.py arguments `a`; `argv` is the command line."""
    return Invocation(
        config=config_from_args(a), out=a.out or default_out(a.arch, a.quick, sweep=a.sweep),
        command=[str(x) for x in argv], resume=a.resume, max_epochs=a.max_epochs, device=a.device,
        data=a.data, figures=not a.no_figures, jobs=a.jobs,
        compress=CompressOptions(prune_first=not a.no_prune_first, merge_kl=a.merge_kl, assign=a.assign),
        finetune=FinetuneOptions(variant=a.finetune, epochs=a.finetune_epochs, lr=a.finetune_lr))
