"""Text from a source: every unit `resolve.source_units` finds becomes a stream of texts.

`.jsonl`, `.json` (list of objects or JSON lines), `.csv`, `.tsv` and `.parquet` files give one
text per row from the text column; any other file named directly (or by a glob) is plain text
with one text per paragraph (blocks between blank lines), while a plain text file found in a
folder is ONE text; MDS folders give their str column; a `datasets.save_to_disk` folder its split's
column (`split` picks it); a hub name is read by `datasets.load_dataset(name, split=split,
streaming=True)`. Binary or non-UTF-8 files are skipped and counted (one warning at the end);
blank texts are skipped. Mistakes raise `UserError` when `iter_texts` is called, before any text
is consumed. `pieces.py` reads the same texts in slices, with their positions.
"""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Iterator
from itertools import chain, islice
from pathlib import Path
from typing import Any

from twinlm.data.sources.mds import MDSDataset
from twinlm.data.sources.resolve import (
    COLUMN_HINT,
    TABULAR,
    Unit,
    hub_shards,
    need,
    open_arrow,
    open_disk,
    open_hub,
    open_parquet,
    source_units,
)
from twinlm.errors import UserError

# Pretraining documents are long; the csv module's default 128 KiB field limit would reject them.
csv.field_size_limit(2**31 - 1)


class BadFile(Exception):
    """Raised inside a reader when its file turns out binary or not UTF-8; the file is skipped."""


