"""The PyTorch reference step that bench_step.py times interleaved with refvbc's: the same training step
written straightforwardly from docs/objective.md (float32, autograd, torch.optim.Adam).

Shape legend
    B          batch size (the x given to TorchStep)
    D          all weights (thetas) of the network, concatenated
    K          mixture components
"""

import numpy as np

from refvbc.arch import GAMMA_ALPHA, GAMMA_BETA, N_TRAIN, PI0, get_arch


class TorchStep:
    """A straightforward PyTorch version of the same training step: torch.randn noise, F.conv2d / F.linear
    for the mean and variance paths (deterministic layers for l2 / sws), relu, max_pool2d, cross_entropy,
    KL_VD elementwise, the mixture log-density with (D, K) temporaries and logsumexp, weight decay for l2,
    backward by autograd, torch.optim.Adam with the phase's rates.

    Inputs:  torch (the module); arch name; params {name: array} (copied to float32 tensors); x (B, ...) one
             batch and y (B,) its labels, reused by every step; lrs {group: rate}; coefs {tau1, tau2,
             weight_decay (optional)}.
    """

    K1, K2, K3 = 0.63576, 1.87320, 1.48695

    def __init__(self, torch, arch, params, x, y, lrs, coefs):
        self.torch, self.F = torch, torch.nn.functional
        self.net = get_arch(arch)
        self.p = {k: torch.tensor(np.asarray(v, dtype=np.float32)).requires_grad_(True)
                  for k, v in params.items()}
        self.x = torch.tensor(np.asarray(x, dtype=np.float32))
        self.y = torch.tensor(y, dtype=torch.int64)
        self.variational = f"{self.net[0].name}.log_sigma2" in params
        self.shapes = {layer.name: (self.x.shape[0],) + layer.preact_shape for layer in self.net}
        groups = {}
        for k, t in self.p.items():
            groups.setdefault(k.rsplit(".", 1)[-1], []).append(t)
        wd = coefs.get("weight_decay", 0.0)
        self.opt = torch.optim.Adam([{"params": ts, "lr": lrs[g], "weight_decay": wd if g == "theta" else 0.0}
                                     for g, ts in groups.items() if g in lrs], betas=(0.9, 0.999), eps=1e-8)
        self.tau1, self.tau2 = coefs["tau1"], coefs["tau2"]

    def forward(self):
        """The loss of one step: the network (fresh noise), cross-entropy, τ1 KL_VD / N. Returns a 0-d tensor."""
        torch, F, p = self.torch, self.F, self.p
        h = self.x
        kl = 0.0
        for i, layer in enumerate(self.net):
            n = layer.name
            th, b = p[f"{n}.theta"], p[f"{n}.bias"]
            if layer.kind == "dense" and h.dim() == 4:
                h = h.reshape(h.shape[0], -1)
            op = F.conv2d if layer.kind == "conv" else F.linear
            if self.variational:
                s = p[f"{n}.log_sigma2"]
                m = op(h, th, b)
                v = op(h * h, torch.exp(s))
                h = m + torch.sqrt(v + 1e-8) * torch.randn(self.shapes[n])
                if self.tau1:
                    la = torch.clamp(s - torch.log(th * th + 1e-8), -10.0, 10.0)
                    kl = kl + (self.K1 - self.K1 * torch.sigmoid(self.K2 + self.K3 * la)
                               + 0.5 * torch.log1p(torch.exp(-la))).sum()
            else:
                h = op(h, th, b)
            if i < len(self.net) - 1:
                h = torch.relu(h)
                if layer.kind == "conv":
                    h = F.max_pool2d(h, 2, 2)
        loss = F.cross_entropy(h, self.y) + self.tau1 * kl / N_TRAIN
        if self.tau2:
            loss = loss - self.tau2 * self.log_prior() / N_TRAIN
        return loss

    def log_prior(self):
        """Σ_weights log GM(θ) + Σ_k log Γ(λ_k), with (D, K) temporaries. Returns a 0-d tensor."""
        torch, p = self.torch, self.p
        w = torch.cat([p[f"{l.name}.theta"].reshape(-1) for l in self.net])
        mu, ll, rho = p["gmm.mu"], p["gmm.log_lambda"], p["gmm.log_pi"]
        mu = torch.cat([torch.zeros(1), mu[1:]])
        log_pi = torch.cat([torch.full((1,), float(np.log(PI0))),
                            float(np.log1p(-PI0)) + torch.log_softmax(rho[1:], dim=0)])
        lam = torch.exp(ll)
        d = w[:, None] - mu[None, :]                                           # (D, K)
        comp = log_pi + 0.5 * ll - 0.5 * float(np.log(2 * np.pi)) - 0.5 * lam * d * d  # (D, K)
        return torch.logsumexp(comp, dim=1).sum() + ((GAMMA_ALPHA - 1) * ll - GAMMA_BETA * lam).sum()

    def step(self):
        """One training step (zero_grad, forward, backward, Adam). Returns the loss (float)."""
        self.opt.zero_grad(set_to_none=True)
        loss = self.forward()
        loss.backward()
        self.opt.step()
        return float(loss.detach())
