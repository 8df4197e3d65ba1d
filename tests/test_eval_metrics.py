"""Ranking metrics and seed summaries against hand-computed values."""

from __future__ import annotations

import math

import pytest

from twinlm.evaluate.metrics import mrr_at_k, ndcg_at_k, ranking_metrics, recall_at_k, summarise


def test_ndcg_mrr_recall_on_a_hand_made_ranking():
    ranking = ["d3", "d1", "d7", "d2"]
    relevant = {"d1": 1, "d2": 1}
    # Relevant at ranks 2 and 4: DCG = 1/log2(3) + 1/log2(5); ideal = 1 + 1/log2(3).
    expected = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(ranking, relevant, 10) == pytest.approx(expected)
    assert mrr_at_k(ranking, relevant, 10) == pytest.approx(0.5)
    assert recall_at_k(ranking, relevant, 3) == pytest.approx(0.5)
    assert recall_at_k(ranking, relevant, 100) == pytest.approx(1.0)
    # Cut-offs: the relevant document past k counts for nothing.
    assert mrr_at_k(ranking, relevant, 1) == 0.0
    assert ndcg_at_k(["d1"], {"d1": 1}, 10) == pytest.approx(1.0)


def test_graded_ndcg_and_mean_over_queries():
    # Grades 2 and 1 in the wrong order: DCG = 1 + 2/log2(3); ideal = 2 + 1/log2(3).
    assert ndcg_at_k(["b", "a"], {"a": 2, "b": 1}) == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))
    out = ranking_metrics({"q1": ["x", "y"], "q2": ["y", "x"]}, {"q1": {"x": 1}, "q2": {"x": 1}})
    assert out["mrr@10"] == pytest.approx(0.75)
    assert out["recall@100"] == pytest.approx(1.0)


def test_summarise_uses_the_sample_standard_deviation():
    s = summarise([1.0, 2.0, 3.0])
    assert s["mean"] == pytest.approx(2.0) and s["std"] == pytest.approx(1.0) and s["seeds"] == [1.0, 2.0, 3.0]
    assert summarise([5.0])["std"] == 0.0
