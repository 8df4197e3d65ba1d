"""Settings of twinlm's BCO trainer: the HF `TrainingArguments` plus BCO's own (ETTIN-FACTS §5)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from twinlm.errors import UserError


@dataclass
class BCOConfig(TrainingArguments):
    """TrainingArguments plus:

    beta: scale of the implicit reward r = beta * (log pi - log pi_ref) over completion tokens.
    max_length / max_prompt_length: token budget of prompt + completion / of the prompt (kept from its end).
    precompute_ref_log_probs: compute the reference log-probs once before training and drop the
        reference model (saves its memory for the whole run).
    udm: weight undesirable examples by UDM density ratios (needs an embedder).
    udm_embedder: encoder folder or sentence-transformers model that embeds prompts for UDM.
    prompt_sample_size: prompts per class used to fit the UDM classifier.
    min_density_ratio / max_density_ratio: clip range of the UDM weights.
    router_aux_loss_coef: weight of a mixture-of-experts model's router auxiliary loss.
    """

    beta: float = field(default=0.1, metadata={"help": "reward scale beta"})
    max_length: int = field(default=512, metadata={"help": "max tokens of prompt + completion"})
    max_prompt_length: int = field(default=256, metadata={"help": "max prompt tokens (kept from its end)"})
    precompute_ref_log_probs: bool = field(default=False, metadata={"help": "reference log-probs once, up front"})
    udm: bool = field(default=False, metadata={"help": "underlying distribution matching"})
    udm_embedder: str | None = field(default=None, metadata={"help": "prompt embedding model for UDM"})
    prompt_sample_size: int = field(default=1024, metadata={"help": "prompts per class to fit UDM"})
    min_density_ratio: float = field(default=0.5, metadata={"help": "lower clip of UDM weights"})
    max_density_ratio: float = field(default=10.0, metadata={"help": "upper clip of UDM weights"})
    router_aux_loss_coef: float = field(default=0.001, metadata={"help": "MoE router auxiliary loss weight"})
    remove_unused_columns: bool = False  # the collator needs label, completion_mask, weights

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta <= 0:
            raise UserError(f"BCO beta must be > 0, got {self.beta}")
        if not 0 < self.max_prompt_length < self.max_length:
            raise UserError(
                f"BCO needs 0 < max_prompt_length < max_length, got {self.max_prompt_length} and {self.max_length}"
            )
        if not 0 < self.min_density_ratio <= self.max_density_ratio:
            raise UserError(
                f"UDM needs 0 < min_density_ratio <= max_density_ratio, got {self.min_density_ratio}, "
                f"{self.max_density_ratio}"
            )
        if self.prompt_sample_size < 2:
            raise UserError(f"prompt_sample_size must be at least 2, got {self.prompt_sample_size}")
        if self.router_aux_loss_coef < 0:
            raise UserError(f"router_aux_loss_coef must be >= 0, got {self.router_aux_loss_coef}")
