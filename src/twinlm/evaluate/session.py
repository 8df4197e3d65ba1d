"""One evaluation session shared by `eval`, `compare` and `demo`: resolve inputs, reuse earlier
results, evaluate what is missing, and write results.json (+ the report) into a fresh folder."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from twinlm.errors import UserError
from twinlm.evaluate.config import EvalConfig
from twinlm.evaluate.models import ModelRef, resolve, unscorable_tasks


def prepare_out(out: str | Path, overwrite: bool) -> tuple[Path, Path]:
    """(final folder, temporary folder to write into). Refuses an existing folder without
    --overwrite, before any work; the old folder is only replaced once the new one is complete."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; pass --overwrite to replace it, or choose another --out")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return out, tmp


def finish_out(out: Path, tmp: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


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


def gather(inputs: list[str], cfg: EvalConfig) -> tuple[dict, list[tuple[ModelRef, list[str]]], list[str]]:
    """(earlier results by model name, models still to evaluate with their missing tasks, missing
    twins). Everything is resolved (and every error raised) before any evaluation starts."""
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
        todo += [(ref, scorable_tasks(ref, cfg.tasks)) for ref in refs]
    # Reuse: a model evaluated earlier only needs the tasks it has not got yet.
    todo = [(ref, [t for t in tasks if t not in done.get(ref.name, {}).get("tasks", {})]) for ref, tasks in todo]
    return done, [(r, t) for r, t in todo if t], missing


def run_session(inputs: list[str], cfg: EvalConfig, log=print) -> dict:
    from twinlm.evaluate.models import world_for
    from twinlm.evaluate.runner import build_tasks, evaluate_model, format_table

    done, todo, missing = gather(inputs, cfg)
    if not done and not todo:
        raise UserError("nothing to evaluate: no model or results.json found in " + ", ".join(inputs))
    cache: dict = {}
    for ref, tasks in todo:
        shifted = f", predictions read at i{ref.prediction_offset:+d}" if ref.prediction_offset else ""
        log(f"evaluating {ref.name} ({ref.architecture}{shifted}) on {', '.join(tasks)}")
        world = world_for(ref)
        key = (repr(world.config), tuple(tasks))
        if key not in cache:  # twins of one run share the world, so build its task data once
            cache[key] = build_tasks(replace(cfg, tasks=tasks), world)
        result = evaluate_model(ref, cfg, log, cache[key])
        if ref.name in done:
            done[ref.name]["tasks"].update(result["tasks"])
        else:
            done[ref.name] = result
    results = {"settings": cfg.to_dict(), "models": done, "missing": sorted(set(missing))}
    results["table"] = format_table(results)
    return results
