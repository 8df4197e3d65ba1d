"""Data plane at Ettin-1b scale on one small machine: memory and start-up bounded in corpus size.

Simulates the ettin-1b recipe's data as prepared folders (what `twinlm prepare` writes) whose
token files are sparse (`os.truncate`: terabytes of ids that cost no disk and read as zeros):
pretraining 1.7T tokens as a mixture of six streams with Ettin-like proportions, extension
250B tokens (one stream), decay 50B tokens (two streams, one of them repeated), in shards of
2^30 tokens (~2,000 shards). Held-out stores are small real stores (random ids). Then, through
the code `twinlm pretrain` runs (`corpus.phase_data`, `mixture.phase_dataset`):

1. open every stream (prepared folders, tokenizer check by per-shard max id);
2. build every phase's order for both twins and check that they agree;
3. compute the unigram baseline from a bounded sample (`BASELINE`, swappable);
4. serve the first 100 batches of each phase (seq 1,024 / 8,192, global batch 4,608 / 576),
   reading every block: by default the micro-batches of rank 0 of 64 GPUs (`--ranks 64`: all
   ranks, i.e. whole global batches).

The last line is `rss_gb=<peak RSS in GB> seconds=<wall time>`. Usage:

    python benchmarks/scale_simulation.py [--ranks 1] [--batches 100] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from twinlm.data.corpus import data_lines, phase_data
from twinlm.data.sampling import MixtureDataset, phase_dataset
from twinlm.data.store import shard_names, write_documents, write_index
from twinlm.recipe import load_recipe
from twinlm.train.schedules import phase_steps

SHARD_TOKENS = 2**30
GPUS = 64
VOCAB = 50_368
SPECIAL = [50281, 50282, 50283, 50284]
# Ettin-like pretraining mixture (shares of the phase's tokens; the paper's mix, rounded).
PRETRAIN = {"dclm": 0.45, "dolma-cc": 0.20, "starcoder": 0.12, "arxiv-pes2o": 0.10, "books": 0.07, "wiki": 0.06}
PHASE_TOKENS = {"pretrain": int(1.7e12), "extension": int(2.5e11), "decay": int(5e10)}


def make_prepared(folder: Path, tokens: int, heldout_docs: int = 2000, seed: int = 0) -> Path:
    """A prepared folder whose train store is sparse: `tokens` ids in shards of SHARD_TOKENS."""
    train = folder / "train"
    train.mkdir(parents=True)
    shards, left, i = [], tokens, 0
    while left > 0:
        n = min(SHARD_TOKENS, left)
        bin_name, docs_name = shard_names(i)
        with open(train / bin_name, "wb") as f:
            f.truncate(2 * n)  # uint16 ids; a hole in the file: no disk used
        docs = np.arange(0, n + 1, 1 << 20, dtype="<i8")  # ~1M-token documents (offsets are small)
        if docs[-1] != n:
            docs = np.append(docs, n)
        docs.tofile(train / docs_name)
        shards.append({"tokens": bin_name, "docs": docs_name, "num_tokens": n, "num_documents": len(docs) - 1,
                       "max_token_id": VOCAB - 1})
        left -= n
        i += 1
    write_index(train, np.uint16, shards, fingerprint="simulated")
    rng = np.random.default_rng(seed)
    held = (np.concatenate([[50281], rng.integers(0, 50_000, 998), [50282]]) for _ in range(heldout_docs))
    write_documents(held, folder / "heldout", np.uint16, fingerprint="simulated")
    (folder / "prepare.json").write_text(json.dumps({"format": "twinlm-prepared", "complete": True, "tokenizer": {
        "name_or_path": "jhu-clsp/ettin-encoder-1b", "vocab_size": VOCAB, "cls_token_id": 50281, "sep_token_id": 50282}}))
    return folder


def bounded_unigram_baseline(train, heldout, vocab_size: int, special_ids=(), sample_tokens: int = 1 << 22,
                             window: int = 4096, seed: int = 0) -> float:
    """Cross-entropy of held-out tokens under a unigram model counted on a bounded, seeded sample
    of the training store (`sample_tokens` ids in windows spread over it) and at most
    `sample_tokens` held-out ids: cost independent of the corpus size. Swap for
    `twinlm.train.heldout`'s bounded baseline when it lands."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, max(1, train.num_tokens - window), max(1, sample_tokens // window))
    counts = np.ones(vocab_size, dtype=np.float64)
    for s in np.sort(starts):
        counts += np.bincount(train.tokens[int(s):int(s) + window], minlength=vocab_size)[:vocab_size]
    counts[list(special_ids)] = 0.0
    logp = np.log(np.maximum(counts, 1e-30) / counts.sum())
    held = np.asarray(heldout.tokens[0:sample_tokens]).astype(np.int64)
    held = held[~np.isin(held, list(special_ids))]
    return float(-logp[held].mean())


