"""Assistant-only loss with chat templates that have no generation markers: the derived mask is
exactly the one the template's marked variant gives, and a template that is not prefix-preserving
is refused with the reason."""

from __future__ import annotations

import json

import pytest
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from twinlm.align.assistant_mask import (
    DERIVED,
    MARKERS,
    MaskError,
    choose_mask,
    derive_assistant_mask,
    ends_with_stop_token,
)

SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|im_start|>",
            "<|im_end|>", "<|assistant|>"]
WORDS = r"\s|\w+|[^\w\s]"  # each blank, word and punctuation mark is one token: positions are countable

# Llama-3 style: role headers between special tokens, content trimmed, every turn closed by <|eot_id|>.
LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# The same with {% generation %} markers where TRL's marked Llama-3 template puts them.
LLAMA3_MARKED = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% generation %}{{ m['content'] | trim + '<|eot_id|>' }}"
    "{% endgeneration %}{% else %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] | trim + '<|eot_id|>' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHATML_MARKED = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}{% generation %}"
    "{{ m['content'] + '<|im_end|>\n' }}{% endgeneration %}"
    "{% else %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_DEFAULT_SYSTEM = "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
# ChatML with a default system prompt when the conversation brings none (the SmolLM2 family's shape).
CHATML_SYSTEM = (
    "{% for m in messages %}{% if loop.first and messages[0]['role'] != 'system' %}" + _DEFAULT_SYSTEM + "{% endif %}"
    "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHATML_SYSTEM_MARKED = (
    "{% for m in messages %}{% if loop.first and messages[0]['role'] != 'system' %}" + _DEFAULT_SYSTEM + "{% endif %}"
    "{% if m['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}{% generation %}"
    "{{ m['content'] + '<|im_end|>\n' }}{% endgeneration %}"
    "{% else %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Qwen3 style: the reasoning of earlier assistant turns is dropped, so a turn renders differently
# once a later turn follows it: not prefix-preserving.
DROPS_REASONING = (
    "{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}"
    "{{ '<|im_start|>assistant\n' + m['content'].split('</think>')[-1] | trim + '<|im_end|>\n' }}"
    "{% else %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# The generation prompt opens with a tag the answered turn does not use.
OTHER_PROMPT = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
# Turns closed by a blank line, no special token: maskable, but the model may not learn to stop.
PLAIN = (
    "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
)

CHAT = [
    {"role": "user", "content": "Where is Rome?"},
    {"role": "assistant", "content": "In Italy."},
    {"role": "user", "content": "And Oslo?"},
    {"role": "assistant", "content": "In Norway."},
]


def tiny_tokenizer(template: str) -> PreTrainedTokenizerFast:
    """A word-level tokenizer built here (no hub): every word, blank and punctuation mark one token."""
    corpus = " ".join(m["content"] for m in CHAT) + " user assistant system You are a helpful . : think"
    split = pre_tokenizers.Split(Regex(WORDS), behavior="isolated")
    words = sorted({w for w, _ in split.pre_tokenize_str(corpus)} | {"\n", " "})
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = split
    backend.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", bos_token="<|begin_of_text|>",
                                  eos_token="<|eot_id|>", pad_token="[UNK]")
    tok.add_special_tokens({"additional_special_tokens": [s for s in SPECIALS if s not in tok.all_special_tokens]})
    tok.chat_template = template
    return tok


def marker_mask(template_marked: str, messages) -> dict:
    """The reference: transformers' own mask from the marked variant of the template."""
    tok = tiny_tokenizer(template_marked)
    return tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)


def masked_text(tok, out) -> list[str]:
    """The masked runs of tokens, decoded."""
    runs, current = [], []
    for token_id, m in zip(out["input_ids"], out["assistant_masks"]):
        if m:
            current.append(token_id)
        elif current:
            runs.append(tok.decode(current))
            current = []
    if current:
        runs.append(tok.decode(current))
    return runs


def test_llama3_mask_exact_positions():
    tok = tiny_tokenizer(LLAMA3)
    out = derive_assistant_mask(tok, CHAT)
    tokens = tok.convert_ids_to_tokens(out["input_ids"])
    # 0 <|begin_of_text|>  1-5 <|start_header_id|> user <|end_header_id|> \n \n  6-11 Where _ is _ Rome ?  12 <|eot_id|>
    # 13-17 <|start_header_id|> assistant <|end_header_id|> \n \n  18-21 In _ Italy .  22 <|eot_id|>
    # 23-27 <|start_header_id|> user <|end_header_id|> \n \n  28-31 And _ Oslo ?  32 <|eot_id|>
    # 33-37 <|start_header_id|> assistant <|end_header_id|> \n \n  38-41 In _ Norway .  42 <|eot_id|>
    assert tokens[18:23] == ["In", " ", "Italy", ".", "<|eot_id|>"], tokens
    assert [i for i, m in enumerate(out["assistant_masks"]) if m] == [18, 19, 20, 21, 22, 38, 39, 40, 41, 42]
    assert out["assistant_masks"] == marker_mask(LLAMA3_MARKED, CHAT)["assistant_masks"]


@pytest.mark.parametrize("plain, marked", [(CHATML, CHATML_MARKED), (CHATML_SYSTEM, CHATML_SYSTEM_MARKED)],
                         ids=["chatml", "default-system"])
