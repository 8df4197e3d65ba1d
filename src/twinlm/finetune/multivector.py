"""Multi-vector (ColBERT-style late interaction) models on sentence-transformers' MultiVectorEncoder.

The model is the base transformer, a linear projection of every token to `multivector.embedding_dim`
(128 in ColBERT), the scoring mask and L2 normalisation; a query and a document are scored by
MaxSim (for each query token its best document token, summed). PyLate, the usual ColBERT trainer,
cannot share an environment with sentence-transformers 6 (ETTIN-FACTS §6), whose own
MultiVectorEncoder trains and loads the same models.

Losses:
- contrastive: MultiVectorMultipleNegativesRankingLoss (default) and its cached variant, columns
  anchor, positive, negative...;
- distillation from teacher scores: MultiVectorDistillKLDivLoss on rows (query, document_ids,
  scores) whose ids are looked up in `multivector.documents` (a table with id and text columns;
  `query_id` instead of `query` is looked up in `multivector.queries`), or MultiVectorMarginMSELoss
  on (query, positive, negative..., label).
Evaluation: nDCG@10 / MRR@10 / Recall@100 by exhaustive MaxSim over the evaluation corpus.
Retrieval over large corpora: `twinlm.finetune.index` (exhaustive or IVF/PLAID-style).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from twinlm.errors import UserError
from twinlm.finetune.base import (
    BaseModel,
    FitResult,
    fit,
    inspect_base,
    ir_scores,
    make_loss,
    transformer_module,
)
from twinlm.finetune.data import (
    LossColumns,
    load_table,
    match_columns,
    recipe_world,
    retrieval_eval_task,
    training_table,
)
from twinlm.finetune.dense import check_loss
from twinlm.finetune.hits import Hit
from twinlm.finetune.index import build_index, pack_vectors
from twinlm.finetune.recipe import FinetuneRecipe
from twinlm.world.generator import retrieval_pairs

DEFAULT_LOSS = "MultiVectorMultipleNegativesRankingLoss"
_RANKING = LossColumns(("anchor", "positive"), repeat="negative")
DISTILL_INPUT = LossColumns(("query", "document_ids"), label="scores")  # as stored; ids resolved before training
LOSSES: dict[str, LossColumns] = {
    "MultiVectorMultipleNegativesRankingLoss": _RANKING,
    "CachedMultiVectorMultipleNegativesRankingLoss": _RANKING,
    "MultiVectorDistillKLDivLoss": LossColumns(("query",), repeat="document", label="scores"),
    "MultiVectorMarginMSELoss": LossColumns(("query", "positive"), repeat="negative", label="label"),
}
IN_BATCH = ("MultiVectorMultipleNegativesRankingLoss", "CachedMultiVectorMultipleNegativesRankingLoss")


def build_model(base: BaseModel, recipe: FinetuneRecipe):
    """Transformer -> token projection -> scoring mask -> L2 normalisation, untrained projection."""
    import torch
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules import Dense, Normalize
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask
    from torch import nn

    torch.manual_seed(recipe.training.seed)  # the projection starts the same way every run
    section = recipe.multivector
    module = transformer_module(base, max_seq_length=recipe.training.max_seq_length)
    # Queries are short and documents long: ColBERT truncates each to its own length.
    module.query_length, module.document_length = section.query_length, section.document_length
    projection = Dense(in_features=module.get_embedding_dimension(), out_features=section.embedding_dim, bias=False,
                       activation_function=nn.Identity(), module_input_name="token_embeddings")
    return MultiVectorEncoder(modules=[module, projection, MultiVectorMask(), Normalize(module_input_name="token_embeddings")])


def ir_evaluator(task: dict[str, dict], batch_size: int = 32):
    from sentence_transformers.multi_vector_encoder.evaluation import MultiVectorInformationRetrievalEvaluator

    return MultiVectorInformationRetrievalEvaluator(
        queries=task["queries"], corpus=task["corpus"], relevant_docs={q: set(d) for q, d in task["qrels"].items()},
        mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=[1], precision_recall_at_k=[10, 100], map_at_k=[100],
        batch_size=batch_size, name="eval", write_csv=False, show_progress_bar=False,
    )


# ---- distillation data ------------------------------------------------------------------------


def lookup(source: str, what: str) -> dict[str, str]:
    """id -> text from a table (BEIR corpus.jsonl/queries.jsonl or any table with an id and a text column)."""
    table = load_table(source)
    cols = table.column_names
    id_col = next((c for c in ("_id", "id") if c in cols), None) or next((c for c in cols if c.endswith("_id")), None)
    text_col = "text" if "text" in cols else None
    if id_col is None or text_col is None:
        raise UserError(f"{what} table {source!r} needs an id column (_id, id or *_id) and a text column; "
                        f"it has {', '.join(cols)}")
    out = {}
    for row in table:
        title = (row.get("title") or "").strip() if "title" in cols else ""
        out[str(row[id_col])] = f"{title} {row[text_col]}".strip() if title else row[text_col]
    return out


def resolve_distillation(table, documents: dict[str, str], queries: dict[str, str] | None = None):
    """(query | query_id, document_ids, scores) -> (query, document_1..N, scores) with texts looked up.

    Every row must list the same number of documents (the loss scores them as one block); longer
    lists are cut to the shortest, keeping the stored order."""
    import datasets

    if "query" not in table.column_names:
        if "query_id" not in table.column_names or queries is None:
            raise UserError("distillation rows need a query column, or query_id plus multivector.queries (id, text)")
    width = min(len(ids) for ids in table["document_ids"])
    if width < 2:
        raise UserError("distillation needs at least 2 scored documents per query (document_ids and scores)")
    rows = []
    for row in table:
        ids, scores = [str(i) for i in row["document_ids"]][:width], list(row["scores"])[:width]
        if len(row["scores"]) != len(row["document_ids"]):
            raise UserError(f"a row has {len(row['document_ids'])} document_ids but {len(row['scores'])} scores")
        missing = [i for i in ids if i not in documents]
        if missing:
            raise UserError(f"document id {missing[0]!r} is not in multivector.documents ({len(documents)} documents)")
        query = row["query"] if "query" in row else queries.get(str(row["query_id"]))  # type: ignore[union-attr]
        if query is None:
            raise UserError(f"query id {row['query_id']!r} is not in multivector.queries")
        rows.append({"query": query, **{f"document_{i + 1}": documents[d] for i, d in enumerate(ids)},
                     "scores": [float(s) for s in scores]})
    return datasets.Dataset.from_list(rows)


def world_distillation(world, seed: int = 0, candidates: int = 4) -> tuple[list[dict], dict[str, str]]:
    """World rows (query, document_ids, scores) and their documents: each question with its
    person's biography and `candidates - 1` other train people's, scored by the world's known
    answer (1 for the right person, 0 otherwise): a stand-in for a teacher's scores."""
    train_people, _ = world.split()
    pairs = retrieval_pairs(world, train_people, seed=seed, per_person=2)
    docs = {f"p{i}": text for i, text in enumerate(sorted({p["positive"] for p in pairs}))}
    by_text = {t: i for i, t in docs.items()}
    rng = random.Random(f"distill-{seed}")
    rows = []
    for pair in pairs:
        pos = by_text[pair["positive"]]
        others = rng.sample([d for d in docs if d != pos], candidates - 1)
        rows.append({"query": pair["anchor"], "document_ids": [pos, *others], "scores": [1.0] + [0.0] * len(others)})
    return rows, docs


