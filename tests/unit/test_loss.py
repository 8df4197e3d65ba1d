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


DDP_SCRIPT = """
import sys
from pathlib import Path
import torch
from twinlm.data.corpus import prepare_stores, prepare_tokenizer
from twinlm.models import build_config, build_twin
from twinlm.recipe import load_recipe
from twinlm.train.pretrain import build_phase_trainer, process_state

out, chunk = Path(sys.argv[1]), int(sys.argv[2])
state = process_state()
recipe = load_recipe("micro", [f"training.loss_chunk={chunk}", "training.micro_batch=4", "training.global_batch=8",
                               "training.save_every=1000"])
with state.main_process_first():
    tokenizer = prepare_tokenizer(recipe, out)
    train, _ = prepare_stores(recipe, tokenizer, out / "data", None)
model = build_twin("decoder", build_config("decoder", recipe.model, tokenizer), seed=0)
trainer = build_phase_trainer(recipe, out / f"work{chunk}", "decoder", model, tokenizer, recipe.phases[0], 3, train)
trainer.train()
if state.is_main_process:
    torch.save({n: p.detach() for n, p in model.named_parameters()}, out / f"weights{chunk}-{state.num_processes}.pt")
"""


@pytest.mark.slow  # two torchrun launches (~1 min on 2 cores)
def test_chunked_loss_under_ddp_equals_one_process(tmp_path):
    """2 ranks x micro-batch 4 (chunked loss, documents apart) make the updates of 1 rank x 4 x 2
    accumulation steps with the stock loss: gradients are synchronised through the hooks."""
    import os
    import subprocess
    import sys

    script = tmp_path / "ddp_chunked.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    run = [sys.executable, "-m", "torch.distributed.run", "--master_port", "29541", "--nproc_per_node"]
    for nproc, chunk in ((2, 50), (1, 0)):
        proc = subprocess.run([*run, str(nproc), str(script), str(tmp_path), str(chunk)], capture_output=True,
                              text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
    two, one = torch.load(tmp_path / "weights50-2.pt"), torch.load(tmp_path / "weights0-1.pt")
    for name, value in one.items():
        torch.testing.assert_close(two[name], value, atol=1e-5, rtol=0, msg=name)
