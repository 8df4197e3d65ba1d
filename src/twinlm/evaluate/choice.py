"""Generative multiple choice: score every choice by log-likelihood and pick the best, with
lm-evaluation-harness's metrics: `accuracy` (lm-eval's acc: the highest log-likelihood) and
`accuracy_norm` (lm-eval's acc_norm: log-likelihood divided by the choice's length in
characters, without the delimiter). Decoders: the sum of the choice's next-token log-probs, plus
greedy free generation (`exact_match`: the generated text starts with the answer). Encoders: the
scorer chosen by `encoder_scoring`, "ettin" (Ettin's protocol) or "pll" (classic
pseudo-log-likelihood), both in `twinlm.evaluate.scoring`."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from twinlm.errors import UserError
from twinlm.evaluate.scoring import ENCODER_SCORINGS, decoder_loglik, encoder_loglik, encoder_pair

REQUIRED = ("context", "choices", "answer")


def read_choice_file(path: str | Path) -> list[dict]:
    """jsonl rows {"context": str, "choices": [str, ...], "answer": index of the right choice}."""
    items = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path} line {n} is not JSON ({err.msg})") from None
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise UserError(f"{path} line {n} lacks field(s) {', '.join(missing)}; each row needs {', '.join(REQUIRED)}")
        if not isinstance(row["answer"], int) or not 0 <= row["answer"] < len(row["choices"]):
            raise UserError(f"{path} line {n}: answer must be the index of one of the {len(row['choices'])} choices")
        items.append({k: row[k] for k in REQUIRED})
    if not items:
        raise UserError(f"{path} holds no multiple-choice rows")
    return items


class ChoiceTask:
    name = "choice"
    finetunes = False

    def __init__(self, items: list[dict], delimiter: str = " ", encoder_scoring: str = "ettin"):
        if encoder_scoring not in ENCODER_SCORINGS:
            raise UserError(f"encoder scoring must be one of {', '.join(ENCODER_SCORINGS)}, got {encoder_scoring!r}")
        self.items, self.delimiter, self.encoder_scoring = items, delimiter, encoder_scoring

    def primary(self, architecture: str) -> str:
        return "accuracy"

    def scores(self, model, tokenizer, architecture: str, item: dict,
               prediction_offset: int = 0) -> list[tuple[float, int]]:
        choices = [self.delimiter + c for c in item["choices"]]
        if architecture == "decoder":
            return [(lp, n) for lp, n, _ in decoder_loglik(model, tokenizer, item["context"], choices)]
        pairs = [encoder_pair(tokenizer, item["context"], c) for c in choices]
        scored = encoder_loglik(model, tokenizer, pairs, self.encoder_scoring, prediction_offset)
        return [(lp, n) for lp, _, n in scored]

    @torch.no_grad()
    def evaluate(self, model, tokenizer, architecture: str, seed: int = 0,
                 prediction_offset: int = 0) -> dict[str, float]:
        was_training = model.training
        model.eval()
        right = right_norm = exact = 0
        for item in self.items:
            scored = self.scores(model, tokenizer, architecture, item, prediction_offset)
            right += max(range(len(scored)), key=lambda i: scored[i][0]) == item["answer"]
            chars = [max(len(c), 1) for c in item["choices"]]  # lm-eval's completion length
            right_norm += max(range(len(scored)), key=lambda i: scored[i][0] / chars[i]) == item["answer"]
            if architecture == "decoder":
                exact += self.generates(model, tokenizer, item)
        model.train(was_training)
        n = len(self.items)
        out = {"accuracy": right / n, "accuracy_norm": right_norm / n}
        if architecture == "decoder":
            out["exact_match"] = exact / n
        return out

    def generates(self, model, tokenizer, item: dict) -> bool:
        answer = item["choices"][item["answer"]]
        ids = tokenizer(item["context"], return_tensors="pt")
        budget = len(tokenizer(self.delimiter + answer, add_special_tokens=False).input_ids) + 1
        out = model.generate(**ids, max_new_tokens=budget, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        text = tokenizer.decode(out[0, ids.input_ids.shape[1]:], skip_special_tokens=True)
        return text.strip().startswith(answer)