def _distillation_table(recipe: FinetuneRecipe, world: Callable):
    import datasets

    section = recipe.multivector
    if recipe.train_data:
        if not section.documents:
            raise UserError("MultiVectorDistillKLDivLoss reads document ids: set multivector.documents to a table "
                            "of (id, text), e.g. a BEIR corpus.jsonl")
        table = load_table(recipe.train_data, recipe.split, recipe.max_rows)
        if "query_id" in table.column_names and "query" not in table.column_names:
            needs = LossColumns(("query_id", "document_ids"), label="scores")
        else:
            needs = DISTILL_INPUT
        table = match_columns(table, needs, recipe.columns, recipe.loss, repr(recipe.train_data))
        docs = lookup(section.documents, "multivector.documents")
        queries = lookup(section.queries, "multivector.queries") if section.queries else None
        return resolve_distillation(table, docs, queries)
    rows, docs = world_distillation(world(), recipe.training.seed)
    if recipe.max_rows is not None:
        rows = rows[: recipe.max_rows]
    return resolve_distillation(datasets.Dataset.from_list(rows), docs)


def _make_loss(name: str, args: dict, model, recipe: FinetuneRecipe):
    from sentence_transformers.multi_vector_encoder import losses

    return make_loss(losses, name, model, args, recipe)


