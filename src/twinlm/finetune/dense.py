"""Dense embedding models: a SentenceTransformer (transformer + pooling) trained with one of the
sentence-transformers losses below, optionally wrapped in MatryoshkaLoss, on one dataset or on
several (each with its own loss), evaluated by nDCG@10 / MRR@10 / Recall@100.

Pooling follows the architecture: mean for encoders, last token for decoders (the Ettin
retrieval protocol); `dense.bidirectional` lets a decoder attend both ways.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from twinlm.errors import UserError
from twinlm.finetune.base import (
    BaseModel,
    FitResult,
    fit,
    inspect_base,
    ir_evaluator,
    ir_scores,
    make_loss,
    transformer_module,
)
from twinlm.finetune.data import LossColumns, recipe_world, retrieval_eval_task, training_table
from twinlm.finetune.hits import Hit, top_hits
from twinlm.finetune.recipe import FinetuneRecipe

DEFAULT_LOSS = "CachedMultipleNegativesRankingLoss"  # Ettin's retrieval fine-tuning loss
_RANKING = LossColumns(("anchor", "positive"), repeat="negative")
_PAIR_LABEL = LossColumns(("sentence1", "sentence2"), label="label")
_PAIR_SCORE = LossColumns(("sentence1", "sentence2"), label="score")

# loss name -> (columns it reads, uses in-batch negatives)
LOSSES: dict[str, tuple[LossColumns, bool]] = {
    "MultipleNegativesRankingLoss": (_RANKING, True),
    "CachedMultipleNegativesRankingLoss": (_RANKING, True),
    "ContrastiveLoss": (_PAIR_LABEL, False),
    "OnlineContrastiveLoss": (_PAIR_LABEL, False),
    "CoSENTLoss": (_PAIR_SCORE, False),
    "AnglELoss": (_PAIR_SCORE, False),
    "CosineSimilarityLoss": (_PAIR_SCORE, False),
    "SoftmaxLoss": (_PAIR_LABEL, False),
    "TripletLoss": (LossColumns(("anchor", "positive", "negative")), False),
    "MSELoss": (LossColumns(("text",), label="label"), False),  # label: teacher embedding
    "MarginMSELoss": (LossColumns(("query", "positive", "negative"), label="label"), False),  # label: teacher margin
}
TEACHER_LOSSES = ("MSELoss", "MarginMSELoss")
OTHER_KINDS = {"Splade": "sparse", "CSR": "sparse", "Sparse": "sparse", "BinaryCrossEntropy": "rerank",
               "ListNet": "rerank", "LambdaLoss": "rerank", "ColBERT": "multivector"}


def check_loss(name: str, kind: str, losses: dict) -> str:
    """The loss name, or a UserError naming the kind it belongs to and this kind's losses."""
    if name in losses:
        return name
    for prefix, other in OTHER_KINDS.items():
        if name.startswith(prefix) and other != kind:
            raise UserError(f"{name} is a {other} loss and does not fit a {kind} model; use `twinlm finetune {other}` "
                            f"or one of: {', '.join(losses)}")
    raise UserError(f"unknown {kind} loss {name!r}; valid: {', '.join(losses)}")


def build_model(base: BaseModel, recipe: FinetuneRecipe, pooling: str):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    mode = base.default_pooling if pooling == "auto" else pooling
    module = transformer_module(base, max_seq_length=recipe.training.max_seq_length,
                                bidirectional=recipe.dense.bidirectional)
    hidden = module.get_embedding_dimension() if hasattr(module, "get_embedding_dimension") else module.config.hidden_size
    return SentenceTransformer(modules=[module, Pooling(hidden, pooling_mode=mode)])


def _teacher_labels(table, loss_name: str, teacher):
    """MSE: the teacher's embedding of each text; MarginMSE: sim(q, pos) - sim(q, neg)."""
    if loss_name == "MSELoss":
        emb = teacher.encode(table["text"], convert_to_numpy=True, show_progress_bar=False)
        return table.add_column("label", [row.tolist() for row in emb])
    q, p, n = (teacher.encode(table[c], convert_to_tensor=True, show_progress_bar=False)
               for c in ("query", "positive", "negative"))
    margin = (teacher.similarity_pairwise(q, p) - teacher.similarity_pairwise(q, n)).tolist()
    return table.add_column("label", margin)


