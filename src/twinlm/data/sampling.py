"""Sampling: the order in which a phase reads fixed-length blocks of token stores, and mixtures.

A store is one flat sequence of token ids (`twinlm.data.store`). A phase with sequence length L
reads non-overlapping windows of L tokens from it: no padding, and the same store serves every
phase and both twins. Only the tail shorter than one block is unused; that share is the packing
loss a store reports as `efficiency`.

Block order: a permutation drawn from the recipe seed (a new one each pass over the data),
computed on demand (`BlockOrder`: O(1) memory at any corpus size), so both twins see exactly the
same blocks in the same order. A store marked `ordered` (replayed training-order data) is read
in file order.

Mixtures: a phase trains on several streams, each with its share of the phase's tokens.

Semantics are Composer/MosaicML streaming's, applied to a phase's token budget T:

* `proportion: p` on every stream: stream s serves p_s x T tokens (the p_s must sum to 1). A
  stream smaller than its share is repeated (each repeat a fresh permutation of its blocks); a
  larger one is sub-sampled (a prefix of one permutation, i.e. a uniform sample of its blocks).
* `repeat: r` (default 1) on every stream: stream s weighs r_s x its size, i.e. its natural share
  scaled by r_s. One pass of the mixture is sum_s r_s x size_s tokens; the phase's T tokens take
  T / that many passes (so `repeat: 2` on a small high-quality stream doubles its share).
* Mixing the two in one phase is refused, as MosaicML refuses mixing relative (`proportion`) and
  absolute (`repeat`/`choose`) weights: the budget of neither kind would be well defined.

All shares are shares of blocks of the phase's sequence length, i.e. of tokens. Streams are
interleaved by a seeded schedule that is a function of the sample position alone (O(streams)
memory, random access): positions come in groups of GROUP samples; each group holds every
stream's exact cumulative quota (a Bresenham-style rounding of its share), shuffled within the
group. Every prefix of the phase thus matches the shares to within one group, and both twins,
built from the same seed, see the same samples in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import Dataset

from twinlm.data.store import TokenStore

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


# ---------------------------------------------------------------------------------------------
# Mixtures

GROUP = 4096  # samples per interleaving group: shares hold to within GROUP samples at any prefix


@dataclass
class Stream:
    """One stream of a phase: its store and its weight (see the module docstring)."""

    source: str
    store: TokenStore
    proportion: float | None = None
    repeat: float | None = None


class Mixture:
    """The streams of one phase. Reads like one store (the streams back to back) where a single
    store is expected (baselines, statistics); training draws from it through `MixtureDataset`."""

    def __init__(self, streams: list[Stream]):
        if not streams:
            raise ValueError("a mixture needs at least one stream")
        self.streams = streams
        self.combined = TokenStore.concat([s.store for s in streams])

    def __getattr__(self, name):  # num_tokens, tokens, read, efficiency, ...: the streams back to back
        if name in ("streams", "combined"):
            raise AttributeError(name)
        return getattr(self.combined, name)

    def shares(self, seq_len: int) -> list[float]:
        """Planned token share of each stream."""
        if self.streams[0].proportion is not None:
            return [float(s.proportion) for s in self.streams]
        weights = [(s.repeat if s.repeat is not None else 1.0) * (s.store.num_tokens // seq_len) for s in self.streams]
        total = sum(weights)
        if total <= 0:
            raise ValueError(f"no stream has a full block of {seq_len} tokens")
        return [w / total for w in weights]

    def counts(self, seq_len: int, num_samples: int) -> list[int]:
        """Samples (blocks) per stream for a phase of `num_samples`: the shares, rounded by largest
        remainder so that they sum to `num_samples` exactly."""
        return apportion(self.shares(seq_len), num_samples)


def apportion(shares: list[float], total: int) -> list[int]:
    raw = [s * total for s in shares]
    counts = [int(np.floor(r)) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: counts[i] - raw[i])[: total - sum(counts)]:
        counts[i] += 1
    return counts


class MixtureDataset(Dataset):
    """Blocks of `seq_len` tokens from the streams of a `Mixture`, interleaved by their shares."""

    def __init__(self, mixture: Mixture, seq_len: int, num_samples: int, seed: int):
        self.mixture, self.seq_len, self.num_samples, self.seed = mixture, seq_len, int(num_samples), int(seed)
        self.counts = mixture.counts(seq_len, self.num_samples)
        self.datasets, self.orders = [], []
        for s, (stream, n) in enumerate(zip(mixture.streams, self.counts)):
            blocks = stream.store.num_tokens // seq_len
            if blocks == 0 and n:
                raise ValueError(f"stream {stream.source} has {stream.store.num_tokens} tokens, fewer than one "
                                 f"block of {seq_len}")
            # Each stream its own seeded order: adding a stream does not reshuffle the others.
            ds = BlockDataset.__new__(BlockDataset)
            ds.store, ds.seq_len, ds.num_blocks = stream.store, seq_len, blocks
            ds.order = BlockOrder(max(1, blocks), n, _key_int(self.seed, 3, s) >> 1,
                                  ordered=bool(stream.store.index.get("ordered")))
            self.datasets.append(ds)
            self.orders.append(ds.order)
        self.cumulative = np.cumsum([0, *self.counts]).tolist()  # exact ints

    def __len__(self) -> int:
        return self.num_samples

    def realized_shares(self) -> list[float]:
        """Share of the phase's samples (= tokens) each stream serves."""
        return [n / max(1, self.num_samples) for n in self.counts]

    def epochs(self) -> list[float]:
        """Passes over each stream this phase makes."""
        return [n / max(1, ds.num_blocks) for n, ds in zip(self.counts, self.datasets)]

    def _quota(self, s: int, x: np.ndarray) -> np.ndarray:
        """Samples of stream s among the first x positions (non-decreasing in x, exact at the end)."""
        n = self.num_samples
        return (x * self.cumulative[s + 1]) // n - (x * self.cumulative[s]) // n

    def locate(self, positions) -> tuple[np.ndarray, np.ndarray]:
        """(stream, sample index within the stream) for each position."""
        pos = np.asarray(positions, dtype=np.int64)
        if pos.size and (pos.min() < 0 or pos.max() >= self.num_samples):
            raise IndexError(f"sample position out of range for {self.num_samples} samples")
        # Python-int object arrays: x * cumulative can exceed int64 on huge phases.
        group = pos // GROUP
        x0 = (group * GROUP).astype(object)
        x1 = np.minimum((group + 1) * GROUP, self.num_samples).astype(object)
        size = (x1 - x0).astype(np.int64)
        local = pos - group * GROUP
        j = np.empty_like(local)
        keys = _key(self.seed, 2, group)
        for gsize in np.unique(size):  # all groups are full but the last
            sel = size == gsize
            j[sel] = permute(local[sel], int(gsize), keys[sel] if np.ndim(keys) else keys)
        stream = np.zeros_like(pos)
        within = np.zeros_like(pos)
        start = np.zeros_like(pos)  # first local slot of the current stream in its group
        for s in range(len(self.counts)):
            before = self._quota(s, x0).astype(np.int64)
            here = self._quota(s, x1).astype(np.int64) - before
            hit = (j >= start) & (j < start + here)
            stream[hit] = s
            within[hit] = before[hit] + (j[hit] - start[hit])
            start = start + here
        return stream, within

    def locate_one(self, i: int) -> tuple[int, int]:
        """`locate` for one position, in plain Python ints (the same schedule, without array overhead)."""
        if not 0 <= i < self.num_samples:
            raise IndexError(f"sample position {i} out of range for {self.num_samples} samples")
        n, group = self.num_samples, i // GROUP
        x0, x1 = group * GROUP, min((group + 1) * GROUP, n)
        j = permute_int(i - x0, x1 - x0, _key_int(self.seed, 2, group))
        start = 0
        for s in range(len(self.counts)):
            lo, hi = self.cumulative[s], self.cumulative[s + 1]
            before = (x0 * hi) // n - (x0 * lo) // n
            here = (x1 * hi) // n - (x1 * lo) // n - before
            if start <= j < start + here:
                return s, before + (j - start)
            start += here
        raise AssertionError("unreachable: the group's quotas cover every slot")

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s, k = self.locate_one(int(i))
        ds = self.datasets[s]
        return {"input_ids": torch.from_numpy(ds.block(ds.order.lookup_one(k)))}

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        streams, within = self.locate(indices)
        out: list = [None] * len(indices)
        for s in np.unique(streams):
            sel = np.flatnonzero(streams == s)
            ds = self.datasets[int(s)]
            for slot, block in zip(sel, ds.order.lookup(within[sel])):
                out[slot] = {"input_ids": torch.from_numpy(ds.block(int(block)))}
        return out


