"""Retrieval numbers are the libraries' own: the retrieval task's metrics equal sentence-transformers'
InformationRetrievalEvaluator on the same model, and `--mteb` on a local BEIR folder equals
pytrec_eval's graded nDCG on the same embeddings (mteb's convention), which differs from the binary
one where grades differ. The fixture has graded qrels, grade-0 rows, a duplicate document (a
score tie) and a document whose id is a query's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

BEIR = Path(__file__).parents[1] / "data" / "beir_tiny"


@pytest.fixture(scope="module")
def embedder(micro_run):
    from twinlm.evaluate.retrieval import embedding_model

    return embedding_model(str(micro_run / "encoder"), "encoder", 64)


def test_retrieval_task_metrics_are_sentence_transformers_own(embedder):
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    from twinlm.evaluate.retrieval import RetrievalTask, read_beir

    collection = read_beir(BEIR)
    ours = RetrievalTask(collection, [{"anchor": "a", "positive": "b"}], 64).evaluate(embedder)
    relevant = {q: {d for d, r in rel.items() if r > 0} for q, rel in collection["qrels"].items()}
    direct = InformationRetrievalEvaluator(collection["queries"], collection["corpus"], relevant, mrr_at_k=[10],
                                           ndcg_at_k=[10], precision_recall_at_k=[100], write_csv=False)(embedder)
    for metric in ("ndcg@10", "mrr@10", "recall@100"):
        assert ours[metric] == pytest.approx(direct[f"cosine_{metric}"], abs=1e-6), metric
    assert 0 < ours["ndcg@10"] < 1  # a ranking with mistakes: the comparison means something


def _pytrec_ndcg(embedder, folder: Path) -> float:
    """nDCG@10 by hand in mteb's convention: the title and text joined, cosine over every document,
    graded qrels, pytrec_eval's ndcg_cut.10 (its own tie order)."""
    import json

    import pytrec_eval

    from twinlm.evaluate.retrieval import read_qrels

    corpus = [json.loads(x) for x in (folder / "corpus.jsonl").read_text().splitlines()]
    queries = [json.loads(x) for x in (folder / "queries.jsonl").read_text().splitlines()]
    qrels = read_qrels(folder / "qrels" / "test.tsv")
    queries = [q for q in queries if q["_id"] in qrels]
    docs = embedder.encode([(d["title"] + " " + d["text"]).strip() for d in corpus], convert_to_tensor=True)
    qs = embedder.encode([q["text"] for q in queries], convert_to_tensor=True)
    scores = torch.nn.functional.normalize(qs, dim=-1) @ torch.nn.functional.normalize(docs, dim=-1).T
    run = {q["_id"]: {d["_id"]: float(s) for d, s in zip(corpus, row)} for q, row in zip(queries, scores)}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    return sum(v["ndcg_cut_10"] for v in per_query.values()) / len(per_query)


def test_mteb_on_a_local_folder_is_graded_pytrec_eval(embedder):
    from twinlm.evaluate.benchmarks import load_mteb_tasks
    from twinlm.evaluate.mteb_local import evaluate
    from twinlm.evaluate.retrieval import read_beir, st_retrieval_metrics

    tasks = load_mteb_tasks([str(BEIR)])
    got = evaluate(embedder, tasks)["beir_tiny"]
    assert got["n"] == 30 and got["main_metric"] == "ndcg_at_10" and got["main_score"] == got["ndcg@10"]
    assert got["ndcg@10"] == pytest.approx(_pytrec_ndcg(embedder, BEIR), abs=1e-4)
    # Graded relevance (grades 3 and 1 here) is where MTEB and sentence-transformers part ways.
    binary = st_retrieval_metrics(embedder, read_beir(BEIR))["ndcg@10"]
    assert abs(got["ndcg@10"] - binary) > 1e-3  # well outside the 1e-4 parity tolerance above
