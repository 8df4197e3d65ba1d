"""Resume on another number of processes: a run killed on 2 processes continues on 1 (and one
killed on 1 continues on 2) to the weights of the uninterrupted run, with the same samples in the
same steps and the same losses (from metrics.jsonl).

Attention dropout is switched on (0.1) so that the dropout draws are checked too: they are keyed
by (seed, first sample of the micro-batch), not by rank. The global batch 8 at micro-batch 4 runs
as 2 accumulation steps on one process and 1 on two."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from twinlm.recipe import load_recipe
from twinlm.train.pretrain import pretrain

# micro, shortened: 8 pretrain steps (checkpoints every 2) and 2 decay steps; every step logged.
SHORT = ["phases.pretrain.tokens=4096", "phases.decay.tokens=2048", "training.save_every=2",
         "training.log_every=1", "model.attention_dropout=0.1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(out: Path, twin: str, processes: int, *extra: str, kill_at: str | None = None,
         sets: list[str] = SHORT) -> subprocess.CompletedProcess:
    launch = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port",
               str(_free_port())] if processes > 1 else [sys.executable])
    cmd = [*launch, "-m", "twinlm.cli", "pretrain", "micro", "--twins", twin, "--out", str(out),
           *[a for s in sets for a in ("--set", s)], *extra]
    env = {**ENV, "TWINLM_FAULT_AT": f"kill:{kill_at}"} if kill_at else ENV
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


def _records(out: Path, twin: str) -> dict:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {(r["phase"], r["step"]): r for r in rows if r["twin"] == twin}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """reference(twin, sets): an uninterrupted one-process run of that twin (made once)."""
    root, done = tmp_path_factory.mktemp("reference"), {}

    def run(twin: str, sets: list[str] = SHORT) -> Path:
        key = (twin, *sets)
        if key not in done:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # as each torchrun rank (OMP_NUM_THREADS=1)
            try:
                pretrain(load_recipe("micro", sets), root / str(len(done)), twins=[twin])
            finally:
                torch.set_num_threads(threads)
            done[key] = root / str(len(done))
        return done[key]

    return run


def _assert_same_run(out: Path, reference: Path, twin: str) -> None:
    got, want = load_file(out / twin / "model.safetensors"), load_file(reference / twin / "model.safetensors")
    assert got.keys() == want.keys()
    worst = max((got[k] - want[k]).abs().max().item() for k in want)
    print(f"max abs weight difference to the uninterrupted run: {worst:g}")
    assert worst <= 1e-5, f"{twin}: max abs weight difference {worst:g}"
    mine, theirs = _records(out, twin), _records(reference, twin)
    assert mine.keys() == theirs.keys() and len(mine) == 10, "every step logged once, none twice"
    for key, ref in theirs.items():
        row = mine[key]
        assert (row["first_sample"], row["batch"], row["tokens"]) == (ref["first_sample"], ref["batch"], ref["tokens"])
        assert row["loss"] == pytest.approx(ref["loss"], rel=1e-5, abs=1e-6), f"{key}: loss {row['loss']} vs {ref['loss']}"


@pytest.mark.slow
@pytest.mark.parametrize(("twin", "before", "after"), [("encoder", 2, 1), ("decoder", 1, 2)])
def test_killed_run_resumes_on_another_process_count(reference, tmp_path, twin, before, after):
    out = tmp_path / "run"
    # SIGKILL right after checkpoint-4 is in place (TWINLM_FAULT_AT), mid-phase.
    killed = _run(out, twin, before, kill_at="renamed@4")
    assert killed.returncode != 0, killed.stdout[-2000:]
    assert not (out / twin / "phases" / "pretrain" / "phase.json").exists(), "killed mid-phase"
    resumed = _run(out, twin, after, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    plural = "es" if after > 1 else ""
    assert (f"{twin} pretrain: resuming at step 4/8, sample 32, on {after} process{plural} (saved on {before}): "
            f"global batch 8 = micro-batch 4 x {2 // after} accumulation x {after}") in resumed.stdout
    _assert_same_run(out, reference(twin), twin)


@pytest.mark.slow
def test_resume_with_another_micro_batch(reference, tmp_path):
    """Killed on 2 processes at micro-batch 4 (1 accumulation step), resumed on 1 at micro-batch 2
    (4 accumulation steps): the same steps, summed in another order. Without dropout: its draws
    are keyed by micro-batch, and the micro-batches are other groups of samples now."""
    sets = [s for s in SHORT if not s.startswith("model.attention_dropout")]
    out = tmp_path / "run"
    assert _run(out, "decoder", 2, kill_at="renamed@4", sets=sets).returncode != 0
    resumed = _run(out, "decoder", 1, "--resume", sets=[*sets, "training.micro_batch=2"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "global batch 8 = micro-batch 2 x 4 accumulation x 1" in resumed.stdout
    _assert_same_run(out, reference("decoder", sets), "decoder")


@pytest.mark.slow
def test_resume_on_a_count_the_batch_does_not_split_over_is_refused(tmp_path):
    out = tmp_path / "run"
    (out).mkdir()
    load_recipe("micro", SHORT).dump(out / "twinlm.yaml")
    proc = _run(out, "decoder", 3, "--resume")
    assert proc.returncode != 0
    err = [line for line in proc.stderr.splitlines() if "twinlm pretrain: error" in line]
    assert err and "--resume on 3 processes" in err[0] and "resumes on 2 processes, or on 4 with --set training.micro_batch=auto" in err[0], proc.stderr[-2000:]
