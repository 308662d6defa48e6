"""Bit packing for the `.rvbc` file: variable-length (Huffman) and fixed-width codes, MSB first.

Shape legend
    n        number of codes (symbols) in a stream
    L        maximum code length in bits (MAX_CODE_LEN = 32)
    buf      uint8 (ceil(nbits / 8),) packed bytes; bit i of the stream is bit (7 - i % 8) of buf[i // 8]
    counts   int64 (L + 1,) number of canonical codes of each length (counts[0] unused)
    symbols  int64 (n_used,) symbols sorted by (code length, symbol): the canonical order

Bit order (docs/format.md, "Bit streams"): a code of length l with value c is written most significant bit
first; the stream is padded with zero bits to a whole byte. Canonical Huffman decoding follows Mark Adler's
puff.c (zlib contrib): the first code of each length is first(l) = 2 * (first(l-1) + counts[l-1]).

Every numba kernel has a plain-Python reference right below it (`*_py`), bit-for-bit identical; tests
compare them (tests/test_compress_bitpack.py). Decoders never read past `nbits` and report problems
through a status code (kernels cannot raise useful exceptions); the caller turns it into a FormatError.
"""

import numba
import numpy as np

MAX_CODE_LEN = 32

# Decoder status codes (the Python wrappers in refvbc.compress.huffman map them to FormatError messages).
OK = 0
ERR_OUT_OF_BITS = 1  # the stream ended in the middle of a code
ERR_INVALID_CODE = 2  # no code of length <= L matched (incomplete code table)
ERR_TRAILING = 3  # bits left over after the last expected code, or nonzero padding