def phase_dataset(data: TokenStore | Mixture, seq_len: int, num_samples: int, seed: int) -> Dataset:
    """The training samples of a phase: a `BlockDataset` over one store, or a `MixtureDataset`.
    A one-stream mixture is served exactly as its store alone (the same order)."""
    if isinstance(data, Mixture):
        if len(data.streams) == 1:
            return BlockDataset(data.streams[0].store, seq_len, num_samples, seed)
        return MixtureDataset(data, seq_len, num_samples, seed)
    return BlockDataset(data, seq_len, num_samples, seed)


def share_lines(data: TokenStore | Mixture, seq_len: int, num_samples: int, seed: int = 0) -> list[str]:
    """One line per stream: planned and realized token share, tokens served and passes over it."""
    if not isinstance(data, Mixture) or len(data.streams) == 1:
        return []
    ds = MixtureDataset(data, seq_len, num_samples, seed)
    planned = data.shares(seq_len)
    return [f"  stream {st.source}: planned {100 * p:.2f}% / realized {100 * r:.2f}% of tokens "
            f"({n * seq_len:,} tokens, {e:.2f} passes over its {st.store.num_tokens:,})"
            for st, p, r, n, e in zip(data.streams, planned, ds.realized_shares(), ds.counts, ds.epochs())]
