"""Fine-tuning data: tables matched to losses by column name, BEIR folders, recipes, CLI errors."""

from __future__ import annotations

import json

import datasets
import pytest

from twinlm.cli import main
from twinlm.errors import UserError
from twinlm.finetune.data import (
    LossColumns,
    load_beir,
    load_table,
    match_columns,
    world_retrieval_eval,
    world_table,
    write_beir,
)
from twinlm.finetune.recipe import load_finetune_recipe

RANKING = LossColumns(("anchor", "positive"), repeat="negative")


def test_columns_renamed_reordered_and_extras_dropped(capsys):
    table = datasets.Dataset.from_list([{"id": 1, "negative_2": "n2", "passage": "p", "question": "q", "negative": "n"}])
    out = match_columns(table, RANKING, {"anchor": "question", "positive": "passage"}, "MNRL")
    assert out.column_names == ["anchor", "positive", "negative", "negative_2"]
    assert out[0] == {"anchor": "q", "positive": "p", "negative": "n", "negative_2": "n2"}
    assert "id" in capsys.readouterr().err


def test_column_mismatch_names_expected_and_found():
    table = datasets.Dataset.from_list([{"question": "q", "passage": "p"}])
    with pytest.raises(UserError) as err:
        match_columns(table, RANKING, {}, "MultipleNegativesRankingLoss")
    msg = str(err.value)
    assert "anchor" in msg and "positive" in msg and "question" in msg and "passage" in msg and "\n" not in msg
    with pytest.raises(UserError, match="nope"):
        match_columns(table, RANKING, {"anchor": "nope"}, "X")


def test_label_column_is_last_and_required():
    needs = LossColumns(("sentence1", "sentence2"), label="score")
    table = datasets.Dataset.from_list([{"score": 0.5, "sentence2": "b", "sentence1": "a"}])
    assert match_columns(table, needs, {}, "CoSENTLoss").column_names == ["sentence1", "sentence2", "score"]
    with pytest.raises(UserError, match="score"):
        match_columns(table.remove_columns("score"), needs, {}, "CoSENTLoss")


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "parquet", "disk"])
def test_load_table_formats(tmp_path, suffix):
    rows = [{"anchor": f"q{i}", "positive": f"p{i}"} for i in range(5)]
    table = datasets.Dataset.from_list(rows)
    path = tmp_path / f"data.{suffix}"
    {"jsonl": lambda: table.to_json(path), "csv": lambda: table.to_csv(path),
     "parquet": lambda: table.to_parquet(path), "disk": lambda: table.save_to_disk(path)}[suffix]()
    loaded = load_table(str(path), max_rows=3)
    assert loaded.to_list() == rows[:3]


def test_empty_and_missing_data(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UserError):
        load_table(str(empty))
    with pytest.raises(UserError, match="no such file"):
        load_table(str(tmp_path / "missing.jsonl"))
    from twinlm.cli import build_parser
    from twinlm.commands.finetune import recipe_from_args

    argv = ["finetune", "dense", "--out", str(tmp_path / "o"), "--columns", "anchor=question", "--columns"]
    with pytest.raises(UserError, match="--columns takes KEY=VALUE pairs such as NEW=OLD, got 'anchor'"):
        recipe_from_args(build_parser().parse_args([*argv, "anchor"]))
    recipe = recipe_from_args(build_parser().parse_args([*argv, "positive=answer", "--base", "b", "--data", "d.jsonl"]))
    assert (recipe.columns, recipe.base_model, recipe.train_data) == ({"anchor": "question", "positive": "answer"},
                                                                      "b", "d.jsonl")


def test_beir_roundtrip_and_missing_qrels(tmp_path, micro_world):
    task = world_retrieval_eval(micro_world)
    folder = write_beir(task, tmp_path / "beir")
    assert load_beir(folder) == task
    (folder / "qrels" / "test.tsv").unlink()
    with pytest.raises(UserError, match="qrels"):
        load_beir(folder)


def test_world_tables_fit_their_losses(micro_world):
    train_people, heldout = micro_world.split()
    triplets = world_table(micro_world, RANKING)
    assert set(triplets.column_names) == {"anchor", "positive", "negative"}
    assert all(r["positive"] != r["negative"] for r in triplets)
    pairs = world_table(micro_world, LossColumns(("sentence1", "sentence2"), label="label"))
    assert set(pairs["label"]) == {0, 1}
    task = world_retrieval_eval(micro_world)
    assert len(task["queries"]) == len(heldout) and len(task["corpus"]) == len(micro_world.people)
    # Questions are about held-out people only: none of them was trained on.
    names = {p.name for p in train_people}
    assert not any(n in q for q in task["queries"].values() for n in names if n not in {p.name for p in heldout})


def test_recipe_strict_and_overrides():
    recipe = load_finetune_recipe(None, "dense", ["dense.matryoshka_dims=[32,16]"], {"base_model": "x"})
    assert recipe.dense.matryoshka_dims == [32, 16] and recipe.kind == "dense"
    with pytest.raises(UserError, match="pooling.*valid"):
        load_finetune_recipe(None, "dense", ["dense.pooling=avg"], {"base_model": "x"})
    with pytest.raises(UserError) as err:
        load_finetune_recipe(None, "sparse", ["sparse.varient=csr"], {"base_model": "x"})
    assert "variant" in str(err.value)


def test_cli_column_mismatch_is_one_line_before_training(tmp_path, micro_run, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}", "text": f"t{i}"}) + "\n" for i in range(4)))
    out = tmp_path / "out"
    code = main(["finetune", "dense", "--base", str(micro_run / "encoder"), "--data", str(data), "--out", str(out)])
    stderr = capsys.readouterr().err
    err = [line for line in stderr.splitlines() if line.startswith("twinlm finetune: error")]
    assert code == 2 and len(err) == 1 and "Traceback" not in stderr
    assert "anchor" in err[0] and "positive" in err[0] and "question" in err[0]
    assert not out.exists()


def test_cli_refuses_to_overwrite_and_wrong_loss(tmp_path, micro_run, capsys):
    out = tmp_path / "done"
    out.mkdir()
    (out / "keep.txt").write_text("earlier result")
    assert main(["finetune", "dense", "--base", str(micro_run / "encoder"), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "keep.txt").exists()
    code = main(["finetune", "dense", "--base", str(micro_run / "encoder"), "--loss", "SpladeLoss",
                 "--out", str(tmp_path / "x")])
    assert code == 2 and "sparse" in capsys.readouterr().err
