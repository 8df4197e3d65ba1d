"""`twinlm plan --gpus N`: the batch split the run will use, memory estimates, and one-line refusals."""

from __future__ import annotations

import pytest

from twinlm.cli import main
from twinlm.errors import UserError
from twinlm.plan import REFERENCE_DATA_TOKENS_PER_S, activation_bytes, plan
from twinlm.recipe import load_recipe
from twinlm.train.batching import split_batch


@pytest.mark.parametrize("gpus", [8, 64, 128, 256])
def test_ettin_1b_validates_on_common_cluster_sizes(gpus, capsys):
    recipe = load_recipe("ettin-1b")
    rows = plan(recipe, gpus=gpus)
    cap = recipe.training.micro_batch_tokens
    for r in rows:
        assert r.micro_batch * r.accumulation * gpus == r.global_batch, r
        assert r.micro_batch * r.seq_len <= cap
        per_gpu = r.global_batch // gpus
        # auto picks the largest micro-batch that fits the token cap and divides the per-GPU batch
        assert not any(per_gpu % m == 0 and m * r.seq_len <= cap for m in range(r.micro_batch + 1, per_gpu + 1))
        assert r.activation_bytes_checkpointed < r.activation_bytes
    assert main(["plan", "ettin-1b", "--gpus", str(gpus)]) == 0
    out = capsys.readouterr().out
    assert "micro" in out and "accum" in out and "ckpt act" in out and "batch-size warmup" in out


def test_uneven_split_names_the_nearest_valid_settings(capsys):
    assert main(["plan", "ettin-1b", "--gpus", "96"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "global batch 512 does not split over 96 processes" in err
    assert "480 or 576" in err and "64 or 128 processes" in err
    # An explicit micro-batch: the error names micro-batches and GPU counts that work.
    recipe = load_recipe("ettin-1b", ["training.micro_batch=64", "phases.extension.micro_batch=8",
                                      "phases.decay.micro_batch=8"])
    with pytest.raises(UserError, match=r"micro_batch 64 .*nearest valid: global batch 4096 or 8192, "
                                        r"micro_batch 36 or 72, 36 or 72 processes"):
        split_batch(recipe, recipe.phases[0], 64)  # 4608 / 64 = 72 per GPU: 64 does not divide it
    assert split_batch(recipe, recipe.phases[0], 72).accumulation == 1
    assert split_batch(recipe, recipe.phases[1], 64).accumulation == 1


def test_batch_warmup_min_must_split_over_the_gpus():
    recipe = load_recipe("ettin-1b")  # batch_warmup_min 256
    plan(recipe, gpus=256)
    with pytest.raises(UserError, match="batch_warmup_min \\(256\\) does not split over 512 processes"):
        plan(recipe, gpus=512)


def test_activation_memory_estimate_scales_as_documented():
    recipe = load_recipe("ettin-1b", ["training.loss_chunk=0"])  # the stock loss: logits for every position
    one = activation_bytes(recipe, "decoder", 8192, 1, 0.3, 50_368, checkpointing=False)
    assert activation_bytes(recipe, "decoder", 8192, 4, 0.3, 50_368, False) == pytest.approx(4 * one)
    enc = activation_bytes(recipe, "encoder", 8192, 1, 0.3, 50_368, False)
    # The decoder's logits (8,192 x 50,368 x 10 bytes = 3.8 GiB per sequence) are the difference.
    assert one - enc == pytest.approx(0.7 * 8192 * (50_368 * 10 + 6 * 1792), rel=1e-6)
    ckpt = activation_bytes(recipe, "decoder", 8192, 1, 0.3, 50_368, checkpointing=True)
    assert ckpt < one / 2
    # The chunked loss keeps one chunk's logits: 4 sequences of 8,192 cost the logits of 16,384 positions.
    chunked = load_recipe("ettin-1b")  # loss_chunk 16,384
    four = activation_bytes(chunked, "decoder", 8192, 4, 0.3, 50_368, False)
    assert 4 * one - four == pytest.approx((4 * 8192 - 16_384) * 50_368 * 10, rel=1e-6)


def test_plan_states_the_resume_rule_and_the_data_path_margin(capsys):
    assert main(["plan", "ettin-1b", "--gpus", "8"]) == 0
    out = capsys.readouterr().out
    # global batches 4,608 / 512 / 512 and batch_warmup_min 256: the powers of two up to 256
    assert "resume: on 1, 2, 4, 8, 16, 32, 64, 128, 256 processes (9 counts" in out
    line = next(x for x in out.splitlines() if x.startswith("data path"))
    need = float(line.split("consumes up to ")[1].split()[0].replace(",", ""))
    assert f"margin {REFERENCE_DATA_TOKENS_PER_S / need:.2f}x per worker" in line and "reference CPU core" in line
    assert f"{-(-need // REFERENCE_DATA_TOKENS_PER_S):.0f} worker(s) per GPU suffice" in line
    assert main(["plan", "micro", "--set", "phases.decay.global_batch=12", "--set", "training.micro_batch=auto",
                 "--data-tokens-per-s", "3000000"]) == 0
    out = capsys.readouterr().out
    assert "resume: on 1, 2, 4 processes" in out  # divisors of both 8 and 12
    line = next(x for x in out.splitlines() if x.startswith("data path"))
    need = float(line.split("consumes up to ")[1].split()[0].replace(",", ""))
    assert f"margin {3_000_000 / need:.2f}x per worker" in line


def test_run_refuses_an_uneven_split_before_any_work(tmp_path, monkeypatch):
    """`twinlm pretrain` runs the same check on its real process count, before touching --out."""
    import twinlm.train.pretrain as pretrain_module

    class ThreeProcesses:
        num_processes, process_index, is_main_process = 3, 0, True

    monkeypatch.setattr(pretrain_module, "process_state", lambda: ThreeProcesses())
    recipe = load_recipe("micro")  # global batch 8
    with pytest.raises(UserError, match="global batch 8 does not split over 3 processes"):
        pretrain_module.pretrain(recipe, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, message", [
    (["training.keep_every=100"], r"keep_every \(100\) must be a multiple of training.save_every \(8\)"),
    (["training.keep_last=0"], r"keep_last must be >= 1"),
    (["training.micro_batch=big"], r"training.micro_batch='big'; valid: a number of sequences >= 1, or auto"),
    (["phases.decay.micro_batch=3"], r"phases\[1\] \(decay\) global batch 8 is not a multiple of its micro_batch"),
    (["training.batch_warmup_tokens=4096"], r"batch_warmup_tokens needs training.batch_warmup_min"),
    (["training.batch_warmup_tokens=4096", "training.batch_warmup_min=3"], r"batch_warmup_min \(3\) must be "
                                                                           r"smaller than and divide .* e.g. 2"),
    (["training.batch_warmup_tokens=99999", "training.batch_warmup_min=2"], r"exceeds the first phase's tokens"),
])
def test_bad_batch_and_checkpoint_settings_fail_at_load(override, message):
    with pytest.raises(UserError, match=message):
        load_recipe("micro", override)


def test_micro_batch_per_phase_and_auto():
    recipe = load_recipe("micro", ["phases.decay.micro_batch=2", "training.micro_batch=auto",
                                   "training.micro_batch_tokens=128"])
    pre, decay = recipe.phases
    assert split_batch(recipe, pre, 1).micro_batch == 2  # 128 tokens / seq 64
    assert split_batch(recipe, pre, 2).micro_batch == 2 and split_batch(recipe, pre, 2).accumulation == 2
    assert (split_batch(recipe, decay, 1).micro_batch, split_batch(recipe, decay, 1).accumulation) == (2, 4)
