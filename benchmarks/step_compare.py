"""The measurements of bench_step.py: refvbc's training step against the PyTorch step of torch_step.py,
interleaved; the part shares of refvbc's step; one full epoch; the records of --json.

Imported by bench_step.main after the thread environment is set (this module imports refvbc and numba).
`run(args)` takes bench_step.py's parsed arguments.

Shape legend
    BATCH            100, the training batch; x (BATCH, *INPUT_SHAPES[arch]), y (BATCH,)
    row              one configuration's figures (bench_config): median seconds per step, spreads, shares
    record           one JSON record (step_record, epoch_record, sgemm_record; schema in bench_step.py)
"""

import os
import time

import common

common.add_repo_to_path()

import numba  # noqa: E402
import numpy as np  # noqa: E402

from bench_kernels import bench_noise, import_torch, sgemm_line, sgemm_rate  # noqa: E402
from refvbc import layers, models, parallel, priors, train  # noqa: E402
from refvbc.arch import INPUT_SHAPES, N_TRAIN, get_arch  # noqa: E402
from refvbc.optim import Adam  # noqa: E402
from refvbc.phases import PHASES  # noqa: E402
from torch_step import TorchStep  # noqa: E402

BATCH = common.BATCH
STEPS_PER_EPOCH = N_TRAIN // BATCH
N_TEST = 10000
EPOCH_PHASES = ["l2", "sws", "vd", "vdsws"]


# ----------------------------------------------------------------------------------------------------
# problem setup (synthetic data: the step time does not depend on the pixel values)
# ----------------------------------------------------------------------------------------------------

def make_problem(arch, phase, dtype, seed=0):
    """Params, Adam rates and loss coefficients of `phase` as refvbc.train.phase_setup builds them (vdsws
    from a VD model), one batch, and a numpy Generator.

    Returns: params, lrs, coefs, x (BATCH, ...), y (BATCH,), rng.
    """
    rng = np.random.default_rng(seed)
    cfg = train.Config(arch=arch, dtype=np.dtype(dtype).name, seed=seed)
    start = models.init_params(arch, rng, dtype=dtype)
    if PHASES[phase].variational and PHASES[PHASES[phase].start].variational:  # vdsws starts from vd
        start = models.add_log_sigma2(start, arch)
    params, lrs, coefs = train.phase_setup(cfg, phase, start)
    x = rng.random((BATCH,) + INPUT_SHAPES[arch]).astype(dtype)
    y = rng.integers(0, 10, BATCH)
    return params, lrs, coefs, x, y, rng


def make_stepper(device, arch, params, lrs, coefs):
    """refvbc.train.make_stepper with a fresh Adam of the given rates and N = N_TRAIN."""
    return train.make_stepper(device, arch, params, Adam(lrs), coefs, N_TRAIN)


def cuda_unavailable_reason():
    """None when refvbc.cuda_train.CudaStepper can be used, else a one-line reason."""
    try:
        from refvbc.kernels import cuda_available
        ok, why = cuda_available()
        if not ok:
            return why
        from refvbc.cuda_train import CudaStepper  # noqa: F401
    except ImportError as e:
        return f"refvbc.cuda_train is not available ({e})"
    return None


def step_gflop(arch, phase, batch=BATCH):
    """GEMM GFLOP of one training step: per layer the forward products (mean, and variance for vd /
    vdsws), the weight gradients and, except for the first layer, the input gradients (2 M N K each)."""
    n_paths = 2 if PHASES[phase].variational else 1
    total = 0.0
    for i, layer in enumerate(get_arch(arch)):
        F_ = layer.weight_shape[0]
        K_ = int(np.prod(layer.weight_shape[1:]))
        P_ = int(np.prod(layer.preact_shape[1:])) if layer.kind == "conv" else 1
        one = 2.0 * batch * P_ * K_ * F_
        total += n_paths * one * (3 if i > 0 else 2)
    return total / 1e9


# ----------------------------------------------------------------------------------------------------
# the parts of refvbc's step
# ----------------------------------------------------------------------------------------------------

