"""What `twinlm eval MODEL` can point at: a twinlm run folder (both twins), a single Hugging Face
checkpoint folder, or a hub id; each resolved into named models labelled encoder or decoder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from twinlm.convert import CONVERSION_FILE, LLM2VEC_FILE
from twinlm.data.corpus import world_of
from twinlm.errors import UserError
from twinlm.outputs import check_safetensors
from twinlm.recipe import load_recipe

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


# Tasks scored from an LM head's predictions (masked or next-token log-likelihoods).
LM_HEAD_TASKS = ("intrinsic", "choice", "bias")
_LM_HEADS = ("ForMaskedLM", "ForCausalLM", "ForPreTraining", "ForConditionalGeneration")


def embedding_only(folder: Path) -> str | None:
    """What a sentence-transformers folder without an LM head is, in words ("a sentence-transformers
    embedding model (LLM2Vec)"); None for any other folder. Such a folder holds the bare body
    (e.g. ModernBertModel): its embeddings can be fine-tuned and scored, its token predictions
    cannot (a masked-LM or causal-LM class would load with a randomly initialised head)."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None  # resolve() reports what is wrong with it
    try:
        kind = json.loads((folder / LLM2VEC_FILE).read_text()).get("kind")
    except (OSError, json.JSONDecodeError, AttributeError):
        kind = None
    archs = config.get("architectures") or []
    headless = not any(a.endswith(_LM_HEADS) or "LMHead" in a for a in archs)
    if kind == "llm2vec":
        return "a sentence-transformers embedding model (LLM2Vec)"
    if (folder / "modules.json").is_file() and headless:
        return "a sentence-transformers model"
    return None


def unscorable_tasks(folder: Path, tasks: list[str]) -> dict[str, str]:
    """{task: why} for the tasks in `tasks` that an `embedding_only` folder cannot be scored on
    ({} for any other folder): the LM-head tasks, and classification when the body is a decoder
    made bidirectional (its classification class takes no encoder pooling)."""
    if not embedding_only(folder):
        return {}
    config = json.loads((Path(folder) / "config.json").read_text())
    why = {t: "scored from an LM head's predictions" for t in tasks if t in LM_HEAD_TASKS}
    if "classification" in tasks and config.get("is_causal") is False:
        why["classification"] = f"twinlm's encoder classification head does not fit its {config.get('model_type')} body"
    return why


def model_folder(spec: str) -> Path | None:
    """The local model folder a `twinlm eval`/`compare` input names (NAME= prefix allowed), if any."""
    if "=" in spec and not Path(spec).exists():
        spec = spec.split("=", 1)[1]
    path = Path(spec)
    return path if (path / "config.json").is_file() else None


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
    for file in sorted(folder.glob("*.safetensors")):
        check_safetensors(file)
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
    """The built-in world a twinlm model was trained on (its twinlm.yaml, or for an LLM2Vec folder
    that of its source decoder, named in llm2vec.json), else the default one (the nano recipe's),
    for models trained elsewhere."""
    local = Path(ref.path) / "twinlm.yaml"
    if not local.is_file():  # an LLM2Vec folder: the world of the decoder it was made from
        try:
            source = json.loads((Path(ref.path) / LLM2VEC_FILE).read_text()).get("source")
            local = Path(source) / "twinlm.yaml" if isinstance(source, str) else local
        except (OSError, json.JSONDecodeError, AttributeError):
            pass
    return world_of(load_recipe(str(local) if local.is_file() else "nano"))
