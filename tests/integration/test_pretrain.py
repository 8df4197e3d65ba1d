"""End to end: the micro twins train, save plain HF folders that reload without twinlm, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer, TrainerCallback

from twinlm.data.corpus import prepare_stores, prepare_tokenizer
from twinlm.data.heldout import heldout_hash
from twinlm.models import build_config, build_twin
from twinlm.objectives import IGNORE
from twinlm.recipe import load_recipe
from twinlm.train.pretrain import STAGING, build_phase_trainer, checkpoints, pretrain

TEST_DATA = Path(__file__).parents[1] / "data"
SAMPLE = "Nadia Greco was born in Recife, Brazil."


def test_run_folder_layout(micro_run):
    recipe = load_recipe("micro")
    for twin in ("encoder", "decoder"):
        folder = micro_run / twin
        for name in ("config.json", "model.safetensors", "tokenizer.json", "twinlm.yaml", "README.md"):
            assert (folder / name).exists(), (twin, name)
        for phase in recipe.phases:
            assert (folder / "phases" / phase.name / "model.safetensors").exists()
        assert not (folder / "work" / recipe.phases[0].name).exists(), "finished phases drop optimizer state"
    assert (micro_run / "decoder" / "generation_config.json").exists()
    card = (micro_run / "encoder" / "README.md").read_text()
    assert "held-out loss" in card and "StableAdamW" in card
    records = [json.loads(line) for line in (micro_run / "metrics.jsonl").read_text().splitlines()]
    assert {r["twin"] for r in records} == {"encoder", "decoder"}
    for key in ("loss", "lr", "grad_norm", "tokens_per_second", "mfu", "step"):
        assert all(r[key] is not None for r in records), key


def test_twins_learned_something(micro_run):
    for twin in ("encoder", "decoder"):
        done = json.loads((micro_run / twin / "phases" / "decay" / "phase.json").read_text())
        # Both twins beat a model that ignores context on held-out people.
        assert done["heldout"]["loss"] < done["heldout"]["unigram_baseline"], twin
    lines = [json.loads(x) for x in (micro_run / "metrics.jsonl").read_text().splitlines()]
    dec = [r["loss"] for r in lines if r["twin"] == "decoder"]
    assert dec[-1] < dec[0]


def test_rope_theta_and_sequence_change_at_later_phase(micro_run):
    cfg = json.loads((micro_run / "encoder" / "config.json").read_text())
    assert cfg["rope_parameters"]["full_attention"]["rope_theta"] == 160_000
    assert cfg["rope_parameters"]["sliding_attention"]["rope_theta"] == 10_000
    first = json.loads((micro_run / "encoder" / "phases" / "pretrain" / "config.json").read_text())
    assert first["rope_parameters"]["full_attention"]["rope_theta"] == 10_000
    assert cfg["architectures"] == ["ModernBertForMaskedLM"]
    assert json.loads((micro_run / "decoder" / "config.json").read_text())["architectures"] == [
        "ModernBertDecoderForCausalLM"
    ]


def test_checkpoints_reload_without_twinlm_and_match(micro_run, tmp_path):
    expected = {}
    for twin, cls in (("encoder", AutoModelForMaskedLM), ("decoder", AutoModelForCausalLM)):
        tok = AutoTokenizer.from_pretrained(micro_run / twin)
        model = cls.from_pretrained(micro_run / twin).eval()
        with torch.no_grad():
            expected[twin] = model(**tok(SAMPLE, return_tensors="pt")).logits.numpy()
    code = textwrap.dedent(f"""
        import sys
        sys.modules["twinlm"] = None  # prove the folders need nothing from twinlm
        import numpy as np, torch
        from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer, pipeline
        run = {str(micro_run)!r}
        for twin, cls in (("encoder", AutoModelForMaskedLM), ("decoder", AutoModelForCausalLM)):
            tok = AutoTokenizer.from_pretrained(f"{{run}}/{{twin}}")
            model = cls.from_pretrained(f"{{run}}/{{twin}}").eval()
            with torch.no_grad():
                np.save(f"{tmp_path}/{{twin}}.npy", model(**tok({SAMPLE!r}, return_tensors="pt")).logits.numpy())
        fill = pipeline("fill-mask", model=f"{{run}}/encoder")
        print("FILL", len(fill("Nadia Greco was born in Recife, [MASK].")))
        gen = pipeline("text-generation", model=f"{{run}}/decoder")
        print("GEN", gen("Nadia Greco was born in", max_new_tokens=5, do_sample=False)[0]["generated_text"])
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "FILL 5" in proc.stdout
    assert "GEN Nadia Greco was born in" in proc.stdout
    for twin in ("encoder", "decoder"):
        np.testing.assert_allclose(np.load(tmp_path / f"{twin}.npy"), expected[twin], atol=1e-5)


def test_both_twins_receive_identical_blocks(tmp_path):
    recipe = load_recipe("micro")
    tokenizer = prepare_tokenizer(recipe, tmp_path)
    train, _ = prepare_stores(recipe, tokenizer, tmp_path / "data", None)
    phase = recipe.phases[0]
    seen = {}
    for twin in ("encoder", "decoder"):
        model = build_twin(twin, build_config(twin, recipe.model, tokenizer), seed=0)
        trainer = build_phase_trainer(recipe, tmp_path / twin, twin, model, tokenizer, phase, 4, train)
        batches = []
        for step in trainer.get_train_dataloader():  # one item per optimizer step: its micro-batches
            assert [len(mb["input_ids"]) for mb in step] == [recipe.training.micro_batch] * 2
            for batch in step:
                ids = batch["input_ids"].clone()
                if twin == "encoder":  # undo the corruption: labels hold the originals where masked
                    ids = torch.where(batch["labels"] != IGNORE, batch["labels"], ids)
                batches.append(ids)
        seen[twin] = torch.cat(batches)
    assert seen["encoder"].shape == (4 * recipe.training.global_batch, phase.seq_len)
    assert torch.equal(seen["encoder"], seen["decoder"])
    # Blocks are packed text: no padding anywhere.
    assert not (seen["decoder"] == tokenizer.pad_token_id).any()


