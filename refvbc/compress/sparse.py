"""Compressed Sparse Row with fixed-width relative column offsets and filler zeros (paper §3, appendix B.2).

Shape legend
    R        rows of the (pruned) weight matrix: output units / channels
    C        columns: dense -> kept inputs; conv -> kept in_channels * kh * kw, i.e. the weight
             (out_c, in_c, kh, kw) reshaped to (out_c, in_c * kh * kw) in C order (channel, then kh, kw)
    E        stored entries: non-zeros plus filler zeros
    b        offset width in bits; M = 2**b is the largest column gap one offset can express

Appendix B.2: the column index of each stored entry is kept as the distance to the previous stored entry
of the same row (IC'), written with b bits. We store gap - 1 (the number of skipped columns, as Han et al.
2015), where gap = column - previous column and the previous column of a row's first entry is -1. When a
gap exceeds M, a filler entry with value 0 is inserted M columns after the previous entry (offset code
M - 1), as often as needed. Row pointers (IR) are the cumulative entry counts at the end of each row.
Fillers take distinct columns, so a row never holds more than C entries.
"""

import numpy as np


def csr_encode(symbols, offset_bits, zero_symbol=0):
    """Encode the non-zeros of a 2-D symbol matrix.

    Inputs:  symbols (R, C), codebook indices (int) or raw values (float32); `zero_symbol` marks a zero
             weight; offset_bits b in 1..16.
    Returns: dict with
               values  (E,) symbols.dtype, the symbol of each entry (fillers hold zero_symbol)
               offsets int64 (E,)  gap - 1, each in [0, 2**b)
               row_end int64 (R,)  cumulative entry count after each row (IR without its leading 0)
               n_fill  int         number of filler entries
    """
    symbols = np.asarray(symbols)
    if symbols.ndim != 2:
        raise ValueError(f"csr_encode expects a 2-D matrix, got shape {symbols.shape}")
    if not 1 <= int(offset_bits) <= 16:
        raise ValueError(f"offset_bits must be in 1..16, got {offset_bits}")
    M = 1 << int(offset_bits)
    R, C = symbols.shape
    rows, cols = np.nonzero(symbols != zero_symbol)  # row-major order
    prev = np.full(rows.size, -1, dtype=np.int64)
    if rows.size > 1:
        same_row = rows[1:] == rows[:-1]
        prev[1:] = np.where(same_row, cols[:-1], -1)
    gap = cols.astype(np.int64) - prev  # >= 1
    nfill = (gap - 1) // M  # fillers needed before each non-zero
    per_nz = nfill + 1  # entries emitted per non-zero
    E = int(per_nz.sum())
    # entry k belongs to non-zero owner[k]; its rank j within that group: fillers j < nfill, then the nz
    owner = np.repeat(np.arange(rows.size), per_nz)
    start = np.cumsum(per_nz) - per_nz
    j = np.arange(E) - start[owner]
    is_fill = j < nfill[owner]
    values = np.where(is_fill, zero_symbol, symbols[rows, cols][owner]).astype(symbols.dtype)
    offsets = np.where(is_fill, M - 1, gap[owner] - nfill[owner] * M - 1).astype(np.int64)
    row_counts = np.bincount(rows, weights=per_nz, minlength=R).astype(np.int64) if R else np.zeros(0, np.int64)
    return {
        "values": values,
        "offsets": offsets,
        "row_end": np.cumsum(row_counts).astype(np.int64),
        "n_fill": int(is_fill.sum()),
    }


def csr_columns(offsets, row_end, n_cols):
    """Absolute column of every entry from relative offsets; None when one falls outside [0, n_cols).

    Inputs:  offsets int64 (E,) (gap - 1); row_end int64 (R,), non-decreasing, row_end[-1] == E
             (checked by the caller); n_cols C.
    Returns: cols int64 (E,) or None.
    """
    E = offsets.size
    gaps = offsets.astype(np.int64) + 1
    csum = np.cumsum(gaps)
    R = row_end.size
    row_start = np.concatenate([[0], row_end[:-1]]) if R else np.zeros(0, np.int64)
    counts = row_end - row_start
    # column = (cumulative gap within the row) - 1
    base = np.zeros(R, dtype=np.int64)
    nonempty = counts > 0
    base[nonempty & (row_start > 0)] = csum[row_start[nonempty & (row_start > 0)] - 1]
    cols = csum - np.repeat(base, counts) - 1 if E else np.zeros(0, np.int64)
    if E and (cols.min() < 0 or cols.max() >= n_cols):
        return None
    return cols


def csr_decode(values, offsets, row_end, shape, zero_symbol=0):
    """Inverse of csr_encode: a dense (R, C) matrix of values.dtype (fillers land as zero_symbol). None
    when an entry's column falls outside the matrix (the caller raises)."""
    R, C = shape
    cols = csr_columns(offsets, row_end, C)
    if cols is None:
        return None
    out = np.full((R, C), zero_symbol, dtype=values.dtype)
    row_start = np.concatenate([[0], row_end[:-1]]) if R else np.zeros(0, np.int64)
    rows = np.repeat(np.arange(R), row_end - row_start)
    out[rows, cols] = values
    return out
