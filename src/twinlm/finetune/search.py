"""Using fine-tuned models: embed a corpus (`twinlm encode`) and search it (`twinlm search`),
whatever the model's retrieval kind (the table in twinlm.finetune.kinds)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twinlm.errors import UserError
from twinlm.finetune.data import load_table
from twinlm.finetune.hits import Hit
from twinlm.finetune.kinds import KINDS, kinds_that
from twinlm.outputs import write_json

MODEL_TYPES = {kind.model_type: name for name, kind in KINDS.items()}
VECTORS_FILE = "vectors.safetensors"


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
    return KINDS[kind or model_kind(path)].load(str(path))


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


# ---- encoding and search ---------------------------------------------------------------------


def save_vectors(out: Path, kind: str, ids: list[str], vectors, meta: dict[str, Any]) -> dict[str, Any]:
    """Write `vectors.safetensors` (dense: `embeddings` [n, d]; sparse: COO `indices` [2, nnz],
    `values` [nnz], `shape` [2]) plus `ids.json` and `meta.json` into `out`."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    tensors, stats = KINDS[kind].tensors(vectors)
    save_file(tensors, str(out / VECTORS_FILE))
    write_json(out / "ids.json", ids, indent=None)
    meta = {**meta, "kind": kind, "count": len(ids), **stats}
    write_json(out / "meta.json", meta, indent=2)
    return meta


def search(model_path: str, corpus: list[str], queries: list[str], k: int = 10, progress: bool = True) -> list[list[Hit]]:
    kind = model_kind(model_path)
    if KINDS[kind].search is None:
        raise UserError(f"{model_path} is a {kind} model; search supports {', '.join(kinds_that('search'))} models"
                        + (" (use a rerank model with --reranker)" if kind == "rerank" else ""))
    return KINDS[kind].search(load_model(model_path, kind), corpus, queries, k, progress)
