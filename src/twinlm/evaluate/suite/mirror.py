"""Offline mirrors of hub datasets (`--data-dir DIR`).

A mirror keeps each dataset in the hub dataset's own layout and columns:
`DIR/<hub id>[/<config>]/<split>-*.{parquet,jsonl,json,csv}`, e.g.
`DIR/nyu-mll/glue/sst2/train-00000-of-00001.parquet`. With no `--data-dir`, the hub is used.
"""

from __future__ import annotations

from pathlib import Path

from twinlm.errors import UserError
from twinlm.evaluate.suite.base import DataNeed

SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")
BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}


class MissingData(UserError):
    """A task's data is neither in the mirror nor reachable; the message names both places."""


def folder_of(data_dir: Path, hub_id: str, config: str | None) -> Path:
    return data_dir / hub_id / config if config else data_dir / hub_id


def split_files(hub_id: str, config: str | None, split: str, data_dir: Path | None) -> list[Path]:
    """The mirror's files for one split (sorted); [] when no mirror is used (read the hub)."""
    if data_dir is None:
        return []
    folder = folder_of(Path(data_dir), hub_id, config)
    files = sorted(p for p in folder.glob(f"{split}-*") if p.suffix in SUFFIXES)
    if not files:
        files = sorted(p for p in folder.glob(f"{split}.*") if p.suffix in SUFFIXES)
    if not files:
        name = f"{hub_id}" + (f" ({config})" if config else "")
        raise MissingData(f"{name} split '{split}' is not in the mirror: looked for {folder}/{split}-*.parquet "
                          f"(or .jsonl/.json/.csv); download it there, or leave out the task (or pass --skip-missing)")
    kinds = {p.suffix for p in files}
    if len({BUILDERS[k] for k in kinds}) > 1:
        raise UserError(f"{folder}: split '{split}' mixes file types {sorted(kinds)}; keep one")
    return files


def load_split(hub_id: str, config: str | None, split: str, data_dir: Path | None):
    """The split as a `datasets.Dataset`: from the mirror's files, or from the hub."""
    import datasets

    files = split_files(hub_id, config, split, data_dir)
    if files:
        builder = BUILDERS[files[0].suffix]
        return datasets.load_dataset(builder, data_files=[str(p) for p in files], split="train")
    return datasets.load_dataset(hub_id, config, split=split)


def find(hub_id: str, config: str | None, split: str, data_dir: Path | None):
    """The split as a DataNeed: its mirror files and row count, or no files when it is missing
    from the mirror (or no mirror is used: read from the hub)."""
    try:
        files = split_files(hub_id, config, split, data_dir)
    except MissingData:
        files = []
    return DataNeed(hub_id, config, split, files, count_rows(files))


def looked_in(need, data_dir: Path | None) -> str:
    """Where a missing split was looked for, for the one-line error."""
    return f"{folder_of(Path(data_dir), need.hub_id, need.config)}/{need.split}-*.parquet" if data_dir else "the hub"


def count_rows(files: list[Path]) -> int | None:
    """Rows in a mirror's files (parquet: from the footer, without reading the data)."""
    if not files:
        return None
    total = 0
    for path in files:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            total += pq.ParquetFile(path).metadata.num_rows
        elif path.suffix == ".jsonl":
            with path.open("rb") as f:
                total += sum(1 for line in f if line.strip())
        else:
            return None  # csv with quoted newlines, json arrays: not worth parsing for an estimate
    return total
