"""StableAdamW (Wortsman et al., 2023), the optimizer Ettin and ModernBERT train with.

AdamW plus per-tensor update clipping: the step of each tensor is divided by
max(1, RMS(g^2 / v)), which tames loss spikes when the second-moment estimate lags behind a
sudden large gradient. Weight decay is fully decoupled from the LR (`p *= 1 - wd * lr / peak_lr`),
which is why the Ettin weight decays (3e-4 ... 1e-5) look small next to coupled AdamW values.
"""

from __future__ import annotations

import torch


class StableAdamW(torch.optim.Optimizer):
    """Each step runs as a handful of `torch._foreach_*` kernels over all tensors of a parameter
    group (as torch's own `foreach` AdamW), with no host sync: the per-tensor clipping factors
    stay on the device, and the step counts live on the CPU as torch's optimizers keep them."""

    def __init__(self, params, lr: float, betas=(0.9, 0.98), eps: float = 1e-6, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, peak_lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._group_step(group, params)
        return loss

    def _group_step(self, group: dict, params: list[torch.Tensor]) -> None:
        beta1, beta2 = group["betas"]
        lr, eps, wd, peak = group["lr"], group["eps"], group["weight_decay"], group["peak_lr"]
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
        states = [self.state[p] for p in params]
        grads = [p.grad.float() for p in params]
        m = [s["exp_avg"] for s in states]
        v = [s["exp_avg_sq"] for s in states]
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1.0)
        # Bias corrections from CPU step counts: plain Python floats, no device round trip.
        bc1 = [1 - beta1 ** float(t) for t in steps]
        bc2 = [1 - beta2 ** float(t) for t in steps]
        torch._foreach_lerp_(m, grads, 1 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
        v_hat = torch._foreach_div(v, bc2)
        denom = torch._foreach_add_(torch._foreach_sqrt(v_hat), eps)
        # Update clipping: RMS(g^2 / v_hat) per tensor, kept as one 0-d device tensor each.
        torch._foreach_clamp_min_(v_hat, eps * eps)  # the unclamped v_hat is no longer needed
        ratio = torch._foreach_div_(torch._foreach_mul(grads, grads), v_hat)
        sums = torch._foreach_norm(ratio, 1)  # ratio >= 0, so its L1 norm is its sum
        del ratio, v_hat
        mean = torch._foreach_div(sums, [float(g.numel()) for g in grads])
        clip = torch._foreach_clamp_min(torch._foreach_sqrt(mean), 1.0)
        if wd:
            torch._foreach_mul_(params, 1 - wd * lr / peak)
        update = torch._foreach_div_(torch._foreach_div(m, bc1), denom)
        del denom
        torch._foreach_div_(update, clip)
        torch._foreach_mul_(update, -lr)
        if all(p.dtype == torch.float32 for p in params):
            torch._foreach_add_(params, update)
        else:
            torch._foreach_add_(params, [u.to(p.dtype) for u, p in zip(update, params)])


def build_optimizer(model: torch.nn.Module, name: str, lr: float, weight_decay: float, betas, eps: float):
    """Decay matrices only: norms, biases and embeddings are left undecayed (as ModernBERT does)."""
    decay, no_decay = [], []
    for pname, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "embeddings" in pname or "norm" in pname:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "stable_adamw":
        return StableAdamW(groups, lr=lr, betas=betas, eps=eps)
    # torch AdamW couples decay with the LR; rescale so that the effective decay matches.
    for g in groups:
        g["weight_decay"] = g["weight_decay"] / lr
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)
