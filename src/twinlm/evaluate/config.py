"""Settings of an evaluation: which tasks, seeds, and the fine-tuning budget every model gets."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from twinlm.config import given
from twinlm.errors import UserError

TASK_NAMES = ("intrinsic", "classification", "retrieval", "choice", "bias")
FINETUNED = ("classification", "retrieval")
POOLINGS = ("auto", "mean", "cls")
SCORINGS = ("ettin", "pll")


@dataclass
class EvalConfig:
    """tasks: any of TASK_NAMES. seeds: fine-tuning seeds per learning rate (zero-shot tasks are
    deterministic and run once). lrs: the learning-rate grid tried for every model alike; the best
    mean primary metric is reported (and the report says so). steps/batch_size: the fine-tuning
    budget, identical for every model. max_length: tokens per fine-tuning input.
    max_items: cap on multiple-choice items (speed). nli_data / choice_data / beir: files or
    folders replacing the built-in world's task data. encoder_scoring: how encoders score a
    continuation in the choice task and lm-eval ("ettin": Ettin's left-to-right masked protocol;
    "pll": classic pseudo-log-likelihood; see evaluate/scoring.py)."""

    tasks: list[str] = field(default_factory=lambda: list(TASK_NAMES), metadata={"help": (
        "comma-separated tasks (default: all; a model without a twinlm recipe runs only the tasks named here and the "
        "--lm-eval/--mteb benchmarks)")})
    # True when `tasks` is the default list rather than named by the user: a model without a twinlm
    # recipe has no built-in world, so it then runs none of them (only --lm-eval / --mteb).
    default_tasks: bool = False
    seeds: int = field(default=3, metadata={"min": 1, "help": "fine-tuning seeds per learning rate (--suite: Ettin's one, 42)"})
    lrs: list[float] = field(default_factory=lambda: [1e-4, 3e-4, 1e-3], metadata={"help": (
        "learning-rate grid, the same for every model (--suite: Ettin's sweep, 1e-5,3e-5,5e-5,8e-5,1e-4,3e-4)")})
    steps: int = field(default=150, metadata={"min": 1, "help": "fine-tuning steps per run (--suite: Ettin's epochs per task)"})
    # Per-task overrides of `steps` and `lrs`: tasks differ in how long they take to leave the
    # trivial loss, and every model still gets the same budget per task.
    task_steps: dict[str, int] = field(default_factory=dict, metadata={
        "metavar": "retrieval=150,classification=60", "help": "per-task steps overriding --steps"})
    task_lrs: dict[str, list[float]] = field(default_factory=dict, metadata={
        "metavar": "retrieval=1e-3/3e-4,...", "help": "per-task learning-rate grids overriding --lrs"})
    batch_size: int = field(default=32, metadata={"min": 2,
        "help": "fine-tuning batch size (--suite: Ettin's sweep, 16,32,64,128)"})
    max_length: int = field(default=128, metadata={"min": 1, "help": "tokens per fine-tuning input (--suite: 512, Ettin's)"})
    max_items: int = field(default=400, metadata={"min": 1,
        "help": "cap on multiple-choice items and held-out texts (--suite: items scored per task; all if absent)"})
    # Encoder pooling for classification and retrieval. "auto" follows Ettin: sentence-transformers'
    # default (the model's own pooling for a sentence-transformers folder, else mean; mean is also
    # what ModernBERT's published classifier configs use); decoders always pool the last token.
    pooling: str = field(default="auto", metadata={"choices": POOLINGS, "help": (
        "encoder pooling for classification and retrieval; auto: sentence-transformers' default, i.e. a "
        "sentence-transformers model's own pooling, else mean; decoders: last token")})
    nli_data: str | None = field(default=None, metadata={
        "help": "jsonl/csv of premise, hypothesis, label (optional split column) for classification"})
    choice_data: str | None = field(default=None, metadata={
        "help": "jsonl of context, choices, answer (index) for multiple choice"})
    beir: str | None = field(default=None, metadata={
        "help": "BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/test.tsv, qrels/train.tsv)"})
    encoder_scoring: str = field(default="ettin", metadata={"choices": SCORINGS, "help": (
        "how an encoder scores a continuation, in the choice task and --lm-eval: ettin (Ettin's protocol): "
        "left to right, each token replaced by [MASK] followed by two more [MASK]s and [SEP], nothing after "
        "them visible, the first mask's prediction scores it (the end token is scored too); pll: classic "
        "pseudo-log-likelihood, one continuation token masked at a time with everything else visible")})

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASK_NAMES]
        if unknown or (not self.tasks and not self.default_tasks):
            raise UserError(f"unknown task(s) {', '.join(unknown) or '(none given)'}; valid tasks: {', '.join(TASK_NAMES)}")
        if self.seeds < 1 or self.steps < 1 or self.batch_size < 2 or self.max_items < 1:
            raise UserError("seeds, steps and max_items must be >= 1 and batch_size >= 2")
        if not self.lrs or any(lr <= 0 for lr in self.lrs):
            raise UserError(f"the learning-rate grid must hold positive numbers, got {self.lrs}")
        for what, table in (("task_steps", self.task_steps), ("task_lrs", self.task_lrs)):
            wrong = [t for t in table if t not in FINETUNED]
            if wrong:
                raise UserError(f"{what}: {', '.join(wrong)} is not a fine-tuned task; valid: {', '.join(FINETUNED)}")
        if any(int(s) < 1 for s in self.task_steps.values()):
            raise UserError(f"task_steps must be >= 1, got {self.task_steps}")
        if any(not lrs or any(lr <= 0 for lr in lrs) for lrs in self.task_lrs.values()):
            raise UserError(f"task_lrs must hold positive numbers, got {self.task_lrs}")
        if self.pooling not in POOLINGS:
            raise UserError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.encoder_scoring not in SCORINGS:
            raise UserError(f"encoder_scoring must be ettin or pll, got {self.encoder_scoring!r}")
        for name in ("nli_data", "choice_data", "beir"):
            value = getattr(self, name)
            if value is not None and not Path(value).exists():
                raise UserError(f"{name} {value} does not exist")

    def steps_for(self, task: str) -> int:
        return int(self.task_steps.get(task, self.steps))

    def lrs_for(self, task: str) -> list[float]:
        return list(self.task_lrs.get(task, self.lrs))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class HarnessRuns:
    """`twinlm eval`'s runs of the field's own harnesses on task lists of their own, beside the
    comparison tasks (their item limit and batch size are the suite's: SuiteSettings)."""

    lm_eval: list[str] | None = field(default=None, metadata={"metavar": "TASKS", "help": (
        "also run lm-evaluation-harness itself on TASKS (comma-separated): its task names (sciq,arc_easy,...; their "
        "data come from the hub) or local task YAML files or folders of them (offline; data_files are read relative "
        "to the current folder, as lm-eval does). Decoders are scored by the harness's own HFLM, so the numbers are "
        "the harness's; encoders by twinlm's twinlm-encoder model class (--encoder-scoring). Results: "
        "benchmarks.lm_eval in results.json, every item's scores in OUT/lm_eval/")})
    mteb: list[str] | None = field(default=None, metadata={"metavar": "TASKS", "help": (
        "also run the mteb package itself on retrieval TASKS (comma-separated): mteb task names (SciFact,NFCorpus,...; "
        "their data come from the hub) or BEIR-layout folders (corpus.jsonl, queries.jsonl, qrels/test.tsv; "
        "offline). A sentence-transformers model is scored as it is, any other model after fine-tuning into one on "
        "its world's retrieval data. Main score nDCG@10 (graded, pytrec_eval). Results: benchmarks.mteb in "
        "results.json")})


def flag_values(args: argparse.Namespace) -> dict:
    """The EvalConfig fields whose flags (made by `config.add_flags`: the documented fields) were
    given, as typed values."""
    return given(EvalConfig, args)


def eval_config(args: argparse.Namespace, defaults: dict | None = None) -> EvalConfig:
    """The EvalConfig a command's flags ask for (over the command's own `defaults`); naming
    --tasks turns off "every task the model has data for"."""
    values = {**(defaults or {}), **flag_values(args)}
    return EvalConfig(**values, default_tasks="tasks" not in values)


def encoder_pooling(pooling: str, path: str) -> str:
    """The encoder pooling `pooling` ("auto", "mean", "cls") resolves to for the model at `path`:
    "auto" is the sentence-transformers default, i.e. a sentence-transformers folder's own pooling
    (1_Pooling/config.json), else mean."""
    if pooling != "auto":
        return pooling
    try:
        modules = json.loads((Path(path) / "modules.json").read_text())
        folder = next(m["path"] for m in modules if m.get("type", "").endswith("Pooling"))
        config = json.loads((Path(path) / folder / "config.json").read_text())
    except (OSError, ValueError, StopIteration, KeyError, TypeError, AttributeError):
        return "mean"
    mode = config.get("pooling_mode")
    if mode is None:  # the older layout: one boolean per mode
        mode = [k[len("pooling_mode_"):] for k, v in config.items() if k.startswith("pooling_mode_") and v is True]
    modes = [mode] if isinstance(mode, str) else list(mode)
    legacy = {"cls_token": "cls", "mean_tokens": "mean", "max_tokens": "max", "weightedmean_tokens": "weightedmean"}
    return "+".join(legacy.get(m, m) for m in modes) or "mean"
