"""The suite's tables in the Ettin paper's layout, for report.md / report.html: an encoder table
(retrieval average, SST-2, MNLI, GLUE average, then each GLUE task) and a decoder table (the ten
generative tasks and their average). Every model appears in both, the twins of one run (or one
size) on adjacent rows; an official Ettin checkpoint gets the paper's published numbers as a
reference row beneath it, marked with their source."""

from __future__ import annotations

import re

from twinlm.evaluate.suite.glue_tasks import LABELS, TABLE_ORDER

SOURCE = "Ettin paper v1, Tables 3-4 (ETTIN-FACTS section 8)"
# Published numbers: encoders (MTEB v2 retrieval, SST-2, MNLI, GLUE average); decoders (generative average).
PAPER_ENCODER = {"17m": (35.6, 91.2, 79.5, 79.2), "68m": (43.1, 94.4, 87.0, 87.2), "150m": (45.7, 95.8, 89.2, 88.9),
                 "400m": (48.4, 96.7, 91.3, 90.8), "1b": (50.1, 97.1, 91.8, 91.6)}
PAPER_DECODER = {"17m": 36.4, "32m": 38.7, "68m": 41.8, "150m": 46.2, "400m": 53.1, "1b": 59.0}
OFFICIAL = re.compile(r"jhu-clsp/ettin-(encoder|decoder)-(\d+[mb])$", re.IGNORECASE)
# The paper's ten generative tasks, in its order; harness names them in evaluate/suite/generative.py.
GENERATIVE = (("arc_challenge", "ARC-C"), ("hellaswag", "HellaSwag"), ("lambada", "LAMBADA"), ("openbookqa", "OBQA"),
              ("piqa", "PIQA"), ("sciq", "SciQ"), ("siqa", "SIQA"), ("triviaqa", "TriviaQA"),
              ("winogrande", "Winogrande"), ("wsc", "WSC"))


def official(path: str) -> tuple[str, str] | None:
    """(architecture, size) of an official Ettin checkpoint's hub id, else None."""
    m = OFFICIAL.search(str(path).rstrip("/"))
    return (m.group(1).lower(), m.group(2).lower()) if m else None


def _size(model: dict) -> str:
    """What groups twins: their run folder, an official checkpoint's size, else the name's stem."""
    known = official(model["path"]) or official(model["name"])
    if known:
        return known[1]
    return model.get("run") or model["name"].rsplit("/", 1)[0]


def ordered(results: dict) -> list[dict]:
    models = list(results["models"].values())
    groups = list(dict.fromkeys(_size(m) for m in models))
    return sorted(models, key=lambda m: (groups.index(_size(m)), m["architecture"] != "encoder"))


def _task_score(model: dict, part: str, task: str) -> str:
    t = model.get("suite", {}).get(part, {}).get("tasks", {}).get(task)
    if t is None:
        return "-"
    return f"{t['score']:.1f}" + (f" ± {t['std']:.1f}" if t.get("seeds", 1) > 1 else "") + ("" if t["converged"] else " (nc)")


def _average(model: dict, part: str) -> str:
    value = model.get("suite", {}).get(part, {}).get("average")
    return "-" if value is None else f"{value:.1f}"


def encoder_table(results: dict) -> list[str]:
    head = ["model", "twin", "Retrieval avg", "SST-2", "MNLI", "GLUE avg"] + [LABELS[t] for t in TABLE_ORDER]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in ordered(results):
        cells = [m["name"], m["architecture"], _average(m, "retrieval"), _task_score(m, "glue", "sst2"),
                 _task_score(m, "glue", "mnli"), _average(m, "glue")] + [_task_score(m, "glue", t) for t in TABLE_ORDER]
        lines.append("| " + " | ".join(cells) + " |")
        known = official(m["path"]) or official(m["name"])
        if known and known[0] == "encoder" and known[1] in PAPER_ENCODER:
            r, sst2, mnli, glue = PAPER_ENCODER[known[1]]
            ref = [f"↳ paper: ettin-encoder-{known[1]}", f"reference ({SOURCE})", f"{r}", f"{sst2}", f"{mnli}", f"{glue}"]
            lines.append("| " + " | ".join(ref + ["-"] * len(TABLE_ORDER)) + " |")
    return lines


