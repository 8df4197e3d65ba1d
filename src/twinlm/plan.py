"""`twinlm plan`: validate a recipe for a cluster size and estimate what it costs, without running it.

The batch split is the one `twinlm pretrain` uses (`twinlm.train.batching.split_batch`), so a
plan that validates for N GPUs is a run that starts on N GPUs.

Memory per GPU (model and optimizer states plus one micro-batch's activations, the attention
implementation's masks and attention weights included) is estimated by `twinlm.train.memory`,
whose docstring gives the formulas; `micro_batch: auto` picks the largest micro-batch that fits
the GPU's memory (--gpu-memory-gb, or training.memory_gb), as the run itself will.

The plan also states the resume rule (the process counts a run can continue on) and what the
data path must deliver per GPU against what it was measured to deliver.
"""

from __future__ import annotations

from dataclasses import dataclass

from twinlm.data.sampling import apportion
from twinlm.models import estimate_parameters, training_flops_per_token
from twinlm.recipe import TWINS, Recipe
from twinlm.train.batching import check_batch_warmup, split_batch
from twinlm.train.elastic import resume_counts
from twinlm.train.memory import Budget, activation_bytes, state_bytes, vocab_size_of
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
    memory_bytes: float = 0.0  # per GPU: states + activations, as the run is set (checkpointing or not)
    tokens_per_s_needed: float = 0.0  # tokens/s one GPU trains at the assumed MFU


def plan_budget(recipe: Recipe, gpu_memory_gb: float = 80.0) -> Budget:
    """The memory of one GPU of the planned cluster: training.memory_gb, else --gpu-memory-gb."""
    if recipe.training.memory_gb:
        return Budget(recipe.training.memory_gb * 1e9, f"training.memory_gb={recipe.training.memory_gb:g}", True)
    return Budget(gpu_memory_gb * 1e9, f"--gpu-memory-gb {gpu_memory_gb:g}", True)


def plan(recipe: Recipe, gpus: int = 1, gpu_tflops: float = 989.0, mfu: float = 0.4,
         gpu_memory_gb: float = 80.0) -> list[PhasePlan]:
    """One row per (twin, phase); raises UserError when a phase's batch does not split over `gpus`
    or does not fit a GPU's memory."""
    budget = plan_budget(recipe, gpu_memory_gb)
    splits = {p.name: split_batch(recipe, p, gpus, budget) for p in recipe.phases}
    check_batch_warmup(recipe, gpus)
    vocab = vocab_size_of(recipe)
    ckpt_on = recipe.training.activation_checkpointing
    rows = []
    for twin in TWINS:
        params = estimate_parameters(recipe.model, vocab, twin)
        for phase in recipe.phases:
            schedule = batch_schedule(recipe, phase)
            split = splits[phase.name]
            tokens = schedule.tokens_through(schedule.steps)
            head = phase.mask_ratio if (twin == "encoder" and recipe.training.sparse_mlm_head) else 1.0
            per_token = training_flops_per_token(recipe.model, vocab, phase.seq_len, head)
            flops = tokens * per_token
            hours = flops / (gpus * gpu_tflops * 1e12 * mfu) / 3600
            mem = [activation_bytes(recipe, twin, phase.seq_len, split.micro_batch, phase.mask_ratio, vocab, ckpt)
                   for ckpt in (False, True)]
            rows.append(PhasePlan(twin, phase.name, tokens, phase.seq_len, split.global_batch, schedule.steps,
                                  params, flops, hours, split.micro_batch, split.accumulation, mem[0], mem[1],
                                  len(schedule.ramp), state_bytes(recipe, params) + mem[ckpt_on],
                                  gpu_tflops * 1e12 * mfu / per_token))
    return rows


def resume_line(recipe: Recipe) -> str:
    counts = resume_counts(recipe)
    shown = ", ".join(map(str, counts)) if len(counts) <= 24 else ", ".join(map(str, counts[:22])) + ", ..."
    return (f"resume: on {shown} processes ({len(counts)} counts: those dividing every phase's global batch"
            f"{' and batch_warmup_min' if recipe.training.batch_warmup_tokens else ''} under its micro-batch rule; "
            "the sample order depends on the recipe alone; --resume may also change training.micro_batch)")


