"""Pre-tokenized sources are read as they are: every sample's ids, in order, checked against the tokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from twinlm.data.sources.ids import check_framing, iter_token_documents, probe_source
from twinlm.errors import UserError

DATA = Path(__file__).parents[1] / "data"
TREE = DATA / "mds-pretokenized"
TEXTS = json.loads((DATA / "mds" / "expected_texts.json").read_text())
LEAF = "split_0-tokenized-chunked-1024-512-128-backfill-nodups"


def _bytes(i: int) -> list[int]:
    return list(TEXTS[i].encode("utf-8"))


def _expected_tree_order() -> list[list[int]]:
    # Leaves are read in sorted path order: train/code (odd texts), then train/web (even texts).
    return [_bytes(i) for i in range(1, 40, 2)] + [_bytes(i) for i in range(0, 40, 2)]


def test_mds_tree_of_leaf_streams_reads_every_sample_exactly():
    probe = probe_source(str(TREE))
    assert probe.kind == "tokens" and len(probe.units) == 2 and not probe.ordered
    docs = list(iter_token_documents(probe, vocab_size=260))
    assert [d.tolist() for d in docs] == _expected_tree_order()
    assert {d.dtype for d in docs[:20]} == {np.dtype("uint32")} and {d.dtype for d in docs[20:]} == {np.dtype("uint16")}


def test_one_leaf_and_a_merged_top_level_index(tmp_path):
    web = TREE / "train" / "web" / LEAF
    assert [d.tolist() for d in iter_token_documents(str(web))] == [_bytes(i) for i in range(0, 40, 2)]
    # streaming.base.util.merge_index: one index.json at the top, basenames with the subfolders.
    root = tmp_path / "merged"
    shutil.copytree(TREE, root)
    shards = []
    for leaf in sorted(root.rglob("index.json")):
        rel = leaf.parent.relative_to(root).as_posix()
        for entry in json.loads(leaf.read_text())["shards"]:
            for key in ("raw_data", "zip_data"):
                if entry.get(key):
                    entry[key]["basename"] = f"{rel}/{entry[key]['basename']}"
            shards.append(entry)
    (root / "index.json").write_text(json.dumps({"version": 2, "shards": shards}))
    probe = probe_source(str(root))
    assert len(probe.units) == 1  # the top-level index is the stream; leaves are not read twice
    # One index joining a uint32 leaf and a uint16 leaf: each shard decodes with its own encoding.
    docs = list(iter_token_documents(probe))
    assert [d.tolist() for d in docs] == _expected_tree_order()
    assert docs[0].dtype == np.uint32 and docs[-1].dtype == np.uint16


def _tables(tmp_path, docs):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": [f"d{i}" for i in range(len(docs))], "input_ids": pa.array(docs, pa.list_(pa.int32()))})
    pq.write_table(table, tmp_path / "part.parquet", row_group_size=7)
    with open(tmp_path / "part.jsonl", "w") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"id": f"d{i}", "input_ids": d}) + "\n")
    with pa.ipc.new_stream(str(tmp_path / "part.arrow"), table.schema) as w:
        w.write_table(table, max_chunksize=5)
    import datasets

    datasets.Dataset.from_dict({"input_ids": docs}).save_to_disk(str(tmp_path / "disk"))
    return ["part.parquet", "part.jsonl", "part.arrow", "disk"]


def test_parquet_jsonl_arrow_and_save_to_disk_id_columns(tmp_path):
    docs = [_bytes(i) for i in range(23)]
    for name in _tables(tmp_path, docs):
        probe = probe_source(str(tmp_path / name))
        assert probe.kind == "tokens", name
        assert [d.tolist() for d in iter_token_documents(probe)] == docs, name


def test_prepare_sees_the_same_id_columns_as_the_reader(tmp_path):
    from twinlm.data.prepare.format import PrepareSettings
    from twinlm.data.prepare.pipeline import plan_prepare

    for name in _tables(tmp_path, [_bytes(i) for i in range(9)]):  # .arrow included: one column probe for both
        assert plan_prepare(str(tmp_path / name), PrepareSettings()).kind == "tokens", name


def test_training_order_files_replay_in_file_and_step_order(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows, k = [], 0
    for ckpt in (1, 2):
        for first in (1, 101):
            folder = tmp_path / "order" / f"checkpoint_{ckpt:06d}"
            folder.mkdir(parents=True, exist_ok=True)
            steps = [first + s for s in range(3) for _ in range(2)]
            ids = [[k + j, 7, 7] for j in range(len(steps))]
            k += len(steps)
            rows += ids
            pq.write_table(pa.table({"input_ids": ids, "step": steps}),
                           folder / f"steps_{first:06d}_to_{first + 99:06d}.parquet")
    probe = probe_source(str(tmp_path / "order" / "checkpoint_*"))
    assert probe.ordered and probe.step_column == "step"
    assert [d.tolist() for d in iter_token_documents(probe)] == rows
    # A source spanning two phases (steps restart) is refused; so is a file out of step order.
    (tmp_path / "order" / "ext_000001").mkdir()
    shutil.copy(next((tmp_path / "order" / "checkpoint_000001").iterdir()), tmp_path / "order" / "ext_000001" / "s.parquet")
    with pytest.raises(UserError, match="spans phases"):
        probe_source(str(tmp_path / "order"))
    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(pa.table({"input_ids": [[1], [2]], "step": [2, 1]}), bad / "steps_1.parquet")
    with pytest.raises(UserError, match="not in 'step' order"):
        list(iter_token_documents(str(bad)))


def test_neither_text_nor_ids_names_the_columns(tmp_path):
    (tmp_path / "x.jsonl").write_text(json.dumps({"id": "a", "body": "hello there"}) + "\n")
    with pytest.raises(UserError, match="columns found: id, body"):
        probe_source(str(tmp_path / "x.jsonl"))


def test_text_column_naming_the_id_strings_is_refused(tmp_path):
    with pytest.raises(UserError, match="holds identifiers, not text"):
        probe_source(str(TREE), text_column="id")
    # A real text column beside the ids is tokenized (text wins: consistent with the recipe's tokenizer).
    assert probe_source(str(DATA / "mds" / "raw")).kind == "text"


def test_ids_outside_the_vocabulary_fail_naming_stream_and_id():
    with pytest.raises(UserError, match=r"stream .*code.* sample 0: token id 2\d\d is outside the vocabulary of tok"):
        list(iter_token_documents(str(TREE), vocab_size=100, tokenizer_name="tok"))


def _tok(cls, sep, vocab=300):
    return SimpleNamespace(cls_token_id=cls, bos_token_id=cls, sep_token_id=sep, eos_token_id=sep,
                           all_special_ids=[cls, sep], __len__=lambda: vocab)


def test_framing_is_checked_against_the_tokenizer(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    framed = [[50281, *_bytes(i), 50282] for i in range(5)]
    pq.write_table(pa.table({"input_ids": framed}), tmp_path / "f.parquet")
    probe = probe_source(str(tmp_path / "f.parquet"))
    check_framing(probe, _tok(50281, 50282))  # Ettin's CLS/SEP: fine
    with pytest.raises(UserError, match=r"start with id 50281, but bert's CLS/BOS is \[101\]"):
        check_framing(probe, _tok(101, 102), tokenizer_name="bert")
    # Unframed data (the byte fixture): every text starts with 'D', an ordinary id: no complaint.
    check_framing(probe_source(str(TREE)), _tok(256, 257))


def test_negative_or_non_integer_ids_are_refused(tmp_path):
    (tmp_path / "neg.jsonl").write_text(json.dumps({"input_ids": [5, -1, 7]}) + "\n")
    with pytest.raises(UserError, match="token id -1 is outside the vocabulary"):
        list(iter_token_documents(str(tmp_path / "neg.jsonl"), vocab_size=100))
    (tmp_path / "float.jsonl").write_text(json.dumps({"input_ids": [0.5, 1.5]}) + "\n")
    with pytest.raises(UserError, match="not a list of integer token ids"):
        list(iter_token_documents(str(tmp_path / "float.jsonl")))


@pytest.mark.parametrize("setting,match", [
    ("data.text_column=id", "holds identifiers, not text"),
    ("data.ids_column=tokens", "neither a token-ids column 'tokens' nor a text column 'text'; columns found: id, input_ids"),
])
def test_pretrain_refuses_before_touching_the_output_folder(tmp_path, capsys, setting, match):
    from twinlm.cli import main

    out = tmp_path / "o"
    code = main(["pretrain", "micro", "--out", str(out), "--set", f"data.source={TREE}", "--set", setting])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and match in err, err
    assert not out.exists()


def test_plan_refuses_proportions_that_do_not_sum_to_one(capsys):
    from twinlm.cli import main

    code = main(["plan", "micro", "--set", "phases.pretrain.streams=[{source: a, proportion: 0.7}, {source: b, proportion: 0.2}]"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "proportions sum to 0.9, not 1" in err and len(err.splitlines()) == 1


def test_token_ids_without_a_named_tokenizer_are_refused_up_front(tmp_path, capsys):
    from twinlm.cli import main

    code = main(["pretrain", "micro", "--out", str(tmp_path / "o"), "--set", f"data.source={TREE}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "set tokenizer.name_or_path" in err and not (tmp_path / "o").exists()
