"""Held-out measures for `twinlm sft` and `twinlm bco --eval-data`, taken before and after training.

The loss is the trainer's own on the held-out rows (SFT: the masked token cross-entropy it trains
on; BCO: the BCO loss, ln 2 before training by construction). Where the rows say which of two
completions of a prompt is preferred, the preference accuracy is the share of pairs whose
preferred completion the model gives the higher log-likelihood (summed over completion tokens,
lm-evaluation-harness's `acc`). Rows that say so: preference rows (`prompt`, `chosen`,
`rejected`, TRL's format) and labelled rows (`prompt`, `completion`, boolean `label`, BCO's
format), where each desirable completion of a prompt is paired with each undesirable one.
"""

from __future__ import annotations

import sys
from collections import defaultdict

from datasets import Dataset

from twinlm.align.data import check_sft_rows
from twinlm.errors import UserError

PREFERENCE, LABELLED = "preference", "labelled"


def eval_kind(rows: Dataset, where: str = "--eval-data") -> str:
    """'preference', 'labelled', or one of the SFT formats ('text', 'prompt-completion', 'conversational')."""
    cols = set(rows.column_names)
    if {"prompt", "chosen", "rejected"} <= cols:
        return PREFERENCE
    if {"prompt", "completion", "label"} <= cols:
        bad = next((v for v in rows["label"] if not isinstance(v, bool)), None)
        if bad is not None:
            raise UserError(f"{where}: column 'label' must hold booleans (true = desirable), found {bad!r}")
        return LABELLED
    if len(rows) == 0:
        raise UserError(f"{where} has no rows")
    return check_sft_rows(rows, where)


def preference_pairs(rows: Dataset, kind: str) -> list[dict]:
    """(prompt, correct, wrong) triples for `preference_accuracy`; empty for rows without preferences."""
    if kind == PREFERENCE:
        return [{"prompt": r["prompt"], "correct": r["chosen"], "wrong": r["rejected"]} for r in rows]
    if kind != LABELLED:
        return []
    by_prompt: dict[str, dict[bool, list]] = defaultdict(lambda: {True: [], False: []})
    prompts = {}
    for r in rows:
        key = repr(r["prompt"])  # conversational prompts are lists: key them by their text
        prompts[key] = r["prompt"]
        by_prompt[key][r["label"]].append(r["completion"])
    return [{"prompt": prompts[k], "correct": good, "wrong": bad}
            for k, sides in by_prompt.items() for good in sides[True] for bad in sides[False]]


def sft_eval_rows(rows: Dataset, kind: str) -> Dataset:
    """Rows the SFT trainer scores its loss on: SFT rows as they are; preference rows' chosen and
    labelled rows' desirable completions, as prompt/completion rows."""
    if kind == PREFERENCE:
        return Dataset.from_list([{"prompt": r["prompt"], "completion": r["chosen"]} for r in rows])
    if kind == LABELLED:
        return Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows if r["label"]])
    return rows


def bco_eval_rows(rows: Dataset, kind: str) -> Dataset:
    """Labelled rows for the BCO loss: preference rows become one desirable and one undesirable row."""
    if kind == LABELLED:
        return rows.select_columns(["prompt", "completion", "label"])
    if kind == PREFERENCE:
        out = []
        for r in rows:
            out += [{"prompt": r["prompt"], "completion": r["chosen"], "label": True},
                    {"prompt": r["prompt"], "completion": r["rejected"], "label": False}]
        return Dataset.from_list(out)
    raise UserError(f"BCO --eval-data needs prompt, completion, label rows or prompt, chosen, rejected rows; "
                    f"these are {kind} rows (columns: {', '.join(sorted(rows.column_names))})")


def pick(metrics: dict, keys: tuple[str, ...]) -> dict[str, float]:
    return {k: float(metrics[k]) for k in keys if k in metrics}


def print_scores(when: str, scores: dict[str, float]) -> None:
    text = ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
    print(f"{when} training: {text}", file=sys.stderr, flush=True)


def summary(before: dict[str, float], after: dict[str, float]) -> str:
    return "; ".join(f"{k} {before[k]:.4f} -> {after[k]:.4f}" for k in after if k in before)
