"""CudaStepper: one optimisation step of the spec's objective (docs/objective.md, "Loss") on a
GPU through numba.cuda, with the interface of refvbc.train.CpuStepper.

Shape legend
    B                    batch size (a BatchPlan is built per batch size and reused)
    p / g / m / v        flat device arrays, one per parameter name (host shapes kept in DeviceState.shapes)
    work                 float64 device workspace: scalars (8,) | KL, L2 partials (G,) | mixture (G, 1+3K) |
                         consts (4K,)
    scalars              [0] Σ_b CE_b, [1] KL_VD, [2] Σ log GM + Σ log Γ, [3] ½ Σ θ² (all float64)
    n_out                B * (outputs of one example) of a layer: the length of its flat buffers

The parts of this module
    DeviceState      what lives on the device for the whole run (make_device_state): parameters,
                     gradients, Adam's m and v, exp(log σ²) per layer, the float64 workspace and its views
    LayerPlan        one layer for one batch size (plan_batch, set up once): the kernels' int dims, its input,
                     and the buffers forward writes and backward reads, each a named field
    BatchPlan        the layers' plans of one batch size and the staging buffers of the upload
    CudaStepper      the step, all on the device except the one small copy of the scalars and the logits;
                     each method mirrors the CPU function beside it (read them side by side):
    _upload          input checks of objective.loss_and_grads; x and every layer's ε in one packed
                     host->device copy, y in another
    _forward         models.forward (per layer _layer_forward: layers.{v,}dense / {v,}conv2d_forward),
                     ReLU, max-pool
    softmax_ce       (in step) layers.softmax_ce_forward and its backward, dlogits
    _backward        models.backward (per layer _layer_backward) into the gradient buffers
    _kl_vd           objective.py's KL_VD block (priors.kl_vd, gradients times τ1/N)
    _mixture_prior   objective.py's mixture block (priors.mixture_prior, gradients times -τ2/N)
    _weight_decay    objective.py's weight-decay block (L2 baseline)
    _loss            copies the scalars and the logits to the host; the loss as objective.py assembles it
    _adam            refvbc.optim.Adam.step (PyTorch's formula, per-group rates) when the loss is finite,
                     as CpuStepper does
`sync()` copies parameters and Adam state (m, v; step_count is kept on the host optimizer) back.
"""

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from . import models
from .arch import GAMMA_ALPHA, GAMMA_BETA, INPUT_SHAPES, N_CLASSES, PI0, get_arch, param_group
from .kernels import cuda_available
from .optim import flush_floors

N_SCALARS = 8
COEF_NAMES = ("tau1", "tau2", "weight_decay")


def adam_rate(opt, name):
    """The Adam learning rate of parameter `name` (its group's), or None when the group is not trained."""
    lr = opt.lrs.get(param_group(name))
    return None if lr is None or lr == 0.0 else lr


# --------------------------------------------------------------------------------------------------
# loss terms


@dataclass(frozen=True)
class LossTerms:
    """The coefficients of the loss and which prior blocks run.

    tau1, tau2, weight_decay: the spec's τ1, τ2 and the L2 baseline's weight decay (missing -> 0);
    kl: KL_VD runs (variational parameters and τ1 != 0); mixture: the mixture prior runs (gmm.* present
    and τ2 != 0).
    """

    tau1: float
    tau2: float
    weight_decay: float
    kl: bool
    mixture: bool


def loss_terms(coefs, variational, has_gmm):
    """Inputs: coefs {tau1, tau2, weight_decay} (a subset); variational, has_gmm bools.
    Returns: LossTerms. Raises ValueError on an unknown coefficient name."""
    unknown = set(coefs) - set(COEF_NAMES)
    if unknown:
        raise ValueError(f"CudaStepper: unknown loss coefficients {sorted(unknown)}")
    tau1 = float(coefs.get("tau1", 0.0))
    tau2 = float(coefs.get("tau2", 0.0))
    wd = float(coefs.get("weight_decay", 0.0))
    return LossTerms(tau1, tau2, wd, kl=variational and tau1 != 0.0, mixture=has_gmm and tau2 != 0.0)


# --------------------------------------------------------------------------------------------------
# device state: set up once, updated in place by every step


