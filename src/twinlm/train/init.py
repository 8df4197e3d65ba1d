"""Continued pretraining: start the twins from existing checkpoints instead of random weights.

A source is a twinlm run folder (both twins), or per twin a hub id, a local Hugging Face folder
(stock `ModernBertForMaskedLM` / `ModernBertDecoderForCausalLM`, e.g. the official Ettin pair) or
a phase checkpoint of a twinlm run (`<run>/<twin>/phases/<phase>`, `.../work/<phase>/checkpoint-N`).

Everything that can be checked from config.json and the tokenizer files is checked before any
data is read: the architecture, the shape against the recipe's, the vocabulary, the special
tokens, and the tokenizer the recipe names (it must equal the checkpoint's). Only the weights are
taken: the optimizer and LR schedule start fresh, as at Ettin's phase changes. The model is built
from the recipe's config (dropout, RoPE, sparse MLM head are the recipe's) and the checkpoint's
tensors must fill it exactly: a missing, unexpected or reshaped tensor is an error, not a
silently random-initialised layer.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

from twinlm.data.tokenizer import load_tokenizer
from twinlm.errors import UserError
from twinlm.models import layer_types, shared_config_kwargs, special_token_ids
from twinlm.recipe import SIZES, TWINS, Recipe

MODEL_TYPES = {"encoder": "modernbert", "decoder": "modernbert-decoder"}
CLASSES = {"encoder": "ModernBertForMaskedLM", "decoder": "ModernBertDecoderForCausalLM"}
# config.json keys that decide which tensors exist: they must agree with the recipe's build.
STRUCTURE = ("norm_bias", "attention_bias", "mlp_bias", "decoder_bias", "tie_word_embeddings", "hidden_activation")
SPECIAL_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "cls_token_id", "sep_token_id")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class InitSource:
    """One twin's starting checkpoint: `location` is a local folder or a hub id."""

    twin: str
    location: str
    hub: bool
    vocab_size: int  # the checkpoint's embedding rows (the model is built with exactly these)


def init_overrides(values: list[str]) -> list[str]:
    """`--init` values as recipe overrides: RUN -> init.run, encoder=PATH / decoder=PATH -> init.<twin>.
    Given at all, they replace the recipe's whole init section."""
    if not values:
        return []
    out = ["init.run=null", "init.encoder=null", "init.decoder=null"]
    for value in values:
        key, sep, path = value.partition("=")
        if sep and key.strip() in TWINS:
            out.append(f"init.{key.strip()}={_yaml_string(path.strip())}")
        elif sep and not Path(value).exists():
            raise UserError(f"--init {value!r}: expected a run folder, encoder=PATH or decoder=PATH")
        else:
            out.append(f"init.run={_yaml_string(value)}")
    return out


def _yaml_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def sources_of(recipe: Recipe, twins) -> dict[str, str]:
    """Where each trained twin starts from ({} without init), or a UserError when only some do."""
    init = recipe.init
    if not init.given():
        return {}
    if init.run:
        return {twin: str(Path(init.run) / twin) for twin in twins}
    given = {twin: getattr(init, twin) for twin in twins if getattr(init, twin)}
    missing = [twin for twin in twins if twin not in given]
    if missing:
        raise UserError(f"--init gives no checkpoint for the {missing[0]} twin; give {missing[0]}=PATH too, or "
                        f"train only --twins {','.join(given)}")
    return given


