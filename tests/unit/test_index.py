"""MaxSim indexes: exhaustive search is exact, the IVF index agrees with it, both reload from disk."""

from __future__ import annotations

import json

import pytest
import torch

from twinlm.errors import UserError
from twinlm.finetune.index import ExhaustiveIndex, IVFIndex, build_index, load_index, recall_against


def _corpus(num_docs: int = 300, dim: int = 16, seed: int = 0):
    """Documents whose tokens come from a few topics each, and queries copied from some documents."""
    g = torch.Generator().manual_seed(seed)
    topics = torch.nn.functional.normalize(torch.randn(40, dim, generator=g), dim=-1)
    docs = []
    for _ in range(num_docs):
        own = topics[torch.randint(0, 40, (3,), generator=g)]
        n = int(torch.randint(4, 12, (1,), generator=g))
        vectors = own[torch.randint(0, 3, (n,), generator=g)] + 0.2 * torch.randn(n, dim, generator=g)
        docs.append(torch.nn.functional.normalize(vectors, dim=-1))
    queries = [d[:3] + 0.05 * torch.randn(min(3, len(d)), dim, generator=g) for d in docs[:40]]
    return [f"d{i}" for i in range(num_docs)], docs, queries


def _brute_force(query: torch.Tensor, docs: list[torch.Tensor]) -> list[float]:
    return [float((query @ d.T).max(dim=1).values.sum()) for d in docs]


def test_exhaustive_matches_brute_force_maxsim():
    ids, docs, queries = _corpus(num_docs=60)
    index = ExhaustiveIndex.build(ids, docs)
    for q in queries[:5]:
        expected = _brute_force(q, docs)
        hits = index.search([q], k=5)[0]
        best = sorted(range(len(docs)), key=lambda i: -expected[i])[:5]
        assert [h.doc_id for h in hits] == [ids[i] for i in best]
        assert [h.score for h in hits] == pytest.approx([expected[i] for i in best], abs=1e-4)


def test_ivf_recall_against_exhaustive_and_reload(tmp_path):
    ids, docs, queries = _corpus()
    exact = ExhaustiveIndex.build(ids, docs).search(queries, k=10)
    ivf = IVFIndex.build(ids, docs, num_centroids=32, nprobe=4, candidates=64)
    approx = ivf.search(queries, k=10)
    assert recall_against(exact, approx) >= 0.9
    # Whatever it returns is scored exactly: the approximate stage only chooses candidates.
    truth = {i: s for i, s in zip(ids, _brute_force(queries[0], docs))}
    assert all(h.score == pytest.approx(truth[h.doc_id], abs=1e-4) for h in approx[0])
    # With every list probed and every candidate kept it is exhaustive search.
    ivf.nprobe, ivf.candidates = 32, len(ids)
    assert recall_against(exact, ivf.search(queries, k=10)) == 1.0

    ivf.save(tmp_path / "ivf")
    meta = json.loads((tmp_path / "ivf" / "index.json").read_text())
    assert meta["kind"] == "ivf" and meta["num_docs"] == len(ids)
    again = load_index(tmp_path / "ivf", nprobe=4, candidates=64)
    assert [[h.doc_id for h in hs] for hs in again.search(queries, k=10)] == [[h.doc_id for h in hs] for hs in approx]


def test_index_errors(tmp_path):
    ids, docs, queries = _corpus(num_docs=10)
    with pytest.raises(UserError, match="valid: exhaustive, ivf"):
        build_index("hnsw", ids, docs)
    with pytest.raises(UserError, match="dimension"):
        ExhaustiveIndex.build(ids, docs).search([torch.randn(3, 8)])
    with pytest.raises(UserError, match="empty corpus"):
        build_index("exhaustive", [], [])
    with pytest.raises(UserError, match="no index.json"):
        load_index(tmp_path)
