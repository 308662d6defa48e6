"""Standard-normal noise for training: a seeded ziggurat generator in numba, beside its NumPy twin.

Shape legend
    out     (R, M) float32 or float64, C-contiguous: R independent rows (one per example of a batch),
            M numbers per row (the pre-activation size of one example)

Stream: row r of a call with seed s and stream id t is generated from its own 64-bit state
``mix64(s ^ mix64(t * 2**32 + r))`` by SplitMix64 (state += 0x9E3779B97F4A7C15, output = mix64(state));
each output word gives one ziggurat draw (Marsaglia & Tsang 2000, 128 layers): bits 0-6 the layer, bits
32-63 the signed 32-bit value (the layer and the value come from different bits of the word). A draw that
falls outside the layer's rectangle core is resolved by the exact wedge / tail tests with further words of
the same row. The numbers of a row depend only on (s, t, r), so the result is the same for any thread
count, and a seed drawn from the epoch's numpy Generator fixes the noise of a training step exactly
(resume replays it). The kernel is parallel over rows (numba prange, one parallel layer) from PARALLEL_MIN
numbers on, serial below; no fastmath.
"""

import numba
import numpy as np
from numba import prange

_NJIT_PAR = dict(cache=True, nogil=True, parallel=True, error_model="numpy")

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
ZIG_R = 3.442619855899  # start of the tail (128 layers)


def _tables():
    """Marsaglia-Tsang ziggurat tables for 128 layers and 32-bit signed values: kn (int64), wn, fn."""
    m1 = 2.0 ** 31
    dn = tn = ZIG_R
    vn = 9.91256303526217e-3
    kn = np.zeros(128, np.int64)
    wn = np.zeros(128)
    fn = np.zeros(128)
    q = vn / np.exp(-0.5 * dn * dn)
    kn[0] = int((dn / q) * m1)
    kn[1] = 0
    wn[0] = q / m1
    wn[127] = dn / m1
    fn[0] = 1.0
    fn[127] = np.exp(-0.5 * dn * dn)
    for i in range(126, 0, -1):
        dn = np.sqrt(-2.0 * np.log(vn / dn + np.exp(-0.5 * dn * dn)))
        kn[i + 1] = int((dn / tn) * m1)
        tn = dn
        fn[i] = np.exp(-0.5 * dn * dn)
        wn[i] = dn / m1
    return kn, wn, fn


KN, WN, FN = _tables()


