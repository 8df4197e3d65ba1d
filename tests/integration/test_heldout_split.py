"""Held-out data is a small share of a real corpus, never most of it; pretraining reads
pre-tokenized and prepared sources as they are."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from twinlm.data.corpus import phase_data, prepare_stores, prepare_tokenizer
from twinlm.data.heldout import heldout_hash
from twinlm.data.sources.resolve import source_units
from twinlm.data.store import TokenStore, write_documents
from twinlm.errors import UserError
from twinlm.recipe import load_recipe

DATA = Path(__file__).parents[1] / "data"
TEXTS = json.loads((DATA / "mds" / "expected_texts.json").read_text())


def test_pretokenized_fixture_becomes_stores_with_its_ids_unchanged(micro_run, tmp_path):
    recipe = load_recipe("micro", [f"data.source={DATA / 'mds-pretokenized'}", f"tokenizer.name_or_path={micro_run / 'encoder'}"])
    tokenizer = prepare_tokenizer(recipe, tmp_path)
    train, heldout = prepare_stores(recipe, tokenizer, tmp_path / "data", recipe.data.source)
    order = [TEXTS[i].encode() for i in [*range(1, 40, 2), *range(0, 40, 2)]]  # code leaf, then web
    # 0.5% of 40 documents: no hash falls below the share, so the lowest-hash document is held out.
    names = [(unit.name, k) for unit in source_units(recipe.data.source) if unit.kind == "mds" for k in range(20)]
    hashes = [heldout_hash(recipe.training.seed, *name) for name in names]
    lowest = hashes.index(min(hashes))
    assert min(hashes) >= recipe.data.heldout_share
    assert (heldout.num_documents, train.num_documents) == (1, 39)
    assert bytes(np.asarray(heldout.tokens).astype(np.uint8)) == order[lowest]
    offsets = train.document_offsets(0)
    tokens = np.asarray(train.tokens)
    docs = [bytes(tokens[a:b].astype(np.uint8)) for a, b in zip(offsets[:-1], offsets[1:])]
    assert docs == order[:lowest] + order[lowest + 1:]
    again, _ = prepare_stores(recipe, tokenizer, tmp_path / "data", recipe.data.source)
    assert again.path == train.path  # reused, not rebuilt
    # A mixture of the two leaves, as a phase would list them.
    leaves = sorted(str(p.parent) for p in (DATA / "mds-pretokenized").rglob("index.json"))
    mix = load_recipe("micro", [f"tokenizer.name_or_path={micro_run / 'encoder'}",
                                f"data.streams=[{{source: {leaves[0]}, proportion: 0.25}}, {{source: {leaves[1]}, proportion: 0.75}}]"])
    data = phase_data(mix, tokenizer, tmp_path / "data")
    mixture, held = data["pretrain"]
    assert len(mixture.streams) == 2 and held.num_documents == 2


def test_multi_process_run_on_an_unprepared_source_says_run_prepare(micro_run, tmp_path, monkeypatch):
    recipe = load_recipe("micro", [f"data.source={DATA / 'mds' / 'raw'}", f"tokenizer.name_or_path={micro_run / 'encoder'}"])
    tokenizer = prepare_tokenizer(recipe, tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="run `twinlm prepare"):
        prepare_stores(recipe, tokenizer, tmp_path / "data", recipe.data.source)


def _prepared(folder: Path, ids, cls=1, sep=2):
    write_documents([np.asarray(ids)], folder / "train", np.uint16)
    write_documents([np.asarray(ids)], folder / "heldout", np.uint16)
    (folder / "prepare.json").write_text(json.dumps({"complete": True, "tokenizer": {
        "name_or_path": "other-tok", "cls_token_id": cls, "sep_token_id": sep}}))
    return folder


def test_prepared_folders_are_used_as_is_after_a_tokenizer_check(micro_run, tmp_path):
    recipe = load_recipe("micro", [f"tokenizer.name_or_path={micro_run / 'encoder'}"])
    tokenizer = prepare_tokenizer(recipe, tmp_path)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    good = _prepared(tmp_path / "good", [cls, 5, 6, sep], cls, sep)
    train, _ = prepare_stores(recipe, tokenizer, tmp_path / "data", str(good))
    assert train.path == good / "train" and not (tmp_path / "data").exists()
    with pytest.raises(UserError, match=r"train shard 0 holds token id 9999, outside the vocabulary"):
        prepare_stores(recipe, tokenizer, tmp_path / "data", str(_prepared(tmp_path / "big", [cls, 9999], cls, sep)))
    with pytest.raises(UserError, match="made with other-tok"):
        prepare_stores(recipe, tokenizer, tmp_path / "data", str(_prepared(tmp_path / "cls", [7, 8], 50281, 50282)))
    assert TokenStore.open(good / "train").num_tokens == 4  # nothing was touched


def test_training_order_files_become_an_ordered_store_served_in_file_order(micro_run, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from twinlm.data.sampling import BlockDataset

    folder = tmp_path / "order" / "checkpoint_000001"
    folder.mkdir(parents=True)
    rows = [[1, 10 + k, 11 + k, 12 + k] for k in range(400)]
    pq.write_table(pa.table({"input_ids": rows, "step": [1 + k // 4 for k in range(400)]}),
                   folder / "steps_000001_to_000100.parquet")
    recipe = load_recipe("micro", [f"data.source={tmp_path / 'order'}", f"tokenizer.name_or_path={micro_run / 'encoder'}"])
    tokenizer = prepare_tokenizer(recipe, tmp_path)
    train, heldout = prepare_stores(recipe, tokenizer, tmp_path / "data", recipe.data.source)
    name = "checkpoint_000001/steps_000001_to_000100.parquet"
    held = [k for k in range(400) if heldout_hash(recipe.training.seed, name, k) < recipe.data.heldout_share]
    assert held and train.index["ordered"] and (train.num_documents, heldout.num_documents) == (400 - len(held), len(held))
    ds = BlockDataset(train, 4, num_samples=10, seed=123)
    kept = [r for k, r in enumerate(rows) if k not in held]  # the rest, still in file order
    assert [ds[i]["input_ids"].tolist() for i in range(10)] == kept[:10]


def test_every_rank_of_a_multi_process_run_stops_before_the_barrier(tmp_path, monkeypatch):
    from twinlm.data.corpus import check_sources

    recipe = load_recipe("micro", [f"data.source={DATA / 'mds' / 'raw'}"])
    check_sources(recipe, tmp_path / "data")  # one process: it will be tokenized in-process
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(UserError, match=r"not prepared and this is a multi-process run \(WORLD_SIZE=4\); run `twinlm prepare"):
        check_sources(recipe, tmp_path / "data")
    check_sources(load_recipe("micro"), tmp_path / "data")  # the built-in world needs no preparation
