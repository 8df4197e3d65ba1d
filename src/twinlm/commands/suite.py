"""`--suite SPEC` for `twinlm eval` and `twinlm compare`: the field's benchmarks (GLUE, MS MARCO-
trained retrieval on MTEB, the ten generative tasks, WinoGender) as Ettin ran them, resumable.
Every flag of the suite is defined here, in one place."""

from __future__ import annotations

import argparse


def add_suite_args(p: argparse.ArgumentParser, lm_eval_limit: bool = False) -> None:
    g = p.add_argument_group("benchmark suite (--suite)")
    g.add_argument("--suite", metavar="SPEC",
                   help="run the field's benchmarks instead of the world's tasks: ettin (all four parts: glue, retrieval, "
                   "generative, winogender), a comma list of parts, or single tasks as part:task (glue:sst2,generative:piqa). "
                   "GLUE follows Ettin's sweep (lr 1e-5..3e-4 x batch 16..128 x epochs per task, seed 42, best run on "
                   "validation; MRPC/STS-B/RTE start from the best MNLI checkpoint); --lrs/--seeds/--steps/--batch-size/"
                   "--max-length replace parts of it for a smaller run. Writes OUT/runs/<run>.json as each run ends, "
                   "OUT/results.json and OUT/report.md/.html (the paper's encoder and decoder tables)")
    g.add_argument("--data-dir", metavar="DIR",
                   help="offline copies of the datasets in the hub's layout: DIR/<hub id>[/<config>]/<split>-*.parquet "
                   "(jsonl, csv too), e.g. DIR/nyu-mll/glue/sst2/train-00000-of-00001.parquet (default: the hub)")
    g.add_argument("--skip-missing", action="store_true",
                   help="leave out tasks whose data is missing (listed in the report) instead of stopping before any work")
    g.add_argument("--dry-run", action="store_true",
                   help="list every run (task, model, lr, seed, epochs), the data each reads and where it is found, and "
                   "the cost; run nothing")
    g.add_argument("--resume", action="store_true",
                   help="continue the suite in an existing --out: finished runs are kept, missing or cut-off ones run; "
                   "refused when a setting changed")
    g.add_argument("--classification-data", action="append", default=[], metavar="FILE_OR_HUB_ID",
                   help="a dataset with text (optionally text_pair) and label columns, run as suite task "
                   "classification:<name> like a GLUE task (a float label: regression); repeatable; without --suite, "
                   "only these run")
    g.add_argument("--retrieval-train", metavar="SOURCE",
                   help="retrieval: train on SOURCE (a hub id, a pairs/triplets file, or a BEIR folder with qrels/train.tsv) "
                   "instead of Ettin's MS MARCO triplets")
    g.add_argument("--mteb-tasks", metavar="NAMES",
                   help="retrieval: score on these mteb tasks or BEIR folders (comma-separated) instead of MTEB(eng, v2)'s "
                   "retrieval tasks")
    g.add_argument("--max-train", type=int, metavar="N", help="retrieval: train on at most N rows (default: Ettin's 1.25M)")
    if lm_eval_limit:
        g.add_argument("--lm-eval-limit", type=int, metavar="N", help="score only the first N items of each generative task")


def settings_from_args(args):
    from pathlib import Path

    from twinlm.commands.common import parse_lrs
    from twinlm.errors import UserError
    from twinlm.evaluate.config import EvalConfig, flag_values
    from twinlm.evaluate.suite.base import SuiteSettings

    # The budget flags are EvalConfig's; only those given replace Ettin's sweep.
    flags = flag_values(args)
    for flag in ("seeds", "steps", "batch_size", "max_length", "max_items", "lm_eval_limit", "max_train"):
        value = flags.get(flag, getattr(args, flag, None))
        if value is not None and value < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise UserError(f"--data-dir {args.data_dir} is not a folder")
    if args.lrs is not None and (not parse_lrs(args.lrs) or any(x <= 0 for x in parse_lrs(args.lrs))):
        raise UserError(f"--lrs must hold positive numbers, got {args.lrs!r}")
    nli_data = flags.get("nli_data")
    return SuiteSettings(
        data_dir=Path(args.data_dir) if args.data_dir else None, skip_missing=args.skip_missing,
        max_items=flags.get("max_items"), lm_eval_limit=getattr(args, "lm_eval_limit", None),
        lm_eval_batch_size=getattr(args, "lm_eval_batch_size", 8),
        lrs=tuple(parse_lrs(args.lrs)) if args.lrs is not None else None,
        seeds=tuple(42 + i for i in range(flags["seeds"])) if "seeds" in flags else None,
        steps=flags.get("steps"), batch_sizes=(flags["batch_size"],) if "batch_size" in flags else None,
        max_length=flags.get("max_length"), pooling=flags.get("pooling", EvalConfig.pooling),
        encoder_scoring=flags.get("encoder_scoring", EvalConfig.encoder_scoring),
        classification_data=tuple(args.classification_data or ()) + ((nli_data,) if nli_data else ()),
        retrieval_train=args.retrieval_train, max_train=args.max_train,
        mteb_tasks=tuple(t.strip() for t in args.mteb_tasks.split(",") if t.strip()) if args.mteb_tasks else None)


def check_suite_flags(args) -> None:
    """Suite-only flags without --suite are a mistake, not something to ignore silently."""
    from twinlm.errors import UserError

    if getattr(args, "classification_data", None) and not getattr(args, "suite", None):
        args.suite = "classification"  # the user's own classification data is a suite task of its own
    if getattr(args, "suite", None):
        return
    given = [f for f in ("data_dir", "dry_run", "resume", "skip_missing", "retrieval_train", "mteb_tasks", "max_train")
             if getattr(args, f, None)]
    if given:
        raise UserError(f"--{given[0].replace('_', '-')} applies to a benchmark suite; add --suite SPEC (e.g. --suite glue)")


def run_suite(inputs: list[str], args, log=print) -> dict | None:
    """Plan (every error before any work), then --dry-run's listing, or run and report."""
    from pathlib import Path

    from twinlm.commands.common import quiet_libraries
    from twinlm.evaluate.report import findings, write_report
    from twinlm.evaluate.suite import results as suite_results
    from twinlm.evaluate.suite.planner import describe, make_plan
    from twinlm.evaluate.suite.runner import execute, open_out

    settings = settings_from_args(args)
    plan = make_plan(inputs, args.suite, settings)
    if args.dry_run:
        for line in describe(plan, settings):
            log(line)
        return None
    for line in plan.skipped:
        log(f"skipped (--skip-missing): {line}")
    out = open_out(Path(args.out), settings, args.overwrite, args.resume)
    settings.out = out
    with quiet_libraries():
        records = execute(plan, settings, out, log)
    results = suite_results.summarise(plan, records, settings)
    results["table"] = suite_results.table(results)
    suite_results.write(results, out)
    write_report(results, out)
    log("\n" + results["table"])
    if len(results["models"]) > 1:
        log("\nEttin's findings:")
        for f in findings(results):
            log(f"  {f['verdict']:15s} {f['finding']}: {f['detail']}")
    log(f"\nresults: {out / 'results.json'}; report: {(out / 'report.html').resolve()}")
    return results
