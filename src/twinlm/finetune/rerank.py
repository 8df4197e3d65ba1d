"""Rerankers: a CrossEncoder (query and document read together, one relevance logit) trained with
sentence-transformers' CrossEncoderTrainer.

Losses and the columns they read:
- BinaryCrossEntropyLoss (default): query, document, label (1 relevant, 0 not); `rerank.pos_weight`
  weighs positives (default: negatives per positive, so both classes count equally);
- MultipleNegativesRankingLoss / CachedMultipleNegativesRankingLoss: query, positive, negative...;
- ListNetLoss / LambdaLoss (listwise): query, documents (a list), labels (a list);
- MSELoss (score distillation, how the Ettin rerankers were trained): query, document, score, the
  scores made by `rerank.teacher` (a CrossEncoder) when set; MarginMSELoss: query, positive,
  negative, label (the teacher's margin).
With `mining.model` (`--mine-with`), (query, positive) pairs get hard negatives from that dense
model first, shaped for the loss. Evaluation: nDCG@10 and MRR@10 of the reranked top-k candidates
of each held-out query (from `rerank.retriever`, a dense model, when set).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from pathlib import Path

from twinlm.errors import UserError
from twinlm.finetune.base import FitResult, fit, inspect_base, make_loss
from twinlm.finetune.data import LossColumns, load_table, match_columns, recipe_world, retrieval_eval_task
from twinlm.finetune.dense import check_loss
from twinlm.finetune.hits import Hit
from twinlm.finetune.mining import load_dense, mine
from twinlm.finetune.recipe import FinetuneRecipe
from twinlm.world.generator import retrieval_pairs
from twinlm.world.vocab import QUESTIONS

DEFAULT_LOSS = "BinaryCrossEntropyLoss"
_PAIR = LossColumns(("query", "document"), label="label")
_TUPLE = LossColumns(("query", "positive"), repeat="negative")
_LIST = LossColumns(("query", "documents"), label="labels")
# loss -> (columns, the mining output format that yields them)
LOSSES: dict[str, tuple[LossColumns, str]] = {
    "BinaryCrossEntropyLoss": (_PAIR, "labeled-pair"),
    "MultipleNegativesRankingLoss": (_TUPLE, "n-tuple"),
    "CachedMultipleNegativesRankingLoss": (_TUPLE, "n-tuple"),
    "ListNetLoss": (_LIST, "labeled-list"),
    "LambdaLoss": (_LIST, "labeled-list"),
    "MSELoss": (LossColumns(("query", "document"), label="score"), "labeled-pair"),
    "MarginMSELoss": (LossColumns(("query", "positive", "negative"), label="label"), "triplet"),
}
TEACHER_LOSSES = ("MSELoss", "MarginMSELoss")


def _shape(rows: list[dict], loss: str) -> list[dict]:
    """(query, positive, negatives[]) rows -> the loss's columns (gold 1/0 labels where it takes labels)."""
    out: list[dict] = []
    for r in rows:
        q, pos, negs = r["query"], r["positive"], r["negatives"]
        fmt = LOSSES[loss][1]
        if fmt == "labeled-pair":
            key = LOSSES[loss][0].label
            out += [{"query": q, "document": pos, key: 1.0}] + [{"query": q, "document": n, key: 0.0} for n in negs]
        elif fmt == "labeled-list":
            out.append({"query": q, "documents": [pos, *negs], "labels": [1.0] + [0.0] * len(negs)})
        elif fmt == "triplet":
            out += [{"query": q, "positive": pos, "negative": n, "label": 1.0} for n in negs]
        else:
            out.append({"query": q, "positive": pos, **{f"negative_{i + 1}": n for i, n in enumerate(negs)}})
    return out


def _from_mined(mined, fmt: str) -> list[dict]:
    if fmt == "labeled-list":
        return [{"query": r["anchor"], "positive": r["positive"][0], "negatives": r["positive"][1:]} for r in mined]
    negs = lambda r: [r[k] for k in r if k.startswith("negative")]  # noqa: E731
    return [{"query": r["anchor"], "positive": r["positive"], "negatives": negs(r)} for r in mined]


