"""The `.rvbc` file: exact round trips, atomic writes, and rejection of truncated/corrupted/foreign files."""

import os
import struct
import zlib

import numpy as np
import pytest

from refvbc.arch import N_COMPONENTS
from refvbc.compress import (FormatError, compress_model, decode, encode, evaluate, read_rvbc, report,
                             write_rvbc)
from refvbc.compress.fileformat import HEADER, MAGIC
from refvbc.compress.synthetic import synthetic_params

CASES = [("lenet300", "sws"), ("lenet300", "vdsws"), ("lenet300", "vd"), ("lenet300", "l2"),
         ("lenet5", "sws"), ("lenet5", "vdsws"), ("lenet5", "vd"), ("lenet5", "l2")]


def _model(arch, method, **kw):
    density = 0.004 if method == "vd" else 0.02  # keeps the VD EM fast
    return compress_model(arch, synthetic_params(arch, method, density=density, seed=11), method, **kw)


def _x(arch, n=5):
    rng = np.random.default_rng(0)
    return rng.random((n, 784)).astype(np.float32)


@pytest.mark.parametrize("arch,method", CASES)
def test_round_trip_exact(arch, method, tmp_path):
    cm = _model(arch, method)
    data = encode(cm)
    assert encode(decode(data)) == data, "re-encoding a decoded file must give the same bytes"
    back = decode(data)
    assert back.equals(cm), "decode(encode(cm)) differs from cm"
    for a, b in zip(cm.layers, back.layers):
        assert a.weight.tobytes() == b.weight.tobytes(), f"{a.name}: quantized weights differ"
    path = tmp_path / "m.rvbc"
    n = write_rvbc(str(path), cm)
    assert n == len(data) == os.path.getsize(path)
    assert read_rvbc(str(path)).equals(cm)
    assert [f for f in os.listdir(tmp_path) if f != "m.rvbc"] == [], "temporary file left behind"
    x = _x(arch)
    np.testing.assert_array_equal(evaluate(back, x), evaluate(cm, x))


@pytest.mark.parametrize("method", ["sws", "vdsws"])
@pytest.mark.parametrize("K", [33, 65])
def test_round_trip_of_a_mixture_of_other_components(method, K, tmp_path):
    """A model trained with --components K != 17 (beyond the paper): its codebook holds up to K values
    (0 and the K - 1 non-zero means) and the file decodes to exactly what was encoded."""
    p = synthetic_params("lenet300", method, density=0.05, seed=12, components=K)
    assert p["gmm.mu"].shape == (K,), f"expected a mixture of {K}, got {p['gmm.mu'].shape}"
    cm = compress_model("lenet300", p, method)
    assert N_COMPONENTS < cm.codebook.size <= K, \
        f"expected a codebook of {N_COMPONENTS + 1}..{K} values, got {cm.codebook.size}"
    data = encode(cm)
    back = decode(data)
    assert back.equals(cm), f"decode(encode(cm)) differs from cm (K={K})"
    np.testing.assert_array_equal(back.codebook, cm.codebook, err_msg="codebook")
    for a, b in zip(cm.layers, back.layers):
        assert a.weight.tobytes() == b.weight.tobytes(), f"{a.name}: quantized weights differ"
    assert encode(back) == data, "re-encoding a decoded file must give the same bytes"
    write_rvbc(str(tmp_path / "k.rvbc"), cm)
    np.testing.assert_array_equal(evaluate(read_rvbc(str(tmp_path / "k.rvbc")), _x("lenet300")),
                                  evaluate(cm, _x("lenet300")))


@pytest.mark.parametrize("offset_bits,huff", [(None, True), (3, False), ({"dense": 7, "conv": 4}, True),
                                              ({"fc1": 2}, False)])
def test_offset_options(offset_bits, huff):
    cm = _model("lenet5", "vdsws", offset_bits=offset_bits, huffman_offsets=huff, layout="csr")
    want = {None: {"conv": 8, "dense": 5}, 3: {"conv": 3, "dense": 3}}.get(
        offset_bits if not isinstance(offset_bits, dict) else None)
    for L in cm.layers:
        assert L.huffman_offsets == huff and L.layout == "csr"
        if isinstance(offset_bits, dict):
            exp = offset_bits.get(L.name, offset_bits.get(L.kind, 8 if L.kind == "conv" else 5))
        else:
            exp = want[L.kind]
        assert L.offset_bits == exp, f"{L.name}: offset bits {L.offset_bits}, expected {exp}"
    assert decode(encode(cm)).equals(cm)


