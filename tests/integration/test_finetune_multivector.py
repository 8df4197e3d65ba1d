"""Multi-vector (ColBERT) fine-tuning: training helps, the saved model reloads without twinlm, encode
and search work on it, distillation rows resolve ids, bad input fails early."""

from __future__ import annotations

import json
import subprocess
import sys

import datasets
import pytest

from twinlm.errors import UserError
from twinlm.finetune.recipe import load_finetune_recipe


@pytest.fixture(scope="module")
def colbert(micro_run, tmp_path_factory):
    from twinlm.finetune import multivector

    out = tmp_path_factory.mktemp("mv") / "colbert"
    recipe = load_finetune_recipe(None, "multivector", ["training.max_steps=27"],
                                  {"base_model": str(micro_run / "encoder")})
    return multivector.finetune(recipe, out)


def test_training_improves_ndcg_and_reloads_without_twinlm(colbert, micro_world, tmp_path):
    assert colbert.after["ndcg@10"] > colbert.before["ndcg@10"]
    assert (colbert.out / "config_sentence_transformers.json").is_file()
    assert json.loads((colbert.out / "twinlm-finetune.json").read_text())["after"] == colbert.after

    from twinlm.finetune.multivector import load_multivector

    texts = [micro_world.biography(p, 2) for p in micro_world.people[:3]]
    query = f"Where was {micro_world.people[0].name} born?"
    model = load_multivector(colbert.out)
    expected = model.similarity(model.encode_query([query]), model.encode_document(texts))[0].tolist()
    code = f"""
import sys, json
sys.modules['twinlm'] = None
from sentence_transformers import MultiVectorEncoder
m = MultiVectorEncoder({str(colbert.out)!r})
texts = json.loads({json.dumps(json.dumps(texts))})
print(json.dumps(m.similarity(m.encode_query([{query!r}]), m.encode_document(texts))[0].tolist()))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(run.stdout.strip().splitlines()[-1]) == pytest.approx(expected, abs=1e-4)


def test_encode_and_search_find_the_person(colbert, micro_world, tmp_path):
    from twinlm.finetune.index import load_index
    from twinlm.finetune.kinds import KINDS
    from twinlm.finetune.multivector import encode_multivectors, load_multivector
    from twinlm.finetune.search import save_vectors, search

    people = micro_world.people[:20]
    corpus = [micro_world.biography(p, 2) for p in people]
    vectors = KINDS["multivector"].encode(load_multivector(colbert.out), corpus, progress=False)
    assert KINDS["multivector"].tensors is not None
    meta = save_vectors(tmp_path / "vec", "multivector", [f"doc-{p.id}" for p in people], vectors, {})
    assert meta["count"] == 20 and meta["dimensions"] == 128
    queries = [f"Where was {p.name} born?" for p in people]
    hits = search(str(colbert.out), corpus, queries, k=3, progress=False)
    top1 = sum(h[0].index == i for i, h in enumerate(hits)) / len(hits)
    assert top1 >= 0.5  # names are in both texts; a trained ColBERT finds most of them
    index = load_index(tmp_path / "vec")  # the encode folder is an exhaustive index
    q = encode_multivectors(load_multivector(colbert.out), queries[:5], progress=False, query=True)
    assert [h[0].doc_id for h in index.search(q, 1)] == [f"doc-{people[h[0].index].id}" for h in hits[:5]]


def test_distillation_rows_resolve_ids_and_check_them():
    from twinlm.finetune.multivector import resolve_distillation, world_distillation
    from twinlm.world.generator import WorldConfig, build_world

    rows, docs = world_distillation(build_world(WorldConfig(num_people=20)), candidates=3)
    table = resolve_distillation(datasets.Dataset.from_list(rows), docs)
    assert table.column_names == ["query", "document_1", "document_2", "document_3", "scores"]
    assert table[0]["document_1"] == docs[rows[0]["document_ids"][0]] and table[0]["scores"] == [1.0, 0.0, 0.0]
    bad = datasets.Dataset.from_list([{**rows[0], "document_ids": ["nope", *rows[0]["document_ids"][1:]]}])
    with pytest.raises(UserError, match="'nope' is not in multivector.documents"):
        resolve_distillation(bad, docs)


def test_distillation_trains_from_document_ids(micro_run, tmp_path):
    from twinlm.finetune import multivector
    from twinlm.world.generator import WorldConfig, build_world

    rows, docs = multivector.world_distillation(build_world(WorldConfig(num_people=40)))
    datasets.Dataset.from_list(rows).to_json(str(tmp_path / "kd.jsonl"))
    datasets.Dataset.from_list([{"_id": k, "text": v} for k, v in docs.items()]).to_json(str(tmp_path / "docs.jsonl"))
    recipe = load_finetune_recipe(None, "multivector", [
        "loss=MultiVectorDistillKLDivLoss", "training.max_steps=3", f"multivector.documents={tmp_path / 'docs.jsonl'}",
    ], {"base_model": str(micro_run / "encoder"), "train_data": str(tmp_path / "kd.jsonl")})
    result = multivector.finetune(recipe, tmp_path / "kd")
    assert result.train_loss is not None and result.train_loss > 0
    assert (tmp_path / "kd" / "model.safetensors").is_file()


def test_bad_input_fails_before_training(micro_run, tmp_path):
    from twinlm.finetune import multivector

    base = {"base_model": str(micro_run / "encoder")}
    with pytest.raises(UserError, match="SpladeLoss is a sparse loss"):
        multivector.finetune(load_finetune_recipe(None, "multivector", ["loss=SpladeLoss"], base), tmp_path / "a")
    (tmp_path / "pairs.jsonl").write_text('{"question": "q", "passage": "p"}\n')
    recipe = load_finetune_recipe(None, "multivector", [], {**base, "train_data": str(tmp_path / "pairs.jsonl")})
    with pytest.raises(UserError, match="needs columns anchor, positive"):
        multivector.finetune(recipe, tmp_path / "b")
    with pytest.raises(UserError, match="valid: exhaustive, ivf"):
        load_finetune_recipe(None, "multivector", ["multivector.index=hnsw"], base)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
