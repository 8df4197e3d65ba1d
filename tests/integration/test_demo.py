"""The whole demo path on the micro recipe: pretrain, evaluate both twins on every task, report."""

from __future__ import annotations

import json

from twinlm.cli import main


def test_demo_pretrains_evaluates_and_reports_then_compare_reuses_results(tmp_path, capsys):
    run = tmp_path / "demo"
    argv = ["demo", "--recipe", "micro", "--out", str(run), "--seeds", "2", "--steps", "2", "--task-steps",
            "retrieval=3", "--max-items", "8"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "held-out loss" in printed and "decoder greedy continuation" in printed  # the pretraining demo
    assert "classification/accuracy" in printed and f"report: {(run / 'compare' / 'report.html').resolve()}" in printed
    results = json.loads((run / "compare" / "results.json").read_text())
    assert set(results["models"]) == {"demo/encoder", "demo/decoder"} and results["missing"] == []
    for model in results["models"].values():
        assert set(model["tasks"]) == {"intrinsic", "classification", "retrieval", "choice", "bias"}
        assert len(model["tasks"]["classification"]["metrics"]["accuracy"]["seeds"]) == 2
        assert model["tasks"]["retrieval"]["budget"]["steps"] == 3 and model["tasks"]["classification"]["budget"]["steps"] == 2
        assert all(isinstance(t["converged"], bool) for t in model["tasks"].values() if t["finetuned"])
    assert "Ettin's findings:" in printed and "Encoders win classification" in printed
    assert "| Encoders win retrieval |" in (run / "compare" / "report.md").read_text()
    html = (run / "compare" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 6  # curves + one chart per task

    # Earlier results are reused, not re-run: nothing is evaluated, the numbers carry over.
    again = tmp_path / "again"
    assert main(["compare", str(run / "compare" / "results.json"), "--out", str(again)]) == 0
    assert "evaluating" not in capsys.readouterr().out
    assert json.loads((again / "results.json").read_text())["models"] == results["models"]
    # The demo refuses to overwrite a finished run without --overwrite.
    assert main(argv) == 2 and "--overwrite" in capsys.readouterr().err
