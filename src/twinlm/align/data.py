"""Rows for SFT and BCO: load a table from a file, folder or hub id, and check its shape early.

Formats follow TRL's conventions: a row is plain text (`text`), prompt-completion (`prompt`,
`completion`), or conversational (`messages`, or `prompt`/`completion` given as lists of
`{"role", "content"}` messages). BCO rows also carry a boolean `label` (thumbs up/down).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

from twinlm.errors import UserError

_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def load_rows(source: str | Path | Dataset | list[dict], split: str = "train") -> Dataset:
    """A `datasets.Dataset` from a list of dicts, a jsonl/json/csv/parquet file, a
    `save_to_disk` folder, or a hub id (`load_dataset(source, split=split)`)."""
    if isinstance(source, Dataset):
        return source
    if isinstance(source, list):
        return Dataset.from_list(source)
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    path = Path(source)
    bars = is_progress_bar_enabled()
    disable_progress_bar()  # "Generating train split" bars would bury a one-line error
    try:
        if path.is_file():
            builder = _FILE_BUILDERS.get(path.suffix)
            if builder is None:
                raise UserError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(_FILE_BUILDERS)}")
            return load_dataset(builder, data_files=str(path), split="train")
        if path.is_dir():
            if not any((path / f).exists() for f in ("dataset_info.json", "dataset_dict.json", "state.json")):
                raise UserError(f"{path} is a folder but not a datasets.save_to_disk folder")
            data = load_from_disk(str(path))
            if isinstance(data, DatasetDict):
                if split not in data:
                    raise UserError(f"{path} has no split {split!r}; splits: {', '.join(data)}")
                data = data[split]
            return data
        if str(source).startswith((".", "/", "~")) or path.suffix in _FILE_BUILDERS:
            raise UserError(f"data {source!r} does not exist")
        return load_dataset(str(source), split=split)
    except UserError:
        raise
    except Exception as err:  # datasets raises many types for unreadable data; the user needs one line
        raise UserError(f"cannot read data {str(source)!r}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    finally:
        if bars:
            enable_progress_bar()


@contextmanager
def no_dataset_bars():
    """datasets' progress bars off: data preparation's stack of map bars would bury the training bar."""
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    was = is_progress_bar_enabled()
    disable_progress_bar()
    try:
        yield
    finally:
        if was:
            enable_progress_bar()


def is_conversational(value) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict) and "role" in value[0]


def check_bco_rows(rows: Dataset, where: str = "BCO data") -> None:
    """UserError unless every row has prompt, completion and a boolean label, with both labels present."""
    missing = [c for c in ("prompt", "completion", "label") if c not in rows.column_names]
    if missing:
        raise UserError(
            f"{where} needs columns prompt, completion, label (bool); missing {', '.join(missing)}; "
            f"found: {', '.join(sorted(rows.column_names)) or 'no columns'}"
        )
    labels = rows["label"]
    bad = next((v for v in labels if not isinstance(v, bool)), None)
    if bad is not None:
        raise UserError(
            f"{where}: column 'label' must hold booleans (true = desirable completion), found {bad!r} "
            f"({type(bad).__name__})"
        )
    if len(set(labels)) < 2:
        only = "desirable (true)" if labels and labels[0] else "undesirable (false)"
        raise UserError(
            f"{where}: every label is {only}; BCO needs both desirable and undesirable completions "
            f"({len(labels)} rows)"
        )


def check_sft_rows(rows: Dataset, where: str = "SFT data") -> str:
    """The row format ('text', 'prompt-completion' or 'conversational'); UserError if none fits."""
    cols = set(rows.column_names)
    if "messages" in cols:
        check_turns(rows, "messages", where)
        return "conversational"
    if {"prompt", "completion"} <= cols:
        if is_conversational(rows[0]["prompt"]):
            check_turns(rows, "prompt", where)
            check_turns(rows, "completion", where)
            return "conversational"
        return "prompt-completion"
    if "text" in cols:
        return "text"
    raise UserError(
        f"{where} needs a 'text' column, 'prompt' and 'completion' columns, or a 'messages' column; "
        f"found: {', '.join(sorted(cols)) or 'no columns'}"
    )


def check_turns(rows: Dataset, column: str, where: str) -> None:
    """UserError unless every row's `column` is a non-empty list of {role, content} turns (TRL's
    conversational format), naming the first row that is not."""
    for i, turns in enumerate(rows[column]):
        ok = isinstance(turns, list) and bool(turns) and all(
            isinstance(t, dict) and isinstance(t.get("role"), str) and t.get("content") is not None for t in turns)
        if not ok:
            shown = repr(turns)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise UserError(f"{where}: row {i}: '{column}' must be a list of turns {{\"role\": ..., \"content\": ...}}, "
                            f"found {type(turns).__name__} {shown}")
