"""`twinlm prepare`: tokenize a corpus once, in parallel, into a prepared folder for pretraining."""

from __future__ import annotations

import argparse

from twinlm.config import add_flags, from_flags, given
from twinlm.data.prepare.settings import PrepareJob, PrepareSettings

HELP = """Tokenize a corpus into a prepared folder OUT: OUT/train and OUT/heldout (sharded token
stores), OUT/tokenizer and OUT/prepare.json. Then train on it with
`twinlm pretrain RECIPE --set data.source=OUT`.

Four forms:
  twinlm prepare SOURCE --tokenizer NAME_OR_PATH --out OUT
      SOURCE is anything twinlm reads: a text file (one document per paragraph), a folder or glob
      (one document per text file; jsonl/json/csv/tsv/parquet files give one per row of
      --text-column), an MDS folder, a datasets save_to_disk folder, or a hub dataset id
      (streamed). Like Megatron's preprocess_data.py: source, tokenizer, output, --workers.
  twinlm prepare RECIPE --out OUT [--set KEY=VALUE] [--phase NAME]
      takes source, text column, split, tokenizer and held-out settings from the recipe (the
      data section, or the source of phase NAME); a recipe without a tokenizer gets one trained
      on its corpus, as `twinlm pretrain` would, saved in OUT/tokenizer.
  twinlm prepare SOURCE --recipe RECIPE --out OUT
      the same, for another source than the recipe's (e.g. one stream of a mixture).
  twinlm prepare --merge PART [PART ...] --out OUT
      joins the parts of a prepare split across machines with --shard i/n into one folder, equal
      to a one-machine prepare. Token files are hard-linked (no copy; the parts stay valid and
      can be deleted afterwards) when OUT is on the parts' file system, copied otherwise.

Parallel: --workers processes (default: every core) each tokenize their own units of work
(byte ranges of large files, parquet row groups, MDS shards, groups of small files). The result
does not depend on the number of workers or machines. Resumable: an interrupted prepare, run
again with the same arguments, continues with the units it had not finished; OUT is complete
only when prepare.json says "complete": true. Held-out: --heldout-share of the documents (at
most --heldout-max-documents), drawn by a hash of each document's place in the source and
--seed, never all of a small corpus."""


def register(sub) -> None:
    p = sub.add_parser("prepare", help="tokenize a corpus into sharded train/held-out stores (parallel, resumable)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", nargs="?", metavar="SOURCE_OR_RECIPE",
                   help="a corpus (with --tokenizer) or a recipe (without); omit with --merge")
    p.add_argument("--tokenizer", metavar="NAME_OR_PATH", help="tokenizer folder or hub id (a fast tokenizer)")
    p.add_argument("--out", required=True, help="the prepared folder to write")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out (a complete one, or an unfinished prepare of another job)")
    p.add_argument("--recipe", help="with SOURCE: take the tokenizer and held-out settings from this recipe")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field (recipe form only), e.g. --set data.split=validation")
    p.add_argument("--phase", help="recipe form: prepare this phase's source instead of data.source")
    add_flags(p, PrepareJob)
    add_flags(p, PrepareSettings)
    p.set_defaults(func=run)


def run(args) -> int:
    import sys
    import warnings

    # Warnings (a large held-out share, skipped files) come at the end: one line each, no source line.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            code = _run(args)
        except KeyboardInterrupt:  # finished units are recorded: the same command continues
            print("twinlm prepare: interrupted; run the same command again to continue", file=sys.stderr)
            return 130
    for w in caught:
        print(f"twinlm prepare: warning: {w.message}", file=sys.stderr)
    return code


def _run(args) -> int:
    from twinlm.data.prepare.pipeline import merge, parse_shard
    from twinlm.errors import UserError

    job = from_flags(PrepareJob, args)
    if job.merge:
        if args.source or args.tokenizer or job.shard:
            raise UserError("--merge takes only the part folders and --out (no SOURCE, --tokenizer or --shard)")
        summary = merge(job.merge, args.out, overwrite=args.overwrite)
    else:
        if not args.source and not args.recipe:
            raise UserError("give a SOURCE with --tokenizer, a RECIPE, or --merge PART ...")
        summary = _prepare(args, job, parse_shard(job.shard))
    print(summary.line())
    return 0


