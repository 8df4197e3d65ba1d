"""Two CPU processes with torchrun (gloo): ranks see different data (the full run is in test_crash_resume.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch


def _torchrun() -> list[str]:
    with socket.socket() as sock:  # a free port: other test runs may share the machine
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_ranks_see_different_blocks(tmp_path):
    script = Path(__file__).with_name("ddp_first_batches.py")
    proc = subprocess.run([*_torchrun(), str(script), str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert a.shape == b.shape
    assert not torch.equal(a, b)


# A full two-process pretraining run (one copy of each checkpoint, rank 0 alone logging, no
# leftovers) is tests/test_crash_resume.py, which also kills and resumes it.
