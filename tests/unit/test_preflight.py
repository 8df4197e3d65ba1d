"""Fail early: what cannot run here is refused in one line before any data work."""

from __future__ import annotations

from twinlm.cli import main


def refused(capsys, tmp_path, *argv) -> str:
    code = main(["pretrain", "micro", "--out", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists(), "refused before any work"
    return err


def test_flash_attention_missing_is_refused_before_data_work(tmp_path, capsys):
    err = refused(capsys, tmp_path, "--set", "training.attn_implementation=flash_attention_2")
    assert "flash_attention_2" in err and "--set training.attn_implementation=sdpa" in err
