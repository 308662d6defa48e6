"""The cross-check file layout (docs/objective.md "Cross-check file", trajectory keys in
docs/crosscheck.md) and its validation.

A file is a flat mapping key -> array.  Input keys (what a framework reads): ``config/*``
(``config/mask_pruned`` optional, 0 when absent), ``input/x``, ``input/y``, ``noise/<layer>``,
``param/<name>``, and for a trajectory ``config/steps``, ``config/lr/<group>``,
``config/adam/{beta1,beta2,eps}``, ``step<k>/input/{x,y}``, ``step<k>/noise/<layer>``.  Output keys
(what it writes back): ``out/loss``, ``out/logits``, ``grad/<name>`` and per step
``step<k>/out/{loss,logits}``, ``step<k>/grad|param|adam.m|adam.v/<name>``.

``check(arrays)`` returns a Layout or raises LayoutError with a one-line reason.
"""

from collections import namedtuple

import numpy as np

from ..arch import ARCHS, INPUT_SHAPES, N_CLASSES, get_arch

CONFIG_KEYS = ("tau1", "tau2", "n_data", "pi0", "gamma_alpha", "gamma_beta")
OPTION_KEYS = ("mask_pruned",)  # optional 0/1 switches of the loss (docs/objective.md "Options"); 0 when absent
LR_GROUPS = ("theta", "bias", "log_sigma2", "mu", "log_lambda", "log_pi")
ADAM_KEYS = ("beta1", "beta2", "eps")
STEP_STATE = ("param", "adam.m", "adam.v")  # per-step parameter and Adam moments after the update
MAX_STEPS = 10000
# (config key, test, what it must be) for the scalars whose range the objective or Adam needs
RANGES = [("config/n_data", lambda v: v > 0, "> 0"), ("config/pi0", lambda v: 0 < v < 1, "in (0, 1)"),
          ("config/gamma_beta", lambda v: v >= 0, ">= 0"),
          ("config/adam/beta1", lambda v: 0 <= v < 1, "in [0, 1)"),
          ("config/adam/beta2", lambda v: 0 <= v < 1, "in [0, 1)"), ("config/adam/eps", lambda v: v > 0, "> 0")]
RANGES += [(f"config/lr/{g}", lambda v: v >= 0, ">= 0") for g in LR_GROUPS]

Layout = namedtuple("Layout", "arch steps single dtype param_names outputs unknown")
# arch: str; steps: int (0 = single-step file); single: bool (top-level minibatch present);
# dtype: np.float32 | np.float64 (the lowest float precision of the arrays and config/dtype);
# param_names: list; outputs: output keys in comparison order; unknown: keys the layout does not know.


class LayoutError(ValueError):
    """The mapping is not a valid cross-check file; the message is one line."""


def param_shapes(arch, K):
    """{param name: shape} in the file's canonical order (layers, then gmm.* with K components)."""
    out = {}
    for layer in get_arch(arch):
        out[f"{layer.name}.theta"] = layer.weight_shape
        out[f"{layer.name}.log_sigma2"] = layer.weight_shape
        out[f"{layer.name}.bias"] = (layer.weight_shape[0],)
    for n in ("gmm.mu", "gmm.log_lambda", "gmm.log_pi"):
        out[n] = (K,)
    return out


def components_of(arrays):
    """K, the mixture's components: the length of param/gmm.mu (any K >= 2; the paper's is 17)."""
    if "param/gmm.mu" not in arrays:
        raise LayoutError("missing key param/gmm.mu")
    shape = np.shape(arrays["param/gmm.mu"])
    if len(shape) != 1 or shape[0] < 2:
        raise LayoutError(f"param/gmm.mu must be a (K,) array with K >= 2 components, got shape {shape}")
    return shape[0]


def batch_keys(arch, prefix, batch):
    """{key: shape} of the inputs of one minibatch (``prefix`` "" or "step<k>/")."""
    out = {f"{prefix}input/x": (batch,) + INPUT_SHAPES[arch], f"{prefix}input/y": (batch,)}
    for layer in get_arch(arch):
        out[f"{prefix}noise/{layer.name}"] = (batch,) + layer.preact_shape
    return out


def output_keys(arch, K, prefix, batch, with_state):
    """{key: shape} of what an implementation computes for one minibatch (K mixture components), in
    comparison order."""
    shapes = param_shapes(arch, K)
    out = {f"{prefix}out/loss": (), f"{prefix}out/logits": (batch, N_CLASSES)}
    out.update({f"{prefix}grad/{n}": s for n, s in shapes.items()})
    if with_state:
        for part in ("adam.m", "adam.v", "param"):
            out.update({f"{prefix}{part}/{n}": s for n, s in shapes.items()})
    return out


def _short(keys, most=6):
    keys = list(keys)
    more = f" and {len(keys) - most} more" if len(keys) > most else ""
    return ", ".join(keys[:most]) + more


def _scalar(arrays, key, kinds="fiu"):
    a = np.asarray(arrays[key])
    if a.shape != () or a.dtype.kind not in kinds:
        raise LayoutError(f"{key} must be a numeric scalar, got dtype {a.dtype} shape {a.shape}")
    if not np.isfinite(a):
        raise LayoutError(f"{key} is not finite ({a[()]!r})")
    return a[()]


