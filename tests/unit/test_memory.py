"""Memory estimates and the fit check: sdpa's seq^2 masks and attention weights are counted,
`micro_batch: auto` takes what fits, a phase that cannot fit is refused before any work."""

from __future__ import annotations

import pytest

from twinlm.cli import main
from twinlm.errors import UserError
from twinlm.recipe import load_recipe
from twinlm.train.batching import split_batch
from twinlm.train.memory import Budget, activation_bytes, attention_bytes, phase_bytes

SDPA_17M = ["training.attn_implementation=sdpa", "tokenizer.name_or_path=null", "tokenizer.vocab_size=512"]


def test_attention_terms_follow_the_implementation():
    sdpa = load_recipe("ettin-17m", SDPA_17M)
    flash = load_recipe("ettin-17m")
    assert attention_bytes(flash, 8192, 8) == 0
    gpu = attention_bytes(sdpa, 8192, 1)
    # b x s^2: linear in the micro-batch, quadratic in the sequence
    assert attention_bytes(sdpa, 8192, 4) == pytest.approx(4 * gpu)
    assert attention_bytes(sdpa, 4096, 1) == pytest.approx(gpu / 4)
    # On a CPU with attention dropout the math kernel keeps probabilities per head: far more.
    cpu = attention_bytes(sdpa, 8192, 1, on_gpu=False)
    assert cpu > 10 * gpu
    wider = load_recipe("ettin-17m", SDPA_17M + ["model.heads=8"])
    assert attention_bytes(wider, 8192, 1, on_gpu=False) > 1.9 * cpu - 2 * 8192**2  # grows with the heads
    no_dropout = load_recipe("ettin-17m", SDPA_17M + ["model.attention_dropout=0"])
    # Without dropout the CPU's fused kernel runs: only masks and biases, as on a GPU.
    assert attention_bytes(no_dropout, 8192, 1, on_gpu=False) == attention_bytes(no_dropout, 8192, 1, on_gpu=True)
    # Checkpointing keeps one layer's attention tensors instead of every layer's.
    assert attention_bytes(sdpa, 8192, 1, checkpointing=True) < gpu / 3
    # ... and the plan's activation figure includes them.
    vocab = 512
    assert activation_bytes(sdpa, "encoder", 8192, 1, 0.3, vocab, False) - \
        activation_bytes(flash, "encoder", 8192, 1, 0.3, vocab, False) == pytest.approx(gpu)


def test_auto_micro_batch_takes_the_largest_that_fits():
    recipe = load_recipe("ettin-17m", SDPA_17M)
    extension = recipe.phases[1]
    assert split_batch(recipe, extension, 8).micro_batch == 8  # token cap only: 65,536 / 8,192
    need = {m: phase_bytes(recipe, extension, m, on_gpu=True) for m in (1, 2, 4, 8)}
    budget = Budget((need[2] + need[4]) / 2, "test", True)
    assert split_batch(recipe, extension, 8, budget).micro_batch == 2
    with pytest.raises(UserError, match=r"phase extension \(seq 8192, micro-batch 1, sdpa\) needs an estimated "
                                        r".* GB per process, over test; try .*flash_attention_2"):
        split_batch(recipe, extension, 8, Budget(need[1] / 2, "test", True))
    fixed = load_recipe("ettin-17m", SDPA_17M + ["phases.extension.micro_batch=8"])
    with pytest.raises(UserError, match=r"micro-batch 8, .*phases.extension.micro_batch=auto"):
        split_batch(fixed, fixed.phases[1], 8, budget)


def test_a_phase_that_cannot_fit_is_refused_when_the_run_starts(tmp_path, capsys):
    """The ettin-17m shape's extension phase at 8,192 with sdpa in fp32 on this CPU, within a stated 16 GB:
    refused in one line before any data work, though the pretrain phase before it would fit."""
    out = tmp_path / "run"
    code = main(["pretrain", "ettin-17m", "--out", str(out), "--set", "training.memory_gb=16", "--set", "training.precision=fp32",
                 *[x for o in SDPA_17M for x in ("--set", o)]])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "phase extension (seq 8192, micro-batch 1, sdpa)" in err and "training.memory_gb=16" in err
    assert not out.exists()


def test_plan_refuses_what_does_not_fit_a_gpu(capsys):
    assert main(["plan", "ettin-17m", "--gpus", "8", "--set", "training.attn_implementation=sdpa",
                 "--gpu-memory-gb", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "phase extension" in err and "--gpu-memory-gb 4" in err
