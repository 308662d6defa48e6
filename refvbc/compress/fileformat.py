"""The `.rvbc` file: writer and validating reader (byte-by-byte description in docs/format.md).

Shape legend
    O, U, w, O', U'   see refvbc/compress/prune.py; C' = U' * w columns of a layer's CSR matrix
    E                 CSR entries (non-zeros + filler zeros) of a layer
    V                 codebook entries

Layout (all integers little-endian):
    header   magic (8) | version u16 | flags u16 | payload length u32
    payload  model description, codebook, per-layer masks, streams and biases
    trailer  CRC-32 (zlib.crc32) of header + payload, u32

The reader trusts nothing: every count is checked against the architecture's maxima and against the bytes
that remain before anything is allocated; every stream must be consumed exactly; any problem raises
FormatError (a ValueError). Decoding time and memory are bounded by the architecture's size.
"""

import os
import struct
import zlib

import numpy as np

from refvbc.arch import ARCHS
from refvbc.compress import sparse
from refvbc.compress.huffman import (
    FormatError,
    code_lengths,
    decode_symbols,
    encode_symbols,
    pack_fixed,
    unpack_fixed,
    validate_lengths,
)
from refvbc.compress.model import LAYOUTS, METHODS, CompressedLayer, CompressedModel
from refvbc.compress.prune import geometry
from refvbc.fileio import atomic_write_bytes
from refvbc.kernels.bitpack import MAX_CODE_LEN

MAGIC = b"\x89RVBC\r\n\x1a"
VERSION = 1
HEADER = struct.Struct("<8sHHI")
MAX_FILE_BYTES = 64 << 20  # far above any lenet file (an uncompressed lenet5 is 1.7 MB)
CODING_RAW, CODING_HUFFMAN = 0, 1


# ------------------------------------------------------------------------------------------------ write
class _Writer:
    def __init__(self, sizes):
        self.parts = []
        self.n = 0
        self.sizes = sizes  # section -> bytes, accumulated for the accounting
        self.section = "header"

    def put(self, b):
        b = bytes(b)
        self.parts.append(b)
        self.n += len(b)
        self.sizes[self.section] = self.sizes.get(self.section, 0) + len(b)

    def u8(self, v):
        self.put(struct.pack("<B", v))

    def u16(self, v):
        self.put(struct.pack("<H", v))

    def u32(self, v):
        self.put(struct.pack("<I", v))

    def f32(self, a):
        self.put(np.ascontiguousarray(a, dtype="<f4").tobytes())

    def mask(self, m):
        self.put(np.packbits(np.asarray(m, dtype=bool)).tobytes())  # MSB first, zero padding

    def table(self, lengths):
        lengths = np.asarray(lengths, dtype=np.uint8)
        used = np.flatnonzero(lengths)
        n = int(used[-1]) + 1 if used.size else 0
        self.u16(n)
        self.put(lengths[:n].tobytes())


def _huffman_stream(w, symbols, alphabet, what_table, what_stream):
    """Write table + u32 nbits + packed bits of a symbol stream; returns the stream's bits."""
    lengths = code_lengths(np.bincount(symbols, minlength=alphabet))
    w.section = what_table
    w.table(lengths)
    buf, nbits = encode_symbols(symbols, lengths)
    w.section = what_stream
    w.u32(nbits)
    w.put(buf.tobytes())
    return nbits


