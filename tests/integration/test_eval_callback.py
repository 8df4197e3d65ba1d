"""A comparison task used as a training-time evaluator inside the shared pretraining loop."""

from __future__ import annotations

import pytest

from twinlm.errors import UserError
from twinlm.evaluate.callback import TaskEvaluatorCallback
from twinlm.evaluate.intrinsic import IntrinsicTask
from twinlm.recipe import load_recipe
from twinlm.train.pretrain import pretrain


def test_intrinsic_task_tracks_training(micro_run, micro_world, tmp_path):
    from transformers import AutoTokenizer

    _, heldout = micro_world.split()
    tokenizer = AutoTokenizer.from_pretrained(micro_run / "decoder")
    task = IntrinsicTask(micro_world.documents(heldout)[:16])
    callback = TaskEvaluatorCallback(task, tokenizer, "decoder", every=8)
    recipe = load_recipe("micro", ["phases.decay.tokens=1024"])
    pretrain(recipe, tmp_path / "run", twins=["decoder"], callbacks=[callback])
    steps = [h["step"] for h in callback.history]
    assert steps[:4] == [8, 16, 24, 32]  # every 8 steps of the 32-step first phase, then the decay phase
    ppl = [h["intrinsic/perplexity"] for h in callback.history]
    assert ppl[-1] < ppl[0], ppl


def test_finetuning_tasks_are_refused_as_training_time_evaluators():
    class FineTuning:
        name, finetunes = "retrieval", True

    with pytest.raises(UserError, match="retrieval"):
        TaskEvaluatorCallback(FineTuning(), tokenizer=None, architecture="encoder")