def lines(path: Path) -> Iterator[str]:
    """The file's lines with their endings (csv needs them); BadFile if binary or not UTF-8."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            for line in f:
                if "\0" in line:
                    raise BadFile(path)
                yield line
    except UnicodeDecodeError:
        raise BadFile(path) from None


def row_value(row: Any, column: str, where: str) -> Any:
    """row[column] of a JSON row; UserError naming the fields found if it is missing."""
    need(column, row if isinstance(row, dict) else [f"(a {type(row).__name__})"], where)
    return row[column]


def checked(value: Any, column: str, where: str) -> str | None:
    """The value if it is usable text, None if empty; UserError if it is not text at all."""
    if value is None or isinstance(value, str):
        return value if value and value.strip() else None
    raise UserError(f"column '{column}' in {where} holds {type(value).__name__}, not text; {COLUMN_HINT}")


def _paragraphs(path: Path) -> Iterator[str]:
    block: list[str] = []
    for line in chain(lines(path), [""]):  # the sentinel flushes the last block
        if line.strip():
            block.append(line.rstrip("\r\n"))
        elif block:
            yield "\n".join(block).strip()
            block = []


def _rows(path: Path, column: str) -> Iterator[str | None]:
    """Text-column values of a jsonl/json/csv/tsv file, or of a JSON-lines file named .json."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(lines(path), delimiter="\t" if suffix == ".tsv" else ",")
        need(column, reader.fieldnames or [], path)
        yield from (row[column] for row in reader)
        return
    if suffix == ".json":
        try:
            data = json.loads("".join(lines(path)))
            rows = data if isinstance(data, list) else [data]
            yield from (row_value(row, column, f"{path} item {k}") for k, row in enumerate(rows))
            return
        except json.JSONDecodeError as e:
            if e.msg != "Extra data":  # "Extra data" after the first value: JSON lines, read below
                raise UserError(f"{path}: not valid JSON ({e})") from None
    for lineno, line in enumerate(lines(path), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{lineno}: not valid JSON ({e})") from None
        yield row_value(row, column, f"{path} line {lineno}")


def text_parquet(path: Path, column: str):
    """The parquet file, checked to hold `column`."""
    pf = open_parquet(path)
    need(column, pf.schema_arrow.names, path)
    return pf


def text_mds(path: Path, column: str) -> MDSDataset:
    """The MDS folder (its index validated now, before any shard is read), checked to hold the
    str column `column`."""
    ds = MDSDataset(path)
    text_columns = [name for name, encoding in ds.columns.items() if encoding == "str"]
    need(column, text_columns, f"the text (str) columns of MDS folder {path} (all: {ds.columns})")
    return ds


def text_disk(path: Path, column: str, split: str, hint: str = "--set data.split=NAME"):
    """The save_to_disk folder's split, checked to hold `column`."""
    ds = open_disk(path, split, hint)
    need(column, ds.column_names, path)
    return ds


def _parquet(path: Path, column: str) -> Iterator[str | None]:
    for batch in text_parquet(path, column).iter_batches(batch_size=1024, columns=[column]):
        yield from batch.column(0).to_pylist()


def _mds(path: Path, column: str) -> Iterator[str | None]:
    return (sample[column] for sample in text_mds(path, column))


def _disk(path: Path, column: str, split: str) -> Iterator[str | None]:
    ds = text_disk(path, column, split)
    return (v for batch in ds.select_columns([column]).iter(batch_size=1024) for v in batch[column])


def hub_values(name: str, column: str, split: str, shard: int | None = None) -> Iterator[str | None]:
    ds = open_hub(name, split)
    if shard is not None and hub_shards(ds) > 1:  # shard k of n, contiguous: in order, they are ds
        ds = ds.shard(num_shards=hub_shards(ds), index=shard, contiguous=True)
    if ds.column_names is not None:  # None when the hub does not say; rows are checked then
        need(column, ds.column_names, f"hub dataset {name}")
    yield from (row_value(row, column, f"hub dataset {name}") for row in ds)


def read_unit(kind: str, path: Path, column: str, split: str) -> Iterator[str | None]:
    """Values from one unit; opening it validates its index, schema or header."""
    if kind == "mds":
        return _mds(path, column)
    if kind == "disk":
        return _disk(path, column, split)
    if kind == "hub":
        return hub_values(str(path), column, split)
    suffix = path.suffix.lower()
    if suffix in TABULAR:
        return _parquet(path, column) if suffix == ".parquet" else _rows(path, column)
    if kind == "doc":
        return iter(["".join(lines(path)).replace("\r\n", "\n").strip()])
    return _paragraphs(path)


def unit_columns(unit: Unit, split: str, hint: str = "--set data.split=NAME") -> list[str] | None:
    """The column names of a unit, from its index, schema, header or first row (cheap: nothing
    else is read); None for plain text, which has no columns, and for a file that turns out
    binary or not UTF-8 (skipped when it is read)."""
    if unit.kind == "mds":
        return list(MDSDataset(unit.path).columns)
    if unit.kind == "disk":
        return list(open_disk(unit.path, split, hint).column_names)
    if unit.kind == "hub":
        ds = open_hub(str(unit.path), split)
        if ds.column_names is not None:
            return list(ds.column_names)
        first = next(iter(ds), None)
        return list(first) if isinstance(first, dict) else []
    suffix = unit.suffix
    try:
        if suffix == ".parquet":
            return list(open_parquet(unit.path).schema_arrow.names)
        if suffix == ".arrow":
            return list(open_arrow(unit.path).schema.names)
        if suffix in (".csv", ".tsv"):
            return list(next(csv.reader(lines(unit.path), delimiter="\t" if suffix == ".tsv" else ","), []))
        if suffix in (".jsonl", ".json"):
            row = _first_row(unit.path)
            return list(row) if isinstance(row, dict) else []
    except BadFile:
        return None
    return None


def _first_row(path: Path) -> Any:
    """The first row of a JSON-lines file, or of a .json file holding a list (or one object)."""
    for lineno, line in enumerate(lines(path), 1):
        if not line.strip():
            continue
        if path.suffix.lower() == ".json" and line.lstrip().startswith(("[", "{")):
            try:
                data = json.loads("".join(lines(path)))
                return (data[0] if data else None) if isinstance(data, list) else data
            except json.JSONDecodeError as e:
                if e.msg != "Extra data":  # "Extra data" after the first value: JSON lines
                    raise UserError(f"{path}: not valid JSON ({e})") from None
        try:
            return json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{lineno}: not valid JSON ({e})") from None
    return None


def probe_units(units: list[Unit], column: str, split: str) -> None:
    """Open every structured unit and read its first value (headers, schemas, indexes), so that a
    missing column deep in a folder fails now rather than after hours of tokenizing."""
    for unit in units:
        if unit.kind in ("mds", "disk") or unit.suffix in (".jsonl", ".csv", ".tsv", ".parquet"):
            try:
                next(read_unit(unit.kind, unit.path, column, split), None)
            except BadFile:
                pass  # counted when the file is read for real


def guarded(source: str, items: Iterator, bad: list, limit: int | None = None) -> Iterator:
    """`items` (at most `limit`), the first read now: UserError for a source without usable text;
    one warning at the end naming how many files `bad` collected (binary or not UTF-8)."""
    first = next(items, None)  # reading one up front surfaces an empty or unreadable source now
    if first is None:
        skipped = f" ({len(bad)} binary or non-UTF-8 file(s) skipped, e.g. {bad[0]})" if bad else ""
        raise UserError(f"empty corpus: no usable text in '{source}'{skipped}")

    def finish() -> Iterator:
        yield from islice(chain([first], items), limit)
        if bad:  # once, at the end: the count is only known then
            warnings.warn(f"{source}: skipped {len(bad)} file(s) that are binary or not valid UTF-8 "
                          f"(e.g. {bad[0]})", UserWarning, stacklevel=3)

    return finish()


def _texts(units: list[Unit], column: str, split: str, bad: list[Path]) -> Iterator[str]:
    for unit in units:
        try:
            values = read_unit(unit.kind, unit.path, column, split)
            yield from filter(None, (checked(v, column, str(unit.path)) for v in values))
        except BadFile:
            bad.append(unit.path)


def iter_texts(source: str, text_column: str = "text", split: str = "train",
               limit: int | None = None) -> Iterator[str]:
    """The non-empty texts of `source`, in a deterministic order (see the module docstring).
    Mistakes (path, column, split, no usable text) raise here: the first text is read already."""
    if limit is not None and limit < 1:
        raise UserError(f"limit must be a positive number of texts, got {limit}")
    units = source_units(source)
    probe_units(units[1:], text_column, split)  # the first unit is checked by reading its first text
    bad: list[Path] = []
    return guarded(source, _texts(units, text_column, split, bad), bad, limit)


def load_texts(source: str, text_column: str = "text", split: str = "train",
               limit: int | None = None) -> list[str]:
    """All texts of `source` as a list; UserError if there are none."""
    return list(iter_texts(source, text_column, split, limit))
