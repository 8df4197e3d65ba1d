"""The sharded token store: how twinlm keeps a tokenized corpus on disk.

A store is a folder:

* `index.json`, written last (a store without it is incomplete and never read):
  `{"format": "twinlm-tokens", "version": 2, "dtype": "uint16"|"uint32", "num_tokens": N,
  "num_documents": D, "max_token_id": M, "fingerprint": "...", "shards": [{"tokens":
  "shard-000000.bin", "docs": "shard-000000.docs", "num_tokens": n, "num_documents": d,
  "max_token_id": m}, ...]}` plus any extra keys the writer records (source, tokenizer, ...).
* `shard-NNNNNN.bin`: the token ids of whole documents, back to back, little-endian `dtype`. A
  document is kept exactly as its framing left it (`[CLS] ... [SEP]` for text twinlm tokenized;
  pre-tokenized samples as published), so boundaries stay visible inside packed blocks.
* `shard-NNNNNN.docs`: int64 little-endian, d+1 start offsets of the shard's documents (the first
  0, the last n).

Everything a reader keeps in memory is O(shards): the shard table and its cumulative token
counts. Shards are memory-mapped on first use, so a multi-terabyte store opens in milliseconds
and costs no RAM until it is read (the same holds for sparse files in the scale simulation).
A pre-v2 store (one `tokens.bin` + `meta.json`) opens as a one-shard store.

Optional keys (readers that do not know them ignore them; the on-disk format is unchanged):
`"ordered": true` marks training-order data that is served in file order, never shuffled;
a shard entry's `"dtype"` overrides the store's (a `TokenStore.concat` view of stores with
different id widths reads each shard in its own and returns the widest).
"""

from __future__ import annotations

import json
import os
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from twinlm.outputs import publish, staging, write_json

FORMAT = "twinlm-tokens"
VERSION = 2
INDEX = "index.json"
_MAX_OPEN_SHARDS = 64  # file descriptors a reader keeps open (least recently used closed first)


def shard_names(i: int) -> tuple[str, str]:
    return f"shard-{i:06d}.bin", f"shard-{i:06d}.docs"


