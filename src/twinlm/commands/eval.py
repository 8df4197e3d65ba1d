"""`twinlm eval MODEL --out DIR`: evaluate a run's twins, a checkpoint or a hub model."""

from __future__ import annotations

import argparse

from twinlm.commands.common import add_output_args

HELP = """Evaluate MODEL on the comparison tasks: intrinsic (masked accuracy / perplexity on held-out
text), classification (fine-tuned 3-way NLI head: accuracy, macro-F1), retrieval (fine-tuned
sentence-transformers model: nDCG@10, MRR@10, Recall@100), choice (log-likelihood multiple choice;
decoders also free-generation exact match) and bias (WinoGender-style pronoun choice). MODEL is a
twinlm run folder (both twins), a model folder, or a hub id. Task data defaults to the built-in
world of the model's recipe. Every fine-tuned task uses the same budget and learning-rate grid for
every model, with --seeds seeds each. Writes DIR/results.json (every metric, every seed, mean and
std) and prints a table."""


def add_eval_args(p: argparse.ArgumentParser) -> None:
    from twinlm.evaluate.config import TASK_NAMES

    p.add_argument("--tasks", default=None, help=f"comma-separated tasks (default: all: {','.join(TASK_NAMES)}; with --lm-eval "
                   "or --mteb on a model without a twinlm recipe: none, only those benchmarks)")
    p.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds per learning rate (default: 3)")
    p.add_argument("--lrs", default="1e-4,3e-4,1e-3", help="learning-rate grid, same for every model (default: 1e-4,3e-4,1e-3)")
    p.add_argument("--steps", type=int, default=150, help="fine-tuning steps per run (default: 150)")
    p.add_argument("--batch-size", type=int, default=32, help="fine-tuning batch size (default: 32)")
    p.add_argument("--max-length", type=int, default=128, help="tokens per fine-tuning input (default: 128)")
    p.add_argument("--max-items", type=int, default=400, help="cap on multiple-choice items and held-out texts (default: 400)")
    p.add_argument("--pooling", default="mean", choices=["mean", "cls"], help="encoder pooling (decoders: last token)")
    p.add_argument("--nli-data", help="jsonl/csv of premise, hypothesis, label (optional split column) for classification")
    p.add_argument("--choice-data", help="jsonl of context, choices, answer (index) for multiple choice")
    p.add_argument("--encoder-scoring", default="ettin", choices=["ettin", "pll"],
                   help="how an encoder scores a continuation, in the choice task and --lm-eval: ettin (default, Ettin's "
                   "protocol): left to right, each token replaced by [MASK] followed by two more [MASK]s and [SEP], nothing "
                   "after them visible, the first mask's prediction scores it (the end token is scored too); pll: classic "
                   "pseudo-log-likelihood, one continuation token masked at a time with everything else visible")
    p.add_argument("--beir", help="BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/test.tsv, qrels/train.tsv)")


