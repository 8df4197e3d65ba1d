"""Keep documents apart inside packed blocks.

A packed block is a window over the flat token stream, where every document is framed
`[CLS] ... [SEP]`. So the boundaries are in the block itself: a document starts at every CLS and
at position 0 (the block's first document may be a continuation). From them come per-document
`position_ids` (RoPE restarts with each document) and, per attention implementation:

- sdpa / eager / flex (the encoder): block-diagonal masks built from the positions by a forward
  pre-hook (`keep_documents_apart`), one for the global layers and one with the sliding window,
  through transformers' own mask builders so their window semantics are kept exactly;
- sdpa / eager / flex (the decoder): transformers 5 detects packed sequences from restarted
  `position_ids` (with no `attention_mask` and no cache) and builds causal block-diagonal masks;
  the hook only turns the cache off for such calls;
- flash_attention_2 (both): the batch is flattened to one row with `cu_seq_lens_*` /
  `max_length_*`, transformers' varlen path (as `DataCollatorWithFlattening` and ModernBERT's
  unpadded training do). GPU-only, so only the flattening itself is tested on CPU.
"""

from __future__ import annotations

import torch
from transformers.masking_utils import (
    create_bidirectional_mask,
    create_bidirectional_sliding_window_mask,
    packed_sequence_mask_function,
)

IGNORE = -100
_HOOK_ATTR = "_twinlm_document_hook"


def document_starts(input_ids: torch.Tensor, cls_id: int) -> torch.Tensor:
    """True where a document starts: at every CLS and at each row's first position."""
    starts = input_ids == cls_id
    starts[..., 0] = True
    return starts


def document_positions(input_ids: torch.Tensor, cls_id: int) -> torch.Tensor:
    """Position of each token within its document (0 at every start)."""
    starts = document_starts(input_ids, cls_id)
    index = torch.arange(input_ids.shape[-1], device=input_ids.device).expand_as(input_ids)
    last_start = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=-1).values
    return index - last_start


def document_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """Running document number per row (0, 0, 1, 1, 1, 2 ...) from restarted positions."""
    return (position_ids == 0).long().cumsum(dim=-1) - 1


def mask_boundary_labels(labels: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """Causal-LM labels that never cross documents: the label of each document's first token
    (what the previous document's last position would predict) becomes IGNORE, as Ettin masks
    the boundary."""
    return labels.masked_fill(position_ids == 0, IGNORE)


def flatten_for_varlen(batch: dict[str, torch.Tensor]) -> dict:
    """One row of all tokens plus the flash-attention varlen kwargs (cu_seqlens over documents,
    block starts included since every block starts at position 0)."""
    positions = batch["position_ids"].reshape(1, -1)
    out = {k: v.reshape(1, -1) for k, v in batch.items() if k != "attention_mask"}
    starts = torch.nonzero(positions[0] == 0).flatten()
    cu = torch.cat([starts, torch.tensor([positions.shape[1]], device=starts.device)]).to(torch.int32)
    longest = int((cu[1:] - cu[:-1]).max())
    out.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=longest, max_length_k=longest)
    return out


def encoder_document_masks(config, position_ids: torch.Tensor, dtype: torch.dtype) -> dict:
    """The encoder's per-layer-type masks for one packed batch: global layers see their whole
    document, sliding layers the window within it."""
    batch, length = position_ids.shape
    # Only shape, dtype and device of the embeddings are read by the mask builders.
    shape_only = torch.empty(batch, length, 0, dtype=dtype, device=position_ids.device)
    same_document = packed_sequence_mask_function(document_ids(position_ids))
    kwargs = dict(config=config, inputs_embeds=shape_only, attention_mask=None, and_mask_function=same_document)
    return {
        "full_attention": create_bidirectional_mask(**kwargs),
        "sliding_attention": create_bidirectional_sliding_window_mask(**kwargs),
    }


def _encoder_pre_hook(module, args, kwargs):
    position_ids = kwargs.get("position_ids")
    if position_ids is None or kwargs.get("attention_mask") is not None or "cu_seq_lens_q" in kwargs:
        return None
    # Masks are built even for rows holding one document: a data-dependent skip here would
    # break a torch.compile graph in two at every call.
    dtype = module.get_input_embeddings().weight.dtype
    kwargs["attention_mask"] = encoder_document_masks(module.config, position_ids, dtype)
    return args, kwargs


def _decoder_pre_hook(module, args, kwargs):
    # transformers only detects packed positions without a cache, and the decoder makes a
    # DynamicCache whenever `config.use_cache` is on (its default, also in training).
    if kwargs.get("position_ids") is not None and kwargs.get("past_key_values") is None:
        kwargs["use_cache"] = False
        return args, kwargs
    return None


def keep_documents_apart(model) -> None:
    """Keep attention within documents whenever the model is called with `position_ids` and no
    `attention_mask` (the packed collators' batches): block-diagonal masks for the encoder, no
    cache for the decoder so that transformers' packed-sequence masks apply. Idempotent; the
    model stays a stock class (hooks are not saved)."""
    if getattr(model, _HOOK_ATTR, None) is not None:
        return
    hook = _encoder_pre_hook if getattr(model.config, "model_type", "") == "modernbert" else _decoder_pre_hook
    setattr(model, _HOOK_ATTR, model.register_forward_pre_hook(hook, with_kwargs=True))


def backbone_inputs(model, input_ids: torch.Tensor, position_ids: torch.Tensor | None) -> dict:
    """Keyword arguments for `model.model(...)` (the twin without its head) that keep documents
    apart the way training does, for callers that run the backbone themselves (evaluation)."""
    if position_ids is None:
        return {"input_ids": input_ids}
    batch = {"input_ids": input_ids, "position_ids": position_ids}
    if model.config._attn_implementation == "flash_attention_2":
        batch = flatten_for_varlen(batch)
    elif getattr(model.config, "model_type", "") == "modernbert":
        batch["attention_mask"] = encoder_document_masks(model.config, position_ids,
                                                          model.get_input_embeddings().weight.dtype)
    if getattr(model.config, "model_type", "") != "modernbert":
        batch["use_cache"] = False
    return batch
