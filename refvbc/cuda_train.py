"""CudaStepper: one optimisation step of the spec's objective (docs/objective.md, "Loss") on a
GPU through numba.cuda, with the interface of refvbc.train.CpuStepper.

Shape legend
    B                    batch size (buffers are allocated per batch size and reused)
    params / grads / m / v   flat device arrays, one per parameter name (host shapes kept aside)
    work                 float64 device workspace: scalars (8,) | KL, L2 partials (G,) | mixture (G, 1+3K) | consts (4K,)
    scalars              [0] Σ_b CE_b, [1] KL_VD, [2] Σ log GM + Σ log Γ, [3] ½ Σ θ² (all float64)
    L                    one layer's plan (_plan): dims I, O or C, H, W, F, KH, KW; flat (B * n_out)
                         buffers pre, dpre, [act, dact, pool, dpool, arg], [eps, std, dv]; input

What a step does, all on the device except the one small copy of the scalars and the logits; each
method mirrors the CPU function beside it (read them side by side):
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

import numpy as np

from . import models
from .arch import GAMMA_ALPHA, GAMMA_BETA, INPUT_SHAPES, N_CLASSES, PI0, get_arch, param_group
from .kernels import cuda_available

N_SCALARS = 8
GMM_KEYS = ("gmm.mu", "gmm.log_lambda", "gmm.log_pi")


def _dims(L, B):
    """The int dims a layer kernel takes after its arrays: dense (B, I, O); conv (B, C, H, W, F, KH, KW)."""
    if L["kind"] == "dense":
        return (B, L["I"], L["O"])
    return (B, L["C"], L["H"], L["W"], L["F"], L["KH"], L["KW"])


class CudaStepper:
    """Training step on the GPU; constructor and methods as CpuStepper.

    Inputs:  arch name; params (host dict, float32 or float64, updated only by `sync`); opt (refvbc.optim.Adam,
             its lrs/betas/eps used, its step_count advanced per step, m/v uploaded if present);
             coefs {tau1, tau2, weight_decay} (missing -> 0); n_data (N of the spec).
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
        unknown = set(coefs) - {"tau1", "tau2", "weight_decay"}
        if unknown:
            raise ValueError(f"CudaStepper: unknown loss coefficients {sorted(unknown)}")
        self.tau1 = float(coefs.get("tau1", 0.0))
        self.tau2 = float(coefs.get("tau2", 0.0))
        self.wd = float(coefs.get("weight_decay", 0.0))
        self.variational = models.is_variational(params, arch)
        self.has_gmm = "gmm.mu" in params
        self.kl_on = self.variational and self.tau1 != 0.0
        self.mix_on = self.has_gmm and self.tau2 != 0.0
        dtypes = {v.dtype for v in params.values()}
        if len(dtypes) != 1 or next(iter(dtypes)) not in (np.float32, np.float64):
            raise ValueError(f"CudaStepper: parameters must all be float32 or all float64, got {dtypes}")
        self.dtype = next(iter(dtypes))
        self.names = list(params)
        self.shapes = {k: params[k].shape for k in self.names}
        self.d_p = {k: cuda.to_device(np.ascontiguousarray(params[k]).reshape(-1)) for k in self.names}
        self.d_g = {k: cuda.device_array(params[k].size, self.dtype) for k in self.names}
        for k in self.names:
            cuda_common.zero(self.d_g[k])
        self.d_m, self.d_v = {}, {}
        for k in self.names:
            if self._lr(k) is None:
                continue
            if k in opt.m:
                self.d_m[k] = cuda.to_device(np.ascontiguousarray(opt.m[k], self.dtype).reshape(-1))
                self.d_v[k] = cuda.to_device(np.ascontiguousarray(opt.v[k], self.dtype).reshape(-1))
            else:
                self.d_m[k] = cuda.device_array(params[k].size, self.dtype)
                self.d_v[k] = cuda.device_array(params[k].size, self.dtype)
                cuda_common.zero(self.d_m[k])
                cuda_common.zero(self.d_v[k])
        self._touched = set(opt.m)
        if self.variational:
            self.d_es = {l.name: cuda.device_array(params[f"{l.name}.theta"].size, self.dtype)
                         for l in self.net}
        G = cuda_common.REDUCE_BLOCKS
        K = params["gmm.mu"].shape[0] if self.has_gmm else 1
        self.K = K
        sizes = [N_SCALARS, G, G, cuda_prior.mixture_part_size(K), 4 * K]
        self.work = cuda.device_array(sum(sizes), np.float64)
        views, off = [], 0
        for s in sizes:
            views.append(self.work[off:off + s])
            off += s
        self.scalars, self.part_kl, self.part_l2, self.part_mix, self.consts = views
        self._plans = {}

    # ----------------------------------------------------------------------------------------------
    def _lr(self, name):
        lr = self.opt.lrs.get(param_group(name))
        return None if lr is None or lr == 0.0 else lr

    def _plan(self, B):
        """Per-batch-size layer geometry and activation buffers."""
        if B in self._plans:
            return self._plans[B]
        cuda, dt = self._cuda, self.dtype
        shape = tuple(INPUT_SHAPES[self.arch])  # per-example shape of the current activation
        layers = []
        n_noise = 0
        for i, l in enumerate(self.net):
            last = i == len(self.net) - 1
            L = {"name": l.name, "kind": l.kind, "in_shape": shape, "last": last}
            n_in = int(np.prod(shape))
            if l.kind == "dense":
                O, I = l.weight_shape
                if I != n_in:
                    raise ValueError(f"layer {l.name}: expects {I} inputs, gets {shape}")
                L.update(I=I, O=O, n_out=O, P=1)
                shape = (O,)
            else:
                F, C, KH, KW = l.weight_shape
                if len(shape) != 3 or shape[0] != C:
                    raise ValueError(f"layer {l.name}: expects (C={C}, H, W) input, gets {shape}")
                _, H, W = shape
                OH, OW = H - KH + 1, W - KW + 1
                L.update(C=C, H=H, W=W, F=F, KH=KH, KW=KW, OH=OH, OW=OW, n_out=F * OH * OW, P=OH * OW)
                shape = (F, OH, OW)
            if tuple(l.preact_shape) != tuple(shape):
                raise ValueError(f"layer {l.name}: pre-activation {shape}, arch says {l.preact_shape}")
            n = B * L["n_out"]
            L["pre"] = cuda.device_array(n, dt)
            L["dpre"] = cuda.device_array(n, dt)
            L["noise_off"] = n_noise
            if self.variational:
                L["std"] = cuda.device_array(n, dt)
                L["dv"] = cuda.device_array(n, dt)
                n_noise += n
            if not last:
                L["act"] = cuda.device_array(n, dt)       # relu output
                L["dact"] = cuda.device_array(n, dt)
                if l.kind == "conv":
                    if shape[1] % 2 or shape[2] % 2:
                        raise ValueError(f"layer {l.name}: max-pool needs even H, W, got {shape}")
                    shape = (shape[0], shape[1] // 2, shape[2] // 2)
                    m = B * int(np.prod(shape))
                    L["pool"] = cuda.device_array(m, dt)
                    L["dpool"] = cuda.device_array(m, dt)
                    L["arg"] = cuda.device_array(m, np.int32)
            layers.append(L)
        n_x = B * int(np.prod(INPUT_SHAPES[self.arch]))
        stage_host = cuda.pinned_array(n_x + n_noise, dt) if not self._C.SIMULATOR else np.empty(
            n_x + n_noise, dt)
        stage = cuda.device_array(n_x + n_noise, dt)
        plan = {"layers": layers, "n_x": n_x, "stage_host": stage_host, "stage": stage,
                "x": stage[:n_x], "y": cuda.device_array(B, np.int64),
                "logits_host": np.empty(B * N_CLASSES, dt)}
        for L in layers:
            if self.variational:
                o = n_x + L["noise_off"]
                L["eps"] = stage[o:o + B * L["n_out"]]
        self._plans[B] = plan
        return plan

    # ----------------------------------------------------------------------------------------------
    # one step, split along the CPU path's seams: objective.loss_and_grads (input checks, forward,
    # softmax-CE, backward, the prior terms, the loss) and then Adam, as CpuStepper.step does

    def step(self, x, y, noise):
        """Returns loss (float), parts (dict), logits (B, 10) of the minibatch before the update."""
        plan, B = self._upload(x, y, noise)
        self._C.zero(self.work)
        self._forward(plan, B)
        last = plan["layers"][-1]
        self._L.softmax_ce(last["pre"], plan["y"], last["dpre"], self.scalars, 0, B, N_CLASSES)
        self._backward(plan, B)
        inv_n = 1.0 / self.n_data
        if self.kl_on:
            self._kl_vd(self.tau1 * inv_n)
        if self.mix_on:
            self._mixture_prior(-self.tau2 * inv_n)
        if self.wd:
            self._weight_decay()
        loss, parts, logits = self._loss(plan, B)
        if np.isfinite(loss):
            self._adam()
        return loss, parts, logits

    def _upload(self, x, y, noise):
        """Input checks of objective.loss_and_grads; one packed host->device copy of x and every
        layer's noise, one of y. Returns (plan, B)."""
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
        host = plan["stage_host"]
        host[:plan["n_x"]] = np.asarray(x, self.dtype).reshape(-1)
        if self.variational:
            for L, l in zip(plan["layers"], self.net):
                want = (B,) + tuple(l.preact_shape)
                got = np.shape(noise.get(l.name))
                if got != want:
                    raise ValueError(f"noise[{l.name!r}] must have shape {want}, got {got}")
                o = plan["n_x"] + L["noise_off"]
                host[o:o + L["pre"].shape[0]] = np.asarray(noise[l.name], self.dtype).reshape(-1)
        plan["stage"].copy_to_device(host)
        plan["y"].copy_to_device(np.ascontiguousarray(y, np.int64))
        return plan, B

    def _forward(self, plan, B):
        """models.forward: every layer (variational with its noise, or deterministic), ReLU after all
        but the last, 2x2 max-pool after a conv's ReLU. The logits end in the last layer's "pre"."""
        Lk, p = self._L, self.d_p
        if self.variational:
            for l in self.net:
                Lk.exp(p[f"{l.name}.log_sigma2"], self.d_es[l.name])  # exp s, once per step
        h = plan["x"]
        for L in plan["layers"]:
            L["input"] = h
            self._layer_forward(L, h, B)
            h = L["pre"]
            if not L["last"]:
                Lk.relu_forward(L["pre"], L["act"])
                h = L["act"]
                if L["kind"] == "conv":
                    Lk.maxpool_forward(L["act"], L["pool"], L["arg"], B * L["F"], L["OH"], L["OW"])
                    h = L["pool"]

    def _layer_forward(self, L, h, B):
        """layers.{v,}dense_forward / layers.{v,}conv2d_forward of one layer into L["pre"]."""
        Lk, p, n = self._L, self.d_p, L["name"]
        th, b = p[f"{n}.theta"], p[f"{n}.bias"]
        dense = L["kind"] == "dense"
        if self.variational:
            f = Lk.vdense_forward if dense else Lk.vconv_forward
            f(h, th, self.d_es[n], b, L["eps"], L["pre"], L["std"], *_dims(L, B))
        else:
            f = Lk.dense_forward if dense else Lk.conv_forward
            f(h, th, b, L["pre"], *_dims(L, B))

    def _backward(self, plan, B):
        """models.backward: from dlogits (the last layer's "dpre", written by softmax_ce) back through
        every layer into the gradient buffers; the input gradient of the first layer is not computed."""
        Lk = self._L
        layers = plan["layers"]
        for i in range(len(layers) - 1, -1, -1):
            L = layers[i]
            prev = layers[i - 1] if i > 0 else None
            dx = None
            if prev is not None:
                dx = prev["dpool"] if prev["kind"] == "conv" else prev["dact"]
            self._layer_backward(L, dx, B)
            if prev is not None:
                if prev["kind"] == "conv":
                    Lk.maxpool_backward(prev["dpool"], prev["arg"], prev["dact"], B * prev["F"],
                                        prev["OH"], prev["OW"])
                Lk.relu_backward(prev["dact"], prev["pre"], prev["dpre"])

    def _layer_backward(self, L, dx, B):
        """layers.{v,}dense_backward / layers.{v,}conv2d_backward of one layer: bias, weight (and
        log sigma^2) gradients from L["dpre"]; the input gradient into dx unless dx is None."""
        Lk, p, g, n = self._L, self.d_p, self.d_g, L["name"]
        d, x_in, th = L["dpre"], L["input"], p[f"{n}.theta"]
        dense = L["kind"] == "dense"
        dims = _dims(L, B)
        Lk.bias_grad(d, g[f"{n}.bias"], B, L["O"] if dense else L["F"], L["P"])
        if self.variational:
            Lk.dv(d, L["eps"], L["std"], L["dv"])
            es = self.d_es[n]
            f_dw, f_dx = (Lk.vdense_dweight, Lk.vdense_dx) if dense else (Lk.vconv_dweight, Lk.vconv_dx)
            f_dw(d, L["dv"], x_in, es, g[f"{n}.theta"], g[f"{n}.log_sigma2"], *dims)
            if dx is not None:
                f_dx(d, L["dv"], th, es, x_in, dx, *dims)
        else:
            f_dw, f_dx = (Lk.dense_dweight, Lk.dense_dx) if dense else (Lk.conv_dweight, Lk.conv_dx)
            f_dw(d, x_in, g[f"{n}.theta"], *dims)
            if dx is not None:
                f_dx(d, th, dx, *dims)

    # prior terms: the three blocks of objective.loss_and_grads, each adding scale * its gradient
    # into the buffers the backward pass wrote, and its value into self.scalars

    def _kl_vd(self, scale):
        """priors.kl_vd of every layer, gradients times scale = tau1/N; KL_VD into scalars[1]."""
        p, g, C = self.d_p, self.d_g, self._C
        for l in self.net:
            n = l.name
            self._P.kl_vd(p[f"{n}.theta"], p[f"{n}.log_sigma2"], g[f"{n}.theta"], g[f"{n}.log_sigma2"],
                          scale, self.part_kl)
        C.sum_rows_kernel[1, 1](self.part_kl, C.REDUCE_BLOCKS, self.scalars, 1)

    def _mixture_prior(self, scale):
        """priors.mixture_prior over all layers, gradients times scale = -tau2/N; Σ log GM + Σ log Γ
        into scalars[2]."""
        p, g, Pk = self.d_p, self.d_g, self._P
        Pk.mixture_prep(p["gmm.mu"], p["gmm.log_lambda"], p["gmm.log_pi"], PI0, self.consts)
        for l in self.net:
            Pk.mixture_pass(p[f"{l.name}.theta"], p["gmm.mu"], self.consts, g[f"{l.name}.theta"], scale,
                            self.part_mix)
        Pk.mixture_finalize(self.part_mix, self.consts, p["gmm.log_lambda"], GAMMA_ALPHA, GAMMA_BETA, scale,
                            g["gmm.mu"], g["gmm.log_lambda"], g["gmm.log_pi"], self.scalars, 2)

    def _weight_decay(self):
        """The L2 baseline's weight_decay * theta gradient; ½ Σ θ² into scalars[3]."""
        p, g, C = self.d_p, self.d_g, self._C
        for l in self.net:
            self._P.l2(p[f"{l.name}.theta"], g[f"{l.name}.theta"], self.wd, self.part_l2)
        C.sum_rows_kernel[1, 1](self.part_l2, C.REDUCE_BLOCKS, self.scalars, 3)

    def _loss(self, plan, B):
        """The one small device->host copy (scalars and the logits the interface returns) and the loss
        as objective.loss_and_grads assembles it. Returns (loss, parts, logits)."""
        sc = self.scalars.copy_to_host()
        last = plan["layers"][-1]
        logits = last["pre"].copy_to_host(plan["logits_host"]).reshape(B, N_CLASSES).copy()
        ce = float(self.dtype.type(sc[0] / B))
        parts = {"ce": ce, "kl": float(sc[1]) if self.kl_on else 0.0,
                 "log_prior": float(sc[2]) if self.mix_on else 0.0, "l2": float(sc[3]) if self.wd else 0.0}
        reg = self.tau1 * parts["kl"] - self.tau2 * parts["log_prior"]
        loss = ce + reg * (1.0 / self.n_data) + self.wd * parts["l2"]
        return loss, parts, logits

    def _adam(self):
        """refvbc.optim.Adam.step on the device (step counter on the host optimizer)."""
        opt = self.opt
        opt.step_count += 1
        t = opt.step_count
        bc1 = 1.0 - opt.beta1 ** t
        bc2 = 1.0 - opt.beta2 ** t
        for k in self.names:
            lr = self._lr(k)
            if lr is None:
                continue
            self._A.adam_update(self.d_p[k], self.d_g[k], self.d_m[k], self.d_v[k], lr, opt.beta1,
                                opt.beta2, opt.eps, bc1, bc2, np.finfo(self.d_p[k].dtype).tiny)
            self._touched.add(k)

    def sync(self):
        """Copy parameters and Adam state (m, v) into the host dict / optimizer, in place where they exist."""
        for k in self.names:
            self.params[k][...] = self.d_p[k].copy_to_host().reshape(self.shapes[k])
        for k in self._touched:
            if k not in self.d_m:
                continue
            for host, dev in ((self.opt.m, self.d_m), (self.opt.v, self.d_v)):
                arr = dev[k].copy_to_host().reshape(self.shapes[k])
                if k in host and host[k].shape == arr.shape and host[k].dtype == arr.dtype:
                    host[k][...] = arr
                else:
                    host[k] = arr
