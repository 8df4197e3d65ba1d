"""`twinlm eval MODEL --out DIR`: evaluate a run's twins, a checkpoint or a hub model."""

from __future__ import annotations

import argparse

from twinlm.commands.common import add_output_args, quiet_libraries
from twinlm.commands.suite import add_suite_args, run_suite, suite_settings
from twinlm.config import add_flags, from_flags
from twinlm.evaluate.config import EvalConfig, HarnessRuns, eval_config

HELP = """Evaluate MODEL on the comparison tasks: intrinsic (masked accuracy / perplexity on held-out
text), classification (fine-tuned 3-way NLI head: accuracy, macro-F1), retrieval (fine-tuned
sentence-transformers model: nDCG@10, MRR@10, Recall@100), choice (log-likelihood multiple choice;
decoders also free-generation exact match) and bias (WinoGender-style pronoun choice). MODEL is a
twinlm run folder (both twins), a model folder, or a hub id. Task data defaults to the built-in
world of the model's recipe. Every fine-tuned task uses the same budget and learning-rate grid for
every model, with --seeds seeds each; every run records whether it converged (final training loss
below 0.75 x the trivial predictor's: ln(classes) with the class prior, ln(batch) in-batch), and a
score from a run that did not is marked and wins nothing. A model without a twinlm recipe runs only
the tasks named by --tasks and the --lm-eval/--mteb benchmarks. Writes DIR/results.json (every
metric, every seed, mean and std) and prints a table. With --suite SPEC it runs the field's
benchmarks instead, as the Ettin paper did (GLUE, MS MARCO-trained retrieval on MTEB, the ten
generative tasks, WinoGender), resumable with --resume; see the "benchmark suite" flags below."""


def add_eval_args(p: argparse.ArgumentParser) -> None:
    # Absent flags stay absent (not a default value), so that --suite can tell "not given" (Ettin's
    # sweep) from a value.
    add_flags(p, EvalConfig)


def config_from_args(args, lm_eval: bool = False):
    inputs = args.inputs if hasattr(args, "inputs") else [args.model]
    return fit_embedding_models(inputs, eval_config(args), lm_eval=lm_eval)


def fit_embedding_models(inputs: list[str], cfg, lm_eval: bool = False, log=print):
    """The config without the tasks that a sentence-transformers folder without an LM head (the
    output of `twinlm convert llm2vec`, say) cannot be scored on, with a one-line note; beside
    other models the config is kept and only that folder skips them (`session.gather`). A
    UserError instead, before any work, when no requested task would be left, or with --lm-eval
    (log-likelihoods need an LM head)."""
    from dataclasses import replace

    from twinlm.errors import UserError
    from twinlm.evaluate.config import TASK_NAMES
    from twinlm.evaluate.models import embedding_only, model_folder, unscorable_tasks
    from twinlm.evaluate.session import earlier_results

    flagged, others = [], 0
    for spec in inputs:
        folder = model_folder(spec)
        if folder is not None and embedding_only(folder):
            flagged.append(folder)
        elif folder is not None or earlier_results(spec) is None:
            others += 1  # a model to evaluate (earlier results.json files are reused as they are)
    if not flagged:
        return cfg
    why = {t: r for f in flagged for t, r in unscorable_tasks(f, cfg.tasks).items()}
    folder = next((f for f in flagged if unscorable_tasks(f, list(why))), flagged[0])
    keep = [t for t in cfg.tasks if t not in why]
    possible = [t for t in TASK_NAMES if not any(unscorable_tasks(f, [t]) for f in flagged)]
    what = f"{folder} is {embedding_only(folder)} without an LM head"
    fix = (f"evaluate it with --tasks {','.join(keep if keep and not others else possible)}, fine-tune it "
           f"with `twinlm finetune KIND --base {folder}`, or use sentence-transformers' own evaluation")
    if lm_eval:
        raise UserError(f"{what}, so --lm-eval (log-likelihood scoring) cannot run on it; {fix}")
    if not why:
        return cfg
    groups = [f"{', '.join(t for t in why if why[t] == r)} ({r})" for r in dict.fromkeys(why.values())]
    if not keep:
        raise UserError(f"{what}, so it cannot be scored on {' or '.join(groups)}, and no requested task is left; {fix}")
    if others:  # the other models keep every task; session.gather drops these for the folder alone
        log(f"note: {what}: skipping {' and '.join(groups)} for it; the other models get every task")
        return cfg
    log(f"note: {what}: skipping {' and '.join(groups)}")
    return replace(cfg, tasks=keep)


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate twins, a checkpoint or a hub model on the comparison tasks", description=HELP)
    p.add_argument("model", help="a twinlm run folder, a Hugging Face model folder, or a hub id (NAME=... sets its label)")
    add_eval_args(p)
    add_flags(p, HarnessRuns)
    add_output_args(p, "results (results.json)")
    add_suite_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    settings = suite_settings(args)
    if settings.suite:
        run_suite([args.model], settings, args.out, args.overwrite)
        return 0
    from twinlm.evaluate.runner import format_table
    from twinlm.evaluate.session import gather, run_session
    from twinlm.outputs import check_out, publish, staging, write_json

    harness = from_flags(HarnessRuns, args)
    cfg = config_from_args(args, lm_eval=bool(harness.lm_eval))
    extras = prepare_benchmarks(harness, settings, cfg)
    gather([args.model], cfg, benchmarks=bool(extras))  # every input error before the output folder is touched
    out = check_out(args.out, args.overwrite)
    tmp = staging(out)  # the old folder is replaced only once the new one is whole
    with quiet_libraries():
        results = run_session([args.model], cfg, benchmarks=bool(extras))
        for name, fn in extras:
            for model in results["models"].values():
                print(f"evaluating {model['name']} on {name}")
                model.setdefault("benchmarks", {}).update(fn(model, tmp))
    if extras:
        results["table"] = format_table(results)  # with the benchmark rows
    write_json(tmp / "results.json", results)
    publish(tmp, out)
    if results["table"]:
        print("\n" + results["table"])
    if results["missing"]:
        print(f"missing (not evaluated): {', '.join(results['missing'])}")
    print(f"\nresults: {out / 'results.json'}")
    return 0


def prepare_benchmarks(harness, settings, cfg) -> list:
    """Validated lm-eval / MTEB task runners, as (label, fn(model result, output folder) -> results)."""
    from twinlm.evaluate import benchmarks

    extras = []
    if harness.lm_eval:
        plan = benchmarks.plan_lm_eval(harness.lm_eval)
        limit, size, scoring = settings.lm_eval_limit, settings.lm_eval_batch_size, cfg.encoder_scoring
        extras.append(("lm-eval", lambda m, out: benchmarks.run_lm_eval(m, plan, scoring, size, limit, out)))
    if harness.mteb:
        tasks = benchmarks.load_mteb_tasks(harness.mteb)
        extras.append(("mteb", lambda m, out: benchmarks.run_mteb(m, tasks, cfg)))
    return extras
