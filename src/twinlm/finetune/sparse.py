"""Sparse retrievers (SparseEncoder), three variants (`sparse.variant`):

- splade: the base model's MLM head gives vocabulary logits, SPLADE max pooling makes them a
  sparse bag of weighted terms; SpladeLoss adds FLOPS regularisers on queries and documents.
- inference_free: queries go through a static per-token weight table (no transformer at query
  time), documents through the SPLADE encoder; a Router picks the route from the column name.
- csr: a sparse autoencoder (top-k) on top of a dense model's pooled embedding, trained with
  CSRLoss (reconstruction + contrastive). Works for any base model, including decoders.

Every evaluation reports active dimensions and sparsity of queries and documents.
"""

from __future__ import annotations

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
from twinlm.finetune.dense import check_loss
from twinlm.finetune.hits import Hit, top_hits
from twinlm.finetune.recipe import FinetuneRecipe

OUTER_LOSS = {"splade": "SpladeLoss", "inference_free": "SpladeLoss", "csr": "CSRLoss"}
INNER_COLUMNS = {
    "SparseMultipleNegativesRankingLoss": LossColumns(("anchor", "positive"), repeat="negative"),
    "SparseMarginMSELoss": LossColumns(("query", "positive", "negative"), label="label"),
}
# The inference-free query route's static weights: `Router` stores them as sub_modules.query.0
# (ETTIN-FACTS §6: a key naming SparseStaticEmbedding matches no parameter).
STATIC_WEIGHT_PATTERN = r"sub_modules\.query\.0\.weight"


def build_model(base: BaseModel, recipe: FinetuneRecipe):
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sentence_transformer.modules import Pooling
    from sentence_transformers.sparse_encoder.modules import (
        Router,
        SparseAutoEncoder,
        SparseStaticEmbedding,
        SpladePooling,
    )

    s, max_len = recipe.sparse, recipe.training.max_seq_length
    if s.variant == "csr":
        module = transformer_module(base, max_seq_length=max_len)
        dim = module.config.hidden_size
        mode = base.default_pooling if s.pooling == "auto" else s.pooling
        sae = SparseAutoEncoder(input_dim=dim, hidden_dim=s.csr_hidden_dim, k=s.csr_k, k_aux=s.csr_k_aux)
        if not s.csr_train_backbone:
            module.requires_grad_(False)
        return SparseEncoder(modules=[module, Pooling(dim, pooling_mode=mode), sae], similarity_fn_name="cosine")
    doc = transformer_module(base, task="fill-mask", max_seq_length=max_len)
    pooling = SpladePooling(pooling_strategy="max", embedding_dimension=doc.config.vocab_size)
    if s.variant == "splade":
        return SparseEncoder(modules=[doc, pooling])
    static = SparseStaticEmbedding(tokenizer=doc.tokenizer, frozen=False)
    if static.num_dimensions != doc.config.vocab_size:
        # The static table is sized by the tokenizer; the MLM head by the (padded) model vocabulary.
        import torch

        static = SparseStaticEmbedding(tokenizer=doc.tokenizer, weight=torch.ones(doc.config.vocab_size), frozen=False)
    router = Router.for_query_document(query_modules=[static], document_modules=[doc, pooling])
    return SparseEncoder(modules=[router])


def _check_base(base: BaseModel, recipe: FinetuneRecipe) -> None:
    if recipe.sparse.variant != "csr" and not base.has_mlm_head:
        arch = ", ".join(base.architectures) or base.model_type
        raise UserError(
            f"SPLADE needs a fill-mask model (an ...ForMaskedLM head); {base.name} is {arch}. "
            "Use --set sparse.variant=csr for a sparse autoencoder on any model"
        )


def _make_loss(model, recipe: FinetuneRecipe):
    from sentence_transformers.sparse_encoder import losses

    s = recipe.sparse
    args = dict(recipe.loss_args)
    if s.variant == "csr" and s.inner_loss == "SparseMultipleNegativesRankingLoss":
        from sentence_transformers.util import cos_sim

        # CSR codes are dense-model features, not term weights: compare them by temperature-scaled
        # cosine, as the dense MNRL does (a plain dot product at scale 1 barely trains).
        args.setdefault("scale", 20.0)
        args.setdefault("similarity_fct", cos_sim)
    inner = make_loss(losses, s.inner_loss, model, args, recipe)
    if s.variant == "csr":
        return losses.CSRLoss(model, loss=inner, beta=s.csr_beta, gamma=s.csr_gamma)
    return losses.SpladeLoss(
        model, loss=inner,
        document_regularizer_weight=s.document_regularizer_weight,
        query_regularizer_weight=s.query_regularizer_weight,
        # The static query weights need no FLOPS penalty: queries cost nothing at inference.
        use_document_regularizer_only=s.variant == "inference_free",
    )


