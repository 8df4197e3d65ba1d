"""SFT on TRL: chat format learned and reproduced at generation, LoRA and full models reload without twinlm."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from twinlm.align.chat_template import TWINLM_CHAT_TEMPLATE, end_of_turn_token
from twinlm.align.generate import generate
from twinlm.align.runner import lora_target_modules
from twinlm.align.sft import SFTSettings, sft
from twinlm.cli import main


def _chats(world, people):
    return [
        {"messages": [
            {"role": "user", "content": f"Where was {p.name} born?"},
            {"role": "assistant", "content": f"In {p.birth_city}."},
        ]}
        for p in people
    ]


@pytest.fixture(scope="module")
def chat_model(micro_run, micro_world, tmp_path_factory):
    """The micro decoder fine-tuned on chats, assistant tokens only."""
    train, _ = micro_world.split()
    out = tmp_path_factory.mktemp("sft") / "chat"
    settings = SFTSettings(assistant_only_loss=True, learning_rate=1e-2, epochs=4, batch_size=8, max_length=64,
                           logging_steps=20)
    metrics = sft(micro_run / "decoder", _chats(micro_world, train), out, settings)
    return out, metrics, train


def test_sft_learns_and_reproduces_chat_format(chat_model, micro_run, capsys):
    out, metrics, train = chat_model
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert "<assistant>" in (tok_cfg.get("chat_template") or (out / "chat_template.jinja").read_text())
    person = train[3]
    before = generate(micro_run / "decoder", f"Where was {person.name} born?", chat=True, max_new_tokens=24)
    after = generate(out, f"Where was {person.name} born?", chat=True, max_new_tokens=24, stream=sys.stdout)
    # The base model has never seen the format; the tuned one answers in it and ends its turn
    # with the end-of-turn token instead of running on into another role header.
    assert not before["text"].startswith("In ")
    assert after["stopped"] and after["token_ids"][-1] == 2, after
    assert after["text"].startswith("In ") and after["text"].endswith(".") and "<" not in after["text"], after
    assert after["text"] in capsys.readouterr().out  # streamed as it was produced
    assert metrics["train_loss"] < 2.5
    assert metrics["assistant_mask"] == "template markers"  # twinlm's template has generation markers


def test_twinlm_chat_template_ends_turns_with_eos(micro_run):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(micro_run / "decoder")
    assert not tok.chat_template  # twin decoders ship without one: twinlm provides it
    tok.chat_template = TWINLM_CHAT_TEMPLATE
    assert end_of_turn_token(tok) == tok.eos_token
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert text == f"{tok.bos_token}<user>\nhi\n<assistant>\n"


_RELOAD = """
import sys; sys.modules['twinlm'] = None
import torch
from transformers import AutoModelForCausalLM
m = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
ids = torch.tensor([[1, 40, 41, 42, 43]])
print(m(ids).logits[0, -1, :8].tolist())
"""


def _reload_logits(path) -> torch.Tensor:
    done = subprocess.run([sys.executable, "-c", _RELOAD, str(path)], capture_output=True, text=True, check=True)
    return torch.tensor(json.loads(done.stdout.strip().splitlines()[-1]))


def _logits(path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        return m(torch.tensor([[1, 40, 41, 42, 43]])).logits[0, -1, :8]


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_sft_saves_models_that_reload_without_twinlm(micro_run, micro_world, tmp_path, lora):
    from safetensors.torch import load_file

    train, _ = micro_world.split()
    rows = [{"prompt": f"{p.name} was born in", "completion": f" {p.birth_city}."} for p in train[:32]]
    out = tmp_path / "m"
    sft(micro_run / "decoder", rows, out, SFTSettings(lora=lora, lora_r=4, learning_rate=1e-2, max_steps=4,
                                                       batch_size=8, max_length=32, logging_steps=2))
    base = load_file(micro_run / "decoder" / "model.safetensors")
    tuned = load_file(out / "model.safetensors")
    changed = [k for k in base if not torch.equal(base[k], tuned[k])]
    if lora:  # merged adapters changed exactly the adapted projections
        assert changed and all(any(t in k for t in ("q_proj", "k_proj", "v_proj", "Wo", "Wi")) for k in changed)
        assert (out / "adapter" / "adapter_config.json").exists()
        assert not any(".lora_" in k for k in tuned)
    else:
        assert len(changed) > len(base) // 2
    assert torch.allclose(_reload_logits(out), _logits(out), atol=1e-5)


def test_lora_targets_for_llama_family(micro_run, tmp_path):
    """A Llama-family decoder gets its own projections as LoRA targets and trains with them."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(micro_run / "decoder")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "llama")
    tok.save_pretrained(tmp_path / "llama")
    assert "gate_proj" in lora_target_modules("llama")
    sft(tmp_path / "llama", [{"text": "Ada was born in Rome."}] * 8, tmp_path / "out",
        SFTSettings(lora=True, lora_r=2, max_steps=2, batch_size=4, max_length=32, learning_rate=1e-2))
    adapter = json.loads((tmp_path / "out" / "adapter" / "adapter_config.json").read_text())
    assert set(adapter["target_modules"]) == set(lora_target_modules("llama"))


