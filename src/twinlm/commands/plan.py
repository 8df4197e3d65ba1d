"""`twinlm plan RECIPE`: validate a recipe and estimate its cost without running it."""

from __future__ import annotations

from twinlm.commands.common import add_recipe_args

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


def register(sub) -> None:
    p = sub.add_parser("plan", help="validate a recipe and estimate its cost", description=HELP)
    add_recipe_args(p)
    p.add_argument("--gpus", type=int, default=1,
                   help="number of accelerators (processes) the run will use, over all nodes (default 1)")
    p.add_argument("--gpu-tflops", type=float, default=989.0,
                   help="peak TFLOP/s of one accelerator at the training precision (default 989: H100 bf16 dense)")
    p.add_argument("--gpu-memory-gb", type=float, default=80.0,
                   help="memory of one accelerator in GB (default 80: H100); training.memory_gb overrides it")
    p.add_argument("--data-tokens-per-s", type=float, default=None,
                   help="tokens/s one loader worker delivers, as measured by benchmarks/data_throughput.py "
                   "(its last line's tokens_per_s); without it the margin uses the reference machine's figure")
    p.add_argument("--mfu", type=float, default=0.4, help="expected model FLOPs utilisation, 0-1 (default 0.4)")
    p.set_defaults(func=run)


def run(args) -> int:
    from twinlm.errors import UserError
    from twinlm.plan import format_plan, plan
    from twinlm.recipe import load_recipe

    if args.gpus < 1 or args.gpu_tflops <= 0 or not 0 < args.mfu <= 1 or args.gpu_memory_gb <= 0:
        raise UserError("--gpus must be >= 1, --gpu-tflops and --gpu-memory-gb > 0 and --mfu in (0, 1]")
    if args.data_tokens_per_s is not None and args.data_tokens_per_s <= 0:
        raise UserError("--data-tokens-per-s must be > 0")
    recipe = load_recipe(args.recipe, args.overrides)
    rows = plan(recipe, args.gpus, args.gpu_tflops, args.mfu, args.gpu_memory_gb)
    print(format_plan(recipe, rows, args.gpus, args.gpu_tflops, args.mfu, args.gpu_memory_gb, args.data_tokens_per_s))
    return 0
