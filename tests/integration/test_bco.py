"""twinlm's BCO trainer: the loss by hand, delta state, reference modes, the toy preference task, errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from transformers import TrainerCallback

from twinlm.align.bco import BCOSettings, bco
from twinlm.align.bco_config import BCOConfig
from twinlm.align.bco_data import BCOCollator, sequence_logps
from twinlm.align.bco_trainer import STATE_FILE, BCOTrainer, bco_losses
from twinlm.align.loading import load_decoder
from twinlm.align.preference_task import country_pairs, preference_accuracy, unpaired_rows
from twinlm.cli import main
from twinlm.world.generator import WorldConfig, build_world


def _rows(world, n=16, seed=0):
    return unpaired_rows(country_pairs(world, world.people[:n]), seed=seed)


def test_bco_loss_equals_hand_computation():
    logps = torch.tensor([-3.0, -5.0, -2.5, -7.0])
    ref = torch.tensor([-4.0, -4.5, -2.0, -6.0])
    label = torch.tensor([True, False, True, False])
    weights = torch.tensor([1.0, 2.0, 1.0, 0.5])
    beta, delta = 0.1, 0.03
    losses, rewards = bco_losses(logps, ref, label, delta, beta, weights)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    hand = []
    for lp, rf, y, w in zip(logps.tolist(), ref.tolist(), label.tolist(), weights.tolist()):
        r = beta * (lp - rf)
        hand.append(-math.log(sig(r - delta)) if y else -w * math.log(sig(-(r - delta))))
    assert losses.tolist() == pytest.approx(hand, rel=1e-6)
    assert rewards.tolist() == pytest.approx([0.1, -0.05, -0.05, -0.1], rel=1e-6)


def test_trainer_loss_delta_and_metrics(micro_run, micro_world, tmp_path):
    """compute_loss equals the formula on the model's own log-probs; delta moves in training only."""
    model, tok = load_decoder(micro_run / "decoder")
    args = BCOConfig(output_dir=str(tmp_path), beta=0.5, per_device_train_batch_size=8, max_steps=3,
                     learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True)
    trainer = BCOTrainer(model, args, _rows(micro_world), tok)
    batch = BCOCollator(tok.pad_token_id)([trainer.train_dataset[i] for i in range(8)])
    with torch.no_grad():
        logps = sequence_logps(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                               batch["input_ids"], batch["completion_mask"])
    trainer.running.mean, trainer.running.count = 0.2, 8  # a fixed delta from 8 earlier rewards of 0.2
    model.eval()
    loss = trainer.compute_loss(model, batch)
    assert trainer.running.count == 8  # evaluation leaves delta alone
    expected, _ = bco_losses(logps, logps, batch["label"], 0.2, 0.5)  # policy == reference before training
    assert float(loss) == pytest.approx(float(expected.mean()), rel=1e-5)
    model.train()
    trainer.compute_loss(model, batch)
    assert trainer.running.count == 16 and trainer.running.mean == pytest.approx(0.1)  # 8 zero rewards joined
    trainer.running.mean, trainer.running.count = 0.0, 0
    trainer.train()
    logged = trainer.state.log_history[0]
    for key in ("rewards/desirable", "rewards/undesirable", "rewards/margins", "delta", "logps/desirable",
                "logps/undesirable"):
        assert key in logged, logged


