"""`training.compile`: a compiled micro step trains to the eager loss; dataloader workers work."""

from __future__ import annotations

from pathlib import Path

import pytest

from twinlm.data.corpus import prepare_stores, prepare_tokenizer
from twinlm.models import build_config, build_twin
from twinlm.recipe import load_recipe
from twinlm.train.pretrain import build_phase_trainer


def _train(tmp_path: Path, twin: str, overrides: list[str]):
    recipe = load_recipe("micro", ["training.save_every=1000", *overrides])
    tokenizer = prepare_tokenizer(recipe, tmp_path)
    train, _ = prepare_stores(recipe, tokenizer, tmp_path / "data", None)
    model = build_twin(twin, build_config(twin, recipe.model, tokenizer), seed=0)
    name = "-".join(o.replace("=", "") for o in overrides) or "eager"
    trainer = build_phase_trainer(recipe, tmp_path / f"{twin}-{name}", twin, model, tokenizer, recipe.phases[0], 2, train)
    return trainer, trainer.train().training_loss


@pytest.mark.slow  # inductor compiles the micro twins on CPU in ~1-2 min each
@pytest.mark.parametrize("twin", ["encoder", "decoder"])
def test_compiled_step_matches_eager(tmp_path, twin):
    _, eager = _train(tmp_path, twin, [])
    trainer, compiled = _train(tmp_path, twin, ["training.compile=true"])
    assert type(trainer.model_wrapped).__name__ == "OptimizedModule"
    assert compiled == pytest.approx(eager, abs=1e-4)


def test_dataloader_workers_give_the_same_batches(tmp_path):
    trainer, loss = _train(tmp_path, "encoder", ["training.dataloader_workers=2"])
    assert trainer.args.dataloader_num_workers == 2
    _, single = _train(tmp_path, "encoder", [])
    assert loss == pytest.approx(single, abs=1e-6)  # the MLM masks are seeded per batch, not per process
