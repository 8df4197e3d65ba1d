"""The log-likelihood scorers and the bias counts against hand computations on the micro twins."""

from __future__ import annotations

import pytest
import torch

from twinlm.evaluate.bias import BiasTask
from twinlm.evaluate.scoring import decoder_loglik, encoder_pll


@pytest.fixture(scope="module")
def twins(micro_run):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    enc = AutoModelForMaskedLM.from_pretrained(micro_run / "encoder").eval()
    dec = AutoModelForCausalLM.from_pretrained(micro_run / "decoder").eval()
    return enc, AutoTokenizer.from_pretrained(micro_run / "encoder"), dec, AutoTokenizer.from_pretrained(micro_run / "decoder")


def test_decoder_loglik_is_the_sum_of_log_softmax_values(twins):
    _, _, dec, tok = twins
    context, choices = "Ada Lovelace was born in", [" Paris", " a very long place name"]
    scored = decoder_loglik(dec, tok, context, choices)
    for (lp, n, _), choice in zip(scored, choices):
        ctx = [tok.cls_token_id] + tok(context, add_special_tokens=False).input_ids
        cont = tok(choice, add_special_tokens=False).input_ids
        with torch.no_grad():  # unbatched, unpadded: a different path from the scorer's batch
            logits = dec(input_ids=torch.tensor([ctx + cont])).logits[0]
        manual = sum(torch.log_softmax(logits[len(ctx) + i - 1], -1)[t].item() for i, t in enumerate(cont))
        assert n == len(cont)
        assert lp == pytest.approx(manual, abs=1e-4)
    assert scored[0][0] != scored[1][0]


def test_encoder_pll_masks_one_choice_token_at_a_time(twins):
    enc, tok, _, _ = twins
    context, choice = "Ada Lovelace studied", " mathematics at home"
    (pll, n), = encoder_pll(enc, tok, context, [choice])
    ctx = [tok.cls_token_id] + tok(context, add_special_tokens=False).input_ids
    cont = tok(choice, add_special_tokens=False).input_ids
    manual = 0.0
    for i, t in enumerate(cont):
        ids = ctx + cont + [tok.sep_token_id]
        ids[len(ctx) + i] = tok.mask_token_id
        with torch.no_grad():
            logits = enc(input_ids=torch.tensor([ids])).logits[0, len(ctx) + i]
        manual += torch.log_softmax(logits, -1)[t].item()
    assert n == len(cont) > 1
    assert pll == pytest.approx(manual, abs=1e-4)


@pytest.mark.parametrize("architecture", ["encoder", "decoder"])
def test_bias_counts_follow_a_rigged_output_layer(twins, micro_world, architecture):
    enc, etok, dec, dtok = twins
    model, tok = (enc, etok) if architecture == "encoder" else (dec, dtok)
    she = tok(" she", add_special_tokens=False).input_ids[0]

    def prefer_she(module, inputs, output):  # rig the output layer: "she" always wins by far
        output[..., she] += 60.0
        return output

    examples = [e for e in __import__("twinlm.world.generator", fromlist=["x"]).bias_examples(micro_world)][:12]
    task = BiasTask(examples)
    handle = model.get_output_embeddings().register_forward_hook(prefer_she)
    try:
        rigged = task.evaluate(model, tok, architecture)
    finally:
        handle.remove()
    assert rigged["female_pct"] == 100.0 and rigged["male_pct"] == 0.0 and rigged["neutral_pct"] == 0.0
    plain = task.evaluate(model, tok, architecture)
    assert plain["female_pct"] + plain["male_pct"] + plain["neutral_pct"] == pytest.approx(100.0)
    assert plain != rigged
