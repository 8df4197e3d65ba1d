"""Memory one process needs for a phase, the budget it has, and the micro-batch that fits.

Used by `twinlm plan` (per GPU of the cluster planned) and by `twinlm pretrain` before any work
(on this machine), through `twinlm.train.batching.split_batch`: `micro_batch: auto` takes the
largest micro-batch whose estimate fits the budget, and a phase that does not fit at micro-batch 1
is refused when the run starts, all phases at once.

Activation memory (bytes) follows the standard estimate of Korthikanti et al. 2022, "Reducing
Activation Recomputation in Large Transformer Models" (arXiv 2205.05198, section 4.1), for one
transformer layer without tensor/sequence parallelism, rewritten for this architecture
(s = sequence length, b = micro-batch, h = hidden, i = GLU half of the MLP, a = heads, 2-byte
activations):
  attention  11 s b h  (LayerNorm output 2sbh, q/k/v 6sbh, attention output 2sbh, dropout mask sbh)
  MLP        2 s b h + 6 s b i  (Wi input 2sbh, GeGLU input (both halves) 4sbi, Wo input 2sbi)
  LayerNorms 4 s b h  (inputs of the two norms)
  -> per layer 17 s b h + 6 s b i; x layers; + embeddings / final norm 4 s b h.
With activation checkpointing (full recompute per layer) a layer keeps only its input, 2 s b h,
and the layer being recomputed needs its full 17 s b h + 6 s b i once.

The s^2 terms depend on the attention implementation (`attention_bytes`):
- flash_attention_2 (varlen) stores no s x s tensor: none.
- sdpa: transformers builds dense boolean masks [b, 1, s, s], one per layer type that needs one
  (the sliding layers always; the global layers too when documents are kept apart), 1 byte each.
  On a GPU the fused memory-efficient kernel takes the mask as an additive bias in the compute
  dtype and keeps it for backward: b s^2 x (2 or 4 bytes) per masked layer. On a CPU with
  attention dropout in training the math kernel runs instead and, per layer, keeps the attention
  probabilities, the dropout mask and the dropped probabilities: b a s^2 x 3 x (2 or 4) bytes
  (Korthikanti's 5 a s^2 b term in fp32), and the running layer's scores and exponentials exist
  for a moment (2 more). Without dropout the CPU's fused kernel keeps the bias.
- eager always keeps the attention probabilities as the math kernel does.
The LM head: dense + norm of the prediction head 6 s' b h, and the logits s' b V at 10 bytes each
(bf16 logits 2, their fp32 upcast for the loss 4, fp32 log-softmax kept for backward 4), where s'
is s for the decoder and mask_ratio x s for an encoder with the sparse MLM head (fp32 training:
8 bytes, no upcast copy, and the 2-byte terms double); the decoder's chunked loss
(training.loss_chunk) keeps one chunk's logits. Model and optimizer states: fp32 weights,
gradients and two Adam moments, 16 bytes per parameter (replicated under DDP), plus a bf16 copy
of the weights under bf16 autocast. These are estimates: allocator fragmentation and temporary
buffers add to them.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

from twinlm.errors import UserError
from twinlm.models import estimate_parameters, layer_types, padded_vocab
from twinlm.recipe import TWINS, Phase, Recipe


@dataclass(frozen=True)
class Budget:
    """Bytes one process may use, where that figure comes from, and what it runs on."""

    bytes: float
    source: str  # for messages: "training.memory_gb=8" or "this machine's 23.4 GB of RAM"
    on_gpu: bool
    used: float = 0.0  # already taken by the running process (imports, data) before training


def vocab_size_of(recipe: Recipe) -> int:
    """The recipe's vocabulary without loading anything: an init checkpoint's (from its local
    config.json), else Ettin's 50,368 for a reused tokenizer or an init checkpoint on the hub (the
    common case; the real size is used at training time), else the trained size."""
    init = recipe.init
    for spec in (init.encoder, init.decoder, init.run and str(Path(init.run) / "encoder")):
        try:
            return int(json.loads((Path(spec) / "config.json").read_text())["vocab_size"])
        except (TypeError, OSError, ValueError, KeyError):
            continue
    if recipe.tokenizer.name_or_path or init.given():
        return 50_368
    return padded_vocab(recipe.tokenizer.vocab_size)


def attention_bytes(recipe: Recipe, seq_len: int, micro_batch: int, on_gpu: bool = True,
                    checkpointing: bool = False) -> float:
    """The s^2 terms of one micro-batch: masks and, where a kernel keeps them, attention
    probabilities (see the module docstring)."""
    t, shape = recipe.training, recipe.model
    if t.attn_implementation == "flash_attention_2":
        return 0.0
    s2b = float(seq_len) ** 2 * micro_batch
    elem = 2 if t.precision == "bf16" else 4
    kinds = layer_types(shape.layers, shape.global_attn_every_n_layers)
    sliding = kinds.count("sliding_attention")
    masks = s2b * ((1 if sliding else 0) + (1 if t.document_masking and len(kinds) > sliding else 0))
    probabilities = t.attn_implementation == "eager" or (not on_gpu and shape.attention_dropout > 0)
    if probabilities:
        # kept per layer: probabilities, dropout mask, dropped probabilities; while a layer runs,
        # its scores and their exponentials exist too
        per_layer, layers, transient = s2b * shape.heads * 3 * elem, len(kinds), s2b * shape.heads * 2 * elem
    else:
        per_layer, layers, transient = s2b * elem, len(kinds) if t.document_masking else sliding, 0.0
    return masks + transient + per_layer * (min(layers, 1) if checkpointing else layers)


def activation_bytes(recipe: Recipe, twin: str, seq_len: int, micro_batch: int, mask_ratio: float,
                     vocab: int, checkpointing: bool, on_gpu: bool = True) -> float:
    """Estimated activation memory of one micro-batch on one device (see the module docstring)."""
    shape, t = recipe.model, recipe.training
    s, b, h, i, n = seq_len, micro_batch, shape.hidden, shape.intermediate, shape.layers
    scale = 1.0 if t.precision == "bf16" else 2.0  # the 2-byte terms in fp32
    layer = (17 * s * b * h + 6 * s * b * i) * scale
    body = (2 * s * b * h * scale * n + layer) if checkpointing else layer * n
    head_positions = s * b * (mask_ratio if (twin == "encoder" and t.sparse_mlm_head) else 1.0)
    logit_positions = min(head_positions, t.loss_chunk) if (twin == "decoder" and t.loss_chunk) else head_positions
    logit_bytes = 10 if t.precision == "bf16" else 8  # fp32: logits 4 + log-softmax 4
    head = 6 * head_positions * h * scale + logit_positions * vocab * logit_bytes
    return body + 4 * s * b * h * scale + head + attention_bytes(recipe, s, b, on_gpu, checkpointing)


def state_bytes(recipe: Recipe, parameters: int) -> float:
    """Weights, gradients and Adam moments in fp32 (+ the bf16 weight copies of autocast)."""
    return parameters * (16 + (2 if recipe.training.precision == "bf16" else 0))


def phase_bytes(recipe: Recipe, phase: Phase, micro_batch: int, on_gpu: bool) -> float:
    """What one process needs to train `phase` at `micro_batch`: the larger twin's states and
    activations (the twins train one after the other)."""
    vocab = vocab_size_of(recipe)
    ckpt = recipe.training.activation_checkpointing
    return max(state_bytes(recipe, estimate_parameters(recipe.model, vocab, twin))
               + activation_bytes(recipe, twin, phase.seq_len, micro_batch, phase.mask_ratio, vocab, ckpt, on_gpu)
               for twin in TWINS)


def _resident_bytes() -> float:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0.0


def device_budget(recipe: Recipe) -> Budget:
    """training.memory_gb, else this device's: the GPU's memory, or the machine's physical RAM.
    On a CPU what the process held at its first call (imports, before any data) counts as used;
    that first figure is kept, so the check before any work and each phase's trainer choose the
    same micro-batch."""
    return _budget(recipe.training.memory_gb)


@functools.cache
def _budget(memory_gb: float | None) -> Budget:
    import torch

    on_gpu = torch.cuda.is_available()
    used = 0.0 if on_gpu else _resident_bytes()
    if memory_gb:
        return Budget(memory_gb * 1e9, f"training.memory_gb={memory_gb:g}", on_gpu, used)
    if on_gpu:
        total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
        return Budget(float(total), f"this GPU's {total / 1e9:.1f} GB", True)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Budget(float(total), f"this machine's {total / 1e9:.1f} GB of RAM", False, used)


# Beyond the estimate: the data pipeline, the Trainer and the allocator's caches hold memory that
# does not grow with the micro-batch, and fragmentation adds a share of what does.
FIXED_OVERHEAD = 0.5e9
FRAGMENTATION = 1.1


def need_bytes(recipe: Recipe, phase: Phase, micro_batch: int, budget: Budget) -> float:
    """What the check compares with the budget: the estimate with its margins."""
    return budget.used + FIXED_OVERHEAD + FRAGMENTATION * phase_bytes(recipe, phase, micro_batch, budget.on_gpu)


def fits(recipe: Recipe, phase: Phase, micro_batch: int, budget: Budget) -> bool:
    return need_bytes(recipe, phase, micro_batch, budget) <= budget.bytes


def refuse(recipe: Recipe, phase: Phase, micro_batch: int, budget: Budget) -> UserError:
    """The one-line error for a phase that does not fit `budget` at `micro_batch`."""
    need = need_bytes(recipe, phase, micro_batch, budget)
    t = recipe.training
    fixes = []
    if micro_batch > 1:
        fixes.append(f"--set phases.{phase.name}.micro_batch=auto")
    if t.attn_implementation != "flash_attention_2" and attention_bytes(recipe, phase.seq_len, 1, budget.on_gpu):
        fixes.append("training.attn_implementation=flash_attention_2 on a GPU (no seq^2 masks)")
    if not t.activation_checkpointing:
        fixes.append("training.activation_checkpointing=true")
    fixes.append(f"a shorter phases.{phase.name}.seq_len")
    fixes.append("training.memory_gb=N if this estimate is wrong for your device")
    return UserError(
        f"phase {phase.name} (seq {phase.seq_len}, micro-batch {micro_batch}, {t.attn_implementation}) needs an "
        f"estimated {need / 1e9:.1f} GB per process, over {budget.source}; try " + ", or ".join(fixes)
    )