def encode(cm, stats=None):
    """Serialize a CompressedModel to `.rvbc` bytes.

    Inputs:  cm CompressedModel (validated first); stats: an optional dict that receives the size of every
             section, {"model": {section: bytes}, "layers": [{section: bytes, "bits_*": exact bits}]}.
    Returns: bytes.
    """
    cm.validate()
    geos = geometry(cm.arch)
    stats = {} if stats is None else stats
    stats["model"] = {}
    stats["layers"] = []
    w = _Writer(stats["model"])
    w.section = "descriptor"
    name = cm.arch.encode("ascii")
    w.u8(len(name))
    w.put(name)
    w.u8(METHODS.index(cm.method))
    w.u8(CODING_RAW if cm.codebook is None else CODING_HUFFMAN)
    w.u8(len(cm.layers))
    if cm.codebook is not None:
        w.section = "codebook"
        w.u16(cm.codebook.size)
        w.f32(cm.codebook)
    w.section = "masks"
    w.mask(cm.input_mask)
    for g, L in zip(geos, cm.layers):
        ls = {}
        stats["layers"].append(ls)
        w.sizes = ls
        w.section = "masks"
        w.mask(L.out_mask)
        w.section = "layer_header"
        w.u8(LAYOUTS.index(L.layout))
        mat = L.matrix()
        smat = L.symbol_matrix()
        if L.layout == "csr":
            b = int(L.offset_bits)
            csr = sparse.csr_encode(smat if smat is not None else mat, b, 0 if smat is not None else 0.0)
            E = csr["values"].size
            w.u8(b)
            w.u8(1 if L.huffman_offsets else 0)
            w.u32(E)
            width = int(E).bit_length()
            w.u8(width)
            w.section = "row_ptr"
            buf, nb = pack_fixed(csr["row_end"], width)
            w.put(buf.tobytes())
            ls["bits_row_ptr"] = nb
            ls["n_entries"] = E
            ls["n_fill"] = csr["n_fill"]
            vals = csr["values"]
        else:
            vals = (smat if smat is not None else mat).ravel()
            ls["n_entries"] = vals.size
            ls["n_fill"] = 0
            ls["bits_row_ptr"] = 0
        if cm.codebook is not None:
            ls["bits_values"] = _huffman_stream(w, vals, cm.codebook.size, "value_table", "values")
        else:
            w.section = "values"
            w.f32(vals)
            ls["bits_values"] = 32 * vals.size
        ls["bits_offsets"] = 0
        if L.layout == "csr":
            if L.huffman_offsets:
                ls["bits_offsets"] = _huffman_stream(w, csr["offsets"], 1 << b, "offset_table", "offsets")
            else:
                w.section = "offsets"
                buf, nb = pack_fixed(csr["offsets"], b)
                w.put(buf.tobytes())
                ls["bits_offsets"] = nb
        w.section = "bias"
        w.f32(L.bias)
    payload = b"".join(w.parts)
    if len(payload) > MAX_FILE_BYTES:
        raise ValueError(f"payload of {len(payload)} bytes exceeds the format's {MAX_FILE_BYTES}")
    header = HEADER.pack(MAGIC, VERSION, 0, len(payload))
    crc = zlib.crc32(payload, zlib.crc32(header)) & 0xFFFFFFFF
    stats["model"]["header"] = HEADER.size
    stats["model"]["checksum"] = 4
    return header + payload + struct.pack("<I", crc)


def write_rvbc(path, cm):
    """Write `cm` to `path` atomically (temporary file in the same folder, fsync, os.replace).
    Returns the number of bytes written."""
    return atomic_write_bytes(path, encode(cm))