@numba.njit(cache=True, nogil=True)
def _mix64(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, nogil=True)
def _uniform(w):
    """(0, 1) double from the top 53 bits of a word (never 0: log() of it is finite)."""
    return (np.float64(w >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)


@numba.njit(cache=True, nogil=True)
def _split(w):
    """(layer index 0..127, signed 32-bit value) of a word."""
    iz = np.int64(w & np.uint64(127))
    hz = np.int64(w >> np.uint64(32)) - np.int64(2147483648)
    return iz, hz


@numba.njit(cache=True, nogil=True, inline="always")
def _fill_row(out, r, seed, stream, kn, wn, fn):
    """Fill row r of out (R, M) with standard normals from the stream of (seed, stream, r) (module doc)."""
    M = out.shape[1]
    st = _mix64(seed ^ _mix64((stream << np.uint64(32)) + np.uint64(r)))
    for m in range(M):
        st += np.uint64(0x9E3779B97F4A7C15)
        iz, hz = _split(_mix64(st))
        if abs(hz) < kn[iz]:
            out[r, m] = hz * wn[iz]
            continue
        while True:  # outside the rectangle core: wedge or tail (exact rejection)
            if iz == 0:
                while True:
                    st += np.uint64(0x9E3779B97F4A7C15)
                    x = -np.log(_uniform(_mix64(st))) / ZIG_R
                    st += np.uint64(0x9E3779B97F4A7C15)
                    yy = -np.log(_uniform(_mix64(st)))
                    if yy + yy >= x * x:
                        break
                out[r, m] = ZIG_R + x if hz > 0 else -ZIG_R - x
                break
            x = hz * wn[iz]
            st += np.uint64(0x9E3779B97F4A7C15)
            u = _uniform(_mix64(st))
            if fn[iz] + u * (fn[iz - 1] - fn[iz]) < np.exp(-0.5 * x * x):
                out[r, m] = x
                break
            st += np.uint64(0x9E3779B97F4A7C15)
            iz, hz = _split(_mix64(st))
            if abs(hz) < kn[iz]:
                out[r, m] = hz * wn[iz]
                break


@numba.njit(**_NJIT_PAR)
def normal_fill(out, seed, stream, kn, wn, fn):
    """Fill out (R, M) with standard normals; row r from the stream of (seed, stream, r) (module doc).
    Parallel over rows (numba prange).

    Inputs:  out (R, M) float32/float64 C-contiguous, written here; seed, stream uint64; kn, wn, fn tables.
    """
    for r in prange(out.shape[0]):
        _fill_row(out, r, seed, stream, kn, wn, fn)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def normal_fill_serial(out, seed, stream, kn, wn, fn):
    """normal_fill, serial: for small fills, where starting numba's parallel region costs more than the
    numbers (LeNet-300-100's 41,000 numbers per step: 0.54 ms of a 4.5 ms step in three parallel calls).
    A separate function, not a second compilation of normal_fill's: numba's cache is keyed by the
    function, so two dispatchers of one function would load each other's cached code."""
    for r in range(out.shape[0]):
        _fill_row(out, r, seed, stream, kn, wn, fn)


PARALLEL_MIN = 200_000  # numbers per call from which the parallel kernel runs


def normal_fill_numba(out, seed, stream):
    """normal_fill with the module's tables; out (R, M) or any C-contiguous array (rows = first axis).
    Rows are independent streams, so the serial kernel (below PARALLEL_MIN numbers) and the parallel one
    give the same numbers."""
    kernel = normal_fill if out.size >= PARALLEL_MIN else normal_fill_serial
    kernel(out.reshape(out.shape[0], -1), np.uint64(seed), np.uint64(stream), KN, WN, FN)
    return out


# ----------------------------------------------------------------------------------------------------
# NumPy twin (the same stream; vectorized core, the rare wedge/tail cases one by one)
# ----------------------------------------------------------------------------------------------------

def _mix64_numpy(z):
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def normal_fill_numpy(shape, seed, stream, dtype):
    """Reference for normal_fill: returns an array of `shape` (rows = first axis) of dtype."""
    R = shape[0]
    M = int(np.prod(shape[1:]))
    seed, stream = np.uint64(seed), np.uint64(stream)
    with np.errstate(over="ignore"):
        st0 = _mix64_numpy(seed ^ _mix64_numpy((stream << np.uint64(32)) + np.arange(R, dtype=np.uint64)))
    out = np.empty((R, M), dtype=dtype)
    kn, wn, fn = KN, WN, FN

    def word(st):
        with np.errstate(over="ignore"):
            st = st + GOLDEN
        return st, _mix64_numpy(st)

    def split(w):
        return int(w & np.uint64(127)), int(w >> np.uint64(32)) - 2147483648

    def uniform(w):
        return (float(w >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)

    for r in range(R):
        st = st0[r]
        m = 0
        while m < M:
            # vectorized core for the rest of the row, assuming every draw is accepted
            with np.errstate(over="ignore"):
                sts = st + GOLDEN * np.arange(1, M - m + 1, dtype=np.uint64)
            w = _mix64_numpy(sts)
            iz = (w & np.uint64(127)).astype(np.int64)
            hz = (w >> np.uint64(32)).astype(np.int64) - 2147483648
            ok = np.abs(hz) < kn[iz]
            n_ok = int(np.argmin(ok)) if not ok.all() else ok.size
            out[r, m:m + n_ok] = hz[:n_ok] * wn[iz[:n_ok]]
            m += n_ok
            if m == M:
                break
            st = sts[n_ok]
            izs, hzs = int(iz[n_ok]), int(hz[n_ok])
            while True:
                if izs == 0:
                    while True:
                        st, w1 = word(st)
                        x = -np.log(uniform(w1)) / ZIG_R
                        st, w2 = word(st)
                        yy = -np.log(uniform(w2))
                        if yy + yy >= x * x:
                            break
                    out[r, m] = ZIG_R + x if hzs > 0 else -ZIG_R - x
                    break
                x = hzs * wn[izs]
                st, w1 = word(st)
                if fn[izs] + uniform(w1) * (fn[izs - 1] - fn[izs]) < np.exp(-0.5 * x * x):
                    out[r, m] = x
                    break
                st, w1 = word(st)
                izs, hzs = split(w1)
                if abs(hzs) < kn[izs]:
                    out[r, m] = hzs * wn[izs]
                    break
            m += 1
    return out.reshape(shape)
