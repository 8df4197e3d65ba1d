"""Batch-size warmup (Ettin / ModernBERT): the global batch grows linearly in tokens from
training.batch_warmup_min to the global batch over training.batch_warmup_tokens."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from twinlm.recipe import load_recipe
from twinlm.train.pretrain import pretrain
from twinlm.train.schedules import BatchSchedule, batch_schedule, warmup_steps_for

# micro: global batch 8 at seq 64 (512 tokens per full step); the ramp 2 -> 8 over 4,096 tokens.
WARMUP = ["training.batch_warmup_min=2", "training.batch_warmup_tokens=4096", "phases.pretrain.tokens=8192",
          "phases.decay.tokens=1024", "training.log_every=1", "training.save_every=8"]


def test_schedule_is_linear_in_tokens():
    s = BatchSchedule(global_batch=4608, seq_len=1024, tokens=10**10, warmup_min=256, warmup_tokens=3 * 10**9)
    assert s.batch(0) == 256 and s.batch(len(s.ramp)) == 4608
    seen = 0
    for step in range(len(s.ramp)):
        linear = 256 + (4608 - 256) * seen / 3e9
        assert s.batch(step) <= linear < s.batch(step) + 256  # the linear value rounded down to a multiple
        assert s.batch(step) % 256 == 0
        seen += s.batch(step) * 1024
    assert seen >= 3e9 > seen - s.batch(len(s.ramp) - 1) * 1024  # the ramp ends where its tokens do
    assert s.tokens_through(s.steps) >= 10**10 > s.tokens_through(s.steps - 1)
    assert s.first_sample(len(s.ramp) + 3) == int(s.ramp.sum()) + 3 * 4608
    # LR warmup is in tokens too: its steps follow the ramp.
    phase = load_recipe("ettin-1b").phases[0]  # warmup_tokens 2e9
    k = warmup_steps_for(phase, s)
    assert s.tokens_through(k) >= 2e9 > s.tokens_through(k - 1)


def _records(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


class _Crash(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if args.output_dir.endswith("pretrain") and state.global_step == self.step:
            raise KeyboardInterrupt("simulated crash")


def test_batch_size_warmup(tmp_path):
    recipe = load_recipe("micro", WARMUP)
    schedule = batch_schedule(recipe, recipe.phases[0])
    out = tmp_path / "run"
    pretrain(recipe, out, twins=["encoder", "decoder"])
    records = _records(out)
    for twin in ("encoder", "decoder"):
        pre = [r for r in records if r["twin"] == twin and r["phase"] == "pretrain"]
        assert [r["step"] for r in pre] == list(range(1, schedule.steps + 1))  # log_every=1: every step
        batches = [r["batch"] for r in pre]
        assert batches[0] == 2 and batches == sorted(batches) and set(batches) == {2, 4, 6, 8}
        end = next(i for i, r in enumerate(pre) if r["tokens"] >= 4096)  # the step that ends the warmup
        assert batches[end] < 8 and batches[end + 1] == 8 and pre[end - 1]["tokens"] < 4096
        assert all(r["step_tokens"] == r["batch"] * 64 for r in pre)
        total = sum(r["step_tokens"] for r in pre)
        assert total == pre[-1]["tokens"] and 8192 <= total < 8192 + 8 * 64  # the budget, to the last step
        assert json.loads((out / twin / "phases" / "pretrain" / "phase.json").read_text())["tokens"] == total
        decay = [r for r in records if r["twin"] == twin and r["phase"] == "decay"]
        assert [r["batch"] for r in decay] == [8]  # warmup is the first phase's only
    enc = [r["batch"] for r in records if r["twin"] == "encoder"]
    assert enc == [r["batch"] for r in records if r["twin"] == "decoder"], "both twins on the same batches"

    # Resume in the middle of the ramp (checkpoint at step 8, crash at step 12) is exact.
    assert schedule.batch(12) < 8
    again = tmp_path / "again"
    with pytest.raises(KeyboardInterrupt):
        pretrain(recipe, again, twins=["decoder"], callbacks=[_Crash(12)])
    pretrain(recipe, again, twins=["decoder"], resume=True)
    resumed = load_file(again / "decoder" / "model.safetensors")
    reference = load_file(out / "decoder" / "model.safetensors")
    for key in reference:
        torch.testing.assert_close(resumed[key], reference[key], atol=1e-6, rtol=0, msg=key)
    batches = [r["batch"] for r in _records(again) if r["phase"] == "pretrain"]
    assert batches == [r["batch"] for r in records if r["twin"] == "decoder" and r["phase"] == "pretrain"]


@pytest.mark.parametrize("twin", ["encoder", "decoder"])
def test_a_step_is_the_token_mean_however_it_is_split(micro_run, tmp_path, twin):
    """A 6-sequence warmup step cut into micro-batches of 4 + 2 gives the gradient of the whole
    step in one pass: each micro-batch's loss is normalised by the whole step's label count."""
    from twinlm.data.corpus import prepare_stores, prepare_tokenizer
    from twinlm.models import build_config, build_twin
    from twinlm.train.pretrain import build_phase_trainer

    recipe = load_recipe("micro", WARMUP)
    tokenizer = prepare_tokenizer(recipe, micro_run)  # the fixture's: nothing is retrained
    train, _ = prepare_stores(recipe, tokenizer, micro_run / "data", None)
    model = build_twin(twin, build_config(twin, recipe.model, tokenizer), seed=0)
    trainer = build_phase_trainer(recipe, tmp_path, twin, model, tokenizer, recipe.phases[0], 30, train)
    assert trainer.model_accepts_loss_kwargs  # so num_items_in_batch reaches the model's loss
    step = next(i for i in range(30) if trainer.schedule.batch(i) == 6)
    item = trainer.train_dataset[step]
    assert [len(mb["input_ids"]) for mb in item] == [4, 2]  # micro_batch 4
    whole = {k: torch.cat([mb[k] for mb in item]) for k in item[0]}  # the same masks, in one pass
    trainer.create_optimizer()
    grads = []
    for inputs in (item, whole):
        model.zero_grad()
        count = trainer.get_batch_samples(iter([inputs if isinstance(inputs, list) else [inputs]]), 1, "cpu")[1]
        trainer.training_step(trainer.model, inputs, count)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-4, msg=name)