class PartTimer:
    """Wraps the layer / prior / Adam entry points to sum the time spent in each part of the step
    (a context manager; the seconds per part are in .t after it)."""

    PARTS = {
        "noise": [(models, "draw_noise")],
        "conv": [(layers, "vconv2d_forward"), (layers, "vconv2d_backward"), (layers, "conv2d_forward"),
                 (layers, "conv2d_backward")],
        "dense": [(layers, "vdense_forward"), (layers, "vdense_backward"), (layers, "dense_forward"),
                  (layers, "dense_backward")],
        "prior": [(priors, "kl_vd_add_layers"), (priors, "mixture_prior")],
    }

    def __init__(self):
        self.t = dict.fromkeys(["noise", "conv", "dense", "prior", "adam"], 0.0)
        self._saved = []

    def _wrap(self, part, mod, name):
        f = getattr(mod, name)
        self._saved.append((mod, name, f))

        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                self.t[part] += time.perf_counter() - t0
        setattr(mod, name, timed)

    def __enter__(self):
        for part, entries in self.PARTS.items():
            for mod, name in entries:
                self._wrap(part, mod, name)
        self._wrap("adam", Adam, "step")
        return self

    def __exit__(self, *exc):
        for mod, name, f in reversed(self._saved):
            setattr(mod, name, f)


def part_shares(step, n):
    """Shares of n instrumented calls of step() spent in each PartTimer part, and "other" (the rest)."""
    with PartTimer() as pt:
        tp = common.time_steps(step, n)
    total = sum(tp)
    shares = {k: v / total for k, v in pt.t.items()}
    shares["other"] = max(0.0, 1.0 - sum(shares.values()))
    return shares


# ----------------------------------------------------------------------------------------------------
# one configuration: refvbc and torch interleaved
# ----------------------------------------------------------------------------------------------------

def torch_contenders(torch, args, arch, params, x, y, lrs, coefs):
    """One TorchStep per thread setting of --torch-threads, warmed up, with its number of timed steps
    (>= 3, at most --steps, fewer when a step is slow: --torch-budget). Returns [(threads, step, n, [], [])],
    the lists to receive (wall, cpu) pairs and per-repeat medians."""
    out = []
    for nt in args.torch_thread_list:
        torch.set_num_threads(nt)
        theirs = TorchStep(torch, arch, params, x, y, lrs, coefs).step
        w = common.time_steps(theirs, args.warmup + 1)
        n = int(max(3, min(args.steps, args.torch_budget / max(w[-1], 1e-6))))
        out.append((nt, theirs, n, [], []))
    return out


def bench_config(arch, phase, dtype, args, torch):
    """One row: refvbc (and torch) median s/step including the noise draw, compile time, part shares."""
    params, lrs, coefs, x, y, rng = make_problem(arch, phase, dtype)
    stepper = make_stepper(args.device, arch, params, lrs, coefs)
    variational = models.is_variational(params, arch)
    buf = {}

    def ours():
        noise = models.draw_noise(arch, BATCH, rng, dtype, out=buf) if variational else None
        stepper.step(x, y, noise)

    t0 = time.perf_counter()
    ours()  # JIT compile (or load from numba's cache) + first call
    first = time.perf_counter() - t0
    common.time_steps(ours, args.warmup)
    tsteps = torch_contenders(torch, args, arch, params, x, y, lrs, coefs) if torch is not None else []
    ts_ours, rep_ours, cpu_ours = [], [], []
    for _ in range(args.repeat):  # interleaved so that both see the same background load
        a = common.time_steps(ours, args.steps, cpu_ours)
        ts_ours += a
        rep_ours.append(float(np.median(a)))
        for nt, theirs, n, allt, rep in tsteps:
            torch.set_num_threads(nt)
            cpu = []
            b = common.time_steps(theirs, n, cpu)
            allt += list(zip(b, cpu))
            rep.append(float(np.median(b)))
    load = common.load_list()
    shares = part_shares(ours, args.steps)
    row = dict(arch=arch, phase=phase, dtype=np.dtype(dtype).name, ours=float(np.median(ts_ours)),
               cpu=float(np.median(cpu_ours)), load=load,
               ours_spread=(min(rep_ours), max(rep_ours)), first=first, shares=shares)
    row["torch"] = {nt: (float(np.median([w_ for w_, _ in allt])), min(rep), max(rep),
                         float(np.median([c_ for _, c_ in allt]))) for nt, _, _, allt, rep in tsteps}
    return row


