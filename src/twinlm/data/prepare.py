"""`twinlm prepare`: turn a corpus into a prepared folder of sharded token stores, in parallel,
resumably, and split across machines if need be.

A prepared folder `P` holds `prepare.json` (tokenizer, source, settings; `"complete": true`
only once everything is written), `tokenizer/` (the tokenizer the ids belong to), and two token
stores (`twinlm.data.store`): `train/` and `heldout/`.

How the work is cut: the source is split into pieces (`sources.source_pieces`: byte ranges of
large text and JSON-lines files, parquet row groups, MDS shards, row ranges of save_to_disk
folders, whole small files), consecutive pieces are grouped into units of about `unit_bytes`,
and each unit is tokenized by one worker into its own shards under `P/.units/uNNNNNN/`. A unit is
finished when its record `P/.progress/unit-NNNNNN.json` exists (written atomically after its
shards are closed), so an interrupted prepare redoes only the units without a record. The layout
depends on the source and the settings, never on the number of workers or machines, and the
final step (`finalize`) lays the units' shards out in unit order: the stores are the same
whatever `--workers` or `--shard i/n` did the work.

Held-out documents are chosen while writing: a document is a candidate when the hash of
(seed, file name, position in the file) falls below `heldout_share`; at the end, the candidates
with the smallest hashes, at most `heldout_max_documents`, form `heldout/` and the others are
appended to `train/` as one last shard. Never all of a corpus: at least one document trains, and
a corpus of two or more documents whose hashes picked none gives its lowest-hash document.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from twinlm.data import sources
from twinlm.data.store import ShardWriter, id_dtype, shard_names, write_index
from twinlm.errors import UserError

FORMAT = "twinlm-prepared"
VERSION = 1
META = "prepare.json"
UNITS, PROGRESS, LOCK = ".units", ".progress", ".lock"
TOKENIZE_BATCH = 256
IDS_COLUMN = "input_ids"
_MIB = 1 << 20


@dataclass
class PrepareSettings:
    """Everything that changes the prepared stores' content (part of the resume check)."""

    text_column: str = "text"
    split: str = "train"
    shard_tokens: int = 2**27  # a unit's shards roll over past this many tokens
    unit_bytes: int | None = None  # source bytes per unit of work; None: total/256, within 1-256 MiB
    heldout_share: float = 0.005
    heldout_max_documents: int = 2000
    seed: int = 42

    def check(self) -> None:
        if not 0.0 <= self.heldout_share < 1.0:
            raise UserError(f"--heldout-share must be in [0, 1), got {self.heldout_share}")
        if self.heldout_max_documents < 0:
            raise UserError(f"--heldout-max-documents must be >= 0, got {self.heldout_max_documents}")
        if self.shard_tokens < 1:
            raise UserError(f"--shard-tokens must be >= 1, got {self.shard_tokens}")
        if self.unit_bytes is not None and self.unit_bytes < 1:
            raise UserError(f"--unit-bytes must be >= 1, got {self.unit_bytes}")


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


