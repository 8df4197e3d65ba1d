"""Chat templates for twin decoders, whose tokenizers usually ship without one.

twinlm's template uses only tokens every twin tokenizer already has, so conversational data
works without adding tokens or resizing embeddings: the bos token opens the conversation, each
turn starts with a plain-text role header, and an assistant turn ends with the eos token, which
is therefore the end-of-turn token that generation stops at. The assistant's content and its
end-of-turn token sit inside `{% generation %}` markers so "loss on assistant tokens only" also
teaches the model to stop.
"""

from __future__ import annotations

import sys

from transformers import PreTrainedTokenizerBase

TWINLM_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<' + message['role'] + '>\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ message['content'] + '\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<assistant>\n' }}{% endif %}"
)

_PROBE = "twinlm-end-of-turn-probe"


def ensure_chat_template(tokenizer: PreTrainedTokenizerBase, quiet: bool = False) -> bool:
    """Give `tokenizer` twinlm's chat template if it has none; True when one was added (and said so)."""
    if tokenizer.chat_template:
        return False
    tokenizer.chat_template = TWINLM_CHAT_TEMPLATE
    if not quiet:
        print(
            "twinlm: the tokenizer has no chat template; using twinlm's (role headers '<user>', "
            f"'<assistant>' in plain text, {tokenizer.eos_token!r} ends each assistant turn)",
            file=sys.stderr,
        )
    return True


def end_of_turn_token(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """The special token that closes an assistant turn under the tokenizer's chat template.

    Found by rendering a probe conversation: the first special token after the assistant's text.
    Llama-3 templates give '<|eot_id|>', ChatML '<|im_end|>', twinlm's template the eos token.
    None when the tokenizer has no template or the template closes turns with plain text.
    """
    if not tokenizer.chat_template:
        return None
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}], tokenize=False
    )
    rest = text[text.index(_PROBE) + len(_PROBE):]
    specials = sorted(set(tokenizer.all_special_tokens) | set(tokenizer.get_added_vocab()), key=len, reverse=True)
    stripped = rest.lstrip()
    for token in specials:
        if token and stripped.startswith(token):
            return token
    return None
