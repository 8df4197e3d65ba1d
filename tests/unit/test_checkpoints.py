"""Intermediate checkpoints: rotated by step number, kept on request past the phase end, each a
plain HF folder and a resumable Trainer state; half-written ones are never picked."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, AutoTokenizer

from twinlm.recipe import load_recipe
from twinlm.train.checkpoints import (
    COMPLETE_FILE,
    STAGING,
    checkpoints,
    clean_incomplete,
    finish_work_folder,
    rotate_checkpoints,
)
from twinlm.train.pretrain import pretrain


def _fake(work, step, complete=True):
    folder = work / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text("{}")
    if complete:
        (folder / COMPLETE_FILE).write_text(json.dumps({"step": step}))
    return folder


def test_rotation_keeps_newest_past_10000(tmp_path):
    for step in range(8000, 12001, 1000):
        _fake(tmp_path, step)
    assert [p.name for p in checkpoints(tmp_path)][-1] == "checkpoint-12000"
    removed = rotate_checkpoints(tmp_path, keep_last=2)
    assert sorted(p.name for p in removed) == ["checkpoint-10000", "checkpoint-8000", "checkpoint-9000"]
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint-11000", "checkpoint-12000"]


def test_keep_every_survives_rotation_and_phase_end(tmp_path):
    for step in range(500, 12001, 500):
        _fake(tmp_path, step)
    rotate_checkpoints(tmp_path, keep_last=2, keep_every=5000)
    assert [p.name for p in checkpoints(tmp_path)] == [
        "checkpoint-5000", "checkpoint-10000", "checkpoint-11500", "checkpoint-12000"]
    finish_work_folder(tmp_path, keep_every=5000)
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint-5000", "checkpoint-10000"]
    finish_work_folder(tmp_path, keep_every=0)
    assert not tmp_path.exists(), "nothing kept: the work folder goes"


def test_half_written_checkpoints_are_ignored_and_cleaned(tmp_path):
    _fake(tmp_path, 8)
    _fake(tmp_path, 16, complete=False)  # no marker: not a checkpoint
    (tmp_path / STAGING / "checkpoint-24").mkdir(parents=True)  # killed while saving
    (tmp_path / "checkpoint-24").mkdir()  # no files at all
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint-8"]
    removed = clean_incomplete(tmp_path)
    assert sorted(p.name for p in removed) == [STAGING, "checkpoint-16", "checkpoint-24"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-8"]


def test_kept_checkpoints_outlive_the_phase_and_load(tmp_path):
    """keep_every folders outlive their phase; each loads with from_pretrained (twin tokenizer
    included, sparse MLM head off) and keeps its Trainer state for a resume."""
    recipe = load_recipe("micro", ["training.keep_every=16"])
    out = tmp_path / "run"
    pretrain(recipe, out, twins=["encoder"])
    work = out / "encoder" / "work"
    kept = sorted(p.relative_to(work).as_posix() for p in work.glob("*/checkpoint-*"))
    assert kept == ["pretrain/checkpoint-16", "pretrain/checkpoint-32"]  # 32 steps in micro's pretrain
    folder = work / "pretrain" / "checkpoint-16"
    for name in ("optimizer.pt", "scheduler.pt", "trainer_state.json", "rng_state.pth", COMPLETE_FILE):
        assert (folder / name).exists(), name
    assert json.loads((folder / "config.json").read_text())["sparse_prediction"] is False
    model = AutoModelForMaskedLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        logits = model(**tok("Nadia Greco was born in [MASK].", return_tensors="pt")).logits
    assert logits.shape[-1] == len(tok)
    last = AutoModelForMaskedLM.from_pretrained(work / "pretrain" / "checkpoint-32").state_dict()
    phase = load_file(out / "encoder" / "phases" / "pretrain" / "model.safetensors")
    for key, value in phase.items():
        torch.testing.assert_close(last[key], value, msg=key)  # the last kept step is the phase's end
    assert not (work / "decay").exists(), "the decay phase (8 steps) has no multiple of 16 to keep"
