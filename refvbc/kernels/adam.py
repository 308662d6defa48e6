"""Numba kernel for one in-place Adam update of a flat array (PyTorch's formula; the NumPy reference
is `refvbc.optim.adam_update_numpy`).

Shape legend: p, g, m, v are 1-D contiguous arrays of one dtype, length D.
"""

import numba
import numpy as np


# Serial on purpose (Adam.step runs tensors and halves of large ones on refvbc/parallel.py's threads,
# nogil): the largest tensor has 4e5 entries (~0.3 ms on one core, memory-bound);
# a parallel region per tensor costs more than that on a loaded 2-core machine, where a descheduled worker
# thread stalls the barrier for a whole scheduler slice (measured: Adam took 58% of a LeNet-300 step).
# error_model="numpy": no ZeroDivisionError branch in the loop, so it vectorizes (the denominator is
# >= eps > 0 anyway).
@numba.njit(cache=True, nogil=True, error_model="numpy")
def adam_update(p, g, m, v, lr, beta1, beta2, eps, bias_correction1, bias_correction2, tiny, p_floor):
    """In place: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)   (torch.optim.Adam, non-amsgrad);
    then every new m, v of magnitude below `tiny` (the dtype's smallest normal number) and every new
    p below `p_floor` (sqrt(tiny)) is stored as 0 (flush-to-zero: see refvbc/optim.py, "Subnormals")."""
    # Every constant in the arrays' dtype: a Python literal (1.0, or the int 1) would make numba compute
    # the whole update in float64 for float32 arrays (measured: 2.5 ns per weight instead of 0.7, and
    # not torch's float32 arithmetic). tiny is a positive normal number, so tiny / tiny is exactly 1.
    one = tiny / tiny
    zero = tiny - tiny
    step_size = lr / bias_correction1
    sq_bc2 = np.sqrt(bias_correction2)
    one_m_b1 = one - beta1
    one_m_b2 = one - beta2
    for i in range(p.shape[0]):
        gi = g[i]
        mi = beta1 * m[i] + one_m_b1 * gi
        vi = beta2 * v[i] + one_m_b2 * gi * gi
        pi = p[i] - step_size * mi / (np.sqrt(vi) / sq_bc2 + eps)
        m[i] = mi if abs(mi) >= tiny else zero
        v[i] = vi if vi >= tiny else zero
        p[i] = pi if abs(pi) >= p_floor else zero
