"""Exactness of the encoder <-> decoder weight mapping on tiny random twins (with sliding windows)."""

from __future__ import annotations

import pytest
import torch
from transformers import ModernBertDecoderConfig, ModernBertDecoderForCausalLM

from twinlm.convert.weights import decoder_to_encoder, encoder_to_decoder
from twinlm.errors import UserError

WINDOW = 8  # local_attention; both classes derive sliding_window = 4
SEQ = 24  # longer than the window, so the local layers really slide


def tiny_decoder(seed: int = 0) -> ModernBertDecoderForCausalLM:
    config = ModernBertDecoderConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=2,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2,
        local_attention=WINDOW, global_attn_every_n_layers=3,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    model = ModernBertDecoderForCausalLM(config).eval()
    with torch.no_grad():  # norms start at 1/0; perturb them so a mis-mapped norm would show
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def ids(seed: int = 1) -> torch.Tensor:
    return torch.randint(3, 64, (2, SEQ), generator=torch.Generator().manual_seed(seed))


def max_diff(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


def test_bidirectional_decoder_equals_converted_encoder():
    decoder = tiny_decoder()
    encoder = decoder_to_encoder(decoder).eval()
    assert encoder.config.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]
    assert encoder.config.sliding_window == decoder.config.sliding_window == WINDOW // 2
    x = ids()
    with torch.no_grad():
        causal = decoder(input_ids=x, output_hidden_states=True)
        decoder.config.is_causal = False
        dec = decoder(input_ids=x, output_hidden_states=True)
        enc = encoder(input_ids=x, output_hidden_states=True)
    assert len(dec.hidden_states) == len(enc.hidden_states) == 4
    assert max_diff(dec.hidden_states, enc.hidden_states) < 1e-5
    # The heads are the same function (dense -> act -> norm -> tied projection), so logits match too.
    assert (dec.logits - enc.logits).abs().max().item() < 1e-5
    # ...and the comparison is not vacuous: the causal run differs.
    assert (causal.hidden_states[-1] - enc.hidden_states[-1]).abs().max().item() > 1e-3


def test_padding_is_still_masked_after_conversion():
    encoder = decoder_to_encoder(tiny_decoder()).eval()
    x = ids()
    mask = torch.ones_like(x)
    mask[1, 18:] = 0
    with torch.no_grad():
        padded = encoder(input_ids=x, attention_mask=mask).logits[1, :18]
        alone = encoder(input_ids=x[1:, :18]).logits[0]
    assert (padded - alone).abs().max().item() < 1e-5


def causal_masks(length: int, look_back: int) -> dict[str, torch.Tensor]:
    """Additive 4D masks: causal for global layers, causal within `look_back` for local ones."""
    q = torch.arange(length)[:, None]
    k = torch.arange(length)[None, :]
    neg = torch.finfo(torch.float32).min

    def additive(allowed):
        return torch.where(allowed, 0.0, neg)[None, None]

    return {"full_attention": additive(k <= q), "sliding_attention": additive((k <= q) & (q - k < look_back))}


def test_encoder_to_decoder_causal_matches_encoder_under_the_decoders_causal_masks():
    encoder = decoder_to_encoder(tiny_decoder(seed=3)).eval()  # any encoder weights will do
    decoder = encoder_to_decoder(encoder).eval()
    x = ids(2)
    w = decoder.config.sliding_window
    with torch.no_grad():
        dec = decoder(input_ids=x, output_hidden_states=True)
        ref = encoder(input_ids=x, attention_mask=causal_masks(SEQ, w), output_hidden_states=True)
    assert max_diff(dec.hidden_states, ref.hidden_states) < 1e-5
    assert (dec.logits - ref.logits).abs().max().item() < 1e-5
    # Round trip is the identity on the weights.
    back = decoder_to_encoder(decoder)
    for (name, a), (_, b) in zip(encoder.state_dict().items(), back.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_causal_window_difference_is_one_key_and_bounded():
    """Why the causal twins cannot coincide everywhere: cut causally, the encoder's window
    |i - j| <= w keeps w keys of look-back, the decoder's (i - w < j <= i) keeps w - 1. Both keep
    `local_attention` (so the converted model is shape-identical to a native twin); positions
    i < w see the same keys, later positions of local layers one key less."""
    encoder = decoder_to_encoder(tiny_decoder(seed=4)).eval()
    decoder = encoder_to_decoder(encoder).eval()
    x = ids(3)
    w = decoder.config.sliding_window
    with torch.no_grad():
        dec = decoder(input_ids=x).logits
        enc_window = encoder(input_ids=x, attention_mask=causal_masks(SEQ, w + 1)).logits
    diff = (dec - enc_window).abs().amax(dim=(0, 2))
    assert diff[:w].max().item() < 1e-5  # identical where the windows coincide
    assert diff[w:].max().item() > 1e-4  # a real difference afterwards (not vacuous)...
    scale = enc_window.abs().amax(dim=(0, 2))[w:]
    assert (diff[w:] / scale).max().item() < 1.0  # ...of bounded size: one key out of w + 1


def test_wrong_class_is_refused():
    decoder = tiny_decoder()
    with pytest.raises(UserError, match="ModernBertForMaskedLM"):
        encoder_to_decoder(decoder)
    with pytest.raises(UserError, match="ModernBertDecoderForCausalLM"):
        decoder_to_encoder(decoder_to_encoder(decoder))
