"""Cross-objective continued training (ETTIN-FACTS §2): convert a twin's weights into the other
twin's class, then keep training it with the other objective on the pretraining data.

decoder -> encoder: bidirectional attention + MLM at 15% (or MNTP); encoder -> decoder: causal
attention + CLM. One phase, warmup then linear decay to 0.02x, peak LR = the recipe's decay-phase
starting LR, a fresh optimizer, scaled by a token budget. The phase runs on the pretraining phase
runner (`twinlm.train.pretrain.run_phase`), so logging, checkpoints and held-out loss are the
same as for the native twins, and `resume=True` (`--resume`) continues an interrupted conversion
from its last checkpoint, given the same source weights (`source.json` records them). The result
is a plain HF folder of the target class with the recipe (`twinlm.yaml`) and `conversion.json`
saying what it is, so `twinlm compare` can put it beside the native twins.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM
from transformers.utils import logging as hf_logging

from twinlm.convert import CONVERSION_FILE
from twinlm.convert.mntp import MNTPCollator
from twinlm.convert.weights import decoder_to_encoder, encoder_to_decoder
from twinlm.data.corpus import phase_data
from twinlm.data.tokenizer import load_tokenizer
from twinlm.errors import UserError
from twinlm.models import count_parameters, set_global_rope_theta
from twinlm.outputs import check_hf_folder, check_out, publish_into, staging, write_json
from twinlm.recipe import Phase, Recipe, load_recipe
from twinlm.train.pretrain import RECIPE_FILE, check_resume_recipe, prepare_output, run_phase
from twinlm.train.schedules import phase_steps
from twinlm.train.twin_folder import save_twin_folder

SOURCE_FILE = "source.json"
OBJECTIVES = {"encoder": ("mlm", "mntp"), "decoder": ("clm",)}


def cross_phase(recipe: Recipe, tokens: int | None, objective: str, mask_ratio: float = 0.15,
                warmup_fraction: float = 0.1, lr_end: float = 0.02) -> Phase:
    """The single continued-training phase, derived from the recipe's last (decay) phase."""
    last = recipe.phases[-1]
    tokens = int(tokens or last.tokens)
    if tokens <= 0:
        raise UserError(f"--tokens must be positive, got {tokens}")
    if not 0.0 <= warmup_fraction < 1.0:
        raise UserError(f"warmup fraction must be in [0, 1), got {warmup_fraction}")
    phase = Phase(
        name=f"cross-{objective}", tokens=tokens, seq_len=last.seq_len, lr_schedule="warmup_linear",
        lr_start=last.lr_start, lr_end=lr_end, warmup_tokens=int(tokens * warmup_fraction),
        mask_ratio=mask_ratio, rope_theta=last.rope_theta, global_batch=last.global_batch, source=last.source,
    )
    phase.check(0)
    return phase


def source_recipe(model_dir: Path, recipe: str | None, overrides: Sequence[str]) -> Recipe:
    """The recipe whose data the continued training uses: --recipe, else the model's twinlm.yaml."""
    if recipe:
        return load_recipe(recipe, list(overrides))
    own = model_dir / "twinlm.yaml"
    if not own.exists():
        raise UserError(
            f"{model_dir} has no twinlm.yaml to say what data it was trained on; pass --recipe "
            "(a recipe file or shipped name) for the continued-training data"
        )
    return load_recipe(str(own), list(overrides))


