"""The comparison report: pretraining loss curves, one bar chart per task (error bars over
seeds), and the encoder-vs-decoder table with each task's winner and the size of the gap.
Written as report.md (charts as PNG files beside it) and a self-contained report.html
(charts inlined as data URIs)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from twinlm.evaluate.runner import LOWER_IS_BETTER, NOT_COMPARABLE

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
        fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(models) + 2), 3))
        labels, means, stds, colours = [], [], [], []
        for m in models:
            t = m["tasks"][task]
            s = t["metrics"][t["primary"]]
            labels.append(f"{m['name']}\n{t['primary']}")
            means.append(s["mean"])
            stds.append(s["std"])
            colours.append(COLOURS.get(m["architecture"], "grey"))
        ax.bar(range(len(models)), means, yerr=stds, capsize=4, color=colours)
        ax.set_xticks(range(len(models)), labels, fontsize=8)
        ax.set_title(f"{task} (mean ± std over seeds)")
        out[f"{task}.png"] = _png(fig)
        plt.close(fig)
    return out


def task_names(results: dict) -> list[str]:
    order = ["intrinsic", "classification", "retrieval", "choice", "bias"]
    found = {t for m in results["models"].values() for t in m["tasks"]}
    return [t for t in order if t in found] + sorted(found - set(order))


def comparison_rows(results: dict) -> list[dict]:
    """Per task: the primary metric of every model, the best encoder and best decoder, the
    winner and the gap (absolute, and whether it exceeds the seeds' spread)."""
    rows = []
    for task in task_names(results):
        cells, best = {}, {}
        primary = None
        for m in results["models"].values():
            t = m["tasks"].get(task)
            if not t:
                continue
            s = t["metrics"][t["primary"]]
            cells[m["name"]] = (t["primary"], s["mean"], s["std"])
            primary = primary or t["primary"]
            sign = -1 if t["primary"] in LOWER_IS_BETTER else 1
            if m["architecture"] not in best or sign * s["mean"] > sign * best[m["architecture"]][1]:
                best[m["architecture"]] = (m["name"], s["mean"], s["std"], t["primary"])
        row = {"task": task, "cells": cells, "winner": None, "gap": None, "clear": None}
        if task not in NOT_COMPARABLE and {"encoder", "decoder"} <= set(best):
            enc, dec = best["encoder"], best["decoder"]
            if enc[3] == dec[3]:
                sign = -1 if enc[3] in LOWER_IS_BETTER else 1
                win = "encoder" if sign * (enc[1] - dec[1]) > 0 else "decoder" if enc[1] != dec[1] else "tie"
                row.update(winner=win, gap=abs(enc[1] - dec[1]), clear=abs(enc[1] - dec[1]) > enc[2] + dec[2])
        rows.append(row)
    return rows


def _settings_lines(results: dict) -> list[str]:
    cfg = results.get("settings", {})
    lines = [
        f"Fine-tuning budget, identical for every model: {cfg.get('steps')} steps, batch {cfg.get('batch_size')}, "
        f"max length {cfg.get('max_length')}, {cfg.get('seeds')} seed(s) per learning rate, learning-rate grid "
        f"{cfg.get('lrs')}. For each model and task the learning rate with the best mean primary metric is reported "
        "(selected on the evaluation split, as in the Ettin comparison).",
        f"Encoder pooling: {cfg.get('pooling')} (classification and retrieval); decoders use the last token. "
        "Retrieval loss: CachedMultipleNegativesRankingLoss, scale 20.",
        "Zero-shot tasks (intrinsic, choice, bias) are deterministic and run once (std 0). Encoders score choices by "
        "masked pseudo-log-likelihood, decoders by summed log-probability. Bias winner: the higher share of neutral "
        "pronouns. Intrinsic metrics differ between the objectives, so no winner is declared there.",
    ]
    for m in results["models"].values():
        picks = [f"{t}: lr {v['best_lr']:g}" for t, v in m["tasks"].items() if v.get("finetuned")]
        if picks:
            lines.append(f"Best learning rate for {m['name']}: " + ", ".join(picks) + ".")
    return lines


def _fmt(cell, metric: str = "") -> str:
    if cell is None:
        return "-"
    # Where the twins' metrics differ (intrinsic), each cell names its own.
    return f"{cell[1]:.3f} ± {cell[2]:.3f}" + (f" ({cell[0]})" if cell[0] != metric else "")


def render_markdown(results: dict, images: dict[str, str]) -> str:
    names = list(results["models"])
    lines = ["# twinlm comparison report", ""]
    if results.get("missing"):
        lines += [f"**Missing:** {', '.join(results['missing'])} (not found, so not evaluated).", ""]
    lines += ["## Encoder vs decoder", "", "| task | metric | " + " | ".join(
        f"{n} ({results['models'][n]['architecture']})" for n in names) + " | winner | gap |",
        "|" + "---|" * (len(names) + 4)]
    for row in comparison_rows(results):
        kinds = {c[0] for c in row["cells"].values()}
        metric = kinds.pop() if len(kinds) == 1 else "(per model)"
        win_name = None
        if row["winner"] in ("encoder", "decoder"):
            arch_best = [n for n in names if results["models"][n]["architecture"] == row["winner"] and n in row["cells"]]
            sign = -1 if metric in LOWER_IS_BETTER else 1
            win_name = max(arch_best, key=lambda n: sign * row["cells"][n][1])
        cells = [_fmt(row["cells"].get(n), metric) for n in names]
        cells = [f"**{c}** ★" if n == win_name else c for n, c in zip(names, cells)]
        gap = "n/a" if row["gap"] is None else f"{row['gap']:.3f}" + ("" if row["clear"] else " (within seed spread)")
        lines.append(f"| {row['task']} | {metric} | " + " | ".join(cells) + f" | {row['winner'] or 'n/a'} | {gap} |")
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
                "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rest) + "</table>")
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
             "pre{background:#f5f5f5;padding:1em;overflow:auto}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>twinlm comparison</title><style>{style}</style>"
            f"{script}</head><body>" + "\n".join(body) + "</body></html>\n")


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
