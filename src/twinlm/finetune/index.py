"""MaxSim (late-interaction) indexes over multi-vector document embeddings.

Two kinds, one interface (`add`-free: built from all documents at once, then `search`, `save`,
`load_index`):

- `ExhaustiveIndex`: exact MaxSim of every query against every document. Right for corpora up to
  some 10^5 documents on a CPU, and the reference the approximate index is measured against.
- `IVFIndex`: a PLAID-style pipeline. Document token vectors are clustered with faiss k-means;
  each token keeps its centroid id (its "code"). A query (1) probes the `nprobe` nearest centroids
  of each of its tokens to collect candidate documents from inverted lists, (2) ranks candidates
  by an approximate MaxSim in which every document token is replaced by its centroid, and (3)
  re-scores the best `candidates` of them with exact MaxSim on the stored vectors. Unlike PLAID
  the full vectors are kept (no residual compression): exactness of the last stage over size.

Storage: `index.safetensors` (tensors) and `index.json` (kind, document ids, parameters). No pickle.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from twinlm.errors import UserError
from twinlm.finetune.hits import Hit
from twinlm.world.generator import WorldConfig, build_world, retrieval_task

INDEX_KINDS = ("exhaustive", "ivf")
_CHUNK_ELEMENTS = 16_000_000  # query tokens x document tokens per scoring chunk (~64 MB fp32)


def pack_vectors(doc_embeddings: Sequence[torch.Tensor | np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Variable-length (tokens, dim) matrices -> one (total_tokens, dim) matrix + (num_docs + 1,) offsets."""
    mats = [torch.as_tensor(np.asarray(e) if not isinstance(e, torch.Tensor) else e).float().cpu() for e in doc_embeddings]
    if not mats:
        raise UserError("cannot build an index over an empty corpus")
    lengths = torch.tensor([0] + [m.shape[0] for m in mats])
    if (lengths[1:] == 0).any():
        raise UserError("a document has no token vectors (empty text?); drop it before indexing")
    return torch.cat(mats), torch.cumsum(lengths, 0)