def parse_shard(spec: str | None) -> tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n; None -> (0, 1)."""
    if spec is None:
        return 0, 1
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise UserError(f"--shard must look like i/n (e.g. 0/4), got {spec!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise UserError(f"--shard {spec}: need 0 <= i < n")
    return i, n


def heldout_hash(seed: int, name: str, position: int) -> float:
    """A document's place in [0, 1) for the held-out draw: depends on where it is in the source,
    never on which worker or machine read it."""
    digest = hashlib.blake2b(f"{seed}\0{name}\0{position}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


# --- the layout -----------------------------------------------------------------------------

def plan_units(pieces: list[sources.Piece], unit_bytes: int) -> list[list[sources.Piece]]:
    """Consecutive pieces grouped into units of about `unit_bytes`. A unit holds pieces of one
    file (or folder), or several whole small files; never parts of two large files, so that a
    file found bad mid-way drops only units of its own."""
    units: list[list[sources.Piece]] = []
    size = 0
    for piece in pieces:
        last = units[-1][-1] if units else None
        joinable = last is not None and (
            last.path == piece.path or (last.kind in sources.WHOLE_FILE_KINDS and piece.kind in sources.WHOLE_FILE_KINDS))
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
    return int(min(256 * _MIB, max(_MIB, total // 256)))


def layout_fingerprint(units: list[list[sources.Piece]]) -> str:
    """Hash of the units as (kind, name, range, size): equal on every machine that sees the same
    files, whatever their absolute paths or modification times."""
    rows = [[[p.kind, p.name, p.start, p.stop, p.size] for p in unit] for unit in units]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


# --- one unit of work -----------------------------------------------------------------------

class _RollingShards:
    """ShardWriters numbered 0, 1, ... in one folder; a new one once `limit` tokens are reached."""

    def __init__(self, folder: Path, dtype, limit: int):
        self.folder, self.dtype, self.limit = folder, dtype, limit
        self.entries: list[dict] = []
        self._writer: ShardWriter | None = None

    def add(self, ids: np.ndarray) -> tuple[int, int]:
        """Append one document; returns (shard number, document number in that shard)."""
        w = self._writer
        if w is None or (w.num_tokens and w.num_tokens + len(ids) > self.limit):
            if w is not None:
                self.entries.append(w.close())
            w = self._writer = ShardWriter(self.folder, len(self.entries), self.dtype)
        w.add(ids)
        return len(self.entries), w.num_documents - 1

    def close(self) -> list[dict]:
        if self._writer is not None:
            self.entries.append(self._writer.close())
            self._writer = None
        return self.entries


_WORKER: dict[str, Any] = {}


def _worker_init(tokenizer_path: str, counter, parent: int) -> None:
    import threading

    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per worker: --workers decides the cores
    _WORKER.update(tokenizer=_load_worker_tokenizer(tokenizer_path), counter=counter)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A worker whose parent was killed (SIGKILL leaves no time to stop the pool) exits instead of
    living on as an orphan; its unfinished unit has no record and is redone on resume."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _load_worker_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    tok.model_max_length = sys.maxsize  # documents are never truncated; silences the length warning
    return tok


def _unit_dir(out: Path, u: int) -> Path:
    return out / UNITS / f"u{u:06d}"


def _record_path(out: Path, u: int) -> Path:
    return out / PROGRESS / f"unit-{u:06d}.json"


def _texts_of(piece: sources.Piece, settings: PrepareSettings):
    return sources.read_piece(piece, settings.text_column, settings.split)


def _token_docs(piece: sources.Piece, settings: PrepareSettings):
    """(position, ids, bytes done) of a pre-tokenized source (data-core's reader)."""
    from twinlm.data.pretokenized import iter_token_documents

    for i, ids in enumerate(iter_token_documents(piece.path)):
        yield i, np.asarray(ids), 0


def run_unit(out: Path, u: int, pieces: list[sources.Piece], settings: PrepareSettings, dtype: str,
             tokenizer=None, counter=None) -> dict:
    """Tokenize one unit into `out/.units/uNNNNNN/` and record it; returns the record."""
    from twinlm.data.tokenizer import document_ids

    tok = tokenizer if tokenizer is not None else _WORKER["tokenizer"]
    counter = counter if counter is not None else _WORKER.get("counter")
    folder = _unit_dir(out, u)
    shutil.rmtree(folder, ignore_errors=True)  # left by an interrupted attempt
    dtype = np.dtype(dtype)
    train = _RollingShards(folder, dtype, settings.shard_tokens)
    held = ShardWriter(folder / "heldout", 0, dtype)
    held_hash: list[float] = []
    held_ordinal: list[int] = []
    best: list | None = None  # [hash, shard, doc, ordinal] of the lowest-hash training document
    ordinal, tokens, bad, bad_paths = 0, 0, [], set()
    share = settings.heldout_share

    def place(name: str, pos: int, ids: np.ndarray) -> None:
        nonlocal ordinal, tokens, best
        h = heldout_hash(settings.seed, name, pos)
        if h < share:
            held.add(ids)
            held_hash.append(h)
            held_ordinal.append(ordinal)
        else:
            k, j = train.add(ids)
            if best is None or h < best[0]:
                best = [h, k, j, ordinal]
        ordinal += 1
        tokens += len(ids)

    for piece in pieces:
        if piece.path in bad_paths:  # iter_texts skips the rest of a bad file
            continue
        reported = 0
        try:
            if piece.kind == "tokens":
                vocab = len(tok)
                for pos, ids, _ in _token_docs(piece, settings):
                    if ids.size and (int(ids.max()) >= vocab or int(ids.min()) < 0):
                        bad_id = int(ids.max()) if int(ids.max()) >= vocab else int(ids.min())
                        raise UserError(f"{piece.path}: document {pos} holds token id {bad_id}, outside the "
                                        f"tokenizer's vocabulary of {vocab}; prepare it with the tokenizer it was made with")
                    place(piece.name, pos, ids)
                continue
            stream = _texts_of(piece, settings)
            failed = False
            while not failed:
                batch = []
                try:
                    batch += islice(stream, TOKENIZE_BATCH)
                except sources.BadFile:  # keep what was read before the bad line, as iter_texts does
                    failed = True
                if not batch:
                    break
                for (pos, _, _), ids in zip(batch, document_ids(tok, [t for _, t, _ in batch])):
                    place(piece.name, pos, np.asarray(ids, dtype=np.int64))
                done = batch[-1][2]
                if counter is not None and done > reported:
                    with counter.get_lock():
                        counter.value += done - reported
                    reported = done
            if failed:
                raise sources.BadFile(piece.path)
        except sources.BadFile:
            bad.append(piece.name)
            bad_paths.add(piece.path)
        if counter is not None and piece.size > reported:
            with counter.get_lock():
                counter.value += piece.size - reported
    record = {
        "unit": u, "documents": ordinal, "tokens": tokens, "train": train.close(),
        "heldout": {"shard": held.close(), "hashes": held_hash, "ordinals": held_ordinal},
        "lowest": best, "bad": bad, "paths": sorted({p.path for p in pieces}),
    }
    _write_json(_record_path(out, u), record)
    return record


def _run_unit_task(task) -> dict:
    return run_unit(*task)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


# --- the whole prepare ----------------------------------------------------------------------

@dataclass
class _Plan:
    source: str
    settings: PrepareSettings
    kind: str  # "text" or "tokens"
    pieces: list[sources.Piece]
    units: list[list[sources.Piece]]
    unit_bytes: int
    total_bytes: int


def _classify(source: str, settings: PrepareSettings) -> str:
    """'text' or 'tokens' for the whole source; UserError naming the columns if neither."""
    kinds = set()
    for where, columns in sources.source_columns(source, settings.split):
        if columns is None or settings.text_column in columns:
            kinds.add("text")
        elif IDS_COLUMN in columns:
            kinds.add("tokens")
        else:
            found = ", ".join(columns) or "none"
            raise UserError(f"{where}: no text column '{settings.text_column}' and no token-id column "
                            f"'{IDS_COLUMN}'; columns found: {found}; name the text column with --text-column NAME")
    if len(kinds) > 1:
        raise UserError(f"{source} mixes text and pre-tokenized ({IDS_COLUMN}) files; prepare them separately")
    return kinds.pop() if kinds else "text"


def plan_prepare(source: str, settings: PrepareSettings) -> _Plan:
    """Resolve and cut the source (cheap: no text is tokenized); UserError on bad input."""
    settings.check()
    kind = _classify(source, settings)
    if kind == "tokens":
        try:
            import twinlm.data.pretokenized  # noqa: F401  (data-core's reader of id columns)
        except ImportError:
            raise UserError(f"{source} holds token ids ({IDS_COLUMN}), and this twinlm cannot read "
                            "pre-tokenized sources yet") from None
        pieces = [sources.Piece("tokens", str(source), Path(source).name)]
        return _Plan(source, settings, kind, pieces, [pieces], 0, 0)
    probe = sources.source_pieces(source, settings.text_column, settings.split, 256 * _MIB)
    total = sum(p.size for p in probe)
    unit_bytes = settings.unit_bytes or auto_unit_bytes(total)
    pieces = probe if unit_bytes >= 256 * _MIB else sources.source_pieces(
        source, settings.text_column, settings.split, unit_bytes)
    return _Plan(source, settings, kind, pieces, plan_units(pieces, unit_bytes), unit_bytes,
                 sum(p.size for p in pieces))


def tokenizer_meta(tok, name_or_path: str) -> dict:
    from twinlm.data.packing import tokenizer_fingerprint

    return {"name_or_path": name_or_path, "fingerprint": tokenizer_fingerprint(tok), "vocab_size": len(tok),
            "cls_token_id": tok.cls_token_id, "sep_token_id": tok.sep_token_id,
            "pad_token_id": tok.pad_token_id, "mask_token_id": tok.mask_token_id}


def _meta(plan: _Plan, tok_meta: dict, shard: tuple[int, int]) -> dict:
    from twinlm.data.sources import describe_source, source_fingerprint

    settings = asdict(plan.settings)
    settings["unit_bytes"] = plan.unit_bytes
    return {
        "format": FORMAT, "version": VERSION, "complete": False,
        "tokenizer": tok_meta,
        "source": {"source": str(plan.source), "kind": plan.kind, "description": describe_source(plan.source),
                   "fingerprint": source_fingerprint(plan.source, plan.settings.text_column, plan.settings.split),
                   "layout": layout_fingerprint(plan.units), "units": len(plan.units), "bytes": plan.total_bytes},
        "settings": settings, "shard": list(shard),
    }


def read_meta(folder: Path) -> dict | None:
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None


def is_prepared(folder: str | Path) -> bool:
    """True for a complete prepared folder (what `twinlm pretrain` may read as is)."""
    meta = read_meta(Path(folder))
    return bool(meta and meta.get("complete"))


def _differences(old: dict, new: dict) -> list[str]:
    """What makes an unfinished prepare in --out a different job than the one asked for now."""
    out = []
    if old["tokenizer"]["fingerprint"] != new["tokenizer"]["fingerprint"]:
        out.append(f"tokenizer ({old['tokenizer']['name_or_path']} there, {new['tokenizer']['name_or_path']} now)")
    if old["source"]["fingerprint"] != new["source"]["fingerprint"] or old["source"]["layout"] != new["source"]["layout"]:
        changed = " (its files changed)" if old["source"]["source"] == new["source"]["source"] else ""
        out.append(f"source ({old['source']['source']} there, {new['source']['source']} now{changed})")
    for key, value in new["settings"].items():
        if old["settings"].get(key) != value:
            out.append(f"{key} ({old['settings'].get(key)} there, {value} now)")
    if old.get("shard") != new.get("shard"):
        out.append(f"--shard ({'/'.join(map(str, old.get('shard') or []))} there, {'/'.join(map(str, new['shard']))} now)")
    return out


def _claim_output(out: Path, meta: dict, overwrite: bool) -> dict | None:
    """Check --out before any work: returns the earlier meta when resuming, None when fresh."""
    if overwrite and out.exists():
        shutil.rmtree(out)
    if not out.exists() or not any(out.iterdir()):
        return None
    old = read_meta(out)
    if old is None:
        raise UserError(f"{out} exists and is not a twinlm prepared folder; choose another --out or pass --overwrite")
    if old.get("complete"):
        raise UserError(f"{out} already holds a complete prepared corpus; pass --overwrite to replace it")
    diff = _differences(old, meta)
    if diff:
        raise UserError(f"{out} holds an unfinished prepare of a different job: {'; '.join(diff)}; "
                        "re-run with the same arguments to resume, or pass --overwrite to start again")
    return old


class _Lock:
    """An exclusive lock on `out` for the life of the prepare (released by the OS if killed)."""

    def __init__(self, out: Path):
        out.mkdir(parents=True, exist_ok=True)
        self._fh = open(out / LOCK, "w")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise UserError(f"another twinlm prepare is writing {out}; wait for it or choose another --out") from None

    def release(self) -> None:
        self._fh.close()


def _done_units(out: Path, mine: list[int]) -> dict[int, dict]:
    done = {}
    for u in mine:
        try:
            done[u] = json.loads(_record_path(out, u).read_text())
        except (OSError, ValueError):
            pass
    return done


def prepare(source: str, tokenizer, out: str | Path, settings: PrepareSettings | None = None, *,
            tokenizer_name: str | None = None, workers: int | None = None, shard: tuple[int, int] = (0, 1),
            overwrite: bool = False, progress: bool = True, plan: _Plan | None = None) -> Summary:
    """Prepare `source` with `tokenizer` into the folder `out` (see the module docstring).

    Everything that can be wrong with the input is checked before the first unit starts. With
    `shard=(i, n)`, n > 1, only units u with u % n == i are done, and `out` is a part for `merge`."""
    from twinlm.data.tokenizer import for_twin

    start = time.time()
    out = Path(out)
    plan = plan or plan_prepare(source, settings or PrepareSettings())
    tok = for_twin(tokenizer, "encoder")  # the run's tokenizer is saved this way (corpus.prepare_tokenizer)
    meta = _meta(plan, tokenizer_meta(tok, tokenizer_name or str(getattr(tokenizer, "name_or_path", ""))), shard)
    old = _claim_output(out, meta, overwrite)
    lock = _Lock(out)
    try:
        if old is None:
            _write_json(out / META, meta)
        if not (out / "tokenizer" / "tokenizer.json").is_file():
            tok.save_pretrained(out / "tokenizer")
        i, n = shard
        mine = [u for u in range(len(plan.units)) if u % n == i]
        done = _done_units(out, mine)
        pending = [u for u in mine if u not in done]
        if done:
            print(f"resuming {out}: {len(done)} of {len(mine)} units already done", file=sys.stderr)
        dtype = id_dtype(len(tok)).name
        _run_units(out, plan, pending, dtype, workers or os.cpu_count() or 1, progress, done)
        summary = Summary(out=out, units=len(mine), units_done_now=len(pending), part=shard)
        if n == 1:
            finalize([out], out, move=True, summary=summary)
        else:
            meta = read_meta(out)
            meta["units_done"] = True
            _write_json(out / META, meta)
            summary.complete = False
        summary.seconds = time.time() - start
        return summary
    finally:
        lock.release()


def _run_units(out: Path, plan: _Plan, pending: list[int], dtype: str, workers: int, progress: bool,
               done: dict[int, dict]) -> None:
    import multiprocessing as mp

    if not pending:
        return
    tasks = [(out, u, plan.units[u], plan.settings, dtype) for u in pending]
    total = sum(p.size for u in pending for p in plan.units[u]) or None
    bar = _bar(progress, total)
    workers = max(1, min(workers, len(pending)))
    try:
        if workers == 1:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # as in the workers: one core
            tok = _load_worker_tokenizer(str(out / "tokenizer"))
            counter = _Counter()
            for task in tasks:
                record = run_unit(*task, tokenizer=tok, counter=counter)
                _tick(bar, counter.value, record)
            return
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        counter = ctx.Value("q", 0)
        with ctx.Pool(workers, _worker_init, (str(out / "tokenizer"), counter, os.getpid())) as pool:
            results = pool.imap_unordered(_run_unit_task, tasks)
            remaining = len(tasks)
            while remaining:
                try:
                    record = results.next(timeout=0.5)
                    remaining -= 1
                except mp.TimeoutError:
                    record = None
                _tick(bar, counter.value, record)
    finally:
        if bar is not None:
            bar.close()


class _Counter:
    """The in-process stand-in for a shared multiprocessing.Value."""

    def __init__(self):
        self.value = 0

    def get_lock(self):
        from contextlib import nullcontext

        return nullcontext()


def _bar(progress: bool, total: int | None):
    if not progress:
        return None
    from tqdm.auto import tqdm

    # One line: bytes of source read (with total and ETA where the size is known), tokens/s.
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="preparing", dynamic_ncols=True, file=sys.stderr)
    bar.tokens, bar.started = 0, time.time()
    return bar