def _locate(twin: str, spec: str) -> tuple[str, bool]:
    """(folder or hub id, is_hub). A run folder given for one twin resolves to its <twin>/ folder."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return str(path), False
        if (path / twin / "config.json").is_file():
            return str(path / twin), False
        where = ("a twinlm run whose " + twin + " twin has not finished; point at a phase checkpoint, "
                 f"e.g. {twin}={path / twin / 'phases' / '<phase>'}") if (path / twin).is_dir() else "not a model"
        raise UserError(f"--init {twin}={spec}: no config.json there ({where})")
    if path.exists() or not HUB_ID.match(spec):
        raise UserError(f"--init {twin}={spec}: no such folder (give a model folder, a twinlm run or a hub id)")
    return spec, True


def _read_config(twin: str, location: str):
    try:
        return AutoConfig.from_pretrained(location)
    except (OSError, ValueError) as err:
        raise UserError(f"--init {twin}={location}: cannot read its config ({str(err).splitlines()[0]})") from None


def _shape_of(recipe: Recipe) -> dict:
    m = recipe.model
    return {"hidden_size": m.hidden, "intermediate_size": m.intermediate, "num_hidden_layers": m.layers,
            "num_attention_heads": m.heads, "local_attention": m.local_attention}


RECIPE_KEY = {"hidden_size": "model.hidden", "intermediate_size": "model.intermediate",
              "num_hidden_layers": "model.layers", "num_attention_heads": "model.heads",
              "local_attention": "model.local_attention"}


def check_shape(twin: str, location: str, config, recipe: Recipe) -> None:
    """The checkpoint's architecture and shape against the recipe's, one mismatch per error."""
    if config.model_type != MODEL_TYPES[twin]:
        raise UserError(f"--init {twin}={location}: a {config.model_type!r} checkpoint, but the {twin} twin is a "
                        f"{CLASSES[twin]} ({MODEL_TYPES[twin]!r}); to turn one objective into the other use "
                        "`twinlm convert`")
    for key, want in _shape_of(recipe).items():
        have = getattr(config, key, None)
        if have != want:
            raise UserError(f"--init {twin}={location}: {key} is {have} but the recipe's {RECIPE_KEY[key]} is "
                            f"{want} (size {recipe.model.size}){_size_hint(config)}")
    want_types = layer_types(recipe.model.layers, recipe.model.global_attn_every_n_layers)
    if list(getattr(config, "layer_types", None) or want_types) != want_types:
        raise UserError(f"--init {twin}={location}: its global/sliding layer pattern differs from the recipe's "
                        f"model.global_attn_every_n_layers={recipe.model.global_attn_every_n_layers}")
    built = _recipe_config(twin, recipe, config.vocab_size, {key: getattr(config, key, None) for key in SPECIAL_IDS})
    for key in STRUCTURE:
        have, want = getattr(config, key, None), getattr(built, key, None)
        if have is not None and want is not None and have != want:
            raise UserError(f"--init {twin}={location}: {key} is {have!r}, twinlm builds the twins with {want!r}")


def _size_hint(config) -> str:
    for name, dims in SIZES.items():
        if (dims["layers"], dims["hidden"], dims["heads"]) == (
                config.num_hidden_layers, config.hidden_size, config.num_attention_heads):
            return f"; the checkpoint is size {name}: --set model.size={name}"
    return ""


def rope_note(config, recipe: Recipe) -> str | None:
    """A RoPE theta of the checkpoint that the recipe's first phase changes (allowed, rarely meant)."""
    params = getattr(config, "rope_parameters", None) or {}
    want = {"full_attention": recipe.phases[0].rope_theta, "sliding_attention": recipe.model.local_rope_theta}
    for kind, theta in want.items():
        have = (params.get(kind) or {}).get("rope_theta")
        if have is not None and float(have) != float(theta):
            return (f"its {kind} RoPE theta is {have:g}, the recipe's first phase trains with {theta:g} "
                    "(set phases.<first>.rope_theta / model.local_rope_theta to keep it)")
    return None


def check_tokenizer(twin: str, location: str, config, tokenizer, named: str | None) -> None:
    """The tokenizer the run will use against the checkpoint's vocabulary and special ids."""
    if len(tokenizer) > config.vocab_size:
        raise UserError(f"--init {twin}={location}: the tokenizer has {len(tokenizer):,} tokens but the checkpoint's "
                        f"embeddings only {config.vocab_size:,}{' (tokenizer ' + named + ')' if named else ''}")
    ids = special_token_ids(tokenizer)
    for key in SPECIAL_IDS:
        have = getattr(config, key, None)
        if have is not None and have != ids[key]:
            raise UserError(f"--init {twin}={location}: the checkpoint's {key} is {have} but the tokenizer's is "
                            f"{ids[key]}{' (tokenizer ' + named + ')' if named else ''}")