# ------------------------------------------------------------------------------------------------- read
class _Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, n, what):
        if n < 0 or n > len(self.data) - self.pos:
            raise FormatError(f"{what}: needs {n} bytes but only {len(self.data) - self.pos} remain")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def u8(self, what):
        return self.take(1, what)[0]

    def u16(self, what):
        return struct.unpack("<H", self.take(2, what))[0]

    def u32(self, what):
        return struct.unpack("<I", self.take(4, what))[0]

    def f32(self, n, what):
        a = np.frombuffer(self.take(4 * n, what), dtype="<f4").astype(np.float32)
        if not np.isfinite(a).all():
            raise FormatError(f"{what}: holds non-finite float32 values")
        return a

    def mask(self, n, what):
        raw = np.frombuffer(self.take((n + 7) // 8, what), dtype=np.uint8)
        bits = np.unpackbits(raw)
        if bits[n:].any():
            raise FormatError(f"{what}: nonzero padding bits")
        return bits[:n].astype(bool)

    def table(self, alphabet, what):
        n = self.u16(what)
        if n > alphabet:
            raise FormatError(f"{what}: {n} code lengths for an alphabet of {alphabet}")
        lengths = np.zeros(alphabet, dtype=np.uint8)
        lengths[:n] = np.frombuffer(self.take(n, what), dtype=np.uint8)
        validate_lengths(lengths, what)
        return lengths

    def huffman_stream(self, alphabet, count, what):
        lengths = self.table(alphabet, f"{what} table")
        nbits = self.u32(f"{what} bit count")
        if nbits > count * MAX_CODE_LEN or (count > 0 and nbits < count):
            raise FormatError(f"{what}: {nbits} bits can't hold {count} codes of 1..{MAX_CODE_LEN} bits")
        buf = np.frombuffer(self.take((nbits + 7) // 8, what), dtype=np.uint8)
        return decode_symbols(buf, nbits, lengths, count, what)


def decode(data, entries=None):
    """Parse and fully validate `.rvbc` bytes -> CompressedModel. Raises FormatError on anything bad.

    entries: an optional list that receives, per layer, the stored entries as the file holds them:
             {"layout", "values" (E,) symbols or raw float32, "cols" int64 (E,) or None for a dense layer,
             "row_end" int64 (O',) or None, "shape" (O', C')} (the sparse inference model reads these).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FormatError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < HEADER.size + 4:
        if not MAGIC.startswith(data[:8]):
            raise FormatError("not an .rvbc file (bad magic number)")
        raise FormatError(f"truncated file: {len(data)} bytes, the header and checksum alone take "
                          f"{HEADER.size + 4}")
    magic, version, flags, plen = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise FormatError("not an .rvbc file (bad magic number)")
    if version != VERSION:
        raise FormatError(f"unsupported .rvbc format version {version} (this reader knows {VERSION})")
    if flags != 0:
        raise FormatError(f"unknown header flags 0x{flags:04x}")
    if plen > MAX_FILE_BYTES:
        raise FormatError(f"declared payload of {plen} bytes exceeds the format's maximum")
    if len(data) != HEADER.size + plen + 4:
        what = "truncated" if len(data) < HEADER.size + plen + 4 else "has trailing bytes"
        raise FormatError(f"file {what}: {len(data)} bytes, header declares {HEADER.size + plen + 4}")
    (crc,) = struct.unpack_from("<I", data, HEADER.size + plen)
    if zlib.crc32(data[:HEADER.size + plen]) & 0xFFFFFFFF != crc:
        raise FormatError("checksum mismatch: the file is corrupted")
    r = _Reader(data[HEADER.size:HEADER.size + plen])
    cm = _decode_payload(r, entries)
    if r.pos != len(r.data):
        raise FormatError(f"{len(r.data) - r.pos} unread bytes at the end of the payload")
    try:
        cm.validate()
    except FormatError:
        raise
    except ValueError as e:
        raise FormatError(f"inconsistent model: {e}") from None
    return cm


def _decode_payload(r, entries=None):
    n = r.u8("architecture name length")
    try:
        arch = r.take(n, "architecture name").decode("ascii")
    except UnicodeDecodeError:
        raise FormatError("architecture name is not ASCII") from None
    if arch not in ARCHS:
        raise FormatError(f"unknown architecture {arch!r} (known: {sorted(ARCHS)})")
    m = r.u8("method")
    if m >= len(METHODS):
        raise FormatError(f"unknown method code {m}")
    coding = r.u8("value coding")
    if coding not in (CODING_RAW, CODING_HUFFMAN):
        raise FormatError(f"unknown value coding {coding}")
    geos = geometry(arch)
    n_layers = r.u8("layer count")
    if n_layers != len(geos):
        raise FormatError(f"{arch} has {len(geos)} layers, file says {n_layers}")
    codebook = None
    if coding == CODING_HUFFMAN:
        V = r.u16("codebook size")
        if V < 1:
            raise FormatError("empty codebook")
        codebook = r.f32(V, "codebook")
        if codebook[0] != 0.0:
            raise FormatError("codebook[0] must be 0.0")
    in_mask = r.mask(geos[0].n_in_units, "input mask")
    layers = []
    for g in geos:
        out_mask = r.mask(g.n_out, f"{g.name} output mask")
        O, U = int(out_mask.sum()), int(in_mask.sum())
        C = U * g.unit_width
        lay = r.u8(f"{g.name} layout")
        if lay >= len(LAYOUTS):
            raise FormatError(f"{g.name}: unknown layout code {lay}")
        layout = LAYOUTS[lay]
        b, huff_off = (8 if g.kind == "conv" else 5), False
        if layout == "csr":
            b = r.u8(f"{g.name} offset bits")
            if not 1 <= b <= 16:
                raise FormatError(f"{g.name}: offset width {b} outside 1..16")
            ho = r.u8(f"{g.name} offset coding")
            if ho > 1:
                raise FormatError(f"{g.name}: unknown offset coding {ho}")
            huff_off = bool(ho)
            E = r.u32(f"{g.name} entry count")
            if E > O * C:
                raise FormatError(f"{g.name}: {E} entries in a {O}x{C} matrix")
            width = r.u8(f"{g.name} row pointer width")
            if width != E.bit_length():
                raise FormatError(f"{g.name}: row pointer width {width}, expected {E.bit_length()}")
            rp_bytes = r.take((O * width + 7) // 8, f"{g.name} row pointers")
            row_end = unpack_fixed(np.frombuffer(rp_bytes, np.uint8), width, O, f"{g.name} row pointers")
            if O and (row_end[-1] != E or (np.diff(row_end) < 0).any()):
                raise FormatError(f"{g.name}: row pointers are not a non-decreasing sequence ending at {E}")
            if O == 0 and E != 0:
                raise FormatError(f"{g.name}: {E} entries in a layer with no rows")
            count = E
        else:
            count = O * C
        what = f"{g.name} values"
        if codebook is not None:
            vals = r.huffman_stream(codebook.size, count, what)
        else:
            vals = r.f32(count, what)
        if layout == "csr":
            if huff_off:
                offsets = r.huffman_stream(1 << b, E, f"{g.name} offsets")
            else:
                raw = np.frombuffer(r.take((E * b + 7) // 8, f"{g.name} offsets"), np.uint8)
                offsets = unpack_fixed(raw, b, E, f"{g.name} offsets")
            mat = sparse.csr_decode(vals, offsets, row_end, (O, C), 0 if codebook is not None else 0.0)
            if mat is None:
                raise FormatError(f"{g.name}: a column offset points outside the {O}x{C} matrix")
        else:
            mat = vals.reshape(O, C)
        if entries is not None:
            csr = layout == "csr"
            entries.append({"layout": layout, "values": vals, "shape": (O, C),
                            "cols": sparse.csr_columns(offsets, row_end, C) if csr else None,
                            "row_end": row_end if csr else None})
        bias = r.f32(O, f"{g.name} bias")
        shape = (O, U) + tuple(g.weight_shape[2:]) if g.kind == "conv" else (O, C)
        if codebook is not None:
            symbols = mat.astype(np.int64).reshape(shape)
            weight = codebook[symbols]
        else:
            symbols = None
            weight = mat.astype(np.float32).reshape(shape)
        layers.append(CompressedLayer(g.name, g.kind, tuple(g.weight_shape), out_mask, in_mask, weight,
                                      symbols, bias, layout, int(b), huff_off))
        in_mask = out_mask
    return CompressedModel(arch, METHODS[m], codebook, layers)


def read_rvbc(path, entries=None):
    """Read and validate a `.rvbc` file -> CompressedModel (FormatError when it is bad); `entries` as in
    decode."""
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES + HEADER.size + 4:
        raise FormatError(f"{path}: {size} bytes is larger than any .rvbc file can be")
    with open(path, "rb") as f:
        return decode(f.read(), entries)
