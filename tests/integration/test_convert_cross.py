"""`twinlm convert decoder-to-encoder / encoder-to-decoder` on the micro twins."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

from twinlm.cli import main

RELOAD = """
import sys, json
sys.modules["twinlm"] = None  # plain HF folder: loads with transformers alone
import torch
from transformers import AutoModelForMaskedLM, AutoModelForCausalLM
cls = AutoModelForMaskedLM if sys.argv[2] == "encoder" else AutoModelForCausalLM
model = cls.from_pretrained(sys.argv[1]).eval()
ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46]])
with torch.no_grad():
    print(json.dumps({"cls": type(model).__name__, "logits": model(input_ids=ids).logits[0, :, :8].tolist()}))
"""


def heldout_mlm_loss(model, run, tokenizer_dir, twin, cache):
    from twinlm.data.corpus import prepare_stores
    from twinlm.data.tokenizer import load_tokenizer
    from twinlm.recipe import load_recipe
    from twinlm.train.heldout import heldout_loss

    recipe = load_recipe(str(run / twin / "twinlm.yaml"))
    tok = load_tokenizer(str(tokenizer_dir))
    _, heldout = prepare_stores(recipe, tok, cache, None)
    return heldout_loss(model, twin, tok, heldout, 128, 0.15)["loss"]


@pytest.mark.parametrize("source, target, cls", [("decoder", "encoder", "ModernBertForMaskedLM"),
                                                 ("encoder", "decoder", "ModernBertDecoderForCausalLM")])
def test_cross_objective_conversion_trains_and_reloads_without_twinlm(micro_run, tmp_path, source, target, cls):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    from twinlm.convert.weights import decoder_to_encoder, encoder_to_decoder

    out = tmp_path / f"{source}-to-{target}"
    loader = AutoModelForCausalLM if source == "decoder" else AutoModelForMaskedLM
    converted = (decoder_to_encoder if target == "encoder" else encoder_to_decoder)(
        loader.from_pretrained(micro_run / source))
    before = heldout_mlm_loss(converted, micro_run, micro_run / source, target, tmp_path / "cache")
    assert main(["convert", f"{source}-to-{target}", str(micro_run / source), "--out", str(out),
                 "--tokens", "8192"]) == 0
    meta = json.loads((out / "conversion.json").read_text())
    assert (meta["kind"], meta["from"], meta["to"]) == ("cross-objective", source, target)
    assert meta["objective"] == ("mlm" if target == "encoder" else "clm")
    after = meta["result"]["heldout"]["loss"]
    assert after < before  # continued training with the new objective helped
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert records and all(r["twin"] == target for r in records)
    assert not (out / target).exists() and not (out / "data").exists()  # work folders cleaned up
    from twinlm.recipe import load_recipe

    recipe = load_recipe(str(out / "twinlm.yaml"))  # strict-loadable, one warmup_linear phase
    assert [p.lr_schedule for p in recipe.phases] == ["warmup_linear"] and recipe.phases[0].lr_end == 0.02

    script = tmp_path / "reload.py"
    script.write_text(textwrap.dedent(RELOAD))
    done = subprocess.run([sys.executable, str(script), str(out), target], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    reloaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert reloaded["cls"] == cls
    here = (AutoModelForMaskedLM if target == "encoder" else AutoModelForCausalLM).from_pretrained(out).eval()
    with torch.no_grad():
        mine = here(input_ids=torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46]])).logits[0, :, :8]
    assert torch.allclose(mine, torch.tensor(reloaded["logits"]), atol=1e-5)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["decoder-to-encoder", "encoder"], "needs a 'modernbert-decoder' checkpoint"),
        (["encoder-to-decoder", "decoder"], "needs a 'modernbert' checkpoint"),
        (["decoder-to-encoder", "decoder", "--objective", "clm"], "valid: mlm, mntp"),
        (["decoder-to-encoder", "nowhere"], "no model folder"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(micro_run, tmp_path, capsys, argv, message):
    kind, model, *rest = argv
    out = tmp_path / "out"
    path = micro_run / model if model != "nowhere" else tmp_path / "nowhere"
    assert main(["convert", kind, str(path), "--out", str(out), *rest]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_existing_output_needs_overwrite(micro_run, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier result")
    assert main(["convert", "decoder-to-encoder", str(micro_run / "decoder"), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "earlier result"


class _Crash(TrainerCallback):
    """Simulates a killed job: raise after a given training step."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt("simulated crash")