def _prepare(args, job: PrepareJob, shard):
    from twinlm.data.prepare.pipeline import plan_prepare, prepare
    from twinlm.data.tokenizer import load_tokenizer
    from twinlm.errors import UserError

    if args.tokenizer:
        if args.overrides or args.phase or args.recipe:
            raise UserError("--recipe, --set and --phase belong to the recipe form (no --tokenizer)")
        settings = from_flags(PrepareSettings, args)
        plan = plan_prepare(args.source, settings)  # source errors before the tokenizer is loaded
        return prepare(args.source, load_tokenizer(args.tokenizer), args.out, plan=plan,
                       tokenizer_name=args.tokenizer, workers=job.workers, shard=shard,
                       overwrite=args.overwrite, progress=job.progress)
    from twinlm.recipe import load_recipe

    flags = given(PrepareSettings, args)
    if "text_column" in flags or "split" in flags:
        raise UserError("with a recipe, set the text column and split in it: --set data.text_column=NAME")
    recipe = load_recipe(args.recipe or args.source, args.overrides)
    if args.recipe and args.phase:
        raise UserError("give either SOURCE --recipe RECIPE, or RECIPE --phase NAME")
    source = args.source if args.recipe and args.source else _recipe_source(recipe, args.phase)
    data = recipe.data
    # The recipe's values replace the dataclass defaults; flags given on the command line win.
    from_recipe = dict(text_column=data.text_column, split=data.split, heldout_share=data.heldout_share,
                       heldout_max_documents=data.heldout_max_documents,
                       heldout_max_tokens=data.heldout_max_tokens, seed=recipe.training.seed)
    settings = PrepareSettings(**{**from_recipe, **flags})
    plan = plan_prepare(source, settings)
    name, tokenizer = _recipe_tokenizer(recipe, source, args.out)
    return prepare(source, tokenizer, args.out, plan=plan, tokenizer_name=name, workers=job.workers,
                   shard=shard, overwrite=args.overwrite, progress=job.progress)


def _recipe_source(recipe, phase_name: str | None) -> str:
    from twinlm.errors import UserError

    if phase_name is not None:
        names = [p.name for p in recipe.phases]
        if phase_name not in names:
            raise UserError(f"no phase {phase_name!r} in the recipe; phases: {', '.join(names)}")
        source = next(p for p in recipe.phases if p.name == phase_name).source or recipe.data.source
    else:
        source = recipe.data.source
    streams = [st.source for st in getattr(recipe.data, "streams", None) or [] if getattr(st, "source", None)]
    if not source and streams:  # a mixture: one prepared folder per stream
        raise UserError(f"the recipe mixes {len(streams)} streams ({', '.join(streams)}); prepare each with "
                        "`twinlm prepare SOURCE --recipe RECIPE --out P` and point its stream at P")
    if not source:
        raise UserError("the recipe trains on the built-in world (no data.source); there is nothing to prepare")
    return source


def _recipe_tokenizer(recipe, source: str, out: str):
    """(name, tokenizer): the recipe's, or one trained on the corpus (reused from OUT on resume)."""
    from itertools import islice
    from pathlib import Path

    from twinlm.data.sources import iter_texts
    from twinlm.data.tokenizer import load_tokenizer, train_tokenizer

    cfg = recipe.tokenizer
    if cfg.name_or_path:
        return cfg.name_or_path, load_tokenizer(cfg.name_or_path)
    saved = Path(out) / "tokenizer"
    if (saved / "tokenizer.json").is_file():
        return f"trained on {source}", load_tokenizer(str(saved))
    texts = iter_texts(source, recipe.data.text_column, recipe.data.split)
    return f"trained on {source}", train_tokenizer(islice(texts, cfg.train_documents), cfg.vocab_size, cfg.min_frequency)
