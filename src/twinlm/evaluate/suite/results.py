"""results.json of a suite: every run's record, every task's reported score (the sweep's best
configuration on the validation split, as Ettin selected it; seeds averaged) and each part's
headline average (GLUE average, generative average, retrieval average)."""

from __future__ import annotations

import statistics
from pathlib import Path

from twinlm.evaluate.runner import origin_of
from twinlm.evaluate.suite.base import SuiteSettings
from twinlm.evaluate.suite.planner import SuitePlan
from twinlm.evaluate.suite.registry import load_part, tasks_of
from twinlm.outputs import write_json


def default_select(records: list[dict]) -> dict:
    """Runs that differ only by seed form one configuration; the configuration with the best mean
    `select` (else `score`) is the task's result: its mean score, std over seeds, mean metrics."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        config = {k: v for k, v in r["run"].items() if k != "seed"}
        groups.setdefault(repr(sorted(config.items(), key=str)), []).append(r)

    def chosen_on(rs):
        return statistics.fmean(r.get("select", r["score"]) for r in rs)

    best = max(groups.values(), key=chosen_on)
    scores = [r["score"] for r in best]
    metrics = {}
    for name in best[0].get("metrics", {}):
        metrics[name] = statistics.fmean(r["metrics"][name] for r in best if name in r.get("metrics", {}))
    # A zero-shot part's other numbers (WinoGender's shares and their standard errors), kept too.
    flat = [k for k, v in best[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k not in ("score", "select", "seconds")]
    values = {k: statistics.fmean(r[k] for r in best if isinstance(r.get(k), (int, float))) for k in flat}
    run = best[0]["run"]
    return {"values": values, "score": statistics.fmean(scores), "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
            "seeds": len(scores), "seed_scores": scores, "metrics": metrics, "converged": all(r.get("converged") is not False for r in best),
            "chosen": {"lr": run.get("lr"), "epochs": run.get("epochs"), **dict(run.get("extra", []))},
            "configurations": len(groups), "runs": len(records)}


def summarise(plan: SuitePlan, records: dict[str, dict], settings: SuiteSettings) -> dict:
    """{"suite": {...}, "models": {name: {..., "suite": {part: {"tasks", "average"}}}}, "runs": [...]}."""
    models = {}
    for ref in plan.models:
        parts = {}
        for part, tasks in plan.spec.items():
            module = load_part(part)
            done = {}
            for task in tasks:
                rs = [records[run.key] for run, m in plan.runs
                      if m.name == ref.name and run.part == part and run.task == task and run.key in records]
                if rs:
                    done[task] = (module.select(rs) if hasattr(module, "select") else default_select(rs))
            averaged = list(getattr(module, "AVERAGED", tasks_of(module, settings)))
            complete = all(t in done for t in averaged)
            parts[part] = {"tasks": done, "average": statistics.fmean(done[t]["score"] for t in averaged)
                           if complete and averaged else None, "average_name": getattr(module, "AVERAGE_NAME", f"{part} average"),
                           "averaged": averaged}
        models[ref.name] = {"name": ref.name, "architecture": ref.architecture, "path": ref.path, "run": ref.run,
                            "origin": origin_of(ref.path), "tasks": {}, "suite": parts, "benchmarks": benchmarks(parts)}
    return {"suite": {"spec": plan.spec, "settings": settings.fingerprint(), "skipped": plan.skipped,
                      "data_dir": str(settings.data_dir) if settings.data_dir else None},
            "models": models, "missing": plan.missing, "runs": list(records.values()),
            "settings": {"suite": True}}


def benchmarks(parts: dict) -> dict:
    """The headline numbers in the form the findings read (evaluate/report.py): one entry per
    part average, and WinoGender's tasks as they are. A part whose average is missing (not every
    task it averages ran) gives its tasks that ran instead, one entry each, so the findings judge
    what was measured (and say the paper's average needs all of them) rather than nothing."""
    out = {}
    for part, p in parts.items():
        if part == "winogender":  # the finding is about the neutral pronoun's share
            out[part] = {t: ({"neutral_pct": 100 * v["values"]["neutral_share"], "n": int(v["values"].get("n", 0)) or None}
                             if "neutral_share" in v.get("values", {}) else {"score": v["score"]}) for t, v in p["tasks"].items()}
        elif p["average"] is not None:
            converged = all(p["tasks"][t].get("converged", True) for t in p["averaged"])
            out[part] = {"average": {"score": p["average"], "converged": converged}}
        elif p["tasks"]:
            out[part] = {t: task_entry(v) for t, v in p["tasks"].items()}
    return out


def task_entry(result: dict) -> dict:
    """One task's selected result as a benchmark entry: its score (a summary over seeds when
    there are several), whether it converged, and for a zero-shot task its item count and the
    harness's standard error (the spread a one-run score is judged with)."""
    values = result.get("values", {})
    seeds = result.get("seed_scores", [])
    score = ({"mean": result["score"], "std": result["std"], "seeds": seeds} if len(seeds) > 1 else result["score"])
    entry = {"score": score, "converged": result.get("converged", True)}
    if isinstance(values.get("score_stderr"), (int, float)):
        entry["score_stderr"] = values["score_stderr"]
    if isinstance(values.get("n"), (int, float)):
        entry["n"] = int(values["n"])
    return entry


def table(results: dict) -> str:
    """Plain text: one row per part task (and average), one column per model."""
    models = list(results["models"].values())
    rows = []
    for part in results["suite"]["spec"]:
        tasks = list(dict.fromkeys(t for m in models for t in m["suite"].get(part, {}).get("tasks", {})))
        for task in tasks:
            cells = []
            for m in models:
                t = m["suite"].get(part, {}).get("tasks", {}).get(task)
                cells.append("-" if t is None else f"{t['score']:.2f}" + (f" ± {t['std']:.2f}" if t["seeds"] > 1 else "")
                             + ("*" if not t["converged"] else ""))
            rows.append([f"{part}:{task}"] + cells)
        cells = [("-" if m["suite"].get(part, {}).get("average") is None else f"{m['suite'][part]['average']:.2f}")
                 for m in models]
        if any(c != "-" for c in cells):
            rows.append([models[0]["suite"][part]["average_name"]] + cells)
    header = ["task"] + [f"{m['name']} ({m['architecture']})" for m in models]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in [header] + rows]
    if any("*" in c for r in rows for c in r[1:]):
        lines.append("* fine-tuning did not converge")
    return "\n".join(lines)


def write(results: dict, out: Path) -> None:
    write_json(Path(out) / "results.json", results)
