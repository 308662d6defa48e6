"""Canonical Huffman coding of symbol streams (paper §3 "Huffman Encoding"; Han et al. 2015).

Shape legend
    K        alphabet size (codebook entries for values, 2**offset_bits for offsets)
    n        number of symbols in a stream
    lengths  uint8 (K,) code length of each symbol, 0 = symbol unused; at most MAX_CODE_LEN

A code table is stored as its code lengths only (canonical Huffman, as in DEFLATE): codes are assigned in
order of (length, symbol), each the previous plus one, shifted left when the length grows. Construction is
deterministic (ties broken by symbol index), so the same stream always gives the same bytes.
The bit packing/unpacking is in refvbc/kernels/bitpack.py (numba, with plain-Python twins).
"""

import heapq

import numpy as np

from refvbc.kernels import bitpack
from refvbc.kernels.bitpack import MAX_CODE_LEN


class FormatError(ValueError):
    """A `.rvbc` file (or one of its streams) is truncated, corrupted, foreign or inconsistent."""


def _huffman_lengths_unlimited(freqs):
    """Code lengths of an optimal prefix code for positive `freqs` (list), ties broken by index."""
    heap = [(int(f), i, (i,)) for i, f in enumerate(freqs)]
    heapq.heapify(heap)
    lengths = [0] * len(freqs)
    if len(heap) == 1:
        lengths[0] = 1  # a one-symbol alphabet still needs one bit per symbol to be decodable
        return lengths
    tie = len(freqs)
    while len(heap) > 1:
        f1, _, s1 = heapq.heappop(heap)
        f2, _, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            lengths[s] += 1
        heapq.heappush(heap, (f1 + f2, tie, s1 + s2))
        tie += 1
    return lengths


def code_lengths(freqs, max_len=MAX_CODE_LEN):
    """Huffman code lengths for symbol frequencies.

    Inputs:  freqs int array (K,) >= 0; max_len, the longest allowed code.
    Returns: lengths uint8 (K,), 0 for symbols with frequency 0. When the optimal code is longer than
             max_len, frequencies are halved (rounding up, staying >= 1) until it fits (zlib-style).
    """
    freqs = np.asarray(freqs, dtype=np.int64)
    if freqs.ndim != 1 or (freqs < 0).any():
        raise ValueError(f"freqs must be a 1-D array of non-negative counts, got {freqs!r}")
    used = np.flatnonzero(freqs)
    lengths = np.zeros(freqs.shape[0], dtype=np.uint8)
    if used.size == 0:
        return lengths
    f = freqs[used].copy()
    while True:
        ln = _huffman_lengths_unlimited(list(f))
        if max(ln) <= max_len:
            break
        f = (f + 1) // 2
    lengths[used] = ln
    return lengths


def canonical_codes(lengths):
    """Canonical code values for code lengths.

    Inputs:  lengths uint8 (K,).
    Returns: codes uint64 (K,) (0 where unused), counts int64 (L+1,), symbols int64 (n_used,) in
             canonical order: the decoder tables of bitpack.huffman_decode.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    maxlen = int(lengths.max()) if lengths.size else 0
    counts = np.bincount(lengths, minlength=maxlen + 1).astype(np.int64)
    counts[0] = 0
    order = np.lexsort((np.arange(lengths.size), lengths))
    symbols = order[lengths[order] > 0].astype(np.int64)
    codes = np.zeros(lengths.size, dtype=np.uint64)
    code = 0
    prev_len = 0
    for s in symbols:
        ln = int(lengths[s])
        code <<= ln - prev_len
        codes[s] = code
        code += 1
        prev_len = ln
    return codes, counts, symbols


def validate_lengths(lengths, what="Huffman table"):
    """Check a code-length table read from a file: lengths <= MAX_CODE_LEN and the Kraft sum <= 1
    (an over-subscribed table is not a prefix code). Raises FormatError."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size and int(lengths.max()) > MAX_CODE_LEN:
        raise FormatError(f"{what}: code length {int(lengths.max())} exceeds {MAX_CODE_LEN}")
    used = lengths[lengths > 0]
    kraft = sum(1 << (MAX_CODE_LEN - int(ln)) for ln in used)
    if kraft > (1 << MAX_CODE_LEN):
        raise FormatError(f"{what}: code lengths are over-subscribed (Kraft sum > 1)")


def encode_symbols(symbols, lengths):
    """Huffman-encode a symbol stream with a given length table.

    Inputs:  symbols int array (n,) in [0, K); lengths uint8 (K,) with lengths[s] > 0 for every symbol.
    Returns: (buf uint8 (ceil(nbits/8),), nbits int).
    """
    symbols = np.asarray(symbols, dtype=np.int64)
    codes, _, _ = canonical_codes(lengths)
    lens = np.asarray(lengths, dtype=np.uint8)[symbols]
    if symbols.size and (lens == 0).any():
        raise ValueError("a symbol in the stream has no code in the table")
    buf, nbits = bitpack.pack_codes(codes[symbols], lens)
    return buf, int(nbits)


def decode_symbols(buf, nbits, lengths, n_out, what="stream"):
    """Decode `n_out` symbols; inverse of encode_symbols. Raises FormatError on a bad stream."""
    validate_lengths(lengths, what)
    buf = np.ascontiguousarray(buf, dtype=np.uint8)
    if nbits > buf.size * 8 or nbits < 0:
        raise FormatError(f"{what}: declares {nbits} bits but holds {buf.size * 8}")
    _, counts, symbols = canonical_codes(lengths)
    if n_out > 0 and symbols.size == 0:
        raise FormatError(f"{what}: {n_out} symbols expected but the code table is empty")
    if counts.size < 2:
        counts = np.zeros(2, dtype=np.int64)
    out, status = bitpack.huffman_decode(buf, np.int64(nbits), counts, symbols, np.int64(n_out))
    _raise_status(status, what)
    return out


def unpack_fixed(buf, width, count, what="stream"):
    """Read `count` fixed-width unsigned integers; raises FormatError on a short stream/nonzero pad."""
    buf = np.ascontiguousarray(buf, dtype=np.uint8)
    out, status = bitpack.unpack_fixed(buf, np.int64(width), np.int64(count))
    _raise_status(status, what)
    return out.astype(np.int64)


def pack_fixed(values, width):
    """Pack unsigned integers (< 2**width) with `width` bits each -> (buf, nbits)."""
    values = np.asarray(values, dtype=np.uint64)
    if values.size and int(values.max()) >> width:
        raise ValueError(f"value {int(values.max())} does not fit in {width} bits")
    buf, nbits = bitpack.pack_codes(values, np.full(values.size, width, dtype=np.uint8))
    return buf, int(nbits)


def _raise_status(status, what):
    if status == bitpack.OK:
        return
    msg = {
        bitpack.ERR_OUT_OF_BITS: "ends in the middle of a code (truncated or corrupted)",
        bitpack.ERR_INVALID_CODE: "holds a bit pattern that is no code of its table",
        bitpack.ERR_TRAILING: "has leftover or nonzero padding bits after its last code",
    }.get(int(status), f"unknown decoder status {int(status)}")
    raise FormatError(f"{what} {msg}")
