"""Settings of twinlm's BCO trainer: the HF `TrainingArguments` plus BCO's own (ETTIN-FACTS §5)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from twinlm.align.settings import BCOTerms


@dataclass
class BCOConfig(BCOTerms, TrainingArguments):
    """TrainingArguments plus BCO's terms (align/settings.BCOTerms: beta, the token budgets, the
    reference log-probs switch, UDM's embedder and clips, the MoE router loss weight) and:

    udm: weight undesirable examples by UDM density ratios (needs an embedder: `udm_embedder`, or
        the trainer's `embed` function).
    """

    udm: bool = field(default=False, metadata={"help": "underlying distribution matching"})
    remove_unused_columns: bool = False  # the collator needs label, completion_mask, weights

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_bco_terms()