def check(arrays):
    """Validate `arrays` (dict key -> np.ndarray) against the layout. Returns a Layout."""
    if "config/arch" not in arrays:
        raise LayoutError("missing key config/arch")
    a = np.asarray(arrays["config/arch"])
    if a.shape != () or a.dtype.kind not in "US":
        raise LayoutError(f"config/arch must be a string scalar, got dtype {a.dtype} shape {a.shape}")
    arch = a[()].decode() if a.dtype.kind == "S" else str(a[()])
    if arch not in ARCHS:
        raise LayoutError(f"config/arch is {arch!r}; expected one of {sorted(ARCHS)}")

    steps = 0
    if "config/steps" in arrays:
        steps = _scalar(arrays, "config/steps", "iu")
        if not 1 <= steps <= MAX_STEPS:
            raise LayoutError(f"config/steps must lie in 1..{MAX_STEPS}, got {steps}")
        steps = int(steps)
    single = steps == 0 or any(k.startswith(("input/", "noise/", "out/", "grad/")) for k in arrays)

    def batch_of(prefix):
        x = arrays.get(f"{prefix}input/x")
        return int(np.shape(x)[0]) if x is not None and np.ndim(x) >= 1 else 1

    K = components_of(arrays)
    want_in = {f"config/{k}": () for k in CONFIG_KEYS}
    want_in.update({f"param/{n}": s for n, s in param_shapes(arch, K).items()})
    want_out = {}
    prefixes = ([""] if single else []) + [f"step{k}/" for k in range(1, steps + 1)]
    if steps:
        want_in["config/steps"] = ()
        want_in.update({f"config/lr/{g}": () for g in LR_GROUPS})
        want_in.update({f"config/adam/{k}": () for k in ADAM_KEYS})
    for p in prefixes:
        b = batch_of(p)
        if b < 1:
            raise LayoutError(f"{p}input/x holds an empty batch (shape {np.shape(arrays[p + 'input/x'])})")
        want_in.update(batch_keys(arch, p, b))
        want_out.update(output_keys(arch, K, p, b, with_state=bool(p)))

    if not any(k in arrays for k in want_out):
        raise LayoutError(f"holds no outputs ({len(want_out)} missing, e.g. {_short(want_out, 2)}): an inputs-only "
                          "file, to which a framework adds its out/, grad/ (and step) keys; docs/crosscheck.md")
    missing = [k for k in list(want_in) + list(want_out) if k not in arrays]
    if missing:
        raise LayoutError(f"missing {len(missing)} key{'s' * (len(missing) > 1)}: {_short(missing)}")
    bad = []
    for k, shape in {**want_in, **want_out}.items():
        got = np.shape(arrays[k])
        if got != shape:
            bad.append(f"{k} {got} (expected {shape})")
    if bad:
        raise LayoutError(f"wrong shape: {_short(bad, 4)}")

    float_dtypes = set()
    for k in list(want_in) + list(want_out):
        arr = np.asarray(arrays[k])
        if k.startswith("config/"):
            _scalar(arrays, k)
        elif k.endswith("input/y"):
            if arr.dtype.kind not in "iu":
                raise LayoutError(f"{k} must hold integer labels, got dtype {arr.dtype}")
            if arr.size and (arr.min() < 0 or arr.max() >= N_CLASSES):
                raise LayoutError(f"{k} must lie in 0..{N_CLASSES - 1}, got {arr.min()}..{arr.max()}")
        else:
            if arr.dtype not in (np.float32, np.float64):
                raise LayoutError(f"{k} must be float32 or float64, got dtype {arr.dtype}")
            float_dtypes.add(arr.dtype)
            if k in want_in and not np.all(np.isfinite(arr)):
                raise LayoutError(f"{k} has non-finite values (an input must be finite)")
    for key, ok, what in RANGES:
        if key in want_in and not ok(float(np.asarray(arrays[key]))):
            raise LayoutError(f"{key} must be {what}, got {float(np.asarray(arrays[key]))!r}")
    for k in (k for k in OPTION_KEYS if f"config/{k}" in arrays):
        v = _scalar(arrays, f"config/{k}", "biuf").item()
        if v not in (0, 1):
            raise LayoutError(f"config/{k} must be 0 or 1, got {v!r}")
    if float(np.asarray(arrays["param/gmm.mu"])[0]) != 0.0:
        raise LayoutError(f"param/gmm.mu[0] must be 0 (mu_0 is fixed), got {arrays['param/gmm.mu'][0]!r}")
    if "config/dtype" in arrays:  # optional: the precision the implementation computed in
        d = np.asarray(arrays["config/dtype"])
        if d.shape != () or d.dtype.kind != "U" or str(d[()]) not in ("float32", "float64"):
            raise LayoutError(f"config/dtype must be 'float32' or 'float64', got {d[()]!r}")
        float_dtypes.add(np.dtype(str(d[()])))
    dtype = np.float32 if np.dtype(np.float32) in float_dtypes else np.float64
    known = set(want_in) | set(want_out) | {"config/arch", "config/dtype"}
    known |= {f"config/{k}" for k in OPTION_KEYS}
    unknown = sorted(k for k in arrays if k not in known)
    return Layout(arch, steps, single, dtype, list(param_shapes(arch, K)), list(want_out), unknown)
