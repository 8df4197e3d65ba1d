"""World-size arithmetic: how a phase's global batch splits over processes and micro-batches,
and the per-step data each process trains on.

One rule, used by `twinlm pretrain` before any work and by `twinlm plan --gpus N` (as torchtitan
and litgpt do: global batch = micro-batch x accumulation x processes, all whole numbers). A
split that is not whole is refused in one line that names the nearest settings that are.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from twinlm.errors import UserError
from twinlm.recipe import Phase, Recipe
from twinlm.train.memory import Budget, fits, refuse
from twinlm.train.schedules import BatchSchedule


@dataclass(frozen=True)
class Split:
    """How one phase's global batch runs on `processes` processes."""

    global_batch: int
    processes: int
    micro_batch: int  # sequences per forward pass per process
    accumulation: int  # forward/backward passes per optimizer step per process (at the full batch)

    @property
    def per_process(self) -> int:
        return self.global_batch // self.processes


def split_batch(recipe: Recipe, phase: Phase, processes: int, budget: Budget | None = None) -> Split:
    """The micro-batch and gradient accumulation of `phase` on `processes` processes, or a
    UserError naming the nearest valid global batches, micro-batches and process counts. With a
    memory `budget`, `auto` takes the largest micro-batch whose estimate fits it, and a phase that
    does not fit (at micro-batch 1 under auto, at its micro-batch otherwise) is refused."""
    batch, micro = recipe.batch_of(phase), recipe.micro_batch_of(phase)
    where = f"phase {phase.name}: global batch {batch}"
    if micro == "auto":
        if batch % processes:
            raise UserError(
                f"{where} does not split over {processes} processes ({batch / processes:g} sequences each); "
                f"nearest valid: global batch {_multiples_near(batch, processes)} "
                f"(--set phases.{phase.name}.global_batch=N), or {_counts_near(batch, processes)} processes"
            )
        per = batch // processes
        cap = max(1, recipe.training.micro_batch_tokens // phase.seq_len)
        sizes = [d for d in range(min(per, cap), 0, -1) if per % d == 0]
        micro = next((d for d in sizes if budget is None or fits(recipe, phase, d, budget)), None)
        if micro is None:
            raise refuse(recipe, phase, 1, budget)
        return Split(batch, processes, micro, per // micro)
    if batch % (micro * processes):
        per = batch / processes
        micros = _divisors_near(int(per), micro) if float(per).is_integer() else None
        raise UserError(
            f"{where} does not split over {processes} processes x micro_batch {micro} "
            f"({batch} / ({processes} x {micro}) = {batch / (processes * micro):g} accumulation steps); "
            f"nearest valid: global batch {_multiples_near(batch, processes * micro)}, "
            + (f"micro_batch {micros}, " if micros else "")
            + f"{_counts_near(batch // micro, processes)} processes, or micro_batch: auto"
        )
    if budget is not None and not fits(recipe, phase, micro, budget):
        raise refuse(recipe, phase, micro, budget)
    return Split(batch, processes, micro, batch // (micro * processes))


def check_batch_warmup(recipe: Recipe, processes: int) -> None:
    """Every warmup batch is a multiple of batch_warmup_min, so that must split over the processes."""
    t = recipe.training
    if t.batch_warmup_tokens and t.batch_warmup_min % processes:
        raise UserError(
            f"training.batch_warmup_min ({t.batch_warmup_min}) does not split over {processes} processes; "
            f"nearest valid: {_multiples_near(t.batch_warmup_min, processes)} "
            f"(must also divide the global batch {recipe.batch_of(recipe.phases[0])})"
        )


def _multiples_near(n: int, q: int) -> str:
    below, above = (n // q) * q, -(-n // q) * q
    return " or ".join(str(v) for v in dict.fromkeys(v for v in (below, above) if v > 0))


def _divisors_near(n: int, target: int) -> str:
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    below = [d for d in divisors if d <= target]
    above = [d for d in divisors if d > target]
    return " or ".join(str(v) for v in ([below[-1]] if below else []) + ([above[0]] if above else []))


def _counts_near(n: int, target: int) -> str:
    """Process counts near `target` that divide n."""
    return _divisors_near(n, target)


class StepBatches(torch.utils.data.Dataset):
    """Item s: this process's share of optimizer step s, as a list of collated micro-batches.

    Step s trains on samples [first_sample(s), first_sample(s) + batch(s)) of `samples`, whatever
    the number of processes; process r takes the r-th contiguous slice and cuts it into
    micro-batches of `micro_batch` (the last one smaller during batch warmup). The Trainer then
    runs one optimizer step per item, so a varying batch needs no change to its loop, and resume
    skips whole steps without reading their data."""

    def __init__(self, samples, schedule: BatchSchedule, micro_batch: int, collator, rank: int = 0,
                 processes: int = 1, steps: int | None = None):
        self.samples, self.schedule, self.micro_batch = samples, schedule, micro_batch
        self.collator, self.rank, self.processes = collator, rank, processes
        self.steps = schedule.steps if steps is None else min(steps, schedule.steps)

    def __len__(self) -> int:
        return self.steps

    def indices(self, step: int) -> range:
        per = self.schedule.batch(step) // self.processes
        start = self.schedule.first_sample(step) + self.rank * per
        return range(start, start + per)

    def __getitem__(self, step: int) -> list[dict]:
        idx = self.indices(step)
        return [self.collator([self.samples[i] for i in idx[j : j + self.micro_batch]])
                for j in range(0, len(idx), self.micro_batch)]


def first_item(items: list):
    """DataLoader collate for StepBatches (batch_size=1): the item itself."""
    return items[0]
