"""The foreach StableAdamW makes exactly the updates of the per-tensor reference."""

from __future__ import annotations

import copy

import torch

from twinlm.train.optim import StableAdamW, build_optimizer


class ReferenceStableAdamW(torch.optim.Optimizer):
    """The previous per-tensor implementation (one host sync per tensor), kept as the reference."""

    def __init__(self, params, lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, peak_lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, wd, peak = group["lr"], group["eps"], group["weight_decay"], group["peak_lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.float()
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                step = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(grad, 1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                m_hat = m / (1 - beta1**step)
                v_hat = v / (1 - beta2**step)
                rms = (grad.square() / v_hat.clamp_min(eps * eps)).mean().sqrt().item()
                if wd:
                    p.mul_(1 - wd * lr / peak)
                p.add_(m_hat / (v_hat.sqrt() + eps), alpha=-lr / max(1.0, rms))


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Embedding(50, 16), torch.nn.Linear(16, 32), torch.nn.LayerNorm(32),
                               torch.nn.Linear(32, 50))


def test_foreach_stable_adamw_matches_the_per_tensor_reference():
    model = _model()
    ref_model = copy.deepcopy(model)
    opt = build_optimizer(model, "stable_adamw", lr=3e-3, weight_decay=0.1, betas=(0.9, 0.98), eps=1e-6)
    assert isinstance(opt, StableAdamW)
    ref_groups = [{"params": list(g["params"]), "weight_decay": g["weight_decay"]} for g in opt.param_groups]
    by_id = dict(zip(map(id, model.parameters()), ref_model.parameters()))
    ref = ReferenceStableAdamW([{**g, "params": [by_id[id(p)] for p in g["params"]]} for g in ref_groups],
                               lr=3e-3, eps=1e-6)
    clipped = False
    for step in range(8):
        x = torch.randint(0, 50, (4, 6), generator=torch.Generator().manual_seed(step))
        # Step 5 spikes the loss, so the update clipping (RMS > 1) is exercised.
        scale = 30.0 if step == 5 else 1.0
        for m, o in ((model, opt), (ref_model, ref)):
            o.zero_grad()
            (scale * m(x).logsumexp(-1).mean()).backward()
        g, st = model[3].weight.grad, opt.state.get(model[3].weight)
        if st:
            v_hat = st["exp_avg_sq"] * 0.98 + 0.02 * g.square()
            clipped |= bool((g.square() / (v_hat / (1 - 0.98 ** (step + 1)))).mean() > 1)
        opt.step()
        ref.step()
        for (name, p), q in zip(model.named_parameters(), ref_model.parameters()):
            torch.testing.assert_close(p, q, atol=1e-6, rtol=0, msg=f"step {step} {name}")
    assert clipped, "the test never exercised the update clipping"
    before = {n: p.clone() for n, p in _model().named_parameters()}
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_optimizer_state_round_trips():
    model = _model()
    opt = build_optimizer(model, "stable_adamw", 1e-3, 0.0, (0.9, 0.98), 1e-6)
    model(torch.tensor([[1, 2]])).sum().backward()
    opt.step()
    again = build_optimizer(model, "stable_adamw", 1e-3, 0.0, (0.9, 0.98), 1e-6)
    again.load_state_dict(opt.state_dict())
    assert float(again.state[model[1].weight]["step"]) == 1.0
