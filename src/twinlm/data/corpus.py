"""From a recipe to a tokenizer and token stores (train and held-out) for every phase.

A stream's `source` is one of:
* a prepared folder (`twinlm prepare`: `prepare.json` complete, `train/`, `heldout/`): used as is,
  after checking that its ids belong to the recipe's tokenizer;
* a pre-tokenized source (a stream with the `data.ids_column` column, see `sources/ids.py`): its
  ids are copied into a store in the cache, unchanged, one document per sample;
* a text source: tokenized into the cache (small corpora; large ones go through `twinlm prepare`);
* None: the built-in synthetic world.
Only a single process builds cache stores: a multi-process run (WORLD_SIZE > 1) on an unprepared
source stops with a one-line error, so that no rank waits at the process-group barrier while
another tokenizes a large corpus.

Held-out split (pre-tokenized and text sources built here): the rule `twinlm prepare` uses
(`twinlm.data.heldout`, seeded by `training.seed`), so a corpus prepared with the same
tokenizer, share, caps and seed (`twinlm prepare RECIPE` takes them from the recipe) holds out
the same documents; a corpus whose held-out part exceeds 5% of its documents gets a warning.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np

from twinlm.data.heldout import StreamSplit
from twinlm.data.prepare.format import META, is_prepared
from twinlm.data.sampling import Mixture, Stream, share_lines
from twinlm.data.sources.ids import check_framing, probe_source, token_documents
from twinlm.data.sources.pieces import iter_documents
from twinlm.data.sources.resolve import source_fingerprint
from twinlm.data.sources.text import iter_texts
from twinlm.data.store import DocumentSpill, TokenStore, id_dtype, is_store, write_documents
from twinlm.data.tokenizer import (
    document_ids,
    for_twin,
    load_tokenizer,
    tokenizer_fingerprint,
    train_tokenizer,
)
from twinlm.errors import UserError
from twinlm.recipe import Phase, Recipe
from twinlm.train.schedules import phase_steps
from twinlm.world.generator import WorldConfig, build_world

_FORMAT = 3  # bump when the cache's content changes (v3: the held-out rule of twinlm prepare)


def world_of(recipe: Recipe):
    return build_world(WorldConfig(**asdict(recipe.data.world)))


def split_texts(recipe: Recipe, source: str | None) -> tuple[Iterator[str], list[str]]:
    """(training texts, held-out texts). The world holds out whole people; other sources hold out
    documents by the share rule, so a streamed hub dataset never has to fit in memory. For those
    the held-out list fills as the training iterator is consumed."""
    data = recipe.data
    if source is None:
        world = world_of(recipe)
        train_people, heldout_people = world.split()
        train = world.documents(train_people)
        if data.max_documents:
            train = train[: data.max_documents]
        return iter(train), world.documents(heldout_people)
    # ~4 characters per token: the token cap is approximate for texts.
    split = heldout_split(recipe, lambda text: len(text) // 4)
    docs = iter_documents(source, text_column=data.text_column, split=data.split)
    if data.max_documents:
        docs = itertools.islice(docs, data.max_documents)
    # The document the rule may take out of training at the end is kept back until then.
    return split.training(docs, hold_back=True), split.heldout


def heldout_split(recipe: Recipe, size, spill=None) -> StreamSplit:
    """The held-out rule with the recipe's settings; `size(document)` counts its tokens; `spill`
    keeps the candidates past the caps (see `StreamSplit`)."""
    data = recipe.data
    return StreamSplit(data.heldout_share, data.heldout_max_documents, data.heldout_max_tokens, recipe.training.seed,
                       size, spill)


def source_key(recipe: Recipe, source: str | None) -> str:
    data = recipe.data
    if source is None:
        desc = {"world": asdict(data.world), "max_documents": data.max_documents}
    else:
        desc = {"format": _FORMAT, "source": source_fingerprint(source, data.text_column, data.split),
                "ids": data.ids_column, "max_documents": data.max_documents,
                "heldout": [data.heldout_share, data.heldout_max_documents, data.heldout_max_tokens,
                            recipe.training.seed]}
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]


def prepare_tokenizer(recipe: Recipe, out: Path):
    """The run's tokenizer, saved once in `out/tokenizer` (reused on resume)."""
    path = out / "tokenizer"
    if (path / "tokenizer.json").exists():
        return load_tokenizer(str(path))
    cfg = recipe.tokenizer
    first = recipe.streams_of(recipe.phases[0])[0].source
    if cfg.name_or_path:
        tok = load_tokenizer(cfg.name_or_path)
    elif first is not None and is_prepared(first) and (Path(first) / "tokenizer" / "tokenizer.json").exists():
        tok = load_tokenizer(str(Path(first) / "tokenizer"))  # the one `twinlm prepare` trained for it
    else:
        source = _text_source_for_tokenizer(recipe)
        texts, _ = split_texts(recipe, source)
        tok = train_tokenizer(itertools.islice(texts, cfg.train_documents), cfg.vocab_size, cfg.min_frequency)
    tok = for_twin(tok, "encoder")
    tok.save_pretrained(path)
    return tok


