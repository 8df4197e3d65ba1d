"""`twinlm plan`: validate a recipe and estimate what it costs, without running it."""

from __future__ import annotations

from dataclasses import dataclass

from twinlm.models import estimate_parameters, training_flops_per_token
from twinlm.recipe import TWINS, Recipe


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


def vocab_size_of(recipe: Recipe) -> int:
    """The recipe's vocabulary without loading anything: Ettin's 50,368 for a reused
    tokenizer (the common case; the real size is used at training time), else the trained size."""
    if recipe.tokenizer.name_or_path:
        return 50_368
    from twinlm.models import padded_vocab

    return padded_vocab(recipe.tokenizer.vocab_size)


def plan(recipe: Recipe, gpus: int = 1, gpu_tflops: float = 989.0, mfu: float = 0.4) -> list[PhasePlan]:
    vocab = vocab_size_of(recipe)
    rows = []
    for twin in TWINS:
        params = estimate_parameters(recipe.model, vocab, twin)
        for phase in recipe.phases:
            steps = recipe.phase_steps(phase)
            batch = recipe.batch_of(phase)
            tokens = steps * batch * phase.seq_len
            head = phase.mask_ratio if (twin == "encoder" and recipe.training.sparse_mlm_head) else 1.0
            flops = tokens * training_flops_per_token(recipe.model, vocab, phase.seq_len, head)
            hours = flops / (gpus * gpu_tflops * 1e12 * mfu) / 3600
            rows.append(PhasePlan(twin, phase.name, tokens, phase.seq_len, batch, steps, params, flops, hours))
    return rows


def format_plan(recipe: Recipe, rows: list[PhasePlan], gpus: int, gpu_tflops: float, mfu: float) -> str:
    head = (f"recipe {recipe.name}: size {recipe.model.size}, {len(recipe.phases)} phases; "
            f"hardware {gpus} x {gpu_tflops:g} TFLOP/s at MFU {mfu:g}")
    lines = [head, f"{'twin':8s} {'phase':12s} {'tokens':>12s} {'seq':>6s} {'batch':>6s} {'steps':>10s} "
                   f"{'params':>10s} {'FLOPs':>10s} {'wall time':>12s}"]
    for r in rows:
        lines.append(f"{r.twin:8s} {r.phase:12s} {_si(r.tokens):>12s} {r.seq_len:>6d} {r.global_batch:>6d} "
                     f"{r.steps:>10,d} {_si(r.parameters):>10s} {r.flops:>10.2e} {_duration(r.hours):>12s}")
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
    from twinlm.data.mixture import _apportion

    lines = []
    for phase in recipe.phases:
        streams = recipe.streams_of(phase)
        samples = recipe.phase_steps(phase) * recipe.batch_of(phase)
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
        counts = _apportion(shares, samples) if None not in shares else [None] * len(streams)
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
