"""Command line of the compressor.

    python -m refvbc.compress encode PARAMS.npz OUT.rvbc [--arch A] --method M [--offset-bits-dense 5]
                              [--offset-bits-conv 8] [--huffman-offsets] [--layout auto|csr|dense]
                              [--vd-shared-gmm] [--vd-components 64] [--prune-threshold 0.95]
    python -m refvbc.compress decode IN.rvbc OUT.npz    full-shape float32 params (param/<name>, config/arch)
    python -m refvbc.compress eval IN.rvbc [--data DIR] test accuracy on the bundled MNIST
    python -m refvbc.compress info IN.rvbc              the accounting (per layer, totals, both ratios)
    python -m refvbc.compress run IN.rvbc [--batch N] [--data DIR]
                                                        test accuracy of the sparse model built from the file
    python -m refvbc.compress bench IN.rvbc [--json FILE] [--data DIR] [--calls N] [--rounds N]
                                                        sparse model vs dense decoded: latency (batch 1),
                                                        throughput (batch 1000), weight bytes, accuracy

PARAMS.npz holds `param/<name>` arrays and `config/arch` (the cross-check layout of the spec); --arch
overrides / replaces config/arch. A mixture model's `config/pi0` (written by training) is the zero
component's proportion the argmax uses (0.999 when absent). Exit status 2 with a one-line message on
bad input.
"""

import argparse
import os
import sys

import numpy as np

from refvbc.arch import PI0
from refvbc.compress import (FormatError, accuracy, compress_model, format_report, read_rvbc, report,
                             write_rvbc)
from refvbc.compress.cluster import VD_COMPONENTS
from refvbc.compress.pipeline import add_clustering_arguments
from refvbc.fileio import load_npz
from refvbc.priors import DROPOUT_THRESHOLD


