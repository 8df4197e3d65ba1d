"""StableAdamW step time: the foreach implementation against the previous per-tensor one.

The per-tensor reference is the one kept in tests/unit/test_optim.py. Both run on the parameters of a
built twin with random gradients, alternating in one process so that machine load hits both.

    python benchmarks/optimizer_step.py [--size 17m] [--steps 10] [--repeats 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch
from transformers import ModernBertConfig

from twinlm.models import build_twin, shared_config_kwargs
from twinlm.recipe import ModelShape
from twinlm.train.optim import StableAdamW

SPECIAL = dict(bos_token_id=1, eos_token_id=2, pad_token_id=3, cls_token_id=1, sep_token_id=2)


def _reference():
    path = Path(__file__).resolve().parents[1] / "tests" / "unit" / "test_optim.py"
    spec = importlib.util.spec_from_file_location("_test_optim", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ReferenceStableAdamW


def step_ms(cls, model, steps: int) -> float:
    opt = cls(model.parameters(), lr=1e-3, weight_decay=1e-5)
    opt.step()  # state allocation is not timed
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps * 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="17m")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = ModernBertConfig(**shared_config_kwargs(ModelShape(size=args.size), 50_368, SPECIAL, 10_000.0))
    model = build_twin("encoder", config, seed=0).to(device)
    for p_ in model.parameters():
        p_.grad = torch.randn_like(p_)
    tensors = len(list(model.parameters()))
    reference = _reference()
    for rep in range(args.repeats):
        old, new = step_ms(reference, model, args.steps), step_ms(StableAdamW, model, args.steps)
        print(f"run {rep + 1}: {args.size} ({tensors} tensors, {device}): per-tensor {old:,.1f} ms/step, "
              f"foreach {new:,.1f} ms/step, foreach/per-tensor time {new / old:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
