"""Inference straight from a `.rvbc` file: the stored sparse weights, never densified (issue 13).

Shape legend
    N           batch size
    x           (N, 784) float32/float64, or (N, 1, 28, 28) for lenet5
    logits      (N, 10)
    O', C'      kept rows / columns of a layer's matrix (refvbc/compress/prune.py)
    E           the non-zero weights of a layer (the file's CSR entries less the filler zeros, or the
                non-zero values of a layer the file stores dense)
    the packed arrays (meta, colptr, rows, vals, bias; cmeta, crowptr, coffs, cvals, cbias): see the legend
    of refvbc/kernels/sparse.py

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


def _pack(layers, with_layout=False):
    """Concatenate per-layer entries into the packed arrays of the kernels (refvbc/kernels/sparse.py).

    Inputs:  layers: per layer (O, extra, n_groups, group, idx, vals, bias, block): the entries go to
             pointer groups in stable order (dense layers: columns, CSC; conv: output channels), unless
             block, the kept (O, C) sub-matrix, is given: then its transpose is stored, after all
             sparse values; with_layout: add the layout column (0 sparse, 1 dense) to meta.
    Returns: meta (L, 3 + len(extra) [+ 1]) = [O, *extra, p0, b0, [layout]], the pointers and idx
             (uint32: unsigned indices need no negative-index test in the kernels), vals, bias (float32).
    """
    meta, ptr, idx, vals, blocks, bias = [], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [], [], []
    e0 = p0 = b0 = 0
    for O, extra, n_groups, group, ix, v, b, block in layers:
        if block is None:
            order = np.argsort(group, kind="stable")
            ptr.append(e0 + np.concatenate([[0], np.cumsum(np.bincount(group, minlength=n_groups))]))
            idx.append(ix[order])
            vals.append(v[order])
            meta.append([O, *extra, p0, b0] + [0] * with_layout)
            e0 += ix.size
            p0 += n_groups + 1
        else:
            blocks.append((len(meta), np.ascontiguousarray(block.T).ravel()))
            meta.append([O, *extra, 0, b0, 1])
        bias.append(b)
        b0 += O
    for i, blk in blocks:  # the dense blocks follow the sparse values
        meta[i][-3] = e0
        vals.append(blk)
        e0 += blk.size
    cat = lambda parts, dt: np.ascontiguousarray(np.concatenate(parts).astype(dt)) if parts else np.zeros(0, dt)
    return (np.array(meta, dtype=np.int64), cat(ptr, np.uint32), cat(idx, np.uint32), cat(vals, np.float32),
            cat(bias, np.float32))


_F32 = np.dtype(np.float32)
DENSE_BLOCK_DENSITY = 0.5  # a dense layer at least this full is kept as its dense kept sub-matrix


class SparseModel:
    """A compressed network for inference: kept inputs, packed sparse layers, float32 values."""

    def __init__(self, arch, method, in_idx, uw, conv, dense):
        self.arch, self.method = arch, method
        self.in_idx = in_idx  # uint32 (U0,)
        self.uw = int(uw)
        self.conv = conv  # (cmeta, crowptr, coffs, cvals, cbias) or None
        self.dense = dense  # (meta, colptr, rows, vals, bias)
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
        in_idx = np.flatnonzero(cm.input_mask).astype(np.uint32)
        uw = int(np.prod(INPUT_SHAPES[cm.arch])) // geos[0].n_in_units
        return cls(cm.arch, cm.method, in_idx, uw, _pack(conv) if conv else None,
                   _pack(dense, with_layout=True))

    @property
    def nbytes(self):
        """Resident bytes of the weights as the model holds them (values, indices, row pointers, biases,
        layer tables, kept-input indices)."""
        arrays = [self.in_idx, *self.dense] + (list(self.conv) if self.conv else [])
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
            cast = lambda p: None if p is None else (*p[:3], p[3].astype(x.dtype), p[4].astype(x.dtype))
            self._args[x.dtype] = self._kernel_args(cast(self.conv), cast(self.dense))
        out = np.empty((x.shape[0], self._n_out), x.dtype)
        self._kernel(x, *self._args[x.dtype], out)
        return out

    def _kernel_args(self, conv, dense):
        """The arguments of the forward kernel between x and out."""
        return (self.in_idx, *dense) if conv is None else (self.in_idx, self.uw, *conv, *dense)

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
