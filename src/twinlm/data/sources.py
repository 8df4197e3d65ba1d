"""Text sources for pretraining corpora: a path, glob or hub name becomes a stream of texts.

A `source` is, in this order: a glob (`*`, `?` or `[`): the matches, sorted, read like a
folder's files; a file: `.jsonl`, `.json` (list of objects or JSON lines), `.csv`, `.tsv` and
`.parquet` give one text per row from the text column, any other file is plain text with one
text per paragraph (blocks between blank lines); a folder: MDS shards if it holds an MDS
`index.json`, a `datasets.save_to_disk` folder if it holds dataset_info.json + state.json or
dataset_dict.json (`split` picks the split), else every non-hidden file below it (sorted, a
folder's files before its subfolders), plain text files ONE text each, MDS/save_to_disk
subfolders read whole; else a hub name (`owner/name` or `name`) for
`datasets.load_dataset(name, split=split, streaming=True)`.
Binary or non-UTF-8 files are skipped and counted (one warning at the end); blank texts are
skipped. Mistakes raise `UserError` when `iter_texts` is called, before any text is consumed.

For `twinlm prepare`, `source_pieces` cuts a source into pieces that separate processes read
without reading anything twice (byte ranges of large text and JSON-lines files, parquet row
groups, MDS shards, row ranges of save_to_disk folders, whole small files) and `read_piece`
reads one; all pieces in order give exactly what `iter_texts` gives.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from itertools import chain, islice
from pathlib import Path
from typing import Any

from twinlm.data.mds import MDSDataset, is_mds_folder
from twinlm.errors import UserError

_FORMAT = 1  # bump when the way sources become texts changes, so cached token data is rebuilt
_TABULAR = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
_PATH_SUFFIXES = (*_TABULAR, ".txt", ".md", ".text", ".arrow", ".gz", ".zst", ".mds")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_COLUMN_HINT = "pick one with --set data.text_column=NAME"
# Pretraining documents are long; the csv module's default 128 KiB field limit would reject them.
csv.field_size_limit(2**31 - 1)


class _BadFile(Exception):
    """Raised inside a reader when its file turns out binary or not UTF-8; the file is skipped."""


def _folder_kind(path: Path) -> str:
    """'mds' (MDS shards), 'disk' (a datasets.save_to_disk folder) or 'folder' (anything else)."""
    if is_mds_folder(path):
        return "mds"
    disk = (path / "dataset_dict.json").is_file() or (
        (path / "dataset_info.json").is_file() and (path / "state.json").is_file())
    return "disk" if disk else "folder"


def _resolve(source: str) -> tuple[str, Any]:
    """(kind, target) for a source string; UserError if it names nothing."""
    if any(c in source for c in "*?["):
        matches = sorted(glob.glob(os.path.expanduser(source), recursive=True))
        if not matches:
            raise UserError(f"the pattern '{source}' matches no files")
        return "glob", [Path(m) for m in matches]
    path = Path(source).expanduser()
    if path.is_file():
        return "file", path
    if path.is_dir():
        return _folder_kind(path), path
    path_like = source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source
    if path_like or source.lower().endswith(_PATH_SUFFIXES) or not _HUB_ID.match(source):
        raise UserError(f"no such file or folder: '{source}'")
    return "hub", source


def _units(kind: str, target: Any) -> list[tuple[str, Any]]:
    """The (kind, path) units a source reads, in order: files, MDS or save_to_disk folders, or the
    hub name. Files found in a folder or by a glob are "doc"s: plain text there is one text."""
    if kind in ("file", "mds", "disk", "hub"):
        return [(kind, target)]
    units: list[tuple[str, Any]] = []
    for path in [target] if kind == "folder" else target:
        if path.is_file():
            units.append(("doc", path))
            continue
        for here, dirs, files in os.walk(path):
            here_path = Path(here)
            if (sub := _folder_kind(here_path)) != "folder":  # read whole, as if named directly
                units.append((sub, here_path))
                dirs.clear()
                continue
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # sorted: deterministic order
            units += [("doc", here_path / f) for f in sorted(files) if not f.startswith(".")]
    return units


def _lines(path: Path) -> Iterator[str]:
    """The file's lines with their endings (csv needs them); _BadFile if binary or not UTF-8."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            for line in f:
                if "\0" in line:
                    raise _BadFile(path)
                yield line
    except UnicodeDecodeError:
        raise _BadFile(path) from None


