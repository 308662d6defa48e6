"""The compression pipeline (paper §3, Figure 1): cluster -> prune -> CSR -> Huffman, and the forward pass
of a compressed model.

Shape legend
    N        batch size
    x        lenet300: (N, 784); lenet5: (N, 1, 28, 28) (or (N, 784), reshaped)
    logits   (N, 10)
    O', U'   kept output / input units of a layer (refvbc/compress/prune.py)

Parameters are the flat dict of the project ("<layer>.theta", "<layer>.log_sigma2", "<layer>.bias",
"gmm.mu", "gmm.log_lambda", "gmm.log_pi"). Methods (paper Table 2 and appendix B.1):
    "l2"     float32 weights as they are (exact zeros still removed); no codebook, raw float32 values
    "sws"    mixture argmax (deterministic weights, no log_sigma2)
    "vdsws"  dropout-rate pruning (>= 0.95), then mixture argmax
    "vd"     dropout-rate pruning, then a 64-component (`vd_components`) 1-D GMM fitted by EM,
             quantized to its means
"""

import numpy as np

from refvbc.arch import PI0, get_arch
from refvbc.compress import cluster, fileformat
from refvbc.compress.model import METHODS, CompressedLayer, CompressedModel
from refvbc.compress.prune import geometry, pruned_weight, structural_prune
from refvbc.priors import DROPOUT_THRESHOLD

# The keyword options of `quantize` (compress_model passes them on; report.summarize separates them
# from the layout options when it fine-tunes between the two steps).
QUANTIZE_OPTIONS = ("vd_per_layer", "prune_first", "merge_kl", "vd_components", "prune_threshold", "pi0",
                    "assign")

DEFAULT_OFFSET_BITS = {"dense": 5, "conv": 8}  # appendix B.2


def _offset_bits_for(geo, offset_bits):
    """Resolve the offset width of a layer: None -> defaults; int -> every layer; dict keyed by layer
    kind ("dense"/"conv") and/or layer name (a name wins)."""
    if offset_bits is None:
        return DEFAULT_OFFSET_BITS[geo.kind]
    if isinstance(offset_bits, dict):
        if geo.name in offset_bits:
            return int(offset_bits[geo.name])
        return int(offset_bits.get(geo.kind, DEFAULT_OFFSET_BITS[geo.kind]))
    return int(offset_bits)


def _check_params(arch, params, method):
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    layers = get_arch(arch)
    for layer in layers:
        for suffix in ("theta", "bias"):
            key = f"{layer.name}.{suffix}"
            if key not in params:
                raise ValueError(f"params lack {key!r} (method {method}, arch {arch})")
        t = np.asarray(params[f"{layer.name}.theta"])
        if t.shape != tuple(layer.weight_shape):
            raise ValueError(f"{layer.name}.theta has shape {t.shape}, expected {layer.weight_shape}")
        b = np.asarray(params[f"{layer.name}.bias"])
        if b.shape != (layer.weight_shape[0],):
            raise ValueError(f"{layer.name}.bias has shape {b.shape}, expected ({layer.weight_shape[0]},)")
        if not (np.isfinite(t).all() and np.isfinite(b).all()):
            raise ValueError(f"{layer.name}: non-finite theta or bias")
        if method in ("vd", "vdsws"):
            key = f"{layer.name}.log_sigma2"
            if key not in params or np.shape(params[key]) != t.shape:
                raise ValueError(f"method {method} needs {key!r} of shape {t.shape}")
    if method in ("sws", "vdsws"):
        for key in ("gmm.mu", "gmm.log_lambda", "gmm.log_pi"):
            if key not in params:
                raise ValueError(f"method {method} needs mixture parameter {key!r}")


def add_clustering_arguments(parser):
    """The command-line flags of `quantize`'s clustering options (run_experiments.py and
    `python -m refvbc.compress encode` share them): --no-prune-first, --merge-kl, --assign."""
    parser.add_argument("--no-prune-first", action="store_true",
                        help="vdsws: no dropout-rate pruning before the mixture argmax")
    parser.add_argument("--merge-kl", type=float, default=None,
                        help="sws/vdsws: merge mixture components closer than this symmetric KL first")
    parser.add_argument("--assign", default="responsibility", choices=cluster.ASSIGN_RULES,
                        help="sws/vdsws: collapse each weight onto the component of highest responsibility "
                             "pi_k N(theta | mu_k, 1/lambda_k) (default) or of highest density "
                             "N(theta | mu_k, 1/lambda_k), the mixing proportions left out")


