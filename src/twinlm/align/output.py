"""Output folders of the alignment commands: never clobber earlier results silently."""

from __future__ import annotations

import shutil
from pathlib import Path

from twinlm.errors import UserError


def prepare_out(out: str | Path, overwrite: bool = False, resume: bool = False) -> Path:
    """Check `out` before any work: it must be new or empty, unless --overwrite (wipe) or --resume (keep)."""
    out = Path(out)
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other; pick one")
    if resume:
        if not (out / "checkpoints").is_dir():
            raise UserError(f"--resume: nothing to resume in {out} (no checkpoints/); start without --resume")
        return out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise UserError(f"output folder {out} exists; pass --overwrite to replace it or --resume to continue it")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out
