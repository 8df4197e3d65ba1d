"""`twinlm eval` / `compare` on a `twinlm convert llm2vec` folder: a sentence-transformers embedding
model without an LM head is scored on retrieval and the LM-head tasks are skipped with a note, or
refused in one line before anything is written; twins and converted encoders are unaffected."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from twinlm.cli import main

TINY = ["--recipe", "llm2vec-cpu", "--set", "mntp_steps=4", "--set", "simcse_steps=4", "--set", "max_documents=64",
        "--set", "mntp_batch=8", "--set", "simcse_batch=8"]
BUDGET = ["--seeds", "1", "--lrs", "1e-3", "--steps", "2", "--batch-size", "4", "--max-items", "8"]


@pytest.fixture(scope="module")
def llm2vec_dir(micro_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("llm2vec-eval") / "model"
    assert main(["convert", "llm2vec", str(micro_run / "decoder"), "--out", str(out), *TINY]) == 0
    return out


def test_eval_scores_retrieval_and_skips_the_lm_head_tasks(llm2vec_dir, micro_run, micro_world, tmp_path, capsys):
    from twinlm.evaluate.models import resolve, world_for

    out = tmp_path / "eval"
    assert main(["eval", str(llm2vec_dir), "--out", str(out), *BUDGET]) == 0
    printed = capsys.readouterr().out
    note = [line for line in printed.splitlines() if line.startswith("note:")]
    assert len(note) == 1 and str(llm2vec_dir) in note[0] and "LLM2Vec" in note[0] and "without an LM head" in note[0]
    assert all(t in note[0] for t in ("intrinsic", "choice", "bias", "classification"))
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["tasks"] == ["retrieval"]
    tasks = results["models"]["model"]["tasks"]
    assert list(tasks) == ["retrieval"]
    assert 0 <= tasks["retrieval"]["metrics"]["ndcg@10"]["mean"] <= 1
    # Scored on the world of the decoder it was made from (no twinlm.yaml of its own).
    assert repr(world_for(resolve(str(llm2vec_dir))[0][0]).config) == repr(micro_world.config)


@pytest.mark.parametrize("command, extra, reason", [
    ("eval", ["--tasks", "intrinsic,choice"], "no requested task is left"),
    ("eval", ["--tasks", "retrieval", "--lm-eval", "sciq"], "--lm-eval"),
    ("compare", ["--tasks", "intrinsic"], "no requested task is left"),
])
def test_refused_in_one_line_before_anything_is_written(llm2vec_dir, micro_run, tmp_path, capsys, command, extra, reason):
    out = tmp_path / "out"
    inputs = [str(llm2vec_dir)] + ([str(micro_run)] if command == "compare" else [])
    assert main([command, *inputs, "--out", str(out), *extra, *BUDGET]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(llm2vec_dir) in err and "sentence-transformers embedding model (LLM2Vec) without an LM head" in err
    assert reason in err and "--tasks retrieval" in err and "twinlm finetune" in err
    assert not list(tmp_path.iterdir())  # neither out nor out.partial


def test_compare_scores_the_twins_on_every_task_and_the_llm2vec_model_on_retrieval(llm2vec_dir, micro_run, tmp_path,
                                                                                  capsys):
    out = tmp_path / "cmp"
    tasks = ["--tasks", "intrinsic,retrieval"]
    assert main(["compare", str(micro_run), f"l2v={llm2vec_dir}", "--out", str(out), *tasks, *BUDGET]) == 0
    note = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(note) == 1 and "skipping intrinsic" in note[0] and "other models get every task" in note[0]
    results = json.loads((out / "results.json").read_text())
    models = results["models"]
    twins = {f"{micro_run.name}/{twin}": ["intrinsic", "retrieval"] for twin in ("encoder", "decoder")}
    assert {name: sorted(m["tasks"]) for name, m in models.items()} == {**twins, "l2v": ["retrieval"]}
    assert "l2v" in results["table"] and (out / "report.html").is_file()


def test_twins_converted_encoders_and_sentence_transformers_folders(micro_run, tmp_path):
    from twinlm.commands.eval import fit_embedding_models
    from twinlm.evaluate.config import TASK_NAMES, EvalConfig
    from twinlm.evaluate.models import embedding_only, resolve, unscorable_tasks

    cfg = EvalConfig()
    assert fit_embedding_models([str(micro_run)], cfg) is cfg
    for twin in ("encoder", "decoder"):
        assert embedding_only(micro_run / twin) is None and unscorable_tasks(micro_run / twin, list(TASK_NAMES)) == {}
    # An MNTP-converted encoder keeps its masked-LM scoring with the shifted predictions.
    mntp = tmp_path / "mntp"
    shutil.copytree(micro_run / "encoder", mntp)
    (mntp / "conversion.json").write_text(json.dumps({"prediction_offset": -1}))
    ref = resolve(str(mntp))[0][0]
    assert (ref.architecture, ref.prediction_offset) == ("encoder", -1)
    assert unscorable_tasks(mntp, list(TASK_NAMES)) == {}
    # A sentence-transformers folder of the encoder's body: no LM head, but a classification head fits.
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    body = Transformer(str(micro_run / "encoder"), max_seq_length=32)
    st = tmp_path / "st"
    SentenceTransformer(modules=[body, Pooling(body.get_embedding_dimension(), pooling_mode="mean")]).save(str(st))
    assert embedding_only(st) == "a sentence-transformers model"
    assert set(unscorable_tasks(st, list(TASK_NAMES))) == {"intrinsic", "choice", "bias"}
    notes = []
    assert fit_embedding_models([f"st={st}"], cfg, log=notes.append).tasks == ["classification", "retrieval"]
    assert len(notes) == 1 and str(st) in notes[0]