class _Crash(TrainerCallback):
    """Simulates a killed job: raise after a given step of a given phase."""

    def __init__(self, phase: str, step: int):
        self.phase, self.step = phase, step

    def on_step_end(self, args, state, control, **kwargs):
        if args.output_dir.endswith(self.phase) and state.global_step == self.step:
            raise KeyboardInterrupt("simulated crash")


@pytest.mark.parametrize("twin", ["decoder", "encoder"])
def test_resume_after_interruption_gives_the_same_weights(micro_run, tmp_path, twin, monkeypatch):
    # The encoder also checks that the resumed phase sees the same MLM masks (SeededCollator).
    # The decoder is stopped inside the save of checkpoint-16, just before its rename: the staged,
    # complete-looking folder must not be resumed from, and is cleaned.
    recipe = load_recipe("micro")
    out = tmp_path / "run"
    if twin == "decoder":
        real_replace = os.replace

        def crash_on_rename(src, dst):
            if Path(dst).name == "checkpoint-16" and Path(src).parent.name == STAGING:
                raise KeyboardInterrupt("simulated crash inside a checkpoint save")
            return real_replace(src, dst)

        monkeypatch.setattr(os, "replace", crash_on_rename)
    with pytest.raises(KeyboardInterrupt):
        # save_every=8 in micro: the crash at step 12 (or in the save at 16) resumes from step 8.
        pretrain(recipe, out, twins=[twin], callbacks=[_Crash("pretrain", 12)] if twin == "encoder" else [])
    monkeypatch.undo()
    work = out / twin / "work" / "pretrain"
    assert [p.name for p in checkpoints(work)] == ["checkpoint-8"]
    if twin == "decoder":
        assert (work / STAGING / "checkpoint-16" / "model.safetensors").exists()
    assert not (out / twin / "phases" / "pretrain").exists()
    pretrain(recipe, out, twins=[twin], resume=True)
    resumed = load_file(out / twin / "model.safetensors")
    reference = load_file(micro_run / twin / "model.safetensors")
    assert resumed.keys() == reference.keys()
    for key in reference:
        torch.testing.assert_close(resumed[key], reference[key], atol=1e-6, rtol=1e-5, msg=key)
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["phase"] == "pretrain"]
    assert steps == sorted(set(steps)), "no duplicate log lines after resume"
    assert not list(out.rglob(STAGING)), "the half-written checkpoint was cleaned"


def test_mds_shards_and_a_reused_tokenizer_feed_pretraining(micro_run, tmp_path):
    """Ettin's data format through the project's own reader, tokenized with an existing tokenizer."""
    recipe = load_recipe("micro", [f"data.source={TEST_DATA / 'mds' / 'zstd'}", "data.heldout_share=0.1",
                                   f"tokenizer.name_or_path={micro_run / 'encoder'}"])
    tokenizer = prepare_tokenizer(recipe, tmp_path)
    assert tokenizer.get_vocab() == AutoTokenizer.from_pretrained(micro_run / "encoder").get_vocab()
    train, heldout = prepare_stores(recipe, tokenizer, tmp_path / "data", recipe.data.source)
    held = [k for k in range(40) if heldout_hash(recipe.training.seed, "zstd", k) < 0.1]  # the held-out rule
    assert (train.num_documents, heldout.num_documents) == (40 - len(held), len(held)) and len(held) > 1
    # Every document is framed [CLS] ... [SEP]: boundaries survive packing.
    tokens = np.asarray(train.tokens)
    assert (tokens == tokenizer.cls_token_id).sum() == 40 - len(held) == (tokens == tokenizer.sep_token_id).sum()
    again, _ = prepare_stores(recipe, tokenizer, tmp_path / "data", recipe.data.source)
    assert again.path == train.path and again.num_tokens == train.num_tokens  # reused, not rebuilt


def test_activation_checkpointing_trains_the_same_weights(micro_run, tmp_path):
    """training.activation_checkpointing recomputes each layer in backward: same result, less memory."""
    weights = []
    for ckpt in (False, True):
        recipe = load_recipe("micro", [f"training.activation_checkpointing={ckpt}"])
        tokenizer = prepare_tokenizer(recipe, micro_run)  # the fixture's tokenizer and blocks
        train, _ = prepare_stores(recipe, tokenizer, micro_run / "data", None)
        model = build_twin("decoder", build_config("decoder", recipe.model, tokenizer), seed=0)
        trainer = build_phase_trainer(recipe, tmp_path / str(ckpt), "decoder", model, tokenizer, recipe.phases[0], 3,
                                      train)
        trainer.args.save_strategy = "no"
        trainer.train()
        assert model.is_gradient_checkpointing == ckpt
        weights.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    for key in weights[0]:
        torch.testing.assert_close(weights[1][key], weights[0][key], atol=1e-6, rtol=1e-5, msg=key)
