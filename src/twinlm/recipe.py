"""Recipes: typed, strict configuration for twin pretraining.

A recipe is data: model shape, tokenizer, data, phases and training settings. YAML files in
`recipes/` load into these dataclasses through `twinlm.config` (strict keys, typed values,
`--set key.sub=value` overrides); combinations are checked at load time so that a bad recipe
fails before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twinlm import config
from twinlm.errors import UserError
from twinlm.world.generator import WorldConfig

# Ettin shapes (ETTIN-FACTS §1): identical for encoder and decoder. head dim is always 64.
# nano/micro are CPU shapes for the demo and the tests.
SIZES: dict[str, dict[str, int]] = {
    "micro": dict(layers=2, hidden=64, intermediate=96, heads=1),
    "nano": dict(layers=4, hidden=128, intermediate=192, heads=2),
    "17m": dict(layers=7, hidden=256, intermediate=384, heads=4),
    "32m": dict(layers=10, hidden=384, intermediate=576, heads=6),
    "68m": dict(layers=19, hidden=512, intermediate=768, heads=8),
    "150m": dict(layers=22, hidden=768, intermediate=1152, heads=12),
    "400m": dict(layers=28, hidden=1024, intermediate=2624, heads=16),
    "1b": dict(layers=28, hidden=1792, intermediate=3840, heads=28),
}

LR_SCHEDULES = ("warmup_constant", "one_minus_sqrt", "warmup_linear")
TWINS = ("encoder", "decoder")


@dataclass
class ModelShape:
    """Shape shared by both twins."""

    size: str = "nano"  # a key of SIZES; layers/hidden/intermediate/heads default to it
    layers: int | None = None
    hidden: int | None = None
    intermediate: int | None = None  # GLU half, as in HF `intermediate_size`
    heads: int | None = None
    max_position_embeddings: int = 8192
    global_attn_every_n_layers: int = 3  # every 3rd layer global, others sliding window
    local_attention: int = 128  # sliding window width (the decoder looks back half of it)
    local_rope_theta: float = 10_000.0
    attention_dropout: float = 0.1  # Ettin pretrains with attention-output dropout 0.1

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise UserError(f"unknown model size {self.size!r}; valid sizes: {', '.join(SIZES)}")
        for key, value in SIZES[self.size].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.hidden % self.heads:
            raise UserError(f"model.hidden ({self.hidden}) must be a multiple of model.heads ({self.heads})")


@dataclass
class TokenizerConfig:
    """Either reuse a tokenizer (path or hub id) or train a BPE tokenizer on the corpus."""

    name_or_path: str | None = None  # None: train one with ModernBERT-style special tokens
    vocab_size: int = 8192  # only for a trained tokenizer
    min_frequency: int = 2
    train_documents: int = 50_000  # documents sampled to train the tokenizer


@dataclass
class StreamConfig:
    """One stream of a mixture (Composer/MosaicML semantics, see twinlm.data.sampling)."""

    source: str = ""  # a prepared folder (`twinlm prepare`), a pre-tokenized source or a text source
    proportion: float | None = None  # share of the phase's tokens; set on every stream of a phase or on none
    repeat: float | None = None  # without proportions: weight = repeat x the stream's size (default 1)


def check_streams(streams: list[StreamConfig], where: str) -> None:
    """Load-time checks of one phase's (or data's) stream list."""
    for i, st in enumerate(streams):
        if not st.source:
            raise UserError(f"{where}.streams[{i}] needs a source")
        if st.proportion is not None and st.repeat is not None:
            raise UserError(f"{where}.streams[{i}] sets both proportion and repeat; a stream's budget comes "
                            "from one of them")
        if st.proportion is not None and not 0.0 < st.proportion <= 1.0:
            raise UserError(f"{where}.streams[{i}].proportion must be in (0, 1], got {st.proportion}")
        if st.repeat is not None and st.repeat <= 0:
            raise UserError(f"{where}.streams[{i}].repeat must be > 0, got {st.repeat}")
    given = [st.proportion is not None for st in streams]
    if any(given) and not all(given):
        raise UserError(f"{where}.streams: give every stream a proportion (shares of the phase's tokens) or none "
                        "(then each weighs repeat x its size), as MosaicML streaming does")
    if all(given) and streams and abs(sum(st.proportion for st in streams) - 1.0) > 1e-6:
        total = sum(st.proportion for st in streams)
        raise UserError(f"{where}.streams: proportions sum to {total:g}, not 1")


@dataclass
class DataConfig:
    """Where the pretraining data comes from and how it is packed."""

    source: str | None = None  # prepared folder, file, folder, glob, MDS tree, save_to_disk or hub id; None: the world
    streams: list[StreamConfig] = field(default_factory=list)  # a mixture instead of one source (all phases)
    text_column: str = "text"
    ids_column: str = "input_ids"  # a stream with this column is pre-tokenized: its ids are used as they are
    split: str = "train"
    max_documents: int | None = None
    heldout_share: float = 0.005  # share of documents held out for evaluation (twinlm.data.heldout, seeded by training.seed)
    heldout_max_documents: int = 2000  # cap on held-out documents per source
    heldout_max_tokens: int = 2_000_000  # cap on held-out tokens per source
    cache_dir: str | None = None  # tokenized blocks; default: <out>/data
    world: WorldConfig = field(default_factory=WorldConfig)  # the built-in world, used when no source is set

    def __post_init__(self) -> None:
        if not 0.0 < self.heldout_share < 1.0:
            raise UserError(f"data.heldout_share must be in (0, 1), got {self.heldout_share}")
        if self.heldout_max_documents < 1 or self.heldout_max_tokens < 1:
            raise UserError("data.heldout_max_documents and data.heldout_max_tokens must be >= 1")
        if self.source and self.streams:
            raise UserError("data.source and data.streams are both set; list the source as one of the streams")
        check_streams(self.streams, "data")


@dataclass
class Phase:
    """One training phase; each continues from the previous phase's weights."""

    name: str = "pretrain"
    tokens: int = 1_000_000  # token budget per twin for this phase
    seq_len: int = 128
    lr_schedule: str = "warmup_constant"  # one of LR_SCHEDULES
    lr_start: float = 1.0  # multiples of training.lr
    lr_end: float = 1.0
    warmup_tokens: int = 0
    mask_ratio: float = 0.3  # MLM only
    rope_theta: float = 10_000.0  # global-attention RoPE theta
    global_batch: int | None = None  # sequences per step; None: training.global_batch
    micro_batch: int | str | None = None  # sequences per forward pass per process; None: training.micro_batch
    source: str | None = None  # phase-specific data (Ettin's decay mix); None: data.source / data.streams
    streams: list[StreamConfig] = field(default_factory=list)  # phase-specific mixture; [] : see source

    def check(self, index: int) -> None:
        where = f"phases[{index}] ({self.name})"
        if self.source and self.streams:
            raise UserError(f"{where}: source and streams are both set; list the source as one of the streams")
        check_streams(self.streams, where)
        if self.lr_schedule not in LR_SCHEDULES:
            raise UserError(f"{where}.lr_schedule={self.lr_schedule!r}; valid: {', '.join(LR_SCHEDULES)}")
        if not 0.0 < self.mask_ratio < 1.0:
            raise UserError(f"{where}.mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.tokens <= 0 or self.seq_len <= 1:
            raise UserError(f"{where} needs tokens > 0 and seq_len > 1")
        if self.warmup_tokens < 0 or self.warmup_tokens > self.tokens:
            raise UserError(f"{where}.warmup_tokens must be between 0 and the phase tokens ({self.tokens})")
        if self.micro_batch is not None:
            self.micro_batch = _check_micro_batch(self.micro_batch, f"{where}.micro_batch")


@dataclass
class TrainingConfig:
    """Optimizer, batch and logging settings shared by both twins."""

    lr: float = 3e-3
    weight_decay: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    optimizer: str = "stable_adamw"  # stable_adamw (Ettin) or adamw
    global_batch: int = 16  # sequences per optimizer step, over all processes
    max_grad_norm: float = 1.0
    seed: int = 42
    precision: str = "fp32"  # fp32 | bf16
    attn_implementation: str = "sdpa"  # sdpa | flash_attention_2 | eager
    log_every: int = 10
    save_every: int = 200  # intermediate checkpoints within a phase (for resume)
    # --- batch splitting, batch-size warmup, checkpoints (twinlm.train.batching, twinlm.plan) ---
    # Sequences per forward pass per process (a phase may set its own). Gradient accumulation is
    # derived: global batch / (micro_batch x processes), which must be whole. "auto": the largest
    # micro-batch that divides the per-process batch and holds at most micro_batch_tokens tokens.
    micro_batch: int | str = 16
    micro_batch_tokens: int = 65_536  # only for micro_batch: auto (64 x 1,024 or 8 x 8,192)
    # Ettin's batch-size warmup, first phase only: the global batch grows linearly in tokens from
    # batch_warmup_min sequences to the global batch over batch_warmup_tokens (0: off), in
    # multiples of batch_warmup_min (so batch_warmup_min must divide the global batch).
    batch_warmup_min: int = 0
    batch_warmup_tokens: int = 0
    activation_checkpointing: bool = False  # recompute each layer in backward (HF gradient checkpointing)
    keep_last: int = 2  # newest intermediate checkpoints kept while a phase runs (for resume)
    keep_every: int = 0  # also keep every N-th step's checkpoint, after the phase too (0: none)
    peak_tflops: float | None = None  # for MFU; None: measured (CPU) or looked up (GPU)
    report_to: list[str] = field(default_factory=list)  # e.g. ["tensorboard", "wandb"]
    sparse_mlm_head: bool = True  # encoder: run the MLM head only on masked positions
    # Model plane (attention, loss, evaluation, compile):
    document_masking: bool = True  # attention and RoPE positions kept within each packed document
    loss_chunk: int = 0  # tokens per chunk of the LM-head loss (logits never whole); 0: stock loss
    heldout_tokens: int = 262_144  # held-out evaluation budget per phase end (tokens read)
    compile: bool = False  # torch.compile the model (TrainingArguments.torch_compile)
    dataloader_workers: int = 0  # DataLoader worker processes per rank
    # Memory one process may use, in GB: micro_batch: auto picks the largest micro-batch whose
    # estimate (twinlm.train.memory) fits, and a phase that cannot fit at micro-batch 1 is refused
    # when the run starts. None: the device's (GPU memory, or physical RAM on CPU).
    memory_gb: float | None = None

    def __post_init__(self) -> None:
        for key in ("loss_chunk", "dataloader_workers"):
            if getattr(self, key) < 0:
                raise UserError(f"training.{key} must be >= 0, got {getattr(self, key)}")
        if self.memory_gb is not None and self.memory_gb <= 0:
            raise UserError(f"training.memory_gb must be > 0 (or empty for the device's), got {self.memory_gb}")
        if self.heldout_tokens < 1:
            raise UserError(f"training.heldout_tokens must be >= 1, got {self.heldout_tokens}")
        if self.attn_implementation not in ("sdpa", "flash_attention_2", "eager"):
            raise UserError(f"training.attn_implementation={self.attn_implementation!r}; "
                            "valid: sdpa, flash_attention_2, eager")
        if self.attn_implementation == "flash_attention_2" and not self.document_masking:
            raise UserError("training.attn_implementation=flash_attention_2 trains on flattened documents "
                            "(varlen); it needs training.document_masking=true")
        if self.optimizer not in ("stable_adamw", "adamw"):
            raise UserError(f"training.optimizer={self.optimizer!r}; valid: stable_adamw, adamw")
        if self.precision not in ("fp32", "bf16"):
            raise UserError(f"training.precision={self.precision!r}; valid: fp32, bf16")
        self.micro_batch = _check_micro_batch(self.micro_batch, "training.micro_batch")
        if self.micro_batch_tokens < 1:
            raise UserError(f"training.micro_batch_tokens must be >= 1, got {self.micro_batch_tokens}")
        if self.keep_last < 1:
            raise UserError(f"training.keep_last must be >= 1 (the newest checkpoint is what --resume needs), "
                            f"got {self.keep_last}")
        if self.keep_every < 0 or self.save_every < 1:
            raise UserError("training.keep_every must be >= 0 and training.save_every >= 1")
        if self.keep_every % self.save_every:
            raise UserError(
                f"training.keep_every ({self.keep_every}) must be a multiple of training.save_every "
                f"({self.save_every}): only saved steps can be kept"
            )
        if self.batch_warmup_tokens < 0 or self.batch_warmup_min < 0:
            raise UserError("training.batch_warmup_tokens and training.batch_warmup_min must be >= 0")
        if self.batch_warmup_tokens and not self.batch_warmup_min:
            raise UserError("training.batch_warmup_tokens needs training.batch_warmup_min (the first step's "
                            "global batch, in sequences)")


def _check_micro_batch(value: int | str, where: str) -> int | str:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise UserError(f"{where}={value!r}; valid: a number of sequences >= 1, or auto")


@dataclass
class InitConfig:
    """Continued pretraining: where the twins' starting weights come from (None: random weights).

    Weights only: every phase still starts a fresh optimizer and LR schedule, as Ettin's phase
    changes did. The tokenizer is the checkpoint's unless `tokenizer.name_or_path` names one, which
    must then match it (twinlm.train.init checks shape, vocabulary and special tokens up front)."""

    run: str | None = None  # a twinlm run folder: both twins from <run>/encoder and <run>/decoder
    encoder: str | None = None  # a hub id, a local HF folder (ModernBertForMaskedLM) or a phase checkpoint
    decoder: str | None = None  # likewise, a ModernBertDecoderForCausalLM

    def __post_init__(self) -> None:
        if self.run and (self.encoder or self.decoder):
            raise UserError("init.run names both twins' checkpoints; set it or init.encoder / init.decoder, "
                            "not both")

    def given(self) -> bool:
        return bool(self.run or self.encoder or self.decoder)


@dataclass
class Recipe:
    """Everything that defines a twin pretraining run."""

    name: str = "recipe"
    model: ModelShape = field(default_factory=ModelShape)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    phases: list[Phase] = field(default_factory=lambda: [Phase()])
    training: TrainingConfig = field(default_factory=TrainingConfig)
    init: InitConfig = field(default_factory=InitConfig)

    def check(self) -> None:
        """Cross-field checks, run at load time."""
        if not self.phases:
            raise UserError("a recipe needs at least one phase")
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise UserError(f"phase names must be unique, got {names}")
        for i, phase in enumerate(self.phases):
            phase.check(i)
            if phase.seq_len > self.model.max_position_embeddings:
                raise UserError(
                    f"phases[{i}].seq_len={phase.seq_len} exceeds model.max_position_embeddings="
                    f"{self.model.max_position_embeddings} for size {self.model.size}"
                )
            micro = self.micro_batch_of(phase)
            if micro != "auto" and self.batch_of(phase) % micro:
                raise UserError(
                    f"phases[{i}] ({phase.name}) global batch {self.batch_of(phase)} is not a multiple of its "
                    f"micro_batch ({micro}); set micro_batch: auto or a divisor of the global batch"
                )
        t, first = self.training, self.phases[0]
        if t.batch_warmup_tokens:
            batch = self.batch_of(first)
            if t.batch_warmup_min >= batch or batch % t.batch_warmup_min:
                raise UserError(
                    f"training.batch_warmup_min ({t.batch_warmup_min}) must be smaller than and divide the "
                    f"first phase's global batch ({batch}); e.g. {_divisor_near(batch, t.batch_warmup_min)}"
                )
            if t.batch_warmup_tokens > first.tokens:
                raise UserError(f"training.batch_warmup_tokens ({t.batch_warmup_tokens:.3g}) exceeds the first "
                                f"phase's tokens ({first.tokens:.3g})")

    def streams_of(self, phase: Phase) -> list[StreamConfig]:
        """The streams a phase trains on: its own, else its source, else data's streams or source
        (a single stream whose source is None means the built-in world)."""
        if phase.streams:
            return phase.streams
        if phase.source:
            return [StreamConfig(source=phase.source)]
        return self.data.streams or [StreamConfig(source=self.data.source)]

    def batch_of(self, phase: Phase) -> int:
        return phase.global_batch or self.training.global_batch

    def micro_batch_of(self, phase: Phase) -> int | str:
        return phase.micro_batch if phase.micro_batch is not None else self.training.micro_batch

    def to_dict(self) -> dict[str, Any]:
        return config.to_dict(self)

    def dump(self, path: str | Path) -> None:
        config.dump(self, path)


def _divisor_near(n: int, target: int) -> int:
    """The divisor of n (other than n) closest to target."""
    divisors = [d for d in range(1, n) if n % d == 0]
    return min(divisors, key=lambda d: (abs(d - target), d)) if divisors else 1


def recipe_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> Recipe:
    recipe = config.load(Recipe, data, overrides)
    recipe.check()
    return recipe


RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


def resolve_recipe_path(name_or_path: str, folder: Path = RECIPES_DIR, what: str = "recipe",
                        pattern: str = "*.yaml") -> Path:
    """A recipe file path, or the name of a recipe shipped in `folder` (`nano`, `ettin-17m`, ...)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = folder / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in folder.glob(pattern)) if folder.is_dir() else []
    raise UserError(f"no {what} file {name_or_path!r}; shipped: {', '.join(names)}")


def load_recipe(name_or_path: str, overrides: list[str] | None = None) -> Recipe:
    path = resolve_recipe_path(name_or_path)
    data = config.read_yaml(path)
    data.setdefault("name", path.stem)
    return recipe_from_dict(data, overrides)
