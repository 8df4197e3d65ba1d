"""Ranking metrics (nDCG@k, MRR@k, Recall@k) and mean/std summaries over seeds."""

from __future__ import annotations

import math
import statistics


def ndcg_at_k(ranking: list[str], relevant: dict[str, int], k: int = 10) -> float:
    """Normalised discounted cumulative gain of one query (graded relevance, linear gain as in
    BEIR/pytrec_eval): sum rel_i / log2(i + 1) over the top k, divided by the ideal ordering's."""
    dcg = sum(relevant.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranking[:k]))
    ideal = sorted((r for r in relevant.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mrr_at_k(ranking: list[str], relevant: dict[str, int], k: int = 10) -> float:
    """Reciprocal rank of the first relevant document within the top k, else 0."""
    for i, doc in enumerate(ranking[:k]):
        if relevant.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def recall_at_k(ranking: list[str], relevant: dict[str, int], k: int = 100) -> float:
    wanted = {d for d, r in relevant.items() if r > 0}
    if not wanted:
        return 0.0
    return len(wanted & set(ranking[:k])) / len(wanted)


def ranking_metrics(rankings: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Mean nDCG@10, MRR@10 and Recall@100 over the queries that have relevance judgements."""
    qids = [q for q in rankings if any(r > 0 for r in qrels.get(q, {}).values())]
    if not qids:
        return {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@100": 0.0}
    return {
        "ndcg@10": sum(ndcg_at_k(rankings[q], qrels[q], 10) for q in qids) / len(qids),
        "mrr@10": sum(mrr_at_k(rankings[q], qrels[q], 10) for q in qids) / len(qids),
        "recall@100": sum(recall_at_k(rankings[q], qrels[q], 100) for q in qids) / len(qids),
    }


def summarise(values: list[float]) -> dict:
    """{"mean", "std", "seeds"}; std is the sample standard deviation (0 for a single seed)."""
    clean = [float(v) for v in values]
    return {
        "mean": statistics.fmean(clean) if clean else float("nan"),
        "std": statistics.stdev(clean) if len(clean) > 1 else 0.0,
        "seeds": clean,
    }
