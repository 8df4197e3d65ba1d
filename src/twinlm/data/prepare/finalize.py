"""The last step of `twinlm prepare` (and all of `--merge`): finished units become the train and
held-out stores, in unit order, so the result is the same whoever did the units."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from twinlm.data.heldout import pick_heldout
from twinlm.data.prepare.format import META, PROGRESS, UNITS, unit_dir
from twinlm.data.store import RollingShards, ShardWriter, id_dtype, shard_names, write_index
from twinlm.errors import UserError
from twinlm.outputs import publish, staging, write_json


@dataclass
class Summary:
    """What a finished prepare wrote (printed as its last line)."""

    out: Path
    train_documents: int = 0
    train_tokens: int = 0
    heldout_documents: int = 0
    heldout_tokens: int = 0
    shards: int = 0
    units: int = 0
    units_done_now: int = 0
    seconds: float = 0.0
    complete: bool = True
    part: tuple[int, int] = (0, 1)
    warnings: list[str] = field(default_factory=list)

    def line(self) -> str:
        if not self.complete:
            i, n = self.part
            return (f"prepared part {i}/{n} of {self.out}: {self.units} units ({self.units_done_now} now) in "
                    f"{self.seconds:.1f} s; when every part is done: twinlm prepare --merge PART ... --out P")
        rate = self.train_tokens / max(self.seconds, 1e-9)
        return (f"prepared {self.out}: train {self.train_documents:,} documents, {self.train_tokens:,} tokens "
                f"({self.shards} shards); held-out {self.heldout_documents:,} documents, "
                f"{self.heldout_tokens:,} tokens; {self.units} units ({self.units_done_now} now) in "
                f"{self.seconds:.1f} s ({rate:,.0f} tokens/s)")


def _place(src: Path, dst: Path, move: bool) -> None:
    """Put a finished shard file at its final name: moved (one machine), else hard-linked (no copy,
    the part stays intact), copied only across file systems. Safe to repeat after an interruption."""
    if not src.exists():
        if dst.exists():
            return  # moved by an earlier, interrupted finalize
        raise UserError(f"{src} is missing: the prepared part is damaged; re-run its prepare")
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    if move:
        os.replace(src, dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


@lru_cache(maxsize=4)  # documents are read unit by unit: a few open shards suffice
def _docs(path: Path, n: int, dtype: str) -> tuple[np.memmap, np.ndarray]:
    """(token ids, document offsets) of the shard whose tokens file is `path` (n tokens)."""
    tokens = np.memmap(path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r", shape=(n,)) if n else np.zeros(0, dtype)
    return tokens, np.fromfile(path.with_suffix(".docs"), dtype="<i8")


def finalize(meta: dict, records: dict[int, tuple[Path, dict]], parts: list[Path], out: Path, move: bool,
             summary: Summary | None = None) -> Summary:
    """Lay every unit's shards out, in unit order, as `out/train` and `out/heldout`, and mark
    `out/prepare.json` complete. `records`: unit -> (the part folder holding it, its record).
    Deterministic: the same units give the same stores."""
    _docs.cache_clear()  # a shard path may hold other ids than in an earlier finalize (--overwrite)
    try:
        return _finalize(meta, records, parts, out, move, summary or Summary(out=out, units=len(records)))
    finally:
        _docs.cache_clear()


def _finalize(meta: dict, records: dict, parts: list[Path], out: Path, move: bool, summary: Summary) -> Summary:
    settings = meta["settings"]
    dtype = id_dtype(meta["tokenizer"]["vocab_size"])
    kept = _drop_after_bad_files(records, summary)
    # The held-out rule (twinlm.data.heldout) over every unit's candidates.
    candidates = [(h, (u, c, records[u][1]["heldout"]["ordinals"][c]), records[u][1]["heldout"]["tokens"][c])
                  for u in kept for c, h in enumerate(records[u][1]["heldout"]["hashes"])]
    documents = sum(records[u][1]["documents"] for u in kept)
    if documents == 0:
        raise UserError(f"empty corpus: no usable text in '{meta['source']['source']}'")
    pick = pick_heldout(candidates, documents, settings["heldout_share"], settings["heldout_max_documents"],
                        settings.get("heldout_max_tokens"))
    held = [(h, u, c, o) for h, (u, c, o), _ in pick.held]
    returned = [(h, u, c, o) for h, (u, c, o), _ in pick.returned]
    lowest = None  # a training document to hold out after all: [hash, shard, doc, ordinal, unit]
    if pick.lowest_training:
        lowest = min((records[u][1]["lowest"] + [u] for u in kept if records[u][1]["lowest"]), key=lambda x: x[0])
    heldout_docs = sorted([(u, o, ("candidate", c)) for _, u, c, o in held]
                          + ([(lowest[4], lowest[3], ("train", lowest[1], lowest[2]))] if lowest else []))
    extra = {"tokenizer": meta["tokenizer"]["fingerprint"], "layout": meta["source"]["layout"],
             "fingerprint": f"{meta['source']['layout']}-{meta['tokenizer']['fingerprint']}"}
    _write_docs_store(out / "heldout", dtype, records, heldout_docs, extra)
    shards = _lay_out_train(out / "train", dtype, records, kept, lowest, move)
    if returned:  # candidates past the cap train after all, in source order, in the last shard(s)
        writer = RollingShards(out / "train", dtype, settings["shard_tokens"], first=len(shards))
        for _, u, c, _ in sorted(returned, key=lambda x: (x[1], x[3])):
            writer.add(_read_doc(records[u][0], records[u][1], ("candidate", c), dtype))
        shards += writer.close()
    write_index(out / "train", dtype, shards, **extra)
    train_tokens = sum(s["num_tokens"] for s in shards)
    heldout_tokens = json.loads((out / "heldout" / "index.json").read_text())["num_tokens"]
    summary.train_documents = sum(s["num_documents"] for s in shards)
    summary.train_tokens, summary.shards = train_tokens, len(shards)
    summary.heldout_documents, summary.heldout_tokens = len(heldout_docs), heldout_tokens
    share = len(heldout_docs) / documents
    if share > 0.05:
        summary.warnings.append(f"the held-out split is {len(heldout_docs)} of {documents} documents ({share:.0%}): "
                                "the corpus is small; training sees the rest")
    if not heldout_docs and settings["heldout_share"] > 0:
        summary.warnings.append(f"the held-out split is empty ({documents} document(s)); held-out evaluation has no data")
    for w in summary.warnings:
        warnings.warn(w, UserWarning, stacklevel=2)
    final = dict(meta, complete=True, shard=None, parts=[str(p) for p in parts] if not move else None,
                 train={"documents": summary.train_documents, "tokens": train_tokens, "shards": len(shards)},
                 heldout={"documents": len(heldout_docs), "tokens": heldout_tokens})
    final.pop("units_done", None)
    if out not in parts:  # a merge: the tokenizer comes from the first part
        if not (out / "tokenizer").exists():
            shutil.copytree(parts[0] / "tokenizer", out / "tokenizer")
    write_json(out / META, final)
    if move:
        shutil.rmtree(out / UNITS, ignore_errors=True)
        shutil.rmtree(out / PROGRESS, ignore_errors=True)
    return summary


def _drop_after_bad_files(records: dict, summary: Summary) -> list[int]:
    """Units in order, without those after the unit where a file turned out binary or not UTF-8
    (iter_texts skips the rest of such a file; its later units hold nothing else). Files are
    named relative to the source root, so parts from machines with other paths agree."""
    bad_from: dict[str, int] = {}
    kept = []
    for u in sorted(records):
        record = records[u][1]
        files = record["files"]
        if len(files) == 1 and files[0] in bad_from:
            continue
        kept.append(u)
        for name in record["bad"]:
            bad_from.setdefault(name, u)
    if bad_from:
        summary.warnings.append(f"skipped the rest of {len(bad_from)} file(s) that are binary or not valid UTF-8 "
                                f"(e.g. {next(iter(bad_from))})")
    return kept


def _read_doc(part: Path, record: dict, where: tuple, dtype) -> np.ndarray:
    """One document of a unit: ("candidate", c), or ("train", shard, doc)."""
    folder = unit_dir(part, record["unit"])
    if where[0] == "candidate":
        folder, entry, j = folder / "heldout", record["heldout"]["shard"], where[1]
    else:
        entry, j = record["train"][where[1]], where[2]
    tokens, offsets = _docs(folder / entry["tokens"], int(entry["num_tokens"]), np.dtype(dtype).name)
    return np.asarray(tokens[offsets[j]:offsets[j + 1]])


def _write_docs_store(folder: Path, dtype, records: dict, docs: list, extra: dict) -> None:
    """A small store (the held-out split) written fresh from (unit, ordinal, where) documents."""
    tmp = staging(folder)
    writer = ShardWriter(tmp, 0, dtype)
    for u, _, where in docs:
        writer.add(_read_doc(records[u][0], records[u][1], where, dtype))
    entry = writer.close()
    if not docs:  # an empty store: no shard at all
        for name in (entry["tokens"], entry["docs"]):
            (tmp / name).unlink()
    write_index(tmp, dtype, [entry] if docs else [], **extra)
    publish(tmp, folder)


def _lay_out_train(folder: Path, dtype, records: dict, kept: list[int], lowest, move: bool) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.json").unlink(missing_ok=True)
    shards = []
    for u in kept:
        part, record = records[u]
        unit = unit_dir(part, u)
        for k, entry in enumerate(record["train"]):
            src_folder = unit
            if lowest and lowest[4] == u and lowest[1] == k:  # this shard gives its lowest-hash document
                entry = _without_doc(unit, entry, lowest[2], dtype)
                src_folder = unit / "rewritten"
            if entry["num_documents"] == 0:
                continue
            tokens_name, docs_name = shard_names(len(shards))
            _place(src_folder / entry["tokens"], folder / tokens_name, move)
            _place(src_folder / entry["docs"], folder / docs_name, move)
            shards.append(dict(entry, tokens=tokens_name, docs=docs_name))
    return shards


def _without_doc(unit: Path, entry: dict, j: int, dtype) -> dict:
    """A copy of one shard without document `j`, in `unit/rewritten/` (the original is kept, so
    this can be redone after an interruption)."""
    tokens, offsets = _docs(unit / entry["tokens"], int(entry["num_tokens"]), np.dtype(dtype).name)
    number = int(entry["tokens"].removeprefix("shard-").removesuffix(".bin"))
    writer = ShardWriter(unit / "rewritten", number, dtype)
    for d in range(len(offsets) - 1):
        if d != j:
            writer.add(np.asarray(tokens[offsets[d]:offsets[d + 1]]))
    return writer.close()