def id_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned dtype that holds every id of a vocabulary of `vocab_size`."""
    return np.dtype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32)


def is_store(path: str | Path) -> bool:
    path = Path(path)
    if (path / "meta.json").is_file() and (path / "tokens.bin").is_file():
        return True
    if not (path / INDEX).is_file():
        return False
    try:
        return json.loads((path / INDEX).read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


class ShardWriter:
    """Appends documents to one shard's two files; `close()` returns the shard's index entry.

    The files are written under their final names inside the store folder being built; only the
    index, written by `write_index` after every shard is closed, makes them part of a store."""

    def __init__(self, folder: str | Path, number: int, dtype: np.dtype):
        self.folder, self.dtype = Path(folder), np.dtype(dtype)
        self.tokens_name, self.docs_name = shard_names(number)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.folder / self.tokens_name, "wb")
        self._offsets = [0]
        self._max = -1

    @property
    def num_tokens(self) -> int:
        return self._offsets[-1]

    @property
    def num_documents(self) -> int:
        return len(self._offsets) - 1

    def add(self, ids) -> None:
        arr = np.asarray(ids)
        if arr.size == 0:
            return
        top = int(arr.max())
        if top > np.iinfo(self.dtype).max or int(arr.min()) < 0:
            raise ValueError(f"token id {top if top > 0 else int(arr.min())} does not fit {self.dtype.name}")
        self._fh.write(arr.astype(self.dtype.newbyteorder("<"), copy=False).tobytes())
        self._offsets.append(self._offsets[-1] + int(arr.size))
        self._max = max(self._max, top)

    def close(self) -> dict:
        self._fh.close()
        np.asarray(self._offsets, dtype="<i8").tofile(self.folder / self.docs_name)
        return {"tokens": self.tokens_name, "docs": self.docs_name, "num_tokens": self.num_tokens,
                "num_documents": self.num_documents, "max_token_id": self._max}


class RollingShards:
    """ShardWriters numbered first, first + 1, ... in one folder; a new one once `limit` tokens
    are reached."""

    def __init__(self, folder: Path, dtype, limit: int, first: int = 0):
        self.folder, self.dtype, self.limit, self.first = folder, dtype, limit, first
        self.entries: list[dict] = []
        self._writer: ShardWriter | None = None

    def add(self, ids: np.ndarray) -> tuple[int, int]:
        """Append one document; returns (shard number, document number in that shard)."""
        w = self._writer
        if w is None or (w.num_tokens and w.num_tokens + len(ids) > self.limit):
            if w is not None:
                self.entries.append(w.close())
            w = self._writer = ShardWriter(self.folder, self.first + len(self.entries), self.dtype)
        w.add(ids)
        return len(self.entries), w.num_documents - 1

    def close(self) -> list[dict]:
        if self._writer is not None:
            self.entries.append(self._writer.close())
            self._writer = None
        return self.entries


class DocumentSpill:
    """Documents appended to a one-shard store in `folder`, then read back by number: what a
    one-process held-out split (`twinlm.data.heldout.StreamSplit`) cannot keep in memory."""

    def __init__(self, folder: str | Path, dtype: np.dtype):
        import shutil

        self.folder, self.dtype = Path(folder), np.dtype(dtype)
        shutil.rmtree(self.folder, ignore_errors=True)
        self._writer = ShardWriter(self.folder, 0, self.dtype)
        self._store: TokenStore | None = None
        self._offsets: np.ndarray | None = None

    def add(self, ids) -> None:
        self._writer.add(ids)

    def __getitem__(self, k: int) -> np.ndarray:
        if self._store is None:  # the first read: everything was added
            write_index(self.folder, self.dtype, [self._writer.close()])
            self._store = TokenStore.open(self.folder)
            self._offsets = self._store.document_offsets(0)
        return self._store.read(int(self._offsets[k]), int(self._offsets[k + 1]))

    def remove(self) -> None:
        import shutil

        if self._store is None:
            self._writer.close()
        self._store = None
        shutil.rmtree(self.folder, ignore_errors=True)


def write_documents(documents, folder: str | Path, dtype: np.dtype, shard_tokens: int = 1 << 28,
                    check=None, **extra) -> Path:
    """Write an iterable of id arrays as a complete store in `folder` (through a staging folder and
    a rename, so an interrupted write never leaves a store that looks complete). `check(k, ids)`,
    if given, runs on every document first (it raises to refuse one)."""
    folder = Path(folder)
    tmp = staging(folder)
    shards, writer = [], ShardWriter(tmp, 0, dtype)
    for k, ids in enumerate(documents):
        if check is not None:
            check(k, ids)
        writer.add(ids)
        if writer.num_tokens >= shard_tokens:
            shards.append(writer.close())
            writer = ShardWriter(tmp, len(shards), dtype)
    shards.append(writer.close())
    write_index(tmp, dtype, shards, **extra)
    return publish(tmp, folder)


def write_index(folder: str | Path, dtype: np.dtype, shards: list[dict], **extra) -> Path:
    """Write `index.json` atomically; from then on the folder is a complete store."""
    folder = Path(folder)
    index = {
        "format": FORMAT, "version": VERSION, "dtype": np.dtype(dtype).name,
        "num_tokens": sum(s["num_tokens"] for s in shards),
        "num_documents": sum(s["num_documents"] for s in shards),
        "max_token_id": max((s["max_token_id"] for s in shards), default=-1),
        **extra, "shards": shards,
    }
    return write_json(folder / INDEX, index)


class TokenView:
    """`store.tokens[a:b]`: a slice of the store's flat token space, read across shards."""

    def __init__(self, store: TokenStore):
        self._store = store

    def __len__(self) -> int:
        return self._store.num_tokens

    @property
    def shape(self) -> tuple[int]:
        return (self._store.num_tokens,)

    @property
    def dtype(self) -> np.dtype:
        return self._store.dtype

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(self._store.num_tokens)
            if step != 1:
                raise ValueError("token slices must be contiguous")
            return self._store.read(start, stop)
        i = int(key)
        if i < 0:
            i += self._store.num_tokens
        return self._store.read(i, i + 1)[0]

    def __array__(self, dtype=None, copy=None):
        # Whole-store materialisation: only for small stores (tests, the demo world).
        arr = self._store.read(0, self._store.num_tokens)
        return arr.astype(dtype) if dtype is not None else arr