def test_bco_raises_preference_accuracy_on_heldout_prompts(micro_run, micro_world, tmp_path):
    """Trained on prompts about people of another world, measured on the micro world's people:
    the city -> country preference is learned, not the rows."""
    other = build_world(WorldConfig(num_people=600, seed=7))
    rows = unpaired_rows(country_pairs(other, other.people))
    heldout = country_pairs(micro_world, micro_world.people, seed=1)
    model, tok = load_decoder(micro_run / "decoder")
    before = preference_accuracy(model, tok, heldout)
    out = tmp_path / "aligned"
    eval_rows = [{"prompt": p["prompt"], "chosen": p["correct"], "rejected": p["wrong"]} for p in heldout]
    metrics = bco(micro_run / "decoder", rows, out, BCOSettings(
        beta=1.0, learning_rate=3e-3, epochs=4, batch_size=16, precompute_ref_log_probs=True, logging_steps=50),
        eval_data=eval_rows)
    tuned, _ = load_decoder(out)
    after = preference_accuracy(tuned, tok, heldout)
    print(f"held-out preference accuracy {before:.3f} -> {after:.3f}")
    assert after >= before + 0.15, (before, after)
    # --eval-data reports the same accuracies, and the held-out BCO loss: ln 2 before training
    # (policy = reference, delta 0), lower once the preferred completions gain reward.
    record = json.loads((out / "bco.json").read_text())
    assert record["before"] == metrics["before"] and record["after"] == metrics["after"]
    assert metrics["before"]["preference_accuracy"] == pytest.approx(before)
    assert metrics["after"]["preference_accuracy"] == pytest.approx(after, abs=1 / len(heldout))
    assert metrics["before"]["eval_loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert metrics["after"]["eval_loss"] < math.log(2) and metrics["after"]["eval_rewards/margins"] > 0
    state = json.loads((out / STATE_FILE).read_text())
    assert state["delta"] == pytest.approx(metrics["delta"]) and state["count"] == 4 * len(rows)


class _Crash(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 4:
            raise RuntimeError("simulated crash")


def test_delta_and_udm_classifier_survive_interrupt_and_resume(micro_run, micro_world, tmp_path, monkeypatch):
    from twinlm.align import bco_trainer
    from twinlm.align.udm import UDM_FILE, UDMClassifier

    rows = _rows(micro_world, 48)
    settings = BCOSettings(beta=0.5, learning_rate=1e-3, max_steps=6, batch_size=8, save_steps=3, logging_steps=1,
                           udm_embedder=str(micro_run / "encoder"), prompt_sample_size=16)
    full = bco(micro_run / "decoder", rows, tmp_path / "full", settings)
    with pytest.raises(RuntimeError, match="simulated crash"):
        bco(micro_run / "decoder", rows, tmp_path / "cut", settings, callbacks=[_Crash()])
    ckpt = tmp_path / "cut" / "checkpoints" / "checkpoint-3"
    saved = json.loads((ckpt / STATE_FILE).read_text())
    assert saved["count"] == 24 and saved["delta"] != 0.0
    clf = UDMClassifier.load(ckpt)
    monkeypatch.setattr(bco_trainer, "fit_udm", lambda *a, **k: pytest.fail("resume must reload UDM, not refit"))
    resumed = bco(micro_run / "decoder", rows, tmp_path / "cut", settings, resume=True)
    assert resumed["delta"] == pytest.approx(full["delta"], rel=1e-4)
    assert json.loads((tmp_path / "cut" / STATE_FILE).read_text())["count"] == 48
    final = UDMClassifier.load(tmp_path / "cut")
    assert torch.equal(torch.tensor(final.coef), torch.tensor(clf.coef)) and final.intercept == clf.intercept
    assert (tmp_path / "full" / UDM_FILE).exists()


_RELOAD = """
import sys; sys.modules['twinlm'] = None
import torch
from transformers import AutoModelForCausalLM
m = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
print(m(torch.tensor([[1, 40, 41, 42]])).logits[0, -1, :6].tolist())
"""


def test_lora_reference_is_the_base_and_result_reloads_without_twinlm(micro_run, micro_world, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "lora"
    metrics = bco(micro_run / "decoder", _rows(micro_world, 32), out,
                  BCOSettings(lora=True, lora_r=4, beta=0.5, learning_rate=1e-2, max_steps=4, batch_size=8))
    assert metrics["delta"] != 0.0  # adapters moved the policy away from the adapter-free reference
    base, tuned = load_file(micro_run / "decoder" / "model.safetensors"), load_file(out / "model.safetensors")
    assert any(not torch.equal(base[k], tuned[k]) for k in base)
    assert (out / "adapter" / "adapter_config.json").exists() and not (out / "adapter_config.json").exists()
    done = subprocess.run([sys.executable, "-c", _RELOAD, str(out)], capture_output=True, text=True, check=True)
    from transformers import AutoModelForCausalLM

    here = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        expected = here(torch.tensor([[1, 40, 41, 42]])).logits[0, -1, :6]
    assert torch.allclose(torch.tensor(json.loads(done.stdout.strip().splitlines()[-1])), expected, atol=1e-5)


def test_precomputed_reference_equals_live_reference(micro_run, micro_world, tmp_path):
    model, tok = load_decoder(micro_run / "decoder")
    args = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, per_device_eval_batch_size=4,
                save_strategy="no", report_to="none", use_cpu=True)
    pre = BCOTrainer(model, BCOConfig(precompute_ref_log_probs=True, **args), _rows(micro_world, 8), tok)
    assert pre.ref_model is None
    live = BCOTrainer(model, BCOConfig(**args), _rows(micro_world, 8), tok)
    batch = BCOCollator(tok.pad_token_id)([live.train_dataset[i] for i in range(8)])
    expected = live._reference_logps(model, batch)
    assert pre.train_dataset["ref_logps"] == pytest.approx(expected.tolist(), rel=1e-5)


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_bad_input_one_line_errors_and_nothing_overwritten(micro_run, micro_world, tmp_path, capsys):
    dec, enc = str(micro_run / "decoder"), str(micro_run / "encoder")
    good = _write(tmp_path / "good.jsonl", _rows(micro_world, 8))
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "result.txt").write_text("earlier")

    def err(argv) -> str:
        assert main(["bco", *argv]) == 2
        text = capsys.readouterr().err
        assert text.count("\n") == 1 and "Traceback" not in text, text
        return text

    cases = [
        ([dec, "--data", _write(tmp_path / "a.jsonl", [{"question": "q", "answer": "a", "label": True}])],
         "found: answer, label, question"),
        ([dec, "--data", _write(tmp_path / "b.jsonl", [{"prompt": "p", "completion": "c", "label": 1}] * 2)],
         "must hold booleans"),
        ([dec, "--data", _write(tmp_path / "c.jsonl", [{"prompt": "p", "completion": "c", "label": True}] * 2)],
         "needs both desirable and undesirable"),
        ([enc, "--data", good], "not a decoder"),
        ([dec, "--data", good, "--ref-model", enc], "not a decoder"),
        ([dec, "--data", good, "--eval-data", _write(tmp_path / "e.jsonl", [{"text": "a b"}])],
         "BCO --eval-data needs prompt, completion, label rows or prompt, chosen, rejected rows"),
    ]
    for argv, expected in cases:
        assert expected in err([*argv, "--out", str(kept)])
    assert main(["bco", dec, "--data", good, "--out", str(kept), "--steps", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["generate", enc, "--prompt", "hi"]) == 2
    assert "not a decoder" in capsys.readouterr().err
    assert (kept / "result.txt").read_text() == "earlier" and sorted(p.name for p in kept.iterdir()) == ["result.txt"]


def test_reference_with_another_tokenizer_is_refused(micro_run, micro_world, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    other = tmp_path / "other"
    tok = AutoTokenizer.from_pretrained(micro_run / "decoder")
    tok.add_tokens(["<extra-token>"])
    AutoModelForCausalLM.from_pretrained(micro_run / "decoder").save_pretrained(other)
    tok.save_pretrained(other)
    data = _write(tmp_path / "d.jsonl", _rows(micro_world, 8))
    assert main(["bco", str(micro_run / "decoder"), "--data", data, "--out", str(tmp_path / "o"),
                 "--ref-model", str(other)]) == 2
    assert "different tokenizer" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_moe_router_loss_is_added_with_its_coefficient(micro_run, tmp_path):
    from transformers import AutoTokenizer, MixtralConfig, MixtralForCausalLM

    tok = AutoTokenizer.from_pretrained(micro_run / "decoder")
    cfg = MixtralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1, num_local_experts=4, num_experts_per_tok=2,
                        pad_token_id=tok.pad_token_id, output_router_logits=False)
    torch.manual_seed(0)
    model = MixtralForCausalLM(cfg)
    rows = [{"prompt": "a b", "completion": " c", "label": True}, {"prompt": "d e", "completion": " f", "label": False}]
    losses = {}
    for coef in (0.0, 0.5):
        args = BCOConfig(output_dir=str(tmp_path), router_aux_loss_coef=coef, save_strategy="no", report_to="none",
                         use_cpu=True)
        trainer = BCOTrainer(model, args, rows, tok)
        batch = BCOCollator(tok.pad_token_id)([trainer.train_dataset[i] for i in range(2)])
        model.eval()
        with torch.no_grad():
            losses[coef] = float(trainer.compute_loss(model, batch))
            aux = float(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              output_router_logits=True).aux_loss)
    assert aux > 0 and losses[0.5] - losses[0.0] == pytest.approx(0.5 * aux, rel=1e-4)


def test_conversational_rows_use_the_chat_template(micro_run, tmp_path):
    rows = [{"prompt": [{"role": "user", "content": "Where was Ada born?"}],
             "completion": [{"role": "assistant", "content": f"In {city}."}], "label": good}
            for city, good in (("Rome", True), ("Oslo", False), ("Lima", True), ("Kyiv", False))]
    out = tmp_path / "chat"
    bco(micro_run / "decoder", rows, out, BCOSettings(max_steps=1, batch_size=4, learning_rate=1e-3))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    assert "<assistant>" in tok.chat_template  # twinlm's template, saved with the model
    from twinlm.align.bco_data import encode_example

    ex = encode_example(rows[0]["prompt"], rows[0]["completion"], tok, 512, 256)
    completion = [t for t, m in zip(ex["input_ids"], ex["completion_mask"]) if m]
    assert tok.decode(completion) == "In Rome.[SEP]\n"  # the assistant turn and its end-of-turn token
