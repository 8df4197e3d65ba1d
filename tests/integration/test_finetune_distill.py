"""Teacher distillation in `twinlm finetune`: the labels a dense or cross-encoder teacher writes
into the training table are the teacher's own outputs, and the student trains on them; the
multi-vector distillation losses train from the world's scored candidates, from query ids and
from a teacher's margins.

Every run is tiny (2 steps, a few rows); the teachers are 2-step fine-tunes of the micro encoder."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch

from twinlm.finetune.recipe import load_finetune_recipe

TINY = ["training.max_steps=2", "training.batch_size=8", "training.lr=1e-3"]


def _capture_fit(module, monkeypatch) -> dict:
    """Record the arguments `module.finetune` hands to the shared `fit` (which still runs)."""
    seen: dict = {}
    real = module.fit

    def recording_fit(**kwargs):
        seen.update(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(module, "fit", recording_fit)
    return seen


@pytest.fixture(scope="module")
def dense_teacher(micro_run, tmp_path_factory):
    """A SentenceTransformer folder: the micro encoder after 2 contrastive steps (so not the student's start)."""
    from twinlm.finetune import dense

    out = tmp_path_factory.mktemp("distill") / "dense-teacher"
    recipe = load_finetune_recipe(None, "dense", [*TINY, "loss=MultipleNegativesRankingLoss", "max_rows=16"],
                                  {"base_model": str(micro_run / "encoder")})
    dense.finetune(recipe, out)
    return out


@pytest.fixture(scope="module")
def rerank_teacher(micro_run, tmp_path_factory):
    """A CrossEncoder folder from a 2-step rerank run."""
    from twinlm.finetune import rerank

    out = tmp_path_factory.mktemp("distill") / "rerank-teacher"
    recipe = load_finetune_recipe(None, "rerank", [*TINY, "max_rows=4"], {"base_model": str(micro_run / "encoder")})
    rerank.finetune(recipe, out)
    return out


def _encoder_weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model[0].auto_model.state_dict().items()}


def _changed(before: dict, after: dict) -> list[str]:
    assert before.keys() == after.keys()
    return [k for k in before if not np.array_equal(before[k].numpy(), after[k].numpy())]


# ---- dense --------------------------------------------------------------------------------------


