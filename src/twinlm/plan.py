"""`twinlm plan`: validate a recipe for a cluster size and estimate what it costs, without running it.

The batch split is the one `twinlm pretrain` uses (`twinlm.train.batching.split_batch`), so a
plan that validates for N GPUs is a run that starts on N GPUs.

Activation memory per GPU (bytes) follows the standard estimate of Korthikanti et al. 2022,
"Reducing Activation Recomputation in Large Transformer Models" (arXiv 2205.05198, §4.1), for one
transformer layer without tensor/sequence parallelism, rewritten for this architecture
(s = sequence length, b = micro-batch, h = hidden, i = GLU half of the MLP, 2-byte activations):
  attention  11 s b h  (LayerNorm output 2sbh, q/k/v 6sbh, attention output 2sbh, dropout mask sbh);
             flash / memory-efficient attention stores no s x s scores, so Korthikanti's 5 a s^2 b term is gone
  MLP        2 s b h + 6 s b i  (Wi input 2sbh, GeGLU input (both halves) 4sbi, Wo input 2sbi)
  LayerNorms 4 s b h  (inputs of the two norms)
  -> per layer 17 s b h + 6 s b i; x layers; + embeddings / final norm 4 s b h.
With activation checkpointing (full recompute per layer) a layer keeps only its input, 2 s b h,
and the layer being recomputed needs its full 17 s b h + 6 s b i once.
The LM head: dense + norm of the prediction head 6 s' b h, and the logits s' b V at 10 bytes each
(bf16 logits 2, their fp32 upcast for the loss 4, fp32 log-softmax kept for backward 4), where s'
is s for the decoder and mask_ratio x s for an encoder with the sparse MLM head (fp32 training:
8 bytes, no upcast copy, and the 2-byte terms double). Model and optimizer states (fp32 weights, gradients and two Adam
moments: 16 bytes per parameter, replicated under DDP) come on top and are printed separately.
These are estimates: allocator fragmentation and temporary buffers add to them.
"""

from __future__ import annotations

from dataclasses import dataclass

from twinlm.data.sampling import apportion
from twinlm.models import estimate_parameters, padded_vocab, training_flops_per_token
from twinlm.recipe import TWINS, Recipe
from twinlm.train.batching import check_batch_warmup, split_batch
from twinlm.train.schedules import batch_schedule, phase_steps


@dataclass
class PhasePlan:
    twin: str
    phase: str
    tokens: int
    seq_len: int
    global_batch: int
    steps: int
    parameters: int
    flops: float
    hours: float
    micro_batch: int = 0
    accumulation: int = 0
    activation_bytes: float = 0.0  # per GPU, without activation checkpointing
    activation_bytes_checkpointed: float = 0.0  # per GPU, with it
    warmup_steps: int = 0  # steps of batch-size warmup


def vocab_size_of(recipe: Recipe) -> int:
    """The recipe's vocabulary without loading anything: an init checkpoint's (from its local
    config.json), else Ettin's 50,368 for a reused tokenizer or an init checkpoint on the hub (the
    common case; the real size is used at training time), else the trained size."""
    import json
    from pathlib import Path

    init = recipe.init
    for spec in (init.encoder, init.decoder, init.run and str(Path(init.run) / "encoder")):
        try:
            return int(json.loads((Path(spec) / "config.json").read_text())["vocab_size"])
        except (TypeError, OSError, ValueError, KeyError):
            continue
    if recipe.tokenizer.name_or_path or init.given():
        return 50_368

    return padded_vocab(recipe.tokenizer.vocab_size)


def activation_bytes(recipe: Recipe, twin: str, seq_len: int, micro_batch: int, mask_ratio: float,
                     vocab: int, checkpointing: bool) -> float:
    """Estimated activation memory of one micro-batch on one GPU (see the module docstring)."""
    shape = recipe.model
    s, b, h, i, n = seq_len, micro_batch, shape.hidden, shape.intermediate, shape.layers
    scale = 1.0 if recipe.training.precision == "bf16" else 2.0  # the 2-byte terms in fp32
    layer = (17 * s * b * h + 6 * s * b * i) * scale
    body = (2 * s * b * h * scale * n + layer) if checkpointing else layer * n
    head_positions = s * b * (mask_ratio if (twin == "encoder" and recipe.training.sparse_mlm_head) else 1.0)
    logit_bytes = 10 if recipe.training.precision == "bf16" else 8  # fp32: logits 4 + log-softmax 4
    head = 6 * head_positions * h * scale + head_positions * vocab * logit_bytes
    return body + 4 * s * b * h * scale + head


def plan(recipe: Recipe, gpus: int = 1, gpu_tflops: float = 989.0, mfu: float = 0.4) -> list[PhasePlan]:
    """One row per (twin, phase); raises UserError when a phase's batch does not split over `gpus`."""
    splits = {p.name: split_batch(recipe, p, gpus) for p in recipe.phases}
    check_batch_warmup(recipe, gpus)
    vocab = vocab_size_of(recipe)
    rows = []
    for twin in TWINS:
        params = estimate_parameters(recipe.model, vocab, twin)
        for phase in recipe.phases:
            schedule = batch_schedule(recipe, phase)
            split = splits[phase.name]
            tokens = schedule.tokens_through(schedule.steps)
            head = phase.mask_ratio if (twin == "encoder" and recipe.training.sparse_mlm_head) else 1.0
            flops = tokens * training_flops_per_token(recipe.model, vocab, phase.seq_len, head)
            hours = flops / (gpus * gpu_tflops * 1e12 * mfu) / 3600
            mem = [activation_bytes(recipe, twin, phase.seq_len, split.micro_batch, phase.mask_ratio, vocab, ckpt)
                   for ckpt in (False, True)]
            rows.append(PhasePlan(twin, phase.name, tokens, phase.seq_len, split.global_batch, schedule.steps,
                                  params, flops, hours, split.micro_batch, split.accumulation, mem[0], mem[1],
                                  len(schedule.ramp)))
    return rows


