"""Inference straight from a `.rvbc` file: the stored sparse weights, never densified.

Shape legend
    N           batch size
    x           (N, 784) float32/float64, or (N, 1, 28, 28) for lenet5
    logits      (N, 10)
    O', C'      kept rows / columns of a layer's matrix (refvbc/compress/prune.py)
    E           the non-zero weights of a layer (the file's CSR entries less the filler zeros, or the
                non-zero values of a layer the file stores dense)
    the packed arrays (meta, idx, vals; cmeta, cidx, cvals): see _pack and the legend of
    refvbc/kernels/sparse.py

`SparseModel.from_file(path)` reads the file with the validating reader (so a damaged file raises the same
FormatError as everywhere else) and takes each layer's entries as the file stores them (CSR: values and the
columns of the relative offsets; dense layout: the kept (O', C') values), keeping only the non-zeros. A
dense layer becomes CSC (the entries regrouped by column, which lets one image skip its zero inputs), or
its kept sub-matrix (transposed) when at least DENSE_BLOCK_DENSITY of it is non-zero (an L2 file; there
the indices would cost more than the zeros). A conv layer keeps, per kept output channel, its non-zero
kernel weights over the kept input channels as (value, input offset). Codebook symbols become float32
values once, at load. The forward pass is one numba call (refvbc/kernels/sparse.py).
`dense_logits(arch, cm.to_params(), x)` is the baseline: the decoded full-size matrices through the
package's deterministic forward (refvbc.models).
"""

import numpy as np

from refvbc import models
from refvbc.arch import INPUT_SHAPES, get_arch
from refvbc.compress import fileformat
from refvbc.compress.prune import geometry
from refvbc.kernels import sparse as ks


def _entries(e):
    """Row of every stored entry, its column, and the stored values of one layer's entries dict."""
    O, C = e["shape"]
    if e["layout"] == "csr":
        row_end = e["row_end"]
        counts = np.diff(np.concatenate([[0], row_end])) if O else np.zeros(0, np.int64)
        return np.repeat(np.arange(O), counts), e["cols"], e["values"]
    rows, cols = np.divmod(np.arange(O * C), C)
    return rows, cols, e["values"]


def _pack(layers, with_layout=False, in_idx=None):
    """Concatenate per-layer entries into the three packed arrays of a kernel stack
    (refvbc/kernels/sparse.py; few arrays, because each argument of a numba call costs time at batch 1).

    Inputs:  layers: per layer (O, extra, n_groups, group, idx, vals, bias, block): the entries go to
             pointer groups in stable order (dense layers: columns, CSC; conv: output channels), unless
             block, the kept (O, C) sub-matrix, is given: then its transpose is stored instead;
             with_layout: add the layout column (0 sparse, 1 dense) to meta; in_idx: the kept input units,
             stored at the end of idx.
    Returns: meta int64 (L, 3 + len(extra) [+ 1]) = [O, *extra, p0, b0, [layout]];
             idx uint32 = [entry indices (E,) | pointers (n_groups + 1 per sparse layer) | in_idx]
             (unsigned: no negative-index test in the kernels), so entry k's index is idx[k] and a sparse
             layer's pointers start at idx[p0];
             vals float32 = [entry values (E,) | dense blocks | biases]: a block starts at vals[p0], a
             layer's biases at vals[b0].
    """
    meta, ptr, ix_all, v_all, blocks, bias = [], [], [], [], [], []
    E = sum(layer[4].size for layer in layers if layer[7] is None)
    e0, p0 = 0, E
    for O, extra, n_groups, group, ix, v, b, block in layers:
        if block is None:
            order = np.argsort(group, kind="stable")
            ptr.append(e0 + np.concatenate([[0], np.cumsum(np.bincount(group, minlength=n_groups))]))
            ix_all.append(ix[order])
            v_all.append(v[order])
            meta.append([O, *extra, p0, 0] + [0] * with_layout)
            e0 += ix.size
            p0 += n_groups + 1
        else:
            blocks.append((len(meta), np.ascontiguousarray(block.T).ravel()))
            meta.append([O, *extra, 0, 0, 1])
        bias.append(b)
    for i, blk in blocks:  # the dense blocks follow the sparse values
        meta[i][-3] = e0
        v_all.append(blk)
        e0 += blk.size
    for m, b in zip(meta, bias):  # then the biases
        m[-1 - with_layout] = e0
        e0 += b.size
    cat = lambda parts, dt: np.ascontiguousarray(np.concatenate([np.zeros(0, dt)] + parts).astype(dt))
    tail = [] if in_idx is None else [in_idx]
    return (np.array(meta, dtype=np.int64), cat(ix_all + ptr + tail, np.uint32), cat(v_all + bias, np.float32))


_F32 = np.dtype(np.float32)
DENSE_BLOCK_DENSITY = 0.5  # a dense layer at least this full is kept as its dense kept sub-matrix