def test_interrupted_conversion_resumes_to_the_same_weights(micro_run, tmp_path, capsys):
    from twinlm.convert.cross import cross_train

    source, budget = micro_run / "decoder", ["--tokens", "8192", "--set", "training.save_every=2"]  # 8 steps
    reference = tmp_path / "reference"
    assert main(["convert", "decoder-to-encoder", str(source), "--out", str(reference), *budget]) == 0
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        cross_train(source, out, "encoder", tokens=8192, overrides=["training.save_every=2"], callbacks=[_Crash(3)])
    assert (out / "encoder" / "work" / "cross-mlm" / "checkpoint-2").exists()
    assert not (out / "conversion.json").exists() and not (out / "model.safetensors").exists()
    capsys.readouterr()
    # Without --resume (or --overwrite) the interrupted output is left alone.
    assert main(["convert", "decoder-to-encoder", str(source), "--out", str(out), *budget]) == 2
    assert "--resume" in capsys.readouterr().err
    # Resuming with other settings than the interrupted run is refused.
    assert main(["convert", "decoder-to-encoder", str(source), "--out", str(out), "--resume", "--tokens", "4096",
                 "--set", "training.save_every=2"]) == 2
    assert "the recipe differs" in capsys.readouterr().err
    assert main(["convert", "decoder-to-encoder", str(source), "--out", str(out), "--resume", *budget]) == 0
    resumed, expected = load_file(out / "model.safetensors"), load_file(reference / "model.safetensors")
    assert resumed.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], atol=1e-6, rtol=1e-5, msg=key)
    meta = json.loads((out / "conversion.json").read_text())
    assert meta["result"]["steps"] == 8 and not (out / "encoder").exists() and not (out / "data").exists()
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)), "no duplicate log lines after resume"
    # A finished conversion: --resume has nothing left to do and changes nothing.
    before = (out / "model.safetensors").stat().st_mtime_ns
    assert main(["convert", "decoder-to-encoder", str(source), "--out", str(out), "--resume", *budget]) == 0
    assert "nothing to resume" in capsys.readouterr().out
    assert (out / "model.safetensors").stat().st_mtime_ns == before


def _interrupted(source, out):
    """A decoder-to-encoder conversion of 3 steps killed at step 2, after its checkpoint at step 1."""
    from twinlm.convert.cross import cross_train

    with pytest.raises(KeyboardInterrupt):
        cross_train(source, out, "encoder", tokens=3072, overrides=["training.save_every=1"], callbacks=[_Crash(2)])
    assert (out / "encoder" / "work" / "cross-mlm" / "checkpoint-1").exists()
    assert (out / "source.json").exists() and not (out / "conversion.json").exists()


RESUME = ["--resume", "--tokens", "3072", "--set", "training.save_every=1"]


