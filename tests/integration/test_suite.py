"""`twinlm eval/compare --suite` end to end on both micro twins, with GLUE mirrors the tests write
in the hub layout: runs recorded as they end, MNLI's best checkpoint starting STS-B (regression),
--resume re-running only what is missing, a changed setting refused, the paper-layout report."""

from __future__ import annotations

import json
import statistics

import pytest

from twinlm.cli import main
from twinlm.evaluate.suite import glue_tasks as G

BUDGET = ["--lrs", "1e-3", "--steps", "2", "--batch-size", "4", "--max-length", "32"]


def test_glue_metrics_and_the_average_follow_ettins_script():
    mnli = G.metric_values(G.TASKS["mnli"], {"validation_matched": ([0, 1, 2, 2], [0, 1, 2, 0]),
                                             "validation_mismatched": ([0, 1], [0, 0])})
    assert mnli == {"accuracy_matched": 75.0, "accuracy_mismatched": 50.0}
    assert G.scores(mnli, "accuracy_matched", G.TASKS["mnli"].averaged) == (75.0, 62.5)  # chosen on matched
    mrpc = G.metric_values(G.TASKS["mrpc"], {"validation": ([1, 1, 0, 0], [1, 0, 0, 0])})
    assert mrpc["accuracy"] == 75.0 and mrpc["f1"] == pytest.approx(200 / 3)
    assert G.scores(mrpc, "accuracy", G.TASKS["mrpc"].averaged)[1] == pytest.approx((75 + 200 / 3) / 2)
    stsb = G.metric_values(G.TASKS["stsb"], {"validation": ([0.0, 1.0, 2.0, 5.0], [0.1, 0.9, 2.5, 2.6])})
    assert stsb["spearman"] == pytest.approx(100.0) and stsb["pearson"] < 100
    assert G.scores(stsb, "spearman", G.TASKS["stsb"].averaged)[1] == pytest.approx(100.0)  # Pearson not averaged
    cola = G.metric_values(G.TASKS["cola"], {"validation": ([1, 0, 1, 0], [0, 1, 0, 1])})
    assert cola["matthews"] == pytest.approx(-100.0)  # (here, not in tests/unit: scipy and sklearn take seconds to import)


def records(out):
    return {p.name: json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))}


