"""The decoder's LM-head loss in chunks, so [tokens x vocabulary] logits never exist whole.

At Ettin's decoder shapes the stock loss materializes logits for every token (16 x 8,192 x 50,368
at micro-batch 16), then an fp32 copy of them, then their gradient: tens of GB. Here the loss
is computed from the final hidden states through the model's own head (ModernBertDecoder's
prediction head: dense, activation, norm, then the tied decoder projection) a chunk of
positions at a time, each chunk under `torch.utils.checkpoint`, so that backward recomputes
that chunk's logits instead of keeping them. Peak memory is one chunk's logits.

It is attached with hooks (`attach_chunked_loss`) rather than a subclass or a Trainer override:
the model stays a stock class, the Trainer and DDP call it as usual (the loss is computed inside
the wrapped forward, so DDP's gradient hooks see it), and `outputs.loss` means what it meant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from transformers.modeling_outputs import CausalLMOutputWithPast

from twinlm.packed import IGNORE

_ATTR = "_twinlm_chunked_loss"


def head_loss_sum(head, hidden: torch.Tensor, labels: torch.Tensor, chunk: int, recompute: bool = True) -> torch.Tensor:
    """Sum of cross-entropies of `labels` (no IGNORE) under `head(hidden)` ([n, H] -> [n, V]),
    `chunk` rows at a time; with `recompute`, each chunk's logits are rebuilt in backward."""

    def piece(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(head(h).float(), y, reduction="sum")

    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk):
        h, y = hidden[start:start + chunk], labels[start:start + chunk]
        total = total + (checkpoint(piece, h, y, use_reentrant=False) if recompute and torch.is_grad_enabled()
                         else piece(h, y))
    return total


def shifted_targets(hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal-LM pairs: the hidden state at t with the label at t + 1, IGNORE positions dropped."""
    shifted = F.pad(labels, (0, 1), value=IGNORE)[..., 1:].reshape(-1)
    keep = shifted != IGNORE
    return hidden.reshape(-1, hidden.shape[-1])[keep], shifted[keep]


class ChunkedCausalLoss:
    """Hook state: the labels of the call in flight and the backbone's last hidden state."""

    def __init__(self, model, chunk: int):
        self.chunk = chunk
        self.head = torch.nn.Sequential(model.lm_head, model.decoder)
        self.labels = self.num_items = self.hidden = None
        self.handles = [
            model.register_forward_pre_hook(self.before, with_kwargs=True),
            model.model.register_forward_hook(self.capture),
            model.register_forward_hook(self.after),
        ]

    def before(self, module, args, kwargs):
        self.labels = self.num_items = self.hidden = None  # nothing left over from a failed call
        if self.chunk <= 0 or kwargs.get("labels") is None:
            return None
        self.labels = kwargs.pop("labels")
        self.num_items = kwargs.pop("num_items_in_batch", None)
        # No logits at all from the stock head: an empty index keeps zero positions.
        kwargs["logits_to_keep"] = torch.empty(0, dtype=torch.long, device=self.labels.device)
        return args, kwargs

    def capture(self, module, args, output):
        if self.labels is not None:
            self.hidden = output.last_hidden_state

    def after(self, module, args, output):
        if self.labels is None:
            return None
        hidden, targets = shifted_targets(self.hidden, self.labels.to(self.hidden.device))
        total = head_loss_sum(self.head, hidden, targets, self.chunk)
        count = self.num_items if self.num_items is not None else targets.numel()
        if torch.is_tensor(count):
            count = count.to(total.device)
        self.labels = self.num_items = self.hidden = None
        return CausalLMOutputWithPast(loss=total / count, logits=output.logits,
                                      past_key_values=output.past_key_values)


def attach_chunked_loss(model, chunk: int) -> None:
    """From now on `model(..., labels=...)` computes its loss in chunks of `chunk` positions
    (decoder twins only; the encoder's sparse MLM head already projects masked positions only)."""
    state = getattr(model, _ATTR, None)
    if state is not None:
        state.chunk = chunk  # 0 turns it off again
    elif chunk > 0 and getattr(model.config, "model_type", "") == "modernbert-decoder":
        setattr(model, _ATTR, ChunkedCausalLoss(model, chunk))
