"""One evaluation session shared by `eval`, `compare` and `demo`: resolve inputs, reuse earlier
results, evaluate what is missing, and write results.json (+ the report) into a fresh folder."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from twinlm.convert import LLM2VEC_FILE
from twinlm.errors import UserError
from twinlm.evaluate.config import FINETUNED, EvalConfig
from twinlm.evaluate.models import ModelRef, resolve, unscorable_tasks, world_for
from twinlm.evaluate.runner import Progress, build_tasks, evaluate_model, format_table


def load_results(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not a results.json ({err.msg})") from None
    if not isinstance(data, dict) or "models" not in data:
        raise UserError(f"{path} is not a twinlm results.json (no 'models' key)")
    return data


def scorable_tasks(ref: ModelRef, tasks: list[str]) -> list[str]:
    """`tasks` less those the model cannot be scored on (an embedding model has no LM head)."""
    path = Path(ref.path)
    skip = unscorable_tasks(path, list(tasks)) if (path / "config.json").is_file() else {}
    return [t for t in tasks if t not in skip]


def earlier_results(spec: str) -> Path | None:
    """The results.json an input names (the file, or one inside a folder that is not a model), if any."""
    path = Path(spec)
    results_file = path if path.is_file() and path.suffix == ".json" else path / "results.json"
    return results_file if results_file.is_file() and not (path / "config.json").exists() else None


def has_recipe(ref: ModelRef) -> bool:
    """Whether the model was trained by twinlm on a built-in world (its twinlm.yaml, or for an
    LLM2Vec folder that of its source decoder): only then do the world's tasks mean something."""
    path = Path(ref.path)
    if (path / "twinlm.yaml").is_file():
        return True
    try:
        source = json.loads((path / LLM2VEC_FILE).read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(source, str) and (Path(source) / "twinlm.yaml").is_file()


def tasks_for(ref: ModelRef, cfg: EvalConfig, benchmarks: bool, log=print) -> list[str]:
    """The tasks `ref` runs: those it can be scored on; for a model without a twinlm recipe, only
    tasks the user named (the default set would score it on a synthetic world it never saw)."""
    if cfg.default_tasks and not has_recipe(ref):
        if not benchmarks:
            raise UserError(f"{ref.path} has no twinlm recipe (twinlm.yaml), so the built-in world's tasks say "
                            "nothing about it; name benchmarks with --lm-eval / --mteb, or tasks with --tasks "
                            "(with your data: --nli-data, --choice-data, --beir)")
        log(f"note: {ref.name} has no twinlm recipe: running only the benchmarks given by flags "
            "(name world tasks with --tasks to run them too)")
        return []
    return scorable_tasks(ref, cfg.tasks)


def gather(inputs: list[str], cfg: EvalConfig, benchmarks: bool = False,
           log=print) -> tuple[dict, list[tuple[ModelRef, list[str]]], list[str]]:
    """(earlier results by model name, models still to evaluate with their missing tasks, missing
    twins). Everything is resolved (and every error raised) before any evaluation starts.
    `benchmarks`: --lm-eval / --mteb tasks will run too, so a model may have no task of its own."""
    done: dict = {}
    todo: list[tuple[ModelRef, list[str]]] = []
    missing: list[str] = []
    for spec in inputs:
        results_file = earlier_results(spec)
        if results_file is not None:
            earlier = load_results(results_file)
            done.update(earlier["models"])
            missing += earlier.get("missing", [])
            continue
        refs, lacking = resolve(spec)
        missing += lacking
        todo += [(ref, tasks_for(ref, cfg, benchmarks, log)) for ref in refs]
    # Reuse: a model evaluated earlier only needs the tasks it has not got yet; a new model stays
    # even with no task (it gets its benchmarks).
    todo = [(ref, [t for t in tasks if t not in done.get(ref.name, {}).get("tasks", {})]) for ref, tasks in todo]
    return done, [(r, t) for r, t in todo if t or r.name not in done], missing


def fine_tuning_plan(todo: list[tuple[ModelRef, list[str]]], cfg: EvalConfig) -> list[tuple[str, int]]:
    """Every run to come, as (task, units), for the progress line's ETA (runner.Progress)."""
    plan = []
    for _, tasks in todo:
        for task in tasks:
            runs = len(cfg.lrs_for(task)) * cfg.seeds if task in FINETUNED else 1
            plan += [(task, cfg.steps_for(task) if task in FINETUNED else 1)] * runs
    return plan


def run_session(inputs: list[str], cfg: EvalConfig, log=print, benchmarks: bool = False) -> dict:
    done, todo, missing = gather(inputs, cfg, benchmarks, log=lambda _: None)  # notes were given by the first gather
    if not done and not todo:
        raise UserError("nothing to evaluate: no model or results.json found in " + ", ".join(inputs))
    progress = Progress(log, fine_tuning_plan(todo, cfg))
    cache: dict = {}
    for ref, tasks in todo:
        shifted = f", predictions read at i{ref.prediction_offset:+d}" if ref.prediction_offset else ""
        built: dict = {}
        if tasks:
            log(f"evaluating {ref.name} ({ref.architecture}{shifted}) on {', '.join(tasks)}")
            world = world_for(ref)
            key = (repr(world.config), tuple(tasks))
            if key not in cache:  # twins of one run share the world, so build its task data once
                cache[key] = build_tasks(replace(cfg, tasks=tasks), world)
            built = cache[key]
        result = evaluate_model(ref, cfg, log, built, progress)
        if ref.name in done:
            done[ref.name]["tasks"].update(result["tasks"])
        else:
            done[ref.name] = result
    results = {"settings": cfg.to_dict(), "models": done, "missing": sorted(set(missing))}
    results["table"] = format_table(results)
    return results
