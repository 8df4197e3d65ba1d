"""What `twinlm sft` and `twinlm bco` share around their trainers: the Trainer arguments and LoRA
adapters built from the settings (`twinlm.align.settings`), held-out scoring, saving a plain model
folder, and the JSON record of the run."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from datasets import Dataset

from twinlm.align import heldout
from twinlm.align.preference_task import preference_accuracy
from twinlm.align.settings import RunSettings
from twinlm.outputs import write_json

_LLAMA_FAMILY = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "olmo", "olmo2", "granite"}


def trainer_arguments(settings: RunSettings, out: str | Path) -> dict:
    """The HF TrainingArguments both commands set from their settings."""
    return dict(
        output_dir=str(Path(out) / "checkpoints"), learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs, max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size, per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation, seed=settings.seed,
        logging_steps=settings.logging_steps, save_steps=settings.save_steps, save_total_limit=2,
        max_length=settings.max_length, report_to="none",
    )


def lora_target_modules(model_type: str) -> list[str] | str:
    """Linear layers LoRA adapts: every attention and MLP projection of the family."""
    if model_type == "modernbert-decoder":
        return ["q_proj", "k_proj", "v_proj", "Wo", "Wi"]  # "Wo" is both attention out and MLP out
    if model_type in _LLAMA_FAMILY:
        return ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    return "all-linear"


def lora_config(settings: RunSettings, model_type: str):
    from peft import LoraConfig

    return LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                      target_modules=settings.target_modules or lora_target_modules(model_type), task_type="CAUSAL_LM")


def score(trainer, tokenizer, pairs: list[dict], when: str, keys: tuple[str, ...]) -> dict[str, float]:
    """The trainer's held-out metrics named in `keys`, plus the preference accuracy on `pairs`."""
    scores = heldout.pick(trainer.evaluate(), keys)
    if pairs:
        scores["preference_accuracy"] = preference_accuracy(trainer.model, tokenizer, pairs,
                                                            batch_size=trainer.args.per_device_eval_batch_size)
    heldout.print_scores(when, scores)
    return scores


def save_model(model, tokenizer, out: Path, lora: bool) -> None:
    """A plain HF folder: LoRA merged into the weights (the adapter itself kept in out/adapter)."""
    if lora:
        model.save_pretrained(out / "adapter")
        tokenizer.save_pretrained(out / "adapter")
        model = model.merge_and_unload()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def write_record(out: Path, name: str, base, settings: RunSettings, metrics: dict, eval_data=None,
                 before: dict | None = None, after: dict | None = None) -> dict:
    """out/<name>.json: base model, settings and metrics (with held-out scores before/after);
    returns the metrics with `before` / `after` added."""
    record = {"base": str(base), "settings": asdict(settings), "metrics": dict(metrics)}
    if before is not None:
        metrics = dict(metrics, before=before, after=after)
        record.update(eval_data=str(eval_data) if not isinstance(eval_data, (list, Dataset)) else "rows",
                      before=before, after=after)
    write_json(out / f"{name}.json", record, default=str)
    return metrics