def training_rows(recipe: FinetuneRecipe, world: Callable):
    """The training table for the recipe's loss: the user's table as is, or (with mining) its
    (query, positive) pairs with mined negatives, or the world's questions with random or mined negatives."""
    import datasets

    needs, fmt = LOSSES[recipe.loss]
    teacher_makes_labels = recipe.loss in TEACHER_LOSSES and recipe.rerank.teacher
    if teacher_makes_labels:
        needs = LossColumns(needs.required, needs.optional, needs.repeat)
    mining = recipe.mining.model
    if recipe.train_data and not mining:
        table = load_table(recipe.train_data, recipe.split, recipe.max_rows)
        return match_columns(table, needs, recipe.columns, recipe.loss, repr(recipe.train_data))
    if recipe.train_data:
        pairs = load_table(recipe.train_data, recipe.split, recipe.max_rows)
        pairs = match_columns(pairs, LossColumns(("query", "positive")), recipe.columns, "mining", repr(recipe.train_data))
        pairs = pairs.rename_column("query", "anchor")
    else:
        w = world()
        train_people, _ = w.split()
        # In-batch-negative losses get one question per person (a second one would bring that
        # person's other passage into the batch as a false negative); losses with explicit labels
        # get every kind of question, which a small cross-encoder needs to learn name matching.
        per_person = 1 if fmt == "n-tuple" else len(QUESTIONS)
        rows = retrieval_pairs(w, train_people, seed=recipe.training.seed, per_person=per_person)
        # negatives come from every train person's passages, however few rows max_rows keeps
        passages = sorted(set(r["positive"] for r in rows))
        if recipe.max_rows is not None:
            rows = rows[: recipe.max_rows]
        pairs = datasets.Dataset.from_list(rows)
        if not mining:
            owner = {w.biography(p, v): p.id for p in train_people for v in range(w.config.biographies_per_person)}
            rng = random.Random(f"rerank-negatives-{recipe.training.seed}")
            k = recipe.mining.num_negatives
            shaped = [{"query": r["anchor"], "positive": r["positive"],
                       "negatives": rng.sample([p for p in passages if owner[p] != owner[r["positive"]]], k)}
                      for r in rows]
            return match_columns(datasets.Dataset.from_list(_shape(shaped, recipe.loss)), needs, {}, recipe.loss, "world")

    mined = mine(pairs, load_dense(mining), recipe.mining, "labeled-list" if fmt == "labeled-list" else "n-tuple")
    rows = _from_mined(mined, "labeled-list" if fmt == "labeled-list" else "n-tuple")
    return match_columns(datasets.Dataset.from_list(_shape(rows, recipe.loss)), needs, {}, recipe.loss, "mined data")


def add_teacher_labels(table, loss: str, teacher) -> object:
    """Label rows with the teacher's raw logits (no sigmoid): the student's loss compares its own
    logits to them, and margins of probabilities would be squashed near 0 and 1."""
    import torch

    def score(docs):
        return teacher.predict(list(zip(table["query"], table[docs])), activation_fn=torch.nn.Identity(),
                               show_progress_bar=False)

    if loss == "MSELoss":
        return table.remove_columns([c for c in ("score",) if c in table.column_names]).add_column(
            "score", [float(s) for s in score("document")])
    pos, neg = score("positive"), score("negative")
    return table.remove_columns([c for c in ("label",) if c in table.column_names]).add_column(
        "label", [float(p - n) for p, n in zip(pos, neg)])


# ---- evaluation -------------------------------------------------------------------------------


def rerank_samples(task: dict[str, dict], top_k: int, retriever=None, seed: int = 0) -> list[dict]:
    """Per query: its relevant documents and `top_k` candidates, retrieved by `retriever` (a
    SentenceTransformer) or else the relevant ones plus a seeded sample of the others."""
    doc_ids = list(task["corpus"])
    texts = [task["corpus"][d] for d in doc_ids]
    samples = []
    if retriever is not None:
        from sentence_transformers.util import semantic_search

        qids = list(task["qrels"])
        q = retriever.encode_query([task["queries"][i] for i in qids], convert_to_tensor=True, show_progress_bar=False)
        d = retriever.encode_document(texts, convert_to_tensor=True, show_progress_bar=False)
        hits = semantic_search(q, d, top_k=top_k)
        for qid, found in zip(qids, hits):
            samples.append({"query": task["queries"][qid], "positive": [task["corpus"][i] for i in task["qrels"][qid]],
                            "documents": [texts[h["corpus_id"]] for h in found]})
        return samples
    rng = random.Random(f"rerank-eval-{seed}")
    for qid, rel in task["qrels"].items():
        others = [d for d in doc_ids if d not in rel]
        negatives = rng.sample(others, min(len(others), max(0, top_k - len(rel))))
        samples.append({"query": task["queries"][qid], "positive": [task["corpus"][d] for d in rel],
                        "negative": [task["corpus"][d] for d in negatives]})
    return samples


