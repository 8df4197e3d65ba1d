"""Cutting a source into pieces of work for `twinlm prepare` (byte ranges of text and JSON-lines
files, parquet row groups, MDS shards, row ranges of save_to_disk folders, hub data files), and
reading one piece exactly as `text.iter_texts` reads that part of the source, with each text's
position; `iter_documents` reads a whole source so, for the held-out rule of a one-process run."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from twinlm.data.sources.mds import MDSDataset
from twinlm.data.sources.resolve import (
    TABULAR,
    Unit,
    hub_shards,
    open_disk,
    open_hub,
    open_parquet,
    source_units,
)
from twinlm.data.sources.text import (
    BadFile,
    checked,
    guarded,
    hub_values,
    probe_units,
    read_unit,
    row_value,
    text_disk,
    text_mds,
    text_parquet,
)
from twinlm.errors import UserError

# ---------------------------------------------------------------------------------------------
# Pieces: a source cut into slices that separate processes can read without reading it twice.
# `twinlm prepare` groups pieces into units of work; reading every piece of a source in order
# yields exactly the texts `iter_texts` yields, in the same order.
RANGED_KINDS = ("paragraphs", "jsonl")  # byte ranges of one file; a range owns the records starting in it
WHOLE_FILE_KINDS = ("doc", "table")  # a whole file read as iter_texts reads it


@dataclass(frozen=True)
class Piece:
    """One slice of a source. `name` is stable across machines (relative to the source root) and
    with `position` below identifies a document for the held-out hash; `size` is in bytes (an
    estimate for row-based pieces, 0 when unknown) and drives grouping and the progress bar."""

    kind: str  # paragraphs | jsonl | doc | table | parquet | mds | disk | hub | tokens
    path: str
    name: str
    start: int = 0  # byte offset, row group, sample or row where the piece begins
    stop: int = 0  # ... and where it ends (exclusive)
    size: int = 0


def source_pieces(source: str, text_column: str = "text", split: str = "train",
                  piece_bytes: int = 64 << 20) -> list[Piece]:
    """The pieces of `source` in reading order; large text and JSON-lines files become byte ranges
    of `piece_bytes`, parquet files their row groups, MDS folders their shards, save_to_disk
    folders row ranges of about `piece_bytes`, a hub dataset one piece."""
    pieces: list[Piece] = []
    for unit in source_units(source):
        pieces += unit_pieces(unit, split, piece_bytes)
    return pieces


def unit_pieces(unit: Unit, split: str = "train", piece_bytes: int = 64 << 20) -> list[Piece]:
    """The pieces of one unit (see `source_pieces`)."""
    if unit.kind == "hub":
        n = hub_shards(open_hub(str(unit.path), split))
        return [Piece("hub", str(unit.path), unit.name if n == 1 else f"{unit.name}#{k}", k, k + 1) for k in range(n)]
    if unit.kind == "mds":
        return _mds_pieces(unit.path, unit.name)
    if unit.kind == "disk":
        return _disk_pieces(unit.path, unit.name, split, piece_bytes)
    return _file_pieces(unit.kind, unit.path, unit.name, piece_bytes)


def _file_pieces(ukind: str, path: Path, name: str, piece_bytes: int) -> list[Piece]:
    suffix, size = path.suffix.lower(), path.stat().st_size
    if suffix == ".parquet":
        meta = open_parquet(path).metadata
        return [Piece("parquet", str(path), name, g, g + 1, meta.row_group(g).total_byte_size)
                for g in range(meta.num_row_groups)]
    if suffix in TABULAR or ukind == "doc":
        ranged = "jsonl" if suffix == ".jsonl" else None
        if ranged is None:
            return [Piece("table" if suffix in TABULAR else "doc", str(path), name, 0, size, size)]
    else:
        ranged = "paragraphs"
    starts = range(0, max(size, 1), max(1, piece_bytes))
    return [Piece(ranged, str(path), name, a, min(a + piece_bytes, size), min(piece_bytes, size - a))
            for a in starts]


def _mds_pieces(path: Path, name: str) -> list[Piece]:
    MDSDataset(path)  # validates the index and that every shard file exists
    index = json.loads((path / "index.json").read_text(encoding="utf-8"))
    pieces, begin = [], 0
    for entry in index["shards"]:
        n = int(entry["samples"])
        pieces.append(Piece("mds", str(path), name, begin, begin + n, int(entry["raw_data"].get("bytes") or 0)))
        begin += n
    return pieces


def _disk_pieces(path: Path, name: str, split: str, piece_bytes: int) -> list[Piece]:
    ds = open_disk(path, split, "--split NAME")
    rows, nbytes = len(ds), max(1, ds.data.nbytes)
    step = max(1, piece_bytes * rows // nbytes)
    return [Piece("disk", str(path), name, a, min(a + step, rows), nbytes * (min(a + step, rows) - a) // max(1, rows))
            for a in range(0, rows, step)]


def read_piece(piece: Piece, text_column: str = "text", split: str = "train") -> Iterator[tuple[int, str, int]]:
    """(position, text, bytes done) for every non-empty text of `piece`. `position` identifies the
    text within its file (byte offset, row or sample index); `bytes done` grows to about
    `piece.size`. Raises `BadFile` where iter_texts would skip the rest of a file."""
    kind, path = piece.kind, Path(piece.path)
    where = str(path)
    if kind == "paragraphs":
        for pos, text, done in _paragraph_range(path, piece.start, piece.stop):
            if (text := checked(text, text_column, where)) is not None:
                yield pos, text, done
        return
    if kind == "jsonl":
        for pos, line, done in _line_range(path, piece.start, piece.stop):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path} at byte {pos}: not valid JSON ({e})") from None
            if (text := checked(row_value(row, text_column, f"{path} at byte {pos}"), text_column, where)) is not None:
                yield pos, text, done
        return
    if kind == "parquet":
        yield from _parquet_group(path, piece, text_column)
        return
    if kind == "mds":
        ds = text_mds(path, text_column)
        n = max(1, piece.stop - piece.start)
        for i in range(piece.start, piece.stop):
            if (text := checked(ds[i][text_column], text_column, where)) is not None:
                yield i, text, piece.size * (i + 1 - piece.start) // n
        return
    if kind == "disk":
        ds = text_disk(path, text_column, split, "--split NAME")
        part = ds.select_columns([text_column]).select(range(piece.start, piece.stop))
        n, i = max(1, len(part)), piece.start
        for batch in part.iter(batch_size=1024):
            for value in batch[text_column]:
                if (text := checked(value, text_column, where)) is not None:
                    yield i, text, piece.size * (i + 1 - piece.start) // n
                i += 1
        return
    values = hub_values(str(piece.path), text_column, split, piece.start) if kind == "hub" else read_unit("doc" if kind == "doc" else "file", path, text_column, split)
    done = 0
    for i, value in enumerate(values):
        if (text := checked(value, text_column, where)) is not None:
            done = piece.size if kind == "doc" else done
            yield i, text, done


def _parquet_group(path: Path, piece: Piece, column: str) -> Iterator[tuple[int, str, int]]:
    pf = text_parquet(path, column)
    first = sum(pf.metadata.row_group(g).num_rows for g in range(piece.start))
    rows = max(1, pf.metadata.row_group(piece.start).num_rows)
    i = first
    for batch in pf.iter_batches(batch_size=1024, row_groups=[piece.start], columns=[column]):
        for value in batch.column(0).to_pylist():
            if (text := checked(value, column, str(path))) is not None:
                yield i, text, piece.size * (i + 1 - first) // rows
            i += 1


_LONE_CR = re.compile(r"(?<=\r)(?!\n|$)")


def _decode_line(raw: bytes, path: Path) -> list[str]:
    """A b'\\n'-terminated line as the str lines `open(newline="")` would give (it also ends lines
    at a lone '\\r'); BadFile if binary or not UTF-8, as `_lines`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadFile(path) from None
    if "\0" in text:
        raise BadFile(path)
    return _LONE_CR.split(text) if "\r" in text[:-2] else [text]