def step_record(r):
    """The --json record of a bench_config row."""
    rec = dict(kind="step", arch=r["arch"], phase=r["phase"], dtype=r["dtype"], refvbc_s=r["ours"],
               torch_s=None, torch_threads=None, ratio=None, load_avg=r["load"], refvbc_cpu_s=r["cpu"])
    if r["torch"]:
        nt, v = min(r["torch"].items(), key=lambda kv: kv[1][0])
        rec.update(torch_s=v[0], torch_threads=nt, ratio=r["ours"] / v[0], torch_cpu_s=v[3],
                   torch_all={str(k): w[0] for k, w in r["torch"].items()})
    return rec


def fmt_row(r):
    """One printed line of a bench_config row."""
    s = (f"{r['arch']:<9} {r['phase']:<6} {r['dtype']:<8} {r['ours']:9.4f} "
         f"[{r['ours_spread'][0]:.4f}-{r['ours_spread'][1]:.4f}] cpu {r['cpu']:.4f} {r['first']:6.2f}  ")
    s += " ".join(f"{k} {100 * v:4.1f}%" for k, v in r["shares"].items())
    if r["torch"]:
        for nt, (med, lo, hi, cpu) in r["torch"].items():
            s += f"  | torch{nt}t {med:.4f} [{lo:.4f}-{hi:.4f}] cpu {cpu:.4f}"
        best = min(v[0] for v in r["torch"].values())
        s += f"  ratio {r['ours'] / best:.2f}"
    return s + f"  load {r['load']}"


# ----------------------------------------------------------------------------------------------------
# one epoch
# ----------------------------------------------------------------------------------------------------

def bench_epoch(arch, phase, args):
    """Seconds of one training epoch (train.train_epoch, 600 steps) and of the test evaluation after it.

    Returns: (train s, evaluation s, process CPU s of both).
    """
    params, lrs, coefs, x, y, rng = make_problem(arch, phase, np.float32)
    stepper = make_stepper(args.device, arch, params, lrs, coefs)
    cfg = train.Config(arch=arch, dtype="float32", seed=0)
    xs = rng.random((STEPS_PER_EPOCH * BATCH,) + INPUT_SHAPES[arch]).astype(np.float32)
    ys = rng.integers(0, 10, STEPS_PER_EPOCH * BATCH)
    xt = rng.random((N_TEST,) + INPUT_SHAPES[arch]).astype(np.float32)
    yt = rng.integers(0, 10, N_TEST)
    train.train_epoch(cfg, phase, 0, stepper, xs[:2 * BATCH], ys[:2 * BATCH])  # compile outside the timing
    c0, t0 = time.process_time(), time.perf_counter()
    train.train_epoch(cfg, phase, 1, stepper, xs, ys)
    t1 = time.perf_counter()
    masks = train.prune_masks(arch, stepper.params)
    models.accuracy(arch, stepper.params, xt, yt, masks)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, time.process_time() - c0


def epoch_record(arch, phase, tr, ev, cpu, load):
    """The --json record of one bench_epoch."""
    return dict(kind="epoch", arch=arch, phase=phase, dtype="float32", refvbc_s=tr + ev, train_s=tr,
                eval_s=ev, cpu_s=cpu, torch_s=None, torch_threads=None, ratio=None, load_avg=load)


def sgemm_record(s1, s2):
    """The --json record of bench_kernels.sgemm_rate's figures."""
    return dict(kind="sgemm", arch=None, phase=None, dtype="float32", gflops_1thread=s1, gflops_pool=s2,
                refvbc_s=None, torch_s=None, torch_threads=None, ratio=None, load_avg=common.load_list())


