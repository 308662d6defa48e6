"""Training-step benchmark: refvbc's CPU step against the same step written in PyTorch.

For each architecture x phase {vd, vdsws} (or l2, sws with --phase) x dtype {float32, float64} it prints
  - the median seconds per training step (noise draw, loss, gradients and Adam; batch 100), after warm-up,
  - the JIT compile + first-call time of that configuration, reported separately,
  - the share of the step spent drawing noise, in conv layers, dense layers, prior terms (KL_VD + mixture),
    Adam and the rest (ReLU, max-pool, softmax cross-entropy, Python glue), from a separate instrumented pass,
  - when torch is importable, the median seconds of a straightforward PyTorch step (float32,
    torch.randn noise, torch.nn.functional + autograd + torch.optim.Adam, mixture term with (D, K)
    temporaries) for each thread setting of --torch-threads, measured in the same run and interleaved
    with ours, and the ratio refvbc / fastest torch.
With --epoch it also times one full epoch per architecture and phase (l2, sws, vd, vdsws): the 600
training steps of refvbc.train.train_epoch (noise drawn as training draws it) and the test evaluation
(10000 images, pruning masks as a training run computes them), float32, synthetic data.
--json FILE writes the figures as a JSON list of records {"kind": "step"|"epoch", "arch", "phase",
"dtype", "refvbc_s", "torch_s", "torch_threads", "ratio", "load_avg"} (torch_s: the fastest torch setting
measured in the run, torch_threads: its thread count, ratio = refvbc_s / torch_s; null for epochs; step
records add "gflop", the GEMM work of the step; one "sgemm" record gives numpy's sgemm GFLOP/s).

Both implementations draw their noise inside the timed step, as a training epoch does: refvbc with
models.draw_noise (the seeded numba generator, into reused buffers), PyTorch with torch.randn.

Threads: refvbc's default policy (refvbc/parallel.py: single-threaded BLAS, REFVBC_THREADS threads for
the batch parts of the conv layers, numba's workqueue layer); --threads N sets REFVBC_THREADS and
NUMBA_NUM_THREADS to N before refvbc is imported. PyTorch runs with torch.set_num_threads(n) for each n
of --torch-threads (default "2,1"); the ratio is taken against the fastest torch setting, so it never
flatters refvbc.

Usage:  python benchmarks/bench_step.py [--arch lenet300|lenet5|all] [--phase vd|vdsws|l2|sws|all]
            [--dtype float32|float64|all] [--steps 30] [--repeat 3] [--threads N] [--device cpu|cuda]
            [--no-torch] [--epoch [--epoch-only]] [--json FILE]
"""

