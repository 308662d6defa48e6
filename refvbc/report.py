"""Results of a run: compress each trained model to a real `.rvbc` file, evaluate the decoded file,
write results.json, print the paper's Table 2 beside ours, and (when matplotlib is installed) figures.

Two compression ratios are reported (see README, "Compression ratios"):
    ratio_file   32 * (weights + biases) / (8 * bytes of the .rvbc file)   -- everything counted
    ratio_paper  the paper's accounting: 32 * weights / (bits of values + offsets + codebook)
"""

import io
import json
import os

import numpy as np

from . import models
from .arch import GAMMA_BETA, N_COMPONENTS, PI0, get_arch
from .fileio import atomic_write_bytes
from .models import prune_masks
from .phases import METHODS, PHASES

# Table 2 of the paper: (accuracy %, non-zero %, compression ratio).
PAPER_TABLE2 = {
    "lenet300": {"l2": (98.39, 100.0, 1), "sws": (98.16, 8.6, 34), "vd": (98.05, 1.6, 131),
                 "vdsws": (98.24, 1.5, 161)},
    "lenet5": {"l2": (99.13, 100.0, 1), "sws": (99.01, 3.6, 84), "vd": (99.09, 0.7, 349),
               "vdsws": (99.14, 0.5, 482)},
}


def summarize(arch, method, params, x_test, y_test, out_dir, compress_opts=None, finetune=None,
              gamma_beta=None):
    """Compress `params` trained by `method`, write `<out_dir>/<method>.rvbc`, read it back, and
    evaluate the decoded model.  Returns the results.json entry of this method.

    gamma_beta: the Gamma hyper-prior's beta the model was trained with (None: the paper's), named in
    the row label when it is not the paper's.

    finetune: None, or dict(variant, epochs, lr, x, y, seed[, log]) for the beyond-the-paper
    re-training after the collapse (refvbc/finetune.py); its file is `<method>-finetuned.rvbc`."""
    from . import compress  # the compression pipeline (higher level than training)

    acc_masked = models.accuracy(arch, params, x_test, y_test, prune_masks(arch, params))
    opts = dict(compress_opts or {})
    name = method
    if finetune is None:
        cm = compress.compress_model(arch, params, method, **opts)
    else:
        from .compress.pipeline import QUANTIZE_OPTIONS, layout_model, quantize
        from .finetune import finetune_quantized

        q = quantize(arch, params, method, **{k: opts.pop(k) for k in QUANTIZE_OPTIONS if k in opts})
        ft = dict(finetune)
        q, b = finetune_quantized(arch, q, {l.name: params[f"{l.name}.bias"] for l in get_arch(arch)},
                                  ft.pop("x"), ft.pop("y"), **ft)
        cm = layout_model(arch, method, q, b, **opts)
        name = f"{method}-finetuned"
    path = os.path.join(out_dir, f"{name}.rvbc")
    compress.write_rvbc(path, cm)
    decoded = compress.read_rvbc(path)
    x = models.check_input(arch, x_test)
    logits = compress.evaluate(decoded, x)
    acc = float(np.mean(np.argmax(logits, axis=1) == y_test))
    acc_mem = float(np.mean(np.argmax(compress.evaluate(cm, x), axis=1) == y_test))
    rep = compress.report(decoded)
    entry = {
        "method": method, "label": _label(method, params, finetune is not None, gamma_beta),
        "arch": arch, "test_acc_compressed": acc, "test_acc_compressed_in_memory": acc_mem,
        "test_acc_uncompressed": acc_masked,
        "nonzero_fraction": rep["total"]["nonzeros"] / rep["total"]["n_weights"],
        "ratio_file": rep["total"]["cr_file"], "ratio_paper": rep["total"]["cr_paper"],
        "file": os.path.basename(path), "file_bytes": os.path.getsize(path),
        "layers": rep["layers"], "totals": rep["total"],
    }
    if "gmm.mu" in params:
        sig = np.exp(-0.5 * np.asarray(params["gmm.log_lambda"], np.float64))
        entry["mixture"] = {"components": len(params["gmm.mu"]),
                            "mu": np.asarray(params["gmm.mu"], np.float64).tolist(),
                            "sigma": sig.tolist(), "sigma_median": float(np.median(sig))}
    if finetune is not None:
        entry["finetune"] = {k: v for k, v in finetune.items() if k in ("variant", "epochs", "lr", "seed")}
    return entry


def _label(method, params, finetuned, gamma_beta=None):
    """The row label of `method`'s entry: the phase's, with what is beyond the paper named (fine-tuning,
    a mixture of other than the paper's 17 components, a Gamma hyper-prior beta other than its 10)."""
    K = len(params["gmm.mu"]) if "gmm.mu" in params else N_COMPONENTS
    beta = "gmm.mu" in params and gamma_beta is not None and gamma_beta != GAMMA_BETA
    notes = (" fine-tuned" * finetuned + (f" K={K}" if K != N_COMPONENTS else "")
             + (f" β={gamma_beta:g}" if beta else ""))
    return PHASES[method].label + (f"{notes} (beyond the paper)" if notes else "")