def _tick(bar, value: int, record: dict | None) -> None:
    if bar is None:
        return
    if record is not None:
        bar.tokens += record["tokens"]
    bar.update(max(0, value - bar.n))
    bar.set_postfix_str(f"{bar.tokens / max(1e-9, time.time() - bar.started):,.0f} tokens/s", refresh=False)


# --- from units to stores -------------------------------------------------------------------

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


def _docs(folder: Path, entry: dict, dtype) -> tuple[np.memmap, np.ndarray]:
    n = int(entry["num_tokens"])
    tokens = np.memmap(folder / entry["tokens"], dtype=np.dtype(dtype).newbyteorder("<"), mode="r", shape=(n,)) \
        if n else np.zeros(0, dtype)
    offsets = np.fromfile(folder / entry["docs"], dtype="<i8")
    return tokens, offsets


def _unit_records(parts: list[Path]) -> tuple[dict, dict[int, tuple[Path, dict]]]:
    """(meta of the first part, unit -> (part folder, record)), checking the parts are one job."""
    metas = []
    for part in parts:
        meta = read_meta(part)
        if meta is None:
            raise UserError(f"{part} is not a twinlm prepared folder (no {META})")
        metas.append(meta)
    first = metas[0]
    n = first["shard"][1]
    seen: dict[int, Path] = {}
    records: dict[int, tuple[Path, dict]] = {}
    for part, meta in zip(parts, metas):
        probe = dict(meta, shard=first["shard"])
        diff = [d for d in _differences(first, probe) if not d.startswith("source")]
        if meta["source"]["layout"] != first["source"]["layout"]:
            diff.append(f"source layout ({part} saw different files)")
        if diff or meta["shard"][1] != n:
            raise UserError(f"{part} is not a part of the same prepare as {parts[0]}: {'; '.join(diff) or '--shard n'}")
        i = meta["shard"][0]
        if i in seen:
            raise UserError(f"{part} and {seen[i]} are both part {i}/{n}")
        seen[i] = part
        mine = [u for u in range(meta["source"]["units"]) if u % n == i]
        done = _done_units(part, mine)
        if len(done) < len(mine):
            raise UserError(f"{part} is unfinished ({len(done)} of {len(mine)} units); re-run its prepare first")
        records.update({u: (part, r) for u, r in done.items()})
    missing = sorted(set(range(n)) - set(seen))
    if missing:
        raise UserError(f"parts {', '.join(f'{i}/{n}' for i in missing)} are missing; pass every part to --merge")
    return first, records