def _make_loss(name: str, args: dict, model, recipe: FinetuneRecipe, table):
    from sentence_transformers.sentence_transformer import losses

    args = dict(args)
    if name == "CachedMultipleNegativesRankingLoss":
        args.setdefault("show_progress_bar", False)
    if name == "SoftmaxLoss":
        args.setdefault("sentence_embedding_dimension", model.get_sentence_embedding_dimension())
        args.setdefault("num_labels", int(max(table["label"])) + 1)
    loss = make_loss(losses, name, model, args, recipe)
    dims = recipe.dense.matryoshka_dims
    if dims:
        full = model.get_sentence_embedding_dimension()
        bad = [d for d in dims if not 0 < d <= full]
        if bad:
            raise UserError(f"dense.matryoshka_dims {bad} must be between 1 and the embedding size {full}")
        loss = losses.MatryoshkaLoss(model, loss, matryoshka_dims=sorted({full, *dims}, reverse=True))
    return loss


def finetune(recipe: FinetuneRecipe, out: str | Path, overwrite: bool = False) -> FitResult:
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.training_args import BatchSamplers, MultiDatasetBatchSamplers
    from transformers import set_seed

    base = inspect_base(recipe.base_model)
    world: Callable = recipe_world(recipe)
    recipe.loss = check_loss(recipe.loss or DEFAULT_LOSS, "dense", LOSSES)
    specs = recipe.datasets or [None]
    names, tables = [], []
    for spec in specs:  # every dataset is read and checked before any model is loaded
        loss_name = check_loss(spec.loss or recipe.loss, "dense", LOSSES) if spec else recipe.loss
        needs = LOSSES[loss_name][0]
        if loss_name in TEACHER_LOSSES and recipe.dense.teacher:
            needs = LossColumns(needs.required)  # the teacher makes the labels
        names.append(loss_name)
        tables.append(training_table(recipe, needs, loss_name, world, spec))
    task = retrieval_eval_task(recipe, world)

    set_seed(recipe.training.seed)  # heads and autoencoders start from the same weights every run
    model = build_model(base, recipe, recipe.dense.pooling)
    teacher = None
    if recipe.dense.teacher and any(n in TEACHER_LOSSES for n in names):
        from sentence_transformers import SentenceTransformer

        teacher = SentenceTransformer(recipe.dense.teacher)
    loss_objs, in_batch = [], False
    for i, (spec, name) in enumerate(zip(specs, names)):
        if teacher is not None and name in TEACHER_LOSSES:
            tables[i] = _teacher_labels(tables[i], name, teacher)
        args = (spec.loss_args if spec else None) or recipe.loss_args
        loss_objs.append(_make_loss(name, args, model, recipe, tables[i]))
        in_batch |= LOSSES[name][1]
    if recipe.datasets:
        train = {s.name: t for s, t in zip(specs, tables)}
        loss = {s.name: lo for s, lo in zip(specs, loss_objs)}
    else:
        train, loss = tables[0], loss_objs[0]
    evaluator = ir_evaluator(task, batch_size=recipe.training.batch_size)
    args_extra = {
        # In-batch negatives must not contain the anchor's own positive text twice.
        "batch_sampler": BatchSamplers.NO_DUPLICATES if in_batch else BatchSamplers.BATCH_SAMPLER,
        "multi_dataset_batch_sampler": MultiDatasetBatchSamplers.ROUND_ROBIN
        if recipe.dense.sampling == "round_robin" else MultiDatasetBatchSamplers.PROPORTIONAL,
    }
    notes = f"Pooling: {model[1].pooling_mode}; base family: {base.family}."
    return fit(model=model, trainer_cls=SentenceTransformerTrainer, args_cls=SentenceTransformerTrainingArguments,
               recipe=recipe, train_dataset=train, loss=loss, evaluate=lambda m: ir_scores(evaluator, m),
               out=Path(out), overwrite=overwrite, args_extra=args_extra, card_notes=notes)


# ---- `twinlm encode` / `twinlm search` (registered in twinlm.finetune.kinds) --------------------


def load_dense(path: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path)


def encode_dense(model, texts: list[str], batch_size: int = 32, progress: bool = True, query: bool = False):
    fn = model.encode_query if query else model.encode_document
    return fn(texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=progress).cpu()


def dense_tensors(vectors) -> tuple[dict, dict]:
    """`embeddings` [n, d] for vectors.safetensors, and the stats for meta.json."""
    return {"embeddings": vectors.contiguous()}, {"dimensions": int(vectors.shape[1])}


def search_dense(model, corpus: list[str], queries: list[str], k: int = 10, progress: bool = True) -> list[list[Hit]]:
    docs = encode_dense(model, corpus, progress=progress)
    q = encode_dense(model, queries, progress=False, query=True)
    return top_hits(model.similarity(q, docs), k)
