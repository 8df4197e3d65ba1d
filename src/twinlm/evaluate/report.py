"""The comparison report: pretraining loss curves, one bar chart per task (error bars over
seeds), and the encoder-vs-decoder table with each task's winner and the size of the gap.
Written as report.md (charts as PNG files beside it) and a self-contained report.html
(charts inlined as data URIs)."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

from twinlm.evaluate.convergence import RULE
from twinlm.evaluate.runner import LOWER_IS_BETTER, NOT_COMPARABLE, benchmarks_of
from twinlm.evaluate.suite.tables import markdown as suite_tables

COLOURS = {"encoder": "#1f77b4", "decoder": "#d62728"}


def read_curves(run: str | Path) -> dict[str, list[tuple[int, float]]]:
    """{twin: [(tokens seen, loss), ...]} from a run's metrics.jsonl (tokens summed over phases)."""
    curves: dict[str, list[tuple[int, float]]] = {}
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        return curves
    offset: dict[tuple[str, str], int] = {}
    total: dict[str, int] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line) if line.strip() else None
        if not row or "loss" not in row or "twin" not in row:
            continue
        key = (row["twin"], row.get("phase", ""))
        if key not in offset:  # a new phase starts where the previous one ended
            offset[key] = total.get(row["twin"], 0)
        seen = offset[key] + int(row.get("tokens", row.get("global_step", 0)))
        total[row["twin"]] = seen
        curves.setdefault(row["twin"], []).append((seen, float(row["loss"])))
    return curves


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def charts(results: dict) -> dict[str, bytes]:
    """{file name: PNG bytes}: curves.png (when any run has metrics.jsonl) and <task>.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    runs = {m["run"] for m in results["models"].values() if m.get("run")}
    curves = {run: read_curves(run) for run in sorted(runs)}
    if any(curves.values()):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for run, by_twin in curves.items():
            for twin, points in by_twin.items():
                ax.plot([p[0] for p in points], [p[1] for p in points], color=COLOURS.get(twin),
                        label=f"{Path(run).name}/{twin}", alpha=0.9)
        ax.set_xlabel("training tokens")
        ax.set_ylabel("training loss (nats/token)")
        ax.set_title("pretraining loss (encoder: MLM, decoder: CLM; not directly comparable)")
        ax.legend(fontsize=8)
        out["curves.png"] = _png(fig)
        plt.close(fig)
    for task in task_names(results):
        models = [m for m in results["models"].values() if task in m["tasks"]]
        # One axis per metric: the twins' primary metrics can differ (intrinsic: masked accuracy
        # vs perplexity), and two metrics never share a scale.
        by_metric: dict[str, list[dict]] = {}
        for m in models:
            by_metric.setdefault(m["tasks"][task]["primary"], []).append(m)
        fig, axes = plt.subplots(1, len(by_metric), squeeze=False,
                                 figsize=(sum(max(3, 1.2 * len(ms) + 1.5) for ms in by_metric.values()), 3))
        for ax, (metric, group) in zip(axes[0], by_metric.items()):
            labels, means, stds, colours = [], [], [], []
            for m in group:
                t = m["tasks"][task]
                s = t["metrics"][metric]
                trained = t.get("converged") is not False
                labels.append(m["name"] + ("" if trained else "\n(not converged)"))
                means.append(s["mean"])
                stds.append(s["std"])
                colours.append(COLOURS.get(m["architecture"], "grey") if trained else "#cccccc")
            ax.bar(range(len(group)), means, yerr=stds, capsize=4, color=colours)
            ax.set_xticks(range(len(group)), labels, fontsize=8)
            ax.set_ylabel(metric)
        fig.suptitle(f"{task} (mean ± std over seeds; grey: fine-tuning did not converge)", fontsize=10)
        out[f"{task}.png"] = _png(fig)
        plt.close(fig)
    return out


def task_names(results: dict) -> list[str]:
    order = ["intrinsic", "classification", "retrieval", "choice", "bias"]
    found = {t for m in results["models"].values() for t in m["tasks"]}
    return [t for t in order if t in found] + sorted(found - set(order))


# Proportions (0-1) and percentages (0-100): a single zero-shot run still has a spread, the
# binomial standard error over its n items (what lm-evaluation-harness reports as acc_stderr).
PROPORTIONS = {"accuracy", "accuracy_norm", "exact_match", "masked_accuracy", "next_token_accuracy", "acc",
               "acc_norm", "acc_norm_per_token"}
PERCENTAGES = {"neutral_pct", "male_pct", "female_pct"}
# The metric a benchmark is judged on, in order of preference.
BENCHMARK_PRIMARY = ("acc", "ndcg_at_10", "ndcg@10", "accuracy", "main_score")


def entries(model: dict) -> dict[str, dict]:
    """{task label: {"primary", "summary", "converged", "n", "finetuned", "budget"}} for a model's
    world tasks ("retrieval") and benchmarks ("lm_eval/sciq", "mteb/SciFact") alike."""
    out = {}
    for task, t in model["tasks"].items():
        out[task] = {"primary": t["primary"], "summary": t["metrics"][t["primary"]], "converged": t.get("converged"),
                     "n": t.get("n"), "finetuned": t.get("finetuned", False), "budget": t.get("budget"),
                     "best_lr": t.get("best_lr")}
    for (group, task), b in benchmarks_of(model).items():
        primary = next((k for k in BENCHMARK_PRIMARY if k in b["metrics"]), next(iter(b["metrics"]), None))
        if primary is not None:
            out[f"{group}/{task}"] = {"primary": primary, "summary": b["metrics"][primary], "converged": b["converged"],
                                      "n": b["n"], "finetuned": group in ("mteb", "glue", "retrieval", "classification"), "budget": None, "best_lr": None,
                                      "stderr": b["stderr"].get(primary)}
    return out


def spread(entry: dict) -> tuple[float, str]:
    """(spread of the entry's score, what it is): the std over seeds when there are several,
    else the binomial standard error of a proportion over its n items, else 0 (one run)."""
    s, metric, n = entry["summary"], entry["primary"], entry.get("n")
    if len(s.get("seeds", [])) > 1:
        return float(s["std"]), f"std over {len(s['seeds'])} seeds"
    if entry.get("stderr") is not None:
        return entry["stderr"], "the harness's standard error"
    if n and (metric in PROPORTIONS or metric in PERCENTAGES):
        scale = 100.0 if metric in PERCENTAGES else 1.0
        p = min(max(s["mean"] / scale, 0.0), 1.0)
        return scale * math.sqrt(p * (1 - p) / n), f"standard error over {n} items"
    return 0.0, "one run"


def _task_order(results: dict) -> list[str]:
    found = list(dict.fromkeys(t for m in results["models"].values() for t in entries(m)))
    world = [t for t in task_names(results) if t in found]
    return world + [t for t in found if t not in world]


def comparison_rows(results: dict) -> list[dict]:
    """Per task (and benchmark): the primary metric of every model, the best encoder and best
    decoder among the runs that converged, the winner and the gap (absolute, and whether it
    exceeds the spread). A side whose every run failed to converge makes the row "inconclusive"."""
    rows = []
    for task in _task_order(results):
        cells, best, failed = {}, {}, set()
        for m in results["models"].values():
            e = entries(m).get(task)
            if not e:
                continue
            s = e["summary"]
            cells[m["name"]] = (e["primary"], s["mean"], s["std"], e["converged"] is not False)
            if e["converged"] is False:
                failed.add(m["architecture"])
                continue
            sign = -1 if e["primary"] in LOWER_IS_BETTER else 1
            if m["architecture"] not in best or sign * s["mean"] > sign * best[m["architecture"]][1]:
                best[m["architecture"]] = (m["name"], s["mean"], spread(e)[0], e["primary"])
        row = {"task": task, "cells": cells, "winner": None, "gap": None, "clear": None, "best": {}}
        archs = {m["architecture"] for m in results["models"].values() if task in entries(m)}
        if task not in NOT_COMPARABLE and {"encoder", "decoder"} <= archs:
            if not {"encoder", "decoder"} <= set(best):
                row.update(winner="inconclusive", reason=" and ".join(sorted(failed)) + " fine-tuning did not converge")
            elif best["encoder"][3] == best["decoder"][3]:
                enc, dec = best["encoder"], best["decoder"]
                sign = -1 if enc[3] in LOWER_IS_BETTER else 1
                win = "encoder" if sign * (enc[1] - dec[1]) > 0 else "decoder" if enc[1] != dec[1] else "tie"
                row.update(winner=win, gap=abs(enc[1] - dec[1]), clear=abs(enc[1] - dec[1]) > enc[2] + dec[2],
                           best={"encoder": enc[0], "decoder": dec[0]})
        rows.append(row)
    return rows


# Ettin's findings on its controlled comparison, each judged on these tasks (benchmarks of the
# same kind are judged too, one line each): (statement, tasks, the architecture expected to win).
FINDINGS = (
    ("Encoders win classification", ("classification", "glue/"), "encoder"),
    ("Encoders win retrieval", ("retrieval", "mteb/", "retrieval/"), "encoder"),
    ("Decoders win generation", ("choice", "lm_eval/", "generative/"), "decoder"),
    ("Encoders choose the neutral pronoun more often", ("bias", "winogender/"), "encoder"),
)
CROSS_FINDING = "Cross-objective models trail native ones"
# Tasks a converted model is held against its native twin on (bias measures a lean, not quality).
CROSS_TASKS = ("intrinsic", "classification", "retrieval", "choice")


def _budget(entry: dict, settings: dict) -> str:
    if entry["budget"]:
        b = entry["budget"]
        return (f"{b['steps']} steps × batch {b['batch_size']}, lr grid {'/'.join(f'{x:g}' for x in b['lrs'])}, "
                f"{b['seeds']} seed(s)")
    if entry["finetuned"]:
        return f"{settings.get('steps')} steps × batch {settings.get('batch_size')}"
    return f"zero-shot, {entry['n']} items" if entry.get("n") else "zero-shot"


def judge_pair(task: str, winner: tuple[str, dict] | None, loser: tuple[str, dict] | None, settings: dict) -> dict:
    """Verdict of "`winner` beats `loser` on `task`" (each (model name, entry) or None):
    inconclusive when a side is missing or did not converge, or the gap is within the summed
    spreads; else reproduced / not reproduced by the sign of the gap."""
    out = {"task": task, "verdict": "inconclusive", "gap": None, "spread": None, "budget": "", "why": ""}
    if winner is None or loser is None:
        out["why"] = "not measured"
        return out
    (wn, we), (ln, le) = winner, loser
    out["budget"] = _budget(we, settings)
    sign = -1 if we["primary"] in LOWER_IS_BETTER else 1
    gap = sign * (we["summary"]["mean"] - le["summary"]["mean"])
    (ws, wkind), (ls, _) = spread(we), spread(le)
    out.update(gap=gap, spread=ws + ls, metric=we["primary"], spread_kind=wkind, names=(wn, ln),
               means=(we["summary"]["mean"], le["summary"]["mean"]))
    stuck = [n for n, e in ((wn, we), (ln, le)) if e["converged"] is False]
    if we["primary"] != le["primary"]:
        out["why"] = f"different metrics ({we['primary']} vs {le['primary']})"
    elif stuck:
        out["why"] = f"{' and '.join(stuck)} did not converge"
    elif abs(gap) <= ws + ls and (ws + ls) > 0:
        out["why"] = "the gap is within the spread"
    elif gap == 0:
        out["why"] = "a tie"
    else:
        out["verdict"] = "reproduced" if gap > 0 else "not reproduced"
    return out


def _best(results: dict, task: str, architecture: str, origin: str = "native") -> tuple[str, dict] | None:
    """The best model of an architecture and origin on a task, preferring runs that converged."""
    found = [(m["name"], entries(m)[task]) for m in results["models"].values()
             if m["architecture"] == architecture and m.get("origin", "native") == origin and task in entries(m)]
    if not found:
        return None
    sign = -1 if found[0][1]["primary"] in LOWER_IS_BETTER else 1
    return max(found, key=lambda f: (f[1]["converged"] is not False, sign * f[1]["summary"]["mean"]))


def twin_pairs(results: dict, task: str) -> dict[str, dict[str, tuple[str, dict]]]:
    """Pretraining runs with both native twins scored on `task`: {run: {architecture: (name, entry)}}."""
    runs: dict[str, dict] = {}
    for m in results["models"].values():
        if m.get("run") and m.get("origin", "native") == "native" and task in entries(m):
            runs.setdefault(m["run"], {})[m["architecture"]] = (m["name"], entries(m)[task])
    return {r: twins for r, twins in runs.items() if len(twins) == 2}


def over_runs(task: str, pairs: dict, expected: str, settings: dict) -> dict:
    """A finding over several pretraining runs: each run's twins against each other, the mean gap
    and its standard deviation over the runs. The best model of each kind over all runs would
    cherry-pick; at nano scale the between-run spread is what decides (docs/results.md, the demo)."""
    other = "decoder" if expected == "encoder" else "encoder"
    judged = {run: judge_pair(task, twins[expected], twins[other], settings) for run, twins in sorted(pairs.items())}
    gaps = [j["gap"] for j in judged.values()]
    mean = sum(gaps) / len(gaps)
    std = (sum((g - mean) ** 2 for g in gaps) / (len(gaps) - 1)) ** 0.5
    stuck = [j["why"] for j in judged.values() if "did not converge" in j["why"]]
    per_run = ", ".join(f"{Path(run).name} {j['gap']:+.3f}" for run, j in judged.items())
    if stuck:
        verdict, why = "inconclusive", "; ".join(stuck)
    elif abs(mean) <= std:
        verdict, why = "inconclusive", "the gap is within the spread over pretraining runs"
    else:
        verdict, why = ("reproduced" if mean > 0 else "not reproduced"), ""
    metric = next(iter(judged.values()))["metric"]
    return {"verdict": verdict, "detail": f"{metric} gap per run: {per_run}" + (f"; inconclusive: {why}" if why else ""),
            "gap": f"{mean:+.3f}", "spread": f"±{std:.3f} (std over {len(gaps)} pretraining runs)",
            "budget": next(iter(judged.values()))["budget"]}


def findings(results: dict) -> list[dict]:
    """One line per Ettin finding (and per benchmark bearing on it): {"finding", "verdict",
    "detail", "gap", "spread", "budget"}; the verdict is reproduced / not reproduced / inconclusive."""
    settings = results.get("settings", {})
    tasks = _task_order(results)
    lines = []
    for statement, where, expected in FINDINGS:
        other = "decoder" if expected == "encoder" else "encoder"
        chosen = [t for t in tasks if t in where or any(w.endswith("/") and t.startswith(w) for w in where)] or [where[0]]
        for task in chosen:
            name = statement + ("" if task == where[0] else f" ({task})")
            pairs = twin_pairs(results, task)
            if len(pairs) >= 2:  # the twins of one run against each other, the gap's spread over runs
                line = {"finding": name, **over_runs(task, pairs, expected, settings)}
            else:
                j = judge_pair(task, _best(results, task, expected), _best(results, task, other), settings)
                line = {"finding": name, **_describe(j, _unmeasured(results, task, where))}
            lines.append({**line, "detail": line["detail"] + _partial(results, task)})
    crossed = [m for m in results["models"].values() if m.get("origin", "native") != "native"]
    if not crossed:
        lines.append({"finding": CROSS_FINDING, "verdict": "inconclusive", "detail": "not measured: no cross-objective "
                      "model in this comparison (add a `twinlm convert` output as NAME=PATH)", "gap": "", "spread": "",
                      "budget": ""})
    for m in crossed:
        parts = []
        for task in CROSS_TASKS:
            mine = entries(m).get(task)
            if mine is None:
                continue
            parts.append(judge_pair(task, _best(results, task, m["architecture"]), (m["name"], mine), settings))
        verdicts = [p["verdict"] for p in parts]
        verdict = ("reproduced" if "reproduced" in verdicts and "not reproduced" not in verdicts else
                   "not reproduced" if "not reproduced" in verdicts and "reproduced" not in verdicts else "inconclusive")
        detail = "; ".join(f"{p['task']}: native {p['verdict']}" + (f" ({p['why']})" if p["why"] else "") for p in parts)
        lines.append({"finding": f"{CROSS_FINDING} ({m['name']} vs native {m['architecture']})", "verdict": verdict,
                      "detail": detail or "no task in common with a native model",
                      "gap": ", ".join(f"{p['task']} {p['gap']:+.3f}" for p in parts if p["gap"] is not None),
                      "spread": ", ".join(f"±{p['spread']:.3f}" for p in parts if p["spread"] is not None),
                      "budget": "; ".join(dict.fromkeys(p["budget"] for p in parts if p["budget"]))})
    return lines


def _unmeasured(results: dict, task: str, where: tuple[str, ...]) -> str:
    """Why a finding has no pair to judge on `task`: no model ran any task it is judged on, or
    only one architecture (among native models) did."""
    ran = {m["architecture"] for m in results["models"].values()
           if m.get("origin", "native") == "native" and task in entries(m)}
    if not ran:
        return f"not measured: no model here ran a task this finding is judged on ({', '.join(where)})"
    missing = " or ".join(sorted({"encoder", "decoder"} - ran))
    return f"not measured: needs both an encoder and a decoder, and no native {missing} ran {task}"


def _partial(results: dict, task: str) -> str:
    """'' unless `task` is one task of a suite part whose headline average is missing: then why it
    is judged alone (the paper's finding is on the average, which needs every task)."""
    part, _, name = task.partition("/")
    for m in results["models"].values():
        p = (m.get("suite") or {}).get(part)
        if p and p.get("average") is None and name in p.get("tasks", {}):
            return (f" (judged on this task alone: the paper's {p.get('average_name', part)} needs all "
                    f"{len(p.get('averaged', []))} tasks, {len(p['tasks'])} ran)")
    return ""


def _describe(j: dict, unmeasured: str = "") -> dict:
    if j["gap"] is None:
        return {"verdict": j["verdict"], "detail": unmeasured or j["why"], "gap": "", "spread": "", "budget": j["budget"]}
    detail = (f"{j['names'][0]} {j['means'][0]:.3f} vs {j['names'][1]} {j['means'][1]:.3f} ({j['metric']})"
              + (f"; inconclusive: {j['why']}" if j["why"] else ""))
    return {"verdict": j["verdict"], "detail": detail, "gap": f"{j['gap']:+.3f}",
            "spread": f"±{j['spread']:.3f} ({j['spread_kind']})", "budget": j["budget"]}


def _settings_lines(results: dict) -> list[str]:
    cfg = results.get("settings", {})
    per_task = {**{t: f"{v} steps" for t, v in (cfg.get("task_steps") or {}).items()}}
    for t, v in (cfg.get("task_lrs") or {}).items():
        per_task[t] = (per_task.get(t, "") + f" lr grid {v}").strip()
    lines = [
        f"Fine-tuning budget, identical for every model: {cfg.get('steps')} steps, batch {cfg.get('batch_size')}, "
        f"max length {cfg.get('max_length')}, {cfg.get('seeds')} seed(s) per learning rate, learning-rate grid "
        f"{cfg.get('lrs')}" + (" (per task: " + ", ".join(f"{t} {v}" for t, v in per_task.items()) + ")" if per_task else "")
        + ". For each model and task the learning rate with the best mean primary metric among those whose runs "
        "converged is reported (selected on the evaluation split, as in the Ettin comparison).",
        f"Convergence: a fine-tuning run counts as converged when its {RULE}. Scores of runs that did not converge "
        "are marked (not converged), greyed in the HTML report, and no winner is declared from them (inconclusive).",
        f"Encoder pooling: {cfg.get('pooling')} (auto: sentence-transformers' default, mean unless the model says "
        "otherwise) for classification and retrieval; decoders use the last token. Retrieval loss: "
        "CachedMultipleNegativesRankingLoss, scale 20 (its uncached form, the same loss, when a batch fits one "
        "mini-batch of 32).",
        "Zero-shot tasks (intrinsic, choice, bias) are deterministic and run once; their spread is the binomial "
        "standard error over their items. Bias winner: the higher share of neutral pronouns. Intrinsic metrics "
        "differ between the objectives, so no winner is declared there.",
    ]
    for m in results["models"].values():
        picks = [f"{t}: lr {v['best_lr']:g}" + (f", {v['pooling']} pooling" if v.get("pooling") else "")
                 for t, v in m["tasks"].items() if v.get("finetuned")]
        if picks:
            lines.append(f"Best learning rate for {m['name']}: " + "; ".join(picks) + ".")
    return lines


def _fmt(cell, metric: str = "") -> str:
    if cell is None:
        return "-"
    # Where the twins' metrics differ (intrinsic), each cell names its own.
    text = f"{cell[1]:.3f} ± {cell[2]:.3f}" + (f" ({cell[0]})" if cell[0] != metric else "")
    return text if len(cell) < 4 or cell[3] else text + " (not converged)"


def render_markdown(results: dict, images: dict[str, str]) -> str:
    names = list(results["models"])
    lines = ["# twinlm comparison report", ""]
    if results.get("missing"):
        lines += [f"**Missing:** {', '.join(results['missing'])} (not found, so not evaluated).", ""]
    lines += ["## Ettin's findings", "", "| finding | verdict | evidence | gap | spread | budget |", "|---|---|---|---|---|---|"]
    for f in findings(results):
        lines.append(f"| {f['finding']} | **{f['verdict']}** | {f['detail']} | {f['gap']} | {f['spread']} | {f['budget']} |")
    lines += ["", "A finding is reproduced when the expected side leads by more than the two spreads together and every "
              "fine-tuning run behind it converged; inconclusive otherwise (or when a side is missing).", ""]
    lines += ["## Encoder vs decoder", "", "| task | metric | " + " | ".join(
        f"{n} ({results['models'][n]['architecture']})" for n in names) + " | winner | gap |",
        "|" + "---|" * (len(names) + 4)]
    for row in comparison_rows(results):
        kinds = {c[0] for c in row["cells"].values()}
        metric = kinds.pop() if len(kinds) == 1 else "(per model)"
        win_name = row["best"].get(row["winner"]) if row["winner"] in ("encoder", "decoder") else None
        cells = [_fmt(row["cells"].get(n), metric) for n in names]
        cells = [f"**{c}** ★" if n == win_name else c for n, c in zip(names, cells)]
        gap = "n/a" if row["gap"] is None else f"{row['gap']:.3f}" + ("" if row["clear"] else " (within seed spread)")
        winner = row["winner"] or "n/a"
        if row.get("reason"):
            winner += f" ({row['reason']})"
        lines.append(f"| {row['task']} | {metric} | " + " | ".join(cells) + f" | {winner} | {gap} |")
    if "suite" in results:  # `--suite`: the paper's tables and the suite's own settings

        lines += ["", *suite_tables(results)]
    else:
        lines += ["", "## Settings", ""] + [f"- {s}" for s in _settings_lines(results)] + [""]
    lines += ["## All metrics", "", "```", results.get("table", ""), "```", ""]
    if "curves.png" in images:
        lines += ["## Pretraining loss", "", f"![pretraining loss]({images['curves.png']})", ""]
    lines += ["## Per task", ""] + [f"![{n[:-4]}]({src})" for n, src in images.items() if n != "curves.png"]
    return "\n".join(lines) + "\n"


def render_html(markdown_text: str, images: dict[str, str]) -> str:
    """A minimal renderer for the report's own markdown (headings, tables, lists, code, images)."""
    body, table, code = [], [], False
    for line in markdown_text.splitlines():
        if line.startswith("```"):
            body.append("</pre>" if code else "<pre>")
            code = not code
            continue
        if code:
            body.append(html.escape(line))
            continue
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not set("".join(cells)) <= set("-"):
                table.append(cells)
            continue
        if table:
            head, *rest = table
            body.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>" + "".join(
                "<tr>" + "".join(f"<td{_cell_class(c)}>{_inline(c)}</td>" for c in r) + "</tr>" for r in rest) + "</table>")
            table = []
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("!["):
            alt, src = line[2:].split("](", 1)
            body.append(f'<img alt="{html.escape(alt)}" src="{src[:-1]}">')
        elif line.startswith("- "):
            body.append(f"<p>• {_inline(line[2:])}</p>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    # Marks the body once every image has decoded, so a headless browser can check them.
    script = ("<script>window.addEventListener('load',function(){var i=[].slice.call(document.images);"
              "document.body.setAttribute('data-images-ok',String(i.length>0&&i.every(function(x){"
              "return x.complete&&x.naturalWidth>0})));document.body.setAttribute('data-images',String(i.length));});</script>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse}"
             "td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}img{max-width:100%;display:block;margin:1em 0}"
             "pre{background:#f5f5f5;padding:1em;overflow:auto}td.nc{color:#999;background:#eee}"
             "td.yes{background:#e3f4e3}td.no{background:#f9e0e0}td.unsure{background:#f4f0dc}"
             "td:first-child,th:first-child{text-align:left}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>twinlm comparison</title><style>{style}</style>"
            f"{script}</head><body>" + "\n".join(body) + "</body></html>\n")


def _cell_class(text: str) -> str:
    """Greys the score of a run that did not converge; colours a finding's verdict."""
    for marker, cls in (("not converged", "nc"), ("**not reproduced**", "no"), ("**reproduced**", "yes"),
                        ("**inconclusive**", "unsure")):
        if marker in text:
            return f' class="{cls}"'
    return ""


def _inline(text: str) -> str:
    out = html.escape(text)
    while out.count("**") >= 2:
        out = out.replace("**", "<b>", 1).replace("**", "</b>", 1)
    return out


def write_report(results: dict, out: Path) -> dict[str, Path]:
    """Write report.md (+ PNGs) and the self-contained report.html into `out`."""
    pngs = charts(results)
    for name, data in pngs.items():
        (out / name).write_bytes(data)
    md = render_markdown(results, {n: n for n in pngs})
    (out / "report.md").write_text(md)
    inline = {n: "data:image/png;base64," + base64.b64encode(d).decode() for n, d in pngs.items()}
    html_text = render_html(render_markdown(results, inline), inline)
    (out / "report.html").write_text(html_text)
    return {"markdown": out / "report.md", "html": out / "report.html"}