def finetune(recipe: FinetuneRecipe, out: str | Path, overwrite: bool = False) -> FitResult:
    from sentence_transformers import MultiVectorEncoderTrainer, MultiVectorEncoderTrainingArguments
    from sentence_transformers.base.training_args import BatchSamplers

    base = inspect_base(recipe.base_model)
    world: Callable = recipe_world(recipe)
    recipe.loss = check_loss(recipe.loss or DEFAULT_LOSS, "multivector", LOSSES)
    if recipe.datasets:
        raise UserError("multivector trains on one dataset; `datasets` (multi-dataset training) is for dense models")
    if recipe.loss == "MultiVectorDistillKLDivLoss":
        train = _distillation_table(recipe, world)
        train = match_columns(train, LOSSES[recipe.loss], {}, recipe.loss, "the distillation data")
    else:
        train = training_table(recipe, LOSSES[recipe.loss], recipe.loss, world)
    task = retrieval_eval_task(recipe, world)
    model = build_model(base, recipe)
    loss = _make_loss(recipe.loss, recipe.loss_args, model, recipe)
    evaluator = ir_evaluator(task, batch_size=recipe.training.batch_size)
    sampler = BatchSamplers.NO_DUPLICATES if recipe.loss in IN_BATCH else BatchSamplers.BATCH_SAMPLER
    notes = (f"Late interaction (MaxSim) over {recipe.multivector.embedding_dim}-dimensional token vectors; "
             f"queries cut to {recipe.multivector.query_length} tokens, documents to {recipe.multivector.document_length}.")
    return fit(model=model, trainer_cls=MultiVectorEncoderTrainer, args_cls=MultiVectorEncoderTrainingArguments,
               recipe=recipe, train_dataset=train, loss=loss, evaluate=lambda m: ir_scores(evaluator, m),
               out=Path(out), overwrite=overwrite, args_extra={"batch_sampler": sampler}, card_notes=notes)


def load_multivector(path: str | Path):
    """A saved multi-vector model (a twinlm output folder or any MultiVectorEncoder/PyLate checkpoint)."""
    from sentence_transformers import MultiVectorEncoder

    return MultiVectorEncoder(str(path))


# ---- `twinlm encode` / `twinlm search` (registered in twinlm.finetune.kinds) --------------------

IVF_FROM_DOCS = 50_000  # above this many documents `search` uses the approximate IVF index


def encode_multivectors(model, texts: list[str], batch_size: int = 32, progress: bool = True, query: bool = False):
    fn = model.encode_query if query else model.encode_document
    return fn(texts, batch_size=batch_size, show_progress_bar=progress, convert_to_numpy=True)


def save_multivectors(vectors) -> tuple[dict, dict]:
    """Packed token vectors [total_tokens, dim] and offsets [n + 1]: text i owns rows offsets[i]:offsets[i+1]
    (the layout of an exhaustive MaxSim index; `twinlm.finetune.index.load_index` reads the folder)."""
    packed, offsets = pack_vectors(vectors)
    return {"vectors": packed.contiguous(), "offsets": offsets}, {
        "dimensions": int(packed.shape[1]), "tokens_mean": packed.shape[0] / max(1, len(vectors))}


def search_multivector(model, corpus: list[str], queries: list[str], k: int = 10,
                       progress: bool = True) -> list[list[Hit]]:
    kind = "ivf" if len(corpus) >= IVF_FROM_DOCS else "exhaustive"
    index = build_index(kind, [str(i) for i in range(len(corpus))], encode_multivectors(model, corpus, progress=progress))
    return index.search(encode_multivectors(model, queries, progress=False, query=True), k)