@dataclass
class DeviceState:
    """Everything the step keeps on the device between steps.

    dtype    the parameters' numpy dtype (float32 or float64)
    names    parameter names in the host dict's order; shapes {name: host shape}
    p, g     {name: flat device array (size,)}: parameters and their gradients
    m, v     {name: flat device array}: Adam's moments, for the trained names only
    es       {layer name: flat (size of theta,)} exp(log σ²), written once per step (variational only)
    touched  names whose m, v hold state the host optimizer must receive on sync
    K        mixture components (1 without a mixture)
    work     the float64 workspace; scalars (8,), part_kl (G,), part_l2 (G,), part_mix, consts (4K,) its views
    """

    dtype: Any
    names: list
    shapes: dict
    p: dict
    g: dict
    m: dict
    v: dict
    es: dict
    touched: set
    K: int
    work: Any
    scalars: Any
    part_kl: Any
    part_l2: Any
    part_mix: Any
    consts: Any


def _adam_moments(cuda, common, params, opt, dtype):
    """Device m, v of every trained parameter: uploaded from opt.m / opt.v when present, else zeros.
    Returns (m, v) dicts of flat device arrays."""
    d_m, d_v = {}, {}
    for k in params:
        if adam_rate(opt, k) is None:
            continue
        if k in opt.m:
            d_m[k] = cuda.to_device(np.ascontiguousarray(opt.m[k], dtype).reshape(-1))
            d_v[k] = cuda.to_device(np.ascontiguousarray(opt.v[k], dtype).reshape(-1))
        else:
            d_m[k] = cuda.device_array(params[k].size, dtype)
            d_v[k] = cuda.device_array(params[k].size, dtype)
            common.zero(d_m[k])
            common.zero(d_v[k])
    return d_m, d_v


def _workspace(cuda, common, prior, K):
    """The float64 workspace and its five views (scalars, part_kl, part_l2, part_mix, consts)."""
    G = common.REDUCE_BLOCKS
    sizes = [N_SCALARS, G, G, prior.mixture_part_size(K), 4 * K]
    work = cuda.device_array(sum(sizes), np.float64)
    views, off = [], 0
    for s in sizes:
        views.append(work[off:off + s])
        off += s
    return work, views


def make_device_state(cuda, common, prior, params, opt, net, variational):
    """Upload the parameters and Adam state, allocate gradients, exp(log σ²) buffers and the workspace.

    Inputs:  cuda (numba.cuda), common / prior (kernels.cuda_common / cuda_prior); params host dict (all
             one dtype, checked by the caller); opt (refvbc.optim.Adam); net (the arch's layers); variational.
    Returns: DeviceState.
    """
    dtype = next(iter(params.values())).dtype
    names = list(params)
    shapes = {k: params[k].shape for k in names}
    d_p = {k: cuda.to_device(np.ascontiguousarray(params[k]).reshape(-1)) for k in names}
    d_g = {k: cuda.device_array(params[k].size, dtype) for k in names}
    for k in names:
        common.zero(d_g[k])
    d_m, d_v = _adam_moments(cuda, common, params, opt, dtype)
    touched = set(opt.m)
    es = {}
    if variational:
        es = {l.name: cuda.device_array(params[f"{l.name}.theta"].size, dtype) for l in net}
    K = params["gmm.mu"].shape[0] if "gmm.mu" in params else 1
    work, (scalars, part_kl, part_l2, part_mix, consts) = _workspace(cuda, common, prior, K)
    return DeviceState(dtype=dtype, names=names, shapes=shapes, p=d_p, g=d_g, m=d_m, v=d_v, es=es,
                       touched=touched, K=K, work=work, scalars=scalars, part_kl=part_kl, part_l2=part_l2,
                       part_mix=part_mix, consts=consts)


# --------------------------------------------------------------------------------------------------
# per-batch-size plan: geometry and activation buffers, set up once per batch size


