"""`--suite SPEC` for `twinlm eval` and `twinlm compare`: the field's benchmarks (GLUE, MS MARCO-
trained retrieval on MTEB, the ten generative tasks, WinoGender) as Ettin ran them, resumable.
The suite's flags are generated from SuiteSettings' documented fields (`twinlm.config`)."""

from __future__ import annotations

import argparse

from twinlm.config import add_flags, from_flags
from twinlm.errors import UserError
from twinlm.evaluate.config import EvalConfig, flag_values
from twinlm.evaluate.suite.base import SuiteSettings


def add_suite_args(p: argparse.ArgumentParser) -> None:
    add_flags(p.add_argument_group("benchmark suite (--suite)"), SuiteSettings)


def suite_settings(args) -> SuiteSettings:
    """The suite's settings from the command's flags: its own (SuiteSettings' documented fields),
    then the budget flags of EvalConfig, of which only those given replace Ettin's sweep. Every
    bad value is a one-line error here, before any work."""
    settings = from_flags(SuiteSettings, args)
    flags = flag_values(args)
    if settings.data_dir is not None and not settings.data_dir.is_dir():
        raise UserError(f"--data-dir {settings.data_dir} is not a folder")
    if settings.classification_data and not settings.suite:
        settings.suite = "classification"  # the user's own classification data is a suite task of its own
    if flags.get("nli_data") and settings.suite:  # without --suite it replaces the world's NLI task
        settings.classification_data = (*settings.classification_data, flags["nli_data"])
    budget = dict(max_items=flags.get("max_items"), lrs=tuple(flags["lrs"]) if "lrs" in flags else None,
                  seeds=tuple(42 + i for i in range(flags["seeds"])) if "seeds" in flags else None,
                  steps=flags.get("steps"), batch_sizes=(flags["batch_size"],) if "batch_size" in flags else None,
                  max_length=flags.get("max_length"), pooling=flags.get("pooling", EvalConfig.pooling),
                  encoder_scoring=flags.get("encoder_scoring", EvalConfig.encoder_scoring))
    if any(lr <= 0 for lr in budget["lrs"] or ()):
        raise UserError(f"--lrs must hold positive numbers, got {','.join(f'{lr:g}' for lr in budget['lrs'])}")
    for key, value in budget.items():
        setattr(settings, key, value)
    if not settings.suite:
        # Suite-only flags without --suite are a mistake, not something to ignore silently.
        wrong = [f for f in ("data_dir", "dry_run", "resume", "skip_missing", "retrieval_train", "mteb_tasks", "max_train")
                 if getattr(settings, f)]
        if wrong:
            raise UserError(f"--{wrong[0].replace('_', '-')} applies to a benchmark suite; add --suite SPEC (e.g. --suite glue)")
    return settings


def run_suite(inputs: list[str], settings: SuiteSettings, out_dir: str, overwrite: bool, log=print) -> dict | None:
    """Plan (every error before any work), then --dry-run's listing, or run and report."""
    from pathlib import Path

    from twinlm.commands.common import quiet_libraries
    from twinlm.evaluate.report import findings, write_report
    from twinlm.evaluate.suite import results as suite_results
    from twinlm.evaluate.suite.planner import describe, make_plan
    from twinlm.evaluate.suite.runner import execute, open_out

    plan = make_plan(inputs, settings.suite, settings)
    if settings.dry_run:
        for line in describe(plan, settings):
            log(line)
        return None
    for line in plan.skipped:
        log(f"skipped (--skip-missing): {line}")
    out = open_out(Path(out_dir), settings, overwrite, settings.resume)
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