# ----------------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------------

def print_header(args, torch):
    """The lines before the step table: threads, BLAS, torch, the measurement plan, the machine, columns."""
    print(f"# refvbc training step, batch {BATCH}, device {args.device}; refvbc threads {parallel.N_THREADS}, "
          f"numba threads {numba.get_num_threads()} ({numba.config.THREADING_LAYER} layer), "
          f"{parallel.BLAS_NOTE} (--threads {args.threads}); torch "
          + (f"{torch.__version__}, float32, threads {args.torch_thread_list}" if torch else "off"))
    print(f"# {args.steps} steps x {args.repeat} repeats after {args.warmup} warm-up steps; "
          f"cpus {os.cpu_count()}; load average at start {common.load_average()}")
    print("# columns: arch phase dtype  median wall s/step incl. noise [min-max of per-repeat medians]  cpu "
          "<median process CPU s/step, all threads>  first-call s "
          "(JIT compile/cache load)  shares of the step  | torch<n>t median s/step [spread] with n threads  "
          "ratio refvbc / fastest torch  load average after the interleaved measurement")


def run_steps(archs, phases, dtypes, args, torch, records):
    """The step table: one row per configuration, its record appended and written at once (an interrupted
    run keeps what it measured); then the noise-draw lines and each record's GEMM work."""
    for arch in archs:
        for phase in phases:
            for dt in dtypes:
                row = bench_config(arch, phase, dt, args, torch)
                records.append(step_record(row))
                common.write_json(args.json, records)
                print(fmt_row(row), flush=True)
    for arch in archs:
        print("# " + bench_noise(arch, torch))
    for r in records:
        g = step_gflop(r["arch"], r["phase"])
        r["gflop"] = g
        print(f"# GEMM work {r['arch']} {r['phase']} {r['dtype']}: {g:.3f} GFLOP/step, reached "
              f"{g / r['refvbc_s']:.1f} GFLOP/s over the whole step")


def run_epochs(archs, args, records):
    """One epoch per architecture and phase (l2, sws, vd, vdsws), each record written at once."""
    for arch in archs:
        for phase in EPOCH_PHASES:
            tr, ev, cpu = bench_epoch(arch, phase, args)
            load = common.load_list()
            records.append(epoch_record(arch, phase, tr, ev, cpu, load))
            common.write_json(args.json, records)
            print(f"epoch {arch:<9} {phase:<6} float32: {tr + ev:6.1f} s = {STEPS_PER_EPOCH} steps "
                  f"{tr:.1f} s ({tr / STEPS_PER_EPOCH:.4f} s/step incl. noise) + test evaluation "
                  f"{ev:.1f} s; process CPU {cpu:.1f} s; load {load}", flush=True)


def run(args):
    """The whole benchmark of bench_step.py's parsed arguments. Returns the exit status."""
    torch = import_torch(args.no_torch)
    if args.device == "cuda":
        why = cuda_unavailable_reason()
        if why is not None:
            print(f"# --device cuda unavailable: {why}")
            return 1
    if not args.no_mallopt:  # as run_experiments.py does
        print(f"# mallopt: large temporaries kept in the heap, as in training "
              f"({'ok' if parallel.keep_freed_memory() else 'not available'})")
    archs = ["lenet300", "lenet5"] if args.arch == "all" else [args.arch]
    phases = ["vd", "vdsws"] if args.phase == "all" else [args.phase]
    dtypes = [np.float32, np.float64] if args.dtype == "all" else [np.dtype(args.dtype).type]
    print_header(args, torch)
    records = []
    run_steps([] if args.epoch and args.epoch_only else archs, phases, dtypes, args, torch, records)
    s1, s2 = sgemm_rate()
    print(sgemm_line(s1, s2))
    records.append(sgemm_record(s1, s2))
    print(f"# load average at end {common.load_average()}")
    if args.epoch:
        run_epochs(archs, args, records)
    common.write_json(args.json, records)
    if args.json:
        print(f"# wrote {len(records)} records to {args.json}")
    return 0