@dataclass
class LayerPlan:
    """One layer of the step for one batch size B (built by plan_batch, never changed afterwards).

    Geometry
        name, kind ("dense" | "conv"), last (no ReLU / max-pool after it)
        dims     the ints the layer kernels take after their arrays: dense (B, I, O), conv (B, C, H, W, F, KH, KW)
        n_bias   O or F;  P: output positions per channel (1, or OH * OW)
        n_out    B * outputs per example, the length of pre / dpre / act / dact / std / dv / eps
        pool_dims  (B * F, OH, OW) for a conv followed by max-pool, else None
        noise_off  offset of this layer's ε in the staging buffer, after x
    Inputs (device views)
        x_in     the layer's input: the batch, or the previous layer's act (dense) / pool (conv)
        eps      ε (n_out,), a view of the staging buffer (variational only)
    Written by forward, read by backward
        pre      the pre-activation (n_out,); the logits for the last layer
        std      sqrt(v + 1e-8) (n_out,) (variational only)
        act      ReLU(pre) (n_out,) (not last)
        pool, arg  max-pool output and the index of each window's maximum (n_out / 4,) (conv, not last)
    Written by backward
        dpre     gradient of pre (for the last layer: dlogits, written by softmax_ce)
        dv       gradient of the variance path (n_out,) (variational only)
        dact, dpool  gradients of act and pool (not last)
        dx       where this layer's input gradient goes: the previous layer's dpool (conv) or dact
                 (dense); None for the first layer (its input gradient is not computed)
    """

    name: str
    kind: str
    last: bool
    dims: tuple
    n_bias: int
    P: int
    n_out: int
    pool_dims: Optional[tuple] = None
    noise_off: int = 0
    x_in: Any = None
    eps: Any = None
    pre: Any = None
    std: Any = None
    act: Any = None
    pool: Any = None
    arg: Any = None
    dpre: Any = None
    dv: Any = None
    dact: Any = None
    dpool: Any = None
    dx: Any = None


@dataclass
class BatchPlan:
    """The step's device buffers for one batch size.

    B; layers [LayerPlan]; n_x = B * input size; stage (n_x + all ε,) device buffer of the packed upload
    and stage_host its host twin (pinned on a GPU); x = stage[:n_x]; y (B,) int64 labels;
    logits_host (B * 10,) host buffer of the logits copy.
    """

    B: int
    layers: list
    n_x: int
    stage_host: Any
    stage: Any
    x: Any
    y: Any
    logits_host: Any = field(repr=False)


