"""What every part of the suite (glue, retrieval, generative, winogender) agrees on.

A part module exposes `TASKS` (task name -> what it needs) and three functions:
* `plan(task, model, settings) -> list[SuiteRun]`: the runs a task costs for one model (a
  fine-tuned task: one per learning rate x seed; a zero-shot task: one);
* `needs(task, settings) -> list[DataNeed]`: the datasets the task reads, for `--dry-run` and for
  the missing-data check made before any work;
* `execute(run, model, settings) -> dict`: does one run and returns its record (`score` in the
  paper's scale, 0-100, plus whatever else the run measured), written by the suite as it ends.
  `model` is an `evaluate.models.ModelRef` (name, architecture, path); `settings` a SuiteSettings.
Optional:
* `units(run, settings) -> int`: the run's work in some unit (training steps, items scored), so
  the progress line's ETA and --dry-run's cost can weigh runs against each other (default 1);
* `AVERAGED`: the tasks whose mean is the part's headline number (default: every task of TASKS;
  the average is only reported when every one of them has a score);
* `select(records) -> dict`: picks the task's reported result from its finished runs (default:
  runs that differ only by seed are averaged, the best mean `select` (else `score`) wins).
A record may carry `select` (the number the sweep is chosen on, when it is not `score`) and
`metrics` ({name: value on the 0-100 scale}).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

PARTS = ("glue", "retrieval", "generative", "winogender")
# Raised whenever a part's protocol changes what a finished run's score means (2: GLUE's decoupled
# weight decay and seeded heads), so that --resume never mixes runs of two protocols.
PROTOCOL = 2


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
class SuiteSettings:
    """What every part reads. None means "the part's own default" (for GLUE: Ettin's sweep).
    Fields with help are the suite's own flags (`twinlm.config.add_flags`); the budget fields
    (lrs, seeds, steps, batch_sizes, max_length, max_items, pooling, encoder_scoring) come from
    EvalConfig's flags, and only those given replace Ettin's sweep."""

    suite: str | None = field(default=None, metadata={"metavar": "SPEC", "help": (
        "run the field's benchmarks instead of the world's tasks: ettin (all four parts: glue, retrieval, generative, "
        "winogender), a comma list of parts, or single tasks as part:task (glue:sst2,generative:piqa). GLUE follows "
        "Ettin's sweep (lr 1e-5..3e-4 x batch 16..128 x epochs per task, seed 42, best run on validation; "
        "MRPC/STS-B/RTE start from the best MNLI checkpoint); --lrs/--seeds/--steps/--batch-size/--max-length replace "
        "parts of it for a smaller run. Writes OUT/runs/<run>.json as each run ends, OUT/results.json and "
        "OUT/report.md/.html (the paper's encoder and decoder tables)")})
    data_dir: Path | None = field(default=None, metadata={"metavar": "DIR", "help": (
        "offline copies of the datasets in the hub's layout: DIR/<hub id>[/<config>]/<split>-*.parquet (jsonl, csv "
        "too), e.g. DIR/nyu-mll/glue/sst2/train-00000-of-00001.parquet (default: the hub)")})
    skip_missing: bool = field(default=False, metadata={"help": (
        "leave out tasks whose data is missing (listed in the report) instead of stopping before any work")})
    dry_run: bool = field(default=False, metadata={"help": (
        "list every run (task, model, lr, seed, epochs), the data each reads and where it is found, and the cost; "
        "run nothing")})
    resume: bool = field(default=False, metadata={"help": (
        "continue the suite in an existing --out: finished runs are kept, missing or cut-off ones run; refused when "
        "a setting changed")})
    classification_data: tuple[str, ...] = field(default=(), metadata={"repeat": True, "metavar": "FILE_OR_HUB_ID", "help": (
        "a dataset with text (optionally text_pair) and label columns, run as suite task classification:<name> like "
        "a GLUE task (a float label: regression); repeatable; without --suite, only these run")})
    retrieval_train: str | None = field(default=None, metadata={"metavar": "SOURCE", "help": (
        "retrieval: train on SOURCE (a hub id, a pairs/triplets file, or a BEIR folder with qrels/train.tsv) instead "
        "of Ettin's MS MARCO triplets")})
    mteb_tasks: tuple[str, ...] | None = field(default=None, metadata={"metavar": "NAMES", "help": (
        "retrieval: score on these mteb tasks or BEIR folders (comma-separated) instead of MTEB(eng, v2)'s retrieval "
        "tasks")})
    max_train: int | None = field(default=None, metadata={"min": 1, "help": (
        "retrieval: train on at most N rows (default: Ettin's 1.25M)")})
    lm_eval_limit: int | None = field(default=None, metadata={"min": 1, "help": (
        "score only the first N items of each generative task (the harness's --limit; also --lm-eval's tasks)")})
    lm_eval_batch_size: int = field(default=8, metadata={"min": 1, "help": (
        "decoders: the harness's --batch_size; encoders: equal-length rows per forward pass (no padding, so it never "
        "changes a score)")})
    out: Path | None = None  # the suite's output folder; a part may keep files under out/<part>/
    max_items: int | None = None  # cap on scored items (evaluation rows) per task
    lrs: tuple[float, ...] | None = None
    seeds: tuple[int, ...] | None = None
    steps: int | None = None  # fine-tuning steps per run, replacing the sweep's epochs
    batch_sizes: tuple[int, ...] | None = None
    max_length: int | None = None
    pooling: str = "auto"  # encoders; decoders pool the last token
    encoder_scoring: str = "ettin"  # how encoders score continuations (evaluate/scoring.py)
    spec: dict = field(default_factory=dict)  # {part: [tasks]} this suite runs (GLUE's second round needs MNLI's)

    def fingerprint(self) -> dict:
        """The settings a finished run's result depends on (a --resume must not change them)."""
        keep = ("max_items", "lm_eval_limit", "lrs", "seeds", "steps", "batch_sizes", "max_length", "pooling",
                "encoder_scoring", "retrieval_train", "mteb_tasks", "max_train")
        kept = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if k in keep}
        return {"protocol": PROTOCOL, **kept}

    @property
    def batch_size(self) -> int | None:
        """The one batch size of a part that sweeps none (retrieval): --batch-size, else None."""
        return self.batch_sizes[0] if self.batch_sizes else None


@dataclass
class DataNeed:
    """A dataset a task reads: its hub id, config and split, and where a local mirror has it."""

    hub_id: str
    config: str | None
    split: str
    local: list[Path] = field(default_factory=list)  # the mirror's files, empty when read from the hub
    rows: int | None = None  # counted in the mirror's files, when they are there
