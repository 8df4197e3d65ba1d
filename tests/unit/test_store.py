"""The sharded token store: what is written reads back, across shard boundaries."""

from __future__ import annotations

import numpy as np
import pytest

from twinlm.data.store import ShardWriter, TokenStore, id_dtype, is_store, write_index


def _write(folder, docs_per_shard, dtype=np.uint16):
    shards = []
    for i, docs in enumerate(docs_per_shard):
        w = ShardWriter(folder, i, dtype)
        for d in docs:
            w.add(d)
        shards.append(w.close())
    write_index(folder, dtype, shards, fingerprint="x")


def test_store_reads_back_across_shards(tmp_path):
    rng = np.random.default_rng(0)
    docs = [[rng.integers(0, 60000, rng.integers(1, 50)) for _ in range(k)] for k in (3, 1, 5)]
    assert not is_store(tmp_path)
    _write(tmp_path, docs)
    store = TokenStore.open(tmp_path)
    flat = np.concatenate([d for shard in docs for d in shard])
    assert is_store(tmp_path) and store.num_tokens == flat.size and store.num_documents == 9
    assert np.array_equal(np.asarray(store.tokens), flat)
    for a, b in [(0, 1), (5, 70), (flat.size - 3, flat.size + 10), (17, 17)]:
        assert np.array_equal(store.tokens[a:b], flat[a:b])
    offsets = store.document_offsets(2)
    assert offsets[0] == 0 and offsets[-1] == store.shards[2]["num_tokens"] and len(offsets) == 6
    assert store.index["max_token_id"] == int(flat.max())


def test_writer_refuses_ids_that_do_not_fit(tmp_path):
    w = ShardWriter(tmp_path, 0, np.uint16)
    with pytest.raises(ValueError, match="70000"):
        w.add([1, 70000])
    assert id_dtype(50368) == np.uint16 and id_dtype(70000) == np.uint32