def load_source(model_dir: Path, source_twin: str, attn_implementation: str):
    """Load the source checkpoint, refusing the wrong class or an incomplete folder before any training."""
    check_hf_folder(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    want = "modernbert-decoder" if source_twin == "decoder" else "modernbert"
    if config.model_type != want:
        raise UserError(
            f"{model_dir} is a {config.model_type!r} model; {source_twin}-to-"
            f"{'encoder' if source_twin == 'decoder' else 'decoder'} needs a {want!r} checkpoint"
        )
    cls = AutoModelForCausalLM if source_twin == "decoder" else AutoModelForMaskedLM
    return cls.from_pretrained(model_dir, attn_implementation=attn_implementation)


def source_identity(model_dir: Path) -> dict:
    """Where the source is and a sha256 per weight file (one file, or the shards of a sharded save)."""
    digests = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        digests[path.name] = digest.hexdigest()
    return {"path": str(model_dir.resolve()), "sha256": digests}


def check_resume_source(identity: dict, out: Path) -> None:
    # The hashes decide, not the path: a moved or copied source folder is the same model, and a
    # retrained one at the same path is not (its checkpoints would mix two different starts).
    record = out / SOURCE_FILE
    if not record.exists():  # started by a version that did not record the source
        print(f"warning: {out} has no {SOURCE_FILE}; cannot check that --resume got the same source model",
              flush=True)
        return
    saved = json.loads(record.read_text())
    if saved["sha256"] != identity["sha256"]:
        raise UserError(
            f"--resume: the source model differs from the one {out} was started with (recorded {saved['path']}, "
            f"given {identity['path']}); resume with the same source model"
        )


def cross_train(model_dir: str | Path, out: str | Path, target: str, tokens: int | None = None,
                objective: str | None = None, mask_ratio: float = 0.15, recipe: str | None = None,
                overrides: Sequence[str] = (), overwrite: bool = False, resume: bool = False,
                callbacks: Sequence = ()) -> dict:
    """Convert `model_dir` into the `target` twin and continue training it; returns the metadata
    written to `<out>/conversion.json` (including the phase result).

    `resume` continues an interrupted conversion in `out` from its last intermediate checkpoint
    (the recipe, including --tokens / --objective / --mask-ratio / --set, must be the one it was
    started with); on a finished conversion it does nothing and returns the metadata. Without
    `resume` or `overwrite` an existing, non-empty `out` is refused."""
    hf_logging.disable_progress_bar()  # "Loading weights" bars would bury the one-line errors below
    model_dir, out = Path(model_dir), Path(out)
    check_out(out, overwrite, resume, resume_needs=RECIPE_FILE)  # before loading anything
    if target not in OBJECTIVES:
        raise UserError(f"target twin {target!r}; valid: encoder, decoder")
    objective = objective or OBJECTIVES[target][0]
    if objective not in OBJECTIVES[target]:
        raise UserError(f"--objective {objective!r} cannot train an {target}; valid: {', '.join(OBJECTIVES[target])}")
    source_twin = "decoder" if target == "encoder" else "encoder"
    if not model_dir.is_dir():
        raise UserError(f"no model folder {model_dir}")
    rec = source_recipe(model_dir, recipe, overrides)
    phase = cross_phase(rec, tokens, objective, mask_ratio)
    # Continued training from a trained model: no batch-size warmup (it is the first pretraining phase's).
    rec = dataclasses.replace(rec, phases=[phase], training=dataclasses.replace(rec.training, batch_warmup_tokens=0))
    rec.check()
    source = load_source(model_dir, source_twin, rec.training.attn_implementation)
    prepare_output(out, resume=resume, overwrite=overwrite)
    identity = source_identity(model_dir)
    if resume:
        check_resume_source(identity, out)
        check_resume_recipe(rec, out)
        if (out / CONVERSION_FILE).exists():
            print(f"{out} is a finished conversion; nothing to resume", flush=True)
            return json.loads((out / CONVERSION_FILE).read_text())

    model = decoder_to_encoder(source) if target == "encoder" else encoder_to_decoder(source)
    del source
    if target == "encoder":
        model.config.sparse_prediction = rec.training.sparse_mlm_head
        model.sparse_prediction = rec.training.sparse_mlm_head
    set_global_rope_theta(model, phase.rope_theta)
    tokenizer = load_tokenizer(str(model_dir))
    out.mkdir(parents=True, exist_ok=True)
    if not resume:  # written first: what --resume checks and needs (prepare_output looks for the recipe)
        write_json(out / SOURCE_FILE, identity)
        rec.dump(out / RECIPE_FILE)
    cache = out / "data"
    # The phase's streams (a mixture where the recipe lists several), as pretraining reads them.
    train_store, heldout_store = phase_data(rec, tokenizer, cache)[phase.name]
    collator = _collator(objective, tokenizer, model, phase)
    result = run_phase(rec, out, target, model, tokenizer, phase, phase_steps(rec, phase), train_store,
                        heldout_store, 0, callbacks, collator=collator)
    meta = {
        "kind": "cross-objective", "from": source_twin, "to": target, "objective": objective,
        "source": str(model_dir), "tokens": result.tokens,
        "prediction_offset": -1 if objective == "mntp" else 0,
        "head": "copied from the source twin (same dense+norm+tied projection)",
        "local_attention": model.config.local_attention, "result": result.__dict__,
    }
    _write(model, tokenizer, target, out, rec, meta, count_parameters(model))
    shutil.rmtree(out / target, ignore_errors=True)  # the phase's work folder (optimizer states)
    shutil.rmtree(cache, ignore_errors=True)
    print(f"{source_twin} -> {target} ({objective}): {result.steps} steps, {result.tokens:,} tokens, held-out loss "
          f"{result.heldout.get('loss', float('nan')):.4f}", flush=True)
    return meta


def _collator(objective: str, tokenizer, model, phase: Phase):
    if objective != "mntp":
        return None  # the twin's own objective: MLM for the encoder, CLM for the decoder
    # The encoder class does not shift labels, so the collator does (see twinlm.convert.mntp).
    return MNTPCollator(tokenizer.mask_token_id, tokenizer.pad_token_id, len(tokenizer), tokenizer.all_special_ids,
                        phase.mask_ratio, shift="collator")


def _write(model, tokenizer, twin: str, out: Path, recipe: Recipe, meta: dict, num_params: int) -> None:
    # Staged, then moved into `out` item by item: out also holds source.json and the recipe that
    # --resume reads, and conversion.json (which marks the conversion finished) arrives whole.
    tmp = staging(out)
    save_twin_folder(model, tokenizer, twin, tmp)
    recipe.dump(tmp / RECIPE_FILE)
    write_json(tmp / CONVERSION_FILE, meta)
    (tmp / "README.md").write_text(_card(meta, num_params))
    publish_into(tmp, out)


def _card(meta: dict, num_params: int) -> str:
    r = meta["result"]
    arch = "ModernBertForMaskedLM" if meta["to"] == "encoder" else "ModernBertDecoderForCausalLM"
    task = "fill-mask" if meta["to"] == "encoder" else "text-generation"
    offset = ("\nTrained with MNTP: the token at a masked position i is predicted from the logits at i - 1 "
              "(not a drop-in fill-mask model).\n" if meta["objective"] == "mntp" else "")
    return f"""---
library_name: transformers
pipeline_tag: {task}
tags: [twinlm, ettin, cross-objective, {meta["to"]}]
---
# Cross-objective {meta["from"]} -> {meta["to"]}

A stock `{arch}` ({num_params:,} parameters) made from the {meta["from"]} twin at `{meta["source"]}`:
weights mapped exactly (q/k/v fused or split, prediction head copied, `local_attention` kept), then
trained with {meta["objective"].upper()} for {r["steps"]:,} steps / {r["tokens"]:,} tokens (warmup, linear
decay to 0.02x, fresh optimizer). Held-out loss after training: {r["heldout"].get("loss", float("nan")):.4f}.
{offset}
See `conversion.json` for the metadata and `twinlm.yaml` for the recipe of the continued training.
"""
