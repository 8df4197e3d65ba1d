"""StableAdamW (Wortsman et al., 2023), the optimizer Ettin and ModernBERT train with.

AdamW plus per-tensor update clipping: the step of each tensor is divided by
max(1, RMS(g^2 / v)), which tames loss spikes when the second-moment estimate lags behind a
sudden large gradient. Weight decay is fully decoupled from the LR (`p *= 1 - wd * lr / peak_lr`),
which is why the Ettin weight decays (3e-4 ... 1e-5) look small next to coupled AdamW values.
"""

from __future__ import annotations

import torch


class StableAdamW(torch.optim.Optimizer):
    def __init__(self, params, lr: float, betas=(0.9, 0.98), eps: float = 1e-6, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, peak_lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, wd, peak = group["lr"], group["eps"], group["weight_decay"], group["peak_lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.float()
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                state["step"] += 1
                step = state["step"].item()
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(grad, 1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                m_hat = m / (1 - beta1**step)
                v_hat = v / (1 - beta2**step)
                rms = (grad.square() / v_hat.clamp_min(eps * eps)).mean().sqrt().item()
                step_lr = lr / max(1.0, rms)
                if wd:
                    p.mul_(1 - wd * lr / peak)
                update = m_hat / (v_hat.sqrt() + eps)
                p.add_(update.to(p.dtype), alpha=-step_lr)
        return loss


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
