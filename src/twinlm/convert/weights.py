"""Exact weight mapping between the twins: `ModernBertDecoderForCausalLM` <-> `ModernBertForMaskedLM`.

The two stock classes are the same network apart from three things, each handled here:

1. Attention projections: the encoder fuses them (`attn.Wqkv`, rows laid out [q; k; v], each
   heads x head_dim), the decoder keeps `q_proj`, `k_proj`, `v_proj`. Fusing/splitting is exact.
2. Sliding windows. Both configs derive `sliding_window = local_attention // 2`. The encoder's
   local layers attend to |i - j| <= local_attention // 2; the decoder run bidirectionally
   (`config.is_causal = False`) uses the same bidirectional sliding mask, so keeping
   `local_attention` unchanged gives identical masks. Run causally, the decoder attends to
   i - local_attention // 2 < j <= i, one key less of look-back than the encoder's window cut
   causally (i - local_attention // 2 <= j <= i). Keeping `local_attention` makes the converted
   model shape-identical to a native twin (what `twinlm compare` needs); the one-key difference
   only exists in local layers at positions >= local_attention // 2.
3. Prediction heads: both are dense -> activation -> LayerNorm -> tied vocabulary projection
   (+ bias), so they map one to one and the logits coincide too. What differs is what the head
   was trained for: the decoder's logits at i predict token i + 1, the encoder's predict token i.
   The copied head is the sensible initialisation (same embedding geometry, tied weights) and is
   re-purposed by the continued training that follows a conversion.
"""

from __future__ import annotations

import torch
from transformers import (
    ModernBertConfig,
    ModernBertDecoderConfig,
    ModernBertDecoderForCausalLM,
    ModernBertForMaskedLM,
)

from twinlm.errors import UserError

# Config fields the two classes share; everything else (decoder's use_cache, encoder's
# sparse_prediction, classifier_pooling, ...) keeps the target class's default.
SHARED_CONFIG_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "hidden_activation", "max_position_embeddings", "initializer_range", "initializer_cutoff_factor",
    "norm_eps", "norm_bias", "pad_token_id", "eos_token_id", "bos_token_id", "cls_token_id", "sep_token_id",
    "attention_bias", "attention_dropout", "embedding_dropout", "mlp_bias", "mlp_dropout", "decoder_bias",
    "classifier_dropout", "classifier_bias", "classifier_activation", "local_attention", "layer_types",
    "rope_parameters", "tie_word_embeddings",
)

DECODER_HEAD, ENCODER_HEAD = "lm_head.", "head."


def _shared(config) -> dict:
    data = config.to_dict()
    return {k: data[k] for k in SHARED_CONFIG_KEYS if k in data}


def encoder_config_from(decoder_config: ModernBertDecoderConfig) -> ModernBertConfig:
    config = ModernBertConfig(**_shared(decoder_config))
    config._attn_implementation = decoder_config._attn_implementation
    return config


def decoder_config_from(encoder_config: ModernBertConfig) -> ModernBertDecoderConfig:
    config = ModernBertDecoderConfig(**_shared(encoder_config))
    config._attn_implementation = encoder_config._attn_implementation
    return config


def decoder_to_encoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a decoder state dict into the encoder's names, fusing q/k/v into Wqkv."""
    out = {}
    for key, value in state.items():
        if key.endswith((".attn.k_proj.weight", ".attn.v_proj.weight", ".attn.k_proj.bias", ".attn.v_proj.bias")):
            continue  # consumed with q_proj below
        if ".attn.q_proj." in key:
            prefix, kind = key.split(".attn.q_proj.")
            parts = [state[f"{prefix}.attn.{p}_proj.{kind}"] for p in ("q", "k", "v")]
            out[f"{prefix}.attn.Wqkv.{kind}"] = torch.cat(parts, dim=0)
        elif key.startswith(DECODER_HEAD):
            out[ENCODER_HEAD + key[len(DECODER_HEAD):]] = value
        else:
            out[key] = value
    return out


def encoder_to_decoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an encoder state dict into the decoder's names, splitting Wqkv into q/k/v."""
    out = {}
    for key, value in state.items():
        if ".attn.Wqkv." in key:
            prefix, kind = key.split(".attn.Wqkv.")
            for name, part in zip(("q", "k", "v"), value.chunk(3, dim=0), strict=True):
                out[f"{prefix}.attn.{name}_proj.{kind}"] = part.clone()
        elif key.startswith(ENCODER_HEAD):
            out[DECODER_HEAD + key[len(ENCODER_HEAD):]] = value
        else:
            out[key] = value
    return out


def _load_exact(model, state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    # The tied output projection may be absent from a state dict saved with tied weights.
    missing = [k for k in missing if k != "decoder.weight"]
    if missing or unexpected:
        raise ValueError(f"weight mapping incomplete: missing {missing}, unexpected {unexpected}")
    if model.config.tie_word_embeddings:
        model.tie_weights()


def decoder_to_encoder(decoder: ModernBertDecoderForCausalLM) -> ModernBertForMaskedLM:
    """A `ModernBertForMaskedLM` computing exactly what `decoder` computes with bidirectional attention."""
    if not isinstance(decoder, ModernBertDecoderForCausalLM):
        raise UserError(f"decoder-to-encoder needs a ModernBertDecoderForCausalLM, got {type(decoder).__name__}")
    encoder = ModernBertForMaskedLM(encoder_config_from(decoder.config))
    _load_exact(encoder, decoder_to_encoder_state(decoder.state_dict()))
    return encoder.to(dtype=next(decoder.parameters()).dtype)


def encoder_to_decoder(encoder: ModernBertForMaskedLM) -> ModernBertDecoderForCausalLM:
    """A `ModernBertDecoderForCausalLM` with the encoder's weights (identical outputs when run
    bidirectionally; causally, see the module docstring for the sliding-window difference)."""
    if not isinstance(encoder, ModernBertForMaskedLM):
        raise UserError(f"encoder-to-decoder needs a ModernBertForMaskedLM, got {type(encoder).__name__}")
    decoder = ModernBertDecoderForCausalLM(decoder_config_from(encoder.config))
    _load_exact(decoder, encoder_to_decoder_state(encoder.state_dict()))
    return decoder.to(dtype=next(encoder.parameters()).dtype)
