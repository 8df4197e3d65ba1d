"""Held-out loss of a twin and the unigram baseline it must beat, both on bounded work.

Evaluation runs at every phase end of an Ettin-scale run, so nothing here grows with the corpus
or materializes full-vocabulary logits: the model is scored on a fixed token budget, in the
training precision, with the loss computed from the hidden states a chunk of positions at a time
(the encoder only at its masked positions), and documents are kept apart as in training. The
unigram baseline counts tokens in a bounded, evenly spaced sample of the training store.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from twinlm.data.sampling import held_out_blocks
from twinlm.data.store import TokenStore
from twinlm.objectives import IGNORE, mask_tokens
from twinlm.packed import backbone_inputs, document_positions, mask_boundary_labels
from twinlm.train.loss import shifted_targets

UNIGRAM_SAMPLE_TOKENS = 2**24  # tokens counted for the unigram baseline at most
UNIGRAM_WINDOWS = 4096  # evenly spaced windows they are read from


def _head(model, twin: str) -> torch.nn.Module:
    prediction = model.head if twin == "encoder" else model.lm_head
    return torch.nn.Sequential(prediction, model.decoder)


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def heldout_loss(model, twin: str, tokenizer, store: TokenStore, seq_len: int, mask_ratio: float = 0.15,
                 batch_size: int = 16, token_budget: int = 262_144, seed: int = 0, precision: str = "fp32",
                 document_masking: bool = True, chunk: int = 8192) -> dict[str, float]:
    """Mean token loss on the first held-out blocks that fit in `token_budget` tokens. The
    encoder's masking uses a fixed generator so that two evaluations of the same model give the
    same number; `accuracy` is masked-token accuracy (encoder) or next-token accuracy (decoder)."""
    seq_len = min(seq_len, max(2, store.num_tokens))
    blocks = held_out_blocks(store, seq_len, limit=max(1, token_budget // seq_len))
    if not blocks:
        return {}
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    special = sorted(set(tokenizer.all_special_ids))
    device = next(model.parameters()).device
    head = _head(model, twin)
    total_loss = total_correct = total_count = 0.0
    for start in range(0, len(blocks), batch_size):
        ids = torch.from_numpy(np.stack(blocks[start : start + batch_size]))
        positions = document_positions(ids, tokenizer.cls_token_id) if document_masking else None
        if twin == "encoder":
            inputs, labels, _ = mask_tokens(ids, mask_ratio, tokenizer.mask_token_id, len(tokenizer), special, gen)
        else:
            inputs, labels = ids, (mask_boundary_labels(ids, positions) if document_masking else ids)
        kwargs = backbone_inputs(model, inputs.to(device), None if positions is None else positions.to(device))
        with _autocast(device, precision):
            hidden = model.model(**kwargs).last_hidden_state.reshape(*ids.shape, -1)
            labels = labels.to(device)
            if twin == "encoder":
                keep = labels != IGNORE
                hidden, targets = hidden[keep], labels[keep]
            else:
                hidden, targets = shifted_targets(hidden, labels)
            for i in range(0, targets.numel(), chunk):
                logits = head(hidden[i : i + chunk]).float()
                y = targets[i : i + chunk]
                total_loss += F.cross_entropy(logits, y, reduction="sum").item()
                total_correct += (logits.argmax(-1) == y).sum().item()
        total_count += targets.numel()
    model.train(was_training)
    loss = total_loss / max(1, total_count)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50)), "accuracy": total_correct / max(1, total_count),
            "tokens": int(total_count)}


def sample_tokens(store: TokenStore, max_tokens: int = UNIGRAM_SAMPLE_TOKENS,
                  windows: int = UNIGRAM_WINDOWS) -> np.ndarray:
    """The whole store when it holds at most `max_tokens`, else `windows` evenly spaced windows
    of `max_tokens // windows` tokens (first at the start, last at the end): bounded reads."""
    n = store.num_tokens
    if n <= max_tokens:
        return np.asarray(store.tokens)
    width = max(1, max_tokens // windows)
    starts = np.linspace(0, n - width, num=min(windows, max_tokens)).astype(np.int64)
    return np.concatenate([np.asarray(store.tokens[s : s + width]) for s in starts])


def unigram_baseline(train: TokenStore, heldout: TokenStore, vocab_size: int, special_ids=(),
                     heldout_tokens: int | None = None, max_tokens: int = UNIGRAM_SAMPLE_TOKENS) -> float:
    """Cross-entropy (nats/token) of held-out tokens under the training unigram distribution
    (add-one smoothed; counted on `sample_tokens` of the training store): what a model that
    ignores context scores. Special tokens are left out on both sides, as the MLM never predicts
    them. `heldout_tokens` bounds the held-out side (the evaluation's token budget)."""
    counts = np.bincount(sample_tokens(train, max_tokens), minlength=vocab_size).astype(np.float64) + 1.0
    counts[list(special_ids)] = 0.0
    logp = np.log(np.maximum(counts, 1e-30) / counts.sum())
    tokens = np.asarray(heldout.tokens[:heldout_tokens] if heldout_tokens else heldout.tokens)
    tokens = tokens[~np.isin(tokens, list(special_ids))]
    return float(-logp[tokens].mean())