def rerank_evaluator(samples: list[dict], batch_size: int = 32):
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator

    # With retrieved candidates, positives the retriever missed stay missed (retrieve-then-rerank).
    realistic = any("documents" in s for s in samples)
    return CrossEncoderRerankingEvaluator(samples, at_k=10, always_rerank_positives=not realistic, name="eval",
                                          batch_size=batch_size, write_csv=False, show_progress_bar=False)


def rerank_scores(evaluator, model) -> dict[str, float]:
    raw = evaluator(model)
    return {m: float(raw[f"eval_{m}"]) for m in ("ndcg@10", "mrr@10", "map")}


# ---- model, training, use ---------------------------------------------------------------------


def build_model(recipe: FinetuneRecipe):
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoConfig

    torch.manual_seed(recipe.training.seed)  # the new score head starts the same way every run
    config_kwargs = {}
    if hasattr(AutoConfig.from_pretrained(recipe.base_model), "classifier_pooling"):
        config_kwargs["classifier_pooling"] = recipe.rerank.pooling  # ModernBERT-style heads only
    return CrossEncoder(recipe.base_model, num_labels=1, max_length=recipe.training.max_seq_length,
                        config_kwargs=config_kwargs)


def _make_loss(name: str, recipe: FinetuneRecipe, model, table):
    import torch
    from sentence_transformers.cross_encoder import losses

    args = dict(recipe.loss_args)
    if name == "BinaryCrossEntropyLoss":
        weight = recipe.rerank.pos_weight
        if weight is None:
            labels = table["label"]
            positives = sum(1 for v in labels if v > 0.5)
            weight = (len(labels) - positives) / max(1, positives)
        args["pos_weight"] = torch.tensor(float(weight))
    return make_loss(losses, name, model, args, recipe)


def finetune(recipe: FinetuneRecipe, out: str | Path, overwrite: bool = False) -> FitResult:
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments

    inspect_base(recipe.base_model)  # a clear error for a bad base before any data work
    world: Callable = recipe_world(recipe)
    recipe.loss = check_loss(recipe.loss or DEFAULT_LOSS, "rerank", LOSSES)
    if recipe.datasets:
        raise UserError("rerank trains on one dataset; `datasets` (multi-dataset training) is for dense models")
    if recipe.loss in TEACHER_LOSSES and recipe.rerank.teacher is None and recipe.train_data is None and recipe.mining.model:
        print("note: no rerank.teacher: distilling the gold 1/0 labels", file=sys.stderr)
    task = retrieval_eval_task(recipe, world)
    retriever = None
    if recipe.rerank.retriever:
        retriever = load_dense(recipe.rerank.retriever)
    table = training_rows(recipe, world)
    if recipe.loss in TEACHER_LOSSES and recipe.rerank.teacher:
        from sentence_transformers import CrossEncoder

        table = add_teacher_labels(table, recipe.loss, CrossEncoder(recipe.rerank.teacher))
    model = build_model(recipe)
    loss = _make_loss(recipe.loss, recipe, model, table)
    evaluator = rerank_evaluator(rerank_samples(task, recipe.rerank.top_k, retriever, recipe.training.seed),
                                 batch_size=recipe.training.batch_size)
    first = f"candidates from `{recipe.rerank.retriever}`" if retriever else "the relevant documents plus sampled others"
    notes = f"Evaluation reranks the top {recipe.rerank.top_k} candidates per query ({first})."
    return fit(model=model, trainer_cls=CrossEncoderTrainer, args_cls=CrossEncoderTrainingArguments, recipe=recipe,
               train_dataset=table, loss=loss, evaluate=lambda m: rerank_scores(evaluator, m), out=Path(out),
               overwrite=overwrite, card_notes=notes)


def rerank(model, query: str, candidates: list[tuple[str, str]], top_k: int | None = None) -> list[tuple[str, float]]:
    """Reorder (doc_id, text) candidates by the cross-encoder's score; best first."""
    if not candidates:
        return []
    scores = model.predict([(query, text) for _, text in candidates], show_progress_bar=False)
    ranked = sorted(zip((d for d, _ in candidates), (float(s) for s in scores)), key=lambda x: -x[1])
    return ranked[:top_k] if top_k else ranked


def load_reranker(path: str):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(path)


def rerank_hits(reranker_path: str, corpus: list[str], queries: list[str],
                first_stage: list[list[Hit]]) -> list[list[Hit]]:
    """`twinlm search --reranker`: re-score each query's first-stage hits with the cross-encoder."""
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(reranker_path)
    out = []
    for query, hits in zip(queries, first_stage):
        by_index = {h.index: h.doc_id for h in hits}
        ranked = rerank(model, query, [(str(h.index), corpus[h.index]) for h in hits])
        out.append([Hit(int(i), s, doc_id=by_index[int(i)]) for i, s in ranked])
    return out
