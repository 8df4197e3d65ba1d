"""Classification fine-tuning: a micro encoder learns a single-text task (which fact a question
asks about), the world's NLI pair task runs by default, and both models reload with transformers
alone and reproduce their predictions."""

from __future__ import annotations

import json
import random
import subprocess
import sys

from twinlm.cli import main

RELOAD = """
import sys, json
sys.modules['twinlm'] = None
from transformers import pipeline
clf = pipeline('text-classification', model=sys.argv[1])
inputs = json.loads(sys.argv[2])
out = [clf(x if isinstance(x, str) else {'text': x[0], 'text_pair': x[1]}) for x in inputs]
print(json.dumps([(r[0] if isinstance(r, list) else r)['label'] for r in out]))
"""


def _predict(folder, inputs) -> list[str]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    pairs = not isinstance(inputs[0], str)
    enc = tok([x[0] for x in inputs], [x[1] for x in inputs], padding=True, return_tensors="pt") if pairs else \
        tok(inputs, padding=True, return_tensors="pt")
    with torch.no_grad():
        return [model.config.id2label[int(i)] for i in model(**enc).logits.argmax(-1)]


def _reloaded(folder, inputs) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", RELOAD, str(folder), json.dumps(inputs)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_single_text_classifier_learns_and_reloads(micro_run, micro_world, tmp_path):
    from twinlm.world.vocab import QUESTIONS

    rng = random.Random(0)
    rows = [{"question": rng.choice(QUESTIONS[attr]).format(name=p.name), "asks": attr}
            for p in micro_world.people for attr in rng.sample(list(QUESTIONS), 3)]
    data = tmp_path / "questions.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "intent"
    base = ["finetune", "classify", "--base", str(micro_run / "encoder"), "--data", str(data), "--out", str(out)]
    assert main([*base, "--columns", "text=question", "--steps", "1"]) == 2  # no label column yet
    assert main([*base, "--columns", "text=question", "--columns", "label=asks", "--steps", "40",
                 "--batch-size", "16", "--lr", "3e-3"]) == 0
    results = json.loads((out / "twinlm-finetune.json").read_text())
    assert set(results["after"]) == {"accuracy", "macro_f1"}
    assert results["after"]["accuracy"] > results["before"]["accuracy"]
    assert results["after"]["accuracy"] > 0.3  # 8 classes: chance is 1/8 (measured 0.47 after 40 steps)
    assert sorted(json.loads((out / "config.json").read_text())["id2label"].values()) == sorted(QUESTIONS)
    probe = [r["question"] for r in rows[:6]]
    assert _reloaded(out, probe) == _predict(out, probe)


def test_pair_classifier_on_world_nli_reloads(micro_run, tmp_path):
    out = tmp_path / "nli"
    assert main(["finetune", "classify", "--base", str(micro_run / "encoder"), "--out", str(out),
                 "--steps", "2", "--batch-size", "8"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert list(config["id2label"].values()) == ["entailment", "neutral", "contradiction"]
    pairs = [["Anna Berg was born in Oslo.", "Anna Berg was born in Oslo."],
             ["Anna Berg works for Northwind.", "Anna Berg was born in Lima."]]
    assert _reloaded(out, pairs) == _predict(out, pairs)


def test_classify_refuses_retrieval_losses(micro_run, tmp_path, capsys):
    code = main(["finetune", "classify", "--base", str(micro_run / "encoder"), "--loss",
                 "MultipleNegativesRankingLoss", "--out", str(tmp_path / "o")])
    assert code == 2 and "CrossEntropyLoss" in capsys.readouterr().err
