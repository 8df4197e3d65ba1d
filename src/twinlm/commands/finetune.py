"""`twinlm finetune KIND --base MODEL --out DIR`: turn a base model into a deployable model."""

from __future__ import annotations

import argparse
import importlib

from twinlm.commands.common import add_output_args
from twinlm.config import add_flags, given
from twinlm.finetune.recipe import FinetuneRecipe, MiningSection, TrainArgs

# Adding a kind: a module with `finetune(recipe, out, overwrite) -> FitResult` and one line here.
KIND_MODULES = {
    "dense": "twinlm.finetune.dense",
    "sparse": "twinlm.finetune.sparse",
    "multivector": "twinlm.finetune.multivector",
    "rerank": "twinlm.finetune.rerank",
    "classify": "twinlm.finetune.classify",
}

HELP = """Fine-tune a base model (a twinlm twin folder, an official Ettin checkpoint by hub id, or any
Hugging Face encoder or decoder) into a deployable model:
  dense        SentenceTransformer embeddings (encoder: mean pooling, decoder: last token)
  sparse       SparseEncoder: SPLADE, inference-free SPLADE (--set sparse.variant=inference_free) or CSR
  multivector  ColBERT-style MultiVectorEncoder
  rerank       CrossEncoder reranker
  classify     text or text-pair classification head (accuracy, macro-F1)
Settings come from recipes/finetune/KIND.yaml (or --recipe FILE), then the flags, then --set.
Without --data the built-in world's task data is used; retrieval kinds are evaluated on --eval-data
(a BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv) or the world's held-out questions, before
and after training. Writes a standard sentence-transformers (or HF) folder with its model card,
twinlm-finetune.yaml (the resolved recipe) and twinlm-finetune.json (scores before/after)."""


def register(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune into dense, sparse, multivector, rerank or classify models",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=list(KIND_MODULES), help="what to build")
    p.add_argument("--recipe", help="a fine-tuning recipe file or shipped name (default: recipes/finetune/KIND.yaml)")
    add_flags(p, FinetuneRecipe, default_from="the recipe")
    add_flags(p, MiningSection)
    add_flags(p, TrainArgs, default_from="the recipe's training section")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any recipe field, e.g. --set sparse.variant=csr --set training.warmup_ratio=0 (repeatable)")
    add_output_args(p, "fine-tuned model")
    p.set_defaults(func=run)


def recipe_from_args(args):
    from twinlm.finetune.recipe import load_finetune_recipe

    extra: dict = given(FinetuneRecipe, args)
    mining = given(MiningSection, args)
    if mining:
        extra["mining"] = mining
    training = given(TrainArgs, args)
    if training:
        extra["training"] = training
    return load_finetune_recipe(args.recipe, args.kind, args.overrides, extra)


def run(args) -> int:
    from twinlm.errors import UserError
    from twinlm.model_files import check_model_source
    from twinlm.outputs import check_out

    recipe = recipe_from_args(args)
    check_model_source(recipe.base_model, "base model")  # before the kind's libraries load
    check_out(args.out, args.overwrite)
    try:
        module = importlib.import_module(KIND_MODULES[args.kind])
    except ModuleNotFoundError as err:
        if err.name != KIND_MODULES[args.kind]:
            raise
        raise UserError(f"finetune {args.kind} is not available in this version of twinlm") from None
    result = module.finetune(recipe, args.out, overwrite=args.overwrite)
    print(f"{args.kind}: {result.summary()}")
    print(f"model: {result.out}")
    return 0
