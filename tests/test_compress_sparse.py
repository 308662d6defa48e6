"""CSR with fixed-width relative offsets and filler zeros (appendix B.2)."""

import numpy as np
import pytest

from refvbc.compress.sparse import csr_decode, csr_encode


def test_known_example_with_fillers():
    # 2 offset bits -> largest gap M = 4. Row 0: nonzeros at columns 0, 9; row 1 empty; row 2: column 4.
    m = np.zeros((3, 12), dtype=np.int64)
    m[0, 0], m[0, 9], m[2, 4] = 3, 5, 7
    c = csr_encode(m, 2)
    # row 0: col 0 (gap 1 -> 0); gap 9 to col 9 = fillers at cols 4, 8 (offset 3 each), then gap 1 -> 0
    # row 2: gap 5 from -1: one filler at col 3 (offset 3), then gap 1 -> 0
    assert c["values"].tolist() == [3, 0, 0, 5, 0, 7], c["values"]
    assert c["offsets"].tolist() == [0, 3, 3, 0, 3, 0], c["offsets"]
    assert c["row_end"].tolist() == [4, 4, 6], c["row_end"]
    assert c["n_fill"] == 3
    np.testing.assert_array_equal(csr_decode(c["values"], c["offsets"], c["row_end"], m.shape), m)


@pytest.mark.parametrize("bits", [1, 2, 5, 8])
@pytest.mark.parametrize("shape,density", [((1, 1), 1.0), ((7, 40), 0.05), ((30, 784), 0.01), ((10, 300), 0.5),
                                           ((4, 5), 0.0)])
def test_round_trip(bits, shape, density):
    rng = np.random.default_rng(bits + shape[1])
    m = np.where(rng.random(shape) < density, rng.integers(1, 17, shape), 0)
    c = csr_encode(m, bits)
    assert c["offsets"].min(initial=0) >= 0 and c["offsets"].max(initial=0) < 2 ** bits
    assert c["values"].size == np.count_nonzero(m) + c["n_fill"]
    assert (c["row_end"][-1] if shape[0] else 0) == c["values"].size
    np.testing.assert_array_equal(csr_decode(c["values"], c["offsets"], c["row_end"], shape), m,
                                  err_msg=f"CSR round trip failed for bits={bits}, shape={shape}")


@pytest.mark.parametrize("gap,fills", [(4, 0), (5, 1), (8, 1), (9, 2), (13, 3)])
def test_filler_count_at_gap_boundaries(gap, fills):
    m = np.zeros((1, 20), np.int64)
    m[0, gap - 1] = 1  # first entry: gap measured from column -1
    c = csr_encode(m, 2)  # M = 4
    assert c["n_fill"] == fills, f"gap {gap}: expected {fills} fillers, got {c['n_fill']}"


def test_float_values_and_out_of_range_offsets():
    m = np.zeros((2, 6), np.float32)
    m[0, 5], m[1, 0] = 1.5, -2.25
    c = csr_encode(m, 5, 0.0)
    assert c["values"].dtype == np.float32
    np.testing.assert_array_equal(csr_decode(c["values"], c["offsets"], c["row_end"], m.shape, 0.0), m)
    bad = c["offsets"].copy()
    bad[0] = 30  # column 30 in a 6-column matrix
    assert csr_decode(c["values"], bad, c["row_end"], m.shape, 0.0) is None
    with pytest.raises(ValueError, match="offset_bits"):
        csr_encode(m, 0)
