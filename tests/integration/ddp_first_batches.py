"""Run under torchrun: each rank writes the first batch its dataloader yields (see test_ddp.py)."""

import sys
from pathlib import Path

import torch

from twinlm.data.corpus import prepare_stores, prepare_tokenizer
from twinlm.models import build_config, build_twin
from twinlm.recipe import load_recipe
from twinlm.train.pretrain import build_phase_trainer, process_state

out = Path(sys.argv[1])
state = process_state()
recipe = load_recipe("micro")
with state.main_process_first():
    tokenizer = prepare_tokenizer(recipe, out)
    train, _ = prepare_stores(recipe, tokenizer, out / "data", None)
model = build_twin("decoder", build_config("decoder", recipe.model, tokenizer), seed=0)
trainer = build_phase_trainer(recipe, out / "work", "decoder", model, tokenizer, recipe.phases[0], 2, train)
step = next(iter(trainer.get_train_dataloader()))  # this rank's micro-batches of step 0
torch.save(torch.cat([mb["input_ids"] for mb in step]), out / f"rank{state.process_index}.pt")