def format_plan(recipe: Recipe, rows: list[PhasePlan], gpus: int, gpu_tflops: float, mfu: float) -> str:
    t = recipe.training
    head = (f"recipe {recipe.name}: size {recipe.model.size}, {len(recipe.phases)} phases; "
            f"hardware {gpus} x {gpu_tflops:g} TFLOP/s at MFU {mfu:g}; {t.precision}, activation checkpointing "
            f"{'on' if t.activation_checkpointing else 'off'}")
    lines = [head, f"{'twin':8s} {'phase':10s} {'tokens':>9s} {'seq':>5s} {'batch':>5s} {'micro':>5s} {'accum':>5s} "
                   f"{'act/GPU':>9s} {'ckpt act':>9s} {'steps':>9s} {'params':>8s} {'FLOPs':>9s} {'wall time':>10s}"]
    for r in rows:
        lines.append(f"{r.twin:8s} {r.phase:10s} {_si(r.tokens):>9s} {r.seq_len:>5d} {r.global_batch:>5d} "
                     f"{r.micro_batch:>5d} {r.accumulation:>5d} {_gib(r.activation_bytes):>9s} "
                     f"{_gib(r.activation_bytes_checkpointed):>9s} {r.steps:>9,d} {_si(r.parameters):>8s} "
                     f"{r.flops:>9.2e} {_duration(r.hours):>10s}")
    if t.batch_warmup_tokens:
        first = next(r for r in rows if r.phase == recipe.phases[0].name)
        lines.append(f"batch-size warmup: {t.batch_warmup_min} -> {first.global_batch} sequences over "
                     f"{_si(t.batch_warmup_tokens)} tokens ({first.warmup_steps:,} steps) in phase {first.phase}")
    states = max(r.parameters for r in rows) * 16
    lines.append(f"act/GPU: activation memory per GPU of one micro-batch (ckpt act: with "
                 f"training.activation_checkpointing); plus {_gib(states)} of weights, gradients and Adam "
                 f"states per GPU (fp32, DDP)")
    total = sum(r.hours for r in rows)
    lines.append(f"total: {sum(r.flops for r in rows):.2e} FLOPs, {_duration(total)} "
                 f"({total * gpus:,.1f} GPU-hours) for both twins")
    lines += data_plan_lines(recipe)
    return "\n".join(lines)


def _prepared_sizes(source: str | None) -> tuple[int, int, int, int] | None:
    """(train documents, train tokens, held-out documents, held-out tokens) of a prepared folder
    or token store, from its index files alone; None when the source is not prepared yet."""
    import json
    from pathlib import Path

    if source is None:
        return None
    out = []
    for part in ("train", "heldout"):
        try:
            index = json.loads((Path(source) / part / "index.json").read_text())
            out += [int(index["num_documents"]), int(index["num_tokens"])]
        except (OSError, ValueError, KeyError):
            return None
    return tuple(out)


def data_plan_lines(recipe: Recipe) -> list[str]:
    """Per phase: its streams, each one's planned and realized token share (the realized share is
    the planned one rounded to whole blocks of the phase), and, where a stream is prepared, its
    training and held-out documents and tokens. Sizes of unprepared sources are not read."""
    lines = []
    for phase in recipe.phases:
        streams = recipe.streams_of(phase)
        samples = phase_steps(recipe, phase) * recipe.batch_of(phase)
        sizes = [_prepared_sizes(st.source) for st in streams]
        if len(streams) == 1:
            shares = [1.0]
        elif streams[0].proportion is not None:
            shares = [st.proportion for st in streams]
        elif all(sizes):
            weights = [(st.repeat or 1.0) * (sz[1] // phase.seq_len) for st, sz in zip(streams, sizes)]
            shares = [w / max(1, sum(weights)) for w in weights]
        else:
            shares = [None] * len(streams)
        counts = apportion(shares, samples) if None not in shares else [None] * len(streams)
        lines.append(f"data {phase.name}: {len(streams)} stream{'s' * (len(streams) != 1)}, "
                     f"{samples * phase.seq_len:,} tokens")
        for st, share, n, size in zip(streams, shares, counts, sizes):
            planned = (f"planned {100 * share:.2f}% / realized {100 * n / samples:.2f}% of tokens "
                       f"({n * phase.seq_len:,})" if share is not None else
                       f"repeat {st.repeat or 1:g} x its size (share known once every stream is prepared)")
            where = (f"; train {size[0]:,} documents, {size[1]:,} tokens; held-out {size[2]:,} documents, "
                     f"{size[3]:,} tokens" if size else "")
            lines.append(f"  {st.source or 'built-in world'}: {planned}{where}")
    return lines

def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 / 10 else f"{n / 2**20:.0f} MiB"


def _si(n: float) -> str:
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


def _duration(hours: float) -> str:
    if hours >= 48:
        return f"{hours / 24:.1f} days"
    if hours >= 1:
        return f"{hours:.1f} h"
    return f"{hours * 60:.1f} min"
