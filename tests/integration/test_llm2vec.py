"""`twinlm convert llm2vec` end to end on the micro decoder, reload without twinlm, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from twinlm.cli import main

TINY = ["--recipe", "llm2vec-cpu", "--set", "mntp_steps=4", "--set", "simcse_steps=4", "--set", "max_documents=64",
        "--set", "mntp_batch=8", "--set", "simcse_batch=8"]


@pytest.fixture(scope="module")
def llm2vec_dir(micro_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("llm2vec") / "model"
    assert main(["convert", "llm2vec", str(micro_run / "decoder"), "--out", str(out), *TINY]) == 0
    return out


RELOAD = """
import sys, json
sys.modules["twinlm"] = None  # the folder must load with stock libraries only
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoTokenizer

def first_token(path):
    model = SentenceTransformer(path, device="cpu")
    tok = model.tokenizer
    ids = tok("Alice Smith was born in Paris and works at Acme as an engineer.")["input_ids"]
    other = list(ids)
    other[-1] = tok.convert_tokens_to_ids(tok.tokenize(" Berlin"))[0] if other[-1] != 5 else 6
    out = []
    for row in (ids, other):
        features = {"input_ids": torch.tensor([row]), "attention_mask": torch.ones(1, len(row), dtype=torch.long)}
        with torch.no_grad():
            out.append(model[0](features)["token_embeddings"][0, 0])
    return float((out[0] - out[1]).abs().max())

print(json.dumps({"is_causal": SentenceTransformer(sys.argv[1])[0].auto_model.config.is_causal,
                  "llm2vec_first_moves": first_token(sys.argv[1]), "plain_first_moves": first_token(sys.argv[2]),
                  "dim": SentenceTransformer(sys.argv[1]).encode(["a b c"]).shape[1]}))
"""


def test_llm2vec_folder_reloads_bidirectional_without_twinlm(llm2vec_dir, micro_run, tmp_path):
    meta = json.loads((llm2vec_dir / "llm2vec.json").read_text())
    assert meta["kind"] == "llm2vec" and meta["mask_token"] == "[MASK]"
    assert json.loads((llm2vec_dir / "config.json").read_text())["is_causal"] is False
    assert not (llm2vec_dir / ".work").exists()
    script = tmp_path / "reload.py"
    script.write_text(textwrap.dedent(RELOAD))
    done = subprocess.run([sys.executable, str(script), str(llm2vec_dir), str(micro_run / "decoder")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["is_causal"] is False
    assert result["llm2vec_first_moves"] > 1e-4  # bidirectional: the last token reaches the first
    assert result["plain_first_moves"] < 1e-6  # the plain decoder is causal
    assert result["dim"] == 64


def test_existing_output_is_not_overwritten(llm2vec_dir, micro_run, capsys):
    before = (llm2vec_dir / "model.safetensors").stat().st_mtime_ns
    assert main(["convert", "llm2vec", str(micro_run / "decoder"), "--out", str(llm2vec_dir), *TINY]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (llm2vec_dir / "model.safetensors").stat().st_mtime_ns == before


@pytest.mark.parametrize(
    "extra, model, message",
    [
        ([], "encoder", "is an encoder"),
        (["--attn-implementation", "eager"], "decoder", "eager"),
        (["--set", "pooling=sum"], "decoder", "pooling='sum'; valid"),
        (["--set", "mntp_stepz=3"], "decoder", "mntp_stepz"),
        (["--set", "simcse_extra=no/such/queries.jsonl"], "decoder", "no/such/queries.jsonl"),
        (["--set", "simcse_extra_count=-1"], "decoder", "simcse_extra_count"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(micro_run, tmp_path, capsys, extra, model, message):
    out = tmp_path / "out"
    assert main(["convert", "llm2vec", str(micro_run / model), "--out", str(out), *TINY, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_decoder_without_mask_token_needs_mask_token(micro_run, tmp_path, capsys):
    import shutil

    no_mask = tmp_path / "decoder"
    shutil.copytree(micro_run / "decoder", no_mask)
    cfg = json.loads((no_mask / "tokenizer_config.json").read_text())
    cfg.pop("mask_token", None)
    (no_mask / "tokenizer_config.json").write_text(json.dumps(cfg))
    from transformers import AutoTokenizer

    if AutoTokenizer.from_pretrained(no_mask).mask_token is not None:
        pytest.skip("this tokenizer format keeps its mask token elsewhere")
    out = tmp_path / "out"
    assert main(["convert", "llm2vec", str(no_mask), "--out", str(out), *TINY]) == 2
    assert "no mask token; pass --mask-token" in capsys.readouterr().err
    assert not out.exists()


def test_llm2vec_beats_the_causal_decoder_on_world_retrieval(micro_run, tmp_path):
    """No supervised data, nDCG@10 on the world's retrieval task (all 120 people), the shipped CPU
    recipe (~45 s). Measured: LLM2Vec 0.425 vs causal mean 0.150 and causal last-token 0.039."""
    out = tmp_path / "l2v"
    assert main(["convert", "llm2vec", str(micro_run / "decoder"), "--out", str(out), "--recipe", "llm2vec-cpu",
                 "--set", "eval_people=120"]) == 0
    scores = json.loads((out / "llm2vec.json").read_text())["retrieval_ndcg@10"]
    assert scores["llm2vec"] > scores["causal_mean"] > 0
    assert scores["llm2vec"] > scores["causal_lasttoken"]


@pytest.mark.slow
def test_llm2vec_nano_decoder_beats_it_used_causally(tmp_path):
    """Acceptance as the issue states it: the nano decoder (recipe `nano`, all three phases, ~2.5
    min) made an embedding model with no supervised data beats the same decoder used causally, with
    last-token and with mean pooling, on nDCG@10 of 200 people's world retrieval questions.
    The shipped recipe adds unlabeled questions (random names, no answers) to SimCSE; without them
    this failed (LLM2Vec 0.031 vs last-token 0.038). Measured with them: see the README."""
    from twinlm.recipe import load_recipe
    from twinlm.train.pretrain import pretrain

    run = tmp_path / "nano"
    pretrain(load_recipe("nano"), run, twins=["decoder"])
    out = tmp_path / "l2v"
    assert main(["convert", "llm2vec", str(run / "decoder"), "--out", str(out), "--recipe", "llm2vec-cpu",
                 "--set", "eval_people=200"]) == 0
    scores = json.loads((out / "llm2vec.json").read_text())["retrieval_ndcg@10"]
    assert scores["llm2vec"] > max(scores["causal_mean"], scores["causal_lasttoken"])
