"""The config switch makes every supported decoder family bidirectional (tiny random models, no hub)."""

from __future__ import annotations

import pytest
import torch
import transformers as T

from twinlm.convert.bidirectional import SUPPORTED, check_decoder_config, make_bidirectional
from twinlm.errors import UserError

SMALL = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=8, pad_token_id=0, bos_token_id=1, eos_token_id=2)
FAMILIES = {
    "llama": (T.LlamaConfig, T.LlamaModel),
    "mistral": (T.MistralConfig, T.MistralModel),
    "qwen2": (T.Qwen2Config, T.Qwen2Model),
    "qwen3": (T.Qwen3Config, T.Qwen3Model),
    "gemma": (T.GemmaConfig, T.GemmaModel),
    "gemma3_text": (T.Gemma3TextConfig, T.Gemma3TextModel),
    "modernbert-decoder": (T.ModernBertDecoderConfig, T.ModernBertDecoderModel),
}


def build(family: str, attn: str = "sdpa"):
    config_cls, model_cls = FAMILIES[family]
    kwargs = dict(SMALL)
    if family == "modernbert-decoder":
        for key in ("num_key_value_heads", "head_dim"):
            kwargs.pop(key)
        kwargs.update(cls_token_id=1, sep_token_id=2, local_attention=4)
    config = config_cls(**kwargs)
    config._attn_implementation = attn
    torch.manual_seed(0)
    return model_cls(config).eval()


def first_token_moves(model, length: int = 12) -> bool:
    x = torch.randint(3, 100, (1, length), generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[0, -1] = 3 + (y[0, -1] - 2) % 97
    with torch.no_grad():
        a = model(input_ids=x).last_hidden_state[0, 0]
        b = model(input_ids=y).last_hidden_state[0, 0]
    return not torch.allclose(a, b, atol=1e-6)


def test_every_supported_family_is_tested():
    assert set(FAMILIES) == set(SUPPORTED)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_becomes_bidirectional_and_keeps_padding_masked(family):
    model = build(family)
    assert not first_token_moves(model)  # causal: the first token cannot see the last
    make_bidirectional(model)
    assert first_token_moves(model)
    # Padding stays masked: a right-padded row gives the same states as the unpadded one.
    x = torch.randint(3, 100, (1, 10), generator=torch.Generator().manual_seed(1))
    padded = torch.cat([x, torch.zeros(1, 4, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(1, 10, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long)], 1)
    with torch.no_grad():
        alone = model(input_ids=x).last_hidden_state
        with_pad = model(input_ids=padded, attention_mask=mask).last_hidden_state[:, :10]
    assert (alone - with_pad).abs().max().item() < 1e-5


def test_eager_attention_is_refused():
    model = build("modernbert-decoder", attn="eager")
    with pytest.raises(UserError, match="eager"):
        make_bidirectional(model)


def test_encoder_and_unsupported_architectures_are_refused_with_the_supported_list():
    with pytest.raises(UserError, match="is an encoder"):
        check_decoder_config(T.ModernBertConfig(pad_token_id=0, vocab_size=64))
    with pytest.raises(UserError, match=r"GPT2.*supported decoders: ModernBertDecoder, Llama, Mistral"):
        check_decoder_config(T.GPT2Config(architectures=["GPT2LMHeadModel"]))
    with pytest.raises(UserError, match=r"Gemma2ForCausalLM.*softcapping.*supported decoders"):
        check_decoder_config(T.Gemma2Config(architectures=["Gemma2ForCausalLM"]))
