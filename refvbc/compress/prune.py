"""Structural pruning across layers (paper §3 "Model Pruning"), including the conv -> dense flatten.

Shape legend
    O        output units of a layer (dense rows / conv output channels)
    U        input units of a layer: the previous layer's output units (dense inputs / conv input
             channels); for the first layer, the network's input features (784 pixels / 1 channel)
    w        columns per input unit: 1 for dense after dense/input, kh*kw for conv, H*W of the pooled map
             for the dense layer after the last conv (lenet5 fc1: 50 units x 16 = 800 columns)
    W3       a layer's weight viewed as (O, U, w); the CSR matrix of a pruned layer is W3[kept_out][:,
             kept_in].reshape(O', U' * w), for conv layers (out_c, in_c * kh * kw)

Every hidden layer is followed by ReLU (and for conv a 2x2 max-pool); the last layer's outputs (logits)
are never removed. A hidden unit j of layer l is removed when
  (a) dead-out: its column in layer l+1 is zero for every kept output of l+1 (nobody reads it), or
  (b) dead-in: its row is zero over all kept inputs, so its output is the constant relu(b_j) (a max-pool
      of a constant map is the same constant). If b_j <= 0 the unit outputs 0 and goes. If b_j > 0 it is a
      constant unit: with fold_constants=True (the default) its effect is folded into the next bias,
      b_{l+1}[o] += relu(b_j) * sum(W3_{l+1}[o, j, :]) (exact for a valid convolution: every output
      position sees the constant under the whole kernel; for the flatten boundary, the sum runs over the
      H*W columns of channel j); with fold_constants=False the unit is kept.
  An input feature of the first layer is removed when its column is zero for every kept output.
The rules are applied until nothing changes. Folding only adds to biases of later layers, and a unit is
folded only when its row is zero over the then-kept inputs, so a later fold never changes a bias that was
already folded forward (its contribution is multiplied by a zero weight). The pruned network therefore
computes the same function as the masked full network, up to rounding of the folded biases (stored as
float32).
"""

from collections import namedtuple

import numpy as np

from refvbc.arch import INPUT_SHAPES, get_arch

Geometry = namedtuple("Geometry", "name kind weight_shape n_out n_in_units unit_width pooled_hw")
# pooled_hw: spatial shape after ReLU + 2x2 max-pool for conv layers, () for dense.


def geometry(arch_name):
    """Per-layer unit geometry of an architecture (see the shape legend) -> list of Geometry."""
    layers = get_arch(arch_name)
    out = []
    prev = None
    for i, layer in enumerate(layers):
        if layer.kind == "conv":
            o, c, kh, kw = layer.weight_shape
            _, h, w = layer.preact_shape
            geo = Geometry(layer.name, "conv", layer.weight_shape, o, c, kh * kw, (h // 2, w // 2))
        elif layer.kind == "dense":
            o, n_in = layer.weight_shape
            if prev is not None and prev.kind == "conv":
                hw = prev.pooled_hw[0] * prev.pooled_hw[1]
                if prev.n_out * hw != n_in:
                    raise ValueError(f"{layer.name}: {n_in} inputs != {prev.n_out} channels x {hw}")
                geo = Geometry(layer.name, "dense", layer.weight_shape, o, prev.n_out, hw, ())
            else:
                geo = Geometry(layer.name, "dense", layer.weight_shape, o, n_in, 1, ())
        else:
            raise ValueError(f"{layer.name}: unknown layer kind {layer.kind!r}")
        if prev is not None and prev.n_out != geo.n_in_units:
            raise ValueError(f"{layer.name}: {geo.n_in_units} input units != {prev.n_out} outputs of {prev.name}")
        out.append(geo)
        prev = geo
    first = out[0]
    expect = INPUT_SHAPES[arch_name][0]
    if first.n_in_units != expect:
        raise ValueError(f"{first.name}: {first.n_in_units} input units, input shape says {expect}")
    return out


def as_units(w, geo):
    """View a full-shape weight (dense (O, in) / conv (O, C, kh, kw)) as W3 (O, U, w)."""
    return np.asarray(w).reshape(geo.n_out, geo.n_in_units, geo.unit_width)


def structural_prune(geos, weights, biases, fold_constants=True):
    """Find the units to keep, folding constant units into the next bias.

    Inputs:  geos list of Geometry; weights list of full-shape arrays (zeros = pruned weights);
             biases list of (O,) arrays; fold_constants, see the module docstring.
    Returns: (input_mask bool (U_0,), out_masks list of bool (O_l,), biases list of float64 (O_l,)
             with the folds applied; entries of removed units are meaningless).
    """
    L = len(geos)
    W3 = [as_units(w, g) for w, g in zip(weights, geos)]
    b = [np.asarray(bi, dtype=np.float64).copy() for bi in biases]
    in_mask = np.ones(geos[0].n_in_units, dtype=bool)
    alive = [np.ones(g.n_out, dtype=bool) for g in geos]
    changed = True
    while changed:
        changed = False
        for l in range(L - 1):  # hidden layers only: the logits stay
            ain = in_mask if l == 0 else alive[l - 1]
            row_nz = (W3[l][:, ain, :] != 0).any(axis=(1, 2))
            for j in np.flatnonzero(alive[l] & ~row_nz):  # (b) dead-in
                c = max(float(b[l][j]), 0.0)  # relu(b_j), constant output (and pooled output)
                if c > 0.0:
                    if not fold_constants:
                        continue
                    b[l + 1] += c * W3[l + 1][:, j, :].astype(np.float64).sum(axis=1)
                alive[l][j] = False
                changed = True
            used = (W3[l + 1][alive[l + 1]] != 0).any(axis=(0, 2))  # (a) dead-out
            kill = alive[l] & ~used
            if kill.any():
                alive[l][kill] = False
                changed = True
        used0 = (W3[0][alive[0]] != 0).any(axis=(0, 2))
        kill = in_mask & ~used0
        if kill.any():
            in_mask[kill] = False
            changed = True
    return in_mask, alive, b


def pruned_weight(w, geo, out_mask, in_mask):
    """Cut a full-shape weight down to its kept rows and input units.

    Returns: dense (O', U' * w) / conv (O', C', kh, kw), same dtype as w.
    """
    w3 = np.ascontiguousarray(as_units(w, geo)[out_mask][:, in_mask, :])
    if geo.kind == "conv":
        return w3.reshape((w3.shape[0], w3.shape[1]) + tuple(geo.weight_shape[2:]))
    return w3.reshape(w3.shape[0], w3.shape[1] * w3.shape[2])


def full_weight(wp, geo, out_mask, in_mask):
    """Inverse of pruned_weight: the full-shape weight with zeros at removed rows/units."""
    w3 = np.zeros((geo.n_out, geo.n_in_units, geo.unit_width), dtype=wp.dtype)
    idx = np.ix_(np.flatnonzero(out_mask), np.flatnonzero(in_mask))
    w3[idx] = np.asarray(wp).reshape(int(out_mask.sum()), int(in_mask.sum()), geo.unit_width)
    return w3.reshape(geo.weight_shape)
