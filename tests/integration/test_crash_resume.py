"""Crash safety: a two-process CPU run (torchrun, gloo) killed with SIGKILL mid-phase resumes
with --resume to the same final weights as an uninterrupted run.

The reference is an uninterrupted one-process run: the batch of every step, its split into
micro-batches and so its masks do not depend on the number of processes, and with two processes
the all-reduced gradient is bitwise the one-process sum, so the weights must agree to 1e-6."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from twinlm.recipe import load_recipe
from twinlm.train.checkpoints import COMPLETE_FILE, STAGING
from twinlm.train.pretrain import pretrain

# micro, shortened: 8 pretrain steps (checkpoints every 2) and 2 decay steps.
SHORT = ["phases.pretrain.tokens=4096", "phases.decay.tokens=2048", "training.save_every=2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(out: Path, twins: str, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), "-m", "twinlm.cli", "pretrain", "micro", "--twins", twins, "--out", str(out),
           *[a for s in SHORT for a in ("--set", s)], *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    # Its own session, so the kill reaches torchrun and both workers at once, like a lost node.
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before the kill point:\n{proc.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("the kill point never came")
        time.sleep(0.001)  # a micro checkpoint's staging folder exists for a few milliseconds
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _finish(proc: subprocess.Popen) -> str:
    output, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, output[-3000:]
    return output


def _checkpoint(out: Path, twin: str, phase: str, step: int):
    return lambda: (out / twin / "work" / phase / f"checkpoint-{step}" / COMPLETE_FILE).exists()


def _assert_same_weights(out: Path, reference: Path, twin: str) -> None:
    got, want = load_file(out / twin / "model.safetensors"), load_file(reference / twin / "model.safetensors")
    assert got.keys() == want.keys()
    worst = max((got[k] - want[k]).abs().max().item() for k in want)
    assert worst <= 1e-6, f"{twin}: max abs difference {worst:g}"


def _assert_clean(out: Path) -> None:
    assert not list(out.rglob(STAGING)) and not list(out.rglob("*.tmp")) and not list(out.rglob("*.partial")), "no leftovers of the killed saves"
    for twin_dir in out.glob("*/work"):
        pytest.fail(f"{twin_dir} should be gone once its phases are done")
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["twin"], r["phase"], r["step"]) for r in records]
    assert len(keys) == len(set(keys)), "no duplicate log lines after the resume"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """reference(twin): the folder of an uninterrupted one-process run of that twin (made once)."""
    root, done = tmp_path_factory.mktemp("reference"), {}

    def run(twin: str) -> Path:
        if twin not in done:
            # One thread, as each torchrun rank has (OMP_NUM_THREADS=1): the encoder's kernels
            # reduce in a thread-count-dependent order, so two threads here differ in the last bits.
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                pretrain(load_recipe("micro", SHORT), root / twin, twins=[twin])
            finally:
                torch.set_num_threads(threads)
            done[twin] = root / twin
        return done[twin]

    return run


def test_sigkill_mid_phase_then_resume_gives_the_same_weights(reference, tmp_path):
    out = tmp_path / "run"
    _kill_when(_torchrun(out, "decoder"), _checkpoint(out, "decoder", "pretrain", 4))
    assert not (out / "decoder" / "phases" / "pretrain" / "phase.json").exists(), "killed mid-phase"
    output = _finish(_torchrun(out, "decoder", "--resume"))
    assert "decoder decay: done" in output
    _assert_same_weights(out, reference("decoder"), "decoder")
    _assert_clean(out)


@pytest.mark.slow
@pytest.mark.parametrize("twin", ["encoder", "decoder"])
def test_sigkill_at_several_moments(reference, tmp_path, twin):
    """Killed while a checkpoint is being written, right after one, between phases and in the
    second phase, each time resumed by a new torchrun; the end is the uninterrupted run's."""
    out = tmp_path / "run"
    staging = out / twin / "work" / "pretrain" / STAGING
    moments = [
        lambda: staging.exists(),  # inside a save: a half-written checkpoint must never be picked
        _checkpoint(out, twin, "pretrain", 6),
        lambda: (out / twin / "phases" / "pretrain" / "phase.json").exists(),  # the phase's save, evaluation
        _checkpoint(out, twin, "decay", 2),  # trained to the end, not yet saved
    ]
    for i, ready in enumerate(moments):
        _kill_when(_torchrun(out, twin, *(["--resume"] if i else [])), ready)
    _finish(_torchrun(out, twin, "--resume"))
    _assert_same_weights(out, reference(twin), twin)
    _assert_clean(out)


@pytest.mark.slow
def test_one_and_two_processes_train_the_same_weights(reference, tmp_path):
    """Any cluster size: the same recipe on two processes ends bit for bit where one process does."""
    out = tmp_path / "run"
    _finish(_torchrun(out, "encoder"))
    got = load_file(out / "encoder" / "model.safetensors")
    want = load_file(reference("encoder") / "encoder" / "model.safetensors")
    assert all(torch.equal(got[k], want[k]) for k in want)
