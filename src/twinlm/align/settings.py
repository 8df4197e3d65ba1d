"""Settings of `twinlm sft` and `twinlm bco`: one dataclass per command, whose documented fields
are also the command's flags (`twinlm.config.add_flags`). A light module: `twinlm --help` builds
every command's flags from it without importing the training libraries."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import ClassVar

from twinlm.errors import UserError


@dataclass
class RunSettings:
    """The schedule, LoRA and length settings every alignment command takes. A subclass sets
    FULL_LR / LORA_LR: a LoRA run updates far fewer weights, each by more, and wants a learning
    rate one to two orders of magnitude above full fine-tuning's."""

    FULL_LR: ClassVar[float] = 2e-5
    LORA_LR: ClassVar[float] = 2e-4

    learning_rate: float | None = field(default=None, metadata={"flag": "lr", "help": lambda cls: (
        f"learning rate (default: {cls.FULL_LR:g} for full fine-tuning, {cls.LORA_LR:g} with --lora)")})
    epochs: float = field(default=1.0, metadata={"help": "passes over the data"})
    max_steps: int = field(default=-1, metadata={
        "flag": "steps", "aliases": ("max-steps",),
        "help": "stop after this many optimizer steps; overrides --epochs (default: -1, off)"})
    batch_size: int = field(default=8, metadata={"help": "rows per device step"})
    gradient_accumulation: int = field(default=1, metadata={"help": "device steps per optimizer step"})
    seed: int = field(default=42, metadata={"help": "training seed"})
    logging_steps: int = field(default=10, metadata={"help": "log every N steps"})
    save_steps: int = field(default=500, metadata={"help": "checkpoint every N steps, for --resume"})
    max_length: int = field(default=1024, metadata={"help": "max tokens per row"})
    lora: bool = field(default=False, metadata={"help": "train LoRA adapters instead of all weights"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int | None = field(default=None, metadata={"help": "LoRA scale alpha (default: 2 x --lora-r)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA path"})
    target_modules: list[str] | None = field(default=None, metadata={
        "help": "comma-separated LoRA targets (default: the family's attention and MLP projections)"})

    def __post_init__(self) -> None:
        if self.learning_rate is None:
            self.learning_rate = self.LORA_LR if self.lora else self.FULL_LR
        if self.lora_alpha is None:
            self.lora_alpha = 2 * self.lora_r
        if self.lora_r < 1 or self.batch_size < 1 or self.gradient_accumulation < 1:
            raise UserError("--lora-r, --batch-size and --gradient-accumulation must be >= 1")
        if self.max_length < 2:
            raise UserError(f"--max-length must be >= 2, got {self.max_length}")
        if self.learning_rate <= 0:
            raise UserError(f"--lr must be > 0, got {self.learning_rate}")
        if self.save_steps < 1 or self.logging_steps < 1:
            raise UserError("--save-steps and --logging-steps must be >= 1")


PACKING_STRATEGIES = ("bfd", "bfd_split", "wrapped")


@dataclass
class SFTSettings(RunSettings):
    """What `twinlm sft` varies (each field is a flag); everything else is TRL's `SFTConfig` default."""

    FULL_LR: ClassVar[float] = 2e-5
    LORA_LR: ClassVar[float] = 2e-4

    assistant_only_loss: bool = field(default=False, metadata={
        "help": "conversational data: loss on assistant turns only (any consistent chat template)"})
    full_sequence_loss: bool = field(default=False, metadata={
        "help": "loss on every token (prompt-completion data: the prompt too; conversational: every turn)"})
    packing: bool = field(default=False, metadata={"help": "pack rows into --max-length blocks"})
    packing_strategy: str = field(default="bfd", metadata={
        "help": "how --packing fills blocks", "choices": PACKING_STRATEGIES})
    extra: dict = field(default_factory=dict)  # more SFTConfig fields (Python API only)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.packing_strategy not in PACKING_STRATEGIES:
            raise UserError(f"packing_strategy={self.packing_strategy!r}; valid: {', '.join(PACKING_STRATEGIES)}")
        if self.assistant_only_loss and self.full_sequence_loss:
            raise UserError("--assistant-only-loss and --full-sequence-loss contradict each other; pick one")

    @property
    def completion_only_loss(self) -> bool | None:
        """TRL's switch: False trains on prompts too; None leaves TRL's default (completion only)."""
        return False if self.full_sequence_loss else None


@dataclass
class BCOTerms:
    """BCO's own settings (ETTIN-FACTS §5), defined once: `twinlm bco`'s flags (BCOSettings) and
    the trainer's config (align/bco_config.BCOConfig) both take them from here."""

    max_length: int = field(default=512, metadata={"help": "max prompt + completion tokens"})
    max_prompt_length: int | None = field(default=None, metadata={
        "help": "max prompt tokens, kept from the prompt's end (default: half of --max-length)"})
    beta: float = field(default=0.1, metadata={"help": "reward scale: r = beta * (log pi - log pi_ref)"})
    precompute_ref_log_probs: bool = field(default=False, metadata={
        "flag": "precompute_ref", "help": "reference log-probs once up front, then drop the reference model"})
    udm_embedder: str | None = field(default=None, metadata={
        "help": "enable UDM with this prompt embedder (a twinlm encoder folder or sentence-transformers model)"})
    prompt_sample_size: int = field(default=1024, metadata={"help": "UDM: prompts per class to fit on"})
    min_density_ratio: float = field(default=0.5, metadata={"help": "UDM weight lower clip"})
    max_density_ratio: float = field(default=10.0, metadata={"help": "UDM weight upper clip"})
    router_aux_loss_coef: float = field(default=0.001, metadata={"help": "MoE router loss weight"})

    def check_bco_terms(self) -> None:
        """Fill the prompt budget and refuse values BCO cannot train with (one line each)."""
        if self.max_prompt_length is None:
            self.max_prompt_length = self.max_length // 2
        if self.beta <= 0:
            raise UserError(f"BCO beta must be > 0, got {self.beta}")
        if not 0 < self.max_prompt_length < self.max_length:
            raise UserError(f"BCO needs 0 < max_prompt_length < max_length, got {self.max_prompt_length} and "
                            f"{self.max_length}")
        if not 0 < self.min_density_ratio <= self.max_density_ratio:
            raise UserError(f"UDM needs 0 < min_density_ratio <= max_density_ratio, got {self.min_density_ratio}, "
                            f"{self.max_density_ratio}")
        if self.prompt_sample_size < 2:
            raise UserError(f"prompt_sample_size must be at least 2, got {self.prompt_sample_size}")
        if self.router_aux_loss_coef < 0:
            raise UserError(f"router_aux_loss_coef must be >= 0, got {self.router_aux_loss_coef}")

    def bco_terms(self) -> dict:
        """BCOTerms' fields and their values (to pass on to BCOConfig)."""
        return {f.name: getattr(self, f.name) for f in fields(BCOTerms)}


@dataclass
class BCOSettings(BCOTerms, RunSettings):
    """What `twinlm bco` varies (each field is a flag): the run settings and BCO's terms."""

    FULL_LR: ClassVar[float] = 5e-7
    LORA_LR: ClassVar[float] = 5e-5

    save_steps: int = field(default=200, metadata={"help": "checkpoint every N steps, for --resume"})
    ref_model: str | None = field(default=None, metadata={
        "help": "reference model (default: a frozen copy of MODEL; with --lora, MODEL with adapters off)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_bco_terms()
        if self.lora and self.ref_model:
            raise UserError("--lora uses the base model (adapters off) as reference; drop --ref-model or --lora")


@dataclass
class GenerationSettings:
    """What `twinlm generate` varies; the keyword arguments of `twinlm.align.generate.generate`."""

    chat: bool = field(default=False, metadata={"help": "apply the chat template (prompt = user turn)"})
    max_new_tokens: int = field(default=64, metadata={"help": "at most this many new tokens"})
    sample: bool = field(default=False, metadata={"help": "sample instead of greedy decoding"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise UserError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.sample and (self.temperature <= 0 or not 0 < self.top_p <= 1):
            raise UserError(f"sampling needs temperature > 0 and 0 < top-p <= 1, got {self.temperature} and {self.top_p}")