def layer_geometry(l, shape, B, last):
    """Geometry of one layer given its per-example input shape.

    Inputs:  l (arch.Layer); shape its input (I,) or (C, H, W); B; last bool.
    Returns: (LayerPlan without buffers, per-example shape after the layer, its ReLU and max-pool).
    Raises ValueError when the arch's shapes do not chain.
    """
    n_in = int(np.prod(shape))
    if l.kind == "dense":
        O, I = l.weight_shape
        if I != n_in:
            raise ValueError(f"layer {l.name}: expects {I} inputs, gets {shape}")
        L = LayerPlan(l.name, l.kind, last, dims=(B, I, O), n_bias=O, P=1, n_out=B * O)
        shape = (O,)
    else:
        F, C, KH, KW = l.weight_shape
        if len(shape) != 3 or shape[0] != C:
            raise ValueError(f"layer {l.name}: expects (C={C}, H, W) input, gets {shape}")
        _, H, W = shape
        OH, OW = H - KH + 1, W - KW + 1
        L = LayerPlan(l.name, l.kind, last, dims=(B, C, H, W, F, KH, KW), n_bias=F, P=OH * OW,
                      n_out=B * F * OH * OW)
        shape = (F, OH, OW)
    if tuple(l.preact_shape) != tuple(shape):
        raise ValueError(f"layer {l.name}: pre-activation {shape}, arch says {l.preact_shape}")
    if not last and l.kind == "conv":
        if shape[1] % 2 or shape[2] % 2:
            raise ValueError(f"layer {l.name}: max-pool needs even H, W, got {shape}")
        L.pool_dims = (B * shape[0], shape[1], shape[2])
        shape = (shape[0], shape[1] // 2, shape[2] // 2)
    return L, shape


def alloc_layer_buffers(cuda, L, dtype, variational):
    """Allocate L's device buffers (pre, dpre; std, dv when variational; act, dact when not last; pool,
    dpool, arg when it pools) in place."""
    n = L.n_out
    L.pre = cuda.device_array(n, dtype)
    L.dpre = cuda.device_array(n, dtype)
    if variational:
        L.std = cuda.device_array(n, dtype)
        L.dv = cuda.device_array(n, dtype)
    if not L.last:
        L.act = cuda.device_array(n, dtype)
        L.dact = cuda.device_array(n, dtype)
        if L.pool_dims is not None:
            L.pool = cuda.device_array(n // 4, dtype)
            L.dpool = cuda.device_array(n // 4, dtype)
            L.arg = cuda.device_array(n // 4, np.int32)


def plan_batch(cuda, simulator, arch, B, dtype, variational):
    """The BatchPlan of batch size B: every layer's geometry and buffers, the packed staging buffer
    (x, then every layer's ε), and the wiring of inputs (x_in) and input gradients (dx) between layers.

    Inputs:  cuda (numba.cuda); simulator bool (no pinned memory); arch name; B; dtype; variational.
    Returns: BatchPlan.
    """
    net = get_arch(arch)
    shape = tuple(INPUT_SHAPES[arch])
    layers, n_noise = [], 0
    for i, l in enumerate(net):
        L, shape = layer_geometry(l, shape, B, i == len(net) - 1)
        alloc_layer_buffers(cuda, L, dtype, variational)
        L.noise_off = n_noise
        if variational:
            n_noise += L.n_out
        layers.append(L)
    n_x = B * int(np.prod(INPUT_SHAPES[arch]))
    stage_host = np.empty(n_x + n_noise, dtype) if simulator else cuda.pinned_array(n_x + n_noise, dtype)
    stage = cuda.device_array(n_x + n_noise, dtype)
    plan = BatchPlan(B=B, layers=layers, n_x=n_x, stage_host=stage_host, stage=stage, x=stage[:n_x],
                     y=cuda.device_array(B, np.int64), logits_host=np.empty(B * N_CLASSES, dtype))
    h = plan.x
    for i, L in enumerate(layers):
        if variational:
            o = n_x + L.noise_off
            L.eps = stage[o:o + L.n_out]
        L.x_in = h
        if i > 0:
            prev = layers[i - 1]
            L.dx = prev.dpool if prev.pool_dims is not None else prev.dact
        h = L.pool if L.pool_dims is not None else L.act
    return plan


# --------------------------------------------------------------------------------------------------
# the step


class CudaStepper:
    """Training step on the GPU; constructor and methods as CpuStepper.

    Inputs:  arch name; params (host dict, float32 or float64, updated only by `sync`); opt (refvbc.optim.Adam,
             its lrs/betas/eps used, its step_count advanced per step, m/v uploaded if present);
             coefs {tau1, tau2, weight_decay} (missing -> 0); n_data (N of the spec).
    Attributes: state (DeviceState); terms (LossTerms); variational; plans {B: BatchPlan}.
    """

    def __init__(self, arch, params, opt, coefs, n_data):
        ok, why = cuda_available()
        if not ok:
            raise RuntimeError(f"CudaStepper: {why}")
        from numba import cuda

        from .kernels import cuda_adam, cuda_common, cuda_layers, cuda_prior
        self._cuda, self._L, self._P, self._A, self._C = cuda, cuda_layers, cuda_prior, cuda_adam, cuda_common
        self.arch, self.params, self.opt, self.n_data = arch, params, opt, float(n_data)
        self.net = get_arch(arch)
        self.variational = models.is_variational(params, arch)
        self.terms = loss_terms(coefs, self.variational, "gmm.mu" in params)
        dtypes = {v.dtype for v in params.values()}
        if len(dtypes) != 1 or next(iter(dtypes)) not in (np.float32, np.float64):
            raise ValueError(f"CudaStepper: parameters must all be float32 or all float64, got {dtypes}")
        self.state = make_device_state(cuda, cuda_common, cuda_prior, params, opt, self.net, self.variational)
        self.plans = {}

    def _plan(self, B):
        """The BatchPlan of batch size B, built on first use."""
        if B not in self.plans:
            self.plans[B] = plan_batch(self._cuda, self._C.SIMULATOR, self.arch, B, self.state.dtype,
                                       self.variational)
        return self.plans[B]

    # ----------------------------------------------------------------------------------------------
    # one step, split along the CPU path's seams: objective.loss_and_grads (input checks, forward,
    # softmax-CE, backward, the prior terms, the loss) and then Adam, as CpuStepper.step does

    def step(self, x, y, noise):
        """Returns loss (float), parts (dict), logits (B, 10) of the minibatch before the update."""
        plan = self._upload(x, y, noise)
        st, terms = self.state, self.terms
        self._C.zero(st.work)
        self._forward(plan)
        last = plan.layers[-1]
        self._L.softmax_ce(last.pre, plan.y, last.dpre, st.scalars, 0, plan.B, N_CLASSES)
        self._backward(plan)
        inv_n = 1.0 / self.n_data
        if terms.kl:
            self._kl_vd(terms.tau1 * inv_n)
        if terms.mixture:
            self._mixture_prior(-terms.tau2 * inv_n)
        if terms.weight_decay:
            self._weight_decay()
        loss, parts, logits = self._loss(plan)
        if np.isfinite(loss):
            self._adam()
        return loss, parts, logits

    def _upload(self, x, y, noise):
        """Input checks of objective.loss_and_grads; one packed host->device copy of x and every
        layer's noise, one of y. Returns the BatchPlan of x's batch size."""
        y = np.asarray(y)
        x = models.check_input(self.arch, x, y)
        B = x.shape[0]
        if B == 0:
            raise ValueError("empty batch")
        if noise is not None and not self.variational:
            raise ValueError("noise given but the parameters have no log_sigma2 (deterministic model)")
        if self.variational and noise is None:
            raise ValueError("variational parameters need noise (pass models.draw_noise(...))")
        plan = self._plan(B)
        dtype = self.state.dtype
        host = plan.stage_host
        host[:plan.n_x] = np.asarray(x, dtype).reshape(-1)
        if self.variational:
            for L, l in zip(plan.layers, self.net):
                want = (B,) + tuple(l.preact_shape)
                got = np.shape(noise.get(l.name))
                if got != want:
                    raise ValueError(f"noise[{l.name!r}] must have shape {want}, got {got}")
                o = plan.n_x + L.noise_off
                host[o:o + L.n_out] = np.asarray(noise[l.name], dtype).reshape(-1)
        plan.stage.copy_to_device(host)
        plan.y.copy_to_device(np.ascontiguousarray(y, np.int64))
        return plan

    def _forward(self, plan):
        """models.forward: every layer (variational with its noise, or deterministic), ReLU after all
        but the last, 2x2 max-pool after a conv's ReLU. The logits end in the last layer's `pre`."""
        Lk, st = self._L, self.state
        if self.variational:
            for l in self.net:
                Lk.exp(st.p[f"{l.name}.log_sigma2"], st.es[l.name])  # exp s, once per step
        for L in plan.layers:
            self._layer_forward(L)
            if not L.last:
                Lk.relu_forward(L.pre, L.act)
                if L.pool_dims is not None:
                    Lk.maxpool_forward(L.act, L.pool, L.arg, *L.pool_dims)

    def _layer_forward(self, L):
        """layers.{v,}dense_forward / layers.{v,}conv2d_forward of one layer from L.x_in into L.pre
        (and L.std when variational)."""
        Lk, st, n = self._L, self.state, L.name
        th, b = st.p[f"{n}.theta"], st.p[f"{n}.bias"]
        dense = L.kind == "dense"
        if self.variational:
            f = Lk.vdense_forward if dense else Lk.vconv_forward
            f(L.x_in, th, st.es[n], b, L.eps, L.pre, L.std, *L.dims)
        else:
            f = Lk.dense_forward if dense else Lk.conv_forward
            f(L.x_in, th, b, L.pre, *L.dims)

    def _backward(self, plan):
        """models.backward: from dlogits (the last layer's `dpre`, written by softmax_ce) back through
        every layer into the gradient buffers; the input gradient of the first layer is not computed."""
        Lk = self._L
        layers = plan.layers
        for i in range(len(layers) - 1, -1, -1):
            self._layer_backward(layers[i])
            if i > 0:
                prev = layers[i - 1]
                if prev.pool_dims is not None:
                    Lk.maxpool_backward(prev.dpool, prev.arg, prev.dact, *prev.pool_dims)
                Lk.relu_backward(prev.dact, prev.pre, prev.dpre)

    def _layer_backward(self, L):
        """layers.{v,}dense_backward / layers.{v,}conv2d_backward of one layer: bias, weight (and
        log sigma^2) gradients from L.dpre; the input gradient into L.dx unless it is None."""
        Lk, st, n = self._L, self.state, L.name
        g, d, th = st.g, L.dpre, st.p[f"{n}.theta"]
        dense = L.kind == "dense"
        Lk.bias_grad(d, g[f"{n}.bias"], L.dims[0], L.n_bias, L.P)
        if self.variational:
            Lk.dv(d, L.eps, L.std, L.dv)
            es = st.es[n]
            f_dw, f_dx = (Lk.vdense_dweight, Lk.vdense_dx) if dense else (Lk.vconv_dweight, Lk.vconv_dx)
            f_dw(d, L.dv, L.x_in, es, g[f"{n}.theta"], g[f"{n}.log_sigma2"], *L.dims)
            if L.dx is not None:
                f_dx(d, L.dv, th, es, L.x_in, L.dx, *L.dims)
        else:
            f_dw, f_dx = (Lk.dense_dweight, Lk.dense_dx) if dense else (Lk.conv_dweight, Lk.conv_dx)
            f_dw(d, L.x_in, g[f"{n}.theta"], *L.dims)
            if L.dx is not None:
                f_dx(d, th, L.dx, *L.dims)

    # prior terms: the three blocks of objective.loss_and_grads, each adding scale * its gradient
    # into the buffers the backward pass wrote, and its value into state.scalars

    def _kl_vd(self, scale):
        """priors.kl_vd of every layer, gradients times scale = tau1/N; KL_VD into scalars[1]."""
        st, C = self.state, self._C
        p, g = st.p, st.g
        for l in self.net:
            n = l.name
            self._P.kl_vd(p[f"{n}.theta"], p[f"{n}.log_sigma2"], g[f"{n}.theta"], g[f"{n}.log_sigma2"],
                          scale, st.part_kl)
        C.sum_rows_kernel[1, 1](st.part_kl, C.REDUCE_BLOCKS, st.scalars, 1)

    def _mixture_prior(self, scale):
        """priors.mixture_prior over all layers, gradients times scale = -tau2/N; Σ log GM + Σ log Γ
        into scalars[2]."""
        st, Pk = self.state, self._P
        p, g = st.p, st.g
        Pk.mixture_prep(p["gmm.mu"], p["gmm.log_lambda"], p["gmm.log_pi"], PI0, st.consts)
        for l in self.net:
            Pk.mixture_pass(p[f"{l.name}.theta"], p["gmm.mu"], st.consts, g[f"{l.name}.theta"], scale,
                            st.part_mix)
        Pk.mixture_finalize(st.part_mix, st.consts, p["gmm.log_lambda"], GAMMA_ALPHA, GAMMA_BETA, scale,
                            g["gmm.mu"], g["gmm.log_lambda"], g["gmm.log_pi"], st.scalars, 2)

    def _weight_decay(self):
        """The L2 baseline's weight_decay * theta gradient; ½ Σ θ² into scalars[3]."""
        st, C = self.state, self._C
        for l in self.net:
            self._P.l2(st.p[f"{l.name}.theta"], st.g[f"{l.name}.theta"], self.terms.weight_decay, st.part_l2)
        C.sum_rows_kernel[1, 1](st.part_l2, C.REDUCE_BLOCKS, st.scalars, 3)

    def _loss(self, plan):
        """The one small device->host copy (scalars and the logits the interface returns) and the loss
        as objective.loss_and_grads assembles it. Returns (loss, parts, logits (B, 10))."""
        st, terms, B = self.state, self.terms, plan.B
        sc = st.scalars.copy_to_host()
        logits = plan.layers[-1].pre.copy_to_host(plan.logits_host).reshape(B, N_CLASSES).copy()
        ce = float(st.dtype.type(sc[0] / B))
        parts = {"ce": ce, "kl": float(sc[1]) if terms.kl else 0.0,
                 "log_prior": float(sc[2]) if terms.mixture else 0.0,
                 "l2": float(sc[3]) if terms.weight_decay else 0.0}
        reg = terms.tau1 * parts["kl"] - terms.tau2 * parts["log_prior"]
        loss = ce + reg * (1.0 / self.n_data) + terms.weight_decay * parts["l2"]
        return loss, parts, logits

    def _adam(self):
        """refvbc.optim.Adam.step on the device (step counter on the host optimizer)."""
        opt, st = self.opt, self.state
        opt.step_count += 1
        t = opt.step_count
        bc1 = 1.0 - opt.beta1 ** t
        bc2 = 1.0 - opt.beta2 ** t
        for k in st.names:
            lr = adam_rate(opt, k)
            if lr is None:
                continue
            self._A.adam_update(st.p[k], st.g[k], st.m[k], st.v[k], lr, opt.beta1, opt.beta2, opt.eps, bc1, bc2,
                                *flush_floors(st.p[k].dtype))
            st.touched.add(k)

    def sync(self):
        """Copy parameters and Adam state (m, v) into the host dict / optimizer, in place where they exist."""
        st = self.state
        for k in st.names:
            self.params[k][...] = st.p[k].copy_to_host().reshape(st.shapes[k])
        for k in st.touched:
            if k not in st.m:
                continue
            for host, dev in ((self.opt.m, st.m), (self.opt.v, st.v)):
                arr = dev[k].copy_to_host().reshape(st.shapes[k])
                if k in host and host[k].shape == arr.shape and host[k].dtype == arr.dtype:
                    host[k][...] = arr
                else:
                    host[k] = arr