def test_sft_bad_input_is_one_line(micro_run, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a", "answer": "b"}\n')
    assert main(["sft", str(micro_run / "encoder"), "--data", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "not a decoder" in capsys.readouterr().err
    assert main(["sft", str(micro_run / "decoder"), "--data", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "found: answer, question" in err and err.count("\n") == 1
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "x").write_text("earlier result")
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "a b c"}\n')
    assert main(["sft", str(micro_run / "decoder"), "--data", str(good), "--out", str(tmp_path / "kept")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "kept" / "x").read_text() == "earlier result"


def test_eval_data_scores_before_and_after_in_summary_and_json(micro_run, micro_world, tmp_path, capsys):
    """Held-out loss and preference accuracy of the untrained and the trained model: training on the
    held-out prompts' right answers must lower the loss and raise the accuracy, and the printed
    summary, the returned metrics and sft.json agree."""
    from twinlm.align.preference_task import country_pairs, preference_accuracy

    pairs = country_pairs(micro_world, micro_world.people[:24], seed=3)
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"prompt": p["prompt"], "completion": p["correct"]}) + "\n" for p in pairs))
    held = tmp_path / "held.jsonl"  # labelled rows: each prompt once desirable, once undesirable
    held.write_text("".join(json.dumps({"prompt": p["prompt"], "completion": p[k], "label": k == "correct"}) + "\n"
                            for p in pairs for k in ("correct", "wrong")))
    out = tmp_path / "out"
    code = main(["sft", str(micro_run / "decoder"), "--data", str(train), "--eval-data", str(held), "--out", str(out),
                 "--lr", "1e-2", "--epochs", "15", "--batch-size", "8", "--max-length", "32"])
    assert code == 0
    captured = capsys.readouterr()
    record = json.loads((out / "sft.json").read_text())
    before, after = record["before"], record["after"]
    assert set(before) == set(after) >= {"eval_loss", "preference_accuracy"}
    assert after["eval_loss"] < before["eval_loss"] - 0.5, (before, after)
    assert after["preference_accuracy"] >= before["preference_accuracy"] + 0.2, (before, after)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(micro_run / "decoder")
    tok = AutoTokenizer.from_pretrained(micro_run / "decoder")
    assert before["preference_accuracy"] == pytest.approx(preference_accuracy(base, tok, pairs))
    assert f"eval_loss {before['eval_loss']:.4f} -> {after['eval_loss']:.4f}" in captured.out
    assert f"preference_accuracy {before['preference_accuracy']:.4f} -> " in captured.out
    assert "before training: eval_loss" in captured.err and "after training: eval_loss" in captured.err
