"""WinoGender-style pronoun bias. Each occupation sentence has a pronoun slot filled by he, she
or they. Encoder: the slot is masked (one [MASK] per pronoun token) and the pronoun with the
highest masked log-prob wins. Decoder: the whole sentence with each pronoun is scored by
log-likelihood. Reported: share of neutral / male / female choices, and the Pearson correlation
between the model's per-occupation lean P(he) / (P(he) + P(she)) and the occupation's true male
share in the world corpus."""

from __future__ import annotations

import math

import numpy as np
import torch

from twinlm.evaluate.scoring import decoder_loglik

PRONOUNS = {"they": "neutral", "he": "male", "she": "female"}
SLOT = "{pronoun}"


class BiasTask:
    name = "bias"
    finetunes = False

    def __init__(self, examples: list[dict]):
        # examples: {"template" with "{pronoun}", "occupation", "male_share"} (world.bias_examples)
        self.examples = examples

    def primary(self, architecture: str) -> str:
        return "neutral_pct"

    def pronoun_logprobs(self, model, tokenizer, architecture: str, template: str,
                         prediction_offset: int = 0) -> dict[str, float]:
        before, after = template.split(SLOT, 1)
        if architecture == "decoder":
            # Same prefix, so only the pronoun and what follows differ: comparing full-sentence
            # likelihoods is comparing the sentences.
            scored = decoder_loglik(model, tokenizer, before.rstrip(), [" " + p + after for p in PRONOUNS])
            return {p: s[0] for p, s in zip(PRONOUNS, scored)}
        rows, spans = [], []
        before_ids = tokenizer(before.rstrip(), add_special_tokens=False).input_ids
        rest = tokenizer(after, add_special_tokens=False).input_ids
        for p in PRONOUNS:
            ptoks = tokenizer(" " + p, add_special_tokens=False).input_ids
            rows.append([tokenizer.cls_token_id] + before_ids + [tokenizer.mask_token_id] * len(ptoks) + rest
                        + [tokenizer.sep_token_id])
            spans.append(ptoks)
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
        logprobs = model(input_ids=ids, attention_mask=(ids != tokenizer.pad_token_id).long()).logits.float().log_softmax(-1)
        start = 1 + len(before_ids) + prediction_offset  # MNTP encoders predict slot i at i - 1
        out = {p: sum(logprobs[k, start + i, t].item() for i, t in enumerate(ptoks))
               for k, (p, ptoks) in enumerate(zip(PRONOUNS, spans))}
        return out

    @torch.no_grad()
    def evaluate(self, model, tokenizer, architecture: str, seed: int = 0,
                 prediction_offset: int = 0) -> dict[str, float]:
        was_training = model.training
        model.eval()
        counts = dict.fromkeys(PRONOUNS.values(), 0)
        lean: dict[str, list[float]] = {}
        share: dict[str, float] = {}
        for ex in self.examples:
            lp = self.pronoun_logprobs(model, tokenizer, architecture, ex["template"], prediction_offset)
            counts[PRONOUNS[max(lp, key=lp.get)]] += 1
            # P(he) / (P(he) + P(she)) computed stably from log-probs.
            lean.setdefault(ex["occupation"], []).append(1 / (1 + math.exp(max(-50, min(50, lp["she"] - lp["he"])))))
            share[ex["occupation"]] = ex["male_share"]
        model.train(was_training)
        n = len(self.examples)
        occs = sorted(lean)
        x = np.array([share[o] for o in occs])
        y = np.array([np.mean(lean[o]) for o in occs])
        corr = float(np.corrcoef(x, y)[0, 1]) if len(occs) > 1 and x.std() > 0 and y.std() > 0 else float("nan")
        return {
            "neutral_pct": 100 * counts["neutral"] / n,
            "male_pct": 100 * counts["male"] / n,
            "female_pct": 100 * counts["female"] / n,
            "skew_correlation": corr,
        }
