"""MNLI-style 3-way classification: fine-tune a sequence-classification head with the HF Trainer
(encoder: CLS or mean pooling; decoder: last token, ModernBertDecoderForSequenceClassification),
then accuracy and macro-F1 on a held-out split."""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from twinlm.errors import UserError
from twinlm.evaluate.config import encoder_pooling
from twinlm.evaluate.convergence import prior_entropy
from twinlm.world.generator import NLI_LABELS

REQUIRED = ("premise", "hypothesis", "label")


def read_nli_file(path: str | Path) -> list[dict]:
    """jsonl or csv/tsv rows with premise, hypothesis and label (an index 0-2 or one of
    entailment/neutral/contradiction). An optional "split" column ("train"/"test") decides the
    split; without it the last fifth is held out."""
    path = Path(path)
    if path.suffix in (".csv", ".tsv"):
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ","))
    else:
        try:
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except json.JSONDecodeError as err:
            raise UserError(f"{path} is not JSON lines ({err.msg})") from None
    out = []
    for n, row in enumerate(rows, 1):
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise UserError(f"{path} row {n} lacks field(s) {', '.join(missing)}; each row needs {', '.join(REQUIRED)}")
        label = row["label"]
        label = NLI_LABELS.index(label) if label in NLI_LABELS else int(label) if str(label).isdigit() else -1
        if label not in range(len(NLI_LABELS)):
            raise UserError(f"{path} row {n}: label must be 0-2 or one of {', '.join(NLI_LABELS)}, got {row['label']!r}")
        out.append({"premise": row["premise"], "hypothesis": row["hypothesis"], "label": label, "split": row.get("split")})
    if len(out) < 10:
        raise UserError(f"{path} has {len(out)} rows; classification needs at least 10")
    return out


def split_rows(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    if any(r.get("split") for r in rows):
        return [r for r in rows if r.get("split") != "test"], [r for r in rows if r.get("split") == "test"]
    cut = len(rows) - max(1, len(rows) // 5)
    return rows[:cut], rows[cut:]


class ClassificationTask:
    name = "classification"
    finetunes = True

    def __init__(self, train: list[dict], test: list[dict], max_length: int = 128, pooling: str = "auto"):
        self.train, self.test, self.max_length, self.pooling = train, test, max_length, pooling

    def primary(self, architecture: str) -> str:
        return "accuracy"

    def trivial_loss(self, batch_size: int) -> float:
        """Cross-entropy of always predicting the training labels' prior (convergence.py)."""
        return prior_entropy([r["label"] for r in self.train])

    def encode(self, tokenizer, rows: list[dict]) -> dict:
        # The hypothesis gets a leading space: the pair template starts it without one.
        return tokenizer([r["premise"] for r in rows], [" " + r["hypothesis"] for r in rows],
                         truncation=True, max_length=self.max_length)

    @torch.no_grad()
    def evaluate(self, model, tokenizer, architecture: str, seed: int = 0, batch_size: int = 64) -> dict[str, float]:
        from sklearn.metrics import accuracy_score, f1_score

        was_training = model.training
        model.eval()
        preds = []
        for start in range(0, len(self.test), batch_size):
            rows = self.test[start : start + batch_size]
            batch = tokenizer.pad(self.encode(tokenizer, rows), return_tensors="pt")
            preds += model(**batch).logits.argmax(-1).tolist()
        model.train(was_training)
        gold = [r["label"] for r in self.test]
        return {"accuracy": float(accuracy_score(gold, preds)),
                "macro_f1": float(f1_score(gold, preds, average="macro", labels=list(range(len(NLI_LABELS)))))}

    def load(self, path: str, architecture: str):
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path)
        # ModernBERT's head pools "cls" or "mean"; "auto" is mean (sentence-transformers' default,
        # and the classifier_pooling of ModernBERT's published configs). Decoders pool the last token.
        # Other heads (BertForSequenceClassification, ...) take no pooling: given one, its __init__ fails.
        kwargs = {}
        if architecture == "encoder" and hasattr(AutoConfig.from_pretrained(path), "classifier_pooling"):
            mode = encoder_pooling(self.pooling, path)
            kwargs["classifier_pooling"] = mode if mode in ("cls", "mean") else "mean"
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=len(NLI_LABELS), id2label=dict(enumerate(NLI_LABELS)),
            label2id={lab: i for i, lab in enumerate(NLI_LABELS)}, pad_token_id=tok.pad_token_id, **kwargs)
        return model, tok

    def finetune(self, path: str, architecture: str, seed: int, lr: float, steps: int, batch_size: int):
        """Fine-tune a fresh head on the training split; returns (model, tokenizer)."""
        from datasets import Dataset
        from transformers import (
            DataCollatorWithPadding,
            PrinterCallback,
            Trainer,
            TrainingArguments,
            set_seed,
        )

        set_seed(seed)  # the head's initialisation depends on it
        model, tok = self.load(path, architecture)
        data = Dataset.from_list([{"premise": r["premise"], "hypothesis": r["hypothesis"], "label": r["label"]} for r in self.train])
        data = data.map(lambda b: self.encode(tok, [dict(zip(b, v)) for v in zip(*b.values())]), batched=True,
                        remove_columns=["premise", "hypothesis"])
        with tempfile.TemporaryDirectory() as tmp:
            args = TrainingArguments(
                output_dir=tmp, max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=lr,
                warmup_steps=max(1, steps // 10), lr_scheduler_type="linear", weight_decay=0.01, seed=seed,
                data_seed=seed, save_strategy="no", report_to=[], logging_steps=max(1, steps // 5),
                disable_tqdm=True, use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0)
            trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tok))
            # Per-step lines would drown the one-line-per-run progress; the losses stay in log_history.
            trainer.remove_callback(PrinterCallback)
            trainer.train()
        self.last_loss = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        return model.eval(), tok

    def run(self, path: str, architecture: str, seed: int, lr: float, steps: int, batch_size: int) -> dict[str, float]:
        model, tok = self.finetune(path, architecture, seed, lr, steps, batch_size)
        out = self.evaluate(model, tok, architecture, seed)
        out["train_loss_first"], out["train_loss_last"] = float(self.last_loss[0]), float(np.mean(self.last_loss[-1:]))
        return out
