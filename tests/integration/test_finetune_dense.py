"""Dense fine-tuning: a micro encoder twin learns the world's retrieval task; the saved
SentenceTransformer reloads without twinlm and reproduces its scores."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from twinlm.cli import main
from twinlm.finetune.data import world_for, world_retrieval_eval, write_beir

HELDOUT = 0.5  # 60 evaluation questions on the 120-person micro world: a less noisy nDCG

RELOAD = """
import sys, json
sys.modules['twinlm'] = None  # the model must load with sentence-transformers alone
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
task = json.load(open(sys.argv[2]))
model = SentenceTransformer(sys.argv[1])
ev = InformationRetrievalEvaluator(task['queries'], task['corpus'], {q: set(d) for q, d in task['qrels'].items()},
                                   ndcg_at_k=[10], mrr_at_k=[10], precision_recall_at_k=[10, 100], name='eval')
scores = ev(model)
print(json.dumps({'ndcg@10': scores['eval_cosine_ndcg@10'], 'pooling': model[1].pooling_mode}))
"""


@pytest.fixture(scope="module")
def dense_run(micro_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("dense") / "model"
    code = main(["finetune", "dense", "--base", str(micro_run / "encoder"), "--out", str(out), "--epochs", "3",
                 "--lr", "2e-3", "--set", f"world_heldout={HELDOUT}",
                 "--set", "dense.matryoshka_dims=[32]"])
    assert code == 0
    return out


def test_dense_improves_ndcg_and_reloads_without_twinlm(dense_run, micro_run, tmp_path):
    results = json.loads((dense_run / "twinlm-finetune.json").read_text())
    assert results["after"]["ndcg@10"] > results["before"]["ndcg@10"]
    assert "twinlm fine-tuning" in (dense_run / "README.md").read_text()
    task = world_retrieval_eval(world_for(None, str(micro_run / "encoder"), HELDOUT))
    (tmp_path / "task.json").write_text(json.dumps(task))
    proc = subprocess.run([sys.executable, "-c", RELOAD, str(dense_run), str(tmp_path / "task.json")],
                          capture_output=True, text=True, check=True)
    reloaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert reloaded["pooling"] == "mean"
    assert reloaded["ndcg@10"] == pytest.approx(results["after"]["ndcg@10"], abs=1e-6)


def test_beir_eval_folder_gives_the_same_scores(dense_run, micro_run, tmp_path):
    from sentence_transformers import SentenceTransformer

    from twinlm.finetune.base import ir_evaluator, ir_scores
    from twinlm.finetune.data import load_beir

    task = world_retrieval_eval(world_for(None, str(micro_run / "encoder"), HELDOUT))
    folder = write_beir(task, tmp_path / "beir")
    scores = ir_scores(ir_evaluator(load_beir(folder)), SentenceTransformer(str(dense_run)))
    recorded = json.loads((dense_run / "twinlm-finetune.json").read_text())["after"]
    assert scores["ndcg@10"] == pytest.approx(recorded["ndcg@10"], abs=1e-6)


def test_decoder_gets_last_token_pooling_and_optional_bidirectional(micro_run):
    from twinlm.finetune.base import inspect_base
    from twinlm.finetune.dense import build_model
    from twinlm.finetune.recipe import load_finetune_recipe

    base = inspect_base(str(micro_run / "decoder"))
    assert base.family == "decoder" and inspect_base(str(micro_run / "encoder")).family == "encoder"
    recipe = load_finetune_recipe(None, "dense", ["dense.bidirectional=true"], {"base_model": base.name})
    model = build_model(base, recipe, "auto")
    assert model[1].pooling_mode == "lasttoken"
    assert model[0].auto_model.config.is_causal is False
    a, b = model.encode(["Where was Anna born?", "Where was Anna born? In Paris."])
    assert abs(a - b).max() > 0  # the last token differs, so the embeddings do


def test_multi_dataset_with_a_loss_per_dataset(micro_run, tmp_path):
    import datasets

    from twinlm.finetune.data import world_table
    from twinlm.finetune.dense import LOSSES
    from twinlm.finetune.dense import finetune as dense_finetune

    world = world_for(None, str(micro_run / "encoder"))
    triplets = world_table(world, LOSSES["MultipleNegativesRankingLoss"][0]).select(range(32))
    pairs = world_table(world, LOSSES["CoSENTLoss"][0]).select(range(32))
    triplets.to_json(tmp_path / "triplets.jsonl")
    datasets.Dataset.from_dict({"q": pairs["sentence1"], "p": pairs["sentence2"], "score": pairs["score"]}).to_json(
        tmp_path / "scored.jsonl")
    from twinlm.finetune.recipe import finetune_recipe_from_dict

    recipe = finetune_recipe_from_dict({
        "kind": "dense", "base_model": str(micro_run / "encoder"),
        "datasets": [
            {"name": "triplets", "source": str(tmp_path / "triplets.jsonl"), "loss": "MultipleNegativesRankingLoss"},
            {"name": "scored", "source": str(tmp_path / "scored.jsonl"), "loss": "CoSENTLoss",
             "columns": {"sentence1": "q", "sentence2": "p"}},
        ],
        "dense": {"sampling": "round_robin"},
        "training": {"max_steps": 2, "batch_size": 8},
    })
    result = dense_finetune(recipe, tmp_path / "multi")
    assert (tmp_path / "multi" / "model.safetensors").is_file()
    assert result.train_loss is not None and result.train_loss > 0
