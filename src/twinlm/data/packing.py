"""Tokenize once, pack into fixed-length blocks on disk, and serve them in one fixed order.

The corpus becomes one flat memory-mapped array of token ids, every document framed as
`[CLS] ... [SEP]` so that document boundaries stay visible. A phase with sequence length L reads
non-overlapping windows of L tokens from that array: no padding, and the same file serves every
phase and both twins. Only the tail shorter than one block is unused; that share is the packing
loss reported as `efficiency`.

The block order is a permutation drawn from the recipe seed (a new one each pass over the
data), computed on demand (`BlockOrder`: O(1) memory at any corpus size), so both twins see
exactly the same blocks in the same order.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from twinlm.data.store import ShardWriter, TokenStore, id_dtype, is_store, write_index
from twinlm.data.tokenizer import document_ids

TOKENIZE_BATCH = 1000


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of the vocabulary and merges: equal fingerprints tokenize identically."""
    state = tokenizer.backend_tokenizer.to_str() if tokenizer.is_fast else json.dumps(tokenizer.get_vocab())
    return hashlib.sha256(state.encode()).hexdigest()[:16]


def build_store(
    texts: Iterable[str], tokenizer, path: str | Path, fingerprint: str, progress: bool = True
) -> TokenStore:
    """Tokenize `texts` into `path`, unless a store with the same fingerprint is already there.

    Written to a temporary folder and renamed into place, so an interrupted build never leaves a
    store that looks complete.
    """
    path = Path(path)
    if is_store(path):
        if TokenStore.open(path).index.get("fingerprint") == fingerprint:
            return TokenStore.open(path)
        shutil.rmtree(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    dtype = id_dtype(len(tokenizer))
    writer = ShardWriter(tmp, 0, dtype)
    bar = _progress(progress, "tokenizing")
    for batch in _batches(texts, TOKENIZE_BATCH):
        for doc in document_ids(tokenizer, batch):
            writer.add(np.asarray(doc, dtype=np.int64))
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    write_index(tmp, dtype, [writer.close()], fingerprint=fingerprint)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, path)
    return TokenStore.open(path)


