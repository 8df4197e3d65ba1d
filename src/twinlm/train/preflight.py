"""What must hold before a pretraining run reads any data: the attention kernel the recipe asks for
can load on this machine, and every phase fits the memory budget (twinlm.train.memory).

Both used to fail late: flash-attn missing surfaced as transformers' ImportError after the data
was prepared, and a phase too large for memory was killed by the kernel when it began."""

from __future__ import annotations

import importlib.util

import torch

from twinlm.errors import UserError
from twinlm.recipe import Recipe

SDPA_FIX = "--set training.attn_implementation=sdpa"


def attention_problem(attn_implementation: str, cuda: bool | None = None) -> str | None:
    """Why `attn_implementation` cannot run here (None when it can)."""
    if attn_implementation != "flash_attention_2":
        return None  # sdpa and eager ship with torch
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if not cuda:
        return "flash_attention_2 needs a CUDA GPU and there is none here"
    if importlib.util.find_spec("flash_attn") is None:
        return "flash_attention_2 needs the flash-attn package (pip install flash-attn --no-build-isolation)"
    from transformers.utils import is_flash_attn_2_available

    if not is_flash_attn_2_available():
        return "flash-attn is installed but transformers cannot use it on this GPU / torch build"
    return None


def check_attention(recipe: Recipe, cuda: bool | None = None) -> None:
    """One line naming the fix when the recipe's attention implementation cannot load here."""
    problem = attention_problem(recipe.training.attn_implementation, cuda)
    if problem:
        raise UserError(f"training.attn_implementation: {problem}; install it, or run with {SDPA_FIX} "
                        "(same results, more memory at long sequences: see `twinlm plan`)")
