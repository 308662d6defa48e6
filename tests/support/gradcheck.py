"""Shared helpers of the gradient tests: relative error, numerical gradients by central differences,
and the directional-derivative check.

Shape legend
    x         the array (NumPy ndarray or torch tensor, C-contiguous) a scalar function is differenced in
    idx       flat indices into x (default: every entry); the result has one entry per index
    d         a direction, x's shape

Central differences perturb x in place and restore every entry exactly (the old value is kept), so
`f` may read x directly or through any other reference to it (a params dict, a closure).
"""

import numpy as np

# Central-difference stencils: (step in units of h, coefficient); the sum of coef * f(x + step h) over
# the stencil, divided by h, is the derivative.
#   order 2: (f(x+h) - f(x-h)) / 2h
#   order 4: (-f(x+2h) + 8 f(x+h) - 8 f(x-h) + f(x-2h)) / 12h  (allows a larger h, i.e. less round-off,
#            for entries whose contribution is small compared with the value)
STENCILS = {2: ((1, 0.5), (-1, -0.5)), 4: ((2, -1 / 12), (1, 8 / 12), (-1, -8 / 12), (-2, 1 / 12))}


def rel_err(actual, expected, per_entry=False):
    """Relative error of `actual` against the reference `expected` (any shapes that broadcast).

    per_entry=False: max|a - e| / max|e| over the whole tensor (a zero reference gives a pure absolute
                     error, floor 1e-300), the error of a tensor as one quantity;
    per_entry=True:  max over entries of |a - e| / max(|a| + |e|, 1e-8) (CS231n), for tensors whose small
                     entries must be right on their own scale.
    Returns a Python float.
    """
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if per_entry:
        return float(np.max(np.abs(a - e) / np.maximum(np.abs(a) + np.abs(e), 1e-8), initial=0.0))
    return float(np.max(np.abs(a - e), initial=0.0) / max(float(np.max(np.abs(e), initial=0.0)), 1e-300))


def num_grad(f, x, idx=None, h=1e-6, order=2):
    """Partial derivatives of the scalar f(x) by central differences (float64 result, shape (len(idx),),
    or x's shape when idx is None).

    Inputs:  f(x) -> float; x perturbed in place and restored; idx flat indices (None: all);
             h the step; order 2 or 4 (STENCILS).
    """
    flat = x.reshape(-1)  # a view: x must be C-contiguous (NumPy array or torch tensor)
    all_entries = idx is None
    idx = range(flat.shape[0]) if all_entries else idx
    out = np.empty(len(idx))
    for j, i in enumerate(idx):
        old = float(flat[i])
        acc = 0.0
        for step, coef in STENCILS[order]:
            flat[i] = old + step * h
            acc += coef * float(f(x))
        flat[i] = old
        out[j] = acc / h
    return out.reshape(tuple(x.shape)) if all_entries else out


def directional_derivative(f, x, d, h=1e-6):
    """(f(x + h d) - f(x - h d)) / 2h, x perturbed in place (NumPy) and restored."""
    old = x.copy()
    x[...] = old + h * d
    fp = float(f(x))
    x[...] = old - h * d
    fm = float(f(x))
    x[...] = old
    return (fp - fm) / (2 * h)


def assert_directional(f, x, grad, d, h=1e-6, tol=1e-6, what=""):
    """The analytic directional derivative grad . d against its central difference along d: relative
    error (rel_err, the numerical value as reference) <= tol. Along the gradient a wrong sign or scale
    shows; a random part of d catches entries the gradient misses."""
    num = directional_derivative(f, x, d, h)
    ana = float(np.sum(grad * d))
    err = rel_err(ana, num)
    assert err <= tol, f"{what}: analytic {ana!r} vs numeric {num!r} (rel err {err:.2e})"
