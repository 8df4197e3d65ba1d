"""Pre-tokenized sources: token-id columns read as they are, one sample per document or chunk.

Ettin's data (and most published pretraining sets) ship token ids, not text. A stream is
*pre-tokenized* when it has an ids column (`data.ids_column`, default `input_ids`), *text* when
it has the text column, and an error naming the columns found when it has neither. Read here:

* MDS folders with an `ndarray[:dtype]` ids column (any integer dtype, raw or zstd shards), one
  folder or a tree of leaf streams (each with its own `index.json`, or one merged top-level
  `index.json` whose shard basenames hold the subfolders);
* parquet, jsonl/json-lines and arrow (IPC stream or file) files, and `datasets.save_to_disk`
  folders, with a list-of-integers ids column; a folder or glob of them, read in sorted order;
* Ettin's training-order files (`jhu-clsp/ettin-data-order`, `checkpoint_*/steps_*.parquet` with
  `input_ids` and a `step` column): *ordered*, i.e. replayed in file and step order, never shuffled.

Samples keep their boundaries: each yielded array is one sample, stored as one document, so the
document offsets of the store mark exactly the published sample boundaries. Ids are checked
against the tokenizer's vocabulary while they are read, and the tokenizer's CLS/BOS (SEP/EOS)
against the data's framing on the first samples of every stream, before any work.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twinlm.data.sources.mds import MDSDataset
from twinlm.data.sources.resolve import Unit, open_arrow, open_disk, open_parquet, source_units
from twinlm.data.sources.text import unit_columns
from twinlm.data.store import is_store
from twinlm.errors import UserError

STEP_COLUMNS = ("step", "steps", "global_step")  # a training-order file's step number
FRAMING_SAMPLES = 16  # first samples of each stream whose first/last ids reveal the framing
FRAMING_STREAMS = 4  # streams whose first samples are checked (opening every leaf of a big tree costs minutes)
_TABLE_SUFFIXES = (".parquet", ".jsonl", ".json", ".arrow")
_PHASE_PREFIX = re.compile(r"^(checkpoint|ext|decay)_\d+$")
_ORDER_FILE = re.compile(r"^steps_\d+_to_\d+\.parquet$")


@dataclass
class SourceProbe:
    """What a source is, found by opening its indexes and schemas only (no sample is decoded)."""

    source: str
    kind: str  # "tokens" (pre-tokenized) | "text"
    units: list[Unit]  # its streams ("file" and "doc" units are table files)
    columns: list[str]  # the first stream's
    ordered: bool = False  # a training-order source: replayed as the files order it
    step_column: str | None = None

    def num_samples(self, split: str = "train") -> int | None:
        """Samples in the source, from indexes and file metadata only; None if a unit cannot say
        (JSON lines). For progress bars."""
        total = 0
        for unit in self.units:
            if unit.kind == "mds":
                total += len(MDSDataset(unit.path))
            elif unit.kind == "disk":
                total += len(open_disk(unit.path, split))
            elif unit.suffix == ".parquet":
                total += open_parquet(unit.path).metadata.num_rows
            else:
                return None
        return total

    def describe(self) -> str:
        what = "pre-tokenized" if self.kind == "tokens" else "text"
        order = ", replayed in file order" if self.ordered else ""
        n = len(self.units)
        return f"{what} ({n} stream{'s' * (n != 1)}{order})"


def _columns(unit: Unit, split: str) -> list[str]:
    """The column names of a unit (none for the hub, which is read as text)."""
    return [] if unit.kind == "hub" else unit_columns(unit, split) or []


def _json_rows(path: Path) -> Iterator[Any]:
    with open(path, encoding="utf-8") as f:
        head = f.read(1)
        f.seek(0)
        if head == "[":  # one JSON list of rows
            yield from json.load(f)
            return
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}:{lineno}: not valid JSON ({e})") from None


def _streams(source: str) -> list[Unit]:
    """The units of `source` that can hold token ids (side files and plain text cannot)."""
    return [u for u in source_units(source) if u.kind not in ("file", "doc") or u.suffix in _TABLE_SUFFIXES]


def probe_source(source: str, ids_column: str = "input_ids", text_column: str = "text",
                 split: str = "train", fix: str = "set data.ids_column or data.text_column") -> SourceProbe:
    """Classify `source` as pre-tokenized or text from its columns; UserError when it is neither
    (ending with `fix`, the way to name the column in the caller's terms), when its streams
    disagree, or when `text_column` names a non-text column of a token stream."""
    if is_store(source):
        raise UserError(f"{source} is a bare token store; point at the prepared folder that holds it "
                        "(the one with prepare.json, train/ and heldout/)")
    units = _streams(source)
    if not units:
        return SourceProbe(str(source), "text", [], [])  # plain text files: the text reader reads them
    kinds = set()
    first_columns = None
    for unit in units:
        columns = _columns(unit, split)
        first_columns = columns if first_columns is None else first_columns
        if unit.kind == "hub" or (unit.kind in ("file", "doc") and unit.suffix == ".json" and not columns):
            kinds.add("text")
        elif text_column in columns:
            # Text wins over ids when a stream has both: tokenizing with the recipe's tokenizer is
            # always consistent, while ids may come from another tokenizer with a smaller range.
            if ids_column in columns and text_column != "text" and _looks_like_ids(unit, text_column, split):
                # `--set data.text_column=id` on Ettin's data would train on the id strings.
                raise UserError(f"stream {str(unit.path)}: column '{text_column}' holds identifiers, not text, and the "
                                f"stream is pre-tokenized (column '{ids_column}'); drop data.text_column to train "
                                "on its token ids")
            kinds.add("text")
        elif ids_column in columns:
            kinds.add("tokens")
        else:
            found = ", ".join(columns) or "none"
            raise UserError(f"stream {str(unit.path)} has neither a token-ids column '{ids_column}' nor a text column "
                            f"'{text_column}'; columns found: {found}; {fix}")
    if len(kinds) > 1:
        raise UserError(f"source {source!r} mixes pre-tokenized streams (column '{ids_column}') and text streams; "
                        "prepare them as separate streams")
    kind = kinds.pop()
    columns = first_columns
    step = next((c for c in STEP_COLUMNS if c in columns), None)
    # Training-order data: a step column, or Ettin's `steps_000001_to_000100.parquet` file names.
    files = [u for u in units if u.kind in ("file", "doc")]
    named = all(_ORDER_FILE.match(Path(u.path).name) for u in files)
    ordered = kind == "tokens" and len(files) == len(units) and (step is not None or named)
    if ordered:
        phases = sorted({p.split("_")[0] for u in units for p in Path(u.path).parts if _PHASE_PREFIX.match(p)})
        if len(phases) > 1:
            raise UserError(f"training-order source {source!r} spans phases {', '.join(phases)} (step numbers restart "
                            "at each phase); point each phase at one of them, e.g. .../checkpoint_*")
    return SourceProbe(str(source), kind, units, columns, ordered, step if ordered else None)


def _looks_like_ids(unit: Unit, column: str, split: str, samples: int = 8) -> bool:
    """True when the first values of `column` are all short single words (identifiers, not text)."""
    values = []
    if unit.kind == "mds":
        ds = MDSDataset(unit.path)
        values = [ds[k][column] for k in range(min(samples, len(ds)))]
    elif unit.kind == "disk":
        values = open_disk(unit.path, split)[:samples][column]
    elif unit.suffix == ".parquet":
        values = next(open_parquet(unit.path).iter_batches(batch_size=samples, columns=[column])).column(0).to_pylist()
    elif unit.suffix in (".jsonl", ".json"):
        rows = _json_rows(unit.path)
        values = [row.get(column) for row, _ in zip(rows, range(samples))]
    return bool(values) and all(isinstance(v, str) and len(v) < 64 and not any(c.isspace() for c in v)
                                for v in values)


def _as_ids(value: Any, where: str) -> np.ndarray:
    arr = value if isinstance(value, np.ndarray) else np.asarray(value if value is not None else [])
    if arr.ndim != 1:
        arr = arr.reshape(-1) if arr.ndim == 2 and 1 in arr.shape else arr
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise UserError(f"{where}: the ids column holds {arr.dtype} values of shape {arr.shape}, not a list of "
                        "integer token ids")
    return arr


def _unit_samples(unit: Unit, ids_column: str, split: str, step_column: str | None) -> Iterator[np.ndarray]:
    """The ids of each sample of one unit, in stored order."""
    where = str(unit.path)
    if unit.kind == "mds":
        ds = MDSDataset(unit.path)
        if not ds.columns[ids_column].startswith("ndarray"):
            raise UserError(f"stream {where}: column '{ids_column}' is encoded '{ds.columns[ids_column]}', "
                            "not an ndarray of token ids")
        for k in range(len(ds)):
            yield _as_ids(ds[k][ids_column], f"{where} sample {k}")
        return
    if unit.kind == "disk":
        ds = open_disk(unit.path, split).select_columns([ids_column]).with_format("numpy")
        for batch in ds.iter(batch_size=256):
            for k, value in enumerate(batch[ids_column]):
                yield _as_ids(value, f"{where} sample {k}")
        return
    if unit.suffix in (".parquet", ".arrow"):
        yield from _table_samples(unit, ids_column, step_column)
        return
    for k, row in enumerate(_json_rows(unit.path)):
        if not isinstance(row, dict) or ids_column not in row:
            raise UserError(f"{where} row {k}: no column '{ids_column}'")
        yield _as_ids(row[ids_column], f"{where} row {k}")


def _table_samples(unit: Unit, ids_column: str, step_column: str | None) -> Iterator[np.ndarray]:
    """Rows of a parquet or arrow file, batch by batch (memory: one record batch)."""
    columns = [ids_column] + ([step_column] if step_column else [])
    if unit.suffix == ".parquet":
        batches = open_parquet(unit.path).iter_batches(batch_size=256, columns=columns)
    else:
        batches = iter(open_arrow(unit.path))
    last_step, row = None, 0
    for batch in batches:
        ids = batch.column(batch.schema.get_field_index(ids_column))
        if step_column:
            steps = batch.column(batch.schema.get_field_index(step_column)).to_numpy(zero_copy_only=False)
            if len(steps) and ((last_step is not None and steps[0] < last_step) or np.any(np.diff(steps) < 0)):
                # Replaying means trusting the file order; a shuffled file would silently change it.
                raise UserError(f"{str(unit.path)}: rows are not in '{step_column}' order near row {row}; "
                                "a training-order file must list its steps in order")
            last_step = steps[-1] if len(steps) else last_step
        offsets = ids.offsets.to_numpy() if hasattr(ids, "offsets") else None
        if offsets is not None and ids.null_count == 0:
            values = ids.values.to_numpy(zero_copy_only=False)
            base = offsets[0]
            for k in range(len(ids)):
                yield _as_ids(values[offsets[k] - base:offsets[k + 1] - base], f"{str(unit.path)} row {row + k}")
        else:
            for k, value in enumerate(ids.to_pylist()):
                yield _as_ids(value, f"{str(unit.path)} row {row + k}")
        row += len(ids)


def iter_token_documents(source: str | SourceProbe, ids_column: str = "input_ids", split: str = "train",
                         vocab_size: int | None = None, tokenizer_name: str = "the tokenizer",
                         ) -> Iterator[np.ndarray]:
    """Every sample of a pre-tokenized source as a 1-D integer array, in the source's order
    (streams sorted by path, samples as stored). With `vocab_size`, an id at or above it (or a
    negative one) is a UserError naming the stream, the sample and the id, raised as it is read."""
    return (ids for _, _, ids in token_documents(source, ids_column, split, vocab_size, tokenizer_name))


def token_documents(source: str | SourceProbe, ids_column: str = "input_ids", split: str = "train",
                    vocab_size: int | None = None, tokenizer_name: str = "the tokenizer",
                    ) -> Iterator[tuple[str, int, np.ndarray]]:
    """`iter_token_documents` with each sample's stream name (`Unit.name`) and index in its
    stream, which the held-out hash uses."""
    probe = source if isinstance(source, SourceProbe) else probe_source(source, ids_column, split=split)
    if probe.kind != "tokens":
        raise UserError(f"source {probe.source!r} is text, not pre-tokenized: no column '{ids_column}'")
    for unit in probe.units:
        for k, ids in enumerate(_unit_samples(unit, ids_column, split, probe.step_column)):
            if ids.size:
                low, top = int(ids.min()), int(ids.max())
                if low < 0 or (vocab_size is not None and top >= vocab_size):
                    bad = low if low < 0 else top
                    raise UserError(f"stream {unit.path} sample {k}: token id {bad} is outside the vocabulary of "
                                    f"{tokenizer_name} (0..{vocab_size - 1 if vocab_size else '?'}); the data was "
                                    "tokenized with another tokenizer: set tokenizer.name_or_path to that one")
            yield unit.name, k, ids


def data_framing(probe: SourceProbe, ids_column: str = "input_ids", split: str = "train",
                 samples: int = FRAMING_SAMPLES) -> dict[str, tuple[int | None, int | None]]:
    """Per stream: (id every one of its first samples starts with, id they all end with); None
    where they differ or where the stream has fewer than two samples (nothing to compare)."""
    out = {}
    for unit in probe.units[:FRAMING_STREAMS]:
        firsts, lasts, n = set(), set(), 0
        for ids in _unit_samples(unit, ids_column, split, probe.step_column):
            if ids.size:
                firsts.add(int(ids[0]))
                lasts.add(int(ids[-1]))
                n += 1
            if n >= samples:
                break
        out[str(unit.path)] = (next(iter(firsts)) if n >= 2 and len(firsts) == 1 else None,
                          next(iter(lasts)) if n >= 2 and len(lasts) == 1 else None)
    return out


def check_framing(probe: SourceProbe, tokenizer, ids_column: str = "input_ids", split: str = "train",
                  tokenizer_name: str = "the tokenizer") -> None:
    """UserError when the data's samples start (end) with a common id that is not the tokenizer's
    CLS/BOS (SEP/EOS): the ids then come from another tokenizer or another framing convention."""
    starts = {i for i in (tokenizer.cls_token_id, tokenizer.bos_token_id) if i is not None}
    ends = {i for i in (tokenizer.sep_token_id, tokenizer.eos_token_id) if i is not None}
    special = set(tokenizer.all_special_ids)
    for name, (first, last) in data_framing(probe, ids_column, split).items():
        # Only a special id of some tokenizer signals framing; ordinary text may share a first byte.
        if first is not None and first not in starts and (first in special or first in _KNOWN_FRAMING):
            raise UserError(f"stream {name}: samples start with id {first}, but {tokenizer_name}'s CLS/BOS is "
                            f"{sorted(starts)}; the data was framed by another tokenizer")
        if last is not None and last not in ends and (last in special or last in _KNOWN_FRAMING):
            raise UserError(f"stream {name}: samples end with id {last}, but {tokenizer_name}'s SEP/EOS is "
                            f"{sorted(ends)}; the data was framed by another tokenizer")


# Ids that frame samples in widely published pretokenized data: ModernBERT/Ettin CLS/SEP, BERT's
# [CLS]/[SEP], GPT-2/OLMo's <|endoftext|>, Llama's <s>/</s>.
_KNOWN_FRAMING = {50281, 50282, 101, 102, 50256, 1, 2}
