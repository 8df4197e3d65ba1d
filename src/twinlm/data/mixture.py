"""Mixtures: a phase trains on several streams, each with its share of the phase's tokens.

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

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from twinlm.data.packing import BlockDataset, BlockOrder, _key, _key_int, permute, permute_int
from twinlm.data.store import TokenStore

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
        return _apportion(self.shares(seq_len), num_samples)


def _apportion(shares: list[float], total: int) -> list[int]:
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
        """`locate` for one position, in plain Python ints (the same schedule, ~10x faster)."""
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
