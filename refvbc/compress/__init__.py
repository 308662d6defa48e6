"""Compression of trained models into real `.rvbc` files (paper §3 and appendix B; docs/format.md).

    cm = compress_model(arch, params, method)     # cluster -> prune -> (CSR layout chosen per layer)
    data = encode(cm); cm2 = decode(data)          # Huffman-coded bytes and back, bit-exact
    write_rvbc(path, cm); cm = read_rvbc(path)     # atomic write; validating read (FormatError)
    logits = evaluate(cm, x); rep = report(cm)     # pruned forward pass; per-layer bits and both ratios

Command line: python -m refvbc.compress {encode,decode,eval,info,run,bench} ...
Inference straight from a file: refvbc.compress.sparse_model.SparseModel (docs/inference.md).
"""

from refvbc.compress.accounting import format_report, report
from refvbc.compress.fileformat import decode, encode, read_rvbc, write_rvbc
from refvbc.compress.huffman import FormatError
from refvbc.compress.model import CompressedLayer, CompressedModel
from refvbc.compress.pipeline import accuracy, compress_model, evaluate

__all__ = [
    "CompressedLayer", "CompressedModel", "FormatError", "accuracy", "compress_model", "decode", "encode",
    "evaluate", "format_report", "read_rvbc", "report", "write_rvbc",
]
