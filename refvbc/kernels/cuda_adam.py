"""numba.cuda kernel of one in-place Adam update of a flat array (torch.optim.Adam; the CPU kernel is
refvbc/kernels/adam.py and the NumPy reference refvbc.optim.adam_update_numpy).

Shape legend: p, g, m, v are flat device arrays of one dtype, length D. The scalars are passed in that
dtype, so float32 parameters are updated in float32 arithmetic as on the CPU.
"""

import math

from numba import cuda

from .cuda_common import launch


@cuda.jit
def adam_kernel(p, g, m, v, lr, beta1, beta2, eps, bias_correction1, bias_correction2, tiny, p_floor, n):
    """m = b1 m + (1-b1) g; v = b2 v + (1-b2) g²; p -= (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps);
    new m, v below `tiny` and new p below `p_floor` in magnitude are stored as 0 (as on the CPU,
    refvbc/optim.py "Subnormals")."""
    step_size = lr / bias_correction1
    sq_bc2 = math.sqrt(bias_correction2)
    one = tiny / tiny  # 1 and 0 in the arrays' dtype (a literal 1 would promote the update to float64)
    zero = tiny - tiny
    one_m_b1 = one - beta1
    one_m_b2 = one - beta2
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        gi = g[i]
        mi = beta1 * m[i] + one_m_b1 * gi
        vi = beta2 * v[i] + one_m_b2 * gi * gi
        pi = p[i] - step_size * mi / (math.sqrt(vi) / sq_bc2 + eps)
        m[i] = mi if abs(mi) >= tiny else zero
        v[i] = vi if vi >= tiny else zero
        p[i] = pi if abs(pi) >= p_floor else zero


def adam_update(p, g, m, v, lr, beta1, beta2, eps, bias_correction1, bias_correction2, tiny, p_floor):
    """Launch adam_kernel on flat device arrays; scalars are cast to p's dtype."""
    dt = p.dtype.type
    launch(adam_kernel, p.shape[0], p, g, m, v, dt(lr), dt(beta1), dt(beta2), dt(eps),
           dt(bias_correction1), dt(bias_correction2), dt(tiny), dt(p_floor), p.shape[0])