def decoder_table(results: dict) -> list[str]:
    head = ["model", "twin"] + [label for _, label in GENERATIVE] + ["Avg"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in ordered(results):
        cells = [m["name"], m["architecture"]] + [_task_score(m, "generative", t) for t, _ in GENERATIVE]
        lines.append("| " + " | ".join(cells + [_average(m, "generative")]) + " |")
        known = official(m["path"]) or official(m["name"])
        if known and known[0] == "decoder" and known[1] in PAPER_DECODER:
            ref = [f"↳ paper: ettin-decoder-{known[1]}", f"reference ({SOURCE})"] + ["-"] * len(GENERATIVE)
            lines.append("| " + " | ".join(ref + [f"{PAPER_DECODER[known[1]]}"]) + " |")
    return lines


def markdown(results: dict) -> list[str]:
    """The suite's section of report.md."""
    suite = results["suite"]
    lines = ["## Benchmarks in the Ettin paper's layout", "",
             f"Suite: {', '.join(f'{p} ({len(t)} task(s))' for p, t in suite['spec'].items())}. Scores 0-100; a "
             "fine-tuned task reports the sweep's best configuration on the validation split (Ettin's selection), "
             "averaged over seeds; (nc): its fine-tuning did not converge.", ""]
    if any(p in suite["spec"] for p in ("glue", "retrieval")):
        lines += ["### Encoder tasks (paper Table 3)", "", *encoder_table(results), "",
                  "GLUE average: the mean of the eight tasks' scores, each the mean of its metrics as Ettin's GLUE "
                  "script averages them (MNLI: matched and mismatched accuracy; MRPC, QQP: accuracy and F1; STS-B: "
                  "Spearman; CoLA: Matthews); reported only when all eight ran. As in Ettin's runs, each run is "
                  "evaluated every few hundred to few thousand steps (per task), trains its whole budget (Ettin's "
                  "configured early stopper never fired) and is scored by its last evaluation; its record lists "
                  "every evaluation and the best one's step.", ""]
    if "generative" in suite["spec"]:
        lines += ["### Generative tasks (paper Table 4)", "", *decoder_table(results), ""]
    if "winogender" in suite["spec"]:
        lines += ["### WinoGender", "", "| model | twin | task | neutral % | male % | female % | gotcha rate % |",
                  "|---|---|---|---|---|---|---|", *winogender_rows(results), "",
                  "Shares of the predicted pronoun gender ± their standard error; gotcha rate: how often the "
                  "prediction is the sentence's own (gotcha) pronoun.", ""]
    if suite.get("skipped"):
        lines += ["Skipped for missing data (--skip-missing):", ""] + [f"- {s}" for s in suite["skipped"]] + [""]
    settings = ", ".join(f"{k} {v}" for k, v in suite["settings"].items() if v is not None)
    lines += [f"Budget overrides (every setting not listed is Ettin's own): {settings or 'none'}.", ""]
    return lines


def winogender_rows(results: dict) -> list[str]:
    def pct(values: dict, key: str) -> str:
        if key not in values:
            return "-"
        se = values.get(f"{key}_se")
        return f"{100 * values[key]:.1f}" + (f" ± {100 * se:.1f}" if se is not None else "")

    rows = []
    for m in ordered(results):
        for task, v in m.get("suite", {}).get("winogender", {}).get("tasks", {}).items():
            values = v.get("values", {})
            rows.append(f"| {m['name']} | {m['architecture']} | {task} | " + " | ".join(
                pct(values, k) for k in ("neutral_share", "male_share", "female_share", "gotcha_rate")) + " |")
    return rows
