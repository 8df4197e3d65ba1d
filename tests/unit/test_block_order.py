"""The block order is computed, not stored: a fresh permutation per pass, O(1) memory at any size."""

from __future__ import annotations

import time
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest

from twinlm.data.sampling import BlockDataset, BlockOrder


@pytest.mark.parametrize("n", [1, 2, 3, 7, 16, 17, 63, 100, 1000, 2 * 16 * 1024 + 5])
@pytest.mark.parametrize("chunk,window", [(16, 1024), (3, 4), (1, 1), (5, 2)])
def test_every_pass_is_a_permutation_and_scalar_equals_vector(n, chunk, window):
    order = BlockOrder(n, 3 * n + 2, seed=7, chunk=chunk, window=window)
    blocks = np.asarray(order)
    for p in range(3):
        assert sorted(blocks[p * n:(p + 1) * n].tolist()) == list(range(n))
    if n > 3:
        assert blocks[:n].tolist() != blocks[n:2 * n].tolist(), "each pass is a fresh permutation"
    probe = list(range(0, len(order), max(1, len(order) // 200)))
    assert [order[i] for i in probe] == blocks[probe].tolist()


def test_seeds_differ_and_both_twins_get_the_same_order():
    a, b, c = (np.asarray(BlockOrder(5000, 5000, seed)) for seed in (1, 1, 2))
    assert np.array_equal(a, b)
    assert (a != c).mean() > 0.9
    assert not np.array_equal(a, np.arange(5000)), "shuffled"


def test_reads_keep_locality_within_a_window():
    # Any window of positions draws whole chunks of consecutive blocks (the shard-window shuffle).
    order = BlockOrder(64 * 8 * 10, 64 * 8 * 10, seed=3, chunk=8, window=64)
    first = np.asarray(order[: 64 * 8])
    assert len(np.unique(first // 8)) == 64


def _fake_store(tokens: int, ordered: bool = False):
    return SimpleNamespace(num_tokens=tokens, index={"ordered": ordered},
                           tokens=SimpleNamespace(__getitem__=None))


def test_memory_and_time_are_independent_of_corpus_size():
    start = time.perf_counter()
    ds = BlockDataset(_fake_store(10**12), 1024, num_samples=10**10, seed=0)  # 1T tokens, ~1e9 blocks
    looked = [ds.order[i] for i in range(0, 10**10, 10**7)]
    seconds = time.perf_counter() - start
    assert seconds < 1.0, seconds
    assert len(set(looked)) == 1000 and max(looked) < 10**12 // 1024
    tracemalloc.start()  # no allocation grows with the number of blocks
    BlockDataset(_fake_store(10**12), 1024, num_samples=10**10, seed=0).order.lookup(np.arange(0, 10**10, 10**8))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2**20, peak


def test_ordered_stores_keep_file_order():
    ds = BlockDataset(_fake_store(1024 * 10, ordered=True), 1024, num_samples=25, seed=5)
    assert np.asarray(ds.order).tolist() == [i % 10 for i in range(25)]
