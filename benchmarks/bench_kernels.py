"""Micro-benchmarks beside the step comparison: the noise draw of one training step, and numpy's float32
GEMM rate on LeNet-5's conv2 shape (one thread, and in two halves on refvbc's thread pool).

bench_step.py prints the first as its "# noise draw" lines and records the second as its "sgemm" JSON
record; this tool runs them alone.

Threads: refvbc's default policy (refvbc/parallel.py); set REFVBC_THREADS / NUMBA_NUM_THREADS in the
environment to change it (they are read when refvbc is imported, which this module does).

Usage:  python benchmarks/bench_kernels.py [--arch lenet300|lenet5|all] [--repeat 10] [--sgemm-repeat 20]
            [--no-torch]

Shape legend
    BATCH      100, the training batch
    a, b       the sgemm operands (50, 500) @ (500, 6400): conv2's filters x im2col columns of 25 images
"""

import os
import sys

import common

common.add_repo_to_path()

import numpy as np  # noqa: E402

from refvbc import models, parallel  # noqa: E402
from refvbc.arch import get_arch  # noqa: E402

BATCH = common.BATCH


def bench_noise(arch, torch, repeat=10):
    """Median seconds of one step's noise draw for `arch` (batch 100, float32): refvbc's models.draw_noise
    into reused buffers, numpy's standard_normal and, when torch is given, torch.randn.

    Returns: one line of text.
    """
    rng = np.random.default_rng(1)
    buf = {}
    ts = common.time_steps(lambda: models.draw_noise(arch, BATCH, rng, np.float32, out=buf), repeat)
    s = f"noise draw {arch}: refvbc {np.median(ts):.4f} s"
    shapes = [(BATCH,) + layer.preact_shape for layer in get_arch(arch)]
    ts = common.time_steps(lambda: [rng.standard_normal(sh, dtype=np.float32) for sh in shapes], repeat)
    s += f", numpy standard_normal {np.median(ts):.4f} s"
    if torch is not None:
        ts = common.time_steps(lambda: [torch.randn(sh) for sh in shapes], repeat)
        s += f", torch.randn {np.median(ts):.4f} s (torch threads {torch.get_num_threads()})"
    return s


def sgemm_rate(repeat=20):
    """numpy float32 GEMM GFLOP/s on LeNet-5's conv2 shape (50x500 @ 500x6400): one thread, and split in
    two column halves on refvbc's thread pool (how the layers use both cores).

    Returns: (GFLOP/s on one thread, GFLOP/s in two halves on the pool), medians of `repeat` calls.
    """
    rng = np.random.default_rng(0)
    a = rng.random((50, 500), dtype=np.float32)
    b = rng.random((500, 6400), dtype=np.float32)
    out = np.empty((50, 6400), dtype=np.float32)
    halves = [np.ascontiguousarray(b[:, :3200]), np.ascontiguousarray(b[:, 3200:])]
    outs = [np.empty((50, 3200), dtype=np.float32) for _ in halves]
    flop = 2.0 * 50 * 500 * 6400
    one = common.time_steps(lambda: np.dot(a, b, out=out), repeat)
    two = common.time_steps(lambda: parallel.run_parts(lambda i: np.dot(a, halves[i], out=outs[i]), 2), repeat)
    return flop / np.median(one) / 1e9, flop / np.median(two) / 1e9


def sgemm_line(s1, s2):
    """The printed line of sgemm_rate's figures, with the load average now."""
    return (f"# numpy sgemm on conv2's shape (50x500 @ 500x6400): {s1:.1f} GFLOP/s on one thread, {s2:.1f} "
            f"GFLOP/s in two halves on refvbc's {parallel.N_THREADS} threads; load {common.load_list()}")


def import_torch(no_torch):
    """torch, or None with --no-torch or when it is not importable (a line says so)."""
    if no_torch:
        return None
    try:
        import torch
    except ImportError:
        print("# torch is not importable: no PyTorch comparison")
        return None
    return torch


def build_parser():
    """The ArgumentParser of this tool (flags in the module docstring)."""
    p = common.make_parser(__doc__.split("\n")[0])
    p.add_argument("--arch", default="all", choices=["lenet300", "lenet5", "all"],
                   help="network whose noise draw is timed (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=10, help="timed noise draws per measurement (default: %(default)s)")
    p.add_argument("--sgemm-repeat", type=int, default=20, help="timed GEMMs per setting (default: %(default)s)")
    p.add_argument("--no-torch", action="store_true", help="skip torch.randn (default: %(default)s)")
    return p


def main(argv=None):
    """Run the micro-benchmarks of argv (sys.argv[1:] when None). Returns the exit status."""
    args = build_parser().parse_args(argv)
    torch = import_torch(args.no_torch)
    archs = ["lenet300", "lenet5"] if args.arch == "all" else [args.arch]
    print(f"# cpus {os.cpu_count()}; refvbc threads {parallel.N_THREADS}; {parallel.BLAS_NOTE}; "
          f"load average {common.load_average()}")
    for arch in archs:
        print("# " + bench_noise(arch, torch, args.repeat), flush=True)
    print(sgemm_line(*sgemm_rate(args.sgemm_repeat)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
