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
            [--dtype float32|float64|all] [--steps 30] [--warmup 3] [--repeat 3] [--threads N]
            [--torch-threads 2,1] [--torch-budget 4] [--device cpu|cuda] [--no-torch] [--no-mallopt]
            [--epoch [--epoch-only]] [--json FILE]
A smoke run (seconds): --arch lenet300 --phase vd --dtype float32 --steps 1 --warmup 0 --repeat 1 --no-torch

Modules: this file is the command line (flags, the thread environment, then the run); the measurements
are in step_compare.py, the PyTorch step in torch_step.py, the noise and sgemm micro-benchmarks in
bench_kernels.py, timing / load average / JSON writing in common.py.
"""

import sys

import common


def build_parser():
    """The ArgumentParser of the step benchmark (flags in the module docstring)."""
    p = common.make_parser(__doc__.split("\n")[0])
    p.add_argument("--arch", default="all", choices=["lenet300", "lenet5", "all"],
                   help="network(s) to time (default: %(default)s = both)")
    p.add_argument("--phase", default="all", choices=["vd", "vdsws", "l2", "sws", "all"],
                   help="phase of the step table (default: %(default)s = vd and vdsws); --epoch times all four")
    p.add_argument("--dtype", default="all", choices=["float32", "float64", "all"],
                   help="parameter dtype of the step table (default: %(default)s = both)")
    p.add_argument("--steps", type=int, default=30, help="timed steps per measurement (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before timing (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=3,
                   help="measurements per configuration, interleaved with torch; the median of all "
                        "timed steps is reported and the spread of per-repeat medians (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None,
                   help="REFVBC_THREADS and NUMBA_NUM_THREADS, set before import (default: %(default)s = "
                        "refvbc's policy, all CPUs)")
    p.add_argument("--torch-threads", default="2,1",
                   help="comma list of torch.set_num_threads values to measure (default: %(default)s: the "
                        "reference setup, and one thread, which is faster on a loaded 2-core machine); the "
                        "ratio is taken against the fastest")
    p.add_argument("--torch-budget", type=float, default=4.0,
                   help="seconds per torch measurement at most: fewer timed steps (>= 3) when a torch step "
                        "is slow (default: %(default)s)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="refvbc's stepper, train.make_stepper's device (default: %(default)s)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison (default: %(default)s)")
    p.add_argument("--no-mallopt", action="store_true",
                   help="do not keep freed memory in glibc's heap (by default the benchmark does, as a training "
                        "run does: refvbc.parallel.keep_freed_memory) (default: %(default)s)")
    p.add_argument("--epoch", action="store_true",
                   help="also time one full epoch (600 steps and the test evaluation, float32) per "
                        "architecture and phase (l2, sws, vd, vdsws) (default: %(default)s)")
    p.add_argument("--epoch-only", action="store_true",
                   help="with --epoch: skip the step table (default: %(default)s)")
    p.add_argument("--json", default=None, metavar="FILE",
                   help="write the figures as JSON records to FILE (default: %(default)s = none)")
    return p


def parse_args(argv=None):
    """Parse argv (sys.argv[1:] when None). Returns the argparse Namespace, with torch_thread_list, the
    --torch-threads values as ints."""
    args = build_parser().parse_args(argv)
    args.torch_thread_list = [int(v) for v in str(args.torch_threads).split(",") if v.strip()]
    return args


def main(argv=None):
    """Parse the flags, set the thread environment, then import refvbc (through step_compare) and run.
    Returns the exit status."""
    args = parse_args(argv)
    common.set_thread_env(args.threads)  # before numba and refvbc are imported
    import step_compare
    return step_compare.run(args)


if __name__ == "__main__":
    sys.exit(main())
