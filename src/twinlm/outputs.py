"""The one owner of run folders: every command that writes results goes through here.

- `check_out` says, before any expensive work, whether a command may write to its output folder
  (`--overwrite` replaces earlier results, `--resume` continues them, and the two contradict);
  `claim` then clears the folder for a run that replaces it.
- Results appear whole or not at all: a command writes into `staging(target)`, a sibling named
  `.<name>.partial`, and `publish` renames it into place (or `publish_into` moves its items into
  a folder that also holds other things). A killed run leaves only a `.partial` folder, which the
  next run's `staging` removes.
- `write_json` is the one atomic JSON writer (same scheme: a `.partial` file, then a rename).
- `check_hf_folder` tells a whole Hugging Face model folder from one a killed copy or save left
  incomplete (no config, missing shards, a truncated safetensors file).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

from twinlm.errors import UserError

PARTIAL = ".partial"


def check_out(out: str | Path, overwrite: bool = False, resume: bool = False, resume_needs: str | None = None,
              ignore: tuple[str, ...] = ()) -> Path:
    """Whether `out` may be written, checked once for every command (UserError if not); writes nothing.

    Without --resume the folder must be new or empty unless --overwrite; with --resume it must
    hold `resume_needs` (the file or folder a run writes first). A command that cannot resume
    passes `resume_needs=None` and its message does not offer --resume. Entries named in `ignore`
    (a lock file, say) do not make a folder hold results."""
    out = Path(out)
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other; pick one")
    if resume:
        if resume_needs and not (out / resume_needs).exists():
            raise UserError(f"--resume: nothing to resume in {out} (no {resume_needs}); start without --resume")
        return out
    if has_content(out, ignore) and not overwrite:
        what = "pass --resume to continue it or --overwrite to replace it" if resume_needs else \
            "pass --overwrite to replace it"
        raise UserError(f"output folder {out} exists; {what}, or choose another --out")
    return out


def claim(out: str | Path, overwrite: bool = False, resume: bool = False, resume_needs: str | None = None,
          main_process: bool = True) -> Path:
    """`check_out`, then clear an existing `out` that --overwrite replaces (by the main process
    only, where several share the folder). For commands that write straight into `out`; those that
    stage their whole output keep the old folder until `publish`."""
    out = check_out(out, overwrite, resume, resume_needs)
    if not resume and overwrite and main_process:
        remove(out)
    return out


def has_content(path: Path, ignore: tuple[str, ...] = ()) -> bool:
    return path.is_file() or (path.is_dir() and any(e.name not in ignore for e in path.iterdir()))


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def empty(folder: Path, keep: tuple[str, ...] = ()) -> None:
    """Remove everything in `folder` but the entries named in `keep` (a lock held on it, say)."""
    for entry in folder.iterdir():
        if entry.name not in keep:
            remove(entry)


def staging_path(target: str | Path) -> Path:
    target = Path(target)
    return target.with_name(f".{target.name}{PARTIAL}")


def staging(target: str | Path) -> Path:
    """A fresh, empty folder to write `target` into; what a killed earlier run left there is removed."""
    tmp = staging_path(target)
    remove(tmp)
    tmp.mkdir(parents=True)
    return tmp


def publish(staged: Path, target: str | Path) -> Path:
    """Put a finished staging folder in place of `target` (replaced only now that the new one is whole)."""
    target = Path(target)
    remove(target)
    os.replace(staged, target)
    return target


def publish_into(staged: Path, target: str | Path) -> Path:
    """Move every item of a finished staging folder into `target`, which keeps its other contents
    (a run folder that also holds checkpoints, logs, data). Each item's move is atomic."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for item in staged.iterdir():
        dest = target / item.name
        if dest.is_dir() and not item.is_dir():
            shutil.rmtree(dest)
        elif item.is_dir() and dest.exists():
            remove(dest)  # os.replace cannot replace a non-empty folder
        os.replace(item, dest)
    staged.rmdir()
    return target


def write_json(path: str | Path, data, indent: int | None = 1, default=None) -> Path:
    """Write `data` as JSON so that readers see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=indent, default=default) + "\n"  # fails before any file is touched
    tmp = staging_path(path)
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


WEIGHTS = ("model.safetensors", "pytorch_model.bin")
INDEX = "model.safetensors.index.json"


def check_hf_folder(path: str | Path) -> Path:
    """A loadable Hugging Face model folder: config.json, and weights that are all there (every
    shard an index names; every safetensors file as long as its header says). UserError naming
    what is missing or cut short, so a half-copied or killed save fails in one line, not deep
    inside a loader."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise UserError(f"{path} is not a model folder (no config.json)")
    if (path / INDEX).is_file():
        try:
            shards = sorted(set(json.loads((path / INDEX).read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{path / INDEX} is not a safetensors index (unreadable weight_map)") from None
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            raise UserError(f"{path} is incomplete: weight shards missing: {', '.join(missing)}")
        files = [path / s for s in shards]
    else:
        files = [path / w for w in WEIGHTS if (path / w).is_file()]
        if not files:
            raise UserError(f"{path} has no weights ({' or '.join(WEIGHTS)} or {INDEX})")
    for file in files:
        if file.suffix == ".safetensors":
            check_safetensors(file)
    return path


def check_safetensors(file: Path) -> None:
    """The file is as long as its header says (a safetensors file is an 8-byte header length,
    a JSON header of tensor offsets, then the data)."""
    size = file.stat().st_size
    with file.open("rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        header = f.read(n) if 0 < n <= size - 8 else b""
    try:
        tensors = json.loads(header)
        end = max((v["data_offsets"][1] for k, v in tensors.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError):
        raise UserError(f"{file} is not a whole safetensors file (unreadable header); copy or save it again") from None
    if 8 + n + end > size:
        raise UserError(f"{file} is truncated ({size:,} of {8 + n + end:,} bytes); copy or save it again")
