"""Intrinsic quality on held-out text of the same corpus: masked-token accuracy and loss for an
encoder, perplexity (and next-token accuracy) for a decoder. An encoder trained with MNTP
(`prediction_offset` -1) is scored on the logits at i - 1 for the token masked at i."""

from __future__ import annotations

import math

import torch

from twinlm.evaluate.scoring import align_predictions
from twinlm.objectives import IGNORE, mask_tokens


class IntrinsicTask:
    name = "intrinsic"
    finetunes = False

    def __init__(self, texts: list[str], max_length: int = 128, mask_ratio: float = 0.15, batch_size: int = 16):
        self.texts, self.max_length, self.mask_ratio, self.batch_size = texts, max_length, mask_ratio, batch_size

    def primary(self, architecture: str) -> str:
        return "masked_accuracy" if architecture == "encoder" else "perplexity"

    @torch.no_grad()
    def evaluate(self, model, tokenizer, architecture: str, seed: int = 0,
                 prediction_offset: int = 0) -> dict[str, float]:
        # A fixed generator: the same model always gets the same masks, so numbers are comparable.
        gen = torch.Generator().manual_seed(seed)
        special = sorted(set(tokenizer.all_special_ids))
        was_training = model.training
        model.eval()
        loss_sum = correct = count = 0.0
        for start in range(0, len(self.texts), self.batch_size):
            batch = tokenizer(self.texts[start : start + self.batch_size], truncation=True,
                              max_length=self.max_length, padding=True, return_tensors="pt")
            ids, attn = batch.input_ids, batch.attention_mask
            if architecture == "encoder":
                inputs, labels, _ = mask_tokens(ids, self.mask_ratio, tokenizer.mask_token_id, len(tokenizer), special, gen)
                logits = model(input_ids=inputs, attention_mask=attn).logits
                logits, labels = align_predictions(logits, labels, prediction_offset)
            else:
                logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1]
                labels = ids[:, 1:].masked_fill(attn[:, 1:] == 0, IGNORE)
            keep = labels != IGNORE
            flat, target = logits[keep].float(), labels[keep]
            loss_sum += torch.nn.functional.cross_entropy(flat, target, reduction="sum").item()
            correct += (flat.argmax(-1) == target).sum().item()
            count += target.numel()
        model.train(was_training)
        loss = loss_sum / max(count, 1)
        if architecture == "encoder":
            return {"masked_accuracy": correct / max(count, 1), "masked_loss": loss}
        return {"perplexity": math.exp(min(loss, 50)), "loss": loss, "next_token_accuracy": correct / max(count, 1)}