def test_chatml_masks_equal_the_marked_template(plain, marked):
    tok = tiny_tokenizer(plain)
    out = derive_assistant_mask(tok, CHAT)
    reference = marker_mask(marked, CHAT)
    assert out["input_ids"] == reference["input_ids"]
    assert out["assistant_masks"] == reference["assistant_masks"]
    # The reply, its end-of-turn token and the newline the template ends the turn with (as TRL's
    # marked ChatML templates have it); not the generation prompt, which the model is given.
    assert masked_text(tok, out) == ["In Italy.<|im_end|>\n", "In Norway.<|im_end|>\n"]
    if plain is CHATML_SYSTEM:  # the default system prompt is rendered and left out of the loss
        assert tok.decode(out["input_ids"]).startswith("<|im_start|>system\nYou are a helpful assistant.")
    with_system = [{"role": "system", "content": "You are a helpful assistant."}, *CHAT]
    assert derive_assistant_mask(tok, with_system)["assistant_masks"] == marker_mask(marked, with_system)["assistant_masks"]


def test_prompt_completion_rows_mask_the_completion_only():
    tok = tiny_tokenizer(CHATML)
    everything = derive_assistant_mask(tok, CHAT)
    completion = derive_assistant_mask(tok, CHAT, first_turn=2)  # prompt = the first three messages
    assert masked_text(tok, completion) == ["In Norway.<|im_end|>\n"]
    assert completion["input_ids"] == everything["input_ids"]


def test_which_way_is_said(capsys):
    assert choose_mask(tiny_tokenizer(CHATML)) == DERIVED
    assert capsys.readouterr().err == "twinlm: assistant mask: derived from prefix renders\n"
    assert choose_mask(tiny_tokenizer(CHATML_MARKED)) == MARKERS
    assert capsys.readouterr().err == "twinlm: assistant mask: template markers\n"
    assert ends_with_stop_token(tiny_tokenizer(LLAMA3))
    assert choose_mask(tiny_tokenizer(PLAIN)) == DERIVED
    assert "may not learn where to stop" in capsys.readouterr().err


def test_template_that_is_not_prefix_preserving_is_refused():
    tok = tiny_tokenizer(DROPS_REASONING)
    chat = [CHAT[0], {"role": "assistant", "content": "<think>Rome is in Italy.</think>In Italy."}, *CHAT[2:]]
    with pytest.raises(MaskError) as err:
        derive_assistant_mask(tok, chat, where="row 7")
    text = str(err.value)
    assert "row 7" in text and "not prefix-preserving" in text and "\n" not in text
    assert "prompt/completion rows" in text and "--full-sequence-loss" in text
    with pytest.raises(MaskError, match="generation prompt is not a prefix"):
        choose_mask(tiny_tokenizer(OTHER_PROMPT), quiet=True)


def tiny_llama(folder, template: str) -> PreTrainedTokenizerFast:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer(template)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"))
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return tok


def test_sft_refuses_unmaskable_templates_in_one_line(tmp_path, capsys):
    from twinlm.cli import main

    rows = tmp_path / "chats.jsonl"
    thinking = [CHAT[0], {"role": "assistant", "content": "<think>Rome is in Italy.</think>In Italy."}, *CHAT[2:]]
    rows.write_text(json.dumps({"messages": CHAT}) + "\n" + json.dumps({"messages": thinking}) + "\n")
    for template, reason in [(OTHER_PROMPT, "generation prompt is not a prefix"),
                             (DROPS_REASONING, "for row 2: the chat template is not prefix-preserving")]:
        tiny_llama(tmp_path / "llama", template)
        out = tmp_path / "out"
        assert main(["sft", str(tmp_path / "llama"), "--data", str(rows), "--assistant-only-loss",
                     "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert reason in err and "--full-sequence-loss" in err and "Traceback" not in err, err
        assert not out.exists()


def test_sft_trains_on_the_derived_mask(tmp_path, capsys, monkeypatch):
    """End to end on a Llama model whose template has no markers: the labels TRL trains on are the
    derived mask, and sft.json says which way the mask was made."""
    from twinlm.align import sft as sft_module
    from twinlm.align.sft import SFTSettings, sft

    tok = tiny_llama(tmp_path / "llama", CHATML_SYSTEM)
    seen = {}
    make = sft_module.sft_trainer_class

    def recording():
        cls = make()

        class Recording(cls):
            def __init__(self, *a, **k):
                super().__init__(*a, **k)
                seen["train"] = self.train_dataset

        return Recording

    monkeypatch.setattr(sft_module, "sft_trainer_class", recording)
    rows = [{"messages": CHAT}] * 4
    metrics = sft(tmp_path / "llama", rows, tmp_path / "out",
                  SFTSettings(assistant_only_loss=True, max_steps=1, batch_size=2, max_length=64, learning_rate=1e-3))
    assert "assistant mask: derived from prefix renders" in capsys.readouterr().err
    expected = derive_assistant_mask(tok, CHAT)
    example = seen["train"][0]
    assert example["input_ids"] == expected["input_ids"]
    assert [label != -100 for label in example["labels"]] == [bool(m) for m in expected["assistant_masks"]]
    assert metrics["assistant_mask"] == DERIVED
    assert json.loads((tmp_path / "out" / "sft.json").read_text())["metrics"]["assistant_mask"] == DERIVED
