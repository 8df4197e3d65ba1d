"""Tokenize once, pack into fixed-length blocks on disk, and serve them in one fixed order.

The corpus becomes one flat memory-mapped array of token ids, every document framed as
`[CLS] ... [SEP]` so that document boundaries stay visible. A phase with sequence length L reads
non-overlapping windows of L tokens from that array: no padding, and the same file serves every
phase and both twins. Only the tail shorter than one block is unused; that share is the packing
loss reported as `efficiency`.

The block order is a permutation drawn from the recipe seed (a new one each pass over the
data), fixed before training, so both twins see exactly the same blocks in the same order.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Sequence
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


def block_order(num_blocks: int, num_samples: int, seed: int) -> np.ndarray:
    """`num_samples` block indices: successive passes over the blocks, each freshly permuted."""
    passes = -(-num_samples // num_blocks)
    order = [np.random.default_rng([seed, p]).permutation(num_blocks) for p in range(passes)]
    return np.concatenate(order)[:num_samples]


class BlockDataset(Dataset):
    """Fixed-length token blocks from a `TokenStore`, in the order given by `block_order`."""

    def __init__(self, store: TokenStore, seq_len: int, num_samples: int, seed: int):
        self.store, self.seq_len = store, seq_len
        self.num_blocks = store.num_tokens // seq_len
        if self.num_blocks == 0:
            raise ValueError(f"the corpus has {store.num_tokens} tokens, fewer than one block of {seq_len}")
        self.order = block_order(self.num_blocks, num_samples, seed)

    def __len__(self) -> int:
        return len(self.order)

    def block(self, index: int) -> np.ndarray:
        start = int(index) * self.seq_len
        return np.asarray(self.store.tokens[start : start + self.seq_len], dtype=np.int64)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.from_numpy(self.block(self.order[i]))}


def held_out_blocks(store: TokenStore, seq_len: int, limit: int | None = None) -> Sequence[np.ndarray]:
    """All full blocks of a held-out store in file order (for evaluation)."""
    n = store.num_tokens // seq_len if limit is None else min(limit, store.num_tokens // seq_len)
    return [np.asarray(store.tokens[i * seq_len : (i + 1) * seq_len], dtype=np.int64) for i in range(n)]
