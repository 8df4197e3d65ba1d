"""`twinlm pretrain --init`: a checkpoint that does not fit the recipe is refused in one line before
any data work; a hub id goes through `from_pretrained`; the tokenizer is the checkpoint's."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoConfig, AutoTokenizer

from twinlm.cli import main
from twinlm.data.tokenizer import train_tokenizer
from twinlm.errors import UserError
from twinlm.models import build_config
from twinlm.recipe import ModelShape, load_recipe
from twinlm.train.init import init_overrides, resolve_init

TEXTS = [f"person {i} was born in town {i % 7} and works as a {['baker', 'nurse', 'pilot'][i % 3]}." for i in range(300)]


@pytest.fixture(scope="module")
def tokenizers():
    return train_tokenizer(TEXTS, vocab_size=300, min_frequency=1), train_tokenizer(TEXTS[::-1][:40], 280, 1)


def checkpoint(folder: Path, twin: str, tokenizer, size: str = "micro", **config_changes) -> Path:
    """A config-only checkpoint folder (the checks read config.json and the tokenizer, no weights)."""
    config = build_config(twin, ModelShape(size=size), tokenizer)
    for key, value in config_changes.items():
        setattr(config, key, value)
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def refused(capsys, tmp_path, *argv) -> str:
    code = main(["pretrain", "micro", "--out", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists(), "refused before any work"
    return err


def test_shape_mismatch_names_the_key(tmp_path, capsys, tokenizers):
    enc = checkpoint(tmp_path / "enc", "encoder", tokenizers[0], size="nano")
    dec = checkpoint(tmp_path / "dec", "decoder", tokenizers[0])
    err = refused(capsys, tmp_path, "--init", f"encoder={enc}", "--init", f"decoder={dec}")
    assert "hidden_size is 128" in err and "model.hidden is 64" in err and "model.size=nano" in err


def test_wrong_architecture_points_at_convert(tmp_path, capsys, tokenizers):
    dec = checkpoint(tmp_path / "dec", "decoder", tokenizers[0])
    err = refused(capsys, tmp_path, "--init", f"encoder={dec}", "--init", f"decoder={dec}")
    assert "modernbert-decoder" in err and "twinlm convert" in err


def test_named_tokenizer_must_match_the_checkpoints(tmp_path, capsys, tokenizers):
    run = tmp_path / "run"
    for twin in ("encoder", "decoder"):
        checkpoint(run / twin, twin, tokenizers[0])
    other = tmp_path / "other-tok"
    tokenizers[1].save_pretrained(other)
    err = refused(capsys, tmp_path, "--init", str(run), "--set", f"tokenizer.name_or_path={other}")
    assert "differs from the tokenizer of --init" in err and "tokens" in err


def test_special_token_mismatch_names_the_id(tmp_path, capsys, tokenizers):
    enc = checkpoint(tmp_path / "enc", "encoder", tokenizers[0], pad_token_id=7)
    dec = checkpoint(tmp_path / "dec", "decoder", tokenizers[0])
    err = refused(capsys, tmp_path, "--init", f"encoder={enc}", "--init", f"decoder={dec}")
    assert "pad_token_id is 7" in err


def test_one_twin_only_and_bad_sources(tmp_path, capsys, tokenizers):
    enc = checkpoint(tmp_path / "enc", "encoder", tokenizers[0])
    assert "decoder=PATH" in refused(capsys, tmp_path, "--init", f"encoder={enc}")
    assert "no such folder" in refused(capsys, tmp_path, "--init", f"encoder={tmp_path}/nope", "--init",
                                       f"decoder={tmp_path}/nope")
    # A hub id that cannot be fetched (offline here) is one line too.
    assert "cannot read its config" in refused(capsys, tmp_path, "--init", "encoder=no-org/no-model",
                                               "--init", f"decoder={enc}")
    assert "expected a run folder" in refused(capsys, tmp_path, "--init", "encoders=x")


def test_hub_ids_go_through_from_pretrained(tmp_path, monkeypatch, tokenizers):
    folders = {f"org/{twin}": checkpoint(tmp_path / twin, twin, tokenizers[0]) for twin in ("encoder", "decoder")}
    asked = []

    def redirect(original):
        def load(name, *args, **kwargs):
            asked.append(name)
            return original(str(folders.get(name, name)), *args, **kwargs)
        return load

    monkeypatch.setattr(AutoConfig, "from_pretrained", redirect(AutoConfig.from_pretrained))
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", redirect(AutoTokenizer.from_pretrained))
    recipe = load_recipe("micro", init_overrides(["encoder=org/encoder", "decoder=org/decoder"]))
    resolved, sources = resolve_init(recipe, ("encoder", "decoder"))
    assert {s.location for s in sources.values()} == set(folders) and all(s.hub for s in sources.values())
    assert {"org/encoder", "org/decoder"} <= set(asked)
    # No tokenizer named: the run uses the checkpoint's (the trained-tokenizer settings are unused).
    assert resolved.tokenizer.name_or_path == "org/encoder"
    assert recipe.tokenizer.name_or_path is None, "the caller's recipe is left alone"


def test_init_run_and_twin_paths_exclude_each_other(tmp_path):
    with pytest.raises(UserError, match="not both"):
        load_recipe("micro", ["init.run=a", "init.encoder=b"])
    # --init replaces the recipe's init section as a whole.
    recipe = load_recipe("micro", ["init.encoder=b", "init.decoder=c"] + init_overrides([str(tmp_path)]))
    assert (recipe.init.run, recipe.init.encoder, recipe.init.decoder) == (str(tmp_path), None, None)