@dataclass
class TokenStore:
    """A complete store, opened read-only. Memory: the shard table only."""

    path: Path
    dtype: np.dtype
    shards: list[dict]
    index: dict = field(default_factory=dict)
    _starts: list[int] = field(default_factory=list, repr=False)  # cumulative token offsets
    _maps: dict = field(default_factory=dict, repr=False)
    _fds: dict = field(default_factory=dict, repr=False)  # shard -> open file descriptor (LRU order)

    @classmethod
    def open(cls, path: str | Path) -> TokenStore:
        path = Path(path)
        if (path / INDEX).is_file():
            index = json.loads((path / INDEX).read_text())
            if index.get("format") != FORMAT:
                raise ValueError(f"{path / INDEX} is not a twinlm token store index")
            shards = index["shards"]
            dtype = np.dtype(index["dtype"])
        else:  # pre-v2: one flat tokens.bin described by meta.json
            meta = json.loads((path / "meta.json").read_text())
            index = dict(meta)
            dtype = np.dtype(meta["dtype"])
            shards = [{"tokens": "tokens.bin", "docs": None, "num_tokens": meta["num_tokens"],
                       "num_documents": meta["num_documents"], "max_token_id": None}]
        starts = [0]
        for s in shards:
            starts.append(starts[-1] + int(s["num_tokens"]))
        return cls(path=path, dtype=dtype, shards=shards, index=index, _starts=starts)

    @classmethod
    def concat(cls, stores: list[TokenStore]) -> TokenStore:
        """One read-only view of several stores, back to back (no file is copied): shard paths
        become absolute; ids are returned in the widest of the stores' dtypes."""
        if len(stores) == 1:
            return stores[0]
        dtype = max((s.dtype for s in stores), key=lambda d: d.itemsize)
        shards = []
        for store in stores:
            for entry in store.shards:
                shard = dict(entry, tokens=str((store.path / entry["tokens"]).resolve()), dtype=store.dtype.name)
                if entry.get("docs"):
                    shard["docs"] = str((store.path / entry["docs"]).resolve())
                shards.append(shard)
        index = {"format": FORMAT, "version": VERSION, "dtype": dtype.name, "shards": shards,
                 "num_tokens": sum(s.num_tokens for s in stores), "num_documents": sum(s.num_documents for s in stores),
                 "max_token_id": max(int(s.index.get("max_token_id", -1) or -1) for s in stores)}
        starts = [0]
        for s in shards:
            starts.append(starts[-1] + int(s["num_tokens"]))
        return cls(path=Path("/"), dtype=dtype, shards=shards, index=index, _starts=starts)

    @property
    def max_token_id(self) -> int | None:
        """The largest id in the store (from the index; None for a pre-v2 store)."""
        value = self.index.get("max_token_id")
        return None if value is None else int(value)

    @property
    def num_tokens(self) -> int:
        return self._starts[-1]

    @property
    def num_documents(self) -> int:
        return sum(int(s["num_documents"]) for s in self.shards)

    @property
    def tokens(self) -> TokenView:
        return TokenView(self)

    def shard_tokens(self, i: int) -> np.ndarray:
        """Shard `i`'s ids as a read-only memmap (opened once, on first use)."""
        if i not in self._maps:
            n = int(self.shards[i]["num_tokens"])
            dtype = np.dtype(self.shards[i].get("dtype") or self.dtype)
            self._maps[i] = (np.memmap(self.path / self.shards[i]["tokens"], dtype=dtype.newbyteorder("<"),
                                       mode="r", shape=(n,)) if n else np.zeros(0, dtype))
        return self._maps[i]

    def document_offsets(self, i: int) -> np.ndarray:
        """Start offsets (d+1, within shard `i`) of its documents."""
        name = self.shards[i].get("docs")
        if name is None:
            raise ValueError(f"{self.path} is a pre-v2 store without document offsets")
        return np.memmap(self.path / name, dtype="<i8", mode="r", shape=(int(self.shards[i]["num_documents"]) + 1,))

    def shard_of(self, position: int) -> int:
        """The shard holding flat token `position`."""
        return bisect_right(self._starts, position) - 1

    def read(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) of the flat space (all shards back to back), as a new array.

        Read with `pread`, not through the memory map: a block read is one system call and
        touches only its own pages (a fault on a memory map pulls a whole readahead window in,
        which costs ~ms per random block on a large or sparse file)."""
        start, stop = max(0, start), min(stop, self.num_tokens)
        if stop <= start:
            return np.zeros(0, dtype=self.dtype)
        parts, pos = [], start
        i = self.shard_of(pos)
        while pos < stop:
            begin = self._starts[i]
            end = min(stop, self._starts[i + 1])
            if end > pos:
                parts.append(self._pread(i, pos - begin, end - begin))
            pos = max(pos, end)
            i += 1
        return np.concatenate(parts).astype(self.dtype, copy=False) if len(parts) > 1 else parts[0]

    def _pread(self, i: int, a: int, b: int) -> np.ndarray:
        """Ids [a, b) of shard i, as a new writable array of the store's dtype."""
        dtype = np.dtype(self.shards[i].get("dtype") or self.dtype).newbyteorder("<")
        fd = self._fds.pop(i, None)
        if fd is None:
            fd = os.open(self.path / self.shards[i]["tokens"], os.O_RDONLY)
            if len(self._fds) >= _MAX_OPEN_SHARDS:  # bounded: a store may have thousands of shards
                os.close(self._fds.pop(next(iter(self._fds))))
        self._fds[i] = fd  # most recently used last
        buf = bytearray((b - a) * dtype.itemsize)
        got = os.preadv(fd, [buf], a * dtype.itemsize)
        if got != len(buf):
            raise OSError(f"{self.path / self.shards[i]['tokens']}: short read ({got} of {len(buf)} bytes); "
                          "the store is truncated")
        return np.frombuffer(buf, dtype=dtype).astype(self.dtype, copy=False)

    def __getstate__(self):
        # Open descriptors and maps are per process (a spawned DataLoader worker reopens its own).
        return {**self.__dict__, "_fds": {}, "_maps": {}}

    def __del__(self):
        for fd in getattr(self, "_fds", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass

    def efficiency(self, seq_len: int) -> float:
        """Share of the store's tokens that land in full blocks of `seq_len` (the rest is the tail)."""
        return (self.num_tokens // seq_len) * seq_len / max(1, self.num_tokens)