def config_from_args(args):
    from twinlm.errors import UserError
    from twinlm.evaluate.config import TASK_NAMES, EvalConfig

    try:
        lrs = [float(x) for x in args.lrs.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--lrs must be comma-separated numbers, got {args.lrs!r}") from None
    tasks = ",".join(TASK_NAMES) if args.tasks is None else args.tasks
    cfg = EvalConfig(tasks=[t.strip() for t in tasks.split(",") if t.strip()], seeds=args.seeds, lrs=lrs,
                     steps=args.steps, batch_size=args.batch_size, max_length=args.max_length,
                     max_items=args.max_items, pooling=args.pooling, nli_data=args.nli_data,
                     choice_data=args.choice_data, beir=args.beir, encoder_scoring=args.encoder_scoring)
    inputs = args.inputs if hasattr(args, "inputs") else [args.model]
    return fit_embedding_models(inputs, cfg, lm_eval=bool(getattr(args, "lm_eval", None)))


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


def quiet_libraries() -> None:
    import warnings

    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate twins, a checkpoint or a hub model on the comparison tasks", description=HELP)
    p.add_argument("model", help="a twinlm run folder, a Hugging Face model folder, or a hub id (NAME=... sets its label)")
    add_eval_args(p)
    p.add_argument("--lm-eval", dest="lm_eval", metavar="TASKS",
                   help="also run lm-evaluation-harness itself on TASKS (comma-separated): its task names (sciq,arc_easy,...; "
                   "their data come from the hub) or local task YAML files or folders of them (offline; data_files are read "
                   "relative to the current folder, as lm-eval does). Decoders are scored by the harness's own HFLM, so the "
                   "numbers are the harness's; encoders by twinlm's twinlm-encoder model class (--encoder-scoring). Results: "
                   "benchmarks.lm_eval in results.json, every item's scores in OUT/lm_eval/")
    p.add_argument("--lm-eval-limit", type=int, metavar="N", help="score only the first N items of each lm-eval task (the harness's --limit)")
    p.add_argument("--lm-eval-batch-size", type=int, default=8, metavar="N",
                   help="decoders: the harness's --batch_size (default: 8); encoders: equal-length rows per forward pass "
                   "(no padding, so it never changes a score)")
    p.add_argument("--mteb", metavar="TASKS",
                   help="also run the mteb package itself on retrieval TASKS (comma-separated): mteb task names (SciFact,"
                   "NFCorpus,...; their data come from the hub) or BEIR-layout folders (corpus.jsonl, queries.jsonl, "
                   "qrels/test.tsv; offline). A sentence-transformers model is scored as it is, any other model after "
                   "fine-tuning into one on its world's retrieval data. Main score nDCG@10 (graded, pytrec_eval). "
                   "Results: benchmarks.mteb in results.json")
    add_output_args(p, "results (results.json)")
    p.set_defaults(func=run)


def run(args) -> int:
    from twinlm.evaluate.benchmarks import format_benchmarks
    from twinlm.evaluate.runner import write_json
    from twinlm.evaluate.session import finish_out, gather, prepare_out, run_session

    cfg = config_from_args(args)
    extras = prepare_benchmarks(args, cfg)
    only_benchmarks = benchmarks_only(args)
    if not only_benchmarks:
        gather([args.model], cfg)  # every input error before the output folder is touched
    out, tmp = prepare_out(args.out, args.overwrite)
    quiet_libraries()
    results = bare_results(args.model, cfg) if only_benchmarks else run_session([args.model], cfg)
    for name, fn in extras:
        for model in results["models"].values():
            print(f"evaluating {model['name']} on {name}")
            model.setdefault("benchmarks", {}).update(fn(model, tmp))
    write_json(tmp / "results.json", results)
    finish_out(out, tmp)
    if results["table"]:
        print("\n" + results["table"])
    if extras:
        print("\n" + format_benchmarks(results))
    if results["missing"]:
        print(f"missing (not evaluated): {', '.join(results['missing'])}")
    print(f"\nresults: {out / 'results.json'}")
    return 0


def benchmarks_only(args) -> bool:
    """True when benchmarks are asked for, --tasks is not, and MODEL has no twinlm recipe: the
    built-in world's tasks would measure nothing about a model that never saw that world."""
    from pathlib import Path

    from twinlm.evaluate.models import resolve

    if args.tasks is not None or not (getattr(args, "lm_eval", None) or getattr(args, "mteb", None)):
        return False
    refs, _ = resolve(args.model)
    return not any((Path(r.path) / "twinlm.yaml").is_file() for r in refs)


def bare_results(spec: str, cfg) -> dict:
    """results.json's structure for models evaluated on benchmarks only (no world task)."""
    from dataclasses import asdict

    from twinlm.evaluate.models import resolve

    refs, missing = resolve(spec)
    print(f"{spec} has no twinlm recipe: running only the benchmarks asked for (name tasks with --tasks to add them)")
    return {"settings": {**cfg.to_dict(), "tasks": []}, "models": {r.name: {**asdict(r), "tasks": {}} for r in refs},
            "missing": missing, "table": ""}


def prepare_benchmarks(args, cfg) -> list:
    """Validated lm-eval / MTEB task runners, as (label, fn(model result, output folder) -> results)."""
    from twinlm.errors import UserError
    from twinlm.evaluate import benchmarks

    extras = []
    if getattr(args, "lm_eval_limit", None) is not None and args.lm_eval_limit < 1:
        raise UserError(f"--lm-eval-limit must be >= 1, got {args.lm_eval_limit}")
    if getattr(args, "lm_eval_batch_size", 1) < 1:
        raise UserError(f"--lm-eval-batch-size must be >= 1, got {args.lm_eval_batch_size}")
    if getattr(args, "lm_eval", None):
        plan = benchmarks.plan_lm_eval(args.lm_eval.split(","))
        limit, size, scoring = args.lm_eval_limit, args.lm_eval_batch_size, cfg.encoder_scoring
        extras.append(("lm-eval", lambda m, out: benchmarks.run_lm_eval(m, plan, scoring, size, limit, out)))
    if getattr(args, "mteb", None):
        tasks = benchmarks.load_mteb_tasks(args.mteb.split(","))
        extras.append(("mteb", lambda m, out: benchmarks.run_mteb(m, tasks, cfg)))
    return extras
