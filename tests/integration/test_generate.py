"""`twinlm generate`: greedy and sampled generation, streamed, with the chat template on request."""

from __future__ import annotations

from twinlm.align.generate import generate
from twinlm.cli import main


def test_greedy_is_deterministic_and_streams(micro_run, capsys):
    model = micro_run / "decoder"
    a = generate(model, "Samuel Berg was born in", max_new_tokens=8)
    b = generate(model, "Samuel Berg was born in", max_new_tokens=8)
    assert a == b and 1 <= len(a["token_ids"]) <= 8
    assert main(["generate", str(model), "--prompt", "Samuel Berg was born in", "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out.strip() == a["text"].strip()


def test_sampling_follows_the_seed(micro_run):
    model = micro_run / "decoder"
    runs = [generate(model, "The", max_new_tokens=12, sample=True, temperature=1.5, seed=s)["token_ids"]
            for s in (1, 1, 2, 3)]
    assert runs[0] == runs[1] and len({tuple(r) for r in runs}) > 1


def test_chat_uses_template_and_bad_values_are_refused(micro_run, capsys):
    model = str(micro_run / "decoder")
    assert main(["generate", model, "--prompt", "hi", "--chat", "--max-new-tokens", "4"]) == 0
    assert "no chat template; using twinlm's" in capsys.readouterr().err
    assert main(["generate", model, "--prompt", "hi", "--max-new-tokens", "0"]) == 2
    assert "--max-new-tokens must be at least 1" in capsys.readouterr().err
    assert main(["generate", model, "--prompt", "hi", "--sample", "--temperature", "0"]) == 2
    assert "temperature > 0" in capsys.readouterr().err
