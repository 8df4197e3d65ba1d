"""Supervised fine-tuning of a decoder on TRL's `SFTTrainer`: full or LoRA, any TRL data format.

Plain text, prompt-completion and conversational rows are passed to TRL as they are. twinlm adds
what a twin decoder lacks: a chat template when the tokenizer has none (said on stderr), the
template's end-of-turn token as the token generation stops at, and LoRA target modules that
exist in ModernBertDecoder (TRL's defaults do not) and in Llama-family decoders. Assistant-only
loss works with any prefix-preserving chat template: TRL masks through `{% generation %}`
markers where the template has them, twinlm derives the mask from prefix renders otherwise
(`assistant_mask`). With held-out rows the loss (and preference accuracy) is measured before and
after training. The result in `out` is a plain HF folder (LoRA adapters merged; the adapter
itself in `out/adapter`).
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset

from twinlm.align import heldout
from twinlm.align.assistant_mask import DERIVED, MARKERS, choose_mask, encode_conversations
from twinlm.align.chat_template import end_of_turn_token, ensure_chat_template
from twinlm.align.data import check_sft_rows, load_rows, no_dataset_bars
from twinlm.align.loading import check_decoder, load_decoder, load_tokenizer
from twinlm.align.runner import lora_config, save_model, score, trainer_arguments, write_record
from twinlm.align.settings import SFTSettings
from twinlm.errors import UserError
from twinlm.outputs import claim

# Decoders whose logits are not `output_embeddings(last_hidden_state)`: ModernBertDecoder runs a
# prediction head (dense, activation, norm) in between. TRL 1.16's fused LM head skips it, so it
# would train and report a different function from the one the model computes; these take the
# stock Trainer loss (the model's own forward and shifted cross-entropy) instead.
_HEAD_BEFORE_OUTPUT = {"modernbert-decoder"}


def sft_trainer_class():
    from transformers import Trainer
    from trl import SFTTrainer

    class TwinSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.model.config.model_type in _HEAD_BEFORE_OUTPUT:
                # As TRL's own loss does: a forward that builds a cache makes transformers ignore the
                # restarting position_ids of a packed row, and its documents would see each other.
                inputs["use_cache"] = False
                return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    return TwinSFTTrainer


def sft(model_path: str | Path, data: str | Path | Dataset | list[dict], out: str | Path,
        settings: SFTSettings | None = None, overwrite: bool = False, resume: bool = False,
        eval_data: str | Path | Dataset | list[dict] | None = None) -> dict:
    """Fine-tune `model_path` on `data`; writes the model to `out`. Returns the training metrics,
    with `before`/`after` held-out scores (see `heldout`) when `eval_data` is given."""
    from trl import SFTConfig

    settings = settings or SFTSettings()
    check_decoder(model_path)
    rows = load_rows(data)
    kind = check_sft_rows(rows)
    if settings.assistant_only_loss and kind != "conversational":
        raise UserError(f"--assistant-only-loss needs conversational data (messages); this data is {kind}")
    held = _held_out(eval_data, settings) if eval_data is not None else None
    tokenizer = load_tokenizer(model_path)
    eos, mask_mode = None, None
    if kind == "conversational":
        ensure_chat_template(tokenizer)
        eot = end_of_turn_token(tokenizer)
        eos = eot if eot and eot != tokenizer.eos_token else None
        if settings.assistant_only_loss:
            mask_mode = choose_mask(tokenizer)
    if mask_mode == DERIVED:  # TRL takes the rows tokenized, with the mask it turns into labels
        completion_only = settings.completion_only_loss is not False
        with no_dataset_bars():
            rows = encode_conversations(rows, tokenizer, completion_only)
            if held is not None:
                held["rows"] = encode_conversations(held["rows"], tokenizer, completion_only)
    out = claim(out, overwrite, resume, resume_needs="checkpoints")  # every check passed: only now touch the output folder
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_decoder(model_path, tokenizer=tokenizer)
    args = SFTConfig(
        **trainer_arguments(settings, out), packing=settings.packing, packing_strategy=settings.packing_strategy,
        assistant_only_loss=mask_mode == MARKERS, completion_only_loss=settings.completion_only_loss,
        eos_token=eos, bf16=_bf16_available(), **settings.extra,
    )
    peft_config = lora_config(settings, model.config.model_type) if settings.lora else None
    try:
        with no_dataset_bars():  # TRL's preparation would print a stack of map bars above the training bar
            trainer = sft_trainer_class()(model=model, args=args, train_dataset=rows, processing_class=tokenizer,
                                       peft_config=peft_config, eval_dataset=held["rows"] if held else None)
    except ValueError as err:  # TRL's checks of data against settings are user mistakes
        raise UserError(f"SFT setup: {str(err).splitlines()[0]}") from None
    keys = ("eval_loss", "eval_mean_token_accuracy")
    before = score(trainer, tokenizer, held["pairs"], "before", keys) if held else None
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    after = score(trainer, tokenizer, held["pairs"], "after", keys) if held else None
    save_model(trainer.model, tokenizer, out, settings.lora)
    metrics = dict(result.metrics, data_format=kind, lora=settings.lora)
    if mask_mode:
        metrics["assistant_mask"] = mask_mode
    return write_record(out, "sft", model_path, settings, metrics, eval_data, before, after)


def _held_out(eval_data, settings: SFTSettings) -> dict:
    """The held-out rows the loss is taken on and the preference pairs, checked before any work."""
    raw = load_rows(eval_data)
    kind = heldout.eval_kind(raw)
    rows = heldout.sft_eval_rows(raw, kind)
    if len(rows) == 0:
        raise UserError("--eval-data has no desirable (label true) rows to take the held-out loss on")
    if settings.assistant_only_loss and check_sft_rows(rows, "--eval-data") != "conversational":
        raise UserError("--assistant-only-loss needs conversational --eval-data too (messages, or prompt/completion "
                        "given as lists of messages)")
    return {"rows": rows, "pairs": heldout.preference_pairs(raw, kind)}


def _bf16_available() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()

