"""Mixtures: each stream gets its share of the phase's tokens, in one order shared by both twins."""

from __future__ import annotations

import numpy as np
import pytest

from twinlm.data.sampling import BlockDataset, Mixture, MixtureDataset, Stream, phase_dataset, share_lines
from twinlm.data.store import TokenStore, write_documents
from twinlm.errors import UserError
from twinlm.recipe import load_recipe

SEQ = 16


def _stores(tmp_path, sizes):
    """Stream s holds only token id s+1, so every served block names its stream."""
    stores = []
    for s, tokens in enumerate(sizes):
        write_documents([np.full(tokens, s + 1, np.uint16)], tmp_path / f"s{s}", np.uint16)
        stores.append(TokenStore.open(tmp_path / f"s{s}"))
    return stores


def _served(ds, n=None):
    items = ds.__getitems__(list(range(n or len(ds))))
    return np.array([int(x["input_ids"][0]) for x in items])


def test_realized_shares_match_proportions_within_one_percent(tmp_path):
    stores = _stores(tmp_path, [5_000, 300, 40_000])  # the small stream must repeat, the big one is sampled
    mix = Mixture([Stream(f"s{i}", st, proportion=p) for i, (st, p) in enumerate(zip(stores, [0.5, 0.2, 0.3]))])
    ds = MixtureDataset(mix, SEQ, 20_000, seed=3)
    served = _served(ds)
    for s, p in enumerate([0.5, 0.2, 0.3]):
        assert abs((served == s + 1).mean() - p) < 0.01
        assert abs((served[:8192] == s + 1).mean() - p) < 0.01, "every prefix of whole groups holds the shares"
    # The 300-token stream (18 blocks) is repeated; each repeat covers all its blocks.
    assert ds.epochs()[1] > 200
    lines = share_lines(mix, SEQ, 20_000, seed=3)
    assert len(lines) == 3 and "planned 20.00% / realized 20.00%" in lines[1]


def test_both_twins_see_identical_batches_and_seeds_matter(tmp_path):
    stores = _stores(tmp_path, [3_000, 7_000])
    mix = Mixture([Stream("a", stores[0], proportion=0.4), Stream("b", stores[1], proportion=0.6)])
    enc, dec = (phase_dataset(mix, SEQ, 3_000, seed=1) for _ in range(2))
    first = [enc[i]["input_ids"].tolist() for i in range(0, 3_000, 37)]
    assert first == [dec[i]["input_ids"].tolist() for i in range(0, 3_000, 37)]
    assert [enc.locate([i]) for i in range(50)] == [dec.locate([i]) for i in range(50)]
    other = phase_dataset(mix, SEQ, 3_000, seed=2)
    assert not np.array_equal(_served(enc, 500), _served(other, 500))
    # Each stream's blocks within one pass are all distinct (a permutation, not draws with replacement).
    s, k = enc.locate(np.arange(3_000))
    assert [enc.locate_one(i) for i in range(3_000)] == list(zip(s.tolist(), k.tolist())), "scalar = vector path"
    assert len(np.unique(k[s == 0])) == (s == 0).sum()


def test_repeat_weighs_the_natural_share(tmp_path):
    stores = _stores(tmp_path, [1_600, 4_800])  # 100 and 300 blocks
    mix = Mixture([Stream("small", stores[0], repeat=2), Stream("big", stores[1])])
    assert mix.shares(SEQ) == pytest.approx([0.4, 0.6])
    served = _served(MixtureDataset(mix, SEQ, 5_000, seed=0))
    assert abs((served == 1).mean() - 0.4) < 0.01


def test_one_stream_is_served_exactly_like_its_store(tmp_path):
    (store,) = _stores(tmp_path, [2_000])
    mix = Mixture([Stream("only", store)])
    ds = phase_dataset(mix, SEQ, 300, seed=4)
    assert isinstance(ds, BlockDataset)
    assert np.array_equal(np.asarray(ds.order), np.asarray(BlockDataset(store, SEQ, 300, 4).order))


@pytest.mark.parametrize("streams,match", [
    ("[{source: a, proportion: 0.5}, {source: b, proportion: 0.4}]", "proportions sum to 0.9, not 1"),
    ("[{source: a, proportion: 0.5}, {source: b, repeat: 2}]", "give every stream a proportion"),
    ("[{source: a, proportion: 0.5, repeat: 1}]", "sets both proportion and repeat"),
    ("[{source: a, proportion: 1.5}]", r"proportion must be in \(0, 1\]"),
    ("[{source: a, wieght: 1}]", "unknown recipe key 'phases\\[0\\].streams\\[0\\].wieght'; valid keys here: source"),
])
def test_bad_stream_lists_are_one_line_errors_at_load_time(streams, match):
    with pytest.raises(UserError, match=match):
        load_recipe("micro", [f"phases.pretrain.streams={streams}"])


