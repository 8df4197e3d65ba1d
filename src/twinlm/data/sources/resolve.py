"""The one resolver of sources: a source string becomes its units, the things a reader opens.

A `source` is, in this order: a glob (`*`, `?` or `[`): the matches, sorted, read like a
folder's files; a file; a folder: MDS shards if it holds an MDS `index.json`, a
`datasets.save_to_disk` folder if it holds dataset_info.json + state.json or dataset_dict.json,
else every non-hidden file below it (sorted, a folder's files before its subfolders), MDS and
save_to_disk subfolders read whole; else a hub name (`owner/name` or `name`).

Every reader (text, token ids, pieces for `twinlm prepare`) starts from `source_units`, so they
agree on which files a source holds, in which order, and under which stable name.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twinlm.data.sources.mds import MDSDataset, is_mds_folder
from twinlm.errors import UserError

# Bump when the way sources become documents changes, so cached token data is rebuilt.
READER_VERSION = 1
TABULAR = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
_PATH_SUFFIXES = (*TABULAR, ".txt", ".md", ".text", ".arrow", ".gz", ".zst", ".mds")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
COLUMN_HINT = "pick one with --set data.text_column=NAME"


@dataclass(frozen=True)
class Unit:
    """One thing a reader opens, in the source's order.

    `kind`: "file" (a file named directly, or matched by a glob), "doc" (a file found in a folder:
    plain text there is ONE text), "mds" (an MDS folder), "disk" (a save_to_disk folder) or "hub"
    (`path` is then the hub name). `name` is stable across machines (relative to the source's
    root): with a document's position it identifies the document for the held-out hash."""

    kind: str
    path: Any  # Path, or the hub name (str)
    name: str

    @property
    def suffix(self) -> str:
        return "" if self.kind == "hub" else Path(self.path).suffix.lower()


def folder_kind(path: Path) -> str:
    """'mds' (MDS shards), 'disk' (a datasets.save_to_disk folder) or 'folder' (anything else)."""
    if is_mds_folder(path):
        return "mds"
    disk = (path / "dataset_dict.json").is_file() or (
        (path / "dataset_info.json").is_file() and (path / "state.json").is_file())
    return "disk" if disk else "folder"


def resolve(source: str) -> tuple[str, Any]:
    """(kind, target) for a source string: ("glob", [paths]), ("file" | "folder" | "mds" | "disk",
    path) or ("hub", name); UserError if it names nothing."""
    if any(c in source for c in "*?["):
        matches = sorted(glob.glob(os.path.expanduser(source), recursive=True))
        if not matches:
            raise UserError(f"the pattern '{source}' matches no files")
        return "glob", [Path(m) for m in matches]
    path = Path(source).expanduser()
    if path.is_file():
        return "file", path
    if path.is_dir():
        return folder_kind(path), path
    path_like = source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source
    if path_like or source.lower().endswith(_PATH_SUFFIXES) or not _HUB_ID.match(source):
        raise UserError(f"no such file or folder: '{source}'")
    return "hub", source


def _root(kind: str, target: Any) -> Path | None:
    """The folder unit names are relative to."""
    if kind == "glob":
        return Path(os.path.commonpath([str(p.parent) for p in target]))
    if kind == "file":
        return target.parent
    return None if kind == "hub" else target


def _name(path: Path, root: Path | None) -> str:
    return path.relative_to(root).as_posix() if root is not None and path != root else path.name


def source_units(source: str) -> list[Unit]:
    """The units of `source`, in reading order (see the module docstring)."""
    kind, target = resolve(str(source))
    if kind == "hub":
        return [Unit("hub", target, target)]
    root = _root(kind, target)
    if kind in ("file", "mds", "disk"):
        return [Unit(kind, target, _name(target, root))]
    units: list[Unit] = []
    for path in [target] if kind == "folder" else target:
        if path.is_file():
            units.append(Unit("doc", path, _name(path, root)))
            continue
        for here, dirs, files in os.walk(path):
            here_path = Path(here)
            if (sub := folder_kind(here_path)) != "folder":  # read whole, as if named directly
                units.append(Unit(sub, here_path, _name(here_path, root)))
                dirs.clear()
                continue
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # sorted: deterministic order
            units += [Unit("doc", here_path / f, _name(here_path / f, root))
                      for f in sorted(files) if not f.startswith(".")]
    return units


def need(column: str, found: Iterable[str], where: Any) -> None:
    """UserError naming the columns found unless `column` is among them."""
    if column not in (found := list(found)):
        names = ", ".join(found) or "none"
        raise UserError(f"no column '{column}' in {where}; columns found: {names}; {COLUMN_HINT}")


def open_disk(path: Path, split: str, hint: str = "--set data.split=NAME"):
    """A `save_to_disk` folder's split (memory-mapped: cheap to open); one-line errors."""
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable datasets save_to_disk folder ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise UserError(f"no split '{split}' in {path}; splits found: {', '.join(ds)}; use {hint}")
        ds = ds[split]
    return ds


def open_hub(name: str, split: str):
    """A hub dataset's split, streamed; UserError when it cannot be loaded."""
    import datasets

    try:
        return datasets.load_dataset(name, split=split, streaming=True)
    except Exception as e:  # offline, unknown name, bad split...: all mean "cannot read this"
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"'{name}' is not a local file or folder, and the hub dataset could not be "
                        f"loaded ({reason}); check the path, or the name and network access") from None


def open_parquet(path: Path):
    """A parquet file (its metadata and schema are read now); UserError if it is not one."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (ValueError, OSError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise UserError(f"{path}: not a readable parquet file ({e})") from None


def open_arrow(path: Path):
    """A reader of an arrow file's record batches (IPC stream, as `datasets` writes, or file)."""
    import pyarrow as pa

    try:
        return pa.ipc.open_stream(pa.memory_map(str(path)))
    except pa.ArrowInvalid:
        try:
            return pa.ipc.open_file(pa.memory_map(str(path)))
        except pa.ArrowInvalid as e:
            raise UserError(f"{path}: not a readable arrow file ({e})") from None


def hub_shards(ds) -> int:
    """How many contiguous shards (data files) a streamed dataset can be cut into."""
    n = getattr(ds, "num_shards", 1)
    return n if isinstance(n, int) and n > 1 and hasattr(ds, "shard") else 1


def describe_source(source: str) -> str:
    """A short human-readable kind, e.g. 'jsonl file', 'folder (12 files)', 'hub dataset'."""
    kind, target = resolve(str(source))
    if kind in ("folder", "glob"):
        n = len(source_units(source))
        return f"{kind} ({n} file{'s' * (n != 1)})"
    if kind == "file":
        return f"{target.suffix.lower()[1:]} file" if target.suffix.lower() in TABULAR else "text file"
    return MDSDataset(target).describe() if kind == "mds" else {"disk": "datasets folder (save_to_disk)",
                                                               "hub": "hub dataset"}[kind]


def source_fingerprint(source: str, text_column: str = "text", split: str = "train") -> str:
    """A cheap, stable hash of what the source would yield: the hub name, or the paths, sizes and
    modification times of every local file it reads (no file is opened)."""
    kind, target = resolve(str(source))
    parts: list[Any] = [READER_VERSION, kind, text_column, split, target if kind == "hub" else None]
    for unit in [] if kind == "hub" else source_units(source):
        path = unit.path
        for f in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
            stat = f.stat()
            parts.append([str(f.resolve()), stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]
