"""`twinlm bco`: align a decoder on thumbs-up/down rows with twinlm's BCO trainer, end to end."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset

from twinlm.align import heldout
from twinlm.align.bco_config import BCOConfig
from twinlm.align.bco_trainer import BCOTrainer
from twinlm.align.chat_template import ensure_chat_template
from twinlm.align.data import check_bco_rows, is_conversational, load_rows, no_dataset_bars
from twinlm.align.loading import check_decoder, check_same_vocab, load_decoder
from twinlm.align.runner import lora_config, save_model, score, trainer_arguments, write_record
from twinlm.align.settings import BCOSettings
from twinlm.outputs import claim


def bco(model_path: str | Path, data: str | Path | Dataset | list[dict], out: str | Path,
        settings: BCOSettings | None = None, overwrite: bool = False, resume: bool = False, callbacks=None,
        eval_data: str | Path | Dataset | list[dict] | None = None) -> dict:
    """Train with BCO; writes the aligned model (plain HF folder, delta in bco_state.json) to `out`.
    With `eval_data` the metrics (and bco.json) carry `before`/`after` held-out scores: the BCO
    loss and reward margin, and the preference accuracy where rows pair completions of a prompt."""
    settings = settings or BCOSettings()
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
    config = BCOConfig(**{**trainer_arguments(settings, out), **settings.bco_terms()}, udm=settings.udm_embedder is not None)
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
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(settings, model.config.model_type))

    with no_dataset_bars():
        trainer = BCOTrainer(model, config, rows, tokenizer, ref_model=ref, eval_dataset=eval_rows, callbacks=callbacks)
    # Held-out BCO loss (ln 2 before training: policy = reference, delta 0) and reward margin.
    keys = ("eval_loss", "eval_rewards/margins")
    before = score(trainer, tokenizer, pairs, "before", keys) if eval_rows is not None else None
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    after = score(trainer, tokenizer, pairs, "after", keys) if eval_rows is not None else None
    save_model(trainer.model, tokenizer, out, settings.lora)
    trainer.save_bco_state(out)  # delta (bco_state.json) and any UDM classifier go with the model
    metrics = dict(result.metrics, delta=trainer.running.mean)
    if trainer.udm is not None:
        metrics["udm_accuracy"] = trainer.udm.accuracy
    return write_record(out, "bco", model_path, settings, metrics, eval_data, before, after)

