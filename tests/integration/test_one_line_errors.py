"""Bad input is one line on stderr, before any work and before any library bar or log."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from twinlm.cli import main


def test_sft_on_messages_that_are_not_turns_is_one_line(micro_run, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}]}) + "\n"
                   + json.dumps({"messages": [{"role": "user"}]}) + "\n")
    assert main(["sft", str(micro_run / "decoder"), "--data", str(bad), "--out", str(tmp_path / "o")]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "twinlm sft: error: SFT data: row 1: 'messages' must be a list of turns {\"role\": ..., \"content\": ...}, "
        "found list [{'role': 'user'}]"]
    assert captured.out == "" and not (tmp_path / "o").exists()


@pytest.mark.slow  # a fresh interpreter imports torch, transformers and TRL: tens of seconds on busy cores
def test_sft_bad_rows_in_a_fresh_process_print_nothing_but_the_error(micro_run, tmp_path):
    """As a user runs it: a fresh process, where the libraries' bars would show if they were on."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": "hello there"}) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.endswith("DISABLE_PROGRESS_BARS")}
    done = subprocess.run([sys.executable, "-m", "twinlm.cli", "sft", str(micro_run / "decoder"), "--data", str(bad),
                           "--out", str(tmp_path / "o"), "--steps", "1"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "twinlm sft: error: SFT data: row 0: 'messages' must be a list of turns {\"role\": ..., \"content\": ...}, "
        "found str 'hello there'"]
    assert not (tmp_path / "o").exists()


def test_eval_on_truncated_weights_is_one_line_before_any_work(micro_run, tmp_path, capsys):
    folder = tmp_path / "decoder"
    shutil.copytree(micro_run / "decoder", folder)
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    with weights.open("r+b") as f:
        f.truncate(size // 3)
    assert main(["eval", str(folder), "--out", str(tmp_path / "o"), "--tasks", "intrinsic"]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"twinlm eval: error: {weights} is truncated ({size // 3:,} of {size:,} bytes); copy or save it again"]
    assert captured.out == "" and not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv", [
    ["sft", "{missing}", "--data", "{data}", "--out", "{out}"],
    ["bco", "{missing}", "--data", "{data}", "--out", "{out}"],
    ["generate", "{missing}", "--prompt", "hi"],
    ["finetune", "dense", "--base", "{missing}", "--out", "{out}"],
])
def test_a_missing_local_model_path_is_named_as_missing(argv, tmp_path, capsys):
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"prompt": "p", "completion": "c", "label": True}) + "\n")
    missing = str(tmp_path / "no-such" / "decoder")
    filled = [a.format(missing=missing, data=data, out=tmp_path / "o") for a in argv]
    assert main(filled) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{missing!r}: no such folder" in err
    assert not (tmp_path / "o").exists()
