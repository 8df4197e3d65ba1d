"""Contrastive stages of LLM2Vec on the sentence-transformers trainer.

Unsupervised SimCSE (LLM2Vec step 3): each sentence is paired with itself; the trainer embeds the
anchor column and the positive column in two separate forward passes in training mode, so the
two copies get different dropout masks. `MultipleNegativesRankingLoss` (cosine x 20, in-batch
softmax) makes every other sentence of the batch a negative. The supervised stage uses the same
loss on (anchor, positive[, negative]) rows.
"""

from __future__ import annotations

from pathlib import Path

import torch

from twinlm.errors import UserError


def embedding_model(model_dir: str | Path, pooling: str = "mean", max_length: int = 128,
                    dropout: float | None = None):
    """A SentenceTransformer over a (bidirectional) decoder folder. `dropout` overrides the
    attention dropout for training (SimCSE's positive pairs come from it)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    config_kwargs = {"attention_dropout": dropout} if dropout is not None else {}
    transformer = Transformer(str(model_dir), model_kwargs={"attn_implementation": "sdpa"},
                              config_kwargs=config_kwargs, max_seq_length=max_length)
    tok = transformer.tokenizer
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    dim = transformer.auto_model.config.hidden_size
    return SentenceTransformer(modules=[transformer, Pooling(dim, pooling_mode=pooling)])


def contrastive_train(model, rows: dict[str, list[str]], work: Path, *, steps: int, batch_size: int, lr: float,
                      seed: int, log_every: int = 10) -> None:
    """Train `model` with in-batch-negative InfoNCE (scale 20) on `rows` (anchor, positive[, negative])."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    if len(rows["anchor"]) < 2:
        raise UserError("contrastive training needs at least two rows (in-batch negatives)")
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work), max_steps=steps, per_device_train_batch_size=min(batch_size, len(rows["anchor"])),
        learning_rate=lr, warmup_steps=max(1, steps // 10), logging_steps=log_every, save_strategy="no",
        report_to="none", seed=seed, data_seed=seed, use_cpu=not torch.cuda.is_available(),
        # A sentence twice in one batch would be its own false negative.
        batch_sampler=BatchSamplers.NO_DUPLICATES,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows),
                                         loss=MultipleNegativesRankingLoss(model, scale=20.0))
    trainer.train()


def simcse_rows(texts: list[str]) -> dict[str, list[str]]:
    unique = list(dict.fromkeys(t for t in texts if t.strip()))
    return {"anchor": unique, "positive": unique}


BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def supervised_rows(source: str, split: str = "train") -> dict[str, list[str]]:
    """(anchor, positive[, negative]) rows from a jsonl/json/csv/parquet file or a hub dataset.
    Accepted column names: anchor|query, positive|pos|document, negative|neg."""
    from datasets import load_dataset

    path = Path(source)
    try:
        if path.suffix in BUILDERS and path.is_file():
            data = load_dataset(BUILDERS[path.suffix], data_files=str(path), split="train")
        elif path.exists():
            raise UserError(f"supervised data {source!r}: use a {'/'.join(BUILDERS)} file or a hub dataset id")
        else:
            data = load_dataset(source, split=split)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load supervised data {source!r}: {str(err).splitlines()[0]}") from None
    names = {"anchor": ("anchor", "query"), "positive": ("positive", "pos", "document"),
             "negative": ("negative", "neg")}
    cols = {}
    for want, options in names.items():
        found = next((o for o in options if o in data.column_names), None)
        if found:
            cols[want] = found
    if "anchor" not in cols or "positive" not in cols:
        raise UserError(
            f"supervised data {source!r} has columns {data.column_names}; it needs anchor (or query) and "
            "positive (or pos/document), optionally negative (or neg)"
        )
    return {want: [str(x) for x in data[col]] for want, col in cols.items()}