def _batches(items: Iterable[str], size: int) -> Iterable[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _progress(enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(desc=desc, unit=" docs", leave=False)


# Block order: a computed, seeded bijection per pass, never an array of every block. Blocks are
# grouped in chunks of CHUNK_BLOCKS consecutive blocks; a keyed permutation orders the chunks, and
# the blocks of each window of WINDOW_CHUNKS chunks (in that order) are permuted among themselves.
# So any WINDOW_CHUNKS x CHUNK_BLOCKS consecutive positions read from that many chunks spread over
# the whole corpus (MosaicML's shard-window shuffle, at block granularity), and a lookup costs a
# few hash rounds. The blocks of the last, partial chunk always fall in the last window of a pass.
CHUNK_BLOCKS = 16
WINDOW_CHUNKS = 1024
_ROUNDS = 4
_GOLDEN = 0x9E3779B97F4A7C15


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a cheap, well-mixing bijection of uint64 (vectorised)."""
    with np.errstate(over="ignore"):
        x = np.asarray(x, dtype=np.uint64)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


_M64 = 2**64 - 1


def _mix_int(x: int) -> int:
    """`_mix` on one Python int: a scalar lookup costs microseconds instead of numpy overheads."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


@lru_cache(maxsize=4096)  # consecutive positions share their pass/window/group keys
def _key_int(*parts: int) -> int:
    key = 0x2545F4914F6CDD1D
    for part in parts:
        key = _mix_int(key ^ _mix_int(part & _M64))
    return key


@lru_cache(maxsize=4096)
def _round_keys(key: int) -> tuple[int, ...]:
    return tuple(_mix_int((key + (r + 1) * _GOLDEN) & _M64) for r in range(_ROUNDS))


def permute_int(x: int, n: int, key: int) -> int:
    """`permute` for one value (same bijection)."""
    bits = max(2, (int(n) - 1).bit_length())
    half = (bits + 1) // 2
    mask = (1 << half) - 1
    rounds = _round_keys(key)
    while True:
        left, right = x >> half, x & mask
        for k in rounds:
            left, right = right, left ^ (_mix_int(right ^ k) & mask)
        x = (left << half) | right
        if x < n:
            return x


def _key(*parts) -> np.ndarray:
    """A 64-bit key from integers (scalars or arrays), order-sensitive."""
    key = np.uint64(0x2545F4914F6CDD1D)
    for part in parts:
        with np.errstate(over="ignore"):
            key = _mix(np.asarray(key, dtype=np.uint64) ^ _mix(np.asarray(part, dtype=np.int64).astype(np.uint64)))
    return key


def permute(x: np.ndarray, n: int, key) -> np.ndarray:
    """A keyed bijection of [0, n) applied to `x` (values in [0, n); `key` a scalar or one key per
    value): a balanced Feistel network over the smallest even-bit power of two >= n, with cycle
    walking (re-encrypting values that land outside [0, n), at most ~4 rounds expected)."""
    x = np.asarray(x, dtype=np.uint64)
    bits = max(2, (int(n) - 1).bit_length())
    half = np.uint64((bits + 1) // 2)
    mask = np.uint64((1 << int(half)) - 1)
    key = np.broadcast_to(np.asarray(key, dtype=np.uint64), x.shape)
    with np.errstate(over="ignore"):
        rounds = [_mix(key + np.uint64((r + 1) * _GOLDEN % 2**64)) for r in range(_ROUNDS)]

    def encrypt(v, ks):
        left, right = v >> half, v & mask
        for k in ks:
            left, right = right, left ^ (_mix(right ^ k) & mask)
        return (left << half) | right

    y = encrypt(x, rounds)
    bad = np.flatnonzero(y >= np.uint64(n))
    while bad.size:
        y[bad] = encrypt(y[bad], [k[bad] for k in rounds])
        bad = bad[y[bad] >= np.uint64(n)]
    return y.astype(np.int64)


class BlockOrder:
    """`order[i]`: the block served at sample position i. Successive passes over `num_blocks`
    blocks, each a fresh permutation drawn from `seed` (the same for both twins), computed on
    demand: memory O(1), lookups vectorised. `ordered=True` (training-order data) keeps file order."""

    def __init__(self, num_blocks: int, num_samples: int, seed: int, ordered: bool = False,
                 chunk: int = CHUNK_BLOCKS, window: int = WINDOW_CHUNKS):
        if num_blocks < 1:
            raise ValueError("a block order needs at least one block")
        self.n, self.num_samples, self.seed, self.ordered = int(num_blocks), int(num_samples), int(seed), ordered
        self.chunk, self.window = int(chunk), int(window)
        self.full_chunks = self.n // self.chunk
        self.windows = max(1, -(-self.full_chunks // self.window))
        self.last_window_chunks = self.full_chunks - (self.windows - 1) * self.window

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.lookup(np.arange(*i.indices(self.num_samples)))
        if np.ndim(i):
            return self.lookup(np.asarray(i))
        return self.lookup_one(int(i))

    def __array__(self, dtype=None, copy=None):  # small orders only (tests)
        arr = self.lookup(np.arange(self.num_samples))
        return arr.astype(dtype) if dtype is not None else arr

    def lookup_one(self, position: int) -> int:
        """`lookup` for one position, in plain Python ints (the same order)."""
        if position < 0:
            raise IndexError("negative sample position")
        p, r = divmod(position, self.n)
        if self.ordered:
            return r
        span = self.window * self.chunk
        k = min(r // span, self.windows - 1)
        last = k == self.windows - 1
        size = self.last_window_chunks * self.chunk + (self.n - self.full_chunks * self.chunk) if last else span
        j = permute_int(r - k * span, size, _key_int(self.seed, 1, p, k))
        q, o = divmod(j, self.chunk)
        chunks_here = self.last_window_chunks if last else self.window
        if q >= chunks_here:
            return self.full_chunks * self.chunk + (j - chunks_here * self.chunk)
        chunk = permute_int(k * self.window + q, self.full_chunks, _key_int(self.seed, 0, p))
        return chunk * self.chunk + o

    def lookup(self, positions: np.ndarray) -> np.ndarray:
        """Blocks at `positions` (int array, any position >= 0; past the end the passes go on)."""
        pos = np.asarray(positions, dtype=np.int64)
        if pos.size and pos.min() < 0:
            raise IndexError("negative sample position")
        passes, r = np.divmod(pos, self.n)
        if self.ordered:
            return r
        span = self.window * self.chunk  # positions per full window
        k = np.minimum(r // span, self.windows - 1)
        local = r - k * span
        last = k == self.windows - 1
        size_last = self.last_window_chunks * self.chunk + (self.n - self.full_chunks * self.chunk)
        j = np.empty_like(local)
        wkey = _key(self.seed, 1, passes, k)
        if (~last).any():
            j[~last] = permute(local[~last], span, wkey[~last] if wkey.ndim else wkey)
        if last.any():
            j[last] = permute(local[last], size_last, wkey[last] if wkey.ndim else wkey)
        q, o = np.divmod(j, self.chunk)
        chunks_here = np.where(last, self.last_window_chunks, self.window)
        in_chunk = q < chunks_here
        out = self.full_chunks * self.chunk + (j - chunks_here * self.chunk)  # the partial chunk's blocks
        if in_chunk.any() and self.full_chunks:
            slot = k[in_chunk] * self.window + q[in_chunk]
            chunk = permute(slot, self.full_chunks, _key(self.seed, 0, passes[in_chunk]))
            out[in_chunk] = chunk * self.chunk + o[in_chunk]
        return out


def block_order(num_blocks: int, num_samples: int, seed: int) -> BlockOrder:
    """`num_samples` block indices: successive passes over the blocks, each freshly permuted."""
    return BlockOrder(num_blocks, num_samples, seed)


class BlockDataset(Dataset):
    """Fixed-length token blocks from a `TokenStore`, in the order given by `BlockOrder` (file
    order for a store marked `ordered`, i.e. replayed training-order data)."""

    def __init__(self, store: TokenStore, seq_len: int, num_samples: int, seed: int):
        self.store, self.seq_len = store, seq_len
        self.num_blocks = store.num_tokens // seq_len
        if self.num_blocks == 0:
            raise ValueError(f"the corpus has {store.num_tokens} tokens, fewer than one block of {seq_len}")
        self.order = BlockOrder(self.num_blocks, num_samples, seed, ordered=bool(store.index.get("ordered")))

    def __len__(self) -> int:
        return len(self.order)

    def block(self, index: int) -> np.ndarray:
        start = int(index) * self.seq_len
        return np.asarray(self.store.tokens[start : start + self.seq_len], dtype=np.int64)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.from_numpy(self.block(self.order[int(i)]))}

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        # The DataLoader fetches a whole batch at once: one vectorised order lookup for all of it.
        return [{"input_ids": torch.from_numpy(self.block(b))} for b in self.order.lookup(np.asarray(indices))]


def held_out_blocks(store: TokenStore, seq_len: int, limit: int | None = None) -> Sequence[np.ndarray]:
    """All full blocks of a held-out store in file order (for evaluation)."""
    n = store.num_tokens // seq_len if limit is None else min(limit, store.num_tokens // seq_len)
    return [np.asarray(store.tokens[i * seq_len : (i + 1) * seq_len], dtype=np.int64) for i in range(n)]
