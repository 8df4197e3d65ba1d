"""Faults while a checkpoint is written: a full disk becomes a one-line error, and a test hook
kills the process (or fakes a full disk) at named moments of the write.

A save writes into a staging folder and renames it into place only when whole (see
`checkpoints`), so neither a kill nor a full disk can touch the previous checkpoint; what is
left is cleaning the staging folder and saying what happened in one line.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path

from twinlm.errors import UserError

FAULT_ENV = "TWINLM_FAULT_AT"  # tests only: "<kill|enospc>:<point>[@<step>]"
# The moments of an intermediate checkpoint's write, in order: after the weights, after the
# optimizer and schedule, after the trainer state (the staged folder is whole but unmarked),
# after the completion marker (not yet renamed), after the rename (before old ones are rotated).
SAVE_POINTS = ("model", "optimizer", "state", "marker", "renamed")
_FULL_MARKERS = ("No space left on device", "StorageFull", "Disk quota exceeded")


def fault_point(point: str, step: int) -> None:
    """With TWINLM_FAULT_AT naming this point (and step), SIGKILL this process or raise ENOSPC."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    action, _, where = spec.partition(":")
    name, _, at = where.partition("@")
    if name != point or (at and int(at) != step):
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), point)
    else:
        raise ValueError(f"{FAULT_ENV}: unknown action {action!r} (kill or enospc)")


def is_disk_full(err: BaseException, folder: Path) -> bool:
    """ENOSPC / EDQUOT, also when a writer wraps it: safetensors names it, torch.save's zip writer
    does not ("file write failed", "unexpected pos ..."), so a folder left with next to no free
    space after the failed write decides."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if any(marker in str(err) for marker in _FULL_MARKERS):
        return True
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free < 1 << 20
    except OSError:
        return False


@contextmanager
def disk_full_is_an_error(what: str, staged: Path, intact: str):
    """Around a staged write: if the disk fills up, remove `staged` (the partial write) and raise
    a one-line UserError naming `what`, the folder, and what is still `intact`."""
    try:
        yield
    except Exception as err:
        if not is_disk_full(err, staged):
            raise
        shutil.rmtree(staged, ignore_errors=True)
        raise UserError(
            f"disk full while writing {what} to {staged.parent} (no space left on device); the partial write "
            f"was removed and {intact}; free space, then run the same command with --resume"
        ) from err
