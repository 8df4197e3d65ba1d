"""The suite's generative part: the ten tasks run by lm-evaluation-harness from its own task
definitions, on a mirror written here in each hub dataset's own layout and columns; both twins,
both encoder scorings; the prompts are the harness's own."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from twinlm.errors import UserError

pytest.importorskip("lm_eval")

from twinlm.evaluate.suite import generative  # noqa: E402
from twinlm.evaluate.suite.mirror import MissingData  # noqa: E402

ARC = {"id": "q1", "question": "Which gas do plants take in?", "answerKey": "B",
       "choices": {"text": ["oxygen", "carbon dioxide", "helium", "neon"], "label": ["A", "B", "C", "D"]}}
ROWS = {
    "arc_challenge": [ARC, {**ARC, "id": "q2", "question": "What melts ice?", "answerKey": "1",
                            "choices": {"text": ["heat", "cold"], "label": ["1", "2"]}}],
    "hellaswag": [{"ind": 1, "activity_label": "Baking", "ctx_a": "A man mixes flour.", "ctx_b": "he",
                   "ctx": "A man mixes flour. he", "endings": ["bakes bread.", "swims [title] away.", "sings.", "flies."],
                   "source_id": "x", "split": "val", "split_type": "indomain", "label": "0"}] * 2,
    "lambada": [{"text": "she opened the door and saw the cat"}, {"text": "the river ran to the sea"}],
    "openbookqa": [{"id": "7", "question_stem": "The sun is a", "answerKey": "A",
                    "choices": {"text": ["star", "planet"], "label": ["A", "B"]}}] * 2,
    "piqa": [{"goal": "To dry wet hands", "sol1": "use a towel.", "sol2": "use a bucket of water.", "label": 0},
             {"goal": "To cool soup", "sol1": "heat it.", "sol2": "let it stand.", "label": 1}],
    "sciq": [{"question": "What do bees make?", "distractor1": "milk", "distractor2": "silk", "distractor3": "wax",
              "correct_answer": "honey", "support": " Bees collect nectar."}] * 2,
    "siqa": [{"context": "Ann fed the dog.", "question": "Why?", "answerA": "it was hungry", "answerB": "it was red",
              "answerC": "to sleep", "label": "1"}] * 2,
    "triviaqa": [{"question": "What is the capital of France", "question_id": "t1", "question_source": "x",
                  "answer": {"aliases": ["Paris"], "normalized_aliases": ["paris"], "value": "Paris",
                             "normalized_value": "paris", "matched_wiki_entity_name": "", "normalized_matched_wiki_entity_name": "",
                             "type": "WikipediaEntity"}}] * 2,
    "winogrande": [{"sentence": "The cup fell off the table because _ was tilted.", "option1": "the cup",
                    "option2": "the table", "answer": "2"}] * 2,
    "wsc": [{"text": "The trophy does not fit in the suitcase because it is too big.", "pronoun": "it",
             "pronoun_loc": 44, "quote": "it is too big", "quote_loc": 44, "options": ["The trophy", "The suitcase"],
             "label": 0, "source": "x"}] * 2,
}


def write_mirror(root, tasks=None):
    """Each task's scored split as a parquet file in the hub layout."""
    import datasets

    for task in tasks or generative.TASKS:
        spec = generative.TASKS[task]
        folder = root / spec.hub_id / spec.config if spec.config else root / spec.hub_id
        folder.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_list(ROWS[task]).to_parquet(str(folder / f"{spec.split}-00000-of-00001.parquet"))
    return root


def settings(tmp_path, **kw):
    return SimpleNamespace(data_dir=tmp_path / "mirror", lm_eval_limit=None, encoder_scoring="ettin",
                           lm_eval_batch_size=4, out=tmp_path / "out", **kw)


def model(micro_run, twin):
    return {"name": f"micro/{twin}", "architecture": twin, "path": str(micro_run / twin)}