import argparse
import json
import os
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="all", choices=["lenet300", "lenet5", "all"])
    p.add_argument("--phase", default="all", choices=["vd", "vdsws", "l2", "sws", "all"],
                   help="phase of the step table (default all = vd and vdsws); --epoch times all four")
    p.add_argument("--dtype", default="all", choices=["float32", "float64", "all"])
    p.add_argument("--steps", type=int, default=30, help="timed steps per measurement (default 30)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before timing (default 3)")
    p.add_argument("--repeat", type=int, default=3,
                   help="measurements per configuration, interleaved with torch; the median of all "
                        "timed steps is reported and the spread of per-repeat medians (default 3)")
    p.add_argument("--threads", type=int, default=None,
                   help="REFVBC_THREADS and NUMBA_NUM_THREADS, set before import (default: refvbc's policy, "
                        "all CPUs)")
    p.add_argument("--torch-threads", default="2,1",
                   help="comma list of torch.set_num_threads values to measure (default 2,1: the reference "
                        "setup, and one thread, which is faster on a loaded 2-core machine); the ratio is "
                        "taken against the fastest")
    p.add_argument("--torch-budget", type=float, default=4.0,
                   help="seconds per torch measurement at most: fewer timed steps (>= 3) when a torch step "
                        "is slow (default 4)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--no-mallopt", action="store_true",
                   help="do not keep freed memory in glibc's heap (by default the benchmark does, as a training "
                        "run does: refvbc.parallel.keep_freed_memory)")
    p.add_argument("--epoch", action="store_true",
                   help="also time one full epoch (600 steps and the test evaluation, float32) per "
                        "architecture and phase (l2, sws, vd, vdsws)")
    p.add_argument("--epoch-only", action="store_true", help="with --epoch: skip the step table")
    p.add_argument("--json", default=None, metavar="FILE", help="write the figures as JSON records to FILE")
    args = p.parse_args(argv)
    args.torch_thread_list = [int(v) for v in str(args.torch_threads).split(",") if v.strip()]
    return args


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.threads is not None:
    for var in ("REFVBC_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402  (after the thread environment variables)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from refvbc.phases import PHASES  # noqa: E402
from refvbc import layers, models, parallel, priors, train  # noqa: E402
from refvbc.arch import GAMMA_ALPHA, GAMMA_BETA, INPUT_SHAPES, N_TRAIN, PI0, get_arch  # noqa: E402
from refvbc.optim import Adam  # noqa: E402

BATCH = 100
STEPS_PER_EPOCH = N_TRAIN // BATCH
N_TEST = 10000


# ----------------------------------------------------------------------------------------------------
# problem setup (synthetic data: the step time does not depend on the pixel values)
# ----------------------------------------------------------------------------------------------------

def make_problem(arch, phase, dtype, seed=0):
    """Params, Adam rates and loss coefficients of `phase` as refvbc.train.phase_setup builds them (vdsws
    from a VD model), one batch, and a numpy Generator."""
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


# ----------------------------------------------------------------------------------------------------
# timing helpers
# ----------------------------------------------------------------------------------------------------

CPU_TIMES = []  # process CPU seconds of every timed step (all threads), beside the wall times


def time_steps(step, n):
    ts = []
    for _ in range(n):
        c0 = time.process_time()
        t0 = time.perf_counter()
        step()
        ts.append(time.perf_counter() - t0)
        CPU_TIMES.append(time.process_time() - c0)
    return ts


class PartTimer:
    """Wraps the layer / prior / Adam entry points to sum the time spent in each part of the step."""

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


# ----------------------------------------------------------------------------------------------------
# PyTorch step, written from docs/objective.md (float32, autograd, torch.optim.Adam)
# ----------------------------------------------------------------------------------------------------

class TorchStep:
    """A straightforward PyTorch version of the same training step: torch.randn noise, F.conv2d / F.linear
    for the mean and variance paths (deterministic layers for l2 / sws), relu, max_pool2d, cross_entropy,
    KL_VD elementwise, the mixture log-density with (D, K) temporaries and logsumexp, weight decay for l2,
    backward by autograd, torch.optim.Adam with the phase's rates."""

    K1, K2, K3 = 0.63576, 1.87320, 1.48695

    def __init__(self, torch, arch, params, x, y, lrs, coefs):
        self.torch, self.F = torch, torch.nn.functional
        self.net = get_arch(arch)
        self.p = {k: torch.tensor(np.asarray(v, dtype=np.float32)).requires_grad_(True)
                  for k, v in params.items()}
        self.x = torch.tensor(np.asarray(x, dtype=np.float32))
        self.y = torch.tensor(y, dtype=torch.int64)
        self.variational = f"{self.net[0].name}.log_sigma2" in params
        self.shapes = {layer.name: (self.x.shape[0],) + layer.preact_shape for layer in self.net}
        groups = {}
        for k, t in self.p.items():
            groups.setdefault(k.rsplit(".", 1)[-1], []).append(t)
        wd = coefs.get("weight_decay", 0.0)
        self.opt = torch.optim.Adam([{"params": ts, "lr": lrs[g], "weight_decay": wd if g == "theta" else 0.0}
                                     for g, ts in groups.items() if g in lrs], betas=(0.9, 0.999), eps=1e-8)
        self.tau1, self.tau2 = coefs["tau1"], coefs["tau2"]

    def forward(self):
        torch, F, p = self.torch, self.F, self.p
        h = self.x
        kl = 0.0
        for i, layer in enumerate(self.net):
            n = layer.name
            th, b = p[f"{n}.theta"], p[f"{n}.bias"]
            if layer.kind == "dense" and h.dim() == 4:
                h = h.reshape(h.shape[0], -1)
            op = F.conv2d if layer.kind == "conv" else F.linear
            if self.variational:
                s = p[f"{n}.log_sigma2"]
                m = op(h, th, b)
                v = op(h * h, torch.exp(s))
                h = m + torch.sqrt(v + 1e-8) * torch.randn(self.shapes[n])
                if self.tau1:
                    la = torch.clamp(s - torch.log(th * th + 1e-8), -10.0, 10.0)
                    kl = kl + (self.K1 - self.K1 * torch.sigmoid(self.K2 + self.K3 * la)
                               + 0.5 * torch.log1p(torch.exp(-la))).sum()
            else:
                h = op(h, th, b)
            if i < len(self.net) - 1:
                h = torch.relu(h)
                if layer.kind == "conv":
                    h = F.max_pool2d(h, 2, 2)
        loss = F.cross_entropy(h, self.y) + self.tau1 * kl / N_TRAIN
        if self.tau2:
            w = torch.cat([p[f"{l.name}.theta"].reshape(-1) for l in self.net])
            mu, ll, rho = p["gmm.mu"], p["gmm.log_lambda"], p["gmm.log_pi"]
            mu = torch.cat([torch.zeros(1), mu[1:]])
            log_pi = torch.cat([torch.full((1,), float(np.log(PI0))),
                                float(np.log1p(-PI0)) + torch.log_softmax(rho[1:], dim=0)])
            lam = torch.exp(ll)
            d = w[:, None] - mu[None, :]                                           # (D, K)
            comp = log_pi + 0.5 * ll - 0.5 * float(np.log(2 * np.pi)) - 0.5 * lam * d * d  # (D, K)
            log_prior = torch.logsumexp(comp, dim=1).sum() + ((GAMMA_ALPHA - 1) * ll - GAMMA_BETA * lam).sum()
            loss = loss - self.tau2 * log_prior / N_TRAIN
        return loss

    def step(self):
        self.opt.zero_grad(set_to_none=True)
        loss = self.forward()
        loss.backward()
        self.opt.step()
        return float(loss.detach())


# ----------------------------------------------------------------------------------------------------
# measurements
# ----------------------------------------------------------------------------------------------------

def load_average():
    try:
        return "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "n/a"


def load_list():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


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
    time_steps(ours, args.warmup)
    tsteps = []
    if torch is not None:
        for nt in args.torch_thread_list:
            torch.set_num_threads(nt)
            theirs = TorchStep(torch, arch, params, x, y, lrs, coefs).step
            w = time_steps(theirs, args.warmup + 1)
            n = int(max(3, min(args.steps, args.torch_budget / max(w[-1], 1e-6))))
            tsteps.append((nt, theirs, n, [], []))
    ts_ours, rep_ours, cpu_ours = [], [], []
    for _ in range(args.repeat):  # interleaved so that both see the same background load
        a = time_steps(ours, args.steps)
        cpu_ours += CPU_TIMES[-len(a):]
        ts_ours += a
        rep_ours.append(float(np.median(a)))
        for nt, theirs, n, allt, rep in tsteps:
            torch.set_num_threads(nt)
            b = time_steps(theirs, n)
            allt += [(w_, c_) for w_, c_ in zip(b, CPU_TIMES[-len(b):])]
            rep.append(float(np.median(b)))
    load = load_list()
    with PartTimer() as pt:
        tp = time_steps(ours, args.steps)
    total = sum(tp)
    shares = {k: v / total for k, v in pt.t.items()}
    shares["other"] = max(0.0, 1.0 - sum(shares.values()))
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
    s = (f"{r['arch']:<9} {r['phase']:<6} {r['dtype']:<8} {r['ours']:9.4f} "
         f"[{r['ours_spread'][0]:.4f}-{r['ours_spread'][1]:.4f}] cpu {r['cpu']:.4f} {r['first']:6.2f}  ")
    s += " ".join(f"{k} {100 * v:4.1f}%" for k, v in r["shares"].items())
    if r["torch"]:
        for nt, (med, lo, hi, cpu) in r["torch"].items():
            s += f"  | torch{nt}t {med:.4f} [{lo:.4f}-{hi:.4f}] cpu {cpu:.4f}"
        best = min(v[0] for v in r["torch"].values())
        s += f"  ratio {r['ours'] / best:.2f}"
    return s + f"  load {r['load']}"


def bench_noise(arch, torch):
    rng = np.random.default_rng(1)
    buf = {}
    ts = time_steps(lambda: models.draw_noise(arch, BATCH, rng, np.float32, out=buf), 10)
    s = f"noise draw {arch}: refvbc {np.median(ts):.4f} s"
    shapes = [(BATCH,) + layer.preact_shape for layer in get_arch(arch)]
    ts = time_steps(lambda: [rng.standard_normal(sh, dtype=np.float32) for sh in shapes], 10)
    s += f", numpy standard_normal {np.median(ts):.4f} s"
    if torch is not None:
        ts = time_steps(lambda: [torch.randn(sh) for sh in shapes], 10)
        s += f", torch.randn {np.median(ts):.4f} s (torch threads {torch.get_num_threads()})"
    return s


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


def sgemm_rate(repeat=20):
    """numpy float32 GEMM GFLOP/s on LeNet-5's conv2 shape (50x500 @ 500x6400): one thread, and split in
    two column halves on refvbc's thread pool (how the layers use both cores)."""
    rng = np.random.default_rng(0)
    a = rng.random((50, 500), dtype=np.float32)
    b = rng.random((500, 6400), dtype=np.float32)
    out = np.empty((50, 6400), dtype=np.float32)
    halves = [np.ascontiguousarray(b[:, :3200]), np.ascontiguousarray(b[:, 3200:])]
    outs = [np.empty((50, 3200), dtype=np.float32) for _ in halves]
    flop = 2.0 * 50 * 500 * 6400
    one = time_steps(lambda: np.dot(a, b, out=out), repeat)
    two = time_steps(lambda: parallel.run_parts(lambda i: np.dot(a, halves[i], out=outs[i]), 2), repeat)
    return flop / np.median(one) / 1e9, flop / np.median(two) / 1e9


def bench_epoch(arch, phase, args):
    """Seconds of one training epoch (train.train_epoch, 600 steps) and of the test evaluation after it."""
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


def main(args):
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("# torch is not importable: no PyTorch comparison")
    if args.device == "cuda":
        why = cuda_unavailable_reason()
        if why is not None:
            print(f"# --device cuda unavailable: {why}")
            return 1
    if not args.no_mallopt:  # as run_experiments.py does
        print(f"# mallopt: large temporaries kept in the heap, as in training "
              f"({'ok' if parallel.keep_freed_memory() else 'not available'})")
    import numba
    archs = ["lenet300", "lenet5"] if args.arch == "all" else [args.arch]
    phases = ["vd", "vdsws"] if args.phase == "all" else [args.phase]
    dtypes = [np.float32, np.float64] if args.dtype == "all" else [np.dtype(args.dtype).type]
    print(f"# refvbc training step, batch {BATCH}, device {args.device}; refvbc threads {parallel.N_THREADS}, "
          f"numba threads {numba.get_num_threads()} ({numba.config.THREADING_LAYER} layer), "
          f"{parallel.BLAS_NOTE} (--threads {args.threads}); torch "
          + (f"{torch.__version__}, float32, threads {args.torch_thread_list}" if torch else "off"))
    print(f"# {args.steps} steps x {args.repeat} repeats after {args.warmup} warm-up steps; "
          f"cpus {os.cpu_count()}; load average at start {load_average()}")
    print("# columns: arch phase dtype  median wall s/step incl. noise [min-max of per-repeat medians]  cpu "
          "<median process CPU s/step, all threads>  first-call s "
          "(JIT compile/cache load)  shares of the step  | torch<n>t median s/step [spread] with n threads  "
          "ratio refvbc / fastest torch  load average after the interleaved measurement")
    records = []

    def save(recs):  # after every record, so that an interrupted run keeps what it measured
        if args.json:
            with open(args.json, "w") as f:
                json.dump(recs, f, indent=1)

    for arch in [] if args.epoch and args.epoch_only else archs:
        for phase in phases:
            for dt in dtypes:
                row = bench_config(arch, phase, dt, args, torch)
                records.append(step_record(row))
                save(records)
                print(fmt_row(row), flush=True)
    for arch in [] if args.epoch and args.epoch_only else archs:
        print("# " + bench_noise(arch, torch))
    for r in records:
        g = step_gflop(r["arch"], r["phase"])
        r["gflop"] = g
        print(f"# GEMM work {r['arch']} {r['phase']} {r['dtype']}: {g:.3f} GFLOP/step, reached "
              f"{g / r['refvbc_s']:.1f} GFLOP/s over the whole step")
    s1, s2 = sgemm_rate()
    print(f"# numpy sgemm on conv2's shape (50x500 @ 500x6400): {s1:.1f} GFLOP/s on one thread, {s2:.1f} GFLOP/s "
          f"in two halves on refvbc's {parallel.N_THREADS} threads; load {load_list()}")
    records.append(dict(kind="sgemm", arch=None, phase=None, dtype="float32", gflops_1thread=s1,
                        gflops_pool=s2, refvbc_s=None, torch_s=None, torch_threads=None, ratio=None,
                        load_avg=load_list()))
    print(f"# load average at end {load_average()}")
    if args.epoch:
        for arch in archs:
            for phase in ["l2", "sws", "vd", "vdsws"]:
                tr, ev, cpu = bench_epoch(arch, phase, args)
                load = load_list()
                records.append(dict(kind="epoch", arch=arch, phase=phase, dtype="float32", refvbc_s=tr + ev,
                                    train_s=tr, eval_s=ev, cpu_s=cpu, torch_s=None, torch_threads=None,
                                    ratio=None, load_avg=load))
                save(records)
                print(f"epoch {arch:<9} {phase:<6} float32: {tr + ev:6.1f} s = {STEPS_PER_EPOCH} steps "
                      f"{tr:.1f} s ({tr / STEPS_PER_EPOCH:.4f} s/step incl. noise) + test evaluation "
                      f"{ev:.1f} s; process CPU {cpu:.1f} s; load {load}", flush=True)
    save(records)
    if args.json:
        print(f"# wrote {len(records)} records to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
