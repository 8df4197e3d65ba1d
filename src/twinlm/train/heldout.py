"""Held-out loss of a twin and the unigram baseline it must beat."""

from __future__ import annotations

import math

import numpy as np
import torch

from twinlm.data.packing import TokenStore, held_out_blocks
from twinlm.objectives import IGNORE, mask_tokens


@torch.no_grad()
def heldout_loss(model, twin: str, tokenizer, store: TokenStore, seq_len: int, mask_ratio: float = 0.15,
                 batch_size: int = 16, max_blocks: int = 64, seed: int = 0) -> dict[str, float]:
    """Mean token loss on held-out blocks. The encoder's masking uses a fixed generator so that
    two evaluations of the same model give the same number; `accuracy` is masked-token accuracy
    (encoder) or next-token accuracy (decoder)."""
    blocks = held_out_blocks(store, min(seq_len, max(2, store.num_tokens)), limit=max_blocks)
    if not blocks:
        return {}
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    special = sorted(set(tokenizer.all_special_ids))
    total_loss = total_correct = total_count = 0.0
    device = next(model.parameters()).device
    for start in range(0, len(blocks), batch_size):
        ids = torch.from_numpy(np.stack(blocks[start : start + batch_size]))
        if twin == "encoder":
            inputs, labels, _ = mask_tokens(ids, mask_ratio, tokenizer.mask_token_id, len(tokenizer), special, gen)
            logits = model(input_ids=inputs.to(device)).logits
        else:
            logits = model(input_ids=ids.to(device)).logits[:, :-1]
            labels = ids[:, 1:]
        logits, labels = logits.float().cpu(), labels
        keep = labels != IGNORE
        flat_logits, flat_labels = logits[keep], labels[keep]
        total_loss += torch.nn.functional.cross_entropy(flat_logits, flat_labels, reduction="sum").item()
        total_correct += (flat_logits.argmax(-1) == flat_labels).sum().item()
        total_count += flat_labels.numel()
    model.train(was_training)
    loss = total_loss / max(1, total_count)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50)), "accuracy": total_correct / max(1, total_count),
            "tokens": int(total_count)}


def unigram_baseline(train: TokenStore, heldout: TokenStore, vocab_size: int, special_ids=()) -> float:
    """Cross-entropy (nats/token) of held-out tokens under the training unigram distribution
    (add-one smoothed): what a model that ignores context scores. Special tokens are left out
    on both sides, as the MLM never predicts them."""
    counts = np.bincount(np.asarray(train.tokens), minlength=vocab_size).astype(np.float64) + 1.0
    counts[list(special_ids)] = 0.0
    logp = np.log(np.maximum(counts, 1e-30) / counts.sum())
    tokens = np.asarray(heldout.tokens)
    tokens = tokens[~np.isin(tokens, list(special_ids))]
    return float(-logp[tokens].mean())