def quantize(arch, params, method, vd_per_layer=True, prune_first=True, merge_kl=None,
             vd_components=cluster.VD_COMPONENTS, prune_threshold=DROPOUT_THRESHOLD, pi0=PI0,
             assign="responsibility"):
    """Step (i) of the pipeline, clustering: the quantized weight of every layer.

    Inputs:  arch; params flat dict; method in METHODS; vd_per_layer: see cluster.cluster_vd;
             prune_first: "vdsws" sets weights with dropout rate >= prune_threshold to 0 before the
             mixture argmax (the spec's order); False collapses them by the argmax alone;
             merge_kl: "sws"/"vdsws" merge mixture components closer than this first (None: no merging);
             vd_components: components of the "vd" codebook's 1-D GMM (appendix B.1: 64);
             prune_threshold: the dropout rate at and above which "vd"/"vdsws" prune a weight (0.95);
             pi0: the zero component's mixing proportion the "sws"/"vdsws" model was trained with;
             assign: "sws"/"vdsws" argmax rule, "responsibility" or "density" (cluster.cluster_mixture).
    Returns: dict layer name -> float32 array of the weight's shape (exact zeros where pruned).
    """
    _check_params(arch, params, method)
    if method == "vd" and not (isinstance(vd_components, (int, np.integer)) and vd_components >= 1):
        raise ValueError(f"vd_components must be an integer >= 1, got {vd_components!r}")
    names = [layer.name for layer in get_arch(arch)]
    thetas = {n: np.asarray(params[f"{n}.theta"]) for n in names}
    keep = None
    if method == "vd" or (method == "vdsws" and prune_first):
        keep = {n: cluster.dropout_keep_mask(thetas[n], np.asarray(params[f"{n}.log_sigma2"], thetas[n].dtype),
                                             prune_threshold) for n in names}
    if method == "l2":
        quantized = {n: thetas[n].astype(np.float32) for n in names}
    elif method == "vd":
        quantized = cluster.cluster_vd(thetas, keep, vd_components, per_layer=vd_per_layer)[2]
    else:
        mu = np.asarray(params["gmm.mu"])
        dt = mu.dtype if mu.dtype in (np.float32, np.float64) else np.float64
        quantized = cluster.cluster_mixture(
            {n: t.astype(dt, copy=False) for n, t in thetas.items()}, mu.astype(dt),
            np.asarray(params["gmm.log_lambda"], dt), np.asarray(params["gmm.log_pi"], dt), keep=keep,
            pi0=pi0, merge_kl=merge_kl, assign=assign)[2]
    for q in quantized.values():
        q[q == 0] = 0.0  # -0.0 -> +0.0: a zero is stored as "no entry" and decodes as +0.0
    return quantized


def compress_model(arch, params, method, offset_bits=None, huffman_offsets=False, layout="auto",
                   fold_constants=True, **quantize_options):
    """Cluster, prune and lay out a trained model.

    Inputs:  arch "lenet300"/"lenet5"; params flat dict; method in METHODS;
             offset_bits None (5 dense / 8 conv), an int, or a dict by layer kind and/or name;
             huffman_offsets: Huffman-code the CSR offsets too (Deep Compression; not in the paper);
             layout "csr", "dense" or "auto" (per layer, whichever gives fewer bytes: a dense layer is
             stored as all its kept entries with no offsets, which is what an unpruned L2 layer wants);
             fold_constants: see refvbc/compress/prune.py;
             quantize_options: the clustering options of `quantize` (QUANTIZE_OPTIONS).
    Returns: CompressedModel (validated).
    """
    quantized = quantize(arch, params, method, **quantize_options)
    biases = {layer.name: params[f"{layer.name}.bias"] for layer in get_arch(arch)}
    return layout_model(arch, method, quantized, biases, offset_bits, huffman_offsets, layout,
                        fold_constants)