def _aligned(f, path: Path, start: int) -> int:
    """The first line start at or after byte `start`."""
    if start == 0:
        return 0
    f.seek(start - 1)
    if f.read(1) == b"\n":
        return start
    return start + len(f.readline())


def _previous_line_blank(f, path: Path, at: int) -> bool:
    """Whether the line that ends just before byte `at` (a line start) is blank (or absent)."""
    if at == 0:
        return True
    end, begin, chunk = at, at, 1 << 16
    while begin > 0:  # walk back to the previous b"\n" (lines are short; this is rarely one step)
        lo = max(0, begin - chunk)
        f.seek(lo)
        data = f.read(begin - lo)
        cut = data.rfind(b"\n", 0, len(data) - (1 if begin == end else 0))
        if cut >= 0:
            begin = lo + cut + 1
            break
        begin = lo
    f.seek(begin)
    raw = f.read(end - begin)
    if begin == 0 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        last = _decode_line(raw, path)[-1]
    except BadFile:
        return False
    return not last.strip()


def _raw_lines(path: Path, start: int, stop: int) -> Iterator[tuple[int, int, str, int]]:
    """(offset of the b"\\n" line, offset of the str line, str line, bytes done) from the first
    line start >= `start` to the end of the file; the caller stops once its records start at or
    past `stop`. Ranges are cut at b"\\n" only, so ownership goes by the b"\\n" line's offset."""
    with open(path, "rb") as f:
        pos = _aligned(f, path, start)
        f.seek(pos)
        for raw in f:
            body = raw[3:] if pos == 0 and raw.startswith(b"\xef\xbb\xbf") else raw
            offset = pos  # a BOM belongs to the first line, so that line still starts at 0
            for k, line in enumerate(_decode_line(body, path)):
                yield pos, offset, line, min(stop, pos) - start
                offset += len(line.encode("utf-8")) + (len(raw) - len(body) if k == 0 else 0)
            pos += len(raw)