def test_resume_with_another_source_model_is_refused(micro_run, tmp_path, capsys):
    out, other = tmp_path / "out", tmp_path / "other-decoder"
    _interrupted(micro_run / "decoder", out)
    shutil.copytree(micro_run / "decoder", other)  # same config and recipe, one weight changed
    weights = load_file(other / "model.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name].clone()
    weights[name].view(-1)[0] += 1.0
    save_file(weights, other / "model.safetensors", metadata={"format": "pt"})
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    capsys.readouterr()
    assert main(["convert", "decoder-to-encoder", str(other), "--out", str(out), *RESUME]) == 2
    err = capsys.readouterr().err.strip()
    assert "source model differs" in err and len(err.splitlines()) == 1
    assert str((micro_run / "decoder").resolve()) in err and str(other.resolve()) in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_resume_from_a_copied_source_folder_works(micro_run, tmp_path, capsys):
    out, copy = tmp_path / "out", tmp_path / "copied-decoder"
    _interrupted(micro_run / "decoder", out)
    shutil.copytree(micro_run / "decoder", copy)  # other path, identical weights
    assert main(["convert", "decoder-to-encoder", str(copy), "--out", str(out), *RESUME]) == 0
    assert json.loads((out / "conversion.json").read_text())["result"]["steps"] == 3
    # A folder from before the source was recorded: accepted with a warning.
    (out / "source.json").unlink()
    capsys.readouterr()
    assert main(["convert", "decoder-to-encoder", str(copy), "--out", str(out), *RESUME]) == 0
    printed = capsys.readouterr().out
    assert "warning:" in printed and "no source.json" in printed and "nothing to resume" in printed


def test_convert_help_mentions_resume(capsys):
    for kind in ("decoder-to-encoder", "encoder-to-decoder"):
        with pytest.raises(SystemExit):
            main(["convert", kind, "--help"])
        assert "--resume" in capsys.readouterr().out


@pytest.fixture(scope="module")
def mntp_encoder(micro_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("mntp") / "encoder"
    assert main(["convert", "decoder-to-encoder", str(micro_run / "decoder"), "--out", str(out), "--objective", "mntp",
                 "--tokens", "2048"]) == 0
    return out


def test_mntp_encoder_is_evaluated_on_shifted_logits(mntp_encoder, tmp_path, capsys):
    """`twinlm eval` reads prediction_offset -1 from conversion.json: the intrinsic masked loss of
    an MNTP encoder scores the token masked at i with the logits at i - 1."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from twinlm.evaluate.models import resolve, world_for
    from twinlm.evaluate.scoring import encoder_pll
    from twinlm.objectives import mask_tokens

    assert json.loads((mntp_encoder / "conversion.json").read_text())["prediction_offset"] == -1
    capsys.readouterr()
    assert main(["eval", str(mntp_encoder), "--tasks", "intrinsic", "--max-items", "16", "--out",
                 str(tmp_path / "eval")]) == 0
    assert "predictions read at i-1" in capsys.readouterr().out
    (model_result,) = json.loads((tmp_path / "eval" / "results.json").read_text())["models"].values()
    assert model_result["architecture"] == "encoder" and model_result["prediction_offset"] == -1
    evaluated = model_result["tasks"]["intrinsic"]["metrics"]["masked_loss"]["mean"]

    # By hand: the evaluator's texts and masks (IntrinsicTask: one batch, generator seeded 0, 15%).
    (ref,), _ = resolve(str(mntp_encoder))
    _, heldout = (world := world_for(ref)).split()
    tok = AutoTokenizer.from_pretrained(mntp_encoder)
    model = AutoModelForMaskedLM.from_pretrained(mntp_encoder).eval()
    batch = tok(world.documents(heldout)[:16], truncation=True, max_length=128, padding=True, return_tensors="pt")
    inputs, labels, selected = mask_tokens(batch.input_ids, 0.15, tok.mask_token_id, len(tok),
                                           sorted(set(tok.all_special_ids)), torch.Generator().manual_seed(0))
    with torch.no_grad():
        logprobs = model(input_ids=inputs, attention_mask=batch.attention_mask).logits.float().log_softmax(-1)
    rows, cols = selected.nonzero(as_tuple=True)
    assert (cols > 0).all()  # position 0 ([CLS]) is never masked, so every masked token has a predecessor
    shifted = -logprobs[rows, cols - 1, labels[rows, cols]].mean().item()
    unshifted = -logprobs[rows, cols, labels[rows, cols]].mean().item()
    assert evaluated == pytest.approx(shifted, abs=1e-4)
    assert abs(shifted - unshifted) > 0.1

    # Pseudo-log-likelihood scoring (choice task) reads the same shifted position.
    ctx_ids = [tok.cls_token_id] + tok("Nadia Greco was born in", add_special_tokens=False).input_ids
    cont_ids = tok(" Recife", add_special_tokens=False).input_ids
    (score, n), = encoder_pll(model, tok, "Nadia Greco was born in", [" Recife"], prediction_offset=-1)
    expected = 0.0
    for k, token in enumerate(cont_ids):
        row = ctx_ids + cont_ids + [tok.sep_token_id]
        row[len(ctx_ids) + k] = tok.mask_token_id
        with torch.no_grad():
            lp = model(input_ids=torch.tensor([row])).logits[0].float().log_softmax(-1)
        expected += lp[len(ctx_ids) + k - 1, token].item()
    assert n == len(cont_ids) and score == pytest.approx(expected, abs=1e-4)
