"""twinlm.outputs: the one policy for run folders (--overwrite / --resume, staging, atomic JSON,
whole HF folders)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from twinlm.errors import UserError
from twinlm.outputs import (
    check_hf_folder,
    check_out,
    claim,
    publish,
    publish_into,
    staging,
    staging_path,
    write_json,
)


def test_new_or_empty_folder_is_free_and_nothing_is_written(tmp_path):
    assert check_out(tmp_path / "new") == tmp_path / "new"
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    check_out(tmp_path / "empty")


def test_earlier_results_need_overwrite(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="--overwrite") as err:
        check_out(out)
    assert "--resume" not in str(err.value)  # a command that cannot resume does not offer it
    with pytest.raises(UserError, match="--resume to continue"):
        check_out(out, resume_needs="twinlm.yaml")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="--overwrite"):
        check_out(tmp_path / "file")
    assert (out / "keep.txt").read_text() == "x"


def test_resume_and_overwrite_contradict(tmp_path):
    with pytest.raises(UserError, match="contradict"):
        check_out(tmp_path, overwrite=True, resume=True, resume_needs="twinlm.yaml")


def test_resume_needs_what_a_run_writes_first(tmp_path):
    with pytest.raises(UserError, match=r"nothing to resume .*no checkpoints"):
        check_out(tmp_path, resume=True, resume_needs="checkpoints")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "other").write_text("kept")
    assert claim(tmp_path, resume=True, resume_needs="checkpoints") == tmp_path
    assert (tmp_path / "other").exists()  # resuming keeps everything


def test_claim_clears_only_with_overwrite_and_only_on_the_main_process(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("x")
    claim(out, overwrite=True, main_process=False)
    assert (out / "old.txt").exists()
    claim(out, overwrite=True)
    assert not out.exists()


def test_staging_replaces_a_killed_runs_leftovers_and_publish_swaps_in_the_whole_folder(tmp_path):
    out = tmp_path / "result"
    out.mkdir()
    (out / "old.txt").write_text("old")
    leftover = staging_path(out)
    leftover.mkdir()
    (leftover / "half.bin").write_text("half")
    tmp = staging(out)
    assert tmp == tmp_path / ".result.partial" and not any(tmp.iterdir())
    (tmp / "new.txt").write_text("new")
    assert (out / "old.txt").exists()  # the old result stays until the new one is whole
    publish(tmp, out)
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"]


def test_publish_into_keeps_the_folders_other_contents(tmp_path):
    out = tmp_path / "twin"
    (out / "phases").mkdir(parents=True)
    (out / "config.json").write_text("old")
    (out / "sub").mkdir()
    (out / "sub" / "stale").write_text("old")
    tmp = staging(out)
    (tmp / "config.json").write_text("new")
    (tmp / "sub").mkdir()
    (tmp / "sub" / "fresh").write_text("new")
    publish_into(tmp, out)
    assert (out / "config.json").read_text() == "new" and (out / "phases").is_dir()
    assert [p.name for p in (out / "sub").iterdir()] == ["fresh"]
    assert not tmp.exists()


def test_write_json_is_whole_or_old(tmp_path):
    path = write_json(tmp_path / "deep" / "r.json", {"a": 1.5, "nan": float("nan")})
    assert json.loads(path.read_text())["a"] == 1.5
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert json.loads(path.read_text())["a"] == 1.5  # a failed write leaves the old file
    write_json(path, {"p": tmp_path}, default=str)
    assert json.loads(path.read_text()) == {"p": str(tmp_path)}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def _model_folder(path, shards: int = 1):
    path.mkdir()
    (path / "config.json").write_text("{}")
    tensors = {f"w{i}": torch.ones(64, 64) for i in range(shards)}
    if shards == 1:
        save_file(tensors, str(path / "model.safetensors"))
        return path
    weight_map = {}
    for i, (name, tensor) in enumerate(tensors.items()):
        shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({name: tensor}, str(path / shard))
        weight_map[name] = shard
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return path


def test_whole_hf_folder_passes(tmp_path):
    assert check_hf_folder(_model_folder(tmp_path / "m")) == tmp_path / "m"
    check_hf_folder(_model_folder(tmp_path / "sharded", shards=2))


def test_truncated_weights_are_named(tmp_path):
    folder = _model_folder(tmp_path / "m")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(UserError, match=r"model\.safetensors is truncated"):
        check_hf_folder(folder)
    weights.write_bytes(b"\x07")
    with pytest.raises(UserError, match="not a whole safetensors file"):
        check_hf_folder(folder)


def test_missing_parts_are_named(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        check_hf_folder(tmp_path)
    folder = _model_folder(tmp_path / "sharded", shards=2)
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(UserError, match="model-00002-of-00002.safetensors"):
        check_hf_folder(folder)
    (folder / "model.safetensors.index.json").unlink()
    with pytest.raises(UserError, match="has no weights"):
        check_hf_folder(folder)