def layout_model(arch, method, quantized, biases, offset_bits=None, huffman_offsets=False,
                 layout="auto", fold_constants=True):
    """Steps (ii)-(iii): structural pruning and the per-layer layout of already quantized weights.

    Inputs:  quantized dict layer -> float32 weights (exact zeros are gone; for every method but
             "l2" the distinct non-zero values become the codebook); biases dict layer -> (out,);
             the layout options of `compress_model`.
    Returns: CompressedModel (validated).
    """
    if layout not in ("auto", "csr", "dense"):
        raise ValueError(f"layout must be 'auto', 'csr' or 'dense', got {layout!r}")
    geos = geometry(arch)
    names = [g.name for g in geos]
    quantized = {n: np.asarray(quantized[n], np.float32) for n in names}
    biases = [np.asarray(biases[n]).astype(np.float32) for n in names]
    in_mask, out_masks, folded = structural_prune(geos, [quantized[n] for n in names], biases,
                                                  fold_constants=fold_constants)
    pruned = {}
    prev = in_mask
    for g, om in zip(geos, out_masks):
        pruned[g.name] = pruned_weight(quantized[g.name], g, om, prev)
        prev = om
    codebook, symbols = None, None
    if method != "l2":  # keep only the cluster centres that survived the pruning
        codebook, symbols = cluster.build_codebook(pruned)
    layers = []
    prev = in_mask
    for g, om, fb in zip(geos, out_masks, folded):
        s = None if symbols is None else symbols[g.name]
        layers.append(CompressedLayer(g.name, g.kind, tuple(g.weight_shape), om.copy(), prev.copy(),
                                      pruned[g.name], s, fb[om].astype(np.float32), "csr",
                                      _offset_bits_for(g, offset_bits), bool(huffman_offsets)))
        prev = om
    cm = CompressedModel(arch, method, codebook, layers)
    if layout == "dense":
        for L in cm.layers:
            L.layout = "dense"
    elif layout == "auto":
        csr_stats, dense_stats = {}, {}
        fileformat.encode(cm, csr_stats)
        for L in cm.layers:
            L.layout = "dense"
        fileformat.encode(cm, dense_stats)
        for L, a, b in zip(cm.layers, csr_stats["layers"], dense_stats["layers"]):
            size = lambda st: sum(v for k, v in st.items() if not k.startswith(("bits_", "n_")))
            L.layout = "csr" if size(a) <= size(b) else "dense"
    cm.validate()
    return cm


def evaluate(cm, x):
    """Deterministic forward pass of the pruned network.

    Inputs:  cm CompressedModel; x float32/float64 (N, 784) or, for lenet5, (N, 1, 28, 28).
    Returns: logits (N, 10) of x's dtype. Hidden layers: ReLU, conv layers then a 2x2 max-pool; the
             flatten is in (C, H, W) order (spec "Architectures").
    """
    from refvbc import layers as ly

    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        raise ValueError(f"evaluate: x has dtype {x.dtype}, expected float32 or float64")
    geos = geometry(cm.arch)
    if geos[0].kind == "conv":
        if x.ndim == 2 and x.shape[1] == 784:
            x = x.reshape(-1, 1, 28, 28)
        if x.ndim != 4 or x.shape[1:] != (geos[0].n_in_units, 28, 28):
            raise ValueError(f"evaluate: x has shape {x.shape}, expected (N, 1, 28, 28) for {cm.arch}")
    elif x.ndim != 2 or x.shape[1] != geos[0].n_in_units:
        raise ValueError(f"evaluate: x has shape {x.shape}, expected (N, {geos[0].n_in_units}) for {cm.arch}")
    dt = x.dtype
    N = x.shape[0]
    h = np.ascontiguousarray(x[:, cm.input_mask])
    last = len(geos) - 1
    for i, (g, L) in enumerate(zip(geos, cm.layers)):
        w = np.ascontiguousarray(L.weight, dtype=dt)  # same memory layout in memory and after decode,
        b = np.ascontiguousarray(L.bias, dtype=dt)  # so both give bit-identical logits
        if g.kind == "conv":
            oh, ow = get_arch(cm.arch)[i].preact_shape[1:]
            if h.shape[1] == 0 or w.shape[0] == 0:  # no inputs left: the output is the bias everywhere
                out = np.broadcast_to(b[None, :, None, None], (N, w.shape[0], oh, ow)).copy()
            else:
                out, _ = ly.conv2d_forward(h, w, b)
            out, _ = ly.relu_forward(out)
            h, _ = ly.maxpool2x2_forward(out)
        else:
            if h.ndim == 4:
                h = h.reshape(N, -1)  # flatten (C, H, W)
            if h.shape[1] == 0 or w.shape[0] == 0:
                out = np.broadcast_to(b[None, :], (N, w.shape[0])).copy()
            else:
                out, _ = ly.dense_forward(h, w, b)
            h = out if i == last else ly.relu_forward(out)[0]
    return h


def accuracy(cm, x, y, batch=1000):
    """Fraction of correct argmax predictions of `evaluate` over (x, y), in batches."""
    correct = 0
    for a in range(0, len(y), batch):
        correct += int((evaluate(cm, x[a:a + batch]).argmax(1) == y[a:a + batch]).sum())
    return correct / max(len(y), 1)
