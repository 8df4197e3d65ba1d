"""Run the comparison tasks on models under one fine-tuning budget, and collect the results.

Every fine-tuned task runs each learning rate of the grid with every seed, for every model
alike; the learning rate with the best mean primary metric is reported (the report says so).
Zero-shot tasks are deterministic and run once."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

from twinlm.convert import CONVERSION_FILE, LLM2VEC_FILE
from twinlm.evaluate.bias import BiasTask
from twinlm.evaluate.choice import ChoiceTask, read_choice_file
from twinlm.evaluate.classification import ClassificationTask, read_nli_file, split_rows
from twinlm.evaluate.config import FINETUNED, EvalConfig, encoder_pooling
from twinlm.evaluate.convergence import RULE, judge
from twinlm.evaluate.intrinsic import IntrinsicTask
from twinlm.evaluate.metrics import summarise
from twinlm.evaluate.models import ModelRef, load_scoring_model, world_for
from twinlm.evaluate.retrieval import RetrievalTask, read_beir
from twinlm.world.generator import (
    bias_examples,
    multiple_choice,
    nli_examples,
    retrieval_pairs,
    retrieval_task,
)

# Metrics where a smaller number is better (everything else: larger is better).
LOWER_IS_BETTER = {"perplexity", "loss", "masked_loss"}
# Tasks whose primary metric differs between the twins' objectives: no winner is declared.
NOT_COMPARABLE = {"intrinsic"}


def build_tasks(cfg: EvalConfig, world) -> dict:
    """Task objects for the config, from the world unless a data file replaces its data."""
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


def origin_of(path: str) -> str:
    """"cross" for a model made by `twinlm convert` from the other twin (conversion.json),
    "llm2vec" for a decoder made an embedding model (llm2vec.json), else "native": Ettin's finding
    that cross-objective models trail native ones needs them apart."""
    for name, origin in ((CONVERSION_FILE, "cross"), (LLM2VEC_FILE, "llm2vec")):
        try:
            meta = json.loads((Path(path) / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("kind") in ("cross-objective", "llm2vec"):
            return origin
    return "native"


def pick_lr(grid: dict[str, list[dict]], primary: str) -> str:
    """The learning rate with the best mean primary metric among those whose every seed
    converged; among all of them when none did (the result is then marked not converged)."""
    means = {lr: sum(m[primary] for m in runs) / len(runs) for lr, runs in grid.items()}
    trained = [lr for lr, runs in grid.items() if all(m["converged"] for m in runs)]
    return max(trained or means, key=means.get)


def evaluate_model(ref: ModelRef, cfg: EvalConfig, log=print, tasks: dict | None = None, progress=None) -> dict:
    """Results of one model: {"name", "architecture", "path", "run", "origin", "tasks": {task: {...}}}.
    Fine-tuned tasks record `converged` (convergence.py) for every run and for the reported
    learning rate; zero-shot tasks record how many items they scored (`n`)."""
    tasks = tasks if tasks is not None else build_tasks(cfg, world_for(ref))
    progress = progress or Progress(log)
    out = {**asdict(ref), "origin": origin_of(ref.path), "tasks": {}}
    scorer = None
    for name, task in tasks.items():
        started = time.perf_counter()
        primary = task.primary(ref.architecture)
        if name in FINETUNED:
            steps, lrs = cfg.steps_for(name), cfg.lrs_for(name)
            grid: dict[str, list[dict]] = {}
            for lr in lrs:
                for seed in range(cfg.seeds):
                    run_started = time.perf_counter()
                    metrics = task.run(ref.path, ref.architecture, seed, lr, steps, cfg.batch_size)
                    verdict = judge(task.last_loss, task.trivial_loss(cfg.batch_size))
                    metrics.update(verdict)
                    grid.setdefault(repr(lr), []).append(metrics)
                    state = "converged" if verdict["converged"] else "NOT converged"
                    progress.done(name, steps, time.perf_counter() - run_started,
                                  f"[{ref.name}] {name} lr {lr:g} seed {seed}: {primary} {metrics[primary]:.4f}, "
                                  f"train loss {metrics['train_loss_first']:.3f} -> {verdict['final_loss']:.3f} "
                                  f"(trivial {verdict['trivial_loss']:.3f}: {state})")
            best = pick_lr(grid, primary)
            runs = grid[best]
            flags = ("converged", "final_loss", "trivial_loss")
            pooling = "lasttoken" if ref.architecture == "decoder" else encoder_pooling(cfg.pooling, ref.path)
            result = {"primary": primary, "finetuned": True, "best_lr": float(best),
                      "converged": all(m["converged"] for m in runs),
                      "grid": {lr: round(sum(m[primary] for m in r) / len(r), 6) for lr, r in grid.items()},
                      "metrics": {k: summarise([m[k] for m in runs]) for k in runs[0] if k not in flags},
                      "runs": [{"lr": float(lr), "seed": seed, **{k: m[k] for k in flags}}
                               for lr, r in grid.items() for seed, m in enumerate(r)],
                      "convergence_rule": RULE, "pooling": pooling,
                      "budget": {"steps": steps, "batch_size": cfg.batch_size, "lrs": lrs, "seeds": cfg.seeds}}
        else:
            if scorer is None:
                scorer = load_scoring_model(ref)
            metrics = task.evaluate(scorer[0], scorer[1], ref.architecture, prediction_offset=ref.prediction_offset)
            result = {"primary": primary, "finetuned": False, "n": task_size(task),
                      "metrics": {k: summarise([v]) for k, v in metrics.items()}}
            progress.done(name, 1, time.perf_counter() - started,
                          f"[{ref.name}] {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        result["seconds"] = round(time.perf_counter() - started, 1)
        out["tasks"][name] = result
    return out


def task_size(task) -> int | None:
    """How many items a zero-shot task scored (for the standard error of its proportions)."""
    for attr in ("items", "examples", "texts"):
        if isinstance(getattr(task, attr, None), list):
            return len(getattr(task, attr))
    return None


class Progress:
    """One line per finished run with the evaluation's ETA, in place of the libraries' bars.

    `plan` lists every run to come as (task, steps; 1 for a zero-shot task). A run left is priced
    at what the same task's runs took so far, else at the mean run of the same kind (fine-tuned or
    zero-shot) seen so far, scaled by its steps."""

    def __init__(self, log=print, plan: list[tuple[str, int]] | None = None):
        self.log, self.left = log, list(plan or [])
        self.total = len(self.left)
        self.seconds: dict[str, list[tuple[int, float]]] = {}
        self.count = 0

    def done(self, task: str, units: int, seconds: float, message: str) -> None:
        self.count += 1
        self.seconds.setdefault(task, []).append((units, seconds))
        if (task, units) in self.left:
            self.left.remove((task, units))
        where = f"{self.count}/{self.total}" if self.total else f"{self.count}"
        self.log(f"  {message}  [{seconds:.0f} s; run {where}{self.eta()}]")

    def eta(self) -> str:
        if not self.left:
            return ", done" if self.total else ""
        left, guessed, unknown = 0.0, False, False
        for task, units in self.left:
            seen = self.seconds.get(task)
            if not seen:  # extrapolated from another task: marked "~"
                seen = [r for t, runs in self.seconds.items() if (t in FINETUNED) == (task in FINETUNED) for r in runs]
                guessed = True
            if seen:
                left += units * sum(s for _, s in seen) / sum(u for u, _ in seen)
            unknown = unknown or not seen
        return f", ETA {'> ' if unknown else '~' if guessed else ''}{format_seconds(left)}"


def format_seconds(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


# Keys of a benchmark result that count items or flag a run rather than score it.
BENCHMARK_INFO = ("n", "items", "converged", "final_loss", "trivial_loss", "seconds")


def benchmarks_of(model: dict) -> dict[tuple[str, str], dict]:
    """{(group, task): {"metrics": {metric: summary}, "n", "converged"}} from a model's
    `benchmarks`: nested as {"lm_eval": {task: {"acc": .., "acc_norm": .., "n": ..}}, "mteb": {...}}
    (metric values plain numbers or summaries), or the older flat {"lm-eval/task": {...}}."""
    out: dict[tuple[str, str], dict] = {}
    for key, value in (model.get("benchmarks") or {}).items():
        if not isinstance(value, dict):
            continue
        if "/" in key:
            group, task = key.split("/", 1)
            entries = {task: value}
        else:
            group, entries = key, value
        for task, scores in entries.items():
            if not isinstance(scores, dict):
                continue
            metrics, stderr = {}, {}
            for metric, v in scores.items():
                if metric in BENCHMARK_INFO or isinstance(v, bool) or metric.endswith("_stderr"):
                    continue
                if isinstance(v, (int, float)):
                    metrics[metric] = summarise([float(v)])
                elif isinstance(v, dict) and "mean" in v:
                    metrics[metric] = v
                err = scores.get(f"{metric}_stderr")  # lm-evaluation-harness reports one per metric
                if isinstance(err, (int, float)) and not isinstance(err, bool) and math.isfinite(err):
                    stderr[metric] = float(err)
            n = scores.get("n", scores.get("items"))
            out[(group.replace("-", "_"), task)] = {"metrics": metrics, "stderr": stderr,
                                                    "n": n if isinstance(n, int) else None,
                                                    "converged": scores.get("converged")}
    return out


def format_table(results: dict) -> str:
    """Plain-text table: one row per task metric (then per benchmark metric), one column per
    model, mean +- std; a fine-tuned score whose run did not converge is marked with *."""
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
                t = m["tasks"].get(task, {})
                cells.append(_cell(t.get("metrics", {}).get(metric), t.get("converged")))
            rows.append([f"{task}/{metric}"] + cells)
    bench = [benchmarks_of(m) for m in models]
    for key in sorted({k for b in bench for k in b}):
        metrics = list(dict.fromkeys(metric for b in bench if key in b for metric in b[key]["metrics"]))
        for metric in metrics:
            cells = [_cell(b.get(key, {}).get("metrics", {}).get(metric), b.get(key, {}).get("converged")) for b in bench]
            rows.append([f"{key[0]}/{key[1]}/{metric}"] + cells)
    header = ["metric"] + [f"{m['name']} ({m['architecture']})" for m in models]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    if any("*" in c for r in rows for c in r[1:]):
        lines.append("* fine-tuning did not converge (final loss not clearly below the trivial predictor's): "
                     "no winner is declared from it")
    return "\n".join(lines)


def _cell(s: dict | None, converged: bool | None) -> str:
    if s is None:
        return "-"
    text = f"{s['mean']:.3f}" + (f" ± {s['std']:.3f}" if len(s.get("seeds", [])) > 1 else "")
    return text + ("*" if converged is False else "")
