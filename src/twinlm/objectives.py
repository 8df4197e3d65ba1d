"""Pretraining objectives as collators: MLM for the encoder twin, next-token CLM for the decoder.

Both take the same packed blocks (no padding). The only difference between the twins' batches
is what is masked and which positions carry labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from twinlm.packed import IGNORE, document_positions, flatten_for_varlen, mask_boundary_labels


def mask_tokens(
    input_ids: torch.Tensor,
    mask_ratio: float,
    mask_token_id: int,
    vocab_size: int,
    special_ids: Sequence[int],
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BERT-style corruption: pick `mask_ratio` of the non-special tokens; of those 80% become the
    mask token, 10% a random token, 10% stay. Returns (corrupted ids, labels, selected mask)."""
    labels = input_ids.clone()
    probs = torch.full(input_ids.shape, mask_ratio)
    special = torch.isin(input_ids, torch.tensor(list(special_ids), dtype=input_ids.dtype))
    probs.masked_fill_(special, 0.0)
    selected = torch.bernoulli(probs, generator=generator).bool()
    labels[~selected] = IGNORE
    corrupted = corrupt(input_ids, selected, mask_token_id, vocab_size, generator)
    return corrupted, labels, selected


def corrupt(input_ids: torch.Tensor, selected: torch.Tensor, mask_token_id: int, vocab_size: int,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """80/10/10 corruption of exactly the `selected` positions (shared by MLM and MNTP)."""
    corrupted = input_ids.clone()
    to_mask = torch.bernoulli(torch.full(input_ids.shape, 0.8), generator=generator).bool() & selected
    corrupted[to_mask] = mask_token_id
    # Half of the remaining 20%: a random token.
    to_random = torch.bernoulli(torch.full(input_ids.shape, 0.5), generator=generator).bool() & selected & ~to_mask
    corrupted[to_random] = torch.randint(vocab_size, input_ids.shape, generator=generator)[to_random]
    return corrupted


def mask_rows(
    input_ids: torch.Tensor,
    mask_ratio: float,
    mask_token_id: int,
    vocab_size: int,
    special_ids: Sequence[int],
    generators: Sequence[torch.Generator],
) -> tuple[torch.Tensor, torch.Tensor]:
    """`mask_tokens` (same 80/10/10 rule) with row i drawn from `generators[i]` alone, so that a
    sample's mask does not depend on which samples share its batch. Returns (corrupted, labels)."""
    rows, length = input_ids.shape
    draws = torch.stack([torch.rand(3, length, generator=g) for g in generators], dim=1)  # [3, rows, L]
    tokens = torch.stack([torch.randint(vocab_size, (length,), generator=g) for g in generators])
    special = torch.isin(input_ids, torch.tensor(list(special_ids), dtype=input_ids.dtype))
    selected = (draws[0] < mask_ratio) & ~special
    to_mask = selected & (draws[1] < 0.8)
    to_random = selected & ~to_mask & (draws[2] < 0.5)
    labels = input_ids.masked_fill(~selected, IGNORE)
    corrupted = input_ids.masked_fill(to_mask, mask_token_id)
    corrupted = torch.where(to_random, tokens.to(input_ids.dtype), corrupted)
    return corrupted, labels


class PackedCollator:
    """Stack blocks and, with `document_masking`, add per-document `position_ids` (and no
    attention mask, so that attention is kept within documents: see `twinlm.packed`). With
    `flatten` (flash-attention varlen) the batch becomes one row with `cu_seq_lens_*`."""

    def __init__(self, cls_id: int | None, document_masking: bool = True, flatten: bool = False):
        if document_masking and cls_id is None:
            raise ValueError("document masking needs the tokenizer's [CLS] id (every document starts with it)")
        if flatten and not document_masking:
            raise ValueError("flattening a batch for varlen attention needs document masking")
        self.cls_id, self.document_masking, self.flatten = cls_id, document_masking, flatten

    def stack(self, examples: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_ids = torch.stack([e["input_ids"] for e in examples])
        positions = document_positions(input_ids, self.cls_id) if self.document_masking else None
        return input_ids, positions

    def finish(self, input_ids, positions, labels) -> dict[str, torch.Tensor]:
        if positions is None:
            return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
        batch = {"input_ids": input_ids, "position_ids": positions, "labels": labels}
        return flatten_for_varlen(batch) if self.flatten else batch


class MLMCollator(PackedCollator):
    """Stack blocks and apply `mask_tokens` at the phase's mask ratio."""

    def __init__(self, tokenizer, mask_ratio: float, document_masking: bool = True, flatten: bool = False):
        super().__init__(tokenizer.cls_token_id, document_masking, flatten)
        self.mask_ratio = mask_ratio
        self.mask_token_id = tokenizer.mask_token_id
        self.vocab_size = len(tokenizer)
        self.special_ids = sorted(set(tokenizer.all_special_ids))

    def __call__(self, examples: list[dict[str, torch.Tensor]],
                 generators: Sequence[torch.Generator] | None = None) -> dict[str, torch.Tensor]:
        """With `generators` (one per example), each example's mask is drawn from its own."""
        input_ids, positions = self.stack(examples)
        if generators is not None:
            corrupted, labels = mask_rows(input_ids, self.mask_ratio, self.mask_token_id, self.vocab_size,
                                          self.special_ids, generators)
        else:
            corrupted, labels, _ = mask_tokens(
                input_ids, self.mask_ratio, self.mask_token_id, self.vocab_size, self.special_ids
            )
        return self.finish(corrupted, positions, labels)


class CLMCollator(PackedCollator):
    """Stack blocks; labels are the inputs (the model shifts them by one), with the document
    boundaries masked when documents are kept apart."""

    def __init__(self, cls_id: int | None, document_masking: bool = True, flatten: bool = False):
        super().__init__(cls_id, document_masking, flatten)

    def __call__(self, examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        input_ids, positions = self.stack(examples)
        labels = input_ids.clone() if positions is None else mask_boundary_labels(input_ids, positions)
        return self.finish(input_ids, positions, labels)


def collator_for(twin: str, tokenizer, mask_ratio: float, document_masking: bool = True,
                 attn_implementation: str = "sdpa"):
    flatten = document_masking and attn_implementation == "flash_attention_2"
    if twin == "encoder":
        return MLMCollator(tokenizer, mask_ratio, document_masking, flatten)
    return CLMCollator(tokenizer.cls_token_id, document_masking, flatten)
