"""`twinlm prepare`: turn a corpus into a prepared folder of sharded token stores, in parallel,
resumably, and split across machines if need be.

A prepared folder `P` holds `prepare.json` (tokenizer, source, settings; `"complete": true`
only once everything is written), `tokenizer/` (the tokenizer the ids belong to), and two token
stores (`twinlm.data.store`): `train/` and `heldout/`.

How the work is cut: the source is split into pieces (`twinlm.data.sources.pieces`: byte ranges of
large text and JSON-lines files, parquet row groups, MDS shards, row ranges of save_to_disk
folders, whole small files), consecutive pieces are grouped into units of about `unit_bytes`,
and each unit is tokenized by one worker into its own shards under `P/.units/uNNNNNN/`. A unit is
finished when its record `P/.progress/unit-NNNNNN.json` exists (written atomically after its
shards are closed), so an interrupted prepare redoes only the units without a record. The layout
depends on the source and the settings, never on the number of workers or machines, and the
final step (`finalize`) lays the units' shards out in unit order: the stores are the same
whatever `--workers` or `--shard i/n` did the work.

Held-out documents follow the one rule of `twinlm.data.heldout`: each unit keeps its candidates
(hash of seed, file name and position below `heldout_share`) apart while writing, and the final
step picks the held-out split from all of them; candidates past the caps train after all, as
one last shard of `train/`.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from twinlm.data.prepare.finalize import Summary, finalize
from twinlm.data.prepare.format import (
    FORMAT,
    IDS_COLUMN,
    LOCK,
    META,
    VERSION,
    PrepareSettings,
    layout_fingerprint,
    read_meta,
    record_path,
    tokenizer_meta,
)
from twinlm.data.prepare.units import (
    MIB,
    auto_unit_bytes,
    load_worker_tokenizer,
    plan_units,
    quiet_libraries,
    run_unit,
    run_unit_task,
    worker_init,
)
from twinlm.data.sources import ids as token_ids
from twinlm.data.sources.pieces import Piece, source_pieces
from twinlm.data.sources.resolve import describe_source, source_fingerprint
from twinlm.data.store import id_dtype
from twinlm.data.tokenizer import for_twin
from twinlm.errors import UserError
from twinlm.outputs import check_out, empty, has_content, write_json

__all__ = ["FORMAT", "VERSION", "PrepareSettings", "Summary", "merge", "parse_shard", "plan_prepare", "prepare",
           "read_meta"]


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


# --- the whole prepare ----------------------------------------------------------------------

@dataclass
class _Plan:
    source: str
    settings: PrepareSettings
    kind: str  # "text" or "tokens"
    pieces: list[Piece]
    units: list[list[Piece]]
    unit_bytes: int
    total_bytes: int


def _classify(source: str, settings: PrepareSettings) -> str:
    """'text' or 'tokens' for the whole source (the rule pretraining's reader applies too)."""
    return token_ids.probe_source(source, IDS_COLUMN, settings.text_column, settings.split,
                                  fix="name the text column with --text-column NAME").kind


def _token_streams(source: str, settings: PrepareSettings) -> list[Piece]:
    """One piece (and unit) per stream of a pre-tokenized source: an MDS leaf folder or a table
    file, each read whole by `iter_token_documents` in the stream order the reader uses."""
    probe = token_ids.probe_source(source, IDS_COLUMN, settings.text_column, settings.split)
    pieces = []
    for unit in probe.units:
        path = Path(unit.path)
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
        pieces.append(Piece("tokens", str(path), unit.name, 0, 0, size))
    return pieces


def plan_prepare(source: str, settings: PrepareSettings) -> _Plan:
    """Resolve and cut the source (cheap: no text is tokenized); UserError on bad input."""
    settings.check()
    if read_meta(Path(source)) is not None:
        raise UserError(f"{source} is a twinlm prepared folder already; train on it with --set data.source={source}")
    kind = _classify(source, settings)
    if kind == "tokens":
        pieces = _token_streams(source, settings)
        return _Plan(source, settings, kind, pieces, [[p] for p in pieces], 0, sum(p.size for p in pieces))
    probe = source_pieces(source, settings.text_column, settings.split, 256 * MIB)
    total = sum(p.size for p in probe)
    unit_bytes = settings.unit_bytes or auto_unit_bytes(total)
    pieces = probe if unit_bytes >= 256 * MIB else source_pieces(
        source, settings.text_column, settings.split, unit_bytes)
    return _Plan(source, settings, kind, pieces, plan_units(pieces, unit_bytes), unit_bytes,
                 sum(p.size for p in pieces))


def _meta(plan: _Plan, tok_meta: dict, shard: tuple[int, int]) -> dict:
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
    """Check --out (locked) before any work: returns the earlier meta when resuming, None when fresh.
    Unlike other commands', an unfinished prepare of the same job resumes without --resume (its
    units are recorded as they finish, and the same command is the natural way to continue)."""
    if overwrite:
        empty(out, keep=(LOCK,))
    if not has_content(out, ignore=(LOCK,)):
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
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} is a file; give a folder")
        out.mkdir(parents=True, exist_ok=True)
        self._fh = open(out / LOCK, "w")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise UserError(f"another twinlm prepare is writing {out}; wait for it or choose another --out") from None

    def fileno(self) -> int:
        return self._fh.fileno()

    def release(self) -> None:
        self._fh.close()


