"""What every part of the suite (glue, retrieval, generative, winogender) agrees on.

A part module exposes `TASKS` (task name -> what it needs) and three functions:
* `plan(task, model, settings) -> list[SuiteRun]`: the runs a task costs for one model (a
  fine-tuned task: one per learning rate x seed; a zero-shot task: one);
* `needs(task, settings) -> list[DataNeed]`: the datasets the task reads, for `--dry-run` and for
  the missing-data check made before any work;
* `execute(run, model, settings) -> dict`: does one run and returns its record (`score` in the
  paper's scale, 0-100, plus whatever else the run measured), written by the suite as it ends.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

PARTS = ("glue", "retrieval", "generative", "winogender")


@dataclass(frozen=True)
class SuiteRun:
    """One unit of work: written to `OUT/runs/<key>.json` when it ends, skipped by `--resume`."""

    part: str
    task: str
    model: str  # the model's label
    twin: str  # "encoder" | "decoder"
    lr: float | None = None
    seed: int | None = None
    epochs: float | None = None
    extra: tuple[tuple[str, str], ...] = ()  # other settings that make the run differ (batch size, ...)

    @property
    def key(self) -> str:
        """A file-name-safe id that changes whenever anything the result depends on changes."""
        digest = hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]
        safe = f"{self.part}-{self.task}-{self.model}".replace("/", "_").replace(":", "_")
        return f"{safe}-{digest}"


@dataclass
class DataNeed:
    """A dataset a task reads: its hub id, config and split, and where a local mirror has it."""

    hub_id: str
    config: str | None
    split: str
    local: list[Path] = field(default_factory=list)  # the mirror's files, empty when read from the hub
