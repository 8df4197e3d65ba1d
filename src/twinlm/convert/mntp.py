"""Masked next-token prediction (MNTP, LLM2Vec step 2): MLM corruption, next-token head.

A fraction of the tokens is corrupted (80% mask token / 10% random / 10% kept, as BERT) and the
token at a masked position i is predicted from the logits at position i - 1, so a decoder keeps
the meaning of its output head (logits at i - 1 predict token i) while learning to use the
context on both sides. Position 0 is never masked: it has no predecessor.

Where the shift happens depends on the model class:
- causal-LM classes (`*ForCausalLM`) shift labels inside their loss (logits[:, :-1] against
  labels[:, 1:]), so the collator puts the label of position i at i (`shift="model"`);
- `ModernBertForMaskedLM` does not shift, so the collator moves the label of position i to i - 1
  itself (`shift="collator"`), used for decoder -> encoder conversion with `--objective mntp`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from twinlm.errors import UserError
from twinlm.objectives import IGNORE, corrupt, mask_tokens

ADDED_MASK = "<|mask|>"
MASK_CHOICES = "'_' (underscore), 'eos', 'add' (a new token, embeddings resized) or a literal single token"


def resolve_mask_token(tokenizer, choice: str | None) -> tuple[int, bool]:
    """(mask token id, whether a token was added to the tokenizer). `choice` None means the
    tokenizer's own mask token, which must then exist."""
    if choice is None:
        if tokenizer.mask_token_id is None:
            raise UserError(
                f"the tokenizer has no mask token; pass --mask-token with {MASK_CHOICES}"
            )
        return tokenizer.mask_token_id, False
    if choice == "eos":
        if tokenizer.eos_token_id is None:
            raise UserError(f"--mask-token eos: the tokenizer has no eos token; use {MASK_CHOICES}")
        return tokenizer.eos_token_id, False
    if choice == "add":
        tokenizer.add_special_tokens({"mask_token": ADDED_MASK})
        return tokenizer.mask_token_id, True
    ids = tokenizer(choice, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise UserError(
            f"--mask-token {choice!r} is {len(ids)} tokens for this tokenizer, not one; use {MASK_CHOICES}"
        )
    return ids[0], False


class MNTPCollator:
    """Pad variable-length `input_ids`, corrupt `mask_ratio` of the real tokens, place labels for
    next-token prediction (see the module docstring for `shift`)."""

    def __init__(self, mask_token_id: int, pad_token_id: int, vocab_size: int, special_ids: Sequence[int],
                 mask_ratio: float = 0.2, shift: str = "model", generator: torch.Generator | None = None):
        if shift not in ("model", "collator"):
            raise ValueError(f"shift must be 'model' or 'collator', got {shift!r}")
        if not 0.0 < mask_ratio < 1.0:
            raise UserError(f"MNTP mask ratio must be in (0, 1), got {mask_ratio}")
        self.mask_token_id, self.pad_token_id, self.vocab_size = mask_token_id, pad_token_id, vocab_size
        self.special_ids = sorted(set(special_ids) | {pad_token_id})
        self.mask_ratio, self.shift, self.generator = mask_ratio, shift, generator

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        rows = [torch.as_tensor(e["input_ids"], dtype=torch.long) for e in examples]
        length = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = row
            attention_mask[i, : len(row)] = 1
        # Position 0 cannot be predicted from a predecessor: treat it as special for masking.
        protect = input_ids.clone()
        protect[:, 0] = self.pad_token_id
        protect[attention_mask == 0] = self.pad_token_id
        _, _, selected = mask_tokens(protect, self.mask_ratio, self.mask_token_id, self.vocab_size,
                                     self.special_ids, self.generator)
        corrupted = corrupt(input_ids, selected, self.mask_token_id, self.vocab_size, self.generator)
        labels = torch.full_like(input_ids, IGNORE)
        labels[selected] = input_ids[selected]
        if self.shift == "collator":
            labels = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], IGNORE)], dim=1)
        return {"input_ids": corrupted, "attention_mask": attention_mask, "labels": labels}


def train_mntp(model, tokenizer, texts: list[str], mask_token_id: int, work, *, steps: int, batch_size: int,
               lr: float, max_length: int, mask_ratio: float, lora_r: int, seed: int, log_every: int = 10):
    """MNTP on `texts` with the HF Trainer (optionally through a LoRA adapter, merged back at the
    end). `model` is a causal-LM class already made bidirectional; returns the trained model."""
    from transformers import Trainer, TrainingArguments

    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    dataset = [{"input_ids": x} for x in ids if len(x) > 2]
    if not dataset:
        raise UserError("MNTP: no training text longer than two tokens")
    collator = MNTPCollator(mask_token_id, tokenizer.pad_token_id, len(tokenizer), tokenizer.all_special_ids,
                            mask_ratio, shift="model")
    train_model = model
    if lora_r:
        from peft import LoraConfig, get_peft_model

        # "all-linear" leaves the output projection out, as LLM2Vec does.
        lora = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.05, target_modules="all-linear")
        train_model = get_peft_model(model, lora)
    args = TrainingArguments(
        output_dir=str(work), max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=lr,
        warmup_steps=max(1, steps // 10), lr_scheduler_type="linear", weight_decay=0.0, logging_steps=log_every,
        save_strategy="no", report_to="none", remove_unused_columns=False, seed=seed, data_seed=seed,
        use_cpu=not torch.cuda.is_available(), dataloader_drop_last=False,
    )
    Trainer(model=train_model, args=args, train_dataset=dataset, data_collator=collator).train()
    return train_model.merge_and_unload() if lora_r else model