def _need(column: str, found: Iterable[str], where: Any) -> None:
    """UserError naming the columns found unless `column` is among them."""
    if column not in (found := list(found)):
        names = ", ".join(found) or "none"
        raise UserError(f"no column '{column}' in {where}; columns found: {names}; {_COLUMN_HINT}")


def _field(row: Any, column: str, where: str) -> Any:
    """row[column] of a JSON row; UserError naming the fields found if it is missing."""
    _need(column, row if isinstance(row, dict) else [f"(a {type(row).__name__})"], where)
    return row[column]


def _checked(value: Any, column: str, where: str) -> str | None:
    """The value if it is usable text, None if empty; UserError if it is not text at all."""
    if value is None or isinstance(value, str):
        return value if value and value.strip() else None
    raise UserError(f"column '{column}' in {where} holds {type(value).__name__}, not text; {_COLUMN_HINT}")


def _paragraphs(path: Path) -> Iterator[str]:
    block: list[str] = []
    for line in chain(_lines(path), [""]):  # the sentinel flushes the last block
        if line.strip():
            block.append(line.rstrip("\r\n"))
        elif block:
            yield "\n".join(block).strip()
            block = []


def _rows(path: Path, column: str) -> Iterator[str | None]:
    """Text-column values of a jsonl/json/csv/tsv file, or of a JSON-lines file named .json."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(_lines(path), delimiter="\t" if suffix == ".tsv" else ",")
        _need(column, reader.fieldnames or [], path)
        yield from (row[column] for row in reader)
        return
    if suffix == ".json":
        try:
            data = json.loads("".join(_lines(path)))
            rows = data if isinstance(data, list) else [data]
            yield from (_field(row, column, f"{path} item {k}") for k, row in enumerate(rows))
            return
        except json.JSONDecodeError as e:
            if e.msg != "Extra data":  # "Extra data" after the first value: JSON lines, read below
                raise UserError(f"{path}: not valid JSON ({e})") from None
    for lineno, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{lineno}: not valid JSON ({e})") from None
        yield _field(row, column, f"{path} line {lineno}")


def _parquet(path: Path, column: str) -> Iterator[str | None]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (ValueError, OSError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise UserError(f"{path}: not a readable parquet file ({e})") from None
    _need(column, pf.schema_arrow.names, path)
    for batch in pf.iter_batches(batch_size=1024, columns=[column]):
        yield from batch.column(0).to_pylist()


def _mds(path: Path, column: str) -> Iterator[str | None]:
    ds = MDSDataset(path)  # validates the index now, before any shard is read
    text_columns = [name for name, encoding in ds.columns.items() if encoding == "str"]
    _need(column, text_columns, f"the text (str) columns of MDS folder {path} (all: {ds.columns})")
    return (sample[column] for sample in ds)


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


def _disk(path: Path, column: str, split: str) -> Iterator[str | None]:
    ds = open_disk(path, split)
    _need(column, ds.column_names, path)
    return (v for batch in ds.select_columns([column]).iter(batch_size=1024) for v in batch[column])


def _open_hub(name: str, split: str):
    import datasets

    try:
        return datasets.load_dataset(name, split=split, streaming=True)
    except Exception as e:  # offline, unknown name, bad split...: all mean "cannot read this"
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"'{name}' is not a local file or folder, and the hub dataset could not be "
                        f"loaded ({reason}); check the path, or the name and network access") from None


def _hub_shards(ds) -> int:
    """How many contiguous shards (data files) a streamed dataset can be cut into."""
    n = getattr(ds, "num_shards", 1)
    return n if isinstance(n, int) and n > 1 and hasattr(ds, "shard") else 1


def _hub(name: str, column: str, split: str, shard: int | None = None) -> Iterator[str | None]:
    ds = _open_hub(name, split)
    if shard is not None and _hub_shards(ds) > 1:  # shard k of n, contiguous: in order, they are ds
        ds = ds.shard(num_shards=_hub_shards(ds), index=shard, contiguous=True)
    if ds.column_names is not None:  # None when the hub does not say; rows are checked then
        _need(column, ds.column_names, f"hub dataset {name}")
    yield from (_field(row, column, f"hub dataset {name}") for row in ds)


def _read(kind: str, path: Path, column: str, split: str) -> Iterator[str | None]:
    """Values from one unit; opening it validates its index, schema or header."""
    if kind == "mds":
        return _mds(path, column)
    if kind == "disk":
        return _disk(path, column, split)
    if kind == "hub":
        return _hub(str(path), column, split)
    suffix = path.suffix.lower()
    if suffix in _TABULAR:
        return _parquet(path, column) if suffix == ".parquet" else _rows(path, column)
    if kind == "doc":
        return iter(["".join(_lines(path)).replace("\r\n", "\n").strip()])
    return _paragraphs(path)


def _probe(units: list[tuple[str, Any]], column: str, split: str) -> None:
    """Open every structured unit and read its first value (headers, schemas, indexes), so that a
    missing column deep in a folder fails now rather than after hours of tokenizing."""
    for kind, path in units:
        if kind in ("mds", "disk") or path.suffix.lower() in (".jsonl", ".csv", ".tsv", ".parquet"):
            try:
                next(_read(kind, path, column, split), None)
            except _BadFile:
                pass  # counted when the file is read for real


def _texts(units: list[tuple[str, Any]], column: str, split: str, bad: list[Path]) -> Iterator[str]:
    for kind, path in units:
        try:
            yield from filter(None, (_checked(v, column, str(path)) for v in _read(kind, path, column, split)))
        except _BadFile:
            bad.append(path)


def iter_texts(source: str, text_column: str = "text", split: str = "train",
               limit: int | None = None) -> Iterator[str]:
    """The non-empty texts of `source`, in a deterministic order (see the module docstring).
    Mistakes (path, column, split, no usable text) raise here: the first text is read already."""
    if limit is not None and limit < 1:
        raise UserError(f"limit must be a positive number of texts, got {limit}")
    kind, target = _resolve(str(source))
    bad: list[Path] = []
    units = _units(kind, target)
    _probe(units[1:], text_column, split)  # the first unit is checked by reading its first text
    texts = _texts(units, text_column, split, bad)
    first = next(texts, None)  # reading one text up front surfaces an empty or unreadable source now
    if first is None:
        skipped = f" ({len(bad)} binary or non-UTF-8 file(s) skipped, e.g. {bad[0]})" if bad else ""
        raise UserError(f"empty corpus: no usable text in '{source}'{skipped}")

    def finish() -> Iterator[str]:
        yield from islice(chain([first], texts), limit)
        if bad:  # once, at the end: the count is only known then
            warnings.warn(f"{source}: skipped {len(bad)} file(s) that are binary or not valid UTF-8 "
                          f"(e.g. {bad[0]})", UserWarning, stacklevel=2)

    return finish()


def load_texts(source: str, text_column: str = "text", split: str = "train",
               limit: int | None = None) -> list[str]:
    """All texts of `source` as a list; UserError if there are none."""
    return list(iter_texts(source, text_column, split, limit))


def describe_source(source: str) -> str:
    """A short human-readable kind, e.g. 'jsonl file', 'folder (12 files)', 'hub dataset'."""
    kind, target = _resolve(str(source))
    if kind in ("folder", "glob"):
        n = len(_units(kind, target))
        return f"{kind} ({n} file{'s' * (n != 1)})"
    if kind == "file":
        return f"{target.suffix.lower()[1:]} file" if target.suffix.lower() in _TABULAR else "text file"
    return MDSDataset(target).describe() if kind == "mds" else {"disk": "datasets folder (save_to_disk)",
                                                               "hub": "hub dataset"}[kind]


def source_fingerprint(source: str, text_column: str = "text", split: str = "train") -> str:
    """A cheap, stable hash of what the source would yield: the hub name, or the paths, sizes and
    modification times of every local file it reads (no file is opened)."""
    kind, target = _resolve(str(source))
    parts: list[Any] = [_FORMAT, kind, text_column, split, target if kind == "hub" else None]
    for _, path in [] if kind == "hub" else _units(kind, target):
        for f in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
            stat = f.stat()
            parts.append([str(f.resolve()), stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]
