"""Fine-tuned tasks learn, a BEIR folder is read, bad input fails in one line before any work."""

from __future__ import annotations

import json
import shutil

import pytest

from twinlm.cli import main
from twinlm.errors import UserError


def test_classification_finetune_lowers_the_loss_and_changes_the_body(micro_run, micro_world):
    import torch
    from transformers import AutoModelForMaskedLM

    from twinlm.evaluate.classification import ClassificationTask
    from twinlm.world.generator import nli_examples

    train_people, held = micro_world.split()
    task = ClassificationTask(nli_examples(micro_world, train_people), nli_examples(micro_world, held), 64)
    model, tok = task.finetune(str(micro_run / "decoder"), "decoder", seed=0, lr=3e-3, steps=16, batch_size=16)
    assert task.last_loss[-1] < task.last_loss[0]
    metrics = task.evaluate(model, tok, "decoder")
    assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["macro_f1"] <= 1
    before = AutoModelForMaskedLM.from_pretrained(micro_run / "encoder")
    enc, _ = task.finetune(str(micro_run / "encoder"), "encoder", seed=0, lr=3e-3, steps=2, batch_size=8)
    name = "model.layers.0.attn.Wqkv.weight"
    assert not torch.equal(enc.state_dict()[name], before.state_dict()[name])


def test_retrieval_on_a_beir_folder(micro_run, micro_world, tmp_path):
    from twinlm.evaluate.retrieval import RetrievalTask, read_beir
    from twinlm.world.generator import retrieval_pairs, retrieval_task

    people = micro_world.people[:24]
    coll = retrieval_task(micro_world, people)
    beir = tmp_path / "tiny-beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in coll["corpus"].items()))
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in coll["queries"].items()))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t1\n" for q, rel in coll["qrels"].items() for d in rel))
    loaded = read_beir(beir)
    assert loaded["qrels"] == coll["qrels"] and len(loaded["corpus"]) == 24 == len(loaded["queries"])
    task = RetrievalTask(loaded, retrieval_pairs(micro_world, micro_world.people[24:]), 64)
    model = task.finetune(str(micro_run / "encoder"), "encoder", seed=0, lr=1e-3, steps=8, batch_size=16)
    assert task.last_loss[-1] < task.last_loss[0]
    metrics = task.evaluate(model)
    assert metrics["recall@100"] == 1.0  # 24 documents: every one is in the top 100
    assert 0 < metrics["mrr@10"] <= 1 and 0 < metrics["ndcg@10"] <= 1
    (beir / "qrels" / "test.tsv").unlink()
    with pytest.raises(UserError, match="qrels/test.tsv"):
        read_beir(beir)


def test_bad_input_gives_one_line_errors_and_keeps_earlier_results(micro_run, tmp_path, capsys):
    out = tmp_path / "res"
    out.mkdir()
    (out / "keep.txt").write_text("earlier")
    cases = [
        (["eval", str(micro_run), "--tasks", "choice,spelling", "--out", str(tmp_path / "a")], "valid tasks: intrinsic"),
        (["eval", str(tmp_path), "--out", str(tmp_path / "b")], "not a Hugging Face model folder"),
        (["eval", str(micro_run), "--out", str(out)], "--overwrite"),
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"premise": "p", "label": 0}) + "\n")
    cases.append((["eval", str(micro_run), "--tasks", "classification", "--nli-data", str(bad), "--out", str(tmp_path / "c")],
                  "lacks field(s) hypothesis"))
    bad_choice = tmp_path / "bad_choice.jsonl"
    bad_choice.write_text(json.dumps({"context": "c", "answer": 0}) + "\n")
    cases.append((["eval", str(micro_run), "--tasks", "choice", "--choice-data", str(bad_choice), "--out", str(tmp_path / "d")],
                  "lacks field(s) choices"))
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert (out / "keep.txt").read_text() == "earlier"
    assert not any((tmp_path / x).exists() for x in "abcd")


def test_eval_of_a_run_with_one_twin_reports_the_missing_one(micro_run, tmp_path, capsys):
    run = tmp_path / "half"
    run.mkdir()
    shutil.copytree(micro_run / "decoder", run / "decoder", ignore=shutil.ignore_patterns("phases", "work"))
    out = tmp_path / "res"
    assert main(["eval", str(run), "--tasks", "choice,bias", "--max-items", "8", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["models"]) == ["half/decoder"] and results["missing"] == ["half/encoder"]
    choice = results["models"]["half/decoder"]["tasks"]["choice"]["metrics"]
    assert {"accuracy", "accuracy_norm", "exact_match"} <= set(choice)
    printed = capsys.readouterr().out
    assert "choice/accuracy" in printed and "missing (not evaluated): half/encoder" in printed


def test_a_model_without_a_twinlm_recipe_runs_only_what_is_named(micro_run, tmp_path, capsys):
    foreign = tmp_path / "foreign"  # a model trained elsewhere: no twinlm.yaml, no world
    shutil.copytree(micro_run / "encoder", foreign, ignore=shutil.ignore_patterns("phases", "work", "twinlm.yaml"))
    assert main(["eval", str(foreign), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no twinlm recipe" in err and "--lm-eval" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "a").exists()

    assert main(["eval", str(foreign), "--tasks", "bias", "--out", str(tmp_path / "b")]) == 0
    assert set(json.loads((tmp_path / "b" / "results.json").read_text())["models"]["foreign"]["tasks"]) == {"bias"}

    docs = [{"question": f"Q{i}?", "options": ["yes", "no"], "gold": i % 2} for i in range(4)]
    (tmp_path / "tiny.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "tiny.yaml").write_text(  # lm-eval reads data_files relative to the current folder
        f"task: tiny_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {tmp_path / 'tiny.jsonl'}\n"
        "output_type: multiple_choice\ntest_split: test\ndoc_to_text: \"Question: {{question}}\\nAnswer:\"\n"
        "doc_to_choice: \"{{options}}\"\ndoc_to_target: gold\n")
    capsys.readouterr()
    assert main(["eval", str(foreign), "--lm-eval", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "c")]) == 0
    printed = capsys.readouterr().out
    model = json.loads((tmp_path / "c" / "results.json").read_text())["models"]["foreign"]
    assert model["tasks"] == {} and model["benchmarks"]  # the world's tasks were not run
    assert "evaluating foreign (encoder) on" not in printed and "no twinlm recipe" in printed
    table = printed.split("metric", 1)[1]
    assert "tiny_mc" in table and "/acc" in table  # the benchmark is in the printed table
