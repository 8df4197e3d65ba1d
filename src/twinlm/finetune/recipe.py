"""Fine-tuning recipes: typed, strict configuration for `twinlm finetune KIND`.

One `FinetuneRecipe` serves every kind (dense, sparse, multivector, rerank, classify): the shared
fields (base model, data, loss, training arguments) plus one section per kind, read only by that
kind. YAML files in `recipes/finetune/` load through the same strict builder as pretraining
recipes (`twinlm.config`), so a misspelt key is an error naming the valid ones, and
`--set key.sub=value` overrides any field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twinlm import config
from twinlm.errors import UserError
from twinlm.recipe import RECIPES_DIR, resolve_recipe_path
from twinlm.world.generator import WorldConfig

KINDS = ("dense", "sparse", "multivector", "rerank", "classify")
FINETUNE_DIR = RECIPES_DIR / "finetune"


@dataclass
class DatasetSpec:
    """One training dataset of a multi-dataset run (dense): its own source, columns and loss."""

    name: str = "data"
    source: str | None = None  # file, folder, save_to_disk folder or hub id; None: the built-in world
    split: str = "train"
    columns: dict[str, str] = field(default_factory=dict)  # new=old renames
    loss: str | None = None  # None: the recipe's loss
    loss_args: dict[str, Any] = field(default_factory=dict)
    max_rows: int | None = None


@dataclass
class TrainArgs:
    """Training arguments handed to the sentence-transformers / HF trainer."""

    max_steps: int = field(default=-1, metadata={
        "flag": "steps", "help": "training steps; > 0 wins over epochs", "aliases": ("max-steps",)})
    epochs: float = field(default=1.0, metadata={"help": "training epochs"})
    batch_size: int = field(default=16, metadata={"help": "training batch size"})
    mini_batch_size: int = 8  # Cached* losses: the chunk size of the gradient cache
    lr: float = field(default=2e-5, metadata={"help": "learning rate"})
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    lr_scheduler: str = "linear"
    seed: int = field(default=42, metadata={"help": "random seed"})
    max_seq_length: int | None = None  # None: the model's
    precision: str = "fp32"  # fp32 | bf16
    logging_steps: int = 10
    eval_steps: int | None = None  # evaluate during training every N steps; None: only before and after

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise UserError(f"training.precision={self.precision!r}; valid: fp32, bf16")
        if self.batch_size < 1 or self.mini_batch_size < 1:
            raise UserError("training.batch_size and training.mini_batch_size must be at least 1")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise UserError("set training.max_steps > 0 or training.epochs > 0")


@dataclass
class DenseSection:
    pooling: str = "auto"  # auto (encoder: mean, decoder: lasttoken) | mean | cls | max | lasttoken
    bidirectional: bool = False  # decoder only: drop the causal mask (LLM2Vec-style)
    matryoshka_dims: list[int] = field(default_factory=list)  # e.g. [64, 32, 16]; empty: no Matryoshka
    teacher: str | None = None  # MSELoss / MarginMSELoss: a SentenceTransformer that makes the labels
    sampling: str = "proportional"  # multi-dataset: proportional | round_robin

    def __post_init__(self) -> None:
        if self.pooling not in ("auto", "mean", "cls", "max", "lasttoken"):
            raise UserError(f"dense.pooling={self.pooling!r}; valid: auto, mean, cls, max, lasttoken")
        if self.sampling not in ("proportional", "round_robin"):
            raise UserError(f"dense.sampling={self.sampling!r}; valid: proportional, round_robin")


@dataclass
class SparseSection:
    variant: str = "splade"  # splade | inference_free | csr
    inner_loss: str = "SparseMultipleNegativesRankingLoss"  # or SparseMarginMSELoss
    query_regularizer_weight: float = 5e-5  # SpladeLoss FLOPS weights (SPLADE-v3 defaults)
    document_regularizer_weight: float = 3e-5
    static_embedding_lr: float = 1e-3  # inference_free: the query-side static weights learn faster
    csr_hidden_dim: int = 512  # CSR: sparse dimensions of the autoencoder
    csr_k: int = 32  # CSR: active dimensions per text
    csr_k_aux: int = 256
    csr_beta: float = 0.1  # CSRLoss weight of the auxiliary reconstruction
    csr_gamma: float = 1.0  # CSRLoss weight of the contrastive loss
    # The CSR paper trains the autoencoder on frozen features; fine-tuning the backbone with it
    # learned far faster on the micro twin (docs/results.md).
    csr_train_backbone: bool = True
    pooling: str = "auto"  # CSR's dense backbone pooling, as dense.pooling

    def __post_init__(self) -> None:
        if self.variant not in ("splade", "inference_free", "csr"):
            raise UserError(f"sparse.variant={self.variant!r}; valid: splade, inference_free, csr")
        if self.inner_loss not in ("SparseMultipleNegativesRankingLoss", "SparseMarginMSELoss"):
            raise UserError(
                f"sparse.inner_loss={self.inner_loss!r}; valid: SparseMultipleNegativesRankingLoss, SparseMarginMSELoss"
            )


@dataclass
class MultivectorSection:
    """`twinlm finetune multivector` (see twinlm.finetune.multivector)."""

    query_length: int = 32  # queries are cut (ColBERT: padded) to this many tokens
    document_length: int = 256
    embedding_dim: int = 128  # per-token projection size (ColBERT: 128)
    index: str = "exhaustive"  # default index for `twinlm encode`: exhaustive | ivf
    documents: str | None = None  # distillation: table of (id, text) the rows' document_ids refer to
    queries: str | None = None  # distillation: table of (id, text) for rows with query_id instead of query

    def __post_init__(self) -> None:
        if self.index not in ("exhaustive", "ivf"):
            raise UserError(f"multivector.index={self.index!r}; valid: exhaustive, ivf")
        if min(self.query_length, self.document_length, self.embedding_dim) < 1:
            raise UserError("multivector.query_length, document_length and embedding_dim must be at least 1")


@dataclass
class RerankSection:
    """`twinlm finetune rerank` (see twinlm.finetune.rerank)."""

    pos_weight: float | None = None  # BinaryCrossEntropyLoss: weight of positives; None: negatives per positive
    teacher: str | None = None  # CrossEncoder whose scores are the labels of MSELoss / MarginMSELoss
    retriever: str | None = None  # dense model retrieving the evaluation candidates; None: positives + sampled others
    top_k: int = 30  # candidates reranked per evaluation query
    # ModernBERT-style heads (classifier_pooling): cls | mean. On the micro twin [CLS] learned
    # name matching sooner than the mean (docs/results.md).
    pooling: str = "cls"

    def __post_init__(self) -> None:
        if self.pooling not in ("mean", "cls"):
            raise UserError(f"rerank.pooling={self.pooling!r}; valid: mean, cls")
        if self.top_k < 2:
            raise UserError(f"rerank.top_k must be at least 2, got {self.top_k}")
        if self.pos_weight is not None and self.pos_weight <= 0:
            raise UserError(f"rerank.pos_weight must be positive, got {self.pos_weight}")


@dataclass
class MiningSection:
    """Hard-negative mining with a dense model (see twinlm.finetune.mining)."""

    model: str | None = field(default=None, metadata={"flag": "mine_with", "metavar": "DENSE_MODEL", "help": (
        "rerank: add hard negatives mined with this SentenceTransformer (a folder or hub id) to (query, positive) "
        "pairs (tune with --set mining.num_negatives=N, mining.range_min/range_max, mining.absolute_margin, "
        "mining.relative_margin, mining.sampling_strategy=top|random)")})
    num_negatives: int = 3
    range_min: int = 0  # skip the `range_min` most similar texts (likely unlabelled positives)
    range_max: int | None = None  # consider only the `range_max` most similar texts
    absolute_margin: float | None = None  # keep a negative only if sim(q, neg) <= sim(q, pos) - margin
    relative_margin: float | None = None  # ... or sim(q, neg) <= sim(q, pos) * (1 - margin)
    max_score: float | None = None  # drop candidates more similar than this
    sampling_strategy: str = "top"  # top | random (among the candidates that pass)
    batch_size: int = 32
    use_faiss: bool = False

    def __post_init__(self) -> None:
        if self.sampling_strategy not in ("top", "random"):
            raise UserError(f"mining.sampling_strategy={self.sampling_strategy!r}; valid: top, random")
        if self.num_negatives < 1:
            raise UserError(f"mining.num_negatives must be at least 1, got {self.num_negatives}")
        if self.range_min < 0 or (self.range_max is not None and self.range_max <= self.range_min):
            raise UserError(f"mining.range_min={self.range_min} and range_max={self.range_max}: "
                            "need 0 <= range_min < range_max")


@dataclass
class ClassifySection:
    labels: list[str] = field(default_factory=list)  # label names; empty: from the data
    num_labels: int | None = None  # None: from labels or the data


@dataclass
class FinetuneRecipe:
    """Everything that defines one fine-tuning run."""

    name: str = "finetune"
    kind: str = "dense"  # one of KINDS
    base_model: str = field(default="", metadata={"flag": "base", "metavar": "MODEL", "help": "base model: a folder or a hub id"})
    train_data: str | None = field(default=None, metadata={"flag": "data", "help": (
        "training data: json, jsonl, csv, parquet, a save_to_disk folder or a hub dataset; without any, the "
        "built-in world's task data")})
    split: str = field(default="train", metadata={"help": "split of a hub dataset or DatasetDict folder"})
    eval_data: str | None = field(default=None, metadata={"help": (
        "BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv) for retrieval evaluation; without one, the world's "
        "held-out questions")})
    max_rows: int | None = None  # cap on training rows
    loss: str = field(default="", metadata={"help": "loss class name (see the kind's module docs)"})
    loss_args: dict[str, Any] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict, metadata={"repeat": True, "metavar": "NEW=OLD", "help": (
        "rename a data column to the name the loss expects, e.g. anchor=question (repeatable)")})
    datasets: list[DatasetSpec] = field(default_factory=list)  # multi-dataset training; overrides train_data
    world: WorldConfig | None = None  # None: the base model's own world (its twinlm.yaml), else defaults
    world_heldout: float | None = None  # share of world people kept for evaluation; None: the world's own
    training: TrainArgs = field(default_factory=TrainArgs)
    dense: DenseSection = field(default_factory=DenseSection)
    sparse: SparseSection = field(default_factory=SparseSection)
    multivector: MultivectorSection = field(default_factory=MultivectorSection)
    rerank: RerankSection = field(default_factory=RerankSection)
    mining: MiningSection = field(default_factory=MiningSection)
    classify: ClassifySection = field(default_factory=ClassifySection)

    def check(self) -> None:
        if self.kind not in KINDS:
            raise UserError(f"kind={self.kind!r}; valid kinds: {', '.join(KINDS)}")
        if not self.base_model:
            raise UserError("no base model: set base_model (a folder or hub id) or pass --base")
        for key, mapping in [("columns", self.columns)] + [(f"datasets[{i}].columns", d.columns) for i, d in enumerate(self.datasets)]:
            if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
                raise UserError(f"{key} must map new column names to existing ones, e.g. {{anchor: question}}")
        if self.world_heldout is not None and not 0 < self.world_heldout < 1:
            raise UserError(f"world_heldout must be between 0 and 1, got {self.world_heldout}")
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise UserError(f"datasets need unique names, got {names}")

    def to_dict(self) -> dict[str, Any]:
        return config.to_dict(self)

    def dump(self, path: str | Path) -> None:
        config.dump(self, path)


def finetune_recipe_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> FinetuneRecipe:
    recipe = config.load(FinetuneRecipe, data, overrides)
    recipe.check()
    return recipe


def load_finetune_recipe(
    name_or_path: str | None, kind: str, overrides: list[str] | None = None, extra: dict[str, Any] | None = None
) -> FinetuneRecipe:
    """A recipe file, a shipped name (`recipes/finetune/<name>.yaml`) or None (the kind's shipped
    recipe). `extra` holds values from command-line flags; `--set` overrides come last."""
    if name_or_path is None:
        path = FINETUNE_DIR / f"{kind}.yaml"
        data = config.read_yaml(path) if path.is_file() else {}
    else:
        path = resolve_recipe_path(name_or_path, FINETUNE_DIR, "fine-tuning recipe")
        data = config.read_yaml(path)
    data = data or {}
    if data.get("kind", kind) != kind:
        raise UserError(f"recipe {name_or_path} is for kind {data['kind']!r}, not {kind!r}")
    data = config.merge(data, {"kind": kind, **(extra or {})})
    data.setdefault("name", path.stem if name_or_path else kind)
    return finetune_recipe_from_dict(data, overrides)
