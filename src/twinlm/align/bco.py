"""`twinlm bco`: align a decoder on thumbs-up/down rows with twinlm's BCO trainer, end to end."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset

from twinlm.align import heldout
from twinlm.align.bco_config import BCOConfig
from twinlm.align.bco_trainer import BCOTrainer
from twinlm.align.chat_template import ensure_chat_template
from twinlm.align.data import check_bco_rows, is_conversational, load_rows, no_dataset_bars
from twinlm.align.loading import check_decoder, check_same_vocab, load_decoder
from twinlm.align.preference_task import preference_accuracy
from twinlm.align.sft import lora_target_modules
from twinlm.errors import UserError
from twinlm.outputs import claim, write_json


@dataclass
class BCOSettings:
    beta: float = 0.1
    learning_rate: float = 5e-7
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 8
    gradient_accumulation: int = 1
    max_length: int = 512
    max_prompt_length: int = 256
    ref_model: str | None = None  # None: the LoRA base (with --lora) or a frozen copy of the model
    precompute_ref_log_probs: bool = False
    lora: bool = False
    lora_r: int = 16
    udm_embedder: str | None = None  # set to use UDM: a twinlm encoder or sentence-transformers model
    prompt_sample_size: int = 1024
    min_density_ratio: float = 0.5
    max_density_ratio: float = 10.0
    router_aux_loss_coef: float = 0.001
    seed: int = 42
    logging_steps: int = 10
    save_steps: int = 200


def bco(model_path: str | Path, data: str | Path | Dataset | list[dict], out: str | Path,
        settings: BCOSettings | None = None, overwrite: bool = False, resume: bool = False, callbacks=None,
        eval_data: str | Path | Dataset | list[dict] | None = None) -> dict:
    """Train with BCO; writes the aligned model (plain HF folder, delta in bco_state.json) to `out`.
    With `eval_data` the metrics (and bco.json) carry `before`/`after` held-out scores: the BCO
    loss and reward margin, and the preference accuracy where rows pair completions of a prompt."""
    settings = settings or BCOSettings()
    check_settings(settings)
    check_decoder(model_path)
    if settings.ref_model:
        check_decoder(settings.ref_model, "reference model")
    rows = load_rows(data)
    check_bco_rows(rows)
    eval_rows, pairs = None, []
    if eval_data is not None:
        raw = load_rows(eval_data)
        kind = heldout.eval_kind(raw)
        eval_rows = heldout.bco_eval_rows(raw, kind)
        check_bco_rows(eval_rows, "--eval-data")
        pairs = heldout.preference_pairs(raw, kind)
    config = BCOConfig(
        output_dir=str(Path(out) / "checkpoints"), beta=settings.beta, learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs, max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size, per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation, max_length=settings.max_length,
        max_prompt_length=settings.max_prompt_length, precompute_ref_log_probs=settings.precompute_ref_log_probs,
        udm=settings.udm_embedder is not None, udm_embedder=settings.udm_embedder,
        prompt_sample_size=settings.prompt_sample_size, min_density_ratio=settings.min_density_ratio,
        max_density_ratio=settings.max_density_ratio, router_aux_loss_coef=settings.router_aux_loss_coef,
        seed=settings.seed, logging_steps=settings.logging_steps, save_steps=settings.save_steps,
        save_total_limit=2, report_to="none",
    )
    model, tokenizer = load_decoder(model_path)
    ref = None
    if settings.ref_model:
        ref, ref_tok = load_decoder(settings.ref_model, "reference model")
        check_same_vocab(tokenizer, ref_tok, f"reference model {settings.ref_model!r}")
    out = claim(out, overwrite, resume, resume_needs="checkpoints")  # all checks passed: only now touch the output folder
    out.mkdir(parents=True, exist_ok=True)
    if is_conversational(rows[0]["prompt"]):
        ensure_chat_template(tokenizer)
    if settings.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=settings.lora_r, lora_alpha=2 * settings.lora_r,
                                                 target_modules=lora_target_modules(model.config.model_type),
                                                 task_type="CAUSAL_LM"))

    with no_dataset_bars():
        trainer = BCOTrainer(model, config, rows, tokenizer, ref_model=ref, eval_dataset=eval_rows, callbacks=callbacks)
    before = _score(trainer, tokenizer, pairs, "before") if eval_rows is not None else None
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    after = _score(trainer, tokenizer, pairs, "after") if eval_rows is not None else None
    if settings.lora:  # out stays a plain model folder: adapters merged, the adapter itself beside
        trainer.model.save_pretrained(out / "adapter")
        trainer.model.merge_and_unload().save_pretrained(out)
        trainer.save_bco_state(out)
    else:
        trainer.save_model(str(out))  # delta (bco_state.json) and any UDM classifier go with it
    tokenizer.save_pretrained(out)
    metrics = dict(result.metrics, delta=trainer.running.mean)
    if trainer.udm is not None:
        metrics["udm_accuracy"] = trainer.udm.accuracy
    record = {"base": str(model_path), "settings": settings.__dict__, "metrics": dict(metrics)}
    if eval_rows is not None:
        metrics.update(before=before, after=after)
        record.update(eval_data=str(eval_data) if not isinstance(eval_data, (list, Dataset)) else "rows",
                      before=before, after=after)
    write_json(out / "bco.json", record, default=str)
    return metrics


def _score(trainer, tokenizer, pairs: list[dict], when: str) -> dict[str, float]:
    """Held-out BCO loss (ln 2 before training: policy = reference, delta 0), reward margin and
    preference accuracy."""
    scores = heldout.pick(trainer.evaluate(), ("eval_loss", "eval_rewards/margins"))
    if pairs:
        scores["preference_accuracy"] = preference_accuracy(trainer.model, tokenizer, pairs,
                                                            batch_size=trainer.args.per_device_eval_batch_size)
    heldout.print_scores(when, scores)
    return scores


def check_settings(settings: BCOSettings) -> None:
    if settings.lora and settings.ref_model:
        raise UserError("--lora uses the base model (adapters off) as reference; drop --ref-model or --lora")
