"""Randomness keyed by samples, never by processes: MLM masks per sample, dropout per
micro-batch, each from (run seed, sample index), so that a step draws the same random numbers on
any number of processes and after any resume (see `train/elastic.py`)."""

from __future__ import annotations

import hashlib

import torch

from twinlm.objectives import MLMCollator

MASK_STREAM, DROPOUT_STREAM = 1, 2
SAMPLE_KEY = "sample_index"  # in dataset items, for SeededCollator
FIRST_SAMPLE_KEY = "twinlm_first_sample"  # in collated batches, for seed_dropout


def sample_seed(seed: int, stream: int, index: int) -> int:
    """A 63-bit seed for random stream `stream` at sample `index` of a run seeded `seed`: distinct
    streams and neighbouring samples get unrelated generators."""
    digest = hashlib.blake2b(f"{seed}/{stream}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seed_dropout(batch: dict, seed: int) -> dict:
    """The model inputs of a collated micro-batch, the global RNG (all devices) seeded for its
    forward/backward from the index of its first sample (FIRST_SAMPLE_KEY, added by
    SeededCollator and removed here). Activation checkpointing replays that state when it
    recomputes. A batch without the key leaves the RNG as it is."""
    first = batch.pop(FIRST_SAMPLE_KEY, None)
    if first is not None:
        torch.manual_seed(sample_seed(seed, DROPOUT_STREAM, int(first.reshape(-1)[0])))
    return batch




class IndexedDataset(torch.utils.data.Dataset):
    """The items of `dataset`, each with its position under SAMPLE_KEY (see SeededCollator)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return {**self.dataset[i], SAMPLE_KEY: i}


class SeededCollator:
    """Runs `collator` with its randomness keyed by sample: the MLM collator draws each sample's
    mask from a generator seeded by (run seed, sample index); other collators (MNTP) run with the
    global torch RNG seeded from the index of the batch's first sample, inside `fork_rng`.

    Masks are then a function of the data (MLM: not even of the micro-batch size), never of the
    number of processes, so a resumed phase sees exactly the masks of an uninterrupted one, on
    any process count. (The Trainer's own RNG checkpointing cannot give that: the dataloader
    collates batches ahead, and the Trainer restores the saved state only after collating the
    first resumed batches.) The batch also carries the index of its first sample, from which the
    trainer seeds the model's dropout (`seed_dropout`)."""

    def __init__(self, collator, seed: int):
        self.collator, self.seed = collator, seed

    def __call__(self, examples: list[dict]) -> dict:
        indices = [int(e[SAMPLE_KEY]) for e in examples]
        examples = [{k: v for k, v in e.items() if k != SAMPLE_KEY} for e in examples]
        if isinstance(self.collator, MLMCollator):
            generators = [torch.Generator().manual_seed(sample_seed(self.seed, MASK_STREAM, i)) for i in indices]
            batch = self.collator(examples, generators=generators)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed((self.seed % 2**31) * 2**32 + indices[0])
                batch = self.collator(examples)
        return {**batch, FIRST_SAMPLE_KEY: torch.tensor([indices[0]])}


