"""Where the bits of a `.rvbc` file go, and the two compression ratios.

Shape legend
    W        weights of the original (uncompressed) architecture
    B        biases of the original architecture

Two ratios, side by side (README, "Compression ratios"):
    cr_file   = 32 (W + B) / (8 * file bytes)  -- honest: the whole file (header, masks, row pointers,
                Huffman tables, biases, checksum, byte padding) against float32 weights and biases
    cr_paper  = 32 W / (value bits + offset bits + codebook bits) -- the paper's Table 2 accounting
                (Han et al. 2015 / Ullrich et al. 2017 style): weights only, exact stream bits, no row
                pointers, tables, masks or biases
"""

import numpy as np

from refvbc.compress import fileformat
from refvbc.compress.prune import geometry

_LAYER_SECTIONS = ("masks", "layer_header", "row_ptr", "value_table", "values", "offset_table",
                   "offsets", "bias")


def report(cm):
    """Accounting of a compressed model.

    Returns: dict with
      "layers": list of per-layer dicts: name, kind, layout, offset_bits, huffman_offsets,
                original_shape, kept_shape, n_weights, n_kept_weights (of the kept shape), nonzeros,
                n_entries (CSR entries incl. fillers), n_fill, bits_values, bits_offsets, bits_row_ptr
                (exact stream bits), bytes_<section> for every section, bytes_total
      "total": n_weights, n_biases, nonzeros, nonzero_percent, file_bytes, bytes_<model section>,
               bits_values, bits_offsets, bits_row_ptr, bits_codebook, bits_tables, cr_file, cr_paper
    """
    stats = {}
    data = fileformat.encode(cm, stats)
    geos = geometry(cm.arch)
    layers = []
    tot = {"n_weights": 0, "n_biases": 0, "nonzeros": 0, "bits_values": 0, "bits_offsets": 0,
           "bits_row_ptr": 0, "bits_tables": 0}
    for g, L, st in zip(geos, cm.layers, stats["layers"]):
        nw = int(np.prod(g.weight_shape))
        nz = int(np.count_nonzero(L.weight))
        d = {
            "name": g.name, "kind": g.kind, "layout": L.layout,
            "offset_bits": int(L.offset_bits) if L.layout == "csr" else None,
            "huffman_offsets": bool(L.huffman_offsets) if L.layout == "csr" else None,
            "original_shape": tuple(g.weight_shape), "kept_shape": tuple(L.weight.shape),
            "n_weights": nw, "n_kept_weights": int(L.weight.size), "nonzeros": nz,
            "n_entries": int(st["n_entries"]), "n_fill": int(st["n_fill"]),
            "bits_values": int(st["bits_values"]), "bits_offsets": int(st["bits_offsets"]),
            "bits_row_ptr": int(st["bits_row_ptr"]),
        }
        for s in _LAYER_SECTIONS:
            d[f"bytes_{s}"] = int(st.get(s, 0))
        d["bytes_total"] = sum(d[f"bytes_{s}"] for s in _LAYER_SECTIONS)
        layers.append(d)
        tot["n_weights"] += nw
        tot["n_biases"] += g.n_out
        tot["nonzeros"] += nz
        for k in ("bits_values", "bits_offsets", "bits_row_ptr"):
            tot[k] += d[k]
        tot["bits_tables"] += 8 * (d["bytes_value_table"] + d["bytes_offset_table"])
    model = stats["model"]
    for s, v in model.items():
        tot[f"bytes_{s}"] = int(v)
    tot["bits_codebook"] = 8 * int(model.get("codebook", 0))
    tot["file_bytes"] = len(data)
    tot["nonzero_percent"] = 100.0 * tot["nonzeros"] / tot["n_weights"]
    tot["cr_file"] = 32.0 * (tot["n_weights"] + tot["n_biases"]) / (8.0 * len(data))
    paper_bits = tot["bits_values"] + tot["bits_offsets"] + tot["bits_codebook"]
    tot["cr_paper"] = 32.0 * tot["n_weights"] / paper_bits if paper_bits else float("inf")
    assert sum(d["bytes_total"] for d in layers) + sum(model.values()) == len(data), "accounting leak"
    return {"arch": cm.arch, "method": cm.method, "layers": layers, "total": tot}


def format_report(rep):
    """Human-readable table of `report` (what `python -m refvbc.compress info` prints)."""
    lines = [f"{rep['arch']} / {rep['method']}"]
    hdr = (f"{'layer':6} {'layout':6} {'original':>16} {'kept':>16} {'nonzero':>8} {'fill':>6} "
           f"{'val bits':>9} {'off bits':>9} {'IR bits':>8} {'tables B':>8} {'bias B':>7} {'bytes':>7}")
    lines.append(hdr)
    for d in rep["layers"]:
        lines.append(
            f"{d['name']:6} {d['layout']:6} {str(d['original_shape']):>16} {str(d['kept_shape']):>16} "
            f"{d['nonzeros']:8d} {d['n_fill']:6d} {d['bits_values']:9d} {d['bits_offsets']:9d} "
            f"{d['bits_row_ptr']:8d} {d['bytes_value_table'] + d['bytes_offset_table']:8d} "
            f"{d['bytes_bias']:7d} {d['bytes_total']:7d}")
    t = rep["total"]
    lines.append(
        f"total: {t['nonzeros']} of {t['n_weights']} weights non-zero ({t['nonzero_percent']:.2f}%), "
        f"{t['n_biases']} biases, codebook {t['bits_codebook'] // 8} B, file {t['file_bytes']} B")
    lines.append(f"compression ratio, whole file  32(W+B)/(8*bytes)          : {t['cr_file']:.1f}")
    lines.append(f"compression ratio, paper       32W/(values+offsets+codebook): {t['cr_paper']:.1f}")
    return "\n".join(lines)
