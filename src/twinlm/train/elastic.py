"""Resuming a run on another number of processes.

What a resumed run needs to continue the same global sample sequence from the same step, and why
nothing else must carry over:
- The data position is global: one loader item is one optimizer step (`StepBatches`), step s
  trains on samples [first_sample(s), first_sample(s) + batch(s)) of the recipe's order whatever
  the process count, so the Trainer's "skip the steps already trained" is the same on any count.
- The optimizer and schedule states are full-precision and DDP-replicated: rank 0's copy is the
  whole state, loadable on any count.
- Randomness is keyed by samples, not by ranks: MLM masks are drawn per sample from
  (seed, sample index) (`sample_rng.SeededCollator`), and dropout per micro-batch from (seed, index of the
  micro-batch's first sample) (`sample_rng.seed_dropout`). The Trainer's per-rank RNG files then matter no
  more (a run resumed on another count cannot find its own rank's file, and does not need it).
  With a fixed `micro_batch` the micro-batches are the same samples on every count, so a resumed
  run is the uninterrupted run up to float reduction order. With `micro_batch: auto` the
  micro-batch can change with the count (and within batch warmup the last micro-batch of a
  process is shorter): the masks stay the same, the dropout masks are then drawn for other
  groups of samples (the same distribution, not the same draws).

The rule: a run resumes on P processes when every phase's global batch (and batch warmup's
minimum) splits over P; `resume_counts` lists those counts, `check_processes` refuses others in one
line that names the nearest valid ones.
"""

from __future__ import annotations

import json
from pathlib import Path

from twinlm.errors import UserError
from twinlm.recipe import Recipe
from twinlm.train.batching import check_batch_warmup, split_batch
from twinlm.train.checkpoints import COMPLETE_FILE


def splits_over(recipe: Recipe, processes: int) -> bool:
    try:
        for phase in recipe.phases:
            split_batch(recipe, phase, processes)
        check_batch_warmup(recipe, processes)
    except UserError:
        return False
    return True


def resume_counts(recipe: Recipe, limit: int | None = None) -> list[int]:
    """Every process count (up to `limit`; none beyond the smallest global batch can split it) the
    run can train or resume on."""
    top = min(limit or 2**62, min(recipe.batch_of(p) for p in recipe.phases))
    return [n for n in range(1, top + 1) if splits_over(recipe, n)]


# Settings of how a step runs on the hardware, not of what it computes: a resumed run may change
# them (a smaller cluster needs another micro-batch); the global batch, data and seed may not.
PER_CLUSTER = ("micro_batch", "micro_batch_tokens", "activation_checkpointing", "dataloader_workers")


def run_defining(recipe_dict: dict) -> dict:
    """A recipe dict without the PER_CLUSTER settings (what a resume must keep equal)."""
    out = {**recipe_dict, "training": {k: v for k, v in recipe_dict.get("training", {}).items() if k not in PER_CLUSTER}}
    out["phases"] = [{k: v for k, v in p.items() if k not in PER_CLUSTER} for p in recipe_dict.get("phases", [])]
    return out


def check_processes(recipe: Recipe, processes: int, resume: bool) -> None:
    """Refuse a process count the recipe's batches do not split over, before any work. A resumed
    run cannot change its global batch, so its error names process counts (and the micro-batch,
    which it may change) only."""
    if not resume:  # a new run may also change the batch: the per-phase message names both
        for phase in recipe.phases:
            split_batch(recipe, phase, processes)
        check_batch_warmup(recipe, processes)
        return
    if splits_over(recipe, processes):
        return
    here = _nearest(resume_counts(recipe, limit=max(2 * processes, 8)), processes)
    line = (f"--resume on {processes} processes: {_first_reason(recipe, processes)}; this run resumes on "
            f"{here or 'no nearby count of'} processes")
    fixed = any(recipe.micro_batch_of(p) != "auto" for p in recipe.phases)
    valid = set(resume_counts(recipe, limit=max(2 * processes, 8)))
    anywhere = _nearest([n for n in range(1, max(2 * processes, 8) + 1)
                         if n not in valid and _batches_split(recipe, n)], processes)
    if fixed and anywhere:
        line += f", or on {anywhere} with --set training.micro_batch=auto (or a micro-batch that divides the share)"
    raise UserError(line + "; the global batch stays the recipe's (`twinlm plan` lists the counts)")


def _batches_split(recipe: Recipe, processes: int) -> bool:
    """Whether every global batch (and the batch warmup's minimum) splits over `processes`, at
    some micro-batch."""
    t = recipe.training
    if t.batch_warmup_tokens and t.batch_warmup_min % processes:
        return False
    return all(recipe.batch_of(p) % processes == 0 for p in recipe.phases)


def _nearest(valid: list[int], target: int) -> str:
    below = [n for n in valid if n < target]
    above = [n for n in valid if n > target]
    return " or ".join(str(n) for n in ([below[-1]] if below else []) + ([above[0]] if above else []))


def _first_reason(recipe: Recipe, processes: int) -> str:
    for phase in recipe.phases:
        batch, micro = recipe.batch_of(phase), recipe.micro_batch_of(phase)
        per = micro if micro != "auto" else 1
        if batch % (per * processes):
            what = f"global batch {batch}" + (f" at micro_batch {micro}" if micro != "auto" else "")
            return f"phase {phase.name}'s {what} does not split over {processes}"
    return f"training.batch_warmup_min ({recipe.training.batch_warmup_min}) does not split over {processes}"


def resume_line(twin: str, phase: str, checkpoint: Path, schedule, processes: int, micro_batch: int) -> str:
    """What a resume continues from, and on how many processes against how many it was saved on."""
    step = int(checkpoint.name.split("-")[1])
    try:
        saved = json.loads((checkpoint / COMPLETE_FILE).read_text()).get("processes")
    except (OSError, ValueError):
        saved = None
    batch = schedule.batch(step) if step < schedule.steps else schedule.global_batch
    accumulation = -(-batch // processes // micro_batch)
    moved = f" (saved on {saved})" if saved and saved != processes else ""
    return (f"{twin} {phase}: resuming at step {step}/{schedule.steps}, sample {schedule.first_sample(step)}, "
            f"on {processes} process{'es' if processes > 1 else ''}{moved}: global batch {batch} = "
            f"micro-batch {micro_batch} x {accumulation} accumulation x {processes}")
