"""The suite's GLUE part: Ettin's sweep per task and model (glue_tasks.py), one fine-tuned head
per run, GLUE's own metrics, the best MNLI checkpoint kept per model for MRPC, STS-B and RTE."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

from twinlm.errors import UserError
from twinlm.evaluate.convergence import judge
from twinlm.evaluate.suite import glue_tasks as G
from twinlm.evaluate.suite import heads
from twinlm.evaluate.suite.base import SuiteRun, SuiteSettings
from twinlm.evaluate.suite.mirror import find, load_split
from twinlm.outputs import publish, staging, write_json

TASKS = G.TASKS
AVERAGED = tuple(G.TASKS)
AVERAGE_NAME = "GLUE average"


def sweep(task: str, settings: SuiteSettings) -> list[tuple[float, int, float | None, int]]:
    """(lr, batch size, epochs, seed) for every run: Ettin's grid, or the budget flags' values."""
    t = TASKS[task]
    epochs = (None,) if settings.steps else t.epochs
    return [(lr, bs, ep, seed) for lr in (settings.lrs or G.LRS) for bs in (settings.batch_sizes or G.BATCH_SIZES)
            for ep in epochs for seed in (settings.seeds or G.SEEDS)]


def start_of(task: str, settings: SuiteSettings) -> str:
    """"mnli" when the task starts from the best MNLI checkpoint (MNLI runs in this suite too)."""
    return "mnli" if task in G.FROM_MNLI and "mnli" in settings.spec.get("glue", []) else "pretrained"


def plan(task: str, model, settings: SuiteSettings) -> list[SuiteRun]:
    extra = (("batch_size", ""), ("steps", str(settings.steps or "")),
             ("max_length", str(settings.max_length or G.MAX_LENGTH)), ("max_items", str(settings.max_items or "")),
             ("pooling", settings.pooling if model.architecture == "encoder" else "lasttoken"),
             ("start", start_of(task, settings)))
    return [SuiteRun("glue", task, model.name, model.architecture, lr, seed, ep,
                     tuple((k, str(bs) if k == "batch_size" else v) for k, v in extra))
            for lr, bs, ep, seed in sweep(task, settings)]


def needs(task: str, settings: SuiteSettings):
    return [find(G.HUB_ID, task, split, settings.data_dir) for split in ("train", *TASKS[task].eval_splits)]


@functools.cache
def _rows(task: str, split: str, data_dir: Path | None) -> int | None:
    """A mirrored split's row count, read once: a sweep asks it for each of its many runs."""
    return find(G.HUB_ID, task, split, data_dir).rows


def units(run: SuiteRun, settings: SuiteSettings) -> int:
    """The run's work for the ETA and the cost estimate, in training steps: its optimiser steps
    plus its evaluations at Ettin's cadence, a row's forward pass counted as a third of a training
    step's forward and backward. They are not small: QQP at 15 epochs, batch 16, is 341k steps and
    171 evaluations of 40,430 rows, about 144k step-equivalents more."""
    t, extra = TASKS[run.task], dict(run.extra)
    batch = int(extra["batch_size"])
    if extra.get("steps"):
        steps = int(extra["steps"])
    else:
        rows = _rows(run.task, "train", settings.data_dir) or t.rows[0]
        steps = int(math.ceil(run.epochs * math.ceil(rows / batch)))
    eval_rows = 0
    for split, hub_rows in zip(t.eval_splits, t.rows[1:]):
        n = _rows(run.task, split, settings.data_dir) or hub_rows
        eval_rows += min(n, settings.max_items) if settings.max_items else n
    evaluations = (steps - 1) // t.eval_every + 1  # at the cadence before the last step, then the final one
    return steps + math.ceil(evaluations * eval_rows / (3 * batch))


def execute(run: SuiteRun, model, settings: SuiteSettings) -> dict:
    t, extra = TASKS[run.task], dict(run.extra)
    train = load_split(G.HUB_ID, run.task, "train", settings.data_dir)
    evals = {s: load_split(G.HUB_ID, run.task, s, settings.data_dir) for s in t.eval_splits}
    if settings.max_items:
        evals = {s: d.select(range(min(settings.max_items, len(d)))) for s, d in evals.items()}
    check_columns(train, t, settings)
    start = best_mnli(settings.out, model.name) if extra["start"] == "mnli" else None
    if extra["start"] == "mnli" and start is None:
        raise UserError(f"glue:{run.task} starts from the best MNLI checkpoint of {model.name}, but none was kept "
                        f"under {settings.out}; run the MNLI part first (or resume the suite that ran it)")
    net, tok = heads.load_head(model.path, model.architecture, t.labels, settings.pooling, start and str(start),
                               seed=run.seed)
    length = int(extra["max_length"])
    history: list[tuple[int, float]] = []

    def evaluate(step: int) -> dict:
        """The task's metrics on the evaluation splits now; (step, select) kept for the record."""
        preds = {s: (list(d["label"]), heads.predict(net, tok, d, t.columns, length)) for s, d in evals.items()}
        found = G.metric_values(t, preds)
        history.append((step, G.scores(found, t.select, t.averaged)[0]))
        return found

    # Ettin's protocol (glue_tasks.py): evaluations at its cadence, the whole budget trained (its
    # configured early stopper never fired), the score taken from the last evaluation.
    losses, steps = heads.train(net, tok, train, t.columns, lr=run.lr, batch_size=int(extra["batch_size"]),
                                seed=run.seed, epochs=run.epochs, steps=int(extra["steps"] or 0) or None,
                                max_length=length, weight_decay=G.trainer_weight_decay(run.lr), warmup=G.WARMUP, adam=G.ADAM,
                                eval_every=t.eval_every, on_eval=evaluate)
    metrics = evaluate(steps)
    select, score = G.scores(metrics, t.select, t.averaged)
    verdict = judge(losses, heads.trivial_loss(list(train["label"]), t.labels))
    record = {"score": score, "select": select, "metrics": metrics, "steps": steps,
              "train_loss_first": losses[0] if losses else None, **verdict,
              "start": str(start) if start else "pretrained", "eval_rows": {s: len(d) for s, d in evals.items()},
              **G.protocol(t.eval_every, history)}
    if run.task == "mnli" and settings.out is not None and any(t in settings.spec.get("glue", []) for t in G.FROM_MNLI):
        keep_if_best(settings.out, model.name, run.key, select, net, tok)
    return record


def check_columns(data, task: G.GlueTask, settings: SuiteSettings) -> None:
    missing = [c for c in (*task.columns, "label") if c not in data.column_names]
    if missing:
        raise UserError(f"{G.HUB_ID} ({task.name}) has no column(s) {', '.join(missing)} (found: "
                        f"{', '.join(data.column_names)}); a mirror keeps the hub's own columns")


def _mnli_folder(out: Path, model_name: str) -> Path:
    return Path(out) / "glue" / "mnli-best" / model_name.replace("/", "_")


def best_mnli(out: Path | None, model_name: str) -> Path | None:
    folder = _mnli_folder(out, model_name) if out is not None else None
    return folder if folder is not None and (folder / "best.json").is_file() else None


def keep_if_best(out: Path, model_name: str, key: str, select: float, net, tok) -> None:
    """Keep the model of this MNLI run when it beats the one kept so far (one copy per model).
    Written beside and renamed into place, so a kill never leaves half a checkpoint."""
    folder = _mnli_folder(out, model_name)
    meta = folder / "best.json"
    if meta.is_file() and json.loads(meta.read_text())["select"] >= select:
        return
    tmp = staging(folder)
    net.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    write_json(tmp / "best.json", {"run": key, "select": select})
    publish(tmp, folder)