def finalize(parts: list[Path], out: Path, move: bool, summary: Summary | None = None) -> Summary:
    """Lay every unit's shards out, in unit order, as `out/train` and `out/heldout`, and mark
    `out/prepare.json` complete. Deterministic: the same units give the same stores."""
    meta, records = _unit_records(parts)
    summary = summary or Summary(out=out, units=len(records))
    settings = meta["settings"]
    dtype = id_dtype(meta["tokenizer"]["vocab_size"])
    kept = _drop_after_bad_files(records, summary)
    # Held-out: the lowest hashes among the candidates, at most heldout_max_documents.
    candidates = sorted((h, u, c, records[u][1]["heldout"]["ordinals"][c])
                        for u in kept for c, h in enumerate(records[u][1]["heldout"]["hashes"]))
    held, returned = candidates[:settings["heldout_max_documents"]], candidates[settings["heldout_max_documents"]:]
    documents = sum(records[u][1]["documents"] for u in kept)
    trained = sum(e["num_documents"] for u in kept for e in records[u][1]["train"]) + len(returned)
    if documents == 0:
        raise UserError(f"empty corpus: no usable text in '{meta['source']['source']}'")
    if trained == 0:  # never all of a corpus: the highest-hash candidate trains
        returned.append(held.pop())
    lowest = None
    if not held and documents >= 2 and settings["heldout_share"] > 0 and settings["heldout_max_documents"] > 0:
        lowest = min((records[u][1]["lowest"] + [u] for u in kept if records[u][1]["lowest"]), key=lambda x: x[0])
    heldout_docs = sorted([(u, o, ("candidate", c)) for _, u, c, o in held]
                          + ([(lowest[4], lowest[3], ("train", lowest[1], lowest[2]))] if lowest else []))
    extra = {"tokenizer": meta["tokenizer"]["fingerprint"], "layout": meta["source"]["layout"],
             "fingerprint": f"{meta['source']['layout']}-{meta['tokenizer']['fingerprint']}"}
    _write_docs_store(out / "heldout", dtype, records, heldout_docs, extra)
    shards = _lay_out_train(out / "train", dtype, records, kept, lowest, move)
    if returned:
        writer = ShardWriter(out / "train", len(shards), dtype)
        for _, u, c, _ in sorted(returned, key=lambda x: (x[1], x[3])):
            writer.add(_read_doc(records[u][0], records[u][1], ("candidate", c), dtype))
        shards.append(writer.close())
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
    _write_json(out / META, final)
    if move:
        shutil.rmtree(out / UNITS, ignore_errors=True)
        shutil.rmtree(out / PROGRESS, ignore_errors=True)
    return summary


