"""Peak memory of the decoder's LM-head loss: stock (full logits) against twinlm's chunked loss.

Each variant runs forward + backward in a fresh subprocess and reports the growth of its peak
resident set (ru_maxrss) over the resident set just before the loss, so the figure is the
memory the loss itself needs (tracemalloc cannot see torch's allocations). Default shape: the
Ettin-17m decoder's head (hidden 256) on one sequence of 8,192 tokens and the 50,368 vocabulary.

    python benchmarks/loss_memory.py [--seq-len 8192] [--size 17m] [--chunk 1024] [--full-model] [--json out.json]

`--full-model` runs the whole 17m decoder instead of its head alone (the ratio is then diluted
by the activations of the layers, which do not change).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

VOCAB = 50_368


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


def run_variant(args) -> dict:
    import torch
    from transformers import ModernBertDecoderConfig

    from twinlm.models import build_twin, shared_config_kwargs
    from twinlm.recipe import ModelShape
    from twinlm.train.loss import attach_chunked_loss, head_loss_sum, shifted_targets

    torch.manual_seed(0)
    special = dict(bos_token_id=1, eos_token_id=2, pad_token_id=3, cls_token_id=1, sep_token_id=2)
    kwargs = shared_config_kwargs(ModelShape(size=args.size, max_position_embeddings=max(8192, args.seq_len)),
                                  VOCAB, special, 10_000.0)
    model = build_twin("decoder", ModernBertDecoderConfig(**kwargs), seed=0)
    ids = torch.randint(5, VOCAB, (1, args.seq_len))
    chunk = args.chunk if args.variant == "chunked" else 0
    if args.full_model:
        attach_chunked_loss(model, chunk)
        run = lambda: model(input_ids=ids, labels=ids).loss  # noqa: E731
    else:
        hidden = torch.randn(1, args.seq_len, model.config.hidden_size, requires_grad=True)
        head = torch.nn.Sequential(model.lm_head, model.decoder)
        if chunk:
            def run():
                h, y = shifted_targets(hidden, ids)
                return head_loss_sum(head, h, y, chunk) / y.numel()
        else:
            def run():
                return model.loss_function(logits=head(hidden), labels=ids, vocab_size=VOCAB)
    before = _rss_bytes()
    start = time.perf_counter()
    loss = run()
    loss.backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"variant": args.variant, "loss": float(loss), "peak_growth_mb": round((peak - before) / 2**20, 1),
            "seconds": round(seconds, 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq-len", type=int, default=8192)
    p.add_argument("--size", default="17m", help="model shape whose head is measured (default 17m)")
    p.add_argument("--chunk", type=int, default=1024, help="positions per chunk of the chunked loss")
    p.add_argument("--full-model", action="store_true", help="run the whole decoder, not only its head")
    p.add_argument("--json", help="also write the rows as JSON here")
    p.add_argument("--variant", choices=["stock", "chunked"], help=argparse.SUPPRESS)  # one subprocess's job
    args = p.parse_args(argv)
    if args.variant:
        print(json.dumps(run_variant(args)))
        return 0
    rows = []
    for variant in ("stock", "chunked"):
        cmd = [sys.executable, __file__, "--variant", variant, "--seq-len", str(args.seq_len), "--size", args.size,
               "--chunk", str(args.chunk)] + (["--full-model"] if args.full_model else [])
        print(f"running {variant} ...", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            print(proc.stderr[-2000:], file=sys.stderr)
            return proc.returncode
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    stock, chunked = rows
    what = "decoder" if args.full_model else "LM head + loss"
    print(f"\n{what}, shape {args.size}, seq {args.seq_len:,}, vocab {VOCAB:,}, batch 1, chunk {args.chunk}")
    print("| loss | peak memory growth | forward+backward | loss value |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['peak_growth_mb']:,.0f} MB | {r['seconds']:.2f} s | {r['loss']:.5f} |")
    ratio = chunked["peak_growth_mb"] / max(stock["peak_growth_mb"], 1e-9)
    print(f"chunked / stock peak memory: {ratio:.3f} ({1 / max(ratio, 1e-9):.1f}x less); "
          f"time ratio {chunked['seconds'] / max(stock['seconds'], 1e-9):.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "memory_ratio": ratio}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
