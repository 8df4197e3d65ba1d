"""The LLM2Vec stages test_llm2vec.py leaves out: MNTP through a LoRA adapter (merged back) and the
optional supervised contrastive stage, on the micro decoder with tiny step counts."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from twinlm.cli import main

TINY = ["--recipe", "llm2vec-cpu", "--set", "max_documents=64", "--set", "mntp_batch=8", "--set", "simcse_batch=8"]
PEFT_MARKERS = ("lora_", "base_layer", "base_model", "modules_to_save")


def _embed(folder, sentences):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    return torch.as_tensor(model.encode(sentences, convert_to_numpy=True))


def test_lora_mntp_is_merged_into_plain_weights(micro_run, tmp_path, capsys):
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "lora"
    # SimCSE off: whatever moved the weights is the merged MNTP adapter.
    assert main(["convert", "llm2vec", str(micro_run / "decoder"), "--out", str(out), *TINY, "--set", "lora_r=4",
                 "--set", "mntp_steps=4", "--set", "simcse_steps=0"]) == 0
    assert "LoRA r=4" in capsys.readouterr().out
    assert json.loads((out / "llm2vec.json").read_text())["config"]["lora_r"] == 4
    files = [p.name for p in out.rglob("*")]
    assert not [f for f in files if f.startswith("adapter_")], files  # no adapter_config.json / adapter_model.*
    assert not (out / ".work").exists()

    saved = load_file(out / "model.safetensors")
    assert not [k for k in saved if any(m in k for m in PEFT_MARKERS)], list(saved)
    model = SentenceTransformer(str(out), device="cpu")
    assert not [k for k in model.state_dict() if any(m in k for m in PEFT_MARKERS)]
    assert model[0].auto_model.config.is_causal is False
    assert model.encode(["Nadia Greco was born in Recife."]).shape == (1, 64)

    # Against the untrained bidirectional decoder (same weights as the decoder; only is_causal differs):
    # LoRA targets the linear layers, so they moved and nothing else did.
    source = {k.removeprefix("model."): v for k, v in load_file(micro_run / "decoder" / "model.safetensors").items()}
    assert saved.keys() <= source.keys()
    moved = {k for k in saved if not torch.equal(saved[k], source[k])}
    linear = {k for k in saved if k.startswith("layers.") and saved[k].dim() == 2}
    assert moved == linear, (sorted(moved ^ linear))


@pytest.fixture()
def supervised_file(micro_world, tmp_path):
    """(query, positive, negative) rows about the world's people: a question, the person's
    biography sentence on that fact, and another person's."""
    people = micro_world.people[:24]
    rows = []
    for person, other in zip(people, people[1:] + people[:1]):
        rows.append({"query": f"Where was {person.name} born?",
                     "positive": f"{person.name} was born in {person.birth_city}.",
                     "negative": f"{other.name} was born in {other.birth_city}."})
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_supervised_stage_runs_and_changes_the_embeddings(micro_run, supervised_file, tmp_path, capsys):
    # MNTP and SimCSE off in both runs: the only difference between them is the supervised stage.
    stages = [*TINY, "--set", "mntp_steps=0", "--set", "simcse_steps=0"]
    plain, tuned = tmp_path / "plain", tmp_path / "supervised"
    assert main(["convert", "llm2vec", str(micro_run / "decoder"), "--out", str(plain), *stages]) == 0
    assert "supervised contrastive" not in capsys.readouterr().out
    assert main(["convert", "llm2vec", str(micro_run / "decoder"), "--out", str(tuned), *stages,
                 "--set", f"supervised={supervised_file}", "--set", "supervised_steps=6",
                 "--set", "supervised_batch=8", "--set", "supervised_lr=1e-3"]) == 0
    assert "llm2vec: supervised contrastive, 6 steps on 24 rows" in capsys.readouterr().out
    meta = json.loads((tuned / "llm2vec.json").read_text())
    assert meta["config"]["supervised"] == str(supervised_file)

    sentences = ["Where was Nadia Greco born?", "Nadia Greco was born in Recife."]
    before, after = _embed(plain, sentences), _embed(tuned, sentences)
    assert before.shape == after.shape == (2, 64)
    assert (before - after).abs().max() > 1e-3
    # The saved config keeps the decoder's own attention dropout (raised for training only).
    assert json.loads((tuned / "config.json").read_text())["attention_dropout"] == \
        json.loads((micro_run / "decoder" / "config.json").read_text())["attention_dropout"]


def test_simcse_reads_the_extra_unlabeled_texts(micro_run, tmp_path, capsys, monkeypatch):
    import twinlm.convert.llm2vec as llm2vec

    seen = {}

    def spy(model, rows, work, **kwargs):
        seen.update(rows)

    monkeypatch.setattr(llm2vec, "contrastive_train", spy)  # llm2vec calls the name it imported
    queries = tmp_path / "queries.jsonl"
    asked = ["Who founded Acme?", "Where is Lindenhall University?", "What does Kai Berg do?"]
    queries.write_text("".join(json.dumps({"text": q}) + "\n" for q in asked))
    out = tmp_path / "extra"
    assert main(["convert", "llm2vec", str(micro_run / "decoder"), "--out", str(out), *TINY,
                 "--set", "mntp_steps=0", "--set", "simcse_unit=sentence", "--set", f"simcse_extra={queries}"]) == 0
    assert f"+ 3 texts of {queries}" in capsys.readouterr().out
    assert seen["anchor"] == seen["positive"]
    assert set(asked) <= set(seen["anchor"])
    statements = [s for s in seen["anchor"] if s not in asked]
    assert statements and all(s.endswith(".") and not s.endswith("..") for s in statements)

    seen.clear()
    again = tmp_path / "world"
    assert main(["convert", "llm2vec", str(micro_run / "decoder"), "--out", str(again), *TINY,
                 "--set", "mntp_steps=0", "--set", "simcse_extra=world-questions", "--set", "simcse_extra_count=50"]) == 0
    assert sum(text.endswith("?") for text in seen["anchor"]) == 50
