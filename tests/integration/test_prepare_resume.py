"""An interrupted `twinlm prepare` (SIGKILL, in a subprocess) never looks complete and, run again,
continues where it stopped: finished units are kept as they are, the result equals an
uninterrupted prepare."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import twinlm
from twinlm.cli import main
from twinlm.data.prepare.format import is_prepared
from twinlm.data.tokenizer import train_tokenizer
from unit.test_prepare import WORDS, flat


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_sigkill_mid_prepare_then_resume(tmp_path, capsys):
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) for _ in range(3000)]
    train_tokenizer(texts[:300], vocab_size=300, min_frequency=1).save_pretrained(tmp_path / "tok")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = tmp_path / "P"
    args = ["prepare", str(corpus), "--tokenizer", str(tmp_path / "tok"), "--out", str(out),
            "--unit-bytes", "6000", "--workers", "2", "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(Path(twinlm.__file__).parents[1]), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "twinlm.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    progress = out / ".progress"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if progress.is_dir() and len(list(progress.glob("unit-*.json"))) >= 5:
            break
        time.sleep(0.002)
    workers = _children(proc.pid)
    assert proc.poll() is None, f"prepare ended before it could be interrupted: {proc.stderr.read()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    gone = time.time() + 10  # the orphaned workers notice their parent is gone and exit
    while any(_alive(w) for w in workers) and time.time() < gone:
        time.sleep(0.05)
    assert workers and not any(_alive(w) for w in workers)
    meta = json.loads((out / "prepare.json").read_text())
    total = meta["source"]["units"]
    done = sorted(progress.glob("unit-*.json"))
    assert not meta["complete"] and not is_prepared(out) and not (out / "train" / "index.json").exists()
    assert 5 <= len(done) < total
    kept = {f.stat().st_ino for f in (out / ".units").glob("u*/shard-*.bin")
            if (progress / f"unit-{f.parent.name[1:]}.json").exists()}

    code = main(args)  # resume
    err = capsys.readouterr().err
    assert code == 0, err
    resumed = re.search(r"resuming .*: (\d+) of (\d+) units already done", err)
    assert resumed and len(done) <= int(resumed[1]) < total == int(resumed[2])
    assert is_prepared(out)
    # The units finished before the kill were moved into the store, not tokenized again.
    assert kept <= {f.stat().st_ino for f in (out / "train").glob("shard-*.bin")}
    fresh = tmp_path / "fresh"
    assert main([*args[:5], str(fresh), *args[6:-3], "--workers", "1", "--no-progress"]) == 0
    for split in ("train", "heldout"):
        a, b = flat(out / split), flat(fresh / split)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
