"""Bit packing (numba) against the plain-Python twins, and canonical Huffman coding round trips."""

import numpy as np
import pytest

from refvbc.compress.huffman import (FormatError, canonical_codes, code_lengths, decode_symbols,
                                     encode_symbols, pack_fixed, unpack_fixed, validate_lengths)
from refvbc.kernels import bitpack


def _random_stream(rng, K, n, skew):
    p = rng.random(K) ** skew
    p /= p.sum()
    return rng.choice(K, size=n, p=p)


@pytest.mark.parametrize("K,n,skew", [(1, 7, 1.0), (2, 50, 1.0), (17, 300, 4.0), (65, 500, 8.0), (256, 200, 2.0)])
def test_pack_numba_matches_python(K, n, skew):
    rng = np.random.default_rng(K * 1000 + n)
    syms = _random_stream(rng, K, n, skew)
    lengths = code_lengths(np.bincount(syms, minlength=K))
    codes, counts, order = canonical_codes(lengths)
    c, ln = codes[syms], lengths[syms]
    buf_nb, nbits_nb = bitpack.pack_codes(c, ln)
    buf_py, nbits_py = bitpack.pack_codes_py(c, ln)
    assert nbits_nb == nbits_py == int(ln.astype(np.int64).sum()), (nbits_nb, nbits_py)
    assert buf_nb.tobytes() == buf_py.tobytes(), "numba and Python packing differ"
    out_nb, st_nb = bitpack.huffman_decode(buf_nb, np.int64(nbits_nb), counts, order, np.int64(n))
    out_py, st_py = bitpack.huffman_decode_py(buf_py, nbits_py, counts, order, n)
    assert st_nb == st_py == bitpack.OK, (st_nb, st_py)
    np.testing.assert_array_equal(out_nb, syms, err_msg="numba decode != input")
    np.testing.assert_array_equal(out_py, syms, err_msg="python decode != input")


@pytest.mark.parametrize("width", [1, 3, 5, 8, 13, 32])
@pytest.mark.parametrize("n", [0, 1, 9, 100])
def test_fixed_width_numba_matches_python(width, n):
    rng = np.random.default_rng(width * 7 + n)
    vals = rng.integers(0, 1 << width, size=n, dtype=np.uint64)
    buf, nbits = pack_fixed(vals, width)
    buf_py, nbits_py = bitpack.pack_codes_py(vals, np.full(n, width))
    assert buf.tobytes() == buf_py.tobytes() and nbits == nbits_py == n * width
    a, sa = bitpack.unpack_fixed(buf, np.int64(width), np.int64(n))
    b, sb = bitpack.unpack_fixed_py(buf, width, n)
    assert sa == sb == bitpack.OK
    np.testing.assert_array_equal(a, vals)
    np.testing.assert_array_equal(b, vals)


def test_known_bits():
    # codes 1 (len 1), 01 (len 2), 0001 (len 4): bits 1 01 0001 -> 1010 001(0) = 0xA2
    buf, nbits = bitpack.pack_codes(np.array([1, 1, 1], np.uint64), np.array([1, 2, 4], np.uint8))
    assert nbits == 7 and buf.tobytes() == b"\xa2", (nbits, buf.tobytes())


def test_code_lengths_optimal_and_canonical():
    # frequencies 45,13,12,16,9,5 (CLRS): optimal lengths 1,3,3,3,4,4
    lengths = code_lengths([45, 13, 12, 16, 9, 5])
    assert sorted(lengths.tolist()) == [1, 3, 3, 3, 4, 4], lengths
    assert int(np.dot(lengths, [45, 13, 12, 16, 9, 5])) == 224
    codes, counts, order = canonical_codes(lengths)
    # prefix-free: no code is a prefix of another
    words = [format(int(codes[s]), f"0{int(lengths[s])}b") for s in range(6)]
    for a in words:
        for b in words:
            assert a == b or not b.startswith(a), (a, b)
    assert code_lengths([0, 5, 0]).tolist() == [0, 1, 0]
    assert code_lengths([0, 0]).tolist() == [0, 0]


def test_length_limit():
    freqs = [2 ** i for i in range(40)]  # Fibonacci-like: unlimited Huffman would need 39 bits
    lengths = code_lengths(freqs)
    assert lengths.max() <= bitpack.MAX_CODE_LEN, lengths.max()
    validate_lengths(lengths)
    syms = np.repeat(np.arange(40), 2)
    buf, nbits = encode_symbols(syms, lengths)
    np.testing.assert_array_equal(decode_symbols(buf, nbits, lengths, syms.size), syms)


def test_bad_streams_raise_format_error():
    lengths = code_lengths([5, 3, 1])
    syms = np.array([0, 1, 2, 0, 0])
    buf, nbits = encode_symbols(syms, lengths)
    with pytest.raises(FormatError, match="middle of a code|leftover"):
        decode_symbols(buf, nbits - 1, lengths, syms.size)
    with pytest.raises(FormatError, match="leftover"):
        decode_symbols(buf, nbits, lengths, syms.size - 1)
    with pytest.raises(FormatError, match="over-subscribed"):
        validate_lengths([1, 1, 1])
    with pytest.raises(FormatError, match="exceeds"):
        validate_lengths([40, 1])
    incomplete = np.array([1, 0, 0], np.uint8)  # only code '0' exists; a '1' bit is invalid
    with pytest.raises(FormatError, match="no code"):
        decode_symbols(np.array([0x80], np.uint8), 1, incomplete, 1)
    with pytest.raises(FormatError, match="padding|leftover"):
        unpack_fixed(np.array([0b10100001], np.uint8), 3, 2)
    st = bitpack.huffman_decode_py(np.array([0x80], np.uint8), 1, np.array([0, 1]), np.array([0]), 1)[1]
    assert st == bitpack.ERR_INVALID_CODE