def test_needs_names_the_hub_id_and_the_mirror_folder(tmp_path):
    write_mirror(tmp_path / "mirror", ["piqa"])
    (need,) = generative.needs("piqa", settings(tmp_path))
    assert (need.hub_id, need.split) == ("baber/piqa", "validation")
    assert need.local == [tmp_path / "mirror" / "baber/piqa" / "validation-00000-of-00001.parquet"]
    with pytest.raises(MissingData, match=r"allenai/ai2_arc \(ARC-Challenge\).*mirror/allenai/ai2_arc/ARC-Challenge"):
        generative.needs("arc_challenge", settings(tmp_path))
    with pytest.raises(UserError, match="not one of the ten"):
        generative.plan("boolq", {"name": "m", "architecture": "decoder"}, settings(tmp_path))


def test_the_task_is_the_harness_own_definition_with_only_the_data_moved(tmp_path):
    """Every key of the harness's YAML survives into the task the suite runs, except the data keys."""
    from lm_eval.tasks._yaml_loader import load_yaml

    write_mirror(tmp_path / "mirror", ["hellaswag"])
    _, task = generative.load_harness_task("hellaswag", tmp_path / "mirror", tmp_path / "tasks")
    own = load_yaml(generative.harness_yaml("hellaswag"), resolve_func=False)
    moved = {"dataset_path", "dataset_name", "dataset_kwargs", "training_split", "test_split", "validation_split"}
    config = task.config.to_dict() if hasattr(task.config, "to_dict") else vars(task.config)
    for key in set(own) - moved - {"tag", "metadata"}:
        if key == "process_docs":  # a function: the harness's own, from its own utils module
            assert task.config.process_docs.__module__.endswith("hellaswag.utils")
        else:
            assert config[key] == own[key], key
    assert config["dataset_path"] == "parquet"


def test_decoder_prompts_are_the_harness_own_and_scores_match_its_samples(micro_run, tmp_path, monkeypatch):
    """The contexts the decoder is asked about are what the harness's own piqa task (its YAML, its
    hub id, the rows served by a stand-in for the hub) builds; [CLS] is prepended (add_bos_token)."""
    import datasets
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    write_mirror(tmp_path / "mirror", ["piqa"])
    seen, calls = [], []
    original = HFLM.loglikelihood

    def spy(self, requests, *a, **k):
        seen.extend(r.args for r in requests)
        return original(self, requests, *a, **k)

    monkeypatch.setattr(HFLM, "loglikelihood", spy)
    original_encode = HFLM.tok_encode
    monkeypatch.setattr(HFLM, "tok_encode", lambda self, s, **k: calls.append(original_encode(self, s, **k)) or calls[-1])
    s = settings(tmp_path)
    (run,) = generative.plan("piqa", model(micro_run, "decoder"), s)
    record = generative.execute(run, model(micro_run, "decoder"), s)
    assert record["metric"] == "acc_norm" and record["n"] == 2 and record["score"] == 100 * record["acc_norm"]
    assert record["score_stderr"] == pytest.approx(100 * record["acc_norm_stderr"])
    assert "add_bos_token=True" in record["model_args"]

    # The harness's registered piqa, untouched, with the hub replaced by the same rows.
    rows = datasets.Dataset.from_list(ROWS["piqa"])
    hub_rows = datasets.DatasetDict({"train": rows, "validation": rows})
    monkeypatch.setattr(datasets, "load_dataset", lambda path, name=None, **k: hub_rows if path == "baber/piqa" else None)
    folder = generative.harness_yaml("piqa").parent
    own = TaskManager(include_path=str(folder), include_defaults=False).load_task_or_group(["piqa"])["piqa"]
    expected = {(own.doc_to_text(d), own.config.target_delimiter + c) for d in own.eval_docs for c in own.doc_to_choice(d)}
    assert set(seen) == expected and len(seen) == 4
    bos = __import__("transformers").AutoTokenizer.from_pretrained(micro_run / "decoder").bos_token_id
    assert calls and all(ids[0] == bos for ids in calls)