def _line_range(path: Path, start: int, stop: int) -> Iterator[tuple[int, str, int]]:
    """Lines that start in [start, stop)."""
    for raw_at, offset, line, done in _raw_lines(path, start, stop):
        if raw_at >= stop:
            return
        yield offset, line, done


def _paragraph_range(path: Path, start: int, stop: int) -> Iterator[tuple[int, str, int]]:
    """Paragraphs (blocks between blank lines, as `_paragraphs`) whose first line starts in
    [start, stop); the last one is read past `stop` to its end."""
    with open(path, "rb") as f:
        prev_blank = _previous_line_blank(f, path, _aligned(f, path, start))
    block: list[str] = []
    block_at = done = 0
    for raw_at, offset, line, done in _raw_lines(path, start, stop):
        if line.strip():
            if not block:
                if not prev_blank:  # the tail of a paragraph that began before `start`
                    continue
                if raw_at >= stop:
                    return
                block_at = offset
            block.append(line.rstrip("\r\n"))
        else:
            prev_blank = True
            if block:
                yield block_at, "\n".join(block).strip(), done
                block = []
    if block:
        yield block_at, "\n".join(block).strip(), done


def iter_documents(source: str, text_column: str = "text", split: str = "train"
                   ) -> Iterator[tuple[str, int, str]]:
    """(name, position, text) for every text `iter_texts` gives, in its order: the name of the
    file (or hub shard) and the position `read_piece` gives, which the held-out hash uses. The
    same checks, errors and warning as `iter_texts`."""
    units = source_units(source)
    probe_units(units[1:], text_column, split)
    bad: list = []

    def documents() -> Iterator[tuple[str, int, str]]:
        for unit in units:
            try:
                for piece in unit_pieces(unit, split, 1 << 62):  # whole files: positions do not depend on cuts
                    for position, text, _ in read_piece(piece, text_column, split):
                        yield piece.name, position, text
            except BadFile:
                bad.append(unit.path)

    return guarded(source, documents(), bad)
