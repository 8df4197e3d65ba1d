"""A sequence-classification (or regression) head fine-tuned with the HF Trainer, as the suite's
GLUE-style tasks need it: encoders pool as `--pooling` says (mean unless the model says
otherwise, sentence-transformers' default and ModernBERT's published classifier configs), decoders
classify from the last token (ModernBertDecoderForSequenceClassification)."""

from __future__ import annotations

import math
import tempfile

import torch

from twinlm.evaluate.config import encoder_pooling
from twinlm.evaluate.convergence import prior_entropy


def load_head(path: str, architecture: str, num_labels: int, pooling: str = "auto", start: str | None = None,
              seed: int | None = None):
    """(model, tokenizer): a fresh head on the model at `path`, or on the body of `start` (a
    fine-tuned checkpoint of another task, e.g. MNLI: its head is replaced when the label count
    differs). With `seed`, the new head's random initialisation comes from that seed (as Ettin
    seeds before building the model, bert24 eval.py), not from whatever ran before in the process,
    so a run's result does not depend on the runs before it (or on --resume)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    if seed is not None:
        set_seed(seed)

    tok = AutoTokenizer.from_pretrained(path)
    kwargs = {}
    if architecture == "encoder":
        mode = encoder_pooling(pooling, path)
        kwargs["classifier_pooling"] = mode if mode in ("cls", "mean") else "mean"
    labels = {} if num_labels == 1 else {"id2label": {i: str(i) for i in range(num_labels)},
                                         "label2id": {str(i): i for i in range(num_labels)}}
    model = AutoModelForSequenceClassification.from_pretrained(
        start or path, num_labels=num_labels, pad_token_id=tok.pad_token_id,
        problem_type="regression" if num_labels == 1 else "single_label_classification",
        ignore_mismatched_sizes=start is not None, **labels, **kwargs)
    return model, tok


def encode(tok, columns: tuple[str, ...], rows: dict, max_length: int) -> dict:
    texts = [list(rows[c]) for c in columns]
    if len(texts) == 2:  # the pair template starts the second text without a space
        texts[1] = [" " + t for t in texts[1]]
    return tok(*texts, truncation=True, max_length=max_length)


def trivial_loss(labels: list, num_labels: int) -> float:
    """The loss of a predictor that learned nothing about the inputs: the class prior's entropy
    (cross-entropy), or the labels' variance (the mean squared error of predicting their mean)."""
    if num_labels > 1:
        return prior_entropy([int(v) for v in labels])
    mean = sum(labels) / len(labels)
    return sum((v - mean) ** 2 for v in labels) / len(labels)


def train(model, tok, data, columns: tuple[str, ...], *, lr: float, batch_size: int, seed: int,
          epochs: float | None, steps: int | None, max_length: int, weight_decay: float, warmup: float,
          adam: dict, eval_every: int | None = None, on_eval=None) -> tuple[list[float], int]:
    """Fine-tune in place on `data` (a datasets.Dataset with `columns` and `label`); returns the
    logged training losses and the number of optimiser steps taken. With `eval_every`,
    `on_eval(step)` is called after every `eval_every`-th optimiser step before the last (the
    caller evaluates the final model itself); it must not change the model."""
    from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainingArguments, set_seed

    set_seed(seed)
    regression = model.config.num_labels == 1
    keep = [c for c in data.column_names if c not in (*columns, "label")]
    data = data.remove_columns(keep).map(lambda b: encode(tok, columns, b, max_length), batched=True,
                                         remove_columns=list(columns))
    if regression:
        data = data.map(lambda b: {"label": [float(v) for v in b["label"]]}, batched=True)
    total = steps or math.ceil(epochs * math.ceil(len(data) / batch_size))
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, max_steps=total, per_device_train_batch_size=batch_size, learning_rate=lr,
            warmup_steps=math.ceil(warmup * total), lr_scheduler_type="linear", weight_decay=weight_decay, seed=seed,
            data_seed=seed, save_strategy="no", report_to=[], logging_steps=max(1, total // 5), disable_tqdm=True,
            use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, **adam)
        trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tok))
        trainer.remove_callback(PrinterCallback)  # the suite prints one line per run instead
        if eval_every and on_eval is not None:
            trainer.add_callback(_every_n_steps(eval_every, on_eval))
        trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return losses, total


def _every_n_steps(every: int, fn):
    """A TrainerCallback calling fn(step) every `every` optimiser steps, the last step excepted.
    Scoring in eval mode draws no random numbers, so the run trains exactly as without it."""
    from transformers import TrainerCallback

    class EveryNSteps(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % every == 0 and state.global_step < state.max_steps:
                fn(state.global_step)
                model.train()  # predict() left it in eval mode (dropout off)

    return EveryNSteps()


@torch.no_grad()
def predict(model, tok, data, columns: tuple[str, ...], max_length: int, batch_size: int = 64) -> list:
    """Class indices (or regression values) for every row of `data`."""
    model.eval()
    device = next(model.parameters()).device
    out: list = []
    for start in range(0, len(data), batch_size):
        rows = data[start : start + batch_size]
        batch = tok.pad(encode(tok, columns, rows, max_length), return_tensors="pt").to(device)
        logits = model(**batch).logits
        out += logits.squeeze(-1).tolist() if model.config.num_labels == 1 else logits.argmax(-1).tolist()
    return out
