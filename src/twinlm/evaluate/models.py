"""What `twinlm eval MODEL` can point at: a twinlm run folder (both twins), a single Hugging Face
checkpoint folder, or a hub id; each resolved into named models labelled encoder or decoder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from twinlm.errors import UserError

TWINS = ("encoder", "decoder")


@dataclass(frozen=True)
class ModelRef:
    name: str  # the label in tables and charts
    architecture: str  # "encoder" | "decoder"
    path: str  # local folder or hub id
    run: str | None = None  # the run folder it came from (its metrics.jsonl has the curves)
    # Masked-LM scoring reads the prediction for the token at position i from the logits at
    # i + prediction_offset: 0 for a native encoder, -1 for one converted with MNTP.
    prediction_offset: int = 0


def architecture_of(config: dict, where: str) -> str:
    """encoder or decoder, from a config.json: a causal-LM head (or is_decoder) means decoder,
    unless the model was made bidirectional (is_causal false), which scores like an encoder."""
    archs = config.get("architectures") or []
    causal = any(a.endswith("ForCausalLM") for a in archs) or bool(config.get("is_decoder"))
    if config.get("is_causal") is False:
        causal = False
    if not archs and not config.get("model_type"):
        raise UserError(f"{where}/config.json names neither architectures nor model_type; is it a Hugging Face model?")
    return "decoder" if causal else "encoder"


def prediction_offset(folder: Path) -> int:
    """The `prediction_offset` a `twinlm convert` folder declares in its conversion.json (-1 for
    an encoder trained with MNTP: the token at a masked position i is predicted by the logits at
    i - 1); 0 for any other model."""
    from twinlm.convert.cross import CONVERSION_FILE

    path = folder / CONVERSION_FILE
    if not path.is_file():
        return 0
    try:
        offset = json.loads(path.read_text()).get("prediction_offset", 0)
    except (json.JSONDecodeError, AttributeError):
        raise UserError(f"{path} is not a twinlm conversion.json (not a JSON object)") from None
    if offset not in (0, -1) or isinstance(offset, bool):
        raise UserError(f"{path}: prediction_offset must be 0 or -1, got {offset!r}")
    return offset


def _local_ref(folder: Path, name: str, run: str | None = None) -> ModelRef:
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise UserError(f"{folder} is not a Hugging Face model folder (no config.json)")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{cfg_path} is not valid JSON ({err.msg})") from None
    if not any((folder / f).is_file() for f in ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")):
        raise UserError(f"{folder} has a config.json but no weights (model.safetensors)")
    architecture = architecture_of(config, str(folder))
    offset = prediction_offset(folder) if architecture == "encoder" else 0
    return ModelRef(name, architecture, str(folder), run, offset)


def is_run_folder(path: Path) -> bool:
    return path.is_dir() and not (path / "config.json").exists() and any((path / t / "config.json").is_file() for t in TWINS)


def resolve(spec: str) -> tuple[list[ModelRef], list[str]]:
    """(models, missing): `missing` names the twins a run folder lacks. `spec` may be prefixed
    `NAME=` to choose the label of a single model."""
    name = None
    if "=" in spec and not Path(spec).exists():
        name, spec = spec.split("=", 1)
    path = Path(spec)
    if path.is_dir():
        if is_run_folder(path):
            refs = [_local_ref(path / t, f"{name or path.name}/{t}", str(path)) for t in TWINS if (path / t / "config.json").is_file()]
            missing = [f"{name or path.name}/{t}" for t in TWINS if not (path / t / "config.json").is_file()]
            return refs, missing
        run = str(path.parent) if (path.parent / "metrics.jsonl").is_file() else None
        label = name or (f"{path.parent.name}/{path.name}" if run else path.name)
        return [_local_ref(path, label, run)], []
    if path.exists():
        raise UserError(f"{spec} is a file, not a model folder, run folder or hub id")
    if spec.count("/") != 1 or spec.startswith((".", "/")):
        raise UserError(f"{spec} does not exist, and is not a hub id of the form owner/name")
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(spec).to_dict()
    except Exception as err:  # offline, private or misspelt: all the user's to fix
        raise UserError(f"cannot load hub model {spec!r}: {str(err).splitlines()[0]}") from None
    return [ModelRef(name or spec, architecture_of(config, spec), spec)], []


def load_scoring_model(ref: ModelRef):
    """(model, tokenizer) for log-likelihood scoring, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    cls = AutoModelForCausalLM if ref.architecture == "decoder" else AutoModelForMaskedLM
    tok = AutoTokenizer.from_pretrained(ref.path)
    return cls.from_pretrained(ref.path).eval(), tok


def world_for(ref: ModelRef):
    """The built-in world a twinlm model was trained on (its twinlm.yaml), else the default one
    (the nano recipe's), for models trained elsewhere."""
    from twinlm.data.corpus import world_of
    from twinlm.recipe import load_recipe

    local = Path(ref.path) / "twinlm.yaml"
    return world_of(load_recipe(str(local) if local.is_file() else "nano"))
