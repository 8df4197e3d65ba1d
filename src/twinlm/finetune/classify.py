"""Text and text-pair classification: the base model with a classification head
(`AutoModelForSequenceClassification`; decoders classify from the last token), trained with the
HF Trainer (cross-entropy), scored by accuracy and macro-F1.

Data: columns `text, label` (single text) or `sentence1, sentence2, label` (pairs); labels may
be integers or strings. Without --data the world's NLI task is used (entailment / neutral /
contradiction, held-out people for evaluation). Without --eval-data a file's last 10% is held out.
"""

from __future__ import annotations

from pathlib import Path

from twinlm.errors import UserError
from twinlm.finetune.base import FitResult, fit, inspect_base
from twinlm.finetune.data import LossColumns, load_table, match_columns, recipe_world, world_nli
from twinlm.finetune.recipe import FinetuneRecipe
from twinlm.world.generator import NLI_LABELS

LOSS = "CrossEntropyLoss"
SINGLE = LossColumns(("text",), label="label")
PAIR = LossColumns(("sentence1", "sentence2"), label="label")


def _needs(table, mapping: dict[str, str]) -> LossColumns:
    names = set(table.column_names) | set(mapping)
    return PAIR if {"sentence1", "sentence2"} <= names else SINGLE


def _tables(recipe: FinetuneRecipe, world):
    if recipe.datasets:
        raise UserError("multi-dataset training (datasets:) is supported by `finetune dense` only")
    if recipe.train_data:
        train = load_table(recipe.train_data, recipe.split, recipe.max_rows)
        needs = _needs(train, recipe.columns)
        train = match_columns(train, needs, recipe.columns, LOSS, repr(recipe.train_data))
        if recipe.eval_data:
            test = match_columns(load_table(recipe.eval_data, "test" if Path(recipe.eval_data).is_dir() else "train"),
                                 needs, recipe.columns, LOSS, repr(recipe.eval_data))
        else:
            if len(train) < 10:
                raise UserError(f"{recipe.train_data} has {len(train)} rows; need 10 or more, or pass --eval-data")
            parts = train.train_test_split(test_size=0.1, seed=recipe.training.seed)
            train, test = parts["train"], parts["test"]
        return train, test, needs
    train, test = world_nli(world(), seed=recipe.training.seed)
    if recipe.max_rows is not None:
        train = train.select(range(min(recipe.max_rows, len(train))))
    return train, test, PAIR


def _label_names(recipe: FinetuneRecipe, train, test) -> list[str]:
    if recipe.classify.labels:
        return list(recipe.classify.labels)
    values = set(train["label"]) | set(test["label"])
    if all(isinstance(v, int) for v in values):
        if not recipe.train_data and max(values) < len(NLI_LABELS):
            return list(NLI_LABELS)
        n = recipe.classify.num_labels or max(values) + 1
        return [str(i) for i in range(n)]
    return sorted(str(v) for v in values)


def _encode(table, tokenizer, needs: LossColumns, labels: list[str], max_len: int | None):
    index = {name: i for i, name in enumerate(labels)}

    def label_id(value):
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(labels):
            return value
        if str(value) in index:
            return index[str(value)]
        raise UserError(f"label {value!r} is not one of the labels {labels}")

    def batch(rows):
        texts = [rows[c] for c in needs.required]
        enc = tokenizer(*texts, truncation=True, max_length=max_len or tokenizer.model_max_length)
        enc["labels"] = [label_id(v) for v in rows["label"]]
        return enc

    return table.map(batch, batched=True, remove_columns=table.column_names)


def _scores(model, encoded, collator, batch_size: int) -> dict[str, float]:
    import torch
    from sklearn.metrics import accuracy_score, f1_score

    model.eval()
    preds, gold = [], []
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            rows = [encoded[i] for i in range(start, min(start + batch_size, len(encoded)))]
            inputs = collator(rows)
            labels = inputs.pop("labels")
            inputs = {k: v.to(model.device) for k, v in inputs.items()}
            preds += model(**inputs).logits.argmax(-1).tolist()
            gold += labels.tolist()
    return {"accuracy": float(accuracy_score(gold, preds)),
            "macro_f1": float(f1_score(gold, preds, average="macro", zero_division=0))}


def finetune(recipe: FinetuneRecipe, out: str | Path, overwrite: bool = False) -> FitResult:
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    recipe.loss = recipe.loss or LOSS
    if recipe.loss != LOSS:
        raise UserError(f"classify trains with {LOSS} only, got loss {recipe.loss!r}")
    base = inspect_base(recipe.base_model)
    train, test, needs = _tables(recipe, recipe_world(recipe))
    labels = _label_names(recipe, train, test)
    if len(labels) < 2:
        raise UserError(f"classification needs at least two labels, found {labels}")

    tokenizer = AutoTokenizer.from_pretrained(recipe.base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    max_len = recipe.training.max_seq_length
    train_enc = _encode(train, tokenizer, needs, labels, max_len)
    test_enc = _encode(test, tokenizer, needs, labels, max_len)
    set_seed(recipe.training.seed)  # the new head starts from the same weights every run
    model = AutoModelForSequenceClassification.from_pretrained(
        recipe.base_model, num_labels=len(labels),
        id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)},
    )
    model.config.pad_token_id = tokenizer.pad_token_id  # decoders find the last token by the pad id
    collator = DataCollatorWithPadding(tokenizer)
    notes = f"Task: {'pair' if needs is PAIR else 'single-text'} classification; labels {labels}; base family {base.family}."
    return fit(model=model, trainer_cls=Trainer, args_cls=TrainingArguments, recipe=recipe, train_dataset=train_enc,
               loss=None, evaluate=lambda m: _scores(m, test_enc, collator, recipe.training.batch_size),
               out=Path(out), overwrite=overwrite, trainer_extra={"data_collator": collator},
               card_notes=notes, tokenizer=tokenizer)