def _text_source_for_tokenizer(recipe: Recipe) -> str | None:
    """The source a tokenizer is trained on: data's; prepared and pre-tokenized data have theirs already."""
    source = recipe.streams_of(recipe.phases[0])[0].source
    if source is not None and source_kind(recipe, source) != "text":
        raise UserError(f"data source {source!r} holds token ids; set tokenizer.name_or_path to the tokenizer "
                        "they were made with (e.g. jhu-clsp/ettin-encoder-150m for Ettin's data)")
    return source


def source_kind(recipe: Recipe, source: str) -> str:
    """'prepared', 'tokens' (pre-tokenized) or 'text'; UserError for a source that is neither."""
    if is_prepared(source):
        return "prepared"
    if Path(source).is_dir() and (Path(source) / META).is_file():
        raise UserError(f"{source} is an unfinished prepared folder (no \"complete\": true in {META}); "
                        "finish it with the same `twinlm prepare` command")
    data = recipe.data
    return probe_source(source, data.ids_column, data.text_column, data.split).kind


def check_sources(recipe: Recipe, cache_dir: Path | None = None) -> None:
    """Fail on a missing, empty or column-less source before the output folder is touched. Every
    rank runs it, so a multi-process run on an unprepared source (no prepared folder, nothing in
    `cache_dir` from an earlier single-process run) stops on every rank at once, not at a barrier."""

    sources = dict.fromkeys(st.source for p in recipe.phases for st in recipe.streams_of(p) if st.source)
    for source in sources:  # in phase order
        try:
            kind = source_kind(recipe, source)
        except UserError as err:
            if str(err).startswith("no such file or folder"):
                raise UserError(f"{err}; download and prepare the data first (`twinlm prepare SOURCE --tokenizer "
                                "NAME --out FOLDER`; the ettin-* recipes say how in their data section)") from None
            raise
        if kind == "text":
            data = recipe.data
            next(iter(iter_texts(source, text_column=data.text_column, split=data.split, limit=1)))
        elif not recipe.tokenizer.name_or_path:
            raise UserError(f"data source {source!r} holds token ids ({'prepared' if kind == 'prepared' else 'pre-tokenized'}); "
                            "set tokenizer.name_or_path to the tokenizer they were made with "
                            "(e.g. jhu-clsp/ettin-encoder-150m for Ettin's data, or <prepared folder>/tokenizer)")
        if kind != "prepared" and int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _cached(recipe, source, cache_dir):
            raise _unprepared(source)


def _cached(recipe: Recipe, source: str, cache_dir: Path | None) -> bool:
    """True if an earlier run left this source's stores in `cache_dir` (any tokenizer)."""
    if cache_dir is None:
        return False
    key = source_key(recipe, source)
    return any(is_store(p / "train") and is_store(p / "heldout") for p in Path(cache_dir).glob(f"{key}-*"))


