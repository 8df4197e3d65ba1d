"""The prepared folder's format: its file names, the settings that decide its content (defined in
`settings`), and the fingerprints that tell whether an unfinished prepare is the same job. A leaf:
the pipeline, the unit workers and the final step all read it, and it imports none of them.

A prepared folder `P` holds `prepare.json` (`META`: tokenizer, source, settings; `"complete":
true` only once everything is written), `tokenizer/`, and two token stores (`twinlm.data.store`):
`train/` and `heldout/`. While it is being written it also holds `.lock`, the units' shards under
`.units/uNNNNNN/` and one record per finished unit under `.progress/unit-NNNNNN.json`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

# Re-exported: its home is prepare.settings, a leaf the CLI can import at start-up.
from twinlm.data.prepare.settings import PrepareSettings as PrepareSettings
from twinlm.data.sources.pieces import Piece
from twinlm.data.store import is_store
from twinlm.data.tokenizer import tokenizer_fingerprint

FORMAT = "twinlm-prepared"
VERSION = 1
META = "prepare.json"
LOCK = ".lock"
UNITS, PROGRESS = ".units", ".progress"
IDS_COLUMN = "input_ids"  # data.ids_column's default: a source with this column is pre-tokenized


def read_meta(folder: Path) -> dict | None:
    """The folder's `prepare.json`, complete or not; None if it is not a prepared folder."""
    try:
        meta = json.loads((Path(folder) / META).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None


def is_prepared(path: str | Path) -> bool:
    """A complete prepared folder (written by `twinlm prepare`)."""
    path = Path(path)
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError):
        return False
    return bool(isinstance(meta, dict) and meta.get("complete")) and is_store(path / "train")


def unit_dir(out: Path, u: int) -> Path:
    return out / UNITS / f"u{u:06d}"


def record_path(out: Path, u: int) -> Path:
    return out / PROGRESS / f"unit-{u:06d}.json"


def layout_fingerprint(units: list[list[Piece]]) -> str:
    """Hash of the units as (kind, name, range, size): equal on every machine that sees the same
    files, whatever their absolute paths or modification times."""
    rows = [[[p.kind, p.name, p.start, p.stop, p.size] for p in unit] for unit in units]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def tokenizer_meta(tok, name_or_path: str) -> dict:
    """What `prepare.json` records of the tokenizer the ids belong to."""
    return {"name_or_path": name_or_path, "fingerprint": tokenizer_fingerprint(tok), "vocab_size": len(tok),
            "cls_token_id": tok.cls_token_id, "sep_token_id": tok.sep_token_id,
            "pad_token_id": tok.pad_token_id, "mask_token_id": tok.mask_token_id}