def _drop_after_bad_files(records: dict, summary: Summary) -> list[int]:
    """Units in order, without those after the unit where a file turned out binary or not UTF-8
    (iter_texts skips the rest of such a file; its later units hold nothing else)."""
    bad_from: dict[str, int] = {}
    kept = []
    for u in sorted(records):
        record = records[u][1]
        paths = record["paths"]
        if len(paths) == 1 and paths[0] in bad_from:
            continue
        kept.append(u)
        for name in record["bad"]:
            bad_from.setdefault(paths[0] if len(paths) == 1 else name, u)
    if bad_from:
        summary.warnings.append(f"skipped the rest of {len(bad_from)} file(s) that are binary or not valid UTF-8 "
                                f"(e.g. {next(iter(bad_from))})")
    return kept


def _read_doc(part: Path, record: dict, where: tuple, dtype) -> np.ndarray:
    folder = _unit_dir(part, record["unit"])
    if where[0] == "candidate":
        tokens, offsets = _docs(folder / "heldout", record["heldout"]["shard"], dtype)
        j = where[1]
    else:
        tokens, offsets = _docs(folder, record["train"][where[1]], dtype)
        j = where[2]
    return np.asarray(tokens[offsets[j]:offsets[j + 1]])


def _write_docs_store(folder: Path, dtype, records: dict, docs: list, extra: dict) -> None:
    """A small store (the held-out split) written fresh from (unit, ordinal, where) documents."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    writer = ShardWriter(tmp, 0, dtype)
    for u, _, where in docs:
        writer.add(_read_doc(records[u][0], records[u][1], where, dtype))
    entry = writer.close()
    if not docs:  # an empty store: no shard at all
        for name in (entry["tokens"], entry["docs"]):
            (tmp / name).unlink()
    write_index(tmp, dtype, [entry] if docs else [], **extra)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def _lay_out_train(folder: Path, dtype, records: dict, kept: list[int], lowest, move: bool) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.json").unlink(missing_ok=True)
    shards = []
    for u in kept:
        part, record = records[u]
        unit = _unit_dir(part, u)
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
    tokens, offsets = _docs(unit, entry, dtype)
    number = int(entry["tokens"].removeprefix("shard-").removesuffix(".bin"))
    writer = ShardWriter(unit / "rewritten", number, dtype)
    for d in range(len(offsets) - 1):
        if d != j:
            writer.add(np.asarray(tokens[offsets[d]:offsets[d + 1]]))
    return writer.close()


def merge(parts: list[str | Path], out: str | Path, overwrite: bool = False) -> Summary:
    """Merge the parts of a `--shard i/n` prepare into one prepared folder equal to a one-machine
    prepare. Token files are hard-linked (no copy, the parts stay usable) where `out` is on the
    parts' file system, copied otherwise."""
    start = time.time()
    parts = [Path(p) for p in parts]
    out = Path(out)
    if not parts:
        raise UserError("--merge needs the part folders")
    if any(out.resolve() == p.resolve() for p in parts):
        raise UserError("--out must be a new folder, not one of the parts")
    for p in parts:
        if not p.is_dir():
            raise UserError(f"no such part folder: {p}")
    _unit_records(parts)  # every check before anything is written
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"{out} already exists; choose another --out or pass --overwrite")
        shutil.rmtree(out)
    lock = _Lock(out)
    try:
        summary = finalize(parts, out, move=False)
        summary.seconds = time.time() - start
        return summary
    finally:
        lock.release()
