"""The findings lines of a suite's results (evaluate/report.py on evaluate/suite/results.py's
output), from hand-made run records: a part run on some of its tasks is judged on the tasks that
ran and says why; a finding nobody measured says so without blaming a missing twin."""

from __future__ import annotations

from twinlm.evaluate.report import findings
from twinlm.evaluate.suite.results import benchmarks, default_select

GENERATIVE = ["arc_challenge", "hellaswag", "lambada", "openbookqa", "piqa", "sciq", "siqa", "triviaqa",
              "winogrande", "wsc"]


def record(part, task, name, score, **extra):
    return {"run": {"part": part, "task": task, "model": name, "twin": "", "lr": None, "seed": None, "epochs": None,
                    "extra": []}, "score": score, **extra}


def model(name, arch, records_by_part, averaged):
    """A model's entry as summarise() writes it: its parts (tasks selected from the records, the
    average only when every averaged task ran) and the benchmarks the findings read."""
    parts = {}
    for part, recs in records_by_part.items():
        tasks = {r["run"]["task"]: default_select([r]) for r in recs}
        complete = all(t in tasks for t in averaged[part])
        parts[part] = {"tasks": tasks, "average": sum(t["score"] for t in tasks.values()) / len(tasks) if complete else None,
                       "average_name": f"{part} average", "averaged": averaged[part]}
    return {"name": name, "architecture": arch, "path": name, "run": "run", "origin": "native", "tasks": {},
            "suite": parts, "benchmarks": benchmarks(parts)}


def by_name(results):
    return {f["finding"]: f for f in findings(results)}


def test_a_partial_generative_suite_is_judged_on_the_tasks_that_ran_with_the_true_reason():
    """`--suite generative:piqa` with both twins: both are there, so the line must not say a twin
    is missing; it compares PIQA and says the paper's average needs all ten tasks."""
    averaged = {"generative": GENERATIVE}
    enc = model("micro/encoder", "encoder", {"generative": [record(
        "generative", "piqa", "micro/encoder", 50.0, acc_norm=0.5, score_stderr=2.5, n=400)]}, averaged)
    dec = model("micro/decoder", "decoder", {"generative": [record(
        "generative", "piqa", "micro/decoder", 70.0, acc_norm=0.7, score_stderr=2.3, n=400)]}, averaged)
    lines = by_name({"suite": {}, "settings": {}, "models": {"enc": enc, "dec": dec}})
    assert not any("needs both an encoder and a decoder" in f["detail"] for f in lines.values())
    gen = lines["Decoders win generation (generative/piqa)"]
    assert gen["verdict"] == "reproduced" and gen["gap"] == "+20.000"
    assert "the harness's standard error" in gen["spread"] and gen["spread"].startswith("±4.800")
    assert "generative average needs all 10 tasks, 1 ran" in gen["detail"]
    assert "Decoders win generation" not in lines  # no line for a finding judged on nothing


def test_a_close_partial_result_is_inconclusive_within_the_harness_error():
    averaged = {"generative": GENERATIVE}
    enc = model("e", "encoder", {"generative": [record("generative", "piqa", "e", 61.0, score_stderr=2.4, n=400)]},
                averaged)
    dec = model("d", "decoder", {"generative": [record("generative", "piqa", "d", 62.0, score_stderr=2.4, n=400)]},
                averaged)
    gen = by_name({"suite": {}, "settings": {}, "models": {"e": enc, "d": dec}})["Decoders win generation (generative/piqa)"]
    assert gen["verdict"] == "inconclusive" and "within the spread" in gen["detail"] and "1 ran" in gen["detail"]


def test_a_finding_nobody_measured_says_so_instead_of_blaming_a_missing_twin():
    """A GLUE-only suite on both twins: generation was not measured at all."""
    averaged = {"glue": ["sst2", "mnli"]}
    glue = {"glue": [record("glue", "sst2", "x", 90.0, converged=True), record("glue", "mnli", "x", 80.0, converged=True)]}
    enc, dec = model("e", "encoder", glue, averaged), model("d", "decoder", glue, averaged)
    lines = by_name({"suite": {}, "settings": {}, "models": {"e": enc, "d": dec}})
    gen = lines["Decoders win generation"]
    assert gen["verdict"] == "inconclusive" and gen["detail"].startswith("not measured: no model here ran")
    assert "needs both" not in gen["detail"]
    # Complete parts are judged on their average, as before, without a per-task note.
    assert "judged on this task alone" not in lines["Encoders win classification (glue/average)"]["detail"]


def test_only_one_twin_on_a_task_names_the_missing_one():
    averaged = {"generative": GENERATIVE}
    dec = model("d", "decoder", {"generative": [record("generative", "piqa", "d", 62.0, score_stderr=2.4, n=400)]},
                averaged)
    gen = by_name({"suite": {}, "settings": {}, "models": {"d": dec}})["Decoders win generation (generative/piqa)"]
    assert "no native encoder ran generative/piqa" in gen["detail"]