# ----------------------------------------------------------------------------------------------- packing
@numba.njit(cache=True)
def pack_codes(codes, lengths):
    """Concatenate variable-length codes, MSB first, zero-padded to a byte.

    Inputs:  codes uint64 (n,), the code values; lengths uint8/int (n,), 0..64 bits each
             (a code's bits above its length must be zero).
    Returns: (buf uint8 (ceil(nbits/8),), nbits int64).
    """
    n = codes.shape[0]
    nbits = np.int64(0)
    for i in range(n):
        nbits += np.int64(lengths[i])
    buf = np.zeros((nbits + 7) // 8, dtype=np.uint8)
    pos = np.int64(0)
    for i in range(n):
        c = np.uint64(codes[i])
        ln = np.intp(lengths[i])
        for k in range(ln - 1, -1, -1):
            bit = (c >> np.uint64(k)) & np.uint64(1)
            if bit:
                buf[pos >> 3] |= np.uint8(1 << (7 - (pos & 7)))
            pos += 1
    return buf, nbits


def pack_codes_py(codes, lengths):
    """Plain-Python reference of `pack_codes` (same inputs and returns)."""
    bits = []
    for c, ln in zip(codes, lengths):
        c, ln = int(c), int(ln)
        for k in range(ln - 1, -1, -1):
            bits.append((c >> k) & 1)
    nbits = len(bits)
    buf = np.zeros((nbits + 7) // 8, dtype=np.uint8)
    for pos, bit in enumerate(bits):
        if bit:
            buf[pos // 8] |= 1 << (7 - pos % 8)
    return buf, nbits


# --------------------------------------------------------------------------------- fixed-width unpacking
@numba.njit(cache=True)
def unpack_fixed(buf, width, count):
    """Read `count` unsigned integers of `width` bits (1..64) each, MSB first, from the start of `buf`.

    Inputs:  buf uint8 (m,); width int; count int.
    Returns: (values uint64 (count,), status int): ERR_OUT_OF_BITS when buf holds fewer than
             width * count bits, ERR_TRAILING when the padding bits after them are not zero.
    """
    out = np.zeros(count, dtype=np.uint64)
    total = np.int64(buf.shape[0]) * 8
    need = np.int64(width) * np.int64(count)
    if need > total:
        return out, ERR_OUT_OF_BITS
    pos = np.int64(0)
    for i in range(count):
        v = np.uint64(0)
        for k in range(width):
            bit = (buf[pos >> 3] >> (7 - (pos & 7))) & 1
            v = (v << np.uint64(1)) | np.uint64(bit)
            pos += 1
        out[i] = v
    while pos < total:
        if (buf[pos >> 3] >> (7 - (pos & 7))) & 1:
            return out, ERR_TRAILING
        pos += 1
    return out, OK


def unpack_fixed_py(buf, width, count):
    """Plain-Python reference of `unpack_fixed`."""
    out = np.zeros(count, dtype=np.uint64)
    total = len(buf) * 8
    if width * count > total:
        return out, ERR_OUT_OF_BITS
    pos = 0
    for i in range(count):
        v = 0
        for _ in range(width):
            v = (v << 1) | ((int(buf[pos // 8]) >> (7 - pos % 8)) & 1)
            pos += 1
        out[i] = v
    while pos < total:
        if (int(buf[pos // 8]) >> (7 - pos % 8)) & 1:
            return out, ERR_TRAILING
        pos += 1
    return out, OK


# ------------------------------------------------------------------------------ canonical Huffman decode
@numba.njit(cache=True)
def huffman_decode(buf, nbits, counts, symbols, n_out):
    """Decode `n_out` canonical-Huffman symbols from the first `nbits` bits of `buf` (puff.c algorithm).

    Inputs:  buf uint8 (m,) with m * 8 >= nbits (checked by the caller); nbits int; counts int64 (L+1,);
             symbols int64 (n_used,) in canonical order; n_out int.
    Returns: (out int64 (n_out,), status int). The stream must end exactly after the last code and the
             padding bits up to the byte boundary must be zero, otherwise ERR_TRAILING.
    """
    out = np.zeros(n_out, dtype=np.int64)
    maxlen = counts.shape[0] - 1
    pos = np.int64(0)
    for i in range(n_out):
        code = np.int64(0)
        first = np.int64(0)
        index = np.int64(0)
        found = False
        for ln in range(1, maxlen + 1):
            if pos >= nbits:
                return out, ERR_OUT_OF_BITS
            bit = (buf[pos >> 3] >> (7 - (pos & 7))) & 1
            pos += 1
            code |= np.int64(bit)
            cnt = counts[ln]
            if code - first < cnt:
                out[i] = symbols[index + code - first]
                found = True
                break
            index += cnt
            first += cnt
            first <<= 1
            code <<= 1
        if not found:
            return out, ERR_INVALID_CODE
    if pos != nbits:
        return out, ERR_TRAILING
    total = np.int64(buf.shape[0]) * 8
    while pos < total:
        if (buf[pos >> 3] >> (7 - (pos & 7))) & 1:
            return out, ERR_TRAILING
        pos += 1
    return out, OK


def huffman_decode_py(buf, nbits, counts, symbols, n_out):
    """Plain-Python reference of `huffman_decode`."""
    out = np.zeros(n_out, dtype=np.int64)
    maxlen = len(counts) - 1
    pos = 0
    for i in range(n_out):
        code = first = index = 0
        found = False
        for ln in range(1, maxlen + 1):
            if pos >= nbits:
                return out, ERR_OUT_OF_BITS
            code |= (int(buf[pos // 8]) >> (7 - pos % 8)) & 1
            pos += 1
            cnt = int(counts[ln])
            if code - first < cnt:
                out[i] = symbols[index + code - first]
                found = True
                break
            index += cnt
            first = (first + cnt) << 1
            code <<= 1
        if not found:
            return out, ERR_INVALID_CODE
    if pos != nbits:
        return out, ERR_TRAILING
    while pos < len(buf) * 8:
        if (int(buf[pos // 8]) >> (7 - pos % 8)) & 1:
            return out, ERR_TRAILING
        pos += 1
    return out, OK
