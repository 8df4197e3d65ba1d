"""Which tokens of a conversation the assistant wrote, for `--assistant-only-loss` with any chat template.

TRL masks assistant tokens through `{% generation %}` markers in the chat template (or its own
patched copy of a few known templates). Most published templates (Llama, Qwen, SmolLM) have
none, so twinlm derives the mask from the template's own renders: for each assistant turn i it
renders the conversation up to turn i with the generation prompt, and up to and including turn
i; the characters the second adds to the first are the assistant's (its content and the
end-of-turn text the template closes the turn with, where TRL's marked templates put them).
That is only sound if the template is prefix-preserving (each render is a prefix of the whole
conversation's render, and the generation prompt is a prefix of the answered turn), so every
row is checked, and a template that fails is refused with the reason.
"""

from __future__ import annotations

import sys

from transformers import PreTrainedTokenizerBase

from twinlm.errors import UserError

MARKERS = "template markers"
DERIVED = "derived from prefix renders"

_ALTERNATIVES = ("use prompt/completion rows (loss on the completion only) or --full-sequence-loss "
                 "instead of --assistant-only-loss")

_PROBE = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome."},
]


class MaskError(UserError):
    """A conversation whose assistant tokens cannot be told apart reliably."""


def has_generation_markers(tokenizer: PreTrainedTokenizerBase) -> bool:
    from trl.chat_template_utils import has_generation_markers as trl_has_markers

    return bool(tokenizer.chat_template) and trl_has_markers(tokenizer.chat_template)


def trl_can_mask(tokenizer: PreTrainedTokenizerBase) -> bool:
    """TRL masks by itself: the template has generation markers, or TRL ships a marked copy of it."""
    if has_generation_markers(tokenizer):
        return True
    from trl.chat_template_utils import get_training_chat_template

    try:
        return get_training_chat_template(tokenizer) is not None
    except Exception:  # ValueError "patching is not supported for this template", or the template fails its probes
        return False


def choose_mask(tokenizer: PreTrainedTokenizerBase, quiet: bool = False) -> str:
    """MARKERS when TRL can mask with the template, else DERIVED once a probe conversation derives
    cleanly; says which on stderr. MaskError (one line, with the alternatives) when neither works."""
    if trl_can_mask(tokenizer):
        mode = MARKERS
    else:
        derive_assistant_mask(tokenizer, _PROBE, where="a probe conversation")
        mode = DERIVED
    if not quiet:
        print(f"twinlm: assistant mask: {mode}", file=sys.stderr)
        if mode == DERIVED and not ends_with_stop_token(tokenizer):
            print("twinlm: warning: the chat template closes an assistant turn with plain text, not a special "
                  "token; the model may not learn where to stop", file=sys.stderr)
    return mode


def ends_with_stop_token(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the last non-blank masked token of an assistant turn followed by a user turn is an
    added (special) token, i.e. the model is trained to end its turn (TRL's check for marked templates)."""
    out = derive_assistant_mask(tokenizer, _PROBE[:3], where="a probe conversation")
    added = set(tokenizer.get_added_vocab().values())
    for token_id, masked in reversed(list(zip(out["input_ids"], out["assistant_masks"]))):
        if masked and tokenizer.decode([token_id]).strip():
            return token_id in added
    return False


def _render(tokenizer, messages, add_generation_prompt: bool, where: str, n: int) -> str:
    try:
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as err:  # jinja raises TemplateError, templates raise their own exceptions
        raise MaskError(f"cannot derive the assistant mask for {where}: the chat template fails on its first {n} "
                        f"messages ({str(err).splitlines()[0] if str(err) else type(err).__name__}); {_ALTERNATIVES}") from None


def assistant_char_spans(tokenizer: PreTrainedTokenizerBase, messages: list[dict], where: str = "a row",
                         first_turn: int = 0) -> tuple[str, list[tuple[int, int]]]:
    """The whole conversation's render and, for every assistant message from index `first_turn`
    on, the characters its turn adds. MaskError names the first check that fails."""
    full = _render(tokenizer, messages, False, where, len(messages))
    spans = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant" or i < first_turn:
            continue
        head = _render(tokenizer, messages[:i], True, where, i)
        upto = _render(tokenizer, messages[: i + 1], False, where, i + 1)
        if not upto.startswith(head):
            raise MaskError(f"cannot derive the assistant mask for {where}: the chat template renders turn {i + 1}'s "
                            f"context differently once the assistant's reply follows it (the generation prompt is not "
                            f"a prefix); {_ALTERNATIVES}")
        if not full.startswith(upto):
            raise MaskError(f"cannot derive the assistant mask for {where}: the chat template is not prefix-preserving "
                            f"(turns 1-{i + 1} render differently once later turns follow); {_ALTERNATIVES}")
        content = str(message.get("content") or "").strip()
        if content and content not in upto[len(head):]:
            raise MaskError(f"cannot derive the assistant mask for {where}: turn {i + 1}'s text is not where the "
                            f"template renders that turn; {_ALTERNATIVES}")
        if len(upto) > len(head):
            spans.append((len(head), len(upto)))
    return full, spans


def derive_assistant_mask(tokenizer: PreTrainedTokenizerBase, messages: list[dict], where: str = "a row",
                          first_turn: int = 0) -> dict:
    """input_ids of the rendered conversation (tokenized as `apply_chat_template` does) and
    assistant_masks: 1 on every token that overlaps an assistant turn's characters, as
    transformers maps `{% generation %}` spans to tokens."""
    full, spans = assistant_char_spans(tokenizer, messages, where, first_turn)
    if not getattr(tokenizer, "is_fast", False):
        raise MaskError(f"cannot derive the assistant mask: {type(tokenizer).__name__} gives no character offsets "
                        f"(needs a fast tokenizer); {_ALTERNATIVES}")
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(start < b and end > a for a, b in spans)) for start, end in enc["offset_mapping"]]
    if spans and not any(mask):
        raise MaskError(f"cannot derive the assistant mask for {where}: no token falls in an assistant turn; {_ALTERNATIVES}")
    return {"input_ids": list(enc["input_ids"]), "assistant_masks": mask}


def conversation_of(row: dict) -> tuple[list[dict], int]:
    """The messages of a conversational row and the index of its first completion message
    (prompt/completion rows: the completion; `messages` rows: 0)."""
    if "messages" in row and row["messages"] is not None:
        return list(row["messages"]), 0
    prompt = list(row["prompt"])
    return prompt + list(row["completion"]), len(prompt)


def encode_conversations(rows, tokenizer: PreTrainedTokenizerBase, completion_only: bool = True):
    """Tokenized rows (input_ids, assistant_masks) that TRL's SFTTrainer takes as prepared data.

    For prompt/completion rows the mask covers the completion's assistant turns only when
    `completion_only` (TRL's default for that format), every assistant turn otherwise.
    """
    def one(row: dict, index: int) -> dict:
        messages, first = conversation_of(row)
        out = derive_assistant_mask(tokenizer, messages, where=f"row {index + 1}", first_turn=first if completion_only else 0)
        if not any(out["assistant_masks"]):
            raise MaskError(f"row {index + 1} has no assistant turn to train on")
        return out

    return rows.map(one, with_indices=True, remove_columns=rows.column_names)
