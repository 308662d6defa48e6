"""Where a trained VD+SWS model loses accuracy at the collapse (spec "Clustering"; paper §3 (i)).

    python scripts/collapse_report.py docs/results/lenet5/vdsws.npz [--clusters 17] [--data DIR]

Every row but the first is a compressed model written to bytes (the `.rvbc` format), decoded and
evaluated on the MNIST test set, so its accuracy and ratio are those of a real file:

  masked              theta with the alpha >= 19 weights zeroed, not quantized (no file)
  paper collapse      the paper's pipeline (method vdsws): each survivor collapsed onto the mean of
                      the shared mixture component of highest responsibility
  ... one layer       the collapse applied to one layer only, the others masked and unquantized
                      (rows are float weights, so no ratio: which layer carries the loss)
  argmax-zero kept    the paper's collapse, but the survivors whose argmax is the zero component
                      keep theta (what zeroing them costs)
  VD codebook, K      VD's pipeline (appendix B.1) on the same weights: dropout-rate pruning, then a
                      1-D GMM of K components fitted per layer ("per layer") or over all layers
                      ("shared"); not the paper's VD+SWS pipeline, a yardstick for the collapse

Prints one line per row: accuracy, non-zero %, file bytes and file CR (32 bits per weight and bias
over the file's bits).
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from refvbc import data, models  # noqa: E402
from refvbc.arch import get_arch  # noqa: E402
from refvbc.compress import accuracy, report  # noqa: E402
from refvbc.compress.__main__ import load_params_npz  # noqa: E402
from refvbc.compress.fileformat import decode, encode  # noqa: E402
from refvbc.compress.pipeline import layout_model, quantize  # noqa: E402
from refvbc.models import prune_masks  # noqa: E402


def file_row(arch, method, quantized, params, x, y):
    """Lay out `quantized`, encode to bytes, decode, evaluate -> (acc, nonzero %, bytes, CR file)."""
    biases = {layer.name: params[f"{layer.name}.bias"] for layer in get_arch(arch)}
    cm = layout_model(arch, method, quantized, biases)
    blob = encode(cm)
    decoded = decode(blob)
    acc = accuracy(decoded, x, y)
    tot = report(decoded)["total"]
    return acc, tot["nonzero_percent"], len(blob), tot["cr_file"]


def float_acc(arch, params, masks, weights, x, y):
    """Test accuracy (the deterministic evaluation pass, weight means times the pruning masks, as
    results.json's masked accuracy) with the given layers' weights replaced."""
    q = dict(params)
    for name, w in weights.items():
        q[f"{name}.theta"] = np.asarray(w, params[f"{name}.theta"].dtype)
    return models.accuracy(arch, q, x, y, masks)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("params", help="a VD+SWS phase model (<phase>.npz of run_experiments.py)")
    p.add_argument("--clusters", default="17", help="comma-separated K of the VD-codebook rows (default 17)")
    p.add_argument("--data", default=None, help="MNIST directory (default: the bundled data/)")
    a = p.parse_args(argv)
    try:
        ks = [int(k) for k in a.clusters.split(",")]
        if any(k < 1 for k in ks):
            raise ValueError
    except ValueError:
        p.error(f"--clusters: expected comma-separated integers >= 1, got {a.clusters!r}")
    try:
        arch, params, pi0 = load_params_npz(a.params, with_pi0=True)  # pi0: the one it was trained with
        x, y = data.load_mnist("test", a.data)
        names = [layer.name for layer in get_arch(arch)]
        if "gmm.mu" not in params or any(f"{n}.log_sigma2" not in params for n in names):
            p.error(f"{a.params} is not a VD+SWS model (it needs log_sigma2 and the mixture gmm.*)")
        paper = quantize(arch, params, "vdsws", pi0=pi0)  # checks every shape first
    except (ValueError, OSError) as e:
        p.error(str(e))
    x = models.check_input(arch, x)
    masks = prune_masks(arch, params)

    print(f"# {a.params} ({arch}), MNIST test set, {len(y)} images")
    print(f"{'masked (alpha >= 19 zeroed, not quantized)':48s} {float_acc(arch, params, masks, {}, x, y):.2%}")
    acc, nz, nbytes, cr = file_row(arch, "vdsws", paper, params, x, y)
    print(f"{'paper collapse (vdsws)':48s} {acc:.2%}  non-zero {nz:.3f}%  {nbytes} B  CR file {cr:.1f}x")
    for n in names:
        zeroed = int(masks[n].sum() - np.count_nonzero(paper[n]))
        print(f"{'  collapse of ' + n + ' only':48s} {float_acc(arch, params, masks, {n: paper[n]}, x, y):.2%}  "
              f"({int(masks[n].sum())} survivors, {zeroed} of them zeroed by the argmax)")
    kept = {n: np.where((paper[n] == 0) & masks[n], params[f"{n}.theta"], paper[n]) for n in names}
    print(f"{'paper collapse, argmax-zero survivors keep theta':48s} {float_acc(arch, params, masks, kept, x, y):.2%}")
    for k in ks:
        for per_layer in (True, False):
            q = quantize(arch, params, "vd", vd_components=k, vd_per_layer=per_layer)
            acc, nz, nbytes, cr = file_row(arch, "vd", q, params, x, y)
            tag = f"VD codebook, K = {k} {'per layer' if per_layer else 'shared'}"
            print(f"{tag:48s} {acc:.2%}  non-zero {nz:.3f}%  {nbytes} B  CR file {cr:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
