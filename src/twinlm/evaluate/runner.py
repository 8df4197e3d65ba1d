"""Run the comparison tasks on models under one fine-tuning budget, and collect the results.

Every fine-tuned task runs each learning rate of the grid with every seed, for every model
alike; the learning rate with the best mean primary metric is reported (the report says so).
Zero-shot tasks are deterministic and run once."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

from twinlm.evaluate.config import FINETUNED, EvalConfig
from twinlm.evaluate.metrics import summarise
from twinlm.evaluate.models import ModelRef, load_scoring_model, world_for

# Metrics where a smaller number is better (everything else: larger is better).
LOWER_IS_BETTER = {"perplexity", "loss", "masked_loss"}
# Tasks whose primary metric differs between the twins' objectives: no winner is declared.
NOT_COMPARABLE = {"intrinsic"}


def build_tasks(cfg: EvalConfig, world) -> dict:
    """Task objects for the config, from the world unless a data file replaces its data."""
    from twinlm.data.world import (
        bias_examples,
        multiple_choice,
        nli_examples,
        retrieval_pairs,
        retrieval_task,
    )
    from twinlm.evaluate.bias import BiasTask
    from twinlm.evaluate.choice import ChoiceTask, read_choice_file
    from twinlm.evaluate.classification import ClassificationTask, read_nli_file, split_rows
    from twinlm.evaluate.intrinsic import IntrinsicTask
    from twinlm.evaluate.retrieval import RetrievalTask, read_beir

    train_people, heldout_people = world.split()
    tasks = {}
    for name in cfg.tasks:
        if name == "intrinsic":
            tasks[name] = IntrinsicTask(world.documents(heldout_people)[: cfg.max_items], cfg.max_length)
        elif name == "classification":
            if cfg.nli_data:
                train, test = split_rows(read_nli_file(cfg.nli_data))
            else:  # split by person: no test premise is about anyone seen in fine-tuning
                train, test = nli_examples(world, train_people), nli_examples(world, heldout_people, seed=1)
            tasks[name] = ClassificationTask(train, test, cfg.max_length, cfg.pooling)
        elif name == "retrieval":
            if cfg.beir:
                beir = read_beir(cfg.beir)
                tasks[name] = RetrievalTask(beir, beir["train_pairs"], cfg.max_length, cfg.pooling)
            else:
                # Queries about held-out people, searched among every person's passage.
                collection = retrieval_task(world, world.people)
                keep = {f"q-{p.id}" for p in heldout_people}
                collection["queries"] = {q: t for q, t in collection["queries"].items() if q in keep}
                collection["qrels"] = {q: r for q, r in collection["qrels"].items() if q in keep}
                tasks[name] = RetrievalTask(collection, retrieval_pairs(world, train_people, per_person=2),
                                            cfg.max_length, cfg.pooling)
        elif name == "choice":
            # Train people: the items test facts the twins could have memorised in pretraining.
            items = read_choice_file(cfg.choice_data) if cfg.choice_data else multiple_choice(world, train_people)
            tasks[name] = ChoiceTask(items[: cfg.max_items], encoder_scoring=cfg.encoder_scoring)
        elif name == "bias":
            tasks[name] = BiasTask(bias_examples(world))
    return tasks


def evaluate_model(ref: ModelRef, cfg: EvalConfig, log=print, tasks: dict | None = None) -> dict:
    """Results of one model: {"name", "architecture", "path", "run", "tasks": {task: {...}}}."""
    tasks = tasks if tasks is not None else build_tasks(cfg, world_for(ref))
    out = {**asdict(ref), "tasks": {}}
    scorer = None
    for name, task in tasks.items():
        started = time.perf_counter()
        primary = task.primary(ref.architecture)
        if name in FINETUNED:
            grid: dict[str, list[dict]] = {}
            for lr in cfg.lrs:
                for seed in range(cfg.seeds):
                    metrics = task.run(ref.path, ref.architecture, seed, lr, cfg.steps, cfg.batch_size)
                    grid.setdefault(repr(lr), []).append(metrics)
                    log(f"  [{ref.name}] {name} lr {lr:g} seed {seed}: {primary} {metrics[primary]:.4f} "
                        f"(train loss {metrics['train_loss_first']:.3f} -> {metrics['train_loss_last']:.3f})")
            means = {lr: sum(m[primary] for m in runs) / len(runs) for lr, runs in grid.items()}
            best = max(means, key=means.get)
            runs = grid[best]
            result = {"primary": primary, "finetuned": True, "best_lr": float(best),
                      "grid": {lr: round(v, 6) for lr, v in means.items()},
                      "metrics": {k: summarise([m[k] for m in runs]) for k in runs[0]}}
        else:
            if scorer is None:
                scorer = load_scoring_model(ref)
            metrics = task.evaluate(scorer[0], scorer[1], ref.architecture, prediction_offset=ref.prediction_offset)
            result = {"primary": primary, "finetuned": False,
                      "metrics": {k: summarise([v]) for k, v in metrics.items()}}
            log(f"  [{ref.name}] {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        result["seconds"] = round(time.perf_counter() - started, 1)
        out["tasks"][name] = result
    return out


def format_table(results: dict) -> str:
    """Plain-text table: one row per task metric, one column per model, mean +- std."""
    models = list(results["models"].values())
    rows = []
    for task in sorted({t for m in models for t in m["tasks"]}):
        metrics = []
        for m in models:
            for k in m["tasks"].get(task, {}).get("metrics", {}):
                if k not in metrics and not k.startswith("train_"):
                    metrics.append(k)
        for metric in metrics:
            cells = []
            for m in models:
                s = m["tasks"].get(task, {}).get("metrics", {}).get(metric)
                cells.append("-" if s is None else f"{s['mean']:.3f}" + (f" ± {s['std']:.3f}" if len(s["seeds"]) > 1 else ""))
            rows.append([f"{task}/{metric}"] + cells)
    header = ["metric"] + [f"{m['name']} ({m['architecture']})" for m in models]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def write_json(path: Path, data: dict) -> None:
    """Written to a temporary name and renamed, so an interrupted write never leaves half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=True))
    os.replace(tmp, path)
