"""Bad input to `twinlm pretrain`: one line on stderr, exit 2, before any training, nothing lost."""

from __future__ import annotations

import json

import pytest

from twinlm.cli import main


def run_cli(capsys, *argv) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    return err


def test_empty_corpus(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("\n\n")
    err = run_cli(capsys, "pretrain", "micro", "--out", str(tmp_path / "o"), "--set", f"data.source={tmp_path}/empty.txt")
    assert "error" in err
    assert not (tmp_path / "o" / "encoder").exists()


def test_binary_files_are_skipped_or_fail_when_nothing_is_left(tmp_path, capsys):
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "a.txt").write_bytes(b"\x00\x01\x02\xff\xfe" * 50)
    err = run_cli(capsys, "pretrain", "micro", "--out", str(tmp_path / "o"), "--set", f"data.source={folder}")
    assert "binary" in err or "UTF-8" in err or "skipped" in err


def test_jsonl_without_text_column_names_columns_found(tmp_path, capsys):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"body": f"doc {i}", "id": i}) for i in range(5)))
    err = run_cli(capsys, "pretrain", "micro", "--out", str(tmp_path / "o"), "--set", f"data.source={path}")
    assert "text" in err and "body" in err


def test_missing_path(tmp_path, capsys):
    err = run_cli(capsys, "pretrain", "micro", "--out", str(tmp_path / "o"), "--set", f"data.source={tmp_path}/nope.txt")
    assert "no such file" in err


def test_unknown_recipe_key_and_size(tmp_path, capsys):
    err = run_cli(capsys, "pretrain", "micro", "--out", str(tmp_path / "o"), "--set", "model.sise=17m")
    assert "model.sise" in err and "size" in err
    err = run_cli(capsys, "pretrain", "micro", "--out", str(tmp_path / "o"), "--set", "model.size=2b")
    assert "2b" in err and "17m" in err
    err = run_cli(capsys, "pretrain", "no-such-recipe", "--out", str(tmp_path / "o"))
    assert "nano" in err


def test_block_length_over_max_positions(tmp_path, capsys):
    err = run_cli(capsys, "pretrain", "micro", "--out", str(tmp_path / "o"), "--set", "phases.pretrain.seq_len=1024")
    assert "max_position_embeddings" in err


def test_existing_out_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("earlier results")
    err = run_cli(capsys, "pretrain", "micro", "--out", str(out))
    assert "--overwrite" in err
    assert (out / "keep.txt").read_text() == "earlier results"


def test_resume_with_nothing_to_resume(tmp_path, capsys):
    err = run_cli(capsys, "pretrain", "micro", "--out", str(tmp_path / "o"), "--resume")
    assert "nothing to resume" in err


def test_unknown_twin(tmp_path, capsys):
    err = run_cli(capsys, "pretrain", "micro", "--out", str(tmp_path / "o"), "--twins", "encoder,bert")
    assert "bert" in err


@pytest.mark.parametrize("command", ["pretrain", "plan", "demo"])
def test_help_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert len(capsys.readouterr().out) > 300


def test_bad_source_leaves_no_output_folder(tmp_path, capsys):
    run_cli(capsys, "pretrain", "micro", "--out", str(tmp_path / "o"), "--set", f"data.source={tmp_path}/nope.jsonl")
    assert not (tmp_path / "o").exists()
