"""Make a decoder attend bidirectionally through its config, so the saved folder stays stock.

transformers 5 builds every mask of these families with `create_causal_mask` /
`create_sliding_window_causal_mask`, which fall back to the bidirectional (sliding) mask when
`config.is_causal` is False, and the model's forward passes `is_causal` on to SDPA (ETTIN-FACTS
§6; checked for each family below on tiny random models in tests/unit/test_llm2vec_bidirectional.py).
Padding stays masked. `config.is_causal` is written to config.json by `save_pretrained` and read
back by `from_pretrained` (also inside `SentenceTransformer(path)`), so a saved model reloads
bidirectional without twinlm. Eager attention breaks (ModernBertDecoder's eager path raises a
TypeError), hence the refusal; flash/flex attention are not verified here and are refused too.
"""

from __future__ import annotations

from twinlm.errors import UserError

# config.model_type -> family name shown to users.
SUPPORTED = {
    "modernbert-decoder": "ModernBertDecoder",
    "llama": "Llama",
    "mistral": "Mistral",
    "qwen2": "Qwen2",
    "qwen3": "Qwen3",
    "gemma": "Gemma",
    "gemma3_text": "Gemma3 (text)",
}
# Families that are decoders but cannot take the sdpa route, with the reason users are told.
NO_SDPA = {"gemma2": "Gemma2's attention-logit softcapping has no sdpa path in transformers, and eager breaks"}
ENCODER_TYPES = ("modernbert", "bert", "roberta", "deberta-v2", "xlm-roberta", "distilbert", "electra")
ATTENTION_OK = ("sdpa",)


def supported_names() -> str:
    return ", ".join(SUPPORTED.values())


def check_decoder_config(config, what: str = "model") -> None:
    """Refuse encoders, unsupported architectures and non-SDPA attention, naming the fix."""
    model_type = getattr(config, "model_type", "?")
    arch = ", ".join(getattr(config, "architectures", None) or [model_type])
    if model_type in ENCODER_TYPES:
        raise UserError(
            f"{what} is an encoder ({arch}); llm2vec turns a decoder into an embedding model. "
            f"Use an encoder directly (twinlm finetune) or give a decoder: {supported_names()}"
        )
    if model_type not in SUPPORTED:
        why = f" ({NO_SDPA[model_type]})" if model_type in NO_SDPA else ""
        raise UserError(
            f"{what} has architecture {arch} (model_type {model_type!r}), which twinlm cannot make "
            f"bidirectional{why}; supported decoders: {supported_names()}"
        )


def check_attention(attn_implementation: str | None) -> None:
    if attn_implementation not in ATTENTION_OK:
        raise UserError(
            f"attention implementation {attn_implementation!r} cannot be made bidirectional "
            f"(eager attention breaks under is_causal=False); use --attn-implementation sdpa"
        )


def make_bidirectional(model) -> None:
    """Switch `model` (any supported decoder, with or without an LM head) to bidirectional attention."""
    config = model.config
    check_decoder_config(config)
    check_attention(config._attn_implementation)
    # Not Gemma's `use_bidirectional_attention`: Gemma3 rewrites its sliding window from that flag
    # at config construction, so flipping it afterwards would leave the window inconsistent.
    config.is_causal = False
