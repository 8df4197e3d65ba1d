"""One unit of `twinlm prepare`'s work: the layout of units over a source, and the worker that
tokenizes a unit into its own shards and records it (see `twinlm.data.prepare.pipeline`)."""

from __future__ import annotations

import os
import shutil
import sys
import time
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from twinlm.data.heldout import heldout_hash
from twinlm.data.prepare.format import IDS_COLUMN, PrepareSettings, record_path, unit_dir
from twinlm.data.sources.ids import token_documents
from twinlm.data.sources.pieces import WHOLE_FILE_KINDS, Piece, read_piece
from twinlm.data.sources.text import BadFile
from twinlm.data.store import RollingShards, ShardWriter
from twinlm.data.tokenizer import document_ids
from twinlm.errors import UserError
from twinlm.outputs import write_json

TOKENIZE_BATCH = 256
MIB = 1 << 20


# --- the layout -----------------------------------------------------------------------------

def plan_units(pieces: list[Piece], unit_bytes: int) -> list[list[Piece]]:
    """Consecutive pieces grouped into units of about `unit_bytes`. A unit holds pieces of one
    file (or folder), or several whole small files; never parts of two large files, so that a
    file found bad mid-way drops only units of its own."""
    units: list[list[Piece]] = []
    size = 0
    for piece in pieces:
        last = units[-1][-1] if units else None
        joinable = last is not None and (
            last.path == piece.path or (last.kind in WHOLE_FILE_KINDS and piece.kind in WHOLE_FILE_KINDS))
        if joinable and size + piece.size <= unit_bytes and piece.kind not in ("hub", "tokens"):
            units[-1].append(piece)
            size += piece.size
        else:
            units.append([piece])
            size = piece.size
    return units


def auto_unit_bytes(total: int) -> int:
    # About 256 units for corpora up to 64 GiB (enough to keep many workers busy and the bar
    # moving); past that, 256 MiB units keep the unit and shard count near total/256 MiB.
    return int(min(256 * MIB, max(MIB, total // 256)))


# --- one unit of work -----------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def worker_init(tokenizer_path: str, counter, parent: int, lock_fd: int | None = None) -> None:
    import threading

    if lock_fd is not None:  # a forked copy of the parent's lock: the lock must die with the parent
        try:
            os.close(lock_fd)
        except OSError:
            pass  # not inherited (spawn)

    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per worker: --workers decides the cores
    quiet_libraries()
    _WORKER.update(tokenizer=load_worker_tokenizer(tokenizer_path), counter=counter)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A worker whose parent was killed (SIGKILL leaves no time to stop the pool) exits instead of
    living on as an orphan; its unfinished unit has no record and is redone on resume."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def quiet_libraries() -> None:
    """The prepare bar is the only bar: no per-file bars from `datasets` in the workers."""
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass


def load_worker_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    tok.model_max_length = sys.maxsize  # documents are never truncated; silences the length warning
    return tok


def _documents(piece: Piece, settings: PrepareSettings, tok):
    """(position, ids, bytes done) of every document of a piece, tokenized in batches; after the
    last readable document of a file found binary or not UTF-8, `BadFile`."""

    if piece.kind == "tokens":
        yield from _token_docs(piece, settings, len(tok))
        return
    stream = read_piece(piece, settings.text_column, settings.split)
    while True:
        batch, failed = [], False
        try:
            batch += islice(stream, TOKENIZE_BATCH)
        except BadFile:  # keep what was read before the bad line, as iter_texts does
            failed = True
        if batch:
            for (pos, _, done), ids in zip(batch, document_ids(tok, [t for _, t, _ in batch])):
                yield pos, np.asarray(ids, dtype=np.int64), done
        if failed:
            raise BadFile(piece.path)
        if len(batch) < TOKENIZE_BATCH:
            return


def _token_docs(piece: Piece, settings: PrepareSettings, vocab: int):
    """(position, ids, 0) of one stream of a pre-tokenized source, ids checked against the
    tokenizer's vocabulary."""
    for _, pos, ids in token_documents(piece.path, IDS_COLUMN, settings.split):
        ids = np.asarray(ids)
        if ids.size and (int(ids.max()) >= vocab or int(ids.min()) < 0):
            bad = int(ids.max()) if int(ids.max()) >= vocab else int(ids.min())
            raise UserError(f"{piece.path}: document {pos} holds token id {bad}, outside the tokenizer's "
                            f"vocabulary of {vocab}; prepare it with the tokenizer it was made with")
        yield pos, ids, 0


def run_unit(out: Path, u: int, pieces: list[Piece], settings: PrepareSettings, dtype: str,
             tokenizer=None, counter=None) -> dict:
    """Tokenize one unit into `out/.units/uNNNNNN/` and record it; returns the record."""
    tok = tokenizer if tokenizer is not None else _WORKER["tokenizer"]
    counter = counter if counter is not None else _WORKER.get("counter")
    folder = unit_dir(out, u)
    shutil.rmtree(folder, ignore_errors=True)  # left by an interrupted attempt
    dtype = np.dtype(dtype)
    train = RollingShards(folder, dtype, settings.shard_tokens)
    held = ShardWriter(folder / "heldout", 0, dtype)  # candidates; finalize picks the held-out split
    held_hash: list[float] = []
    held_ordinal: list[int] = []
    held_tokens: list[int] = []
    best: list | None = None  # [hash, shard, doc, ordinal] of the lowest-hash training document
    ordinal = tokens = 0
    bad: list[str] = []

    def report(nbytes: int, ntokens: int) -> None:
        """Add to the shared [bytes read, tokens written] that the parent's bar shows."""
        if counter is not None and (nbytes > 0 or ntokens > 0):
            with counter.get_lock():
                counter[0] += max(0, nbytes)
                counter[1] += ntokens

    for piece in pieces:
        if piece.name in bad:  # iter_texts skips the rest of a bad file
            continue
        reported = reported_tokens = 0
        try:
            for pos, ids, done in _documents(piece, settings, tok):
                h = heldout_hash(settings.seed, piece.name, pos)
                if h < settings.heldout_share:
                    held.add(ids)
                    held_hash.append(h)
                    held_ordinal.append(ordinal)
                    held_tokens.append(len(ids))
                else:
                    k, j = train.add(ids)
                    if best is None or h < best[0]:
                        best = [h, k, j, ordinal]
                ordinal += 1
                tokens += len(ids)
                if done - reported >= MIB or tokens - reported_tokens >= 1 << 18:  # the bar moves within pieces
                    report(done - reported, tokens - reported_tokens)
                    reported, reported_tokens = max(reported, done), tokens
        except BadFile:
            bad.append(piece.name)
        report(piece.size - reported, tokens - reported_tokens)
    record = {
        "unit": u, "documents": ordinal, "tokens": tokens, "train": train.close(),
        "heldout": {"shard": held.close(), "hashes": held_hash, "ordinals": held_ordinal,
                    "tokens": held_tokens},
        "lowest": best, "bad": bad, "files": sorted({p.name for p in pieces}),
    }
    write_json(record_path(out, u), record)
    return record


def run_unit_task(task) -> dict:
    return run_unit(*task)
