"""`twinlm plan RECIPE`: validate a recipe and estimate its cost without running it."""

from __future__ import annotations

from twinlm.commands.common import add_recipe_args

HELP = """Validate RECIPE (every key, every combination) for a cluster of --gpus accelerators and
print, per phase and twin: tokens, sequence length, global batch, the per-GPU micro-batch and
gradient accumulation (derived from the GPU count, as `twinlm pretrain` will run it), estimated
activation memory per GPU without and with training.activation_checkpointing, steps (batch-size
warmup included), parameters, training FLOPs and the estimated wall time. A global batch that does
not split over the GPUs is an error naming the nearest valid settings. Nothing is downloaded or
trained."""


def register(sub) -> None:
    p = sub.add_parser("plan", help="validate a recipe and estimate its cost", description=HELP)
    add_recipe_args(p)
    p.add_argument("--gpus", type=int, default=1,
                   help="number of accelerators (processes) the run will use, over all nodes (default 1)")
    p.add_argument("--gpu-tflops", type=float, default=989.0,
                   help="peak TFLOP/s of one accelerator at the training precision (default 989: H100 bf16 dense)")
    p.add_argument("--mfu", type=float, default=0.4, help="expected model FLOPs utilisation, 0-1 (default 0.4)")
    p.set_defaults(func=run)


def run(args) -> int:
    from twinlm.errors import UserError
    from twinlm.plan import format_plan, plan
    from twinlm.recipe import load_recipe

    if args.gpus < 1 or args.gpu_tflops <= 0 or not 0 < args.mfu <= 1:
        raise UserError("--gpus must be >= 1, --gpu-tflops > 0 and --mfu in (0, 1]")
    recipe = load_recipe(args.recipe, args.overrides)
    print(format_plan(recipe, plan(recipe, args.gpus, args.gpu_tflops, args.mfu), args.gpus, args.gpu_tflops, args.mfu))
    return 0
