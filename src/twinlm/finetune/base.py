"""What every fine-tuning kind shares: the base model, one fit/evaluate/save path, the output folder.

A kind (dense.py, sparse.py, ...) builds its sentence-transformers model, loss and evaluator and
calls `fit`; `fit` evaluates the untrained model, trains with the library trainer, evaluates
again, and saves the model (written to a temporary folder and renamed into place) with its
model card, the resolved recipe and the before/after scores.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twinlm.errors import UserError
from twinlm.finetune.recipe import FinetuneRecipe
from twinlm.model_files import check_model_source
from twinlm.outputs import check_out, publish, staging, write_json

# model_type values of causal LMs that twinlm knows by name; anything whose architecture ends in
# ForCausalLM counts as a decoder too.
DECODER_TYPES = {
    "modernbert-decoder", "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text",
    "phi", "phi3", "olmo", "olmo2", "gpt2", "gpt_neox", "smollm3", "granite",
}
RESULTS_FILE = "twinlm-finetune.json"


@dataclass
class BaseModel:
    """A base model by folder or hub id, with what twinlm needs to know about it."""

    name: str
    model_type: str
    architectures: list[str]
    family: str  # "encoder" | "decoder"
    has_mlm_head: bool

    @property
    def default_pooling(self) -> str:
        # Decoders see the whole text only at the last position (Ettin retrieval protocol).
        return "lasttoken" if self.family == "decoder" else "mean"


def inspect_base(name_or_path: str) -> BaseModel:
    """Read the config of a base model (no weights) and classify it; UserError if unreadable."""
    from transformers import AutoConfig

    check_model_source(name_or_path, "base model")
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load base model {name_or_path!r}: {str(err).splitlines()[0]}") from None
    archs = list(getattr(config, "architectures", None) or [])
    model_type = getattr(config, "model_type", "") or ""
    decoder = (
        model_type in DECODER_TYPES
        or any(a.endswith("ForCausalLM") for a in archs)
        or bool(getattr(config, "is_decoder", False))
    )
    return BaseModel(
        name=name_or_path,
        model_type=model_type,
        architectures=archs,
        family="decoder" if decoder else "encoder",
        has_mlm_head=any(a.endswith("ForMaskedLM") for a in archs),
    )


def transformer_module(base: BaseModel, task: str = "feature-extraction", max_seq_length: int | None = None,
                       bidirectional: bool = False):
    """The sentence-transformers `Transformer` input module for a base model."""
    from sentence_transformers.base.modules import Transformer

    module = Transformer(base.name, transformer_task=task, max_seq_length=max_seq_length)
    tok = module.tokenizer
    if tok is not None and getattr(tok, "chat_template", None):
        # With a chat template sentence-transformers renders plain strings as chat messages;
        # embeddings must see the raw text.
        tok.chat_template = None
    if base.family == "decoder" and bidirectional:
        # sdpa honours config.is_causal=False (ETTIN-FACTS §6); it is saved with the model.
        module.auto_model.config.is_causal = False
    return module


def make_loss(losses_module, name: str, model, args: dict[str, Any], recipe: FinetuneRecipe):
    """Instantiate loss `name` from a sentence-transformers losses module with `loss_args`.
    Cached losses get the recipe's gradient-cache chunk size; a wrong argument is a one-line error."""
    args = dict(args)
    if name.startswith("Cached"):
        args.setdefault("mini_batch_size", recipe.training.mini_batch_size)
    try:
        return getattr(losses_module, name)(model, **args)
    except TypeError as err:
        raise UserError(f"loss_args for {name}: {err}") from None


# ---- the shared fit path ----------------------------------------------------------------------


@dataclass
class FitResult:
    out: Path
    before: dict[str, float]
    after: dict[str, float]
    train_loss: float | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        keys = [k for k in self.after if k in self.before]
        return "; ".join(f"{k} {self.before[k]:.4f} -> {self.after[k]:.4f}" for k in keys)


def training_args(args_cls, recipe: FinetuneRecipe, output_dir: Path, evaluating: bool, **extra):
    """The library training arguments from a recipe's `training` section."""
    t = recipe.training
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        learning_rate=t.lr,
        warmup_steps=t.warmup_ratio,  # transformers 5: a float below 1 is a ratio
        weight_decay=t.weight_decay,
        lr_scheduler_type=t.lr_scheduler,
        seed=t.seed,
        data_seed=t.seed,
        bf16=t.precision == "bf16",
        logging_steps=t.logging_steps,
        save_strategy="no",
        report_to="none",
        use_cpu=not _has_accelerator(),
    )
    if evaluating and t.eval_steps:
        kwargs.update(eval_strategy="steps", eval_steps=t.eval_steps)
    kwargs.update(extra)
    return args_cls(**kwargs)


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available()


