"""The chunked LM-head loss equals the stock loss, in value and in every gradient."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from transformers import ModernBertDecoderConfig

from twinlm.models import build_twin, shared_config_kwargs
from twinlm.objectives import CLMCollator
from twinlm.recipe import ModelShape
from twinlm.train.loss import attach_chunked_loss

CLS, SEP = 1, 2
SPECIAL = dict(bos_token_id=CLS, eos_token_id=SEP, pad_token_id=3, cls_token_id=CLS, sep_token_id=SEP)


def micro_decoder(vocab: int = 512):
    kwargs = shared_config_kwargs(ModelShape(size="micro"), vocab, SPECIAL, 10_000.0)
    kwargs["attention_dropout"] = 0.0
    return build_twin("decoder", ModernBertDecoderConfig(**kwargs), seed=0)


def packed_batch(vocab: int = 512, rows: int = 3, length: int = 96):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (rows, length), generator=gen)
    ids[0, 30] = ids[1, 50] = ids[2, 10] = CLS  # documents start inside the blocks
    return CLMCollator(CLS)([{"input_ids": r} for r in ids])


def loss_and_grads(model, batch, **extra):
    model.zero_grad()
    out = model(**batch, **extra)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("num_items", [None, 200])
def test_chunked_loss_and_gradients_equal_the_stock_loss(num_items):
    stock = micro_decoder()
    chunked = copy.deepcopy(stock)
    attach_chunked_loss(chunked, chunk=37)  # uneven chunks
    batch = packed_batch()
    extra = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    ref, ref_grads = loss_and_grads(stock, batch, **extra)
    out, grads = loss_and_grads(chunked, batch, **extra)
    assert out.logits.shape[1] == 0, "no full logits from the chunked path"
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=0)
    assert grads.keys() == ref_grads.keys()
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, atol=1e-5, rtol=1e-5, msg=name)
    # Without labels the model is the stock one (generation, scoring).
    with torch.no_grad():
        torch.testing.assert_close(chunked(input_ids=batch["input_ids"]).logits,
                                   stock(input_ids=batch["input_ids"]).logits)


def test_chunked_loss_trains_like_the_stock_loss(tmp_path: Path):
    """Through the Trainer (gradient accumulation, num_items_in_batch): same weights after 3 steps."""
    from twinlm.data.corpus import prepare_stores, prepare_tokenizer
    from twinlm.models import build_config
    from twinlm.recipe import load_recipe
    from twinlm.train.pretrain import build_phase_trainer

    weights = {}
    for chunk in (0, 50):
        recipe = load_recipe("micro", [f"training.loss_chunk={chunk}", "training.micro_batch=4",
                                       "training.global_batch=8", "training.save_every=1000"])
        tokenizer = prepare_tokenizer(recipe, tmp_path)
        train, _ = prepare_stores(recipe, tokenizer, tmp_path / "data", None)
        model = build_twin("decoder", build_config("decoder", recipe.model, tokenizer), seed=0)
        trainer = build_phase_trainer(recipe, tmp_path / f"work{chunk}", "decoder", model, tokenizer,
                                      recipe.phases[0], 3, train)
        trainer.train()
        weights[chunk] = {n: p.detach().clone() for n, p in model.named_parameters()}
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[50][name], value, atol=1e-5, rtol=0, msg=name)
