"""Command line of refvbc.crosscheck.

    python -m refvbc.crosscheck [export] --arch A --tau2 T --batch B --seed S [--steps K]
                                [--mask-pruned] [--components C] [--dtype float64|float32] [--inputs-only]
                                --out FILE.npz
    python -m refvbc.crosscheck verify FILE.npz [--rtol R]
"""

import argparse
import sys

from ..arch import N_COMPONENTS
from ..priors import check_components
from .export import build, write
from .verify import verify_file

USAGE = __doc__.split("\n\n")[1]


def _export(argv):
    p = argparse.ArgumentParser(prog="python -m refvbc.crosscheck [export]", allow_abbrev=False,
                                description="Write a cross-check file (docs/crosscheck.md) computed by refvbc.",
                                epilog="To check a file another framework wrote: python -m refvbc.crosscheck verify "
                                       "FILE.npz [--rtol R]")
    p.add_argument("--arch", required=True, choices=["lenet300", "lenet5"])
    p.add_argument("--tau2", type=float, default=0.0, help="mixture coefficient (0 or 0.02 in the paper)")
    p.add_argument("--tau1", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=0,
                   help="also write K Adam steps (Table-3 learning rates), each with its own minibatch")
    p.add_argument("--mask-pruned", action="store_true",
                   help="the loss's mask_pruned option (config/mask_pruned = 1): weights with log alpha >= "
                        "log 19 are zero in the forward pass; the parameters then hold 40%% pruned weights")
    p.add_argument("--components", type=int, default=N_COMPONENTS, metavar="C",
                   help="mixture components, an odd integer >= 3 (default %(default)s, the paper's Table 3)")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                   help="float32 writes what refvbc's float32 path computes (float32 arrays)")
    p.add_argument("--inputs-only", action="store_true",
                   help="write only the input keys (config, params, minibatches, noise), for another "
                        "framework to add its outputs to")
    p.add_argument("--out", required=True, help="output .npz path")
    a = p.parse_args(argv)
    if a.batch < 1:
        p.error(f"--batch must be >= 1, got {a.batch}")
    if not 0 <= a.steps <= 1000:
        p.error(f"--steps must lie in 0..1000, got {a.steps}")
    try:
        check_components(a.components)
    except ValueError as e:
        p.error(f"--components: {e}")
    arrays = build(a.arch, a.tau2, a.batch, a.seed, tau1=a.tau1, steps=a.steps, dtype=a.dtype,
                   with_outputs=not a.inputs_only, mask_pruned=a.mask_pruned, components=a.components)
    try:
        write(a.out, arrays)
    except OSError as e:
        print(f"error: cannot write {a.out}: {e.strerror or e}", file=sys.stderr)
        return 2
    loss = f", loss {float(arrays['out/loss']):.12g}" if "out/loss" in arrays else " (inputs only)"
    print(f"wrote {a.out}: {len(arrays)} arrays{loss}")
    return 0


def _verify(argv):
    p = argparse.ArgumentParser(prog="python -m refvbc.crosscheck verify", allow_abbrev=False,
                                description="Recompute a cross-check file with refvbc in float64 and compare "
                                            "every output tensor. Exit 0 agree, 1 differ, 2 invalid file.")
    p.add_argument("file", help="a cross-check .npz written by any framework")
    p.add_argument("--rtol", type=float, default=None,
                   help="per-tensor tolerance on max|theirs - refvbc| / max|refvbc| "
                        "(default 1e-7 for float64 files, 1e-3 for float32 files)")
    a = p.parse_args(argv)
    if a.rtol is not None and not a.rtol >= 0:
        p.error(f"--rtol must be >= 0, got {a.rtol}")
    return verify_file(a.file, rtol=a.rtol)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "verify":
        return _verify(argv[1:])
    if argv and argv[0] == "export":
        argv = argv[1:]
    return _export(argv)