def test_a_pretokenized_mixture_trains_and_its_first_lines_show_the_shares(micro_run, tmp_path, capsys):
    """Two pre-tokenized leaf streams, 25/75: the run prints planned and realized shares, and
    both twins' trainers deal out the same batches."""
    import json
    from pathlib import Path

    import torch

    from twinlm.data.corpus import phase_data, prepare_tokenizer
    from twinlm.models import build_config, build_twin
    from twinlm.objectives import IGNORE
    from twinlm.recipe import recipe_from_dict
    from twinlm.train.pretrain import build_phase_trainer, pretrain

    tree = Path(__file__).parents[1] / "data" / "mds-pretokenized"
    code, web = sorted(str(p.parent) for p in tree.rglob("index.json"))
    base = json.loads(json.dumps(load_recipe("micro").to_dict()))
    base["phases"] = [{**base["phases"][0], "tokens": 2048, "seq_len": 32, "warmup_tokens": 256,
                       "streams": [{"source": code, "proportion": 0.25}, {"source": web, "proportion": 0.75}]}]
    base["tokenizer"] = {"name_or_path": str(micro_run / "encoder")}
    base["data"]["heldout_share"] = 0.05
    recipe = recipe_from_dict(base)
    tokenizer = prepare_tokenizer(recipe, tmp_path)
    mixture, _ = phase_data(recipe, tokenizer, tmp_path / "data")["pretrain"]
    phase = recipe.phases[0]
    seen = {}
    for twin in ("encoder", "decoder"):
        model = build_twin(twin, build_config(twin, recipe.model, tokenizer), seed=0)
        trainer = build_phase_trainer(recipe, tmp_path / twin, twin, model, tokenizer, phase, 8, mixture)
        batches = []
        for step in trainer.get_train_dataloader():  # one item per optimizer step: its micro-batches
            for batch in step:
                ids = batch["input_ids"].clone()
                if twin == "encoder":
                    ids = torch.where(batch["labels"] != IGNORE, batch["labels"], ids)
                batches.append(ids)
        seen[twin] = torch.cat(batches)
    assert torch.equal(seen["encoder"], seen["decoder"])
    capsys.readouterr()
    pretrain(recipe, tmp_path / "run", twins=["decoder"])
    out = capsys.readouterr().out
    assert f"stream {code}: planned 25.00% / realized 25.00%" in out
    assert f"stream {web}: planned 75.00% / realized 75.00%" in out
    assert (tmp_path / "run" / "decoder" / "model.safetensors").exists()


def test_streams_of_different_id_widths_read_back_to_back(tmp_path):
    write_documents([np.array([1, 2, 3], np.uint16)], tmp_path / "a", np.uint16)
    write_documents([np.array([70_000, 5], np.uint32)], tmp_path / "b", np.uint32)
    both = TokenStore.concat([TokenStore.open(tmp_path / "a"), TokenStore.open(tmp_path / "b")])
    assert both.dtype == np.uint32 and both.tokens[0:5].tolist() == [1, 2, 3, 70_000, 5]
    assert both.tokens[2:4].tolist() == [3, 70_000]


def test_plan_prints_stream_shares_and_prepared_sizes(tmp_path):
    import json

    from twinlm.plan import data_plan_lines

    for name, tokens in (("small", 1_600), ("big", 4_800)):
        for part in ("train", "heldout"):
            write_documents([np.full(tokens if part == "train" else 40, 7, np.uint16)], tmp_path / name / part, np.uint16)
        (tmp_path / name / "prepare.json").write_text(json.dumps({"complete": True}))
    streams = f"[{{source: {tmp_path / 'small'}, repeat: 2}}, {{source: {tmp_path / 'big'}}}]"
    lines = data_plan_lines(load_recipe("micro", [f"phases.pretrain.streams={streams}"]))
    small = next(line for line in lines if "small" in line)
    assert "planned 40.00% / realized 39.84%" in small  # 102 of the phase's 256 blocks
    assert "train 1 documents, 1,600 tokens; held-out 1 documents, 40 tokens" in small
    unprepared = data_plan_lines(load_recipe("micro", ["phases.pretrain.streams=[{source: x}, {source: y, repeat: 3}]"]))
    assert any("repeat 3 x its size (share known once every stream is prepared)" in line for line in unprepared)
