"""Pretraining throughput: twinlm's step against the stock Hugging Face recipe, same run.

Baselines are the way `run_mlm.py` / `run_clm.py` train by default:
- "stock packed": concatenate-and-chunk (`group_texts`), `DataCollatorForLanguageModeling`
  (MLM 15% / CLM), stock model config, the Trainer's default AdamW;
- "stock padded": the line-by-line variant, each document its own row padded to the sequence
  length (the pad tokens are computed and then thrown away).
twinlm: pre-tokenized memory-mapped blocks, its MLM (30%, the Ettin ratio) / CLM collator,
StableAdamW and, for the encoder, the MLM head computed only on masked positions, documents kept
apart in the packed blocks (`--document-masking` adds a row without that, and the ratio).

Same model shape (Ettin-17m, full 50,368 vocabulary), batch and sequence length for all. The
figure is tokens/s of real (non-pad) tokens over timed steps after warm-up, and MFU against
the measured matmul peak of this machine. Usage:

    python benchmarks/pretrain_throughput.py [--steps 20] [--seq-len 512] [--batch 8] [--document-masking]
        [--skip-stock] [--skip-padded] [--rounds 3] [--json out.json]

With --rounds R the table gives each figure's median over the rounds and each ratio's range.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.utils import logging as hf_logging

from twinlm.data.corpus import prepare_stores, prepare_tokenizer
from twinlm.models import build_config, build_twin, training_flops_per_token
from twinlm.recipe import ModelShape, load_recipe
from twinlm.train.metrics import measure_peak_tflops
from twinlm.train.pretrain import build_phase_trainer

VOCAB = 50_368


class Timer(TrainerCallback):
    """Wall time and real tokens of the steps after `warmup`."""

    def __init__(self, warmup: int, pad_id: int):
        self.warmup, self.pad_id = warmup, pad_id
        self.start = None
        self.seconds = 0.0

    def on_step_begin(self, args, state, control, **kw):
        if state.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        # Stop the clock at the last optimizer step, before any end-of-training save.
        if self.start is not None:
            self.seconds = time.perf_counter() - self.start


class CountingCollator:
    """Wraps a collator to count the non-pad tokens it hands out after warm-up."""

    def __init__(self, inner, pad_id: int, warmup_batches: int):
        self.inner, self.pad_id, self.skip = inner, pad_id, warmup_batches
        self.real_tokens = 0

    def __call__(self, features):
        batch = self.inner(features)
        if self.skip > 0:
            self.skip -= 1
        else:
            self.real_tokens += int((batch["attention_mask"] if "attention_mask" in batch else
                                     batch["input_ids"] != self.pad_id).sum())
        return batch


def stock_args(out: str, steps: int, batch: int) -> TrainingArguments:
    return TrainingArguments(output_dir=out, max_steps=steps, per_device_train_batch_size=batch,
                             learning_rate=5e-4, report_to="none", save_strategy="no", disable_tqdm=True,
                             logging_strategy="no", use_cpu=not torch.cuda.is_available(),
                             dataloader_drop_last=True)


def stock_dataset(tokenizer, texts: list[str], seq_len: int, padded: bool):
    """`run_mlm.py`'s two data paths: group_texts (packed) or line-by-line padded to seq_len."""
    if padded:
        enc = tokenizer(texts, truncation=True, max_length=seq_len, padding="max_length",
                        return_special_tokens_mask=True)
        return [{k: enc[k][i] for k in enc} for i in range(len(texts))]
    enc = tokenizer(texts, return_special_tokens_mask=True)
    concat = {k: sum(enc[k], []) for k in enc}
    total = (len(concat["input_ids"]) // seq_len) * seq_len
    return [{k: concat[k][i : i + seq_len] for k in concat} for i in range(0, total, seq_len)]


def run_stock(twin, tokenizer, texts, shape, seq_len, batch, steps, warmup, padded, tmp):
    config = build_config(twin, shape, tokenizer)
    config.vocab_size = VOCAB
    model = build_twin(twin, config, seed=0)
    collator = CountingCollator(DataCollatorForLanguageModeling(tokenizer, mlm=twin == "encoder"),
                                tokenizer.pad_token_id, warmup)
    timer = Timer(warmup, tokenizer.pad_token_id)
    trainer = Trainer(model=model, args=stock_args(tmp, warmup + steps, batch),
                      train_dataset=stock_dataset(tokenizer, texts, seq_len, padded), data_collator=collator,
                      callbacks=[timer])
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.train()
    return collator.real_tokens / timer.seconds, 1.0


def run_twinlm(twin, tokenizer, store, recipe, seq_len, batch, steps, warmup, tmp, document_masking=True):
    recipe.training.document_masking = document_masking
    phase = recipe.phases[0]
    phase.seq_len = seq_len
    recipe.training.global_batch = recipe.training.micro_batch = batch
    recipe.training.log_every = 10**9
    recipe.training.save_every = 10**9
    config = build_config(twin, recipe.model, tokenizer)
    config.vocab_size = VOCAB
    if twin == "encoder":
        config.sparse_prediction = True
    model = build_twin(twin, config, seed=0)
    trainer = build_phase_trainer(recipe, Path(tmp), twin, model, tokenizer, phase, warmup + steps, store)
    # twinlm collates inside its per-step dataset (StepBatches): one micro-batch per step here.
    collator = CountingCollator(trainer.train_dataset.collator, tokenizer.pad_token_id, warmup)
    trainer.train_dataset.collator = collator
    timer = Timer(warmup, tokenizer.pad_token_id)
    trainer.add_callback(timer)
    trainer.train()
    return collator.real_tokens / timer.seconds, phase.mask_ratio if twin == "encoder" else 1.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20, help="timed steps per configuration (after warm-up)")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", default="17m", help="model shape (default 17m)")
    p.add_argument("--twins", default="encoder,decoder")
    p.add_argument("--document-masking", action="store_true",
                   help="add a row with documents attending across the packed block (twinlm before document "
                        "masking) and print the throughput ratio of keeping them apart")
    p.add_argument("--skip-stock", action="store_true", help="run only twinlm's rows")
    p.add_argument("--skip-padded", action="store_true", help="leave out the stock padded rows (slow, and not the baseline)")
    p.add_argument("--rounds", type=int, default=1,
                   help="run every row this many times, the rows of a round one after another, and report each "
                        "ratio's median and range over the rounds: a load that drifts during the run then moves "
                        "both sides of a ratio alike")
    p.add_argument("--json", help="also write the table as JSON here")
    args = p.parse_args(argv)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    shape = ModelShape(size=args.size)
    recipe = load_recipe("nano", [f"model.size={args.size}", "model.max_position_embeddings=8192",
                                  "data.world.num_people=3000", "training.precision=fp32"])
    tmp = tempfile.mkdtemp(prefix="twinlm-bench-")
    tokenizer = prepare_tokenizer(recipe, Path(tmp))
    store, _ = prepare_stores(recipe, tokenizer, Path(tmp) / "data", None)
    from twinlm.data.corpus import split_texts

    texts = list(split_texts(recipe, None)[0])
    peak = measure_peak_tflops()
    print(f"shape {args.size} (vocab {VOCAB:,}), seq {args.seq_len}, batch {args.batch}, {args.steps} timed steps; "
          f"measured peak {peak * 1e3:.0f} GFLOP/s; device {'cuda' if torch.cuda.is_available() else 'cpu'}",
          flush=True)
    rows = []
    for twin in args.twins.split(","):
        names = [] if args.skip_stock else (["stock packed"] if args.skip_padded else ["stock padded", "stock packed"])
        names += ["twinlm"] + (["twinlm across docs"] if args.document_masking else [])
        rounds: list[dict] = []
        for r in range(args.rounds):
            results = {}
            for name in names:
                if name.startswith("twinlm"):
                    tps, head = run_twinlm(twin, tokenizer, store, recipe, args.seq_len, args.batch, args.steps,
                                           args.warmup, tmp + f"/{twin}-{name.replace(' ', '-')}-{r}",
                                           document_masking=name == "twinlm")
                else:
                    tps, head = run_stock(twin, tokenizer, texts, shape, args.seq_len, args.batch, args.steps,
                                          args.warmup, name == "stock padded", tmp + f"/{twin}-{name}-{r}")
                # MFU counts the model FLOPs each recipe really needs per real token.
                flops = training_flops_per_token(shape, VOCAB, args.seq_len, head)
                results[name] = (tps, tps * flops / (peak * 1e12))
                print(f"  {twin:8s} {name:13s} {tps:10,.0f} tok/s  MFU {100 * results[name][1]:.1f}%"
                      + (f"  (round {r + 1}/{args.rounds})" if args.rounds > 1 else ""), flush=True)
            rounds.append(results)
        for name in names:
            tps = statistics.median(res[name][0] for res in rounds)
            mfu = statistics.median(res[name][1] for res in rounds)
            ratios = [res[name][0] / res["stock packed"][0] for res in rounds if "stock packed" in res]
            row = {"twin": twin, "recipe": name, "tokens_per_second": round(tps, 1), "mfu": round(mfu, 4),
                   "vs_stock_packed": round(statistics.median(ratios), 2) if ratios else float("nan")}
            if len(ratios) > 1:
                row["vs_stock_packed_range"] = [round(min(ratios), 2), round(max(ratios), 2)]
            rows.append(row)
        if args.document_masking:
            ratio = statistics.median(res["twinlm"][0] / res["twinlm across docs"][0] for res in rounds)
            rows[-1]["masking_ratio"] = rows[-2]["masking_ratio"] = round(ratio, 3)
            print(f"  {twin:8s} documents apart / across: {ratio:.3f}x tokens/s", flush=True)
    print("\n| twin | recipe | real tokens/s | MFU | vs stock packed |\n|---|---|---|---|---|")
    for r in rows:
        vs = "n/a" if r["vs_stock_packed"] != r["vs_stock_packed"] else f"{r['vs_stock_packed']:.2f}x"
        if "vs_stock_packed_range" in r:
            vs += f" ({r['vs_stock_packed_range'][0]:.2f}-{r['vs_stock_packed_range'][1]:.2f})"
        print(f"| {r['twin']} | {r['recipe']} | {r['tokens_per_second']:,.0f} | {100 * r['mfu']:.1f}% | {vs} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
