"""Continued pretraining (`--init`): the micro twins continued on new data start from exactly the
checkpoint's weights (first-step loss = the checkpoint's loss on that batch), both twins still see
identical batches, and a hub id loads its weights through `from_pretrained`."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, TrainerCallback

from twinlm.models import build_twin
from twinlm.objectives import IGNORE
from twinlm.packed import keep_documents_apart
from twinlm.recipe import load_recipe
from twinlm.train.init import InitSource, load_init_model
from twinlm.train.pretrain import pretrain

CLASSES = {"encoder": AutoModelForMaskedLM, "decoder": AutoModelForCausalLM}


class FirstStep(TrainerCallback):
    """Keeps, per twin, the model's weights and the batch at the start of the first step."""

    def __init__(self):
        self.seen = []

    def on_step_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        if state.global_step == 0:
            self.seen.append(({k: v.detach().clone() for k, v in model.state_dict().items()},
                              train_dataloader.dataset[0]))


def continue_recipe(overrides=()):
    """micro, two short phases, on a world the checkpoint never saw; one micro-batch per step."""
    return load_recipe("micro", ["data.world.seed=7", "phases.pretrain.tokens=1024", "phases.pretrain.warmup_tokens=0",
                                 "phases.pretrain.rope_theta=160000",  # the checkpoint's (its last phase)
                                 "phases.decay.tokens=1024",
                                 "training.log_every=1", "training.micro_batch=8", *overrides])


def checkpoint_loss(path, twin, batch) -> float:
    model = CLASSES[twin].from_pretrained(path, attn_implementation="sdpa")
    keep_documents_apart(model)  # as training runs it: attention within documents
    model.train()  # the micro recipe has no dropout: train and eval agree
    with torch.no_grad():
        return model(**batch).loss.item()


def test_continued_twins_start_from_the_checkpoint(micro_run, tmp_path):
    cb = FirstStep()
    out = tmp_path / "continued"
    pretrain(continue_recipe([f"init.run={micro_run}"]), out, callbacks=[cb])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [twin for twin in ("encoder", "decoder")] == [r["twin"] for r in records if r["step"] == 1 and
                                                         r["phase"] == "pretrain"]
    # The first phase of each twin: weights = the checkpoint's, first-step loss = its loss on the batch.
    (enc_weights, enc_batch), _, (dec_weights, dec_batch), _ = cb.seen
    for twin, weights, batch in (("encoder", enc_weights, enc_batch), ("decoder", dec_weights, dec_batch)):
        source = micro_run / twin
        reference = CLASSES[twin].from_pretrained(source).state_dict()
        assert weights.keys() == reference.keys()
        assert all(torch.equal(weights[k], reference[k]) for k in reference), twin
        assert len(batch) == 1
        first = next(r for r in records if r["twin"] == twin and r["phase"] == "pretrain" and r["step"] == 1)
        expected = checkpoint_loss(source, twin, batch[0])
        assert first["loss"] == pytest.approx(expected, abs=2e-4), twin
        torch.manual_seed(0)
        random_init = build_twin(twin, CLASSES[twin].from_pretrained(source).config, 0, "sdpa")
        keep_documents_apart(random_init)
        with torch.no_grad():
            assert abs(random_init(**batch[0]).loss.item() - expected) > 0.5, "the check can tell the two apart"
    # Identical batches: the encoder's tokens with its masked positions restored are the decoder's.
    enc, dec = enc_batch[0], dec_batch[0]
    original = torch.where(enc["labels"] != IGNORE, enc["labels"], enc["input_ids"])
    assert torch.equal(original, dec["input_ids"])
    # The continuation is recorded: the resolved recipe names the init run and its tokenizer.
    saved = (out / "twinlm.yaml").read_text()
    assert str(micro_run) in saved
    assert json.loads((out / "encoder" / "config.json").read_text())["vocab_size"] == \
        json.loads((micro_run / "encoder" / "config.json").read_text())["vocab_size"]


def test_phase_checkpoint_and_hub_id_load_exact_weights(micro_run, monkeypatch):
    """A phase checkpoint of a run loads as is; a hub id goes through from_pretrained."""
    phase = micro_run / "decoder" / "phases" / "pretrain"
    recipe = continue_recipe()
    config = CLASSES["decoder"].from_pretrained(phase).config
    asked = []
    original = AutoModelForCausalLM.from_pretrained

    def from_hub(name, *args, **kwargs):
        asked.append(name)
        return original(phase if name == "org/ettin-like" else name, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_hub)
    model = load_init_model(InitSource("decoder", "org/ettin-like", True, config.vocab_size), config,
                            recipe.training.attn_implementation)
    assert asked == ["org/ettin-like"]
    reference = original(phase).state_dict()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in reference.items())
    assert all(p.dtype == torch.float32 for p in model.parameters())
