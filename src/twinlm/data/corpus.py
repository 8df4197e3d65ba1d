"""From a recipe to a tokenizer and packed token stores (train and held-out), cached on disk."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from twinlm.data.packing import build_store, tokenizer_fingerprint
from twinlm.data.store import TokenStore, is_store
from twinlm.data.tokenizer import for_twin, load_tokenizer, train_tokenizer
from twinlm.errors import UserError
from twinlm.recipe import Recipe


def world_of(recipe: Recipe):
    from twinlm.data.world import WorldConfig, build_world

    return build_world(WorldConfig(**asdict(recipe.data.world)))


def split_texts(recipe: Recipe, source: str | None) -> tuple[Iterator[str], list[str]]:
    """(training texts, held-out texts). The world holds out whole people; other sources hold out
    the first `heldout_documents` documents of the stream, so a streamed hub dataset never has to
    fit in memory."""
    data = recipe.data
    if source is None:
        world = world_of(recipe)
        train_people, heldout_people = world.split()
        train = world.documents(train_people)
        if data.max_documents:
            train = train[: data.max_documents]
        return iter(train), world.documents(heldout_people)
    from twinlm.data.sources import iter_texts

    stream = iter_texts(source, text_column=data.text_column, split=data.split)
    heldout = list(itertools.islice(stream, data.heldout_documents))
    if not heldout:
        raise UserError(f"data source {source!r} holds no usable text")
    train = itertools.islice(stream, data.max_documents) if data.max_documents else stream
    first = next(train, None)
    if first is None:
        raise UserError(
            f"data source {source!r} has only {len(heldout)} documents, all needed for held-out "
            f"evaluation; lower data.heldout_documents"
        )
    return itertools.chain([first], train), heldout


def source_key(recipe: Recipe, source: str | None) -> str:
    if source is None:
        desc = {"world": asdict(recipe.data.world), "max_documents": recipe.data.max_documents}
    else:
        from twinlm.data.sources import source_fingerprint

        desc = {
            "source": source_fingerprint(source, recipe.data.text_column, recipe.data.split),
            "max_documents": recipe.data.max_documents,
            "heldout": recipe.data.heldout_documents,
        }
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]


def prepare_tokenizer(recipe: Recipe, out: Path):
    """The run's tokenizer, saved once in `out/tokenizer` (reused on resume)."""
    path = out / "tokenizer"
    if (path / "tokenizer.json").exists():
        return load_tokenizer(str(path))
    cfg = recipe.tokenizer
    if cfg.name_or_path:
        tok = load_tokenizer(cfg.name_or_path)
    else:
        texts, _ = split_texts(recipe, recipe.data.source)
        tok = train_tokenizer(itertools.islice(texts, cfg.train_documents), cfg.vocab_size, cfg.min_frequency)
    tok = for_twin(tok, "encoder")
    tok.save_pretrained(path)
    return tok


def prepare_stores(recipe: Recipe, tokenizer, cache_dir: Path, source: str | None) -> tuple[TokenStore, TokenStore]:
    """Train and held-out stores for one data source, reused while corpus and tokenizer are unchanged."""
    key = f"{source_key(recipe, source)}-{tokenizer_fingerprint(tokenizer)}"
    folder = cache_dir / key
    train_path, heldout_path = folder / "train", folder / "heldout"
    if is_store(train_path) and is_store(heldout_path):
        return TokenStore.open(train_path), TokenStore.open(heldout_path)
    train, heldout = split_texts(recipe, source)
    heldout_store = build_store(heldout, tokenizer, heldout_path, key, progress=False)
    train_store = build_store(train, tokenizer, train_path, key)
    return train_store, heldout_store
