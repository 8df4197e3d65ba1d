"""The retrieval kinds that `twinlm encode` and `twinlm search` serve, in one table.

A saved model's kind comes from the `model_type` sentence-transformers writes into
`config_sentence_transformers.json`. Each kind's functions live in its own module (dense.py,
sparse.py, multivector.py, rerank.py); a new kind adds one row here. Every searcher and
reranker returns `twinlm.finetune.hits.Hit` lists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twinlm.finetune import dense, multivector, rerank, sparse


@dataclass(frozen=True)
class RetrievalKind:
    model_type: str  # sentence-transformers' class name in config_sentence_transformers.json
    load: Callable[[str], Any]
    # (model, texts, batch_size, progress, query) -> vectors
    encode: Callable | None = None
    # vectors -> (tensors for vectors.safetensors, stats for meta.json)
    tensors: Callable | None = None
    # (model, corpus, queries, k, progress) -> one list of hits per query
    search: Callable | None = None
    # (reranker path, corpus, queries, first-stage hits) -> reranked hits
    rerank: Callable | None = None


KINDS: dict[str, RetrievalKind] = {
    "dense": RetrievalKind("SentenceTransformer", dense.load_dense, dense.encode_dense, dense.dense_tensors,
                           dense.search_dense),
    "sparse": RetrievalKind("SparseEncoder", sparse.load_sparse, sparse.encode_sparse, sparse.sparse_tensors,
                            sparse.search_sparse),
    "multivector": RetrievalKind("MultiVectorEncoder", multivector.load_multivector, multivector.encode_multivectors,
                                 multivector.save_multivectors, multivector.search_multivector),
    "rerank": RetrievalKind("CrossEncoder", rerank.load_reranker, rerank=rerank.rerank_hits),
}


def kinds_that(role: str) -> list[str]:
    """The kinds with a function for `role` ("encode", "search", "rerank")."""
    return [name for name, kind in KINDS.items() if getattr(kind, role) is not None]