BASELINE = bounded_unigram_baseline


def recipe_for(root: Path):
    streams = lambda d: "[" + ", ".join(f"{{source: {root / k}, {w}}}" for k, w in d.items()) + "]"  # noqa: E731
    pre = {k: f"proportion: {v}" for k, v in PRETRAIN.items()}
    decay = {"decay-longform": "repeat: 1", "decay-edu": "repeat: 2"}
    return load_recipe("ettin-1b", [
        "data.source=", f"phases.pretrain.streams={streams(pre)}",
        f"phases.extension.source={root / 'extension'}",
        "phases.decay.source=", f"phases.decay.streams={streams(decay)}",
    ])


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", type=int, default=1, help="ranks of 64 whose micro-batches are read (64: whole batches)")
    ap.add_argument("--batches", type=int, default=100, help="global batches served per phase")
    ap.add_argument("--keep", type=Path, help="build the simulated data here and keep it (default: a temp folder)")
    args = ap.parse_args()
    start = time.perf_counter()
    root = args.keep or Path(tempfile.mkdtemp(prefix="twinlm-scale-"))
    try:
        t0 = time.perf_counter()
        if not (root / "extension").exists():
            for name, share in PRETRAIN.items():
                make_prepared(root / name, int(PHASE_TOKENS["pretrain"] * share), seed=hash(name) % 1000)
            make_prepared(root / "extension", PHASE_TOKENS["extension"])
            make_prepared(root / "decay-longform", int(PHASE_TOKENS["decay"] * 0.6))
            make_prepared(root / "decay-edu", int(PHASE_TOKENS["decay"] * 0.4))
        shards = sum(1 for _ in root.rglob("train/shard-*.bin"))
        print(f"simulated {sum(PHASE_TOKENS.values()) / 1e12:.2f}T tokens in {shards:,} sparse shards under {root} "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
        recipe = recipe_for(root)
        tokenizer = type("Tok", (), {"cls_token_id": 50281, "sep_token_id": 50282, "__len__": lambda self: VOCAB})()
        t0 = time.perf_counter()
        data = phase_data(recipe, tokenizer, root / "cache")
        print(f"opened every stream in {time.perf_counter() - t0:.2f} s", flush=True)
        print("\n".join(data_lines(recipe, data)), flush=True)
        for phase in recipe.phases:
            train, heldout = data[phase.name]
            batch = recipe.batch_of(phase)
            steps = phase_steps(recipe, phase)
            t0 = time.perf_counter()
            twins = [phase_dataset(train, phase.seq_len, steps * batch, recipe.training.seed) for _ in range(2)]
            built = time.perf_counter() - t0
            t0 = time.perf_counter()
            baseline = BASELINE(train, heldout, VOCAB, SPECIAL)
            base_s = time.perf_counter() - t0
            per_rank = batch // GPUS
            t0 = time.perf_counter()
            served = 0
            for step in range(args.batches):
                positions = np.concatenate([step * batch + r * per_rank + np.arange(per_rank) for r in range(args.ranks)])
                if isinstance(twins[0], MixtureDataset):
                    a, b = twins[0].locate(positions), twins[1].locate(positions)
                    same = all(np.array_equal(x, y) for x, y in zip(a, b))
                else:
                    same = np.array_equal(twins[0].order.lookup(positions), twins[1].order.lookup(positions))
                if not same:
                    sys.exit(f"phase {phase.name}: the twins' orders differ at step {step}")
                items = twins[0].__getitems__(positions.tolist())
                served += sum(int(x["input_ids"].numel()) for x in items)
            serve_s = time.perf_counter() - t0
            print(f"{phase.name}: {steps:,} steps x {batch} x {phase.seq_len}; order built for both twins in "
                  f"{built:.3f} s; unigram baseline {baseline:.3f} in {base_s:.2f} s; served {args.batches} batches "
                  f"({args.ranks}/{GPUS} ranks, {served:,} tokens) in {serve_s:.2f} s; twins identical", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(f"rss_gb={rss_gb():.3f} seconds={time.perf_counter() - start:.1f}", flush=True)


if __name__ == "__main__":
    main()
