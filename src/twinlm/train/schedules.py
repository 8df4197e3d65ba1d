"""Per-phase learning-rate multipliers (ETTIN-FACTS §2).

Each phase owns its own schedule over its own steps, expressed as a multiple of the recipe's
peak LR: warmup then constant (pretrain), 1-sqrt decay between two multiples (context extension
and decay), or warmup then linear decay (cross-objective training).
"""

from __future__ import annotations

import math

from twinlm.recipe import Phase


def lr_multiplier(phase: Phase, step: int, total_steps: int, warmup_steps: int) -> float:
    """LR multiple at optimizer step `step` (0-based) of a phase with `total_steps` steps."""
    t = min(max(step, 0), total_steps)
    if phase.lr_schedule == "warmup_constant":
        if warmup_steps and t < warmup_steps:
            return phase.lr_start * (t + 1) / warmup_steps
        return phase.lr_start
    if phase.lr_schedule == "one_minus_sqrt":
        # lr(t) = start - (start - end) * sqrt(t / T): ends exactly at `lr_end` on the last step.
        frac = t / max(1, total_steps - 1)
        return phase.lr_start - (phase.lr_start - phase.lr_end) * math.sqrt(frac)
    if phase.lr_schedule == "warmup_linear":
        if warmup_steps and t < warmup_steps:
            return phase.lr_start * (t + 1) / warmup_steps
        frac = (t - warmup_steps) / max(1, total_steps - warmup_steps - 1)
        return phase.lr_start + (phase.lr_end - phase.lr_start) * min(1.0, frac)
    raise ValueError(f"unknown schedule {phase.lr_schedule}")


def warmup_steps_for(phase: Phase, tokens_per_step: int) -> int:
    return math.ceil(phase.warmup_tokens / tokens_per_step) if phase.warmup_tokens else 0
