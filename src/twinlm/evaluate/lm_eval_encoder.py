"""An lm-evaluation-harness model class for masked-LM encoders, registered as `twinlm-encoder`.

It scores requests the way Ettin scored its encoders on generative tasks (its harness fork's
`EncoderAsPseudoCausalLM`, run with `is_encoder=True, add_bos_token=True`, batch size 1), or by
classic pseudo-log-likelihood; see `twinlm.evaluate.scoring` for both protocols. Once twinlm is
imported, the harness can run it like any of its own models:

    lm_eval.simple_evaluate(model="twinlm-encoder", model_args="pretrained=DIR,scoring=ettin", ...)

Where Ettin's fork has accidents this class does the evident intent instead, and says so here:
an empty context is conditioned on [CLS] (the fork stops in a debugger); `add_bos_token=False`
drops [CLS] instead of dropping the context's last real token; generation appends the same three
masks and end token as scoring (the fork's generate path used two masks and left a [SEP] after the
context once the first token was generated)."""

from __future__ import annotations

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from twinlm.evaluate.models import prediction_offset as declared
from twinlm.evaluate.scoring import ENCODER_SCORINGS, FUTURE_MASKS, encoder_loglik, encoder_pair, end_token_id


def _flag(value) -> bool:
    """model_args arrive as strings from the harness's command line."""
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")


@register_model("twinlm-encoder")
class EncoderLM(LM):
    """`pretrained`: a model folder or hub id (or a loaded masked-LM model, with `tokenizer`).
    `scoring`: "ettin" (default) or "pll". `prediction_offset`: -1 for an MNTP-converted encoder
    (read automatically from a twinlm conversion.json when not given). `batch_size`: rows of equal
    length scored per forward pass (no padding, so it never changes a score). `progress`: an
    optional callable(done, total) told after every forward pass (the harness's own bars are
    not used)."""

    def __init__(self, pretrained, tokenizer=None, scoring: str = "ettin", prediction_offset=None,
                 add_bos_token=True, batch_size=32, device: str | None = None, max_gen_toks: int = 256,
                 progress=None, **_ignored) -> None:
        super().__init__()
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        if scoring not in ENCODER_SCORINGS:
            raise ValueError(f"scoring must be one of {', '.join(ENCODER_SCORINGS)}, got {scoring!r}")
        if isinstance(pretrained, str):
            self.model = AutoModelForMaskedLM.from_pretrained(pretrained)
            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer or pretrained)
            if prediction_offset is None:
                from pathlib import Path

                prediction_offset = declared(Path(pretrained)) if Path(pretrained).is_dir() else 0
        else:
            if tokenizer is None:
                raise ValueError("a loaded model needs its tokenizer")
            self.model, self.tokenizer = pretrained, tokenizer
        if self.tokenizer.mask_token_id is None:
            raise ValueError(f"{pretrained} has no mask token: not a masked-LM encoder")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = self.model.to(device).eval()
        self.scoring, self.offset = scoring, int(prediction_offset or 0)
        # The harness passes its own --batch_size ("auto", or None when unset).
        size = str(batch_size)
        self.add_bos_token, self.batch_size = _flag(add_bos_token), int(size) if size.isdigit() else 32
        self.max_gen_toks, self.progress = int(max_gen_toks), progress

    def _score(self, pairs, disable_tqdm: bool) -> list[tuple[float, bool, int]]:
        rows = sum(len(c) + (self.scoring == "ettin") for _, c in pairs)
        done = [0]

        def tick(n):
            done[0] += n
            if self.progress is not None and not disable_tqdm:
                self.progress(done[0], rows)

        return encoder_loglik(self.model, self.tokenizer, pairs, self.scoring, self.offset, self.batch_size, tick)

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """(sum of the continuation's log-probs, whether each scored token was the argmax) per
        (context, continuation) request; under "ettin" the end token is one of the scored tokens."""
        args = [req.args for req in requests]
        pairs = [encoder_pair(self.tokenizer, ctx, cont, self.add_bos_token) for ctx, cont in args]
        out = []
        for arg, (lp, greedy, _) in zip(args, self._score(pairs, disable_tqdm)):
            self.cache_hook.add_partial("loglikelihood", arg, (lp, greedy))
            out.append((lp, greedy))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of whole texts: every token scored left to right after [CLS] (perplexity
        tasks). Inputs longer than the model's window keep the most recent context."""
        args = [req.args[0] for req in requests]
        pairs = [encoder_pair(self.tokenizer, "", text, self.add_bos_token) for text in args]
        out = []
        for text, (lp, _, _) in zip(args, self._score(pairs, disable_tqdm)):
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), lp)
            out.append(lp)
        return out

    @torch.no_grad()
    def _next_token(self, ids: list[int]) -> int:
        end, mask = end_token_id(self.tokenizer), self.tokenizer.mask_token_id
        row = torch.tensor([ids + [mask] * (FUTURE_MASKS + 1) + [end]], device=self.model.device)
        return int(self.model(input_ids=row, attention_mask=torch.ones_like(row)).logits[0, len(ids) + self.offset].argmax())

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy generation, one token at a time under Ettin's protocol, until a stop string,
        the end token or `max_gen_toks`."""
        out = []
        end = end_token_id(self.tokenizer)
        for n, req in enumerate(requests):
            context, kwargs = req.args
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            ids, _ = encoder_pair(self.tokenizer, context, "", self.add_bos_token)
            start, text = len(ids), ""
            keep = (getattr(self.model.config, "max_position_embeddings", None) or 8192) - (FUTURE_MASKS + 3)
            for _ in range(int(kwargs.get("max_gen_toks", self.max_gen_toks))):
                token = self._next_token(ids if len(ids) <= keep else ids[:1] + ids[-keep:])
                if token == end:
                    break
                ids.append(token)
                text = self.tokenizer.decode(ids[start:], skip_special_tokens=True)
                if any(s in text for s in until):
                    break
            for s in until:
                text = text.split(s)[0]
            self.cache_hook.add_partial("generate_until", req.args, text)
            out.append(text)
            if self.progress is not None and not disable_tqdm:
                self.progress(n + 1, len(requests))
        return out
