"""Load the decoder that SFT, BCO and generation work on, refusing what cannot generate."""

from __future__ import annotations

from pathlib import Path

from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from twinlm.errors import UserError
from twinlm.model_files import check_model_source, check_tokenizer_source


def check_decoder(name_or_path: str | Path, role: str = "model") -> None:
    """UserError unless `name_or_path` is a causal LM (an encoder twin, say, is not) with complete
    weights; reads only config.json and the safetensors headers."""
    check_model_source(name_or_path, role)
    try:
        config = AutoConfig.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load {role} {str(name_or_path)!r}: {str(err).splitlines()[0]}") from None
    archs = config.architectures or []
    causal = any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in archs)
    if not causal and (archs or config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES):
        what = ", ".join(archs) or config.model_type
        raise UserError(
            f"{role} {str(name_or_path)!r} is not a decoder ({what}); pass a causal LM such as a twinlm "
            "decoder twin (<run>/decoder, ModernBertDecoderForCausalLM), not the encoder"
        )


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    """The decoder's tokenizer, with the eos token as pad token where it has none."""
    check_tokenizer_source(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_decoder(name_or_path: str | Path, role: str = "model",
                 tokenizer: PreTrainedTokenizerBase | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    check_decoder(name_or_path, role)
    tokenizer = tokenizer or load_tokenizer(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(str(name_or_path))
    return model, tokenizer


def check_same_vocab(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase, what: str) -> None:
    """Log-probs of two models are only comparable token by token if they share one vocabulary."""
    va, vb = a.get_vocab(), b.get_vocab()
    if va != vb:
        only_a, only_b = len(va.keys() - vb.keys()), len(vb.keys() - va.keys())
        differ = sum(1 for k in va.keys() & vb.keys() if va[k] != vb[k])
        raise UserError(
            f"{what} has a different tokenizer from the policy ({len(vb)} vs {len(va)} tokens; "
            f"{only_a} only in the policy's, {only_b} only in the reference's, {differ} with other ids); "
            "use a reference model with the policy's tokenizer"
        )
