"""The in-memory compressed model: what a `.rvbc` file holds, decoded.

Shape legend
    O, U, w   see refvbc/compress/prune.py (output units, input units, columns per input unit)
    O', U'    kept output / input units (popcounts of out_mask / in_mask)
    V         codebook entries (codebook[0] == 0.0)

A CompressedLayer's `weight` has the pruned shape: dense (O', U' * w), conv (O', U', kh, kw), float32.
`symbols` (same shape, int64) indexes the model's codebook, or is None for raw float32 values ("l2").
"""

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from refvbc.compress.prune import full_weight, geometry

# The method byte of a .rvbc file is the index into this tuple (docs/format.md): a file-format code
# table, fixed forever, not the order of training (that is refvbc/phases.py).
METHODS = ("l2", "vd", "sws", "vdsws")
LAYOUTS = ("csr", "dense")


@dataclass
class CompressedLayer:
    name: str
    kind: str
    weight_shape: tuple  # original (full) shape
    out_mask: np.ndarray  # bool (O,)
    in_mask: np.ndarray  # bool (U,)
    weight: np.ndarray  # float32, pruned shape
    symbols: Optional[np.ndarray]  # int64, pruned shape, or None (raw values)
    bias: np.ndarray  # float32 (O',)
    layout: str = "csr"
    offset_bits: int = 5
    huffman_offsets: bool = False

    def matrix(self):
        """The CSR matrix (O', U' * w): conv weights reshaped to (out_c, in_c * kh * kw)."""
        o = self.weight.shape[0]
        return self.weight.reshape(o, self.weight.size // o if o else int(np.prod(self.weight.shape[1:])))

    def symbol_matrix(self):
        if self.symbols is None:
            return None
        return self.symbols.reshape(self.matrix().shape)


@dataclass
class CompressedModel:
    arch: str
    method: str
    codebook: Optional[np.ndarray]  # float32 (V,) or None for raw float32 values
    layers: List[CompressedLayer] = field(default_factory=list)

    @property
    def input_mask(self):
        return self.layers[0].in_mask

    def validate(self):
        """Check internal consistency (shapes, masks, codebook, finiteness); raises ValueError."""
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {METHODS}")
        geos = geometry(self.arch)
        if len(geos) != len(self.layers):
            raise ValueError(f"{self.arch} has {len(geos)} layers, model holds {len(self.layers)}")
        if self.codebook is not None:
            cb = np.asarray(self.codebook)
            if cb.dtype != np.float32 or cb.ndim != 1 or cb.size < 1 or cb[0] != 0.0:
                raise ValueError("codebook must be float32 (V,) with codebook[0] == 0.0")
            if not np.isfinite(cb).all():
                raise ValueError("codebook holds non-finite values")
        prev_mask = None
        for i, (g, L) in enumerate(zip(geos, self.layers)):
            if (L.name, L.kind, tuple(L.weight_shape)) != (g.name, g.kind, tuple(g.weight_shape)):
                raise ValueError(f"layer {i}: {L.name}/{L.kind}/{L.weight_shape} does not match the "
                                 f"architecture's {g.name}/{g.kind}/{g.weight_shape}")
            if L.out_mask.shape != (g.n_out,) or L.in_mask.shape != (g.n_in_units,):
                raise ValueError(f"{L.name}: mask shapes {L.out_mask.shape}/{L.in_mask.shape}")
            if prev_mask is not None and not np.array_equal(L.in_mask, prev_mask):
                raise ValueError(f"{L.name}: in_mask differs from the previous layer's out_mask")
            prev_mask = L.out_mask
            o, u = int(L.out_mask.sum()), int(L.in_mask.sum())
            shape = (o, u) + tuple(g.weight_shape[2:]) if g.kind == "conv" else (o, u * g.unit_width)
            if L.weight.shape != shape or L.weight.dtype != np.float32:
                raise ValueError(f"{L.name}: weight {L.weight.shape} {L.weight.dtype}, expected {shape} float32")
            if L.bias.shape != (o,) or L.bias.dtype != np.float32:
                raise ValueError(f"{L.name}: bias {L.bias.shape} {L.bias.dtype}, expected ({o},) float32")
            if not (np.isfinite(L.weight).all() and np.isfinite(L.bias).all()):
                raise ValueError(f"{L.name}: non-finite weights or biases")
            if (self.codebook is None) != (L.symbols is None):
                raise ValueError(f"{L.name}: symbols must be given exactly when there is a codebook")
            if L.symbols is not None:
                s = L.symbols
                if s.shape != shape or s.size and (s.min() < 0 or s.max() >= self.codebook.size):
                    raise ValueError(f"{L.name}: symbols out of shape or codebook range")
                if not np.array_equal(self.codebook[s], L.weight):
                    raise ValueError(f"{L.name}: weight != codebook[symbols]")
            if L.layout not in LAYOUTS:
                raise ValueError(f"{L.name}: unknown layout {L.layout!r}")
            if not 1 <= int(L.offset_bits) <= 16:
                raise ValueError(f"{L.name}: offset_bits {L.offset_bits} outside 1..16")
        if not self.layers[-1].out_mask.all():
            raise ValueError("the last layer's outputs (logits) can't be pruned")

    def to_params(self):
        """Full-shape parameters of an equivalent network: {"<layer>.theta", "<layer>.bias"}, float32,
        zeros at removed rows/units (removed units get bias 0; constant units are already folded)."""
        geos = geometry(self.arch)
        params = {}
        for g, L in zip(geos, self.layers):
            params[f"{g.name}.theta"] = full_weight(L.weight, g, L.out_mask, L.in_mask)
            b = np.zeros(g.n_out, dtype=np.float32)
            b[L.out_mask] = L.bias
            params[f"{g.name}.bias"] = b
        return params

    def equals(self, other):
        """Exact equality of everything the file stores."""
        if (self.arch, self.method) != (other.arch, other.method) or len(self.layers) != len(other.layers):
            return False
        if (self.codebook is None) != (other.codebook is None):
            return False
        if self.codebook is not None and not np.array_equal(self.codebook, other.codebook):
            return False
        for a, b in zip(self.layers, other.layers):
            for f in ("name", "kind", "layout"):
                if getattr(a, f) != getattr(b, f):
                    return False
            if a.layout == "csr" and (a.offset_bits, a.huffman_offsets) != (b.offset_bits, b.huffman_offsets):
                return False  # (a dense layer stores no offsets, so its offset settings are not in the file)
            if tuple(a.weight_shape) != tuple(b.weight_shape):
                return False
            for f in ("out_mask", "in_mask", "weight", "bias"):
                x, y = getattr(a, f), getattr(b, f)
                if x.shape != y.shape or x.dtype != y.dtype or x.tobytes() != y.tobytes():
                    return False
            if (a.symbols is None) != (b.symbols is None):
                return False
            if a.symbols is not None and not np.array_equal(a.symbols, b.symbols):
                return False
        return True