def same_tokenizer(a, b) -> str | None:
    """None when `a` and `b` encode alike (same vocabulary and special tokens), else what differs."""
    if len(a) != len(b):
        return f"{len(a):,} vs {len(b):,} tokens"
    for name in ("cls_token", "sep_token", "pad_token", "mask_token"):
        if getattr(a, name + "_id") != getattr(b, name + "_id"):
            return f"{name} id {getattr(a, name + '_id')} vs {getattr(b, name + '_id')}"
    if a.get_vocab() != b.get_vocab():
        differing = sorted(set(a.get_vocab().items()) ^ set(b.get_vocab().items()))
        return f"vocabularies differ (e.g. {differing[0][0]!r})"
    return None


def resolve_init(recipe: Recipe, twins) -> tuple[Recipe, dict[str, InitSource]]:
    """Check every init checkpoint against the recipe (before any data work) and return the recipe
    with its tokenizer settled: the recipe's if it names one (it must equal the checkpoint's),
    else the first checkpoint's. Without init: (recipe, {})."""
    specs = sources_of(recipe, twins)
    if not specs:
        return recipe, {}
    sources, tokenizers = {}, {}
    for twin, spec in specs.items():
        location, hub = _locate(twin, spec)
        config = _read_config(twin, location)
        check_shape(twin, location, config, recipe)
        sources[twin] = InitSource(twin, location, hub, int(config.vocab_size))
        note = rope_note(config, recipe)
        if note and twin == next(iter(specs)):
            print(f"note: --init {twin}={location}: {note}", flush=True)
        try:
            tokenizers[twin] = load_tokenizer(location)
        except UserError:
            if not recipe.tokenizer.name_or_path:
                raise UserError(f"--init {twin}={location}: no tokenizer there; name the one it was trained with "
                                "in tokenizer.name_or_path") from None
        check_tokenizer(twin, location, config, tokenizers.get(twin) or load_tokenizer(recipe.tokenizer.name_or_path),
                        recipe.tokenizer.name_or_path)
    named = recipe.tokenizer.name_or_path
    if named:
        mine = load_tokenizer(named)
        for twin, tok in tokenizers.items():
            diff = same_tokenizer(mine, tok)
            if diff:
                raise UserError(f"tokenizer.name_or_path={named} differs from the tokenizer of --init "
                                f"{twin}={sources[twin].location} ({diff}); leave tokenizer.name_or_path empty to use "
                                "the checkpoint's")
        return recipe, sources
    if len(tokenizers) == 2:
        diff = same_tokenizer(tokenizers["encoder"], tokenizers["decoder"])
        if diff:
            raise UserError(f"the init checkpoints' tokenizers differ ({diff}): twins share one vocabulary")
    first = sources[next(iter(tokenizers))].location
    return dataclasses.replace(recipe, tokenizer=dataclasses.replace(recipe.tokenizer, name_or_path=first)), sources


def _recipe_config(twin: str, recipe: Recipe, vocab_size: int, special: dict):
    from transformers import ModernBertConfig, ModernBertDecoderConfig

    kwargs = shared_config_kwargs(recipe.model, vocab_size, special, recipe.phases[0].rope_theta)
    return (ModernBertConfig if twin == "encoder" else ModernBertDecoderConfig)(**kwargs)


def load_init_model(source: InitSource, config, attn_implementation: str):
    """The twin built from the recipe's `config` with the checkpoint's weights, in fp32; every
    tensor of the model must come from the checkpoint (no random layers, no dropped tensors)."""
    config.vocab_size = source.vocab_size  # the checkpoint's rows (>= the padded tokenizer size)
    cls = AutoModelForMaskedLM if source.twin == "encoder" else AutoModelForCausalLM
    try:
        model, info = cls.from_pretrained(source.location, config=config, attn_implementation=attn_implementation,
                                          dtype=torch.float32, output_loading_info=True)
    except (OSError, ValueError) as err:
        raise UserError(f"--init {source.twin}={source.location}: cannot load its weights "
                        f"({str(err).splitlines()[0]})") from None
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        kind, keys = next(iter(problems.items()))
        first = sorted(str(k) for k in keys)[0]
        raise UserError(f"--init {source.twin}={source.location}: the weights do not fit the recipe's model "
                        f"({kind.replace('_', ' ')}: {first}{' ...' if len(keys) > 1 else ''})")
    return model

