"""Log-likelihood scoring of a continuation: decoders by the sum of next-token log-probs,
encoders by masked pseudo-log-likelihood (Salazar et al. 2020): mask one continuation token at a
time and read its log-prob with everything else visible.

`prediction_offset`: where a masked-LM model puts the prediction for the token at position i, at
i + offset. 0 for a native encoder; -1 for an encoder converted with MNTP (`twinlm convert
decoder-to-encoder --objective mntp`, whose conversion.json says so)."""

from __future__ import annotations

import torch


def align_predictions(logits: torch.Tensor, labels: torch.Tensor, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) cut so that logits[:, j] is the prediction for labels[:, j]: with offset
    -1 the label at position i meets the logits at i - 1 (position 0 has no predictor and drops
    out; it is a special token, never masked)."""
    if offset > 0:
        raise ValueError(f"prediction_offset must be <= 0, got {offset}")
    if offset == 0:
        return logits, labels
    return logits[:, :offset], labels[:, -offset:]


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _split_ids(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of the context (with the tokenizer's leading special tokens) and of the
    continuation. Tokenised apart so that the continuation's tokens are the same whatever the
    context, which is what makes two choices comparable."""
    ctx = tokenizer(context, add_special_tokens=False).input_ids
    cont = tokenizer(continuation, add_special_tokens=False).input_ids
    if tokenizer.cls_token_id is not None:
        ctx = [tokenizer.cls_token_id] + ctx
    elif tokenizer.bos_token_id is not None:
        ctx = [tokenizer.bos_token_id] + ctx
    return ctx, cont


@torch.no_grad()
def decoder_loglik(model, tokenizer, context: str, continuations: list[str]) -> list[tuple[float, int, bool]]:
    """For each continuation: (sum of log p(token | prefix) over its tokens, number of tokens,
    whether greedy decoding would have produced exactly those tokens)."""
    rows, spans = [], []
    for cont in continuations:
        ctx_ids, cont_ids = _split_ids(tokenizer, context, cont)
        rows.append(ctx_ids + cont_ids)
        spans.append((len(ctx_ids), len(cont_ids)))
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id or 0
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=_device(model))
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=_device(model))
    logprobs = model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
    out = []
    for i, (start, n) in enumerate(spans):
        # The token at position p is predicted by the logits at p - 1.
        targets = ids[i, start : start + n]
        lp = logprobs[i, start - 1 : start + n - 1]
        picked = lp.gather(-1, targets[:, None]).squeeze(-1)
        greedy = bool((lp.argmax(-1) == targets).all())
        out.append((picked.sum().item(), n, greedy))
    return out


@torch.no_grad()
def encoder_pll(model, tokenizer, context: str, continuations: list[str], suffix: str = "",
                prediction_offset: int = 0) -> list[tuple[float, int]]:
    """For each continuation: (pseudo-log-likelihood of its tokens, number of tokens). The input
    is `[CLS] context continuation suffix [SEP]`; one copy per continuation token, with that token
    replaced by [MASK], all scored in one batch."""
    out = []
    suffix_ids = tokenizer(suffix, add_special_tokens=False).input_ids if suffix else []
    sep = [tokenizer.sep_token_id] if tokenizer.sep_token_id is not None else []
    for cont in continuations:
        ctx_ids, cont_ids = _split_ids(tokenizer, context, cont)
        full = torch.tensor(ctx_ids + cont_ids + suffix_ids + sep, device=_device(model))
        positions = torch.arange(len(ctx_ids), len(ctx_ids) + len(cont_ids), device=full.device)
        batch = full.repeat(len(cont_ids), 1)
        batch[torch.arange(len(cont_ids)), positions] = tokenizer.mask_token_id
        logprobs = model(input_ids=batch).logits.float().log_softmax(-1)
        picked = logprobs[torch.arange(len(cont_ids)), positions + prediction_offset, full[positions]]
        out.append((picked.sum().item(), len(cont_ids)))
    return out
