"""GPU smoke run: both twins of the Ettin-17m and -150m shapes through twinlm's real training
step (packed blocks with documents kept apart, MLM/CLM collators, chunked decoder loss,
StableAdamW, bf16, flash_attention_2 when installed, else sdpa) at real sequence lengths, on
synthetic token data, printing tokens/s per GPU, MFU and the ratio to the published anchors.

Anchors (ETTIN-FACTS §7; no MFU was published): ModernBERT-base (the 150m shape) 1.7T tokens in
194 h on 8 x H100, about 300k tokens/s per GPU; Ettin on 4 x H100 for ~2T tokens: 17m about
985k, 150m about 295k tokens/s per GPU.

    python benchmarks/gpu_smoke.py [--steps 50] [--sizes 17m,150m] [--seq-lens 1024,8192] [--json out.json]
    python benchmarks/gpu_smoke.py --cpu-dry-run     # tiny shapes on CPU: checks the script only
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback
from transformers.utils import logging as hf_logging

from twinlm.data.store import TokenStore
from twinlm.models import build_config, build_twin, training_flops_per_token
from twinlm.recipe import load_recipe
from twinlm.train.metrics import default_peak_tflops
from twinlm.train.pretrain import build_phase_trainer

CLS, SEP, PAD, MASK, VOCAB = 50281, 50282, 50283, 50284, 50368
ANCHORS = {"17m": 985_000, "150m": 295_000}  # Ettin, tokens/s per H100
MODERNBERT_BASE = 300_000  # tokens/s per H100, the 150m shape


class SyntheticTokenizer:
    """What the collators and config builder read from a tokenizer: ModernBERT's special ids."""

    cls_token_id = bos_token_id = CLS
    sep_token_id = eos_token_id = SEP
    pad_token_id, mask_token_id = PAD, MASK
    all_special_ids = [CLS, SEP, PAD, MASK]

    def __len__(self) -> int:
        return VOCAB


def synthetic_store(folder: Path, num_tokens: int, mean_doc: int, seed: int = 0) -> TokenStore:
    """A flat token stream of `[CLS] ... [SEP]` documents (exponential lengths around
    `mean_doc`, capped at 8,000 like Ettin's extension chunks), written as a TokenStore."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(5, CLS, size=num_tokens, dtype=np.uint16)
    pos, docs = 0, 0
    while pos < num_tokens:
        tokens[pos] = CLS
        pos += int(min(8000, max(8, rng.exponential(mean_doc))))
        if pos - 1 < num_tokens:
            tokens[pos - 1] = SEP
        docs += 1
    folder.mkdir(parents=True, exist_ok=True)
    tokens.tofile(folder / "tokens.bin")
    (folder / "meta.json").write_text(json.dumps({"fingerprint": "synthetic", "dtype": "uint16",
                                                  "num_tokens": num_tokens, "num_documents": docs}))
    return TokenStore.open(folder)


class Timer(TrainerCallback):
    """Wall time of the optimizer steps after `warmup` (CUDA synchronized at both ends)."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.seconds, self.steps = warmup, None, 0.0, 0

    @staticmethod
    def _sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_step_begin(self, args, state, control, **kw):
        if state.global_step == self.warmup:
            self._sync()
            self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        if self.start is not None:
            self._sync()
            self.seconds = time.perf_counter() - self.start
            self.steps = state.global_step - self.warmup


