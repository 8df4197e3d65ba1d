"""Recipes: every shipped recipe loads and plans; strict keys; shapes match their names."""

from __future__ import annotations

import pytest

from twinlm.cli import main
from twinlm.errors import UserError
from twinlm.models import build_config, build_twin, count_parameters, estimate_parameters
from twinlm.plan import plan
from twinlm.recipe import RECIPES_DIR, SIZES, ModelShape, load_recipe, recipe_from_dict

SHIPPED = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def test_shipped_recipes_exist():
    assert {"nano", "micro", "ettin-17m", "ettin-32m", "ettin-68m", "ettin-150m", "ettin-400m", "ettin-1b"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_recipe_loads_and_plans(name, capsys):
    recipe = load_recipe(name)
    gpus = 8 if name.startswith("ettin") else 1  # the CPU recipes' batches (8, 32) are for one process
    rows = plan(recipe, gpus=gpus)
    assert len(rows) == 2 * len(recipe.phases)
    assert all(r.steps > 0 and r.flops > 0 and r.hours > 0 for r in rows)
    assert main(["plan", name, "--gpus", str(gpus)]) == 0
    out = capsys.readouterr().out
    for phase in recipe.phases:
        assert phase.name in out


def test_ettin_recipes_follow_the_published_phases():
    r = load_recipe("ettin-150m")
    assert [p.name for p in r.phases] == ["pretrain", "extension", "decay"]
    pre, ext, dec = r.phases
    assert (pre.tokens, pre.seq_len, pre.mask_ratio, pre.rope_theta) == (1.7e12, 1024, 0.3, 10_000)
    assert (ext.lr_start, ext.lr_end, ext.rope_theta, ext.seq_len) == (1.0, 0.5, 160_000, 8192)
    assert (dec.lr_start, dec.lr_end, dec.mask_ratio) == (0.5, 0.02, 0.15)
    assert (r.training.lr, r.training.weight_decay, r.training.global_batch) == (8e-4, 1e-5, 4608)
    assert tuple(r.training.betas) == (0.9, 0.98) and r.training.eps == 1e-6


class _FakeEttinTokenizer:
    cls_token_id, sep_token_id, pad_token_id, bos_token_id, eos_token_id = 50281, 50282, 50283, 50281, 50282

    def __len__(self):
        return 50_368


@pytest.mark.parametrize("size", ["17m", "32m", "68m", "150m", "400m", "1b"])
def test_ettin_shapes_match_their_names(size):
    expected = float(size[:-1]) * (1e9 if size.endswith("b") else 1e6)
    n = estimate_parameters(ModelShape(size=size), 50_368)
    assert abs(n - expected) / expected < 0.05, (size, n)


@pytest.mark.parametrize("size", ["micro", "17m"])
@pytest.mark.parametrize("twin", ["encoder", "decoder"])
def test_parameter_estimate_equals_built_model(size, twin):
    shape = ModelShape(size=size)
    model = build_twin(twin, build_config(twin, shape, _FakeEttinTokenizer()), seed=0)
    assert count_parameters(model) == estimate_parameters(shape, 50_368, twin)
    assert model.config.hidden_size == SIZES[size]["hidden"]


def test_twins_share_every_shape_number():
    shape = ModelShape(size="17m")
    enc = build_config("encoder", shape, _FakeEttinTokenizer()).to_dict()
    dec = build_config("decoder", shape, _FakeEttinTokenizer()).to_dict()
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
                "layer_types", "local_attention", "rope_parameters", "norm_eps"):
        assert enc[key] == dec[key], key
    assert enc["layer_types"][:4] == ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]


def test_unknown_key_names_key_and_valid_keys():
    with pytest.raises(UserError) as err:
        recipe_from_dict({"training": {"lrr": 1}})
    msg = str(err.value)
    assert "training.lrr" in msg and "weight_decay" in msg


def test_unknown_size_lists_sizes():
    with pytest.raises(UserError, match="unknown model size 'huge'.*17m"):
        recipe_from_dict({"model": {"size": "huge"}})


def test_block_longer_than_max_positions_fails_at_load():
    with pytest.raises(UserError, match="exceeds model.max_position_embeddings"):
        load_recipe("micro", ["phases.decay.seq_len=4096"])


def test_overrides_reach_nested_fields_and_named_phases():
    r = load_recipe("nano", ["training.lr=1e-4", "phases.decay.tokens=5000", "data.world.num_people=50"])
    assert r.training.lr == 1e-4
    assert r.phases[2].tokens == 5000 and r.phases[0].tokens != 5000
    assert r.data.world.num_people == 50
    with pytest.raises(UserError, match="no such phase"):
        load_recipe("nano", ["phases.warmup.tokens=1"])


def test_bad_value_type_names_field():
    with pytest.raises(UserError, match="training.global_batch"):
        load_recipe("micro", ["training.global_batch=lots"])


def test_recipe_round_trips_through_yaml(tmp_path):
    r = load_recipe("ettin-17m")
    r.dump(tmp_path / "r.yaml")
    again = load_recipe(str(tmp_path / "r.yaml"))
    assert again.to_dict() == r.to_dict()


@pytest.mark.parametrize("path", sorted((RECIPES_DIR / "finetune").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_finetune_recipe_loads(path):
    from twinlm.finetune.recipe import load_finetune_recipe

    recipe = load_finetune_recipe(str(path), path.stem, ["base_model=some/model"])
    assert recipe.kind == path.stem
    with pytest.raises(UserError, match="nope"):
        load_finetune_recipe(str(path), path.stem, ["base_model=some/model", "nope=1"])


@pytest.mark.parametrize("path", sorted((RECIPES_DIR / "convert").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_conversion_recipe_loads(path):
    from twinlm.convert.llm2vec import load_llm2vec_config

    cfg = load_llm2vec_config(str(path), [])
    assert 0 < cfg.mask_ratio < 1
    with pytest.raises(UserError, match="nope"):
        load_llm2vec_config(str(path), ["nope=1"])
