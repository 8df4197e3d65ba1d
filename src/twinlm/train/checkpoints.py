"""A phase's intermediate checkpoint folders: which are complete, rotation by step number, and
the clean-up after a kill or at the phase's end. Saving itself is the Trainer's (pretrain.PhaseTrainer
stages a checkpoint, writes COMPLETE_FILE last and renames it into place)."""

from __future__ import annotations

import shutil
from pathlib import Path

STAGING = ".staging"
COMPLETE_FILE = "twinlm-checkpoint.json"  # written last, before the rename: the checkpoint is whole


def step_of(checkpoint: Path) -> int:
    return int(checkpoint.name.split("-")[1])


def checkpoints(work: Path) -> list[Path]:
    """Complete intermediate checkpoints of a phase, oldest first (by step number, not name)."""
    found = [p for p in work.glob("checkpoint-*")
             if p.name.split("-")[1].isdigit() and (p / COMPLETE_FILE).exists() and (p / "trainer_state.json").exists()]
    return sorted(found, key=step_of)


def rotate_checkpoints(work: Path, keep_last: int, keep_every: int = 0) -> list[Path]:
    """Delete all but the newest `keep_last` checkpoints and those at multiples of `keep_every`;
    returns the deleted folders. Steps compare as numbers: checkpoint-10000 is newer than -9000."""
    done = checkpoints(work)
    keep = set(done[-keep_last:]) if keep_last > 0 else set()
    keep |= {p for p in done if keep_every and step_of(p) % keep_every == 0}
    removed = [p for p in done if p not in keep]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed


def clean_incomplete(work: Path) -> list[Path]:
    """Remove what a killed save left behind: the staging folder and any checkpoint folder
    without its completion marker. Returns what was removed."""
    done = set(checkpoints(work))
    removed = [p for p in work.glob("checkpoint-*") if p not in done]
    if (work / STAGING).exists():
        removed.append(work / STAGING)
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed


def finish_work_folder(work: Path, keep_every: int) -> None:
    """At phase end the phase folder holds the weights: keep only the keep_every checkpoints
    (whole: weights, tokenizer, optimizer and trainer state), drop the rest."""
    clean_incomplete(work)
    rotate_checkpoints(work, 0, keep_every)
    for folder in (work, work.parent):  # <twin>/work/<phase>, then <twin>/work once nothing is kept
        if folder.exists() and not any(folder.iterdir()):
            folder.rmdir()