def test_dense_mse_labels_are_the_teachers_embeddings(micro_run, dense_teacher, tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformer

    from twinlm.finetune import dense
    from twinlm.finetune.base import inspect_base

    recipe = load_finetune_recipe(None, "dense", [*TINY, "loss=MSELoss", "max_rows=12", f"dense.teacher={dense_teacher}"],
                                  {"base_model": str(micro_run / "encoder")})
    start = _encoder_weights(dense.build_model(inspect_base(recipe.base_model), recipe, "auto"))
    seen = _capture_fit(dense, monkeypatch)
    result = dense.finetune(recipe, tmp_path / "student")

    table = seen["train_dataset"]
    assert table.column_names == ["text", "label"] and len(table) == 12
    teacher = SentenceTransformer(str(dense_teacher))
    expected = teacher.encode(table["text"], convert_to_numpy=True, show_progress_bar=False)
    assert np.asarray(table["label"]).shape == expected.shape
    np.testing.assert_allclose(np.asarray(table["label"]), expected, atol=1e-5)
    # the teacher is not the student's starting point, so there is something to learn
    student_start = dense.build_model(inspect_base(recipe.base_model), recipe, "auto")
    assert np.abs(student_start.encode(table["text"][:2]) - expected[:2]).max() > 1e-3

    assert type(seen["loss"]).__name__ == "MSELoss"
    assert result.train_loss is not None and result.train_loss > 0
    student = SentenceTransformer(str(tmp_path / "student"))
    assert student.get_sentence_embedding_dimension() == teacher.get_sentence_embedding_dimension()
    assert _changed(start, _encoder_weights(student))


def test_dense_margin_mse_labels_are_the_teachers_margins(micro_run, dense_teacher, tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformer

    from twinlm.finetune import dense

    recipe = load_finetune_recipe(None, "dense", [*TINY, "loss=MarginMSELoss", "max_rows=12",
                                                  f"dense.teacher={dense_teacher}"],
                                  {"base_model": str(micro_run / "encoder")})
    seen = _capture_fit(dense, monkeypatch)
    result = dense.finetune(recipe, tmp_path / "student")

    table = seen["train_dataset"]
    assert table.column_names == ["query", "positive", "negative", "label"] and len(table) == 12
    teacher = SentenceTransformer(str(dense_teacher))
    assert teacher.similarity_fn_name == "cosine"
    q, p, n = (teacher.encode(table[c], normalize_embeddings=True, show_progress_bar=False)
               for c in ("query", "positive", "negative"))
    margins = (q * p).sum(1) - (q * n).sum(1)
    np.testing.assert_allclose(table["label"], margins, atol=1e-5)
    assert np.abs(margins).max() > 1e-3  # the negatives are other people's biographies: real margins

    assert type(seen["loss"]).__name__ == "MarginMSELoss"
    assert result.train_loss is not None and result.train_loss > 0
    assert (tmp_path / "student" / "model.safetensors").is_file()
    SentenceTransformer(str(tmp_path / "student"))


def test_dense_teacher_replaces_a_label_column_in_user_data(micro_run, dense_teacher, tmp_path):
    """A file's own label column is not trusted when a teacher is set: the teacher writes the labels."""
    from sentence_transformers import SentenceTransformer

    from twinlm.finetune import dense
    from twinlm.finetune.data import LossColumns, training_table

    texts = ["Where was Anna born?", "Anna was born in Paris.", "Who employs Bob?", "Bob works at a bakery."]
    datasets.Dataset.from_list([{"text": t, "label": [0.0]} for t in texts]).to_json(str(tmp_path / "texts.jsonl"))
    recipe = load_finetune_recipe(None, "dense", ["loss=MSELoss", f"dense.teacher={dense_teacher}"],
                                  {"base_model": str(micro_run / "encoder"), "train_data": str(tmp_path / "texts.jsonl")})
    table = training_table(recipe, LossColumns(("text",)), "MSELoss")
    teacher = SentenceTransformer(str(dense_teacher))
    labelled = dense._teacher_labels(table, "MSELoss", teacher)
    assert labelled.column_names == ["text", "label"] and labelled["text"] == texts
    np.testing.assert_allclose(np.asarray(labelled["label"]), teacher.encode(texts, show_progress_bar=False), atol=1e-5)


# ---- rerank -------------------------------------------------------------------------------------


def test_rerank_mse_scores_are_the_teachers_predictions(micro_run, rerank_teacher, tmp_path, monkeypatch):
    from sentence_transformers import CrossEncoder

    from twinlm.finetune import rerank

    recipe = load_finetune_recipe(None, "rerank", [*TINY, "loss=MSELoss", "max_rows=3", f"rerank.teacher={rerank_teacher}"],
                                  {"base_model": str(micro_run / "encoder")})
    seen = _capture_fit(rerank, monkeypatch)
    result = rerank.finetune(recipe, tmp_path / "student")

    table = seen["train_dataset"]
    assert table.column_names == ["query", "document", "score"]
    assert len(table) == 3 * (1 + recipe.mining.num_negatives)
    teacher = CrossEncoder(str(rerank_teacher))
    expected = teacher.predict(list(zip(table["query"], table["document"])), activation_fn=torch.nn.Identity(), show_progress_bar=False)
    np.testing.assert_allclose(table["score"], expected, atol=1e-5)
    assert set(table["score"]) - {0.0, 1.0}  # not the gold 1/0 labels the rows were built with

    assert type(seen["loss"]).__name__ == "MSELoss"
    assert result.train_loss is not None and result.train_loss > 0
    student = CrossEncoder(str(tmp_path / "student"))
    assert student.predict([(table["query"][0], table["document"][0])], show_progress_bar=False).shape == (1,)


def test_rerank_margin_mse_labels_are_the_teachers_margins(micro_run, micro_world, rerank_teacher, tmp_path):
    from sentence_transformers import CrossEncoder

    from twinlm.finetune import rerank

    recipe = load_finetune_recipe(None, "rerank", [*TINY, "loss=MarginMSELoss", "max_rows=3",
                                                   f"rerank.teacher={rerank_teacher}"],
                                  {"base_model": str(micro_run / "encoder")})
    # 3 rows: their negatives still come from every other train person (a pool of only the kept
    # rows' passages was smaller than mining.num_negatives and failed in random.sample)
    table = rerank.training_rows(recipe, lambda: micro_world)
    assert table.column_names == ["query", "positive", "negative"]  # the gold label is left to the teacher
    assert len(table) == 3 * recipe.mining.num_negatives
    teacher = CrossEncoder(str(rerank_teacher))
    labelled = rerank.add_teacher_labels(table, "MarginMSELoss", teacher)
    pos = teacher.predict(list(zip(table["query"], table["positive"])), activation_fn=torch.nn.Identity(), show_progress_bar=False)
    neg = teacher.predict(list(zip(table["query"], table["negative"])), activation_fn=torch.nn.Identity(), show_progress_bar=False)
    assert labelled.column_names == ["query", "positive", "negative", "label"]
    np.testing.assert_allclose(labelled["label"], pos - neg, atol=1e-5)

    result = rerank.finetune(recipe, tmp_path / "student")
    assert result.train_loss is not None and (tmp_path / "student" / "model.safetensors").is_file()


# ---- multivector --------------------------------------------------------------------------------


def test_multivector_kl_distillation_from_the_world_trains(micro_run, tmp_path, monkeypatch):
    """No train_data: the world's questions with 4 scored candidates each (the teacher stand-in)."""
    from twinlm.finetune import multivector

    recipe = load_finetune_recipe(None, "multivector", [*TINY, "loss=MultiVectorDistillKLDivLoss", "max_rows=8"],
                                  {"base_model": str(micro_run / "encoder")})
    seen = _capture_fit(multivector, monkeypatch)
    result = multivector.finetune(recipe, tmp_path / "kd")
    table = seen["train_dataset"]
    assert table.column_names == ["query", "document_1", "document_2", "document_3", "document_4", "scores"]
    assert len(table) == 8 and all(s == [1.0, 0.0, 0.0, 0.0] for s in table["scores"])
    assert all(r["document_1"] not in (r["document_2"], r["document_3"], r["document_4"]) for r in table)
    assert result.train_loss is not None and result.train_loss > 0
    model = multivector.load_multivector(tmp_path / "kd")
    assert model.encode_query(["Where was Anna born?"], convert_to_numpy=True)[0].shape[-1] == 128


def test_multivector_kl_distillation_from_query_ids(micro_run, micro_world, tmp_path):
    """Rows of (query_id, document_ids, scores) resolve both ids through multivector.queries / documents."""
    from twinlm.finetune import multivector

    rows, docs = multivector.world_distillation(micro_world)
    rows = rows[:8]
    queries = {f"q{i}": r["query"] for i, r in enumerate(rows)}
    scored = [{"query_id": f"q{i}", "document_ids": r["document_ids"], "scores": [3.0, 1.0, 0.5, -1.0]}
              for i, r in enumerate(rows)]
    datasets.Dataset.from_list(scored).to_json(str(tmp_path / "kd.jsonl"))
    datasets.Dataset.from_list([{"_id": k, "text": v} for k, v in docs.items()]).to_json(str(tmp_path / "docs.jsonl"))
    datasets.Dataset.from_list([{"_id": k, "text": v} for k, v in queries.items()]).to_json(str(tmp_path / "q.jsonl"))
    recipe = load_finetune_recipe(None, "multivector", [
        *TINY, "loss=MultiVectorDistillKLDivLoss", f"multivector.documents={tmp_path / 'docs.jsonl'}",
        f"multivector.queries={tmp_path / 'q.jsonl'}",
    ], {"base_model": str(micro_run / "encoder"), "train_data": str(tmp_path / "kd.jsonl")})
    table = multivector._distillation_table(recipe, lambda: micro_world)
    assert table["query"] == [r["query"] for r in rows]
    assert table[0]["document_2"] == docs[rows[0]["document_ids"][1]] and table[0]["scores"] == [3.0, 1.0, 0.5, -1.0]
    result = multivector.finetune(recipe, tmp_path / "kd")
    assert result.train_loss is not None and (tmp_path / "kd" / "model.safetensors").is_file()


def test_multivector_margin_mse_on_cross_encoder_margins(micro_run, micro_world, rerank_teacher, tmp_path):
    """ColBERT distillation as usually done: (query, positive, negative) rows labelled with a
    cross-encoder teacher's margin, trained with MultiVectorMarginMSELoss."""
    from sentence_transformers import CrossEncoder

    from twinlm.finetune import multivector, rerank
    from twinlm.finetune.data import world_table

    triplets = world_table(micro_world, multivector.LOSSES["MultiVectorMarginMSELoss"]).select(range(8))
    labelled = rerank.add_teacher_labels(triplets, "MarginMSELoss", CrossEncoder(str(rerank_teacher)))
    labelled.to_json(str(tmp_path / "margins.jsonl"))
    recipe = load_finetune_recipe(None, "multivector", [*TINY, "loss=MultiVectorMarginMSELoss"],
                                  {"base_model": str(micro_run / "encoder"), "train_data": str(tmp_path / "margins.jsonl")})
    result = multivector.finetune(recipe, tmp_path / "mm")
    assert result.train_loss is not None and result.train_loss > 0
    assert (tmp_path / "mm" / "model.safetensors").is_file()
    multivector.load_multivector(tmp_path / "mm")
