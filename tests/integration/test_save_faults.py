"""Faults while a checkpoint is written: SIGKILL at each moment of the write, then --resume, ends
at the uninterrupted run's weights (the half-written checkpoint never used); a full disk is a
one-line error that leaves the previous checkpoint whole, and the run resumes from it.

The kill moments come from the TWINLM_FAULT_AT test hook (train/save_faults.py): the process
kills itself at a named point of the save, so every moment is hit exactly, not by polling."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from twinlm.errors import UserError
from twinlm.recipe import load_recipe
from twinlm.train.checkpoints import COMPLETE_FILE, STAGING, checkpoints
from twinlm.train.pretrain import pretrain
from twinlm.train.save_faults import FAULT_ENV, SAVE_POINTS

# micro, shortened: 8 pretrain steps with checkpoints every 2, and 2 decay steps.
SHORT = ["phases.pretrain.tokens=4096", "phases.decay.tokens=2048", "training.save_every=2"]
ENV = {k: v for k, v in os.environ.items() if k != FAULT_ENV} | {"OMP_NUM_THREADS": "1",
                                                                  "TOKENIZERS_PARALLELISM": "false"}


def _cli(out: Path, *extra: str, sets=SHORT) -> list[str]:
    return [sys.executable, "-m", "twinlm.cli", "pretrain", "micro", "--twins", "decoder", "--out", str(out),
            *[a for s in sets for a in ("--set", s)], *extra]


def _run(out: Path, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**ENV, FAULT_ENV: fault} if fault else ENV
    return subprocess.run(_cli(out, *extra), env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted one-process, one-thread run of the decoder (the kill runs' ranks have one thread)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pretrain(load_recipe("micro", SHORT), out, twins=["decoder"])
    finally:
        torch.set_num_threads(threads)
    return out


def _assert_same_weights(out: Path, reference: Path) -> None:
    got, want = load_file(out / "decoder" / "model.safetensors"), load_file(reference / "decoder" / "model.safetensors")
    assert got.keys() == want.keys()
    worst = max((got[k] - want[k]).abs().max().item() for k in want)
    print(f"max abs weight difference to the uninterrupted run: {worst:g}")
    assert worst <= 1e-6, f"max abs weight difference {worst:g}"


def test_disk_full_while_saving_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    out, work = tmp_path / "run", tmp_path / "run" / "decoder" / "work" / "pretrain"
    monkeypatch.setenv(FAULT_ENV, "enospc:optimizer@4")  # the weights of checkpoint-4 are written, then ENOSPC
    with pytest.raises(UserError) as err:
        pretrain(load_recipe("micro", SHORT), out, twins=["decoder"])
    message = str(err.value)
    assert "\n" not in message
    assert "disk full while writing decoder pretrain checkpoint-4" in message and "checkpoint-2 is intact" in message
    assert [p.name for p in checkpoints(work)] == ["checkpoint-2"]
    assert not (work / STAGING / "checkpoint-4").exists(), "the partial write is removed (it holds space)"
    assert load_file(work / "checkpoint-2" / "model.safetensors"), "the previous checkpoint still loads"


@pytest.mark.slow
@pytest.mark.parametrize("point", SAVE_POINTS)
def test_sigkill_at_each_moment_of_a_checkpoint_write(reference, tmp_path, point):
    out, work = tmp_path / "run", tmp_path / "run" / "decoder" / "work" / "pretrain"
    killed = _run(out, fault=f"kill:{point}@4")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (work / "checkpoint-2" / COMPLETE_FILE).exists()
    whole = point == "renamed"  # only then is checkpoint-4 in place with its marker
    assert (work / "checkpoint-4" / COMPLETE_FILE).exists() == whole
    assert (work / STAGING / "checkpoint-4").exists() != whole, "killed inside the write: the staged folder is left"
    resumed = _run(out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"decoder pretrain: resuming at step {4 if whole else 2}/8" in resumed.stdout
    _assert_same_weights(out, reference)
    assert not list(out.rglob(STAGING)) and not (out / "decoder" / "work").exists(), "no leftovers"
    keys = [(r["phase"], r["step"]) for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]
    assert sorted(keys) == [("decay", 2), ("pretrain", 4), ("pretrain", 8)], "each logged step once"


def _can_mount_tmpfs(tmp_path: Path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    cmd = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {probe}"]
    try:
        return shutil.which("unshare") is not None and subprocess.run(cmd, capture_output=True).returncode == 0
    finally:
        probe.rmdir()


@pytest.mark.slow
def test_a_real_full_disk_then_resume_elsewhere(reference, tmp_path):
    """The run folder on a 2.2 MB tmpfs (a private mount namespace): checkpoint-2 (1.4 MB) fits,
    checkpoint-4 does not. The error is one line, checkpoint-2 is whole; copied to a disk with
    space, the run resumes from it to the uninterrupted run's weights."""
    if not _can_mount_tmpfs(tmp_path):
        pytest.skip("no unprivileged mount namespace here (unshare --user --mount)")
    disk, moved = tmp_path / "disk", tmp_path / "moved"
    disk.mkdir()
    sets = [*SHORT, f"data.cache_dir={tmp_path / 'data'}"]
    run = " ".join(f"'{a}'" for a in _cli(disk / "run", sets=sets))
    script = f"mount -t tmpfs -o size=2200k tmpfs {disk} && {{ {run}; echo rc=$?; cp -r {disk}/run {moved}; }}"
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script], env=ENV,
                          capture_output=True, text=True, timeout=900)
    assert "rc=2" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("twinlm pretrain: error:")]
    assert len(errors) == 1 and "disk full while writing decoder pretrain checkpoint-4" in errors[0], proc.stderr[-3000:]
    assert "checkpoint-2 is intact" in errors[0]
    work = moved / "decoder" / "work" / "pretrain"
    assert [p.name for p in checkpoints(work)] == ["checkpoint-2"]
    resumed = subprocess.run(_cli(moved, "--resume", sets=sets), env=ENV, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "decoder pretrain: resuming at step 2/8" in resumed.stdout
    _assert_same_weights(moved, reference)