def _done_units(out: Path, mine: list[int]) -> dict[int, dict]:
    done = {}
    for u in mine:
        try:
            done[u] = json.loads(record_path(out, u).read_text())
        except (OSError, ValueError):
            pass
    return done


def prepare(source: str, tokenizer, out: str | Path, settings: PrepareSettings | None = None, *,
            tokenizer_name: str | None = None, workers: int | None = None, shard: tuple[int, int] = (0, 1),
            overwrite: bool = False, progress: bool = True, plan: _Plan | None = None) -> Summary:
    """Prepare `source` with `tokenizer` into the folder `out` (see the module docstring).

    Everything that can be wrong with the input is checked before the first unit starts. With
    `shard=(i, n)`, n > 1, only units u with u % n == i are done, and `out` is a part for `merge`."""
    start = time.time()
    out = Path(out)
    plan = plan or plan_prepare(source, settings or PrepareSettings())
    tok = for_twin(tokenizer, "encoder")  # the run's tokenizer is saved this way (corpus.prepare_tokenizer)
    name = tokenizer_name or str(getattr(tokenizer, "name_or_path", ""))
    if plan.kind == "tokens":  # the data's CLS/SEP framing must be the tokenizer's, before any work
        probe = token_ids.probe_source(plan.source, IDS_COLUMN, plan.settings.text_column, plan.settings.split)
        token_ids.check_framing(probe, tok, IDS_COLUMN, plan.settings.split, tokenizer_name=name)
    meta = _meta(plan, tokenizer_meta(tok, name), shard)
    lock = _Lock(out)
    try:
        old = _claim_output(out, meta, overwrite)
        if old is None:
            write_json(out / META, meta)
        if not (out / "tokenizer" / "tokenizer.json").is_file():
            tok.save_pretrained(out / "tokenizer")
        i, n = shard
        mine = [u for u in range(len(plan.units)) if u % n == i]
        done = _done_units(out, mine)
        pending = [u for u in mine if u not in done]
        if done:
            print(f"resuming {out}: {len(done)} of {len(mine)} units already done", file=sys.stderr)
        dtype = id_dtype(len(tok)).name
        _run_units(out, plan, pending, dtype, workers or os.cpu_count() or 1, progress, lock.fileno())
        summary = Summary(out=out, units=len(mine), units_done_now=len(pending), part=shard)
        if n == 1:
            finalize(*_unit_records([out]), [out], out, move=True, summary=summary)
        else:
            meta = read_meta(out)
            meta["units_done"] = True
            write_json(out / META, meta)
            summary.complete = False
        summary.seconds = time.time() - start
        return summary
    finally:
        lock.release()


def _run_units(out: Path, plan: _Plan, pending: list[int], dtype: str, workers: int, progress: bool,
               lock_fd: int) -> None:
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
            quiet_libraries()
            tok = load_worker_tokenizer(str(out / "tokenizer"))
            counter = _Counter()
            for task in tasks:
                run_unit(*task, tokenizer=tok, counter=counter)
                _tick(bar, counter)
            return
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        counter = ctx.Array("q", 2)  # [source bytes read, tokens written], added to by the workers
        with ctx.Pool(workers, worker_init, (str(out / "tokenizer"), counter, os.getpid(), lock_fd)) as pool:
            results = pool.imap_unordered(run_unit_task, tasks)
            remaining = len(tasks)
            while remaining:
                try:
                    results.next(timeout=0.5)
                    remaining -= 1
                except mp.TimeoutError:
                    pass
                _tick(bar, counter)
    finally:
        if bar is not None:
            bar.close()


class _Counter(list):
    """The in-process stand-in for the shared multiprocessing.Array [bytes, tokens]."""

    def __init__(self):
        super().__init__([0, 0])

    def get_lock(self):
        from contextlib import nullcontext

        return nullcontext()


def _bar(progress: bool, total: int | None):
    if not progress:
        return None
    from tqdm.auto import tqdm

    # One line: bytes of source read with total and ETA where the size is known (tokens/s beside
    # it); tokens written, with their rate, where it is not (a streamed hub dataset).
    bar = tqdm(total=total, unit="B" if total else " tokens", unit_scale=True, desc="preparing",
               dynamic_ncols=True, file=sys.stderr)
    bar.started = time.time()
    return bar


def _tick(bar, counter) -> None:
    if bar is None:
        return
    done, tokens = counter[0], counter[1]
    if bar.total:
        bar.update(max(0, done - bar.n))
        bar.set_postfix_str(f"{tokens / max(1e-9, time.time() - bar.started):,.0f} tokens/s", refresh=False)
    else:
        bar.update(max(0, tokens - bar.n))


def _unit_records(parts: list[Path]) -> tuple[dict, dict[int, tuple[Path, dict]]]:
    """(meta of the first part, unit -> (part folder, record)), checking the parts are one job."""
    metas = []
    for part in parts:
        meta = read_meta(part)
        if meta is None:
            raise UserError(f"{part} is not a twinlm prepared folder (no {META})")
        if meta.get("complete") or not meta.get("shard"):
            raise UserError(f"{part} is a complete prepared folder, not a part of a --shard i/n prepare")
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
    check_out(out, overwrite, ignore=(LOCK,))
    lock = _Lock(out)
    try:
        empty(out, keep=(LOCK,))
        summary = finalize(*_unit_records(parts), parts, out, move=False)
        summary.seconds = time.time() - start
        return summary
    finally:
        lock.release()
