"""Checks of a model or tokenizer reference before anything loads it.

`from_pretrained` reports a local folder that does not exist as a malformed hub repo id, and a
truncated `model.safetensors` as a deserialisation traceback in the middle of a run. These checks
read only file names and safetensors headers (a few KB; the folder check is `outputs`'), so
every command can afford them up front and say in one line what is wrong.
"""

from __future__ import annotations

import os
from pathlib import Path

from twinlm.errors import UserError
from twinlm.outputs import check_hf_folder


def looks_local(name: str) -> bool:
    """True where `name` can only be a path: a hub id is `repo` or `owner/repo`, never `./x`,
    `/x`, `~/x` or `a/b/c`, and `a/b` is a path when the folder `a` exists here."""
    if name.startswith((".", "/", "~")) or os.sep != "/" and os.sep in name:
        return True
    parts = name.split("/")
    return len(parts) > 2 or (len(parts) == 2 and Path(parts[0]).is_dir())


def check_model_source(name_or_path: str | Path, role: str = "model") -> None:
    """UserError if `name_or_path` names a local folder that is missing or is not a whole model
    folder (`outputs.check_hf_folder`: config.json, weights all there). A hub id passes."""
    name = str(name_or_path)
    path = Path(name).expanduser()
    if not path.exists():
        if looks_local(name):
            raise UserError(f"cannot load {role} {name!r}: no such folder")
        return
    if not path.is_dir():
        raise UserError(f"{role} {name!r} is a file; pass the model folder (with config.json) or a hub id")
    check_hf_folder(path)


def check_tokenizer_source(name_or_path: str | Path, role: str = "tokenizer") -> None:
    """UserError if `name_or_path` names a local tokenizer folder or file that does not exist."""
    name = str(name_or_path)
    if not Path(name).expanduser().exists() and looks_local(name):
        raise UserError(f"cannot load {role} {name!r}: no such folder or file")