class SparseModel:
    """A compressed network for inference: kept inputs, packed sparse layers, float32 values."""

    def __init__(self, arch, method, uw, conv, dense):
        self.arch, self.method = arch, method
        self.uw = int(uw)
        self.conv = conv  # (cmeta, cidx, cvals) or None; cidx ends with the kept input units
        self.dense = dense  # (meta, idx, vals); for lenet300, idx ends with the kept input units
        self._kernel = ks.mlp_forward_numba if conv is None else ks.convnet_forward_numba
        self._args = {_F32: self._kernel_args(conv, dense)}
        self._d0 = int(np.prod(INPUT_SHAPES[arch]))
        self._n_out = int(dense[0][-1, 0])

    @classmethod
    def from_bytes(cls, data):
        """Build from `.rvbc` bytes (FormatError on a bad file)."""
        entries = []
        cm = fileformat.decode(data, entries)
        return cls._build(cm, entries)

    @classmethod
    def from_file(cls, path):
        """Build from a `.rvbc` file (FormatError on a bad file, OSError when it can't be read)."""
        entries = []
        cm = fileformat.read_rvbc(path, entries)
        return cls._build(cm, entries)

    @classmethod
    def _build(cls, cm, entries):
        geos = geometry(cm.arch)
        net = get_arch(cm.arch)
        conv, dense = [], []
        for g, layer, L, e in zip(geos, net, cm.layers, entries):
            rows, idx, stored = _entries(e)
            v = cm.codebook[stored] if cm.codebook is not None else stored.astype(np.float32)
            nz = v != 0  # fillers and the zeros of a dense-layout layer
            rows, idx, v = rows[nz], idx[nz].astype(np.int64), v[nz]
            O = int(L.out_mask.sum())
            if g.kind == "conv":
                kh, kw = g.weight_shape[2:]
                C = int(L.in_mask.sum())
                OH, OW = layer.preact_shape[1:]
                H, W = OH + kh - 1, OW + kw - 1
                c, r = np.divmod(idx, kh * kw)
                i, j = np.divmod(r, kw)
                conv.append((O, (C, H, W, kh, kw), O, rows, c * H * W + i * W + j, v, L.bias, None))
            else:
                C = e["shape"][1]
                block = None
                if v.size >= DENSE_BLOCK_DENSITY * O * C:  # mostly non-zero: the kept sub-matrix
                    block = np.zeros((O, C), np.float32)
                    block[rows, idx] = v
                dense.append((O, (C,), C, idx, rows, v, L.bias, block))
        in_idx = np.flatnonzero(cm.input_mask)
        uw = int(np.prod(INPUT_SHAPES[cm.arch])) // geos[0].n_in_units
        return cls(cm.arch, cm.method, uw, _pack(conv, in_idx=in_idx) if conv else None,
                   _pack(dense, with_layout=True, in_idx=None if conv else in_idx))

    @property
    def nbytes(self):
        """Resident bytes of the weights as the model holds them (values, indices, pointers, biases, layer
        tables, kept-input indices)."""
        arrays = [*self.dense] + (list(self.conv) if self.conv else [])
        return int(sum(a.nbytes for a in arrays))

    def _input(self, x):
        """x as a contiguous (N, D0) float32/float64 array, or ValueError naming the problem."""
        x = np.asarray(x)
        if x.dtype != np.float32 and x.dtype != np.float64:
            raise ValueError(f"sparse model: x has dtype {x.dtype}, expected float32 or float64")
        shape = INPUT_SHAPES[self.arch]
        d0 = self._d0
        if not (x.ndim == 2 and x.shape[1] == d0 or x.ndim == 1 + len(shape) and x.shape[1:] == shape):
            raise ValueError(f"sparse model: x has shape {x.shape}, expected (N, {d0}) for {self.arch}")
        return np.ascontiguousarray(x.reshape(x.shape[0], d0))

    def logits(self, x):
        """Logits (N, 10) of x (N, 784), or (N, 1, 28, 28) for lenet5; float32 or float64 (the result has
        x's dtype). One numba call."""
        if x.__class__ is np.ndarray and x.dtype is _F32 and x.ndim == 2 and x.shape[1] == self._d0:
            out = np.empty((x.shape[0], self._n_out), _F32)  # the common case: no other checks, no copy
            self._kernel(x, *self._args[_F32], out)
            return out
        x = self._input(x)
        if x.dtype not in self._args:  # float64: the values cast once, then kept
            cast = lambda p: None if p is None else (p[0], p[1], p[2].astype(x.dtype))
            self._args[x.dtype] = self._kernel_args(cast(self.conv), cast(self.dense))
        out = np.empty((x.shape[0], self._n_out), x.dtype)
        self._kernel(x, *self._args[x.dtype], out)
        return out

    def _kernel_args(self, conv, dense):
        """The arguments of the forward kernel between x and out."""
        return dense if conv is None else (self.uw, *conv, *dense)

    def predict(self, x, batch=1000):
        """Logits of x in batches of `batch` images."""
        if int(batch) < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        out = [self.logits(x[a:a + batch]) for a in range(0, len(x), batch)]
        return np.concatenate(out) if out else np.zeros((0, 10), np.float32)

    def accuracy(self, x, y, batch=1000):
        """Fraction of correct argmax predictions over (x, y)."""
        return float(np.mean(self.predict(x, batch).argmax(1) == y)) if len(y) else 0.0


def dense_logits(arch, params, x):
    """The baseline's forward: refvbc.models' deterministic forward on the full-size matrices."""
    return models.forward(arch, params, x)[0]
