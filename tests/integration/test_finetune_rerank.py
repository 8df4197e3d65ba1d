"""Reranker fine-tuning: training helps nDCG@10 of the reranked candidates, the model reloads without
twinlm, mining feeds it hard negatives, retrieve-then-rerank search works, bad input fails early."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from twinlm.errors import UserError
from twinlm.finetune.recipe import load_finetune_recipe


@pytest.fixture(scope="module")
def reranker(micro_run, tmp_path_factory):
    from twinlm.finetune import rerank

    out = tmp_path_factory.mktemp("rr") / "reranker"
    recipe = load_finetune_recipe(None, "rerank", ["training.max_steps=8"], {"base_model": str(micro_run / "encoder")})
    return rerank.finetune(recipe, out)


@pytest.mark.slow  # 53-79 s on 2 cores: the default suite stays near its 8-minute budget
def test_training_improves_reranking(micro_run, tmp_path):
    """Acceptance, with the shipped recipe (1000 steps, ~45 s): the loss sits at the constant
    predictor's value for ~600 steps, then the cross-encoder learns to match names. On the micro
    twin pretrained with documents kept apart the gain is small: nDCG@10 0.160 -> 0.175 (lr 1e-3:
    0.179; 1500 steps overshoot to 0.082; lr 5e-4: 0.134), where the earlier twin gave 0.190 -> 0.290."""
    from twinlm.finetune import rerank

    recipe = load_finetune_recipe(None, "rerank", ["world_heldout=0.5"], {"base_model": str(micro_run / "encoder")})
    result = rerank.finetune(recipe, tmp_path / "reranker")
    assert result.after["ndcg@10"] > result.before["ndcg@10"] + 0.01
    assert result.after["mrr@10"] > result.before["mrr@10"]


def test_world_rows_cover_every_question_with_other_peoples_negatives(micro_world):
    from twinlm.finetune import rerank
    from twinlm.world.vocab import QUESTIONS

    recipe = load_finetune_recipe(None, "rerank", [], {"base_model": "unused"})
    table = rerank.training_rows(recipe, lambda: micro_world)
    train_people, _ = micro_world.split()
    positives = [r for r in table if r["label"] == 1.0]
    assert len(positives) == len(train_people) * len(QUESTIONS)
    assert len(table) == len(positives) * (1 + recipe.mining.num_negatives)
    names = {p.name for p in micro_world.people}
    for row in table:
        asked = next(n for n in names if n in row["query"])
        # a negative never renders the person asked about (both renderings count as positives)
        assert (asked in row["document"]) == (row["label"] == 1.0)


def test_reranker_reports_and_reloads_without_twinlm(reranker, micro_world):
    assert set(reranker.after) == {"ndcg@10", "mrr@10", "map"}
    assert all(0.0 <= v <= 1.0 for v in reranker.after.values())
    from sentence_transformers import CrossEncoder

    pairs = [[f"Where was {p.name} born?", micro_world.biography(q, 2)]
             for p in micro_world.people[:2] for q in micro_world.people[:2]]
    expected = CrossEncoder(str(reranker.out)).predict(pairs).tolist()
    code = f"""
import sys, json
sys.modules['twinlm'] = None
from sentence_transformers import CrossEncoder
print(json.dumps(CrossEncoder({str(reranker.out)!r}).predict(json.loads({json.dumps(json.dumps(pairs))})).tolist()))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(run.stdout.strip().splitlines()[-1]) == pytest.approx(expected, abs=1e-4)


def test_retrieve_then_rerank(reranker, micro_world):
    from twinlm.finetune.hits import Hit
    from twinlm.finetune.kinds import KINDS
    from twinlm.finetune.rerank import rerank_hits

    assert KINDS["rerank"].rerank is rerank_hits
    corpus = [micro_world.biography(p, 2) for p in micro_world.people[:6]]
    first = [[Hit(i, 0.0) for i in range(6)]]
    out = rerank_hits(str(reranker.out), corpus, [f"Where was {micro_world.people[3].name} born?"], first)
    assert sorted(h.index for h in out[0]) == list(range(6))
    assert [h.score for h in out[0]] == sorted((h.score for h in out[0]), reverse=True)


def test_mining_and_listwise_and_distillation_losses_train(micro_run, micro_world, tmp_path):
    from twinlm.finetune import rerank

    base = {"base_model": str(micro_run / "encoder")}
    mined = load_finetune_recipe(None, "rerank", ["training.max_steps=2", "max_rows=24",
                                                  f"mining.model={micro_run / 'encoder'}"], base)
    table = rerank.training_rows(mined, lambda: micro_world)
    assert table.column_names == ["query", "document", "label"]
    for query in set(table["query"]):  # exactly one positive per query, the mined rest negatives
        assert sum(lab for q, lab in zip(table["query"], table["label"]) if q == query) == 1
    for loss in ("ListNetLoss", "MSELoss"):
        recipe = load_finetune_recipe(None, "rerank", [f"loss={loss}", "training.max_steps=2", "max_rows=16"], base)
        result = rerank.finetune(recipe, tmp_path / loss)
        assert result.train_loss is not None and (tmp_path / loss / "model.safetensors").is_file()


def test_bad_input_fails_before_training(micro_run, tmp_path):
    from twinlm.cli import main

    base = str(micro_run / "encoder")
    assert main(["finetune", "rerank", "--base", base, "--loss", "SpladeLoss", "--out", str(tmp_path / "a")]) == 2
    (tmp_path / "pairs.jsonl").write_text('{"question": "q", "passage": "p", "label": 1}\n')
    with pytest.raises(UserError, match="needs columns query, document, label"):
        from twinlm.finetune import rerank

        rerank.finetune(load_finetune_recipe(None, "rerank", [], {"base_model": base, "train_data": str(tmp_path / "pairs.jsonl")}),
                        tmp_path / "b")
    with pytest.raises(UserError, match="rerank.top_k"):
        load_finetune_recipe(None, "rerank", ["rerank.top_k=1"], {"base_model": base})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
