"""Text generation with a decoder: greedy or sampled, with its chat template on request, streamed."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

import torch
from transformers import TextStreamer

from twinlm.align.chat_template import end_of_turn_token, ensure_chat_template
from twinlm.align.loading import load_decoder
from twinlm.errors import UserError


def generate(model_path: str | Path, prompt: str, chat: bool = False, max_new_tokens: int = 64,
             sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
             stream: TextIO | None = None) -> dict:
    """Continue `prompt` (or answer it as a user turn with `chat`); returns the new text and token ids.

    Generation stops at the eos token and, in chat mode, at the template's end-of-turn token.
    With `stream`, tokens are written to it as they are produced.
    """
    if max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    if sample and (temperature <= 0 or not 0 < top_p <= 1):
        raise UserError(f"sampling needs temperature > 0 and 0 < top-p <= 1, got {temperature} and {top_p}")
    model, tokenizer = load_decoder(model_path)
    model.eval()
    stop = [tokenizer.eos_token_id]
    if chat:
        ensure_chat_template(tokenizer)
        eot = end_of_turn_token(tokenizer)
        if eot:
            stop.append(tokenizer.convert_tokens_to_ids(eot))
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=False)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    else:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    streamer = None
    if stream is not None:
        streamer = _Streamer(tokenizer, stream)
    torch.manual_seed(seed)
    options = dict(do_sample=True, temperature=temperature, top_p=top_p) if sample else dict(do_sample=False)
    with torch.no_grad():
        output = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
            eos_token_id=sorted(set(stop)), pad_token_id=tokenizer.pad_token_id, streamer=streamer, **options,
        )
    new = output[0, ids.shape[1]:].tolist()
    stopped = bool(new) and new[-1] in stop
    return {"text": tokenizer.decode(new, skip_special_tokens=True), "token_ids": new, "stopped": stopped}


class _Streamer(TextStreamer):
    """TextStreamer that writes to any stream (stdout by default) and flushes each piece."""

    def __init__(self, tokenizer, stream: TextIO):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.stream = stream

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.stream.write(text + ("\n" if stream_end else ""))
        self.stream.flush()


