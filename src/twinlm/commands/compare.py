"""`twinlm compare RUN_OR_RESULTS ... --out DIR`: the controlled encoder-vs-decoder comparison."""

from __future__ import annotations

from twinlm.commands.common import add_output_args, quiet_libraries
from twinlm.commands.eval import add_eval_args, config_from_args
from twinlm.commands.suite import add_suite_args, run_suite, suite_settings

HELP = """Compare any number of models: twinlm run folders (both twins), model folders (for instance
converted models, labelled encoder or decoder from their config; NAME=PATH sets the label), hub
ids, or results.json files / folders from earlier `twinlm eval` or `compare` runs (reused, not
re-run). Evaluates what has not been evaluated yet with the same settings as `twinlm eval`, then
writes DIR/results.json, DIR/report.md (+ PNG charts) and a self-contained DIR/report.html: the
pretraining loss curves of each run (metrics.jsonl), one bar chart per task with error bars over
seeds, the encoder-vs-decoder table with each task's winner and the size of the gap, and one line
per Ettin finding (encoders win classification and retrieval, decoders win generation,
cross-objective models trail native ones, encoders choose the neutral pronoun more often):
reproduced, not reproduced, or inconclusive (a fine-tuning run that did not converge, or a gap
within the seeds' spread). Given two or more run folders (or their results), each finding pairs
every run's twins and states the mean gap with its standard deviation over the pretraining runs,
the spread that decides at small scale. With --suite SPEC the models are compared on the field's
benchmarks instead (GLUE, retrieval, generative, WinoGender; the report adds the Ettin paper's
encoder and decoder tables, with the paper's numbers beside official Ettin checkpoints)."""


def register(sub) -> None:
    p = sub.add_parser("compare", help="evaluate and compare models; write an HTML report", description=HELP)
    p.add_argument("inputs", nargs="+", metavar="RUN_OR_RESULTS", help="run folders, model folders, hub ids or results.json")
    add_eval_args(p)
    add_output_args(p, "comparison (results.json, report.md, report.html)")
    add_suite_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    settings = suite_settings(args)
    if settings.suite:
        run_suite(args.inputs, settings, args.out, args.overwrite)
        return 0
    compare(args.inputs, config_from_args(args), args.out, args.overwrite)
    return 0


def compare(inputs: list[str], cfg, out, overwrite: bool) -> dict:
    from twinlm.evaluate.report import findings, write_report
    from twinlm.evaluate.session import gather, run_session
    from twinlm.outputs import check_out, publish, staging, write_json

    gather(inputs, cfg)  # every input error before the output folder is touched
    out = check_out(out, overwrite)
    tmp = staging(out)  # the old folder is replaced only once the new one is whole
    with quiet_libraries():
        results = run_session(inputs, cfg)
    write_json(tmp / "results.json", results)
    write_report(results, tmp)
    publish(tmp, out)
    print("\n" + results["table"])
    if results["missing"]:
        print(f"missing (not evaluated): {', '.join(results['missing'])}")
    print("\nEttin's findings:")
    for f in findings(results):
        gap = f" gap {f['gap']} {f['spread']}" if f["gap"] else ""
        print(f"  {f['verdict']:15s} {f['finding']}:{gap} {f['detail']}")
    print(f"\nreport: {(out / 'report.html').resolve()}")
    return results