def open_prepared(source: str | Path, tokenizer, tokenizer_name: str = "the recipe's tokenizer"
                  ) -> tuple[TokenStore, TokenStore]:
    """The stores of a prepared folder, after checking they fit `tokenizer` (ids below its
    vocabulary by every shard's max id; the same CLS/SEP ids when the folder records them)."""
    path = Path(source)
    meta = json.loads((path / META).read_text())
    train = TokenStore.open(path / "train")
    heldout = TokenStore.open(path / "heldout") if is_store(path / "heldout") else train
    tok_meta = meta.get("tokenizer") or {}
    for key, mine in (("cls_token_id", tokenizer.cls_token_id), ("sep_token_id", tokenizer.sep_token_id)):
        theirs = tok_meta.get(key)
        if theirs is not None and mine is not None and int(theirs) != int(mine):
            raise UserError(f"prepared folder {path} was made with {tok_meta.get('name_or_path', 'another tokenizer')} "
                            f"({key} {theirs}); {tokenizer_name} has {mine}; use that tokenizer or prepare again")
    own = path / "tokenizer"
    if (own / "tokenizer.json").exists() and load_tokenizer(str(own)).get_vocab() != tokenizer.get_vocab():
        raise UserError(f"prepared folder {path} was tokenized with its own trained tokenizer ({own}); "
                        f"{tokenizer_name} has another vocabulary: set tokenizer.name_or_path={own} or prepare again")
    for name, store in (("train", train), ("heldout", heldout)):
        for i, shard in enumerate(store.shards):
            top = shard.get("max_token_id")
            if top is not None and int(top) >= len(tokenizer):
                raise UserError(f"prepared folder {path}: {name} shard {i} holds token id {top}, outside the "
                                f"vocabulary of {tokenizer_name} ({len(tokenizer)} ids); use the tokenizer it was "
                                f"prepared with ({tok_meta.get('name_or_path', 'see prepare.json')})")
    return train, heldout


def _unprepared(source: str) -> UserError:
    return UserError(f"data source {source!r} is not prepared and this is a multi-process run "
                     f"(WORLD_SIZE={os.environ.get('WORLD_SIZE')}); run `twinlm prepare {source} --recipe RECIPE "
                     "--out P` once, then point the recipe at P")


def prepare_stores(recipe: Recipe, tokenizer, cache_dir: Path, source: str | None) -> tuple[TokenStore, TokenStore]:
    """Train and held-out stores for one source, reused while corpus and tokenizer are unchanged."""
    if source is not None and is_prepared(source):
        return open_prepared(source, tokenizer, recipe.tokenizer.name_or_path or "the recipe's tokenizer")
    key = f"{source_key(recipe, source)}-{tokenizer_fingerprint(tokenizer)}"
    folder = cache_dir / key
    train_path, heldout_path = folder / "train", folder / "heldout"
    if is_store(train_path) and is_store(heldout_path):
        return TokenStore.open(train_path), TokenStore.open(heldout_path)
    if source is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise _unprepared(source)
    dtype = id_dtype(len(tokenizer))
    if source is None:  # the world: its own split (whole people held out)
        train, heldout = split_texts(recipe, None)
        write_documents(_ids(_tokenized(_unnamed(heldout), tokenizer)), heldout_path, dtype, fingerprint=key)
        write_documents(_ids(_tokenized(_unnamed(train), tokenizer, progress=True)), train_path, dtype, fingerprint=key)
        return TokenStore.open(train_path), TokenStore.open(heldout_path)
    data = recipe.data
    probe = probe_source(source, data.ids_column, data.text_column, data.split)
    name = recipe.tokenizer.name_or_path or "the recipe's tokenizer"
    if probe.kind == "tokens":
        check_framing(probe, tokenizer, data.ids_column, data.split, tokenizer_name=name)
        docs = token_documents(probe, data.ids_column, data.split, len(tokenizer), name)
        if data.max_documents:
            docs = itertools.islice(docs, data.max_documents)
        total = probe.num_samples(data.split)
        docs = _with_bar(docs, "copying token ids", min(total, data.max_documents or total) if total else None)
    else:
        docs = _tokenized(_documents(recipe, source), tokenizer, progress=True)
    spill = DocumentSpill(folder / "returned.partial", dtype)  # candidates past the caps, on disk
    split = heldout_split(recipe, lambda ids: int(ids.size), spill)
    extra = {"fingerprint": key, "source": str(source), "ordered": probe.ordered}
    tmp_train = folder / "train.partial"
    try:
        write_documents(split.training(docs), tmp_train, dtype, **extra)
    except ValueError as e:  # an id that does not fit the store's dtype
        raise UserError(f"data source {source!r}: {e}; the ids need a wider vocabulary than {name}'s") from None
    finally:
        spill.remove()
    if split.documents - len(split.heldout) < 1:
        raise UserError(f"data source {source!r} has only {split.documents} document(s), all needed for held-out "
                        "evaluation; add data")
    if split.lowest is not None:  # a corpus whose hashes picked none: its lowest-hash document
        _drop_document(tmp_train, split.lowest, dtype, extra)
    write_documents(split.heldout, heldout_path, dtype, **extra)
    os.replace(tmp_train, train_path)
    print(split.report(str(source)), flush=True)
    return TokenStore.open(train_path), TokenStore.open(heldout_path)


