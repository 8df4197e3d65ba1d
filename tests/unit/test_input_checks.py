"""Bad input found before any work, each as a one-line error: a truncated or corrupt weights file,
a local model or tokenizer path that does not exist, SFT rows whose messages are not turns."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset
from safetensors.torch import save_file

from twinlm.align.data import check_sft_rows
from twinlm.errors import UserError
from twinlm.model_files import check_model_source, check_tokenizer_source
from twinlm.outputs import check_safetensors


@pytest.fixture
def model_dir(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    save_file({"w": torch.zeros(64, 64), "b": torch.ones(64)}, folder / "model.safetensors")
    return folder


def test_complete_weights_pass_and_truncated_or_corrupt_ones_are_named(model_dir):
    weights = model_dir / "model.safetensors"
    check_model_source(model_dir)
    full = weights.read_bytes()
    weights.write_bytes(full[: len(full) // 2])
    with pytest.raises(UserError, match=rf"{weights} is truncated \({len(full) // 2:,} of {len(full):,} bytes\)"):
        check_model_source(model_dir)
    weights.write_bytes(b"\xff" * 64)
    with pytest.raises(UserError, match="not a whole safetensors file"):
        check_safetensors(weights)


@pytest.mark.parametrize("name", ["./nope", "/no/such/model", "~/no-such-model-here", "a/b/c"])
def test_a_missing_local_path_is_named_as_such_not_as_a_bad_hub_id(name):
    with pytest.raises(UserError, match=r"no such folder"):
        check_model_source(name)
    with pytest.raises(UserError, match=r"tokenizer .* no such folder or file"):
        check_tokenizer_source(name)


def test_owner_name_is_a_hub_id_unless_owner_is_a_local_folder(tmp_path, monkeypatch, model_dir):
    monkeypatch.chdir(tmp_path)
    check_model_source("jhu-clsp/ettin-encoder-17m")  # left to the hub
    with pytest.raises(UserError, match="'model/missing': no such folder"):
        check_model_source("model/missing")
    with pytest.raises(UserError, match="not a model folder"):
        check_model_source(tmp_path)


@pytest.mark.parametrize("messages", ["hello", [], [{"role": "user"}], ["hi", "there"], [{"content": "x"}]])
def test_sft_rows_whose_messages_are_not_turns_are_refused(messages):
    with pytest.raises(UserError, match=r"SFT data: row 0: 'messages' must be a list of turns"):
        check_sft_rows(Dataset.from_list([{"messages": messages}]))


def test_the_first_bad_row_is_named():
    good = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert check_sft_rows(Dataset.from_list([{"messages": good}])) == "conversational"
    with pytest.raises(UserError, match=r"row 1: 'messages'"):
        check_sft_rows(Dataset.from_list([{"messages": good}, {"messages": [{"role": "user"}]}]))