# The slowest configuration's tokens per worker-CPU-second of benchmarks/data_throughput.py on
# the reference machine (docs/results.md, "Data path"): the margin shown when the user has not
# measured their own CPU.
REFERENCE_DATA_TOKENS_PER_S = 6_200_000


def data_path_line(rows: list[PhasePlan], measured: float | None) -> str:
    """What one GPU eats at the assumed MFU (the fastest row) against what one loader worker
    delivers: the user's measurement (--data-tokens-per-s) or the reference machine's."""
    fastest = max(rows, key=lambda r: r.tokens_per_s_needed)
    need = (f"data path: a GPU consumes up to {fastest.tokens_per_s_needed:,.0f} tokens/s "
            f"({fastest.twin} {fastest.phase}, at the assumed MFU)")
    where = "--data-tokens-per-s"
    if measured is None:
        measured, where = REFERENCE_DATA_TOKENS_PER_S, ("the reference CPU core, docs/results.md; measure yours with "
                                                        "benchmarks/data_throughput.py")
    workers = -(-fastest.tokens_per_s_needed // measured)
    return (need + f"; one loader worker delivers {measured:,.0f} ({where}): margin "
            f"{measured / fastest.tokens_per_s_needed:.2f}x per worker, {workers:.0f} worker(s) per GPU suffice")


def format_plan(recipe: Recipe, rows: list[PhasePlan], gpus: int, gpu_tflops: float, mfu: float,
                gpu_memory_gb: float = 80.0, data_tokens_per_s: float | None = None) -> str:
    t = recipe.training
    head = (f"recipe {recipe.name}: size {recipe.model.size}, {len(recipe.phases)} phases; "
            f"hardware {gpus} x {gpu_tflops:g} TFLOP/s at MFU {mfu:g}; {t.precision}, activation checkpointing "
            f"{'on' if t.activation_checkpointing else 'off'}, {t.attn_implementation}; memory per GPU "
            f"{plan_budget(recipe, gpu_memory_gb).bytes / 1e9:g} GB")
    lines = [head, f"{'twin':8s} {'phase':10s} {'tokens':>9s} {'seq':>5s} {'batch':>5s} {'micro':>5s} {'accum':>5s} "
                   f"{'act/GPU':>9s} {'ckpt act':>9s} {'mem/GPU':>9s} {'steps':>9s} {'params':>8s} {'FLOPs':>9s} {'wall time':>10s}"]
    for r in rows:
        lines.append(f"{r.twin:8s} {r.phase:10s} {_si(r.tokens):>9s} {r.seq_len:>5d} {r.global_batch:>5d} "
                     f"{r.micro_batch:>5d} {r.accumulation:>5d} {_gib(r.activation_bytes):>9s} "
                     f"{_gib(r.activation_bytes_checkpointed):>9s} {_gib(r.memory_bytes):>9s} {r.steps:>9,d} {_si(r.parameters):>8s} "
                     f"{r.flops:>9.2e} {_duration(r.hours):>10s}")
    if t.batch_warmup_tokens:
        first = next(r for r in rows if r.phase == recipe.phases[0].name)
        lines.append(f"batch-size warmup: {t.batch_warmup_min} -> {first.global_batch} sequences over "
                     f"{_si(t.batch_warmup_tokens)} tokens ({first.warmup_steps:,} steps) in phase {first.phase}")
    states = max(state_bytes(recipe, r.parameters) for r in rows)
    lines.append(f"act/GPU: activation memory per GPU of one micro-batch, {t.attn_implementation}'s masks and "
                 f"attention weights included (ckpt act: with training.activation_checkpointing); mem/GPU: those "
                 f"of the run's setting plus {_gib(states)} of weights, gradients and Adam states (fp32, DDP)")
    total = sum(r.hours for r in rows)
    lines.append(f"total: {sum(r.flops for r in rows):.2e} FLOPs, {_duration(total)} "
                 f"({total * gpus:,.1f} GPU-hours) for both twins")
    lines.append(resume_line(recipe))
    lines.append(data_path_line(rows, data_tokens_per_s))
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
