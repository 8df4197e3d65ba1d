"""Log-likelihood scoring of a continuation given a context.

Decoders: the sum of next-token log-probs. Encoders, two ways (`ENCODER_SCORINGS`):
- "ettin", the protocol Ettin evaluated its encoders with on generative tasks (the
  `EncoderAsPseudoCausalLM` model of its lm-evaluation-harness fork): the continuation, followed by
  the end token, is read left to right; for the token at position p the input is
  `[CLS] context continuation[:p] [MASK] [MASK] [MASK] [SEP]` (the token itself and two more are
  masks, then the end token, nothing of the continuation after p visible) and the first mask's
  logits score it. The end token is scored too, as in the fork.
- "pll", classic pseudo-log-likelihood (Salazar et al. 2020): `[CLS] context continuation [SEP]`
  with one continuation token masked at a time, everything else visible.

`prediction_offset`: where a masked-LM model puts the prediction for the token at position i, at
i + offset. 0 for a native encoder; -1 for an encoder converted with MNTP (`twinlm convert
decoder-to-encoder --objective mntp`, whose conversion.json says so; the fork's `uses_mtnp`)."""

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


ENCODER_SCORINGS = ("ettin", "pll")
# Masks after the scored position in Ettin's protocol: the token's own mask and two more.
FUTURE_MASKS = 2


def encoder_pair(tokenizer, context: str, continuation: str, add_bos: bool = True) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) the way Ettin's fork encodes a request for an encoder:
    trailing spaces of the context move to the continuation (lm-eval's rule), the context gets the
    start token ([CLS]) and no end token, the continuation is tokenised on its own."""
    stripped = context.rstrip()
    if stripped != context:
        continuation, context = context[len(stripped):] + continuation, stripped
    ctx = tokenizer(context, add_special_tokens=False).input_ids if context else []
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    if add_bos or not ctx:  # an empty context still needs one token to condition on
        ctx = [start] + ctx
    return ctx, tokenizer(continuation, add_special_tokens=False).input_ids


def end_token_id(tokenizer) -> int:
    return tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id


def _ettin_rows(ctx: list[int], cont: list[int], mask: int, end: int, offset: int, max_len: int):
    """(input ids, position read, target) per scored token: the continuation, then the end token."""
    full = cont + [end]
    for p, target in enumerate(full):
        prefix = ctx + full[:p]
        keep = max_len - (FUTURE_MASKS + 2)
        if len(prefix) > keep:  # too long: drop the oldest context tokens, never the start token
            prefix = prefix[:1] + prefix[len(prefix) - keep + 1:]
        yield prefix + [mask] * (FUTURE_MASKS + 1) + [end], len(prefix) + offset, target


def _pll_rows(ctx: list[int], cont: list[int], mask: int, end: int, offset: int, max_len: int):
    """(input ids, position read, target) per continuation token, that token masked."""
    over = len(ctx) + len(cont) + 1 - max_len
    if over > 0:
        ctx = ctx[:1] + ctx[1 + over:]
    full = ctx + cont + [end]
    for p, target in enumerate(cont):
        ids = list(full)
        ids[len(ctx) + p] = mask
        yield ids, len(ctx) + p + offset, target


@torch.no_grad()
def encoder_loglik(model, tokenizer, pairs: list[tuple[list[int], list[int]]], scoring: str = "ettin",
                   prediction_offset: int = 0, batch_size: int = 32, progress=None) -> list[tuple[float, bool, int]]:
    """For each (context ids, continuation ids): (sum of the scored tokens' log-probs, whether
    every scored token is the argmax, number of tokens scored). Rows of equal length are batched
    without padding, so every input is exactly what the model would see alone (the fork's batch
    size 1). `progress(n)` is called after every forward with the number of rows it scored."""
    if scoring not in ENCODER_SCORINGS:
        raise ValueError(f"encoder scoring must be one of {ENCODER_SCORINGS}, got {scoring!r}")
    if prediction_offset > 0:
        raise ValueError(f"prediction_offset must be <= 0, got {prediction_offset}")
    rows_of = _ettin_rows if scoring == "ettin" else _pll_rows
    mask, end = tokenizer.mask_token_id, end_token_id(tokenizer)
    max_len = getattr(model.config, "max_position_embeddings", None) or 8192
    by_length: dict[int, list] = {}
    for i, (ctx, cont) in enumerate(pairs):
        for ids, pos, target in rows_of(list(ctx), list(cont), mask, end, prediction_offset, max_len):
            by_length.setdefault(len(ids), []).append((i, ids, pos, target))
    totals, greedy, counts = [0.0] * len(pairs), [True] * len(pairs), [0] * len(pairs)
    device = _device(model)
    for rows in by_length.values():
        for b in range(0, len(rows), batch_size):
            chunk = rows[b: b + batch_size]
            ids = torch.tensor([r[1] for r in chunk], device=device)
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
            picked = logits[torch.arange(len(chunk), device=device), [r[2] for r in chunk]].float()
            logprobs = picked.log_softmax(-1)
            best = picked.argmax(-1).tolist()
            for (i, _, _, target), lp, top in zip(chunk, logprobs, best):
                totals[i] += lp[target].item()
                greedy[i] = greedy[i] and top == target
                counts[i] += 1
            if progress is not None:
                progress(len(chunk))
    return [(t, g, n) for t, g, n in zip(totals, greedy, counts)]


def encoder_pll(model, tokenizer, context: str, continuations: list[str],
                prediction_offset: int = 0) -> list[tuple[float, int]]:
    """For each continuation: (pseudo-log-likelihood of its tokens, number of tokens): the input
    is `[CLS] context continuation [SEP]` with one continuation token masked at a time."""
    pairs = [_split_ids(tokenizer, context, c) for c in continuations]
    return [(lp, n) for lp, _, n in encoder_loglik(model, tokenizer, pairs, "pll", prediction_offset)]