def fit(
    *,
    model,
    trainer_cls,
    args_cls,
    recipe: FinetuneRecipe,
    train_dataset,
    loss,
    evaluate,
    out: Path,
    overwrite: bool,
    args_extra: dict[str, Any] | None = None,
    trainer_extra: dict[str, Any] | None = None,
    card_notes: str = "",
    tokenizer=None,
) -> FitResult:
    """Evaluate, train with `trainer_cls` (SentenceTransformerTrainer, SparseEncoderTrainer,
    CrossEncoderTrainer, MultiVectorEncoderTrainer or HF Trainer), evaluate, save.

    `evaluate(model) -> dict[str, float]` returns the scores reported before and after training.
    `loss` None: the model computes its own (HF Trainer); `tokenizer` is saved next to an HF model.
    """
    out = check_out(out, overwrite)
    tmp = staging(out)  # the old folder is replaced only once the new one is whole
    started = time.time()
    before = evaluate(model)
    _print_scores("before", before)
    args = training_args(args_cls, recipe, tmp / "checkpoints", evaluating=False, **(args_extra or {}))
    kwargs = dict(trainer_extra or {}, **({"loss": loss} if loss is not None else {}))
    trainer = trainer_cls(model=model, args=args, train_dataset=train_dataset, **kwargs)
    output = trainer.train()
    after = evaluate(model)
    _print_scores("after", after)
    shutil.rmtree(tmp / "checkpoints", ignore_errors=True)
    result = FitResult(out=out, before=before, after=after, train_loss=getattr(output, "training_loss", None),
                       seconds=time.time() - started)
    save_model(model, tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(tmp))
    write_results(tmp, recipe, result, card_notes)
    publish(tmp, out)
    return result


def save_model(model, folder: Path) -> None:
    """sentence-transformers models and HF models both write a loadable folder with `save_pretrained`."""
    model.save_pretrained(str(folder))


def write_results(folder: Path, recipe: FinetuneRecipe, result: FitResult, notes: str = "") -> None:
    recipe.dump(folder / "twinlm-finetune.yaml")
    record = {"before": result.before, "after": result.after, "train_loss": result.train_loss,
              "seconds": round(result.seconds, 2), **result.extra}
    write_json(folder / RESULTS_FILE, record, indent=2)
    rows = "\n".join(f"| {k} | {result.before.get(k, float('nan')):.4f} | {v:.4f} |" for k, v in result.after.items())
    section = f"""

## twinlm fine-tuning
Kind `{recipe.kind}`, base model `{recipe.base_model}`, loss `{recipe.loss}`, data
`{recipe.train_data or 'the built-in twinlm world'}`, {recipe.training.max_steps if recipe.training.max_steps > 0 else f'{recipe.training.epochs} epochs'}
steps at batch {recipe.training.batch_size}, lr {recipe.training.lr}, seed {recipe.training.seed}.
{notes}

| metric | before training | after training |
|---|---|---|
{rows}

Resolved recipe: `twinlm-finetune.yaml`; scores: `{RESULTS_FILE}`.
"""
    card = folder / "README.md"
    card.write_text((card.read_text() if card.is_file() else f"# {recipe.name}\n") + section)


def _print_scores(when: str, scores: dict[str, float]) -> None:
    text = ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
    print(f"{when} training: {text}", file=sys.stderr, flush=True)


# ---- retrieval evaluation ---------------------------------------------------------------------

IR_METRICS = {"ndcg@10": "ndcg@10", "mrr@10": "mrr@10", "recall@100": "recall@100"}


def ir_evaluator(task: dict[str, dict], sparse: bool = False, batch_size: int = 32):
    """sentence-transformers' (Sparse)InformationRetrievalEvaluator over a BEIR-like task dict."""
    kwargs = dict(
        queries=task["queries"], corpus=task["corpus"],
        relevant_docs={q: set(d) for q, d in task["qrels"].items()},
        mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=[1], precision_recall_at_k=[10, 100], map_at_k=[100],
        batch_size=batch_size, name="eval", write_csv=False, show_progress_bar=False,
    )
    if sparse:
        from sentence_transformers.sparse_encoder.evaluation import SparseInformationRetrievalEvaluator

        return SparseInformationRetrievalEvaluator(**kwargs)
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    return InformationRetrievalEvaluator(**kwargs)


def ir_scores(evaluator, model) -> dict[str, float]:
    """nDCG@10, MRR@10, Recall@100 (and, for sparse models, active dimensions and sparsity of
    queries and documents) from one evaluator call."""
    raw = evaluator(model)
    scores = {}
    for key, value in raw.items():
        bare = key.split("_", 1)[1] if key.startswith("eval_") else key
        for metric in IR_METRICS:
            if bare.endswith(metric) and metric not in scores and bare.count("_") <= 1:
                scores[metric] = float(value)
        if "active_dims" in bare or "sparsity_ratio" in bare:
            scores[bare] = float(value)
    missing = [m for m in IR_METRICS if m not in scores]
    if missing:
        raise RuntimeError(f"evaluator returned no {missing}: {sorted(raw)}")
    return scores