def _drop_document(folder: Path, k: int, dtype, extra: dict) -> None:
    """Rewrite the store in `folder` without its document `k`."""
    store = TokenStore.open(folder)

    def documents() -> Iterator[np.ndarray]:
        n = 0
        for i in range(len(store.shards)):
            offsets, tokens = store.document_offsets(i), store.shard_tokens(i)
            for a, b in zip(offsets[:-1], offsets[1:]):
                if n != k:
                    yield np.asarray(tokens[a:b])
                n += 1

    rewritten = folder.with_name(folder.name + ".rewrite")
    write_documents(documents(), rewritten, dtype, **extra)
    shutil.rmtree(folder)
    os.replace(rewritten, folder)


def _with_bar(items, desc: str, total: int | None):
    """`items`, ticking one progress bar (with ETA where `total` is known)."""
    from tqdm.auto import tqdm

    with tqdm(items, desc=desc, total=total, unit=" docs", leave=False, mininterval=1.0) as bar:
        yield from bar


def _documents(recipe: Recipe, source: str) -> Iterator[tuple[str, int, str]]:
    data = recipe.data
    docs = iter_documents(source, text_column=data.text_column, split=data.split)
    return itertools.islice(docs, data.max_documents) if data.max_documents else docs


def _unnamed(texts) -> Iterator[tuple[str, int, str]]:
    return (("", k, text) for k, text in enumerate(texts))


def _ids(docs) -> Iterator[np.ndarray]:
    return (ids for _, _, ids in docs)


def _tokenized(docs, tokenizer, progress: bool = False, batch: int = 1000) -> Iterator[tuple[str, int, np.ndarray]]:
    """(name, position, ids) of (name, position, text) documents, tokenized in batches."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="tokenizing", unit=" docs", leave=False)
    it = iter(docs)
    while chunk := list(itertools.islice(it, batch)):
        for (name, position, _), ids in zip(chunk, document_ids(tokenizer, [text for _, _, text in chunk])):
            yield name, position, np.asarray(ids, dtype=np.int64)
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()


def phase_data(recipe: Recipe, tokenizer, cache_dir: Path) -> dict[str, tuple[TokenStore | Mixture, TokenStore]]:
    """Per phase name: (what it trains on: a store or a `Mixture` of its streams, held-out store:
    the streams' held-out stores back to back). Each source is prepared once for all phases."""
    stores: dict = {}
    out = {}
    for phase in recipe.phases:
        streams = recipe.streams_of(phase)
        for st in streams:
            if st.source not in stores:
                stores[st.source] = prepare_stores(recipe, tokenizer, cache_dir, st.source)
        if len(streams) == 1:
            out[phase.name] = stores[streams[0].source]
            continue
        mixture = Mixture([Stream(str(st.source), stores[st.source][0], st.proportion, st.repeat) for st in streams])
        heldout = TokenStore.concat([stores[st.source][1] for st in streams])
        out[phase.name] = (mixture, heldout)
    return out


def data_lines(recipe: Recipe, data: dict, phase: Phase | None = None) -> list[str]:
    """The run's first lines about its data: per phase, documents and tokens, packing efficiency
    and, for mixtures, each stream's planned and realized token share."""
    lines = []
    for p in recipe.phases if phase is None else [phase]:
        train, heldout = data[p.name]
        sources = ", ".join(str(st.source or "built-in world") for st in recipe.streams_of(p))
        lines.append(f"data {p.name} ({sources}): training {train.num_documents:,} documents, "
                     f"{train.num_tokens:,} tokens; held-out {heldout.num_documents:,} documents, "
                     f"{heldout.num_tokens:,} tokens; packing efficiency L={p.seq_len}: "
                     f"{100 * train.efficiency(p.seq_len):.2f}%")
        lines += share_lines(train, p.seq_len, phase_steps(recipe, p) * recipe.batch_of(p), recipe.training.seed)
    return lines