def static_lr_mapping(model, recipe: FinetuneRecipe) -> dict[str, float]:
    import re

    names = [n for n, _ in model.named_parameters() if re.search(STATIC_WEIGHT_PATTERN, n)]
    if len(names) != 1:
        raise RuntimeError(f"the static query embedding matched {names}; expected one parameter")
    return {STATIC_WEIGHT_PATTERN: recipe.sparse.static_embedding_lr}


def finetune(recipe: FinetuneRecipe, out: str | Path, overwrite: bool = False) -> FitResult:
    from sentence_transformers import SparseEncoderTrainer, SparseEncoderTrainingArguments
    from sentence_transformers.base.training_args import BatchSamplers
    from transformers import set_seed

    base = inspect_base(recipe.base_model)
    _check_base(base, recipe)
    expected = OUTER_LOSS[recipe.sparse.variant]
    recipe.loss = recipe.loss or expected
    if recipe.loss in INNER_COLUMNS:  # `--loss SparseMarginMSELoss` names the inner loss
        recipe.sparse.inner_loss, recipe.loss = recipe.loss, expected
    check_loss(recipe.loss, "sparse", {"SpladeLoss": None, "CSRLoss": None, **INNER_COLUMNS})
    if recipe.loss != expected:
        raise UserError(f"{recipe.loss} does not fit sparse.variant={recipe.sparse.variant} (it uses {expected})")
    if recipe.datasets:
        raise UserError("multi-dataset training (datasets:) is supported by `finetune dense` only")
    world = recipe_world(recipe)
    needs = INNER_COLUMNS[recipe.sparse.inner_loss]
    train = training_table(recipe, needs, recipe.sparse.inner_loss, world)
    task = retrieval_eval_task(recipe, world)

    set_seed(recipe.training.seed)  # heads and autoencoders start from the same weights every run
    model = build_model(base, recipe)
    loss = _make_loss(model, recipe)
    evaluator = ir_evaluator(task, sparse=True, batch_size=recipe.training.batch_size)
    extra = {"batch_sampler": BatchSamplers.NO_DUPLICATES if "Multiple" in recipe.sparse.inner_loss
             else BatchSamplers.BATCH_SAMPLER}
    if recipe.sparse.variant == "inference_free":
        text_columns = [c for c in train.column_names if c != needs.label]
        extra["router_mapping"] = {c: "query" if c == text_columns[0] else "document" for c in text_columns}
        extra["learning_rate_mapping"] = static_lr_mapping(model, recipe)
    dims = model.get_sentence_embedding_dimension()
    notes = f"Variant: {recipe.sparse.variant}; {dims:,} sparse dimensions; inner loss {recipe.sparse.inner_loss}."
    return fit(model=model, trainer_cls=SparseEncoderTrainer, args_cls=SparseEncoderTrainingArguments,
               recipe=recipe, train_dataset=train, loss=loss, evaluate=lambda m: ir_scores(evaluator, m),
               out=Path(out), overwrite=overwrite, args_extra=extra, card_notes=notes)


# ---- `twinlm encode` / `twinlm search` (registered in twinlm.finetune.kinds) --------------------


def load_sparse(path: str):
    from sentence_transformers import SparseEncoder

    return SparseEncoder(path)


def encode_sparse(model, texts: list[str], batch_size: int = 32, progress: bool = True, query: bool = False):
    fn = model.encode_query if query else model.encode_document
    return fn(texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=progress).cpu().coalesce()


def sparse_tensors(vectors) -> tuple[dict, dict]:
    """COO `indices` [2, nnz], `values` [nnz] and `shape` [2] for vectors.safetensors, and the stats."""
    import torch

    tensors = {"indices": vectors.indices().contiguous(), "values": vectors.values().contiguous(),
               "shape": torch.tensor(list(vectors.shape))}
    return tensors, {"dimensions": int(vectors.shape[1]),
                     "active_dims_mean": vectors.values().numel() / max(1, vectors.shape[0])}


def search_sparse(model, corpus: list[str], queries: list[str], k: int = 10, progress: bool = True) -> list[list[Hit]]:
    docs = encode_sparse(model, corpus, progress=progress)
    q = encode_sparse(model, queries, progress=False, query=True)
    scores = model.similarity(q, docs)
    return top_hits(scores.to_dense() if scores.is_sparse else scores, k)
