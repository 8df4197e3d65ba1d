"""Does one rank's data path outrun the GPU it feeds?

Measures the tokens per second that the code `twinlm pretrain` runs delivers to the model, per
loader worker: prepared-store reads, the computed block order, a two-stream mixture, MLM masking
(encoder) or CLM labels with masked boundaries (decoder), per-document positions, and the varlen
flattening of flash-attention runs. At the ettin-17m shape's sequence lengths (1,024 and 8,192)
with its micro-batches (`micro_batch: auto` within `micro_batch_tokens`), with 0, 1 and 2 loader
workers (0: the training process itself).

The target is per worker on one CPU core: at least 3x the fastest Ettin GPU rate (ettin-17m,
about 985,000 tokens/s per H100, ETTIN-FACTS section 7), so one or two workers per GPU suffice.
Then the per-step data time at the far end of a 2T-token sparse store (the scale simulation's
layout: reads there are of holes, so they measure the order lookup and indexing, not the disk)
against a small real store: it must not grow with the corpus.

Rates are given per CPU-second of the processes that build the batches (the main process with 0
workers, the workers otherwise), which a busy machine does not distort, beside the wall-clock rate.
The last line is `tokens_per_s=<slowest configuration, per worker-CPU-second> ratio=<vs 985,000>`. Usage:

    python benchmarks/data_throughput.py [--tokens 40000000] [--seconds 3] [--workers 0,1,2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch
from torch.utils.data import DataLoader

from twinlm.data.sampling import Mixture, Stream, phase_dataset
from twinlm.data.store import TokenStore, write_documents
from twinlm.objectives import collator_for
from twinlm.recipe import load_recipe
from twinlm.train.batching import StepBatches, first_item, split_batch
from twinlm.train.sample_rng import IndexedDataset, SeededCollator
from twinlm.train.schedules import BatchSchedule

ETTIN_17M_TOKENS_PER_S = 985_000
VOCAB, CLS, SEP, PAD, MASK = 50_368, 50281, 50282, 50283, 50284


class Tokenizer:
    """The four ids and the size the collators read from a ModernBERT tokenizer (no files needed)."""

    cls_token_id, mask_token_id = CLS, MASK
    all_special_ids = [CLS, SEP, PAD, MASK]

    def __len__(self) -> int:
        return VOCAB


def make_store(folder: Path, tokens: int, seed: int) -> TokenStore:
    """A real store of random-id documents with a web-like length spread (log-normal, median ~400)."""
    rng = np.random.default_rng(seed)

    def documents():
        left = tokens
        while left > 0:
            n = int(min(left, max(8, rng.lognormal(6.0, 1.0))))
            yield np.concatenate([[CLS], rng.integers(0, 50_000, n - 2), [SEP]]).astype(np.uint16)
            left -= n

    write_documents(documents(), folder, np.uint16, fingerprint="benchmark")
    return TokenStore.open(folder)


def cpu_seconds(workers: int) -> float:
    """CPU time spent so far by whoever builds the batches: this process, or the loader workers."""
    if workers == 0:
        return time.process_time()
    return sum(sum(c.cpu_times()[:2]) for c in psutil.Process().children())


def measure(steps: StepBatches, workers: int, seconds: float, first_step: int = 0) -> tuple[float, float, float]:
    """(tokens/s delivered, tokens per CPU-second of the batch builders, seconds per micro-batch),
    over `seconds` after the workers have started. The loader is the one `twinlm pretrain` builds:
    one item per optimizer step (this rank's micro-batches), batch size 1. The CPU-time rate is
    the one a loaded machine does not distort: it is what one core gives when it is not shared."""
    loader = DataLoader(steps, batch_size=1, collate_fn=first_item, num_workers=workers,
                        sampler=range(first_step, len(steps)), prefetch_factor=2 if workers else None)
    it = iter(loader)
    next(it)  # worker start-up and the first step are not the steady state
    tokens, batches, fetched = 0, 0, 0
    start, cpu0 = time.perf_counter(), cpu_seconds(workers)
    while time.perf_counter() - start < seconds:
        micro_batches = next(it)
        fetched += 1
        tokens += sum(mb["input_ids"].numel() for mb in micro_batches)
        batches += len(micro_batches)
    elapsed, cpu = time.perf_counter() - start, cpu_seconds(workers) - cpu0
    del it
    # Workers prefetch ahead of what was consumed; their CPU time covers those steps too.
    ahead = 2 * workers * (tokens / fetched) if workers else 0
    return tokens / elapsed, (tokens + ahead) / max(cpu, 1e-9), elapsed / batches


def rank_steps(recipe, phase, data, collate, processes: int, steps: int) -> StepBatches:
    """Rank 0's share of `steps` optimizer steps of `phase` at the full global batch, exactly as
    `twinlm pretrain` feeds them (sample-keyed masks included)."""
    schedule = BatchSchedule(recipe.batch_of(phase), phase.seq_len, steps * recipe.batch_of(phase) * phase.seq_len)
    split = split_batch(recipe, phase, processes)
    dataset = phase_dataset(data, phase.seq_len, schedule.samples_through(steps), recipe.training.seed)
    return StepBatches(IndexedDataset(dataset), schedule, split.micro_batch, SeededCollator(collate, recipe.training.seed),
                       rank=0, processes=processes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=40_000_000, help="tokens in the real stores (two streams)")
    ap.add_argument("--seconds", type=float, default=3.0, help="measuring time per configuration")
    ap.add_argument("--workers", default="0,1,2", help="loader worker counts to measure")
    ap.add_argument("--gpus", type=int, default=4, help="processes the global batch splits over (Ettin-17m: 4)")
    ap.add_argument("--sparse-tokens", type=float, default=2e12, help="size of the sparse store (0: skip)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # one core per worker, as the target is stated
    recipe = load_recipe("ettin-17m")
    tok = Tokenizer()
    worker_counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        stores = [make_store(root / f"s{i}", args.tokens // 2, seed=i) for i in range(2)]
        mixture = Mixture([Stream("a", stores[0], proportion=0.6), Stream("b", stores[1], proportion=0.4)])
        print(f"stores: 2 x {stores[0].num_tokens:,} tokens, {stores[0].num_documents:,} documents each; "
              f"{args.gpus} processes; 1 thread per process")
        rows = []
        for phase in (recipe.phases[0], recipe.phases[1]):
            split = split_batch(recipe, phase, args.gpus)
            for twin in ("encoder", "decoder"):
                for attn in ("sdpa", "flash_attention_2"):
                    collate = collator_for(twin, tok, phase.mask_ratio, True, attn)
                    steps = rank_steps(recipe, phase, mixture, collate, args.gpus, 1000)
                    for w in worker_counts:
                        rate, per_core, per_step = measure(steps, w, args.seconds)
                        rows.append(per_core)
                        print(f"seq {phase.seq_len:>5} micro {split.micro_batch:>3} {twin:<7} {attn:<17} "
                              f"workers {w}: {rate:>11,.0f} tokens/s wall, {per_core:>11,.0f} per worker-CPU-second "
                              f"({per_core / ETTIN_17M_TOKENS_PER_S:4.1f}x ettin-17m/GPU), "
                              f"{1000 * per_step:6.2f} ms per micro-batch", flush=True)
        if args.sparse_tokens:
            sparse_check(root, int(args.sparse_tokens), stores[0], recipe, tok, args)
    worst = min(rows)
    print(f"tokens_per_s={worst:.0f} ratio={worst / ETTIN_17M_TOKENS_PER_S:.2f}")


def sparse_check(root: Path, tokens: int, small: TokenStore, recipe, tok, args) -> None:
    """Per-step data time, early and at step ~100,000 of the order, on a small real store and on a
    sparse store of `tokens` (holes read as zeros: no document starts, so only the reads and the
    order lookup are measured there; the small store is timed the same way for the comparison)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from scale_simulation import make_prepared  # the same sparse layout the scale simulation uses

    big = TokenStore.open(make_prepared(root / "sparse", tokens) / "train")
    phase = recipe.phases[0]
    split = split_batch(recipe, phase, args.gpus)
    collate = collator_for("encoder", tok, phase.mask_ratio, True, "sdpa")
    for name, store in (("small", small), ("sparse", big)):
        steps = rank_steps(recipe, phase, store, collate, args.gpus, 200_000)
        for first in (0, 100_000):  # step 0 and step 100,000 of the phase
            _, per_core, _ = measure(steps, 0, args.seconds / 2, first)
            cpu_ms = 1000 * split.micro_batch * phase.seq_len / per_core
            print(f"{name:>6} store {store.num_tokens:>17,} tokens, from step {first:>7,}: "
                  f"{cpu_ms:6.2f} CPU-ms per micro-batch of {split.micro_batch} x {phase.seq_len}", flush=True)


if __name__ == "__main__":
    main()
