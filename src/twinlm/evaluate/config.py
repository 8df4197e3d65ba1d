"""Settings of an evaluation: which tasks, seeds, and the fine-tuning budget every model gets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from twinlm.errors import UserError

TASK_NAMES = ("intrinsic", "classification", "retrieval", "choice", "bias")
FINETUNED = ("classification", "retrieval")


@dataclass
class EvalConfig:
    """tasks: any of TASK_NAMES. seeds: fine-tuning seeds per learning rate (zero-shot tasks are
    deterministic and run once). lrs: the learning-rate grid tried for every model alike; the best
    mean primary metric is reported (and the report says so). steps/batch_size: the fine-tuning
    budget, identical for every model. max_length: tokens per fine-tuning input.
    max_items: cap on multiple-choice items (speed). nli_data / choice_data / beir: files or
    folders replacing the built-in world's task data. pooling: encoder pooling ("cls" or "mean";
    decoders always use the last token). encoder_scoring: how encoders score a continuation in the
    choice task and lm-eval ("ettin": Ettin's left-to-right masked protocol; "pll": classic
    pseudo-log-likelihood; see evaluate/scoring.py)."""

    tasks: list[str] = field(default_factory=lambda: list(TASK_NAMES))
    seeds: int = 3
    lrs: list[float] = field(default_factory=lambda: [1e-4, 3e-4, 1e-3])
    steps: int = 150
    batch_size: int = 32
    max_length: int = 128
    max_items: int = 400
    pooling: str = "mean"
    nli_data: str | None = None
    choice_data: str | None = None
    beir: str | None = None
    encoder_scoring: str = "ettin"

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASK_NAMES]
        if unknown or not self.tasks:
            raise UserError(f"unknown task(s) {', '.join(unknown) or '(none given)'}; valid tasks: {', '.join(TASK_NAMES)}")
        if self.seeds < 1 or self.steps < 1 or self.batch_size < 2 or self.max_items < 1:
            raise UserError("seeds, steps and max_items must be >= 1 and batch_size >= 2")
        if not self.lrs or any(lr <= 0 for lr in self.lrs):
            raise UserError(f"the learning-rate grid must hold positive numbers, got {self.lrs}")
        if self.pooling not in ("cls", "mean"):
            raise UserError(f"pooling must be cls or mean, got {self.pooling!r}")
        if self.encoder_scoring not in ("ettin", "pll"):
            raise UserError(f"encoder_scoring must be ettin or pll, got {self.encoder_scoring!r}")
        for name in ("nli_data", "choice_data", "beir"):
            value = getattr(self, name)
            if value is not None and not Path(value).exists():
                raise UserError(f"{name} {value} does not exist")

    def to_dict(self) -> dict:
        return asdict(self)
