"""Using fine-tuned models: embed a corpus (`twinlm encode`) and search it (`twinlm search`).

A saved model's kind comes from the `model_type` sentence-transformers writes into
`config_sentence_transformers.json`. Each kind has one loader, one encoder and one searcher in
the tables at the bottom; a new kind adds its three functions there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twinlm.errors import UserError

MODEL_TYPES = {"SentenceTransformer": "dense", "SparseEncoder": "sparse",
               "MultiVectorEncoder": "multivector", "CrossEncoder": "rerank"}
VECTORS_FILE = "vectors.safetensors"


@dataclass
class Hit:
    index: int  # position in the corpus
    score: float


def model_kind(path: str | Path) -> str:
    """dense | sparse | multivector | rerank, from a saved sentence-transformers folder."""
    folder = Path(path)
    config = folder / "config_sentence_transformers.json"
    if not folder.is_dir():
        raise UserError(f"no model folder {str(path)!r}")
    if not config.is_file():
        raise UserError(f"{path} is not a sentence-transformers model folder (no config_sentence_transformers.json); "
                        "fine-tune one with `twinlm finetune dense|sparse|multivector|rerank`")
    model_type = json.loads(config.read_text()).get("model_type", "SentenceTransformer")
    if model_type not in MODEL_TYPES:
        raise UserError(f"{path}: unsupported model type {model_type!r}; supported: {', '.join(MODEL_TYPES)}")
    return MODEL_TYPES[model_type]


def load_model(path: str | Path, kind: str | None = None):
    kind = kind or model_kind(path)
    if kind not in LOADERS:
        raise UserError(f"{kind} models are not supported here yet; supported: {', '.join(LOADERS)}")
    return LOADERS[kind](str(path))


# ---- corpus files ------------------------------------------------------------------------------


def read_corpus(path: str | Path, text_column: str = "text") -> tuple[list[str], list[str]]:
    """(ids, texts) from a .txt file (one text per non-empty line, ids are line numbers) or a
    jsonl/json/csv/tsv/parquet table with a text column and optional `_id`/`id` column (a BEIR
    corpus.jsonl works as is; its title is prefixed to the text)."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"no corpus file {str(path)!r}")
    if file.suffix.lower() in (".txt", ".text", ".md"):
        lines = [line.strip() for line in file.read_text().splitlines()]
        pairs = [(str(i), t) for i, t in enumerate(lines) if t]
    else:
        from twinlm.finetune.data import load_table

        table = load_table(str(file))
        if text_column not in table.column_names:
            raise UserError(f"{path} has no column {text_column!r} (columns: {', '.join(table.column_names)}); "
                            "choose one with --text-column")
        id_col = next((c for c in ("_id", "id") if c in table.column_names), None)
        ids = [str(v) for v in table[id_col]] if id_col else [str(i) for i in range(len(table))]
        titles = table["title"] if "title" in table.column_names else [""] * len(table)
        pairs = [(i, f"{t} {x}".strip() if t else x) for i, t, x in zip(ids, titles, table[text_column]) if x]
    if not pairs:
        raise UserError(f"corpus {path} holds no text")
    return [p[0] for p in pairs], [p[1] for p in pairs]


# ---- encoding ----------------------------------------------------------------------------------


def encode_dense(model, texts: list[str], batch_size: int = 32, progress: bool = True, query: bool = False):
    fn = model.encode_query if query else model.encode_document
    return fn(texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=progress).cpu()


def encode_sparse(model, texts: list[str], batch_size: int = 32, progress: bool = True, query: bool = False):
    fn = model.encode_query if query else model.encode_document
    return fn(texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=progress).cpu().coalesce()


def save_vectors(out: Path, kind: str, ids: list[str], vectors, meta: dict[str, Any]) -> dict[str, Any]:
    """Write `vectors.safetensors` (dense: `embeddings` [n, d]; sparse: COO `indices` [2, nnz],
    `values` [nnz], `shape` [2]) plus `ids.json` and `meta.json` into `out`."""
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    if kind == "sparse":
        tensors = {"indices": vectors.indices().contiguous(), "values": vectors.values().contiguous(),
                   "shape": torch.tensor(list(vectors.shape))}
        stats = {"dimensions": int(vectors.shape[1]), "active_dims_mean": vectors.values().numel() / max(1, len(ids))}
    elif kind == "dense":
        tensors = {"embeddings": vectors.contiguous()}
        stats = {"dimensions": int(vectors.shape[1])}
    else:
        tensors, stats = SAVERS[kind](vectors)
    save_file(tensors, str(out / VECTORS_FILE))
    (out / "ids.json").write_text(json.dumps(ids))
    meta = {**meta, "kind": kind, "count": len(ids), **stats}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


# ---- search ------------------------------------------------------------------------------------


def _top_k(scores, k: int) -> list[list[Hit]]:
    import torch

    k = min(k, scores.shape[1])
    values, indices = torch.topk(scores, k, dim=1)
    return [[Hit(int(i), float(s)) for i, s in zip(row_i, row_s)] for row_i, row_s in zip(indices, values)]


def search_dense(model, corpus: list[str], queries: list[str], k: int = 10, progress: bool = True) -> list[list[Hit]]:
    docs = encode_dense(model, corpus, progress=progress)
    q = encode_dense(model, queries, progress=False, query=True)
    return _top_k(model.similarity(q, docs), k)


def search_sparse(model, corpus: list[str], queries: list[str], k: int = 10, progress: bool = True) -> list[list[Hit]]:
    docs = encode_sparse(model, corpus, progress=progress)
    q = encode_sparse(model, queries, progress=False, query=True)
    scores = model.similarity(q, docs)
    return _top_k(scores.to_dense() if scores.is_sparse else scores, k)


def search(model_path: str, corpus: list[str], queries: list[str], k: int = 10, progress: bool = True):
    kind = model_kind(model_path)
    if kind not in SEARCHERS:
        raise UserError(f"{model_path} is a {kind} model; search supports {', '.join(SEARCHERS)} models"
                        + (" (use a rerank model with --reranker)" if kind == "rerank" else ""))
    return SEARCHERS[kind](load_model(model_path, kind), corpus, queries, k, progress)


def _load_dense(path: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path)


def _load_sparse(path: str):
    from sentence_transformers import SparseEncoder

    return SparseEncoder(path)


LOADERS: dict[str, Callable] = {"dense": _load_dense, "sparse": _load_sparse}
ENCODERS: dict[str, Callable] = {"dense": encode_dense, "sparse": encode_sparse}
SEARCHERS: dict[str, Callable] = {"dense": search_dense, "sparse": search_sparse}
# kind -> (reranker path, corpus, queries, first-stage hits) -> reranked hits
RERANKERS: dict[str, Callable] = {}
SAVERS: dict[str, Callable] = {}  # kind -> vectors -> (tensors, stats), for kinds other than dense/sparse

# Multi-vector and rerank kinds (twinlm.finetune.multivector / .rerank), registered here so the
# commands find them; imported last because those modules use `Hit` from this one.
from twinlm.finetune import multivector as _mv  # noqa: E402
from twinlm.finetune import rerank as _rr  # noqa: E402

LOADERS["multivector"] = _mv.load_multivector
ENCODERS["multivector"] = _mv.encode_multivectors
SEARCHERS["multivector"] = _mv.search_multivector
SAVERS["multivector"] = _mv.save_multivectors
RERANKERS["rerank"] = _rr.rerank_hits
