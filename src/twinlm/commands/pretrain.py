"""`twinlm pretrain RECIPE --out DIR`: train both twins through the recipe's phases."""

from __future__ import annotations

from twinlm.commands.common import add_output_args, add_recipe_args

HELP = """Train the encoder (MLM) and decoder (CLM) twins through every phase of RECIPE on the same
token blocks in the same order. Writes DIR/encoder and DIR/decoder (plain Hugging Face folders
with twinlm.yaml and a model card), DIR/<twin>/phases/<phase>/ end-of-phase checkpoints and
DIR/metrics.jsonl (one line per logged step: loss, lr, batch, tokens, tokens/s, MFU).

Intermediate checkpoints (every training.save_every steps) go to DIR/<twin>/work/<phase>/
checkpoint-N: the newest training.keep_last are kept for --resume, and every training.keep_every
steps' also after the phase ends (each a plain HF folder plus the Trainer state). A checkpoint is
staged and renamed into place with a completion marker, so one half-written at a crash is never
resumed from. The micro-batch and gradient accumulation follow from the global batch and the
number of processes (check a cluster size first with `twinlm plan RECIPE --gpus N`). --resume
works on another number of processes too (a lost node): the same samples in the same steps, the
micro-batch derived again (or set anew with --set training.micro_batch=N); a full disk while saving
stops with one line and leaves the previous checkpoint whole.
Multi-process: torchrun --nproc_per_node N -m twinlm.cli pretrain ...

Continued pretraining: --init starts the twins from checkpoints instead of random weights (weights
only; every phase still starts a fresh optimizer and schedule). E.g. Ettin's decay phase on your
data from the official pair:
  twinlm pretrain ettin-150m-decay-continue --set data.source=my-prepared-data --out runs/decay"""


def register(sub) -> None:
    p = sub.add_parser("pretrain", help="train the twins on a recipe", description=HELP)
    add_recipe_args(p)
    add_output_args(p, "run (models, checkpoints, metrics)")
    p.add_argument("--twins", default="encoder,decoder", help="which twins to train (default: encoder,decoder)")
    p.add_argument(
        "--init", action="append", default=[], metavar="SOURCE",
        help="start from checkpoints: a twinlm run folder (both twins), or encoder=PATH and decoder=PATH "
        "(repeatable), PATH a hub id, a local ModernBERT / ModernBertDecoder folder or a phase checkpoint "
        "(RUN/encoder/phases/NAME); the recipe's init section does the same. The tokenizer is the "
        "checkpoint's unless the recipe names one, which must match it",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out from its last complete "
                   "checkpoint, on this or another number of processes")
    p.set_defaults(func=run)


def run(args) -> int:
    import os

    from twinlm.errors import UserError
    from twinlm.recipe import load_recipe
    from twinlm.train.init import init_overrides
    from twinlm.train.pretrain import pretrain

    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite contradict each other; pick one")
    recipe = load_recipe(args.recipe, args.overrides + init_overrides(args.init))
    twins = [t.strip() for t in args.twins.split(",") if t.strip()]
    results = pretrain(recipe, args.out, twins=twins, resume=args.resume, overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: the summary once, from rank 0
        return 0
    for r in results:
        print(f"{r.twin:8s} {r.phase:10s} held-out loss {r.heldout.get('loss', float('nan')):.4f} "
              f"(unigram {r.heldout.get('unigram_baseline', float('nan')):.4f})")
    print(f"models: {args.out}/encoder {args.out}/decoder" if len(twins) == 2 else f"model: {args.out}/{twins[0]}")
    return 0
