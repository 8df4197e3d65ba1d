"""Build the twins from one shape: stock `ModernBertForMaskedLM` and `ModernBertDecoderForCausalLM`.

The two configs are made from the same numbers so that the twins differ only in objective and
attention mask. Nothing here subclasses a model: every checkpoint is a plain HF folder.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    ModernBertConfig,
    ModernBertDecoderConfig,
    ModernBertDecoderForCausalLM,
    ModernBertForMaskedLM,
    PreTrainedModel,
)

from twinlm.recipe import ModelShape


def layer_types(num_layers: int, global_every: int) -> list[str]:
    """ModernBERT's alternation: layer i is global when i % global_every == 0."""
    return ["full_attention" if i % global_every == 0 else "sliding_attention" for i in range(num_layers)]


def rope_parameters(global_theta: float, local_theta: float) -> dict[str, dict[str, Any]]:
    return {
        "full_attention": {"rope_type": "default", "rope_theta": float(global_theta)},
        "sliding_attention": {"rope_type": "default", "rope_theta": float(local_theta)},
    }


def shared_config_kwargs(
    shape: ModelShape, vocab_size: int, special_ids: dict[str, int], rope_theta: float
) -> dict[str, Any]:
    return dict(
        vocab_size=vocab_size,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        max_position_embeddings=shape.max_position_embeddings,
        layer_types=layer_types(shape.layers, shape.global_attn_every_n_layers),
        local_attention=shape.local_attention,
        rope_parameters=rope_parameters(rope_theta, shape.local_rope_theta),
        attention_dropout=shape.attention_dropout,
        hidden_activation="gelu",
        norm_eps=1e-5,
        norm_bias=False,
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=True,
        **special_ids,
    )


def special_token_ids(tokenizer) -> dict[str, int]:
    """Map the tokenizer's [CLS]/[SEP]/[PAD] onto the config's bos/eos/pad/cls/sep ids."""
    cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else sep_id
    return dict(
        bos_token_id=cls_id, eos_token_id=sep_id, pad_token_id=pad_id, cls_token_id=cls_id, sep_token_id=sep_id
    )


def padded_vocab(size: int, multiple: int = 64) -> int:
    """Pad the embedding table to a multiple of 64 (as ModernBERT does: 50,368) for matmul speed."""
    return ((size + multiple - 1) // multiple) * multiple


def build_config(twin: str, shape: ModelShape, tokenizer, rope_theta: float = 10_000.0):
    kwargs = shared_config_kwargs(shape, padded_vocab(len(tokenizer)), special_token_ids(tokenizer), rope_theta)
    if twin == "encoder":
        return ModernBertConfig(**kwargs)
    if twin == "decoder":
        return ModernBertDecoderConfig(**kwargs)
    raise ValueError(f"twin must be 'encoder' or 'decoder', got {twin!r}")


def build_twin(twin: str, config, seed: int, attn_implementation: str = "sdpa") -> PreTrainedModel:
    """Initialise one twin from its config with a fixed seed (both twins use the same seed)."""
    torch.manual_seed(seed)
    cls = ModernBertForMaskedLM if twin == "encoder" else ModernBertDecoderForCausalLM
    config._attn_implementation = attn_implementation
    return cls(config)


def set_global_rope_theta(model: PreTrainedModel, theta: float) -> None:
    """Context extension raises the global-attention RoPE theta; recompute the cached frequencies."""
    config = model.config
    params = dict(config.rope_parameters)
    params["full_attention"] = {**params["full_attention"], "rope_theta": float(theta)}
    config.rope_parameters = params
    inner = model.model
    # The rotary module caches inverse frequencies per layer type at construction; rebuild it.
    device = next(model.parameters()).device
    inner.rotary_emb = type(inner.rotary_emb)(config=config, device=device)


def count_parameters(model: torch.nn.Module) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def estimate_parameters(shape: ModelShape, vocab_size: int, twin: str = "encoder") -> int:
    """Parameter count from the shape alone (matches `count_parameters` of a built twin)."""
    h, i, n = shape.hidden, shape.intermediate, shape.layers
    per_layer = 4 * h * h + h * 2 * i + i * h + 2 * h  # qkv+o, Wi (GLU), Wo, two norms (no bias)
    head = h * h + h + vocab_size  # prediction head dense + norm, decoder bias (tied weight)
    # embeddings + their norm, layers (the first has no attention norm), final norm, head.
    return vocab_size * h + h + n * per_layer - h + h + head


def training_flops_per_token(shape: ModelShape, vocab_size: int, seq_len: int, head_fraction: float = 1.0) -> float:
    """Forward+backward FLOPs per token: 6 x matmul parameters + attention scores.

    `head_fraction` is the share of positions whose vocabulary projection is computed (the
    encoder with a sparse MLM head computes it only on masked positions).
    """
    h, i, n = shape.hidden, shape.intermediate, shape.layers
    body = n * (4 * h * h + 3 * h * i) + h * h
    head = h * vocab_size * head_fraction
    global_layers = len([t for t in layer_types(n, shape.global_attn_every_n_layers) if t == "full_attention"])
    window = min(seq_len, shape.local_attention)
    # QK^T and AV: 2 matmuls x 2 FLOPs x context per layer, x3 for forward + backward.
    attn = 3 * 2 * 2 * h * (global_layers * seq_len + (n - global_layers) * window)
    return 6 * (body + head) + attn