def _maxsim_packed(query: torch.Tensor, vectors: torch.Tensor, owner: torch.Tensor, num_docs: int) -> torch.Tensor:
    """Exact MaxSim of one query (q_tokens, dim) against packed document tokens.

    `owner[t]` is the (local) document index of token t. Tokens are scored in chunks so memory
    stays bounded whatever the corpus size; a per-document max is a scatter-reduce.
    """
    best = torch.full((query.shape[0], num_docs), -math.inf)
    step = max(1, _CHUNK_ELEMENTS // max(1, query.shape[0]))
    for start in range(0, vectors.shape[0], step):
        sims = query @ vectors[start : start + step].T
        idx = owner[start : start + step].expand(query.shape[0], -1)
        best.scatter_reduce_(1, idx, sims, reduce="amax")
    return best.sum(0)


def _as_query(query: torch.Tensor | np.ndarray) -> torch.Tensor:
    q = torch.as_tensor(np.asarray(query) if not isinstance(query, torch.Tensor) else query).float().cpu()
    if q.ndim != 2:
        raise UserError(f"a multi-vector query must be a (tokens, dim) matrix, got shape {tuple(q.shape)}")
    return q


class ExhaustiveIndex:
    kind = "exhaustive"

    def __init__(self, doc_ids: list[str], vectors: torch.Tensor, offsets: torch.Tensor) -> None:
        self.doc_ids, self.vectors, self.offsets = list(doc_ids), vectors, offsets
        self.owner = torch.repeat_interleave(torch.arange(len(doc_ids)), offsets.diff())

    @classmethod
    def build(cls, doc_ids: list[str], doc_embeddings: Sequence[torch.Tensor | np.ndarray]) -> ExhaustiveIndex:
        if len(doc_ids) != len(doc_embeddings):
            raise UserError(f"{len(doc_ids)} document ids for {len(doc_embeddings)} embeddings")
        vectors, offsets = pack_vectors(doc_embeddings)
        return cls(doc_ids, vectors, offsets)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def scores(self, query: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Exact MaxSim of `query` against every document, in `doc_ids` order."""
        return _maxsim_packed(self._check(query), self.vectors, self.owner, len(self.doc_ids))

    def search(self, queries: Sequence[torch.Tensor | np.ndarray], k: int = 10) -> list[list[Hit]]:
        return [_top(self.doc_ids, self.scores(q), None, k) for q in queries]

    def _check(self, query: torch.Tensor | np.ndarray) -> torch.Tensor:
        q = _as_query(query)
        if q.shape[1] != self.dim:
            raise UserError(f"query vectors have dimension {q.shape[1]}, the index {self.dim}: same model?")
        return q

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"vectors": self.vectors.contiguous(), "offsets": self.offsets}

    def _params(self) -> dict:
        return {}

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(self._tensors(), str(folder / "index.safetensors"))
        meta = {"kind": self.kind, "num_docs": len(self.doc_ids), "dim": self.dim, **self._params(), "doc_ids": self.doc_ids}
        (folder / "index.json").write_text(json.dumps(meta))
        return folder


class IVFIndex(ExhaustiveIndex):
    kind = "ivf"

    def __init__(
        self,
        doc_ids: list[str],
        vectors: torch.Tensor,
        offsets: torch.Tensor,
        centroids: torch.Tensor,
        codes: torch.Tensor,
        nprobe: int = 4,
        candidates: int = 256,
    ) -> None:
        super().__init__(doc_ids, vectors, offsets)
        self.centroids, self.codes = centroids, codes
        self.nprobe, self.candidates = nprobe, candidates
        # Inverted lists: for each centroid, the distinct documents that own a token assigned to it.
        pairs = torch.unique(codes * len(doc_ids) + self.owner)
        list_of, doc_of = pairs // len(doc_ids), pairs % len(doc_ids)
        self.list_offsets = torch.cumsum(torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(list_of, minlength=len(centroids))]), 0)
        self.list_docs = doc_of

    @classmethod
    def build(  # type: ignore[override]
        cls,
        doc_ids: list[str],
        doc_embeddings: Sequence[torch.Tensor | np.ndarray],
        num_centroids: int | None = None,
        nprobe: int = 4,
        candidates: int = 256,
        seed: int = 0,
        max_train_points: int = 256 * 1024,
    ) -> IVFIndex:
        import faiss

        if len(doc_ids) != len(doc_embeddings):
            raise UserError(f"{len(doc_ids)} document ids for {len(doc_embeddings)} embeddings")
        vectors, offsets = pack_vectors(doc_embeddings)
        n = vectors.shape[0]
        # PLAID's rule of thumb: 16 x sqrt(token count) centroids; 4 x here, since k-means on a
        # CPU is the slow part of building and recall held up when measured (docs/results.md).
        k = num_centroids or 2 ** int(round(math.log2(4 * math.sqrt(n))))
        k = max(1, min(k, n))
        data = vectors.numpy()
        if n > max_train_points:
            data = data[np.random.default_rng(seed).choice(n, max_train_points, replace=False)]
        kmeans = faiss.Kmeans(vectors.shape[1], k, niter=20, seed=seed, spherical=True, verbose=False,
                              max_points_per_centroid=max(256, math.ceil(len(data) / k)))
        kmeans.train(np.ascontiguousarray(data))
        centroids = torch.from_numpy(kmeans.centroids.copy())
        _, assign = kmeans.index.search(np.ascontiguousarray(vectors.numpy()), 1)
        return cls(doc_ids, vectors, offsets, centroids, torch.from_numpy(assign[:, 0]).long(), nprobe, candidates)

    def search(self, queries: Sequence[torch.Tensor | np.ndarray], k: int = 10) -> list[list[Hit]]:
        return [self._search_one(self._check(q), k) for q in queries]

    def _search_one(self, q: torch.Tensor, k: int) -> list[Hit]:
        centroid_sims = q @ self.centroids.T  # (q_tokens, num_centroids)
        probe = centroid_sims.topk(min(self.nprobe, len(self.centroids)), dim=1).indices.unique()
        cand = torch.cat([self.list_docs[self.list_offsets[c] : self.list_offsets[c + 1]] for c in probe.tolist()]).unique()
        if len(cand) > self.candidates:
            cand = cand[self._approximate(centroid_sims, cand).topk(self.candidates).indices]
        token_idx, local_owner = self._tokens_of(cand)
        exact = _maxsim_packed(q, self.vectors[token_idx], local_owner, len(cand))
        return _top(self.doc_ids, exact, cand, k)

    def _tokens_of(self, docs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        starts, lengths = self.offsets[docs], self.offsets[docs + 1] - self.offsets[docs]
        local_owner = torch.repeat_interleave(torch.arange(len(docs)), lengths)
        within = torch.arange(int(lengths.sum())) - torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
        return torch.repeat_interleave(starts, lengths) + within, local_owner

    def _approximate(self, centroid_sims: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
        """MaxSim with every document token replaced by its centroid (PLAID's centroid interaction)."""
        token_idx, local_owner = self._tokens_of(docs)
        sims = centroid_sims[:, self.codes[token_idx]]
        best = torch.full((centroid_sims.shape[0], len(docs)), -math.inf)
        best.scatter_reduce_(1, local_owner.expand(centroid_sims.shape[0], -1), sims, reduce="amax")
        return best.sum(0)

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {**super()._tensors(), "centroids": self.centroids.contiguous(), "codes": self.codes}

    def _params(self) -> dict:
        return {"num_centroids": len(self.centroids), "nprobe": self.nprobe, "candidates": self.candidates}


def _top(doc_ids: list[str], scores: torch.Tensor, docs: torch.Tensor | None, k: int) -> list[Hit]:
    top = scores.topk(min(k, len(scores)))
    picked = top.indices if docs is None else docs[top.indices]
    return [Hit(i, float(s), doc_ids[i]) for i, s in zip(picked.tolist(), top.values.tolist())]


def build_index(
    kind: str, doc_ids: list[str], doc_embeddings: Sequence[torch.Tensor | np.ndarray], **options
) -> ExhaustiveIndex:
    if kind == "exhaustive":
        if options:
            raise UserError(f"the exhaustive index takes no options, got {', '.join(options)}")
        return ExhaustiveIndex.build(doc_ids, doc_embeddings)
    if kind == "ivf":
        return IVFIndex.build(doc_ids, doc_embeddings, **options)
    raise UserError(f"unknown index kind {kind!r}; valid: {', '.join(INDEX_KINDS)}")


def load_index(folder: str | Path, nprobe: int | None = None, candidates: int | None = None) -> ExhaustiveIndex:
    folder = Path(folder)
    if (folder / "meta.json").is_file() and (folder / "ids.json").is_file():  # a `twinlm encode` folder
        t = load_file(str(folder / "vectors.safetensors"))
        return ExhaustiveIndex(json.loads((folder / "ids.json").read_text()), t["vectors"], t["offsets"])
    if not (folder / "index.json").is_file():
        raise UserError(f"{folder} is not a twinlm MaxSim index (no index.json); build one with `twinlm encode`")
    meta = json.loads((folder / "index.json").read_text())
    t = load_file(str(folder / "index.safetensors"))
    if meta["kind"] == "exhaustive":
        return ExhaustiveIndex(meta["doc_ids"], t["vectors"], t["offsets"])
    return IVFIndex(meta["doc_ids"], t["vectors"], t["offsets"], t["centroids"], t["codes"],
                    nprobe or meta["nprobe"], candidates or meta["candidates"])


def recall_against(exact: list[list[Hit]], approx: list[list[Hit]], k: int = 10) -> float:
    """Mean share of the exact top-k that the approximate search also returns in its top-k."""
    shares = [
        len({h.doc_id for h in e[:k]} & {h.doc_id for h in a[:k]}) / max(1, len(e[:k])) for e, a in zip(exact, approx)
    ]
    return float(np.mean(shares)) if shares else 0.0


def main(argv: list[str] | None = None) -> None:
    """Recall@10 of the IVF index against exhaustive MaxSim on a built-in world corpus:
    `python -m twinlm.finetune.index MODEL [--people N] [--queries Q] [--nprobe P] [--candidates C]`."""
    import argparse
    import time

    from sentence_transformers import MultiVectorEncoder

    p = argparse.ArgumentParser(prog="python -m twinlm.finetune.index", description=main.__doc__)
    p.add_argument("model", help="a multi-vector model folder (`twinlm finetune multivector` output)")
    p.add_argument("--people", type=int, default=2000, help="corpus size: one passage per person of a fresh world")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--nprobe", type=int, default=4)
    p.add_argument("--candidates", type=int, default=256)
    p.add_argument("--centroids", type=int, default=None)
    args = p.parse_args(argv)
    world = build_world(WorldConfig(num_people=args.people, seed=1))
    task = retrieval_task(world, world.people)
    model = MultiVectorEncoder(args.model)
    ids = list(task["corpus"])
    docs = model.encode_document([task["corpus"][i] for i in ids], convert_to_numpy=True)
    queries = model.encode_query(list(task["queries"].values())[: args.queries], convert_to_numpy=True)
    exact = ExhaustiveIndex.build(ids, docs)
    t = time.perf_counter()
    ivf = IVFIndex.build(ids, docs, num_centroids=args.centroids, nprobe=args.nprobe, candidates=args.candidates)
    built = time.perf_counter() - t
    t = time.perf_counter()
    truth = exact.search(queries, 10)
    t_exact = time.perf_counter() - t
    t = time.perf_counter()
    approx = ivf.search(queries, 10)
    t_ivf = time.perf_counter() - t
    print(f"{len(ids)} documents, {exact.vectors.shape[0]} token vectors, {len(ivf.centroids)} centroids "
          f"(k-means {built:.1f} s); nprobe {args.nprobe}, candidates {args.candidates}")
    print(f"recall@10 vs exhaustive: {recall_against(truth, approx):.3f}; "
          f"search {1000 * t_ivf / len(queries):.1f} ms/query (exhaustive {1000 * t_exact / len(queries):.1f} ms/query)")


if __name__ == "__main__":
    main()