def test_glue_on_both_twins_resumes_only_what_is_missing(micro_run, glue_mirror, tmp_path, capsys, monkeypatch):
    from twinlm.evaluate.suite import glue

    mirror = glue_mirror(tmp_path / "mirror", tasks=("mnli", "stsb", "sst2"), rows=12, eval_rows=6)
    out = tmp_path / "suite"
    args = ["eval", str(micro_run), "--suite", "glue:stsb,glue:mnli,glue:sst2", "--data-dir", str(mirror), *BUDGET,
            "--out", str(out)]
    # Stopped (Ctrl-C) during the 5th of 6 runs: 4 are written, the 5th left nothing behind.
    real, calls = glue.execute, []

    def stopped_at_fifth(run, model, settings):
        calls.append(run.key)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(run, model, settings)

    monkeypatch.setattr(glue, "execute", stopped_at_fifth)
    assert main(args) == 130
    first = records(out)
    assert len(first) == 4 and not (out / "results.json").exists()
    monkeypatch.setattr(glue, "execute", real)
    capsys.readouterr()
    assert main(args + ["--resume"]) == 0
    log = capsys.readouterr().out
    assert "resuming: 4 of 6 run(s) already done" in log and "run 2/2" in log
    done = records(out)
    assert len(done) == 6 and all(done[n] == r for n, r in first.items())  # the finished runs were not redone
    redone = {r["key"] for r in done.values()} - {r["key"] for r in first.values()}
    assert len(redone) == 2 and calls[4] in redone  # the cut-off run and the one never started

    by = {(r["run"]["model"].split("/")[-1], r["run"]["task"]): r for r in done.values()}
    for twin in ("encoder", "decoder"):
        stsb, mnli = by[(twin, "stsb")], by[(twin, "mnli")]
        assert set(stsb["metrics"]) == {"pearson", "spearman"} and stsb["score"] == stsb["metrics"]["spearman"]
        assert set(mnli["metrics"]) == {"accuracy_matched", "accuracy_mismatched"}
        assert mnli["eval_rows"] == {"validation_matched": 6, "validation_mismatched": 6}
        # STS-B (regression) started from the MNLI checkpoint kept for this twin, its best (here: only) MNLI run.
        kept = out / "glue" / "mnli-best" / f"{micro_run.name}_{twin}"
        assert stsb["start"] == str(kept) and json.loads((kept / "best.json").read_text())["run"] == mnli["key"]
        expected = "ModernBertForSequenceClassification" if twin == "encoder" else "ModernBertDecoderForSequenceClassification"
        assert json.loads((kept / "config.json").read_text())["architectures"] == [expected]
        assert by[(twin, "sst2")]["start"] == "pretrained" and by[(twin, "sst2")]["final_loss"] > 0
    results = json.loads((out / "results.json").read_text())
    assert len(results["runs"]) == 6
    enc = results["models"][f"{micro_run.name}/encoder"]["suite"]["glue"]
    assert enc["tasks"]["stsb"]["score"] == by[("encoder", "stsb")]["score"] and enc["average"] is None  # 3 of 8 tasks
    report = (out / "report.md").read_text()
    assert "### Encoder tasks (paper Table 3)" in report and f"| {micro_run.name}/decoder | decoder |" in report

    changed = list(args)
    changed[changed.index("--steps") + 1] = "3"
    capsys.readouterr()
    assert main(changed + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert "setting steps changed (2 when" in err and "3 now" in err and len(err.strip().splitlines()) == 1


def test_glue_runs_evaluate_at_ettins_cadence_train_the_whole_budget_and_keep_the_last_score(
        micro_run, glue_mirror, tmp_path, monkeypatch):
    """Ettin evaluated every EVAL_EVERY steps and at the end, never stopped early (its stopper
    never fired) and kept the last evaluation: the record says so, and evaluating on the way does
    not change what the run trains to."""
    mirror = glue_mirror(tmp_path / "mirror", tasks=("sst2",), rows=12, eval_rows=6)
    args = ["eval", str(micro_run / "encoder"), "--suite", "glue:sst2", "--data-dir", str(mirror), "--lrs", "1e-3",
            "--steps", "5", "--batch-size", "4", "--max-length", "32"]
    monkeypatch.setitem(G.EVAL_EVERY, "sst2", 2)  # Ettin's 500 steps would not come up in a 5-step run
    assert main(args + ["--out", str(tmp_path / "every2")]) == 0
    (rec,) = records(tmp_path / "every2").values()
    assert rec["steps"] == 5 and rec["eval_every"] == 2
    assert [step for step, _ in rec["evals"]] == [2, 4, 5]  # the cadence, then the end of training
    assert rec["early_stopping"] is False and rec["stopped_at"] is None and rec["scored_step"] == 5
    assert rec["select"] == rec["evals"][-1][1] == rec["metrics"]["accuracy"]  # the last, not the best
    assert rec["best_step"] == max(rec["evals"], key=lambda e: e[1])[0]
    monkeypatch.setitem(G.EVAL_EVERY, "sst2", 500)
    assert main(args + ["--out", str(tmp_path / "at_end")]) == 0
    (alone,) = records(tmp_path / "at_end").values()
    assert alone["evals"] == [[5, alone["select"]]] and alone["best_step"] == 5
    # The same training either way (and the same head: seeded, whatever ran before in this process).
    assert (alone["score"], alone["final_loss"]) == (rec["score"], rec["final_loss"])


@pytest.mark.slow
def test_all_of_glue_and_a_users_dataset_give_the_glue_average(micro_run, glue_mirror, tmp_path, capsys):
    mirror = glue_mirror(tmp_path / "mirror", rows=12, eval_rows=6)
    data = tmp_path / "reviews.jsonl"
    data.write_text("".join(json.dumps({"text": f"person likes music {i}", "label": ["good", "bad"][i % 2]}) + "\n"
                            for i in range(20)))
    out = tmp_path / "suite"
    assert main(["compare", str(micro_run / "encoder"), str(micro_run / "decoder"), "--suite", "glue",
                 "--classification-data", str(data), "--data-dir", str(mirror), *BUDGET, "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    for model in results["models"].values():
        glue = model["suite"]["glue"]
        assert len(glue["tasks"]) == 8
        assert glue["average"] == pytest.approx(statistics.fmean(t["score"] for t in glue["tasks"].values()))
        mnli = glue["tasks"]["mnli"]["metrics"]
        assert glue["tasks"]["mnli"]["score"] == pytest.approx((mnli["accuracy_matched"] + mnli["accuracy_mismatched"]) / 2)
        custom = model["suite"]["classification"]["tasks"]["reviews"]
        assert set(custom["metrics"]) == {"accuracy", "macro_f1"}
    assert "glue/average" in (out / "report.md").read_text()


@pytest.mark.slow
def test_the_ettin_preset_runs_every_part_on_both_twins(micro_run, glue_mirror, tmp_path, capsys):
    """`--suite ettin` on mirrors of every part (the parts' own tests write them), both twins."""
    pytest.importorskip("lm_eval")
    pytest.importorskip("mteb")
    import test_suite_generative
    import test_suite_retrieval
    import test_suite_winogender

    mirror = glue_mirror(tmp_path / "mirror", rows=12, eval_rows=6)
    test_suite_generative.write_mirror(mirror)
    test_suite_retrieval.write_mirror(mirror)
    test_suite_winogender.mirror(tmp_path)
    out = tmp_path / "suite"
    assert main(["eval", str(micro_run), "--suite", "ettin", "--data-dir", str(mirror), *BUDGET, "--lm-eval-limit", "2",
                 "--mteb-tasks", "Tiny", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert len(results["runs"]) == 2 * (8 + 1 + 10 + 1)
    for model in results["models"].values():
        parts = model["suite"]
        assert parts["glue"]["average"] is not None and parts["generative"]["average"] is not None
        assert parts["retrieval"]["average"] == parts["retrieval"]["tasks"]["mteb"]["score"]
        assert parts["winogender"]["average"] is None and "neutral_share" in parts["winogender"]["tasks"]["gotcha"]["values"]
    report = (out / "report.md").read_text()
    for heading in ("### Encoder tasks", "### Generative tasks", "### WinoGender"):
        assert heading in report