def table2(arch, results):
    """Table 2 as text: ours (measured) beside the paper's numbers."""
    lines = [f"Table 2, {arch} (ours: measured on the decoded .rvbc file; paper: Federici et al. 2017)",
             f"{'method':8s} {'acc ours':>9s} {'acc paper':>9s} {'nz% ours':>9s} {'nz% paper':>9s} "
             f"{'CR file':>8s} {'CR paper-acct':>13s} {'CR paper':>8s}"]
    for key, r in results.items():
        m = r["method"]
        pa, pn, pc = PAPER_TABLE2[arch][m]
        lab = PHASES[m].label + ("+ft" if "finetune" in r else "")
        lines.append(f"{lab:8s} {100 * r['test_acc_compressed']:8.2f}% {pa:8.2f}% "
                     f"{100 * r['nonzero_fraction']:8.2f}% {pn:8.1f}% {r['ratio_file']:7.1f}x "
                     f"{r['ratio_paper']:12.1f}x {pc:7d}x")
    ks = sorted({r["mixture"]["components"] for r in results.values() if "components" in r.get("mixture", {})})
    if ks and ks != [N_COMPONENTS]:
        lines.append(f"mixture components K = {', '.join(map(str, ks))} (Table 3: {N_COMPONENTS}): "
                     "beyond the paper")
    return "\n".join(lines)


def write_results(out_dir, arch, results, extra=None):
    """results.json in `out_dir` (atomic)."""
    doc = {"arch": arch, "methods": results, "paper_table2": PAPER_TABLE2[arch]}
    if extra:
        doc.update(extra)
    atomic_write_bytes(os.path.join(out_dir, "results.json"),
                       json.dumps(doc, indent=2, default=float).encode())


def save_figure(fig, path, dpi=90):
    """A matplotlib figure as a PNG at `path`, written atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())


def figures(out_dir, arch, finals, pi0=PI0, delta_mu_over="survivors"):
    """Weight-mean histograms with the learned mixture (before/after SWS; zero component's proportion
    `pi0`; the "before" panel shows the initial mixture as the run built it, delta_mu_over as in
    config.Config) and per-layer sparsity. Returns the list of PNGs written; [] when matplotlib is not
    installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    for phase in (m for m in METHODS if PHASES[m].mixture):
        if phase in finals and PHASES[phase].start in finals:
            fig = _mixture_histograms(plt, arch, finals, phase, pi0, delta_mu_over)
            written.append(_save_and_close(plt, fig, os.path.join(out_dir, f"hist_{phase}.png")))
    fig = _sparsity_bars(plt, arch, finals)
    written.append(_save_and_close(plt, fig, os.path.join(out_dir, "sparsity.png")))
    return written


def _save_and_close(plt, fig, path):
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def _mixture_density(grid, mu, log_lambda, log_pi, pi0):
    """The mixture's density on `grid` (the zero component's proportion pi0, the others softmax(rho))."""
    pi = np.empty(len(mu))
    pi[0] = pi0
    e = np.exp(log_pi[1:] - log_pi[1:].max())
    pi[1:] = (1.0 - pi0) * e / e.sum()
    lam = np.exp(log_lambda)
    return (pi[:, None] * np.sqrt(lam[:, None] / (2 * np.pi))
            * np.exp(-0.5 * lam[:, None] * (grid[None] - mu[:, None]) ** 2)).sum(0)


def _mixture_histograms(plt, arch, finals, phase, pi0, delta_mu_over):
    """Two panels: the weight means of the model `phase` starts from with the mixture it is given
    (Table 3's initialisation), and those of `phase` with its learned mixture."""
    from .priors import mixture_init

    net = get_arch(arch)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], PHASES[phase].start, "before"), (axes[1], phase, "after")):
        p = finals[key]
        w = np.concatenate([p[f"{l.name}.theta"].ravel() for l in net]).astype(np.float64)
        if "gmm.mu" in p:
            mu, ll, lp = p["gmm.mu"], p["gmm.log_lambda"], p["gmm.log_pi"]
        else:  # Table 3's initialisation with the trained mixture's K
            w0 = models.mixture_init_weights(arch, p, delta_mu_over).astype(np.float64)
            mu, ll, lp = mixture_init(w0, K=len(finals[phase]["gmm.mu"]), pi0=pi0, dtype=np.float64)
        counts = ax.hist(w, bins=200, density=True, color="0.6", log=True)[0]
        grid = np.linspace(w.min(), w.max(), 1000)
        ax.plot(grid, _mixture_density(grid, mu, ll, lp, pi0), "r-", lw=1)
        ax.set_title(f"{arch} {PHASES[phase].label}: weight means {title} ({PHASES[key].label})")
        ax.set_ylim(1e-3, 10 * counts.max())  # the zero component's peak is far higher
    return fig


def _sparsity_bars(plt, arch, finals):
    """Per layer and model: the non-zero weights that survive the pruning rule, in %."""
    net = get_arch(arch)
    fig, ax = plt.subplots(figsize=(7, 4))
    names = [l.name for l in net]
    width = 0.8 / max(1, len(finals))
    for j, (m, p) in enumerate(finals.items()):
        masks = prune_masks(arch, p)
        frac = []
        for l in net:
            w = p[f"{l.name}.theta"]
            keep = masks[l.name] if masks else np.ones(w.shape, bool)
            frac.append(100.0 * np.mean(keep & (w != 0)))
        ax.bar(np.arange(len(names)) + j * width, frac, width, label=PHASES[m].label)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2)
    ax.set_xticklabels(names)
    ax.set_ylabel("non-zero weights [%] (before clustering)")
    ax.set_yscale("log")
    ax.legend()
    return fig
