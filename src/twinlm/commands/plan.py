"""`twinlm plan RECIPE`: validate a recipe and estimate its cost without running it."""

from __future__ import annotations

from dataclasses import dataclass, field

from twinlm.commands.common import add_recipe_args
from twinlm.config import add_flags, from_flags
from twinlm.errors import UserError

HELP = """Validate RECIPE (every key, every combination) for a cluster of --gpus accelerators and
print, per phase and twin: tokens, sequence length, global batch, the per-GPU micro-batch and
gradient accumulation (derived from the GPU count, as `twinlm pretrain` will run it), estimated
activation memory per GPU without and with training.activation_checkpointing (the attention
implementation's masks and attention weights included) and the total per GPU with the model and
optimizer states, steps (batch-size warmup included), parameters, training FLOPs and the estimated
wall time; then the process counts the run can resume on, and the tokens/s one GPU consumes against
what the data path delivers. micro_batch: auto takes the largest micro-batch that fits the GPU's
memory (--gpu-memory-gb, or training.memory_gb), as the run will. A global batch that does not
split over the GPUs, or a phase that does not fit at micro-batch 1, is an error naming the fixes.
Nothing is downloaded or trained."""


@dataclass
class Cluster:
    """The accelerators `twinlm plan` sizes a recipe for."""

    gpus: int = field(default=1, metadata={"min": 1, "help": "number of accelerators (processes) the run will use, "
                                                             "over all nodes"})
    gpu_tflops: float = field(default=989.0, metadata={"help": (
        "peak TFLOP/s of one accelerator at the training precision (989: H100 bf16 dense)")})
    gpu_memory_gb: float = field(default=80.0, metadata={"help": (
        "memory of one accelerator in GB (80: H100); training.memory_gb overrides it")})
    data_tokens_per_s: float | None = field(default=None, metadata={"help": (
        "tokens/s one loader worker delivers, as measured by benchmarks/data_throughput.py (its last line's "
        "tokens_per_s); without it the margin uses the reference machine's figure")})
    mfu: float = field(default=0.4, metadata={"help": "expected model FLOPs utilisation, 0-1"})

    def __post_init__(self) -> None:
        if self.gpu_tflops <= 0 or not 0 < self.mfu <= 1 or self.gpu_memory_gb <= 0:
            raise UserError("--gpu-tflops and --gpu-memory-gb must be > 0 and --mfu in (0, 1]")
        if self.data_tokens_per_s is not None and self.data_tokens_per_s <= 0:
            raise UserError("--data-tokens-per-s must be > 0")


def register(sub) -> None:
    p = sub.add_parser("plan", help="validate a recipe and estimate its cost", description=HELP)
    add_recipe_args(p)
    add_flags(p, Cluster)
    p.set_defaults(func=run)


def run(args) -> int:
    from twinlm.plan import format_plan, plan
    from twinlm.recipe import load_recipe

    c = from_flags(Cluster, args)
    recipe = load_recipe(args.recipe, args.overrides)
    rows = plan(recipe, c.gpus, c.gpu_tflops, c.mfu, c.gpu_memory_gb)
    print(format_plan(recipe, rows, c.gpus, c.gpu_tflops, c.mfu, c.gpu_memory_gb, c.data_tokens_per_s))
    return 0