def test_no_git_error_reaches_the_user_outside_a_repository(micro_run, tmp_path, monkeypatch, capfd):
    """simple_evaluate runs `git describe` for its record; outside a repository git printed
    "fatal: not a git repository" to the terminal in the middle of a suite run."""
    import os

    from lm_eval.loggers.utils import get_git_commit_hash

    from twinlm.evaluate import benchmarks

    write_mirror(tmp_path / "mirror", ["piqa"])
    monkeypatch.chdir(tmp_path)
    expected = get_git_commit_hash()  # the harness's own call, here
    assert "not a git repository" in capfd.readouterr().err
    assert benchmarks._git_hash() == expected and "not a git" not in capfd.readouterr().err
    s = settings(tmp_path)
    (run,) = generative.plan("piqa", model(micro_run, "decoder"), s)
    record = generative.execute(run, model(micro_run, "decoder"), s)
    assert record["n"] == 2
    assert "not a git repository" not in capfd.readouterr().err
    # The harness's other stderr output still gets through.
    benchmarks._quietly(lambda: os.write(2, b"a real problem\n"))
    assert "a real problem" in capfd.readouterr().err


def test_one_task_on_both_twins_is_judged_on_that_task_with_the_true_reason(micro_run, tmp_path, capsys):
    """`--suite generative:piqa` with an encoder and a decoder: the findings line compares PIQA and
    says the paper's average needs all ten tasks (it used to say a twin was missing)."""
    import json

    from twinlm.cli import main

    write_mirror(tmp_path / "mirror", ["piqa"])
    out = tmp_path / "suite"
    assert main(["eval", str(micro_run), "--suite", "generative:piqa", "--data-dir", str(tmp_path / "mirror"),
                 "--out", str(out)]) == 0
    log = capsys.readouterr().out
    assert "needs both an encoder and a decoder" not in log
    assert "Decoders win generation (generative/piqa)" in log and "needs all 10 tasks, 1 ran" in log
    models = json.loads((out / "results.json").read_text())["models"].values()
    assert all(m["suite"]["generative"]["average"] is None and "piqa" in m["benchmarks"]["generative"] for m in models)


@pytest.mark.parametrize("scoring", ["ettin", "pll"])
def test_encoder_runs_under_either_scoring(micro_run, tmp_path, scoring):
    write_mirror(tmp_path / "mirror", ["arc_challenge"])
    s = settings(tmp_path, )
    s.encoder_scoring = scoring
    (run,) = generative.plan("arc_challenge", model(micro_run, "encoder"), s)
    assert ("scoring", scoring) in run.extra
    record = generative.execute(run, model(micro_run, "encoder"), s)
    assert record["scoring"] == scoring and record["model"] == "twinlm-encoder" and record["n"] == 2
    assert 0 <= record["score"] <= 100 and record["metric"] == "acc_norm"
    # The per-item scores the harness kept: one log-likelihood per choice (4 and 2 choices).
    rows = (tmp_path / "out" / "lm_eval" / "micro__encoder" / "arc_challenge.jsonl").read_text().splitlines()
    assert sorted(len(__import__("json").loads(r)["scores"]) for r in rows) == [2, 4]


@pytest.mark.slow
def test_all_ten_tasks_both_twins_and_the_average(micro_run, tmp_path):
    write_mirror(tmp_path / "mirror")
    s = settings(tmp_path)
    for twin in ("decoder", "encoder"):
        records = {}
        for task in generative.TASKS:
            (run,) = generative.plan(task, model(micro_run, twin), s)
            records[task] = generative.execute(run, model(micro_run, twin), s)
            assert records[task]["n"] == 2, (twin, task)
            assert records[task]["metric"] == generative.TASKS[task].metric
        avg = generative.average(records)
        assert avg == pytest.approx(sum(r["score"] for r in records.values()) / 10)
        assert generative.average({k: v for k, v in records.items() if k != "wsc"}) is None