def run_one(size: str, twin: str, seq_len: int, args, store: TokenStore, attn: str, tmp: Path) -> dict:
    micro = max(1, args.tokens_per_step // seq_len)
    overrides = [f"model.size={size}", "model.max_position_embeddings=8192", f"training.micro_batch={micro}",
                 f"training.global_batch={micro}", f"training.attn_implementation={attn}",
                 f"phases.extension.global_batch={micro}", f"phases.decay.global_batch={micro}",
                 "training.batch_warmup_tokens=0",
                 f"training.precision={args.precision}", f"training.loss_chunk={args.loss_chunk}",
                 f"training.compile={str(args.compile).lower()}", "training.log_every=1000000",
                 "training.save_every=1000000", f"training.dataloader_workers={args.workers}"]
    recipe = load_recipe("ettin-17m", overrides)
    phase = recipe.phases[0]
    phase.seq_len, phase.global_batch = seq_len, micro
    tokenizer = SyntheticTokenizer()
    config = build_config(twin, recipe.model, tokenizer)
    if twin == "encoder":
        config.sparse_prediction = recipe.training.sparse_mlm_head
    model = build_twin(twin, config, seed=0, attn_implementation=attn)
    steps = args.warmup + args.steps
    trainer = build_phase_trainer(recipe, tmp / f"{size}-{twin}-{seq_len}", twin, model, tokenizer, phase, steps, store)
    timer = Timer(args.warmup)
    trainer.add_callback(timer)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    out = trainer.train()
    tps = timer.steps * micro * seq_len / max(timer.seconds, 1e-9)
    head = phase.mask_ratio if twin == "encoder" else 1.0
    flops = training_flops_per_token(recipe.model, VOCAB, seq_len, head)
    peak = args.peak_tflops or default_peak_tflops(args.precision)
    row = {"size": size, "twin": twin, "seq_len": seq_len, "micro_batch": micro, "attn": attn,
           "steps_timed": timer.steps, "tokens_per_second_per_gpu": round(tps, 1),
           "mfu": round(tps * flops / (peak * 1e12), 4), "final_loss": round(out.training_loss, 4),
           "vs_ettin_anchor": round(tps / ANCHORS[size], 3) if size in ANCHORS else None,
           "vs_modernbert_base": round(tps / MODERNBERT_BASE, 3) if size == "150m" else None,
           "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None}
    print(f"{size:5s} {twin:8s} seq {seq_len:5d} x {micro:3d}  {tps:12,.0f} tok/s/GPU  MFU {100 * row['mfu']:5.1f}%  "
          f"vs anchor {row['vs_ettin_anchor']}  peak mem {row['peak_memory_gb']} GB  loss {row['final_loss']}",
          flush=True)
    del trainer, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="17m,150m")
    p.add_argument("--seq-lens", default="1024,8192")
    p.add_argument("--twins", default="encoder,decoder")
    p.add_argument("--steps", type=int, default=50, help="timed optimizer steps per run (after warm-up)")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up steps (kernel selection, compile)")
    p.add_argument("--tokens-per-step", type=int, default=65_536, help="micro-batch = this // seq_len")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--attn", default="auto", help="flash_attention_2, sdpa, or auto (flash when installed)")
    p.add_argument("--loss-chunk", type=int, default=16_384, help="training.loss_chunk (0: stock decoder loss)")
    p.add_argument("--compile", action="store_true", help="training.compile")
    p.add_argument("--workers", type=int, default=2, help="training.dataloader_workers")
    p.add_argument("--peak-tflops", type=float, default=None, help="for MFU; default: datasheet peak of the GPU")
    p.add_argument("--cpu-dry-run", action="store_true", help="tiny shapes and steps on CPU (checks the script)")
    p.add_argument("--json", help="also write the rows as JSON here")
    args = p.parse_args(argv)
    if args.cpu_dry_run:
        args.sizes, args.seq_lens, args.steps, args.warmup = "micro", "64,256", 2, 1
        args.tokens_per_step, args.workers, args.loss_chunk = 512, 0, 100
    elif not torch.cuda.is_available():
        print("no CUDA device: run on a GPU machine, or pass --cpu-dry-run to check the script", file=sys.stderr)
        return 2
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    attn = args.attn
    if attn == "auto":
        attn = "flash_attention_2" if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") else "sdpa"
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"device {device}; torch {torch.__version__}; attention {attn}; precision {args.precision}; "
          f"{args.steps} timed steps after {args.warmup}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="twinlm-gpu-smoke-"))
    store = synthetic_store(tmp / "store", num_tokens=max(2**22, 4 * args.tokens_per_step), mean_doc=900)
    rows = []
    for size in args.sizes.split(","):
        for seq_len in map(int, args.seq_lens.split(",")):
            for twin in args.twins.split(","):
                rows.append(run_one(size, twin, seq_len, args, store, attn, tmp))
    print("\n| shape | twin | seq x micro-batch | tokens/s per GPU | MFU | vs Ettin anchor | peak GPU memory |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['twin']} | {r['seq_len']} x {r['micro_batch']} | "
              f"{r['tokens_per_second_per_gpu']:,.0f} | {100 * r['mfu']:.1f}% | {r['vs_ettin_anchor']} | "
              f"{r['peak_memory_gb']} GB |")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device, "attn": attn, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
