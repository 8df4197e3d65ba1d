"""What every retrieval kind (dense, sparse, multi-vector, and a reranker over them) returns for a
query: a ranked list of `Hit`s, the one result type of `twinlm search` and of the MaxSim index."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Hit:
    index: int  # position in the searched corpus (or in the index's document list)
    score: float
    doc_id: str | None = None  # the document's id; defaults to str(index) when the corpus has none

    def __post_init__(self) -> None:
        if self.doc_id is None:
            self.doc_id = str(self.index)


def top_hits(scores, k: int, doc_ids: list[str] | None = None) -> list[list[Hit]]:
    """The `k` best of each row of a (queries, documents) score matrix, best first."""
    import torch

    values, indices = torch.topk(scores, min(k, scores.shape[-1]), dim=-1)
    return [[Hit(int(i), float(s), doc_ids[int(i)] if doc_ids is not None else None)
             for i, s in zip(row_i.tolist(), row_s.tolist())] for row_i, row_s in zip(indices, values)]
