"""Adam exactly as torch.optim.Adam defines it (betas 0.9/0.999, eps 1e-8, bias-corrected, the step
counter incremented before the update), with per-group learning rates taken from parameter names
(paper Table 3; spec "Loss": biases train with theta's rate).

Shape legend: params / grads / state are flat dicts keyed by parameter name; each value any shape.

Subnormals: after each update, moments whose magnitude falls below the dtype's smallest normal number
`tiny` (float32 1.2e-38, float64 2.2e-308), and parameters below sqrt(tiny) (float32 1.1e-19, float64
1.5e-154), are stored as 0 (`flush_floors`). Without it, weights that only weight decay or the KL term
pulls on (e.g. the fc1 weights of MNIST's always-zero border pixels, pruned VD weights) decay
geometrically towards the subnormal range, where x86 arithmetic is 10-100x slower: a LeNet-5 L2 epoch
went from 30 s to 73 s of CPU once 147k of fc1's 400k weights were subnormal. Flushing parameters only
at `tiny` is not enough: a weight just above it still makes every product with an activation or a
gradient below 1 subnormal inside the matrix products (measured: the LeNet-300-100 L2 epoch went from
1.7 s to 14 s over 100 epochs as 148k of fc1's 235k weights sank below 1e-30). A parameter of magnitude
sqrt(tiny) or more times any factor of magnitude sqrt(tiny) or more is normal; a weight below it
changes no float32 output. Normal numbers are otherwise updated exactly as torch.optim.Adam does.
"""

import numpy as np

from . import parallel as _par
from .arch import param_group
from .kernels.adam import adam_update

# tensors with at least this many entries are updated in two halves (on two threads)
PARALLEL_MIN = 65536

# Paper Table 3 (VD / VD+SWS phases).
TABLE3_LR = {"theta": 5e-5, "bias": 5e-5, "log_sigma2": 1e-4, "mu": 1e-4, "log_lambda": 1e-4,
             "log_pi": 3e-3}


def flush_floors(dtype):
    """(tiny, p_floor) of `dtype`: moments below tiny and parameters below p_floor = sqrt(tiny) are
    flushed to 0 after each update ("Subnormals" above)."""
    tiny = np.finfo(dtype).tiny
    return tiny, np.sqrt(tiny)


def adam_update_numpy(p, g, m, v, lr, beta1, beta2, eps, bias_correction1, bias_correction2, tiny, p_floor):
    """NumPy reference of kernels.adam.adam_update (same in-place contract: m, v flushed to 0 below
    tiny, p below p_floor)."""
    m *= beta1
    m += (1.0 - beta1) * g
    v *= beta2
    v += (1.0 - beta2) * g * g
    denom = np.sqrt(v) / np.sqrt(bias_correction2) + eps
    p -= (lr / bias_correction1) * m / denom
    for a in (m, v):
        a[np.abs(a) < tiny] = 0
    p[np.abs(p) < p_floor] = 0


class Adam:
    """Adam over a flat parameter dict.

    Inputs:  lrs {group: learning rate} (groups: theta, bias, log_sigma2, mu, log_lambda, log_pi);
             a group missing from `lrs` is frozen (not updated).
    State:   step (int), m[name], v[name] with the parameters' shapes and dtypes.
    """

    def __init__(self, lrs, betas=(0.9, 0.999), eps=1e-8, use_numba=True):
        self.lrs = dict(lrs)
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.step_count = 0
        self.m = {}
        self.v = {}
        self.use_numba = use_numba

    def step(self, params, grads):
        """Update `params` in place from `grads` (same keys)."""
        self.step_count += 1
        t = self.step_count
        bc1 = 1.0 - self.beta1 ** t
        bc2 = 1.0 - self.beta2 ** t
        update = adam_update if self.use_numba else adam_update_numpy
        jobs = []
        for name, g in grads.items():
            lr = self.lrs.get(param_group(name))
            if lr is None or lr == 0.0:
                continue
            p = params[name]
            if g.shape != p.shape:
                raise ValueError(f"gradient of {name!r} has shape {g.shape}, parameter {p.shape}")
            if not p.flags.c_contiguous:
                raise ValueError(f"parameter {name!r} must be C-contiguous for the in-place update")
            if name not in self.m:
                self.m[name] = np.zeros_like(p)
                self.v[name] = np.zeros_like(p)
            dt = p.dtype.type
            arrays = (p.reshape(-1), np.ascontiguousarray(g, dtype=p.dtype).reshape(-1),
                      self.m[name].reshape(-1), self.v[name].reshape(-1))
            scalars = (dt(lr), dt(self.beta1), dt(self.beta2), dt(self.eps), dt(bc1), dt(bc2),
                       *(dt(f) for f in flush_floors(p.dtype)))
            # elementwise: slices of a large tensor can run on different threads with the same result
            for s0, s1 in _par.split(p.size, 2 if self.use_numba and p.size >= PARALLEL_MIN else 1):
                jobs.append(tuple(a[s0:s1] for a in arrays) + scalars)
        if self.use_numba:
            _par.run_parts(lambda i: update(*jobs[i]), len(jobs))
        else:
            for job in jobs:
                update(*job)

    def state_dict(self):
        """Arrays for a checkpoint: {"adam.step": int array, "adam.m/<name>": ..., "adam.v/<name>": ...}."""
        out = {"adam.step": np.array(self.step_count, dtype=np.int64)}
        for k in self.m:
            out[f"adam.m/{k}"] = self.m[k]
            out[f"adam.v/{k}"] = self.v[k]
        return out

    def load_state_dict(self, state):
        """Inverse of `state_dict` (copies)."""
        self.step_count = int(state["adam.step"])
        self.m = {k[len("adam.m/"):]: np.array(v) for k, v in state.items() if k.startswith("adam.m/")}
        self.v = {k[len("adam.v/"):]: np.array(v) for k, v in state.items() if k.startswith("adam.v/")}