def test_huffman_offsets_shrink_offsets():
    a = report(_model("lenet300", "sws", layout="csr"))["total"]
    b = report(_model("lenet300", "sws", layout="csr", huffman_offsets=True))["total"]
    assert b["bits_offsets"] < a["bits_offsets"], (a["bits_offsets"], b["bits_offsets"])


def _small_file():
    p = synthetic_params("lenet300", "vdsws", density={"fc1": 0.002, "fc2": 0.02, "fc3": 0.2},
                         dead_units=0.3, seed=5)
    cm = compress_model("lenet300", p, "vdsws", huffman_offsets=True, layout="csr")
    assert all(L.weight.size > 0 for L in cm.layers), [L.weight.shape for L in cm.layers]
    return encode(cm)


def _refit(payload, version=1):
    """Wrap a payload in a header and a valid checksum, as a crafted (not merely corrupted) file."""
    head = HEADER.pack(MAGIC, version, 0, len(payload))
    return head + payload + struct.pack("<I", zlib.crc32(head + payload) & 0xFFFFFFFF)


def test_truncation_at_every_length():
    data = _small_file()
    assert len(data) < 4000, len(data)
    for n in range(len(data)):
        with pytest.raises(FormatError):
            decode(data[:n])
    payload = data[HEADER.size:-4]
    for n in range(len(payload)):  # truncated payload with a consistent header and checksum
        with pytest.raises(FormatError):
            decode(_refit(payload[:n]))
    with pytest.raises(FormatError, match="trailing"):
        decode(data + b"\0")


def test_random_byte_flips():
    data = _small_file()
    rng = np.random.default_rng(123)
    for _ in range(300):
        b = bytearray(data)
        for i in rng.choice(len(b), size=rng.integers(1, 4), replace=False):
            b[i] ^= int(rng.integers(1, 256))
        with pytest.raises(FormatError):
            decode(bytes(b))


def test_flips_behind_a_valid_checksum_never_crash():
    """The parser itself must reject or cleanly decode anything, checksum aside."""
    data = _small_file()
    payload = data[HEADER.size:-4]
    rng = np.random.default_rng(7)
    outcomes = {"rejected": 0, "decoded": 0}
    for _ in range(400):
        b = bytearray(payload)
        for i in rng.choice(len(b), size=rng.integers(1, 3), replace=False):
            b[i] ^= 1 << int(rng.integers(0, 8))
        try:
            cm = decode(_refit(bytes(b)))
        except FormatError:
            outcomes["rejected"] += 1
        else:
            cm.validate()
            outcomes["decoded"] += 1
    assert outcomes["rejected"] > 0, outcomes


def test_foreign_and_wrong_version():
    data = _small_file()
    with pytest.raises(FormatError, match="magic"):
        decode(b"PK\x03\x04" + data[4:])
    with pytest.raises(FormatError, match="truncated"):
        decode(b"")
    with pytest.raises(FormatError, match="version"):
        decode(_refit(data[HEADER.size:-4], version=2))
    with pytest.raises(FormatError, match="checksum"):
        decode(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(FormatError):
        decode("not bytes")
    assert issubclass(FormatError, ValueError)


def test_crafted_bad_contents():
    data = _small_file()
    payload = bytearray(data[HEADER.size:-4])
    assert payload[0] == len(b"lenet300") and payload[1:9] == b"lenet300"
    bad = bytearray(payload)
    bad[1:9] = b"lenet999"
    with pytest.raises(FormatError, match="architecture"):
        decode(_refit(bytes(bad)))
    bad = bytearray(payload)
    bad[9] = 17  # method code
    with pytest.raises(FormatError, match="method"):
        decode(_refit(bytes(bad)))
    with pytest.raises(FormatError, match="unread bytes"):
        decode(_refit(bytes(payload) + b"\0"))