def load_params_npz(path, arch=None, with_pi0=False):
    """Read PARAMS.npz -> (arch, params dict), or (arch, params, pi0) with `with_pi0` (config/pi0,
    PI0 when absent). Raises ValueError on a missing/odd file."""
    z = load_npz(path, "parameter file")
    params = {k[len("param/"):]: v for k, v in z.items() if k.startswith("param/")}
    file_arch = str(z["config/arch"]) if "config/arch" in z else None
    arch = arch or file_arch
    if arch is None:
        raise ValueError(f"{path} has no config/arch; pass --arch")
    if not params:
        raise ValueError(f"{path} holds no param/<name> arrays")
    if with_pi0:
        return arch, params, float(z["config/pi0"]) if "config/pi0" in z else PI0
    return arch, params


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m refvbc.compress", description=__doc__.split("\n")[0], allow_abbrev=False)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("encode", allow_abbrev=False, help="compress PARAMS.npz into OUT.rvbc")
    e.add_argument("params")
    e.add_argument("out")
    e.add_argument("--arch", default=None)
    e.add_argument("--method", required=True, choices=["l2", "vd", "sws", "vdsws"])
    e.add_argument("--offset-bits-dense", type=int, default=5)
    e.add_argument("--offset-bits-conv", type=int, default=8)
    e.add_argument("--huffman-offsets", action="store_true")
    e.add_argument("--layout", default="auto", choices=["auto", "csr", "dense"])
    e.add_argument("--vd-shared-gmm", action="store_true",
                   help="vd: one 64-component GMM over all layers instead of one per layer")
    e.add_argument("--vd-components", type=int, default=VD_COMPONENTS,
                   help="vd: components of the codebook's 1-D GMM (default %(default)s)")
    e.add_argument("--prune-threshold", type=float, default=DROPOUT_THRESHOLD,
                   help="vd/vdsws: prune weights whose dropout rate is at least this (default %(default)s)")
    add_clustering_arguments(e)
    d = sub.add_parser("decode", allow_abbrev=False, help="write the decoded full-shape parameters to OUT.npz")
    d.add_argument("rvbc")
    d.add_argument("out")
    v = sub.add_parser("eval", allow_abbrev=False, help="test accuracy of IN.rvbc on MNIST")
    v.add_argument("rvbc")
    v.add_argument("--data", default=None, help="MNIST folder (default: the bundled data/mnist)")
    i = sub.add_parser("info", allow_abbrev=False, help="print the accounting of IN.rvbc")
    i.add_argument("rvbc")
    r = sub.add_parser("run", allow_abbrev=False, help="test accuracy of the sparse model built straight from IN.rvbc")
    r.add_argument("rvbc")
    r.add_argument("--batch", type=int, default=1000, help="images per forward call (default 1000)")
    r.add_argument("--data", default=None, help="MNIST folder (default: the bundled data/mnist)")
    b = sub.add_parser("bench", allow_abbrev=False, help="sparse model against the dense decoded one, measured interleaved")
    b.add_argument("rvbc")
    b.add_argument("--json", default=None, help="also write the figures to this JSON file")
    b.add_argument("--data", default=None, help="MNIST folder (default: the bundled data/mnist)")
    b.add_argument("--calls", type=int, default=2000, help="batch-1 calls per model (default 2000)")
    b.add_argument("--rounds", type=int, default=20, help="batch-1000 calls per model (default 20)")
    a = p.parse_args(argv)
    try:
        if a.cmd == "encode":
            arch, params, pi0 = load_params_npz(a.params, a.arch, with_pi0=True)
            cm = compress_model(arch, params, a.method,
                                offset_bits={"dense": a.offset_bits_dense, "conv": a.offset_bits_conv},
                                huffman_offsets=a.huffman_offsets, layout=a.layout,
                                vd_per_layer=not a.vd_shared_gmm, prune_first=not a.no_prune_first,
                                merge_kl=a.merge_kl, assign=a.assign, vd_components=a.vd_components,
                                prune_threshold=a.prune_threshold, pi0=pi0)
            n = write_rvbc(a.out, cm)
            t = report(cm)["total"]
            print(f"wrote {a.out}: {n} bytes, cr_file {t['cr_file']:.1f}, cr_paper {t['cr_paper']:.1f}")
        elif a.cmd == "decode":
            cm = read_rvbc(a.rvbc)
            out = {f"param/{k}": v for k, v in cm.to_params().items()}
            out["config/arch"] = np.array(cm.arch)
            out["config/method"] = np.array(cm.method)
            tmp = a.out + ".tmp.npz"
            np.savez(tmp, **out)
            os.replace(tmp, a.out)
            print(f"wrote {a.out}")
        elif a.cmd == "eval":
            from refvbc.data import load_mnist

            cm = read_rvbc(a.rvbc)
            x, y = load_mnist("test", a.data)
            acc = accuracy(cm, x, y)
            print(f"{a.rvbc}: test accuracy {100 * acc:.2f}% ({cm.arch}, {cm.method})")
        elif a.cmd == "info":
            print(format_report(report(read_rvbc(a.rvbc))))
        elif a.cmd == "run":
            from refvbc.compress.sparse_model import SparseModel
            from refvbc.data import load_mnist

            if a.batch < 1:
                raise ValueError(f"--batch must be at least 1, got {a.batch}")
            sm = SparseModel.from_file(a.rvbc)
            x, y = load_mnist("test", a.data)
            acc = sm.accuracy(x, y, a.batch)
            print(f"{a.rvbc}: test accuracy {100 * acc:.2f}% ({sm.arch}, {sm.method}; sparse model, batch {a.batch})")
        elif a.cmd == "bench":
            import json

            from refvbc.compress.bench import JSON_KEYS, benchmark, format_bench
            from refvbc.data import load_mnist
            from refvbc.fileio import atomic_write_bytes

            if a.calls < 1 or a.rounds < 1:
                raise ValueError(f"--calls and --rounds must be at least 1, got {a.calls} and {a.rounds}")
            read_rvbc(a.rvbc)  # a damaged file stops here, before the data is read
            x, y = load_mnist("test", a.data)
            res = benchmark(a.rvbc, x, y, calls=a.calls, rounds=a.rounds)
            print(format_bench(a.rvbc, res))
            if a.json:
                out = {k: res[k] for k in JSON_KEYS}
                atomic_write_bytes(a.json, (json.dumps(out, indent=1) + "\n").encode())
                print(f"wrote {a.json}")
    except (FormatError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
