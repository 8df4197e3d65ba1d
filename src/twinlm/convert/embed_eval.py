"""Zero-shot retrieval check for embedding models on the built-in world (no supervised data).

Used to show what LLM2Vec buys: the same decoder used causally with last-token or mean pooling
against its bidirectional, MNTP + SimCSE-trained version, on nDCG@10 of the world's retrieval
task (questions about one fact of a person -> the person's passage, a rendering pretraining
never saw verbatim). Scored with sentence-transformers' `InformationRetrievalEvaluator`.
"""

from __future__ import annotations

from pathlib import Path

from twinlm.convert.simcse import embedding_model
from twinlm.world.generator import retrieval_task


def world_retrieval_ndcg(model, world, max_people: int | None = None, seed: int = 0) -> float:
    """nDCG@10 (cosine) of a SentenceTransformer on the world's retrieval task."""
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    people = world.people[:max_people] if max_people else world.people
    task = retrieval_task(world, people, seed=seed)
    evaluator = InformationRetrievalEvaluator(
        queries=task["queries"], corpus=task["corpus"],
        relevant_docs={q: set(d) for q, d in task["qrels"].items()},
        ndcg_at_k=[10], mrr_at_k=[10], accuracy_at_k=[1], precision_recall_at_k=[10], map_at_k=[10],
        write_csv=False, batch_size=32, score_functions=None, name="world",
    )
    scores = evaluator(model)
    key = next(k for k in scores if k.endswith("ndcg@10"))
    return float(scores[key])


def causal_baselines(decoder_dir: str | Path, world, max_people: int | None = None,
                     max_length: int = 256) -> dict[str, float]:
    """nDCG@10 of the plain (causal) decoder with last-token and with mean pooling."""
    out = {}
    for pooling in ("lasttoken", "mean"):
        model = embedding_model(decoder_dir, pooling=pooling, max_length=max_length)
        model.eval()
        out[f"causal_{pooling}"] = world_retrieval_ndcg(model, world, max_people)
    return out
