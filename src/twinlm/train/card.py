"""Model cards for pretrained twins: what was trained, how, and the figures measured."""

from __future__ import annotations

from pathlib import Path

from twinlm.recipe import Recipe

OPTIMIZER_NOTE = {
    "stable_adamw": "StableAdamW (twinlm's implementation; AdamW with per-tensor update clipping, decoupled weight decay), as Ettin",
    "adamw": "torch AdamW with the Ettin betas/eps; weight decay rescaled by 1/lr to match Ettin's decoupled decay",
}


def write_model_card(path: Path, twin: str, recipe: Recipe, results, num_params: int) -> None:
    t = recipe.training
    arch = "ModernBertForMaskedLM" if twin == "encoder" else "ModernBertDecoderForCausalLM"
    task = "fill-mask" if twin == "encoder" else "text-generation"
    objective = "masked language modelling (80/10/10 corruption)" if twin == "encoder" else "next-token prediction"
    rows = []
    for r in results:
        h = r.heldout
        rows.append(
            f"| {r.phase} | {r.steps:,} | {r.tokens:,} | {r.seq_len} | {r.global_batch} | "
            f"{_fmt(r.train_loss)} | {_fmt(h.get('loss'))} | {_fmt(h.get('unigram_baseline'))} | "
            f"{_fmt(h.get('accuracy'))} | {r.tokens_per_second:,.0f} | {r.seconds:,.1f} |"
        )
    phases = "\n".join(
        f"- **{p.name}**: {p.tokens:,} tokens at length {p.seq_len}, LR schedule `{p.lr_schedule}` "
        f"({p.lr_start} -> {p.lr_end} x {t.lr}), global RoPE theta {p.rope_theta:,.0f}"
        + (f", mask ratio {p.mask_ratio}" if twin == "encoder" else "")
        for p in recipe.phases
    )
    source = recipe.data.source or "the built-in synthetic world (twinlm.world.generator)"
    text = f"""---
library_name: transformers
pipeline_tag: {task}
tags: [twinlm, ettin, modernbert, {twin}]
---
# {recipe.name} {twin}

The {twin} twin of a twinlm run: a stock `{arch}` ({num_params:,} parameters, shape `{recipe.model.size}`:
{recipe.model.layers} layers, hidden {recipe.model.hidden}, GLU intermediate {recipe.model.intermediate},
{recipe.model.heads} heads). Its twin was trained from the same seed on the same token blocks in the same
order; only the objective ({objective}) and the attention mask differ.

```python
from transformers import pipeline
pipe = pipeline("{task}", model="path/to/this/folder")
```

## Training
- Data: {source}
- Optimizer: {OPTIMIZER_NOTE[t.optimizer]}; lr {t.lr}, weight decay {t.weight_decay}, betas {tuple(t.betas)}, eps {t.eps}
- Batch-size warmup: {f'{t.batch_warmup_min:,} to {recipe.batch_of(recipe.phases[0]):,} sequences over the first {t.batch_warmup_tokens:,} tokens' if t.batch_warmup_tokens else 'none'}
- Precision {t.precision}, attention `{t.attn_implementation}`, seed {t.seed}
{phases}

## Figures measured in this run
Losses in nats per token; held-out text is never trained on. The unigram baseline is the loss of
a model that ignores context.

| phase | steps | tokens | seq len | batch | train loss | held-out loss | unigram baseline | held-out accuracy | tokens/s | seconds |
|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

The full recipe is in `twinlm.yaml`; per-step figures are in the run's `metrics.jsonl`.
"""
    path.write_text(text)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"
