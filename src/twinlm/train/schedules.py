"""Per-phase learning-rate multipliers (ETTIN-FACTS §2).

Each phase owns its own schedule over its own steps, expressed as a multiple of the recipe's
peak LR: warmup then constant (pretrain), 1-sqrt decay between two multiples (context extension
and decay), or warmup then linear decay (cross-objective training). `BatchSchedule` gives the
sequences per step (batch-size warmup), from which the steps of a phase follow. The recipe only
states the numbers; this module does the arithmetic (`batch_schedule`, `phase_steps`).
"""

from __future__ import annotations

import math

import numpy as np

from twinlm.recipe import Phase, Recipe


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


def warmup_steps_for(phase: Phase, schedule: BatchSchedule | int) -> int:
    """LR warmup in steps: the first step count whose tokens reach `phase.warmup_tokens`
    (`schedule` may be a constant number of tokens per step)."""
    if not phase.warmup_tokens:
        return 0
    if isinstance(schedule, int):
        return math.ceil(phase.warmup_tokens / schedule)
    ramp_tokens = schedule.ramp_starts * schedule.seq_len
    k = int(np.searchsorted(ramp_tokens, phase.warmup_tokens))  # first k with tokens_through(k) >= warmup
    if k < len(ramp_tokens):
        return k
    rest = phase.warmup_tokens - int(ramp_tokens[-1])
    return len(schedule.ramp) + math.ceil(rest / (schedule.global_batch * schedule.seq_len))


class BatchSchedule:
    """Sequences per optimizer step over one phase, with Ettin's batch-size warmup.

    During warmup the global batch grows linearly in tokens seen, from `warmup_min` at the first
    step to `global_batch` after `warmup_tokens` tokens (ModernBERT / Ettin's
    `batch_size_warmup_min_size` and `batch_size_warmup_tokens`), in whole multiples of
    `warmup_min`. The schedule, and so which samples each step trains on, depends only on the
    recipe, never on the number of processes, so both twins and any cluster size see the same
    batches. Only the warmup steps are stored; the constant part is arithmetic."""

    def __init__(self, global_batch: int, seq_len: int, tokens: int, warmup_min: int = 0, warmup_tokens: int = 0):
        self.global_batch, self.seq_len = global_batch, seq_len
        ramp: list[int] = []
        seen = 0
        if warmup_tokens and warmup_min and warmup_min < global_batch:
            while seen < warmup_tokens and seen < tokens:
                linear = warmup_min + (global_batch - warmup_min) * seen / warmup_tokens
                batch = min(global_batch, warmup_min * max(1, int(linear // warmup_min)))
                ramp.append(batch)
                seen += batch * seq_len
        self.ramp = np.asarray(ramp, dtype=np.int64)
        self.ramp_starts = np.concatenate([[0], np.cumsum(self.ramp)])  # first sample of each ramp step
        rest = max(0, tokens - seen)
        self.steps = max(1, len(ramp) + math.ceil(rest / (global_batch * seq_len)))

    def batch(self, step: int) -> int:
        """Sequences in optimizer step `step` (0-based)."""
        return int(self.ramp[step]) if step < len(self.ramp) else self.global_batch

    def first_sample(self, step: int) -> int:
        """Index of the first sample of step `step` in the phase's sample order."""
        if step <= len(self.ramp):
            return int(self.ramp_starts[step])
        return int(self.ramp_starts[-1]) + (step - len(self.ramp)) * self.global_batch

    def samples_through(self, steps: int) -> int:
        """Sequences trained on in the first `steps` steps."""
        return self.first_sample(steps)

    def tokens_through(self, steps: int) -> int:
        return self.samples_through(steps) * self.seq_len

    @property
    def total_samples(self) -> int:
        return self.samples_through(self.steps)


def batch_schedule(recipe: Recipe, phase: Phase) -> BatchSchedule:
    """Sequences per step of `phase` (batch-size warmup applies to the first phase only)."""
    t = recipe.training
    warm = phase.name == recipe.phases[0].name and t.batch_warmup_tokens > 0
    return BatchSchedule(recipe.batch_of(phase), phase.seq_len, phase.tokens,
                         t.batch_warmup_min if warm else 0, t.batch_warmup_tokens if warm else 0)


def phase_steps(recipe: Recipe, phase: Phase) -> int:
    return batch_schedule(recipe, phase).steps
