"""The prepared folder's format: its file names, the settings that decide its content, and the
fingerprints that tell whether an unfinished prepare is the same job. A leaf: the pipeline, the
unit workers and the final step all read it, and it imports none of them.

A prepared folder `P` holds `prepare.json` (`META`: tokenizer, source, settings; `"complete":
true` only once everything is written), `tokenizer/`, and two token stores (`twinlm.data.store`):
`train/` and `heldout/`. While it is being written it also holds `.lock`, the units' shards under
`.units/uNNNNNN/` and one record per finished unit under `.progress/unit-NNNNNN.json`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from twinlm.data.sources.pieces import Piece
from twinlm.data.store import is_store
from twinlm.data.tokenizer import tokenizer_fingerprint
from twinlm.errors import UserError

FORMAT = "twinlm-prepared"
VERSION = 1
META = "prepare.json"
LOCK = ".lock"
UNITS, PROGRESS = ".units", ".progress"
IDS_COLUMN = "input_ids"  # data.ids_column's default: a source with this column is pre-tokenized


@dataclass
class PrepareSettings:
    """Everything that changes the prepared stores' content (part of the resume check)."""

    text_column: str = "text"
    split: str = "train"
    shard_tokens: int = 2**27  # a unit's shards roll over past this many tokens
    unit_bytes: int | None = None  # source bytes per unit of work; None: total/256, within 1-256 MiB
    heldout_share: float = 0.005
    heldout_max_documents: int = 2000
    heldout_max_tokens: int = 2_000_000  # the held-out split also stops before this many tokens
    seed: int = 42  # of the held-out hash (twinlm.data.heldout); a recipe's training.seed

    def check(self) -> None:
        if not 0.0 <= self.heldout_share < 1.0:
            raise UserError(f"--heldout-share must be in [0, 1), got {self.heldout_share}")
        if self.heldout_max_documents < 0 or self.heldout_max_tokens < 0:
            raise UserError("--heldout-max-documents and --heldout-max-tokens must be >= 0")
        if self.shard_tokens < 1:
            raise UserError(f"--shard-tokens must be >= 1, got {self.shard_tokens}")
        if self.unit_bytes is not None and self.unit_bytes < 1:
            raise UserError(f"--unit-bytes must be >= 1, got {self.unit_bytes}")


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
