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

from dataclasses import asdict, dataclass, field
from pathlib import Path

from datasets import Dataset

from twinlm.align import heldout
from twinlm.align.assistant_mask import DERIVED, MARKERS, choose_mask, encode_conversations
from twinlm.align.chat_template import end_of_turn_token, ensure_chat_template
from twinlm.align.data import check_sft_rows, load_rows, no_dataset_bars
from twinlm.align.loading import check_decoder, load_decoder, load_tokenizer
from twinlm.align.preference_task import preference_accuracy
from twinlm.errors import UserError
from twinlm.outputs import claim, write_json

_LLAMA_FAMILY = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "olmo", "olmo2", "granite"}


@dataclass
class SFTSettings:
    """What `twinlm sft` varies; everything else is TRL's `SFTConfig` default."""

    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: list[str] | None = None  # None: the model family's attention and MLP projections
    assistant_only_loss: bool = False  # conversational data: loss on assistant turns only (any consistent template)
    completion_only_loss: bool | None = None  # prompt-completion data; None: TRL's default (True)
    packing: bool = False
    packing_strategy: str = "bfd"  # bfd | bfd_split | wrapped
    max_length: int = 1024
    learning_rate: float = 2e-5
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 8
    gradient_accumulation: int = 1
    seed: int = 42
    logging_steps: int = 10
    save_steps: int = 500
    extra: dict = field(default_factory=dict)  # more SFTConfig fields

    def __post_init__(self) -> None:
        if self.packing_strategy not in ("bfd", "bfd_split", "wrapped"):
            raise UserError(f"packing_strategy={self.packing_strategy!r}; valid: bfd, bfd_split, wrapped")
        if self.lora_r < 1 or self.max_length < 2 or self.batch_size < 1:
            raise UserError("lora_r, batch_size must be >= 1 and max_length >= 2")


def lora_target_modules(model_type: str) -> list[str] | str:
    """Linear layers LoRA adapts: every attention and MLP projection of the family."""
    if model_type == "modernbert-decoder":
        return ["q_proj", "k_proj", "v_proj", "Wo", "Wi"]  # "Wo" is both attention out and MLP out
    if model_type in _LLAMA_FAMILY:
        return ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    return "all-linear"


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
    from peft import LoraConfig
    from trl import SFTConfig

    settings = settings or SFTSettings()
    check_decoder(model_path)
    rows = load_rows(data)
    kind = check_sft_rows(rows)
    if settings.assistant_only_loss and kind != "conversational":
        raise UserError(f"--assistant-only-loss needs conversational data (messages); this data is {kind}")
    if settings.assistant_only_loss and settings.completion_only_loss is False:
        raise UserError("--assistant-only-loss and --full-sequence-loss contradict each other; pick one")
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
        output_dir=str(out / "checkpoints"), learning_rate=settings.learning_rate, num_train_epochs=settings.epochs,
        max_steps=settings.max_steps, per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation, seed=settings.seed,
        logging_steps=settings.logging_steps, save_steps=settings.save_steps, save_total_limit=2,
        max_length=settings.max_length, packing=settings.packing, packing_strategy=settings.packing_strategy,
        assistant_only_loss=mask_mode == MARKERS, completion_only_loss=settings.completion_only_loss,
        eos_token=eos, report_to="none", bf16=_bf16_available(), **settings.extra,
    )
    peft_config = None
    if settings.lora:
        peft_config = LoraConfig(
            r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout, task_type="CAUSAL_LM",
            target_modules=settings.target_modules or lora_target_modules(model.config.model_type),
        )
    try:
        with no_dataset_bars():  # TRL's preparation would print a stack of map bars above the training bar
            trainer = sft_trainer_class()(model=model, args=args, train_dataset=rows, processing_class=tokenizer,
                                       peft_config=peft_config, eval_dataset=held["rows"] if held else None)
    except ValueError as err:  # TRL's checks of data against settings are user mistakes
        raise UserError(f"SFT setup: {str(err).splitlines()[0]}") from None
    before = _score(trainer, tokenizer, held, "before") if held else None
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    after = _score(trainer, tokenizer, held, "after") if held else None
    _save(trainer, tokenizer, out, settings.lora)
    metrics = dict(result.metrics, data_format=kind, lora=settings.lora)
    if mask_mode:
        metrics["assistant_mask"] = mask_mode
    record = {"base": str(model_path), "settings": asdict(settings), "metrics": dict(metrics)}
    if held:
        metrics.update(before=before, after=after)
        record.update(eval_data=str(eval_data) if not isinstance(eval_data, (list, Dataset)) else "rows",
                      before=before, after=after)
    write_json(out / "sft.json", record, default=str)
    return metrics


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


def _score(trainer, tokenizer, held: dict, when: str) -> dict[str, float]:
    scores = heldout.pick(trainer.evaluate(), ("eval_loss", "eval_mean_token_accuracy"))
    if held["pairs"]:
        scores["preference_accuracy"] = preference_accuracy(trainer.model, tokenizer, held["pairs"],
                                                            batch_size=trainer.args.per_device_eval_batch_size)
    heldout.print_scores(when, scores)
    return scores


def _bf16_available() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _save(trainer, tokenizer, out: Path, lora: bool) -> None:
    """A plain HF folder: LoRA merged into the weights (adapter kept in out/adapter)."""
    model = trainer.model
    if lora:
        model.save_pretrained(out / "adapter")
        tokenizer.save_pretrained(out / "adapter")
        model = model.merge_and_unload()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
