"""A twin's weights as a plain Hugging Face folder: what pretraining, its checkpoints and the
cross-objective conversion save, so that `from_pretrained` / `pipeline` load it without twinlm."""

from __future__ import annotations

import json
from pathlib import Path

from twinlm.data.tokenizer import for_twin


def save_twin_folder(model, tokenizer, twin: str, path: Path) -> None:
    """Weights with the sparse MLM head switched off, and the twin's tokenizer."""
    sparse = getattr(model.config, "sparse_prediction", None)
    if sparse is not None:
        model.config.sparse_prediction = False
    model.save_pretrained(path)
    if sparse is not None:
        model.config.sparse_prediction = sparse
    complete_twin_folder(model, tokenizer, twin, path)


def complete_twin_folder(model, tokenizer, twin: str, path: Path) -> None:
    """Next to saved weights: the twin's tokenizer, the decoder's generation settings, and the
    sparse MLM head (a training-time option) switched off in config.json."""
    for_twin(tokenizer, twin).save_pretrained(path)
    if twin == "decoder":
        model.generation_config.bos_token_id = tokenizer.cls_token_id
        model.generation_config.eos_token_id = tokenizer.sep_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.save_pretrained(path)
    config = path / "config.json"
    data = json.loads(config.read_text())
    if data.get("sparse_prediction"):
        data["sparse_prediction"] = False
        config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
