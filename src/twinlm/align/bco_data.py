"""BCO examples as tokens: prompt + completion ids with a completion mask, and their batching.

Plain rows get the tokenizer's own special tokens around the prompt (a twin decoder: `[CLS]`)
and the eos token after the completion, so a preferred completion also teaches where to stop.
Conversational rows are rendered with the chat template; the completion is what the template
adds after the generation prompt (the assistant text and its end-of-turn token).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from twinlm.align.data import is_conversational
from twinlm.errors import UserError


def prompt_text(prompt) -> str:
    """The text of a prompt (a string, or the contents of its messages) for UDM embeddings."""
    return "\n".join(m["content"] for m in prompt) if is_conversational(prompt) else str(prompt)


def encode_example(prompt, completion, tokenizer: PreTrainedTokenizerBase, max_length: int,
                   max_prompt_length: int) -> dict:
    if is_conversational(prompt) != is_conversational(completion):
        raise UserError("a BCO row mixes a conversational and a plain prompt/completion; use one format per row")
    if is_conversational(prompt):
        if not tokenizer.chat_template:
            raise UserError("conversational BCO data needs a chat template (twinlm adds one to a twin decoder)")
        head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(list(prompt) + list(completion), tokenize=False)
        if not full.startswith(head):
            raise UserError("the chat template renders the prompt differently once a completion follows it")
        p_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
        c_ids = tokenizer(full[len(head):], add_special_tokens=False)["input_ids"]
    else:
        p_ids = tokenizer(str(prompt))["input_ids"]
        c_ids = tokenizer(str(completion), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    p_ids = p_ids[-max_prompt_length:]
    c_ids = c_ids[: max_length - len(p_ids)]
    return {"input_ids": p_ids + c_ids, "completion_mask": [0] * len(p_ids) + [1] * len(c_ids)}


def encode_rows(rows: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int, max_prompt_length: int) -> Dataset:
    def one(row: dict) -> dict:
        out = encode_example(row["prompt"], row["completion"], tokenizer, max_length, max_prompt_length)
        out["prompt_text"] = prompt_text(row["prompt"])
        return out

    keep = {"label", "udm_weight", "ref_logps"}
    return rows.map(one, remove_columns=[c for c in rows.column_names if c not in keep])


class BCOCollator:
    """Right-pads a batch; passes label, and the optional udm_weight and ref_logps, as tensors."""

    def __init__(self, pad_token_id: int):
        self.pad = pad_token_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        batch = {
            "input_ids": torch.full((len(features), width), self.pad, dtype=torch.long),
            "attention_mask": torch.zeros(len(features), width, dtype=torch.long),
            "completion_mask": torch.zeros(len(features), width, dtype=torch.long),
        }
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            batch["input_ids"][i, :n] = torch.tensor(f["input_ids"])
            batch["attention_mask"][i, :n] = 1
            batch["completion_mask"][i, :n] = torch.tensor(f["completion_mask"])
        batch["label"] = torch.tensor([bool(f["label"]) for f in features])
        for key in ("udm_weight", "ref_logps"):
            if key in features[0]:
                batch[key] = torch.tensor([float(f[key]) for f in features])
        return batch


def sequence_logps(logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Sum over completion tokens of log p(token | everything before it), one value per row."""
    logps = F.log_softmax(logits[:, :-1].float(), dim=-1)
    token_logps = logps.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (token_logps * completion_mask[:, 1:]).sum(-1)
