"""Every kind of text source, and every kind of bad input, on tiny real files."""

import json
import shutil
import warnings
from pathlib import Path

import datasets
import huggingface_hub.constants
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from twinlm.data.sources import describe_source, iter_texts, load_texts, source_fingerprint
from twinlm.errors import UserError

MDS = Path(__file__).parents[1] / "data" / "mds"
EXPECTED = json.loads((MDS / "expected_texts.json").read_text(encoding="utf-8"))
ROWS = [{"id": 1, "text": "first doc"}, {"id": 2, "text": ""}, {"id": 3, "text": "third doc"}]


def _load(source, **kw):
    """load_texts, failing the test on any warning (binary files must be expected explicitly)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_texts(str(source), **kw)


def test_single_txt_file_is_one_text_per_paragraph(tmp_path):
    f = tmp_path / "corpus.txt"
    f.write_text("\ufeffpara one\nline two\n\n\n  \npara two\r\n\r\nlast\n", encoding="utf-8")
    assert _load(f) == ["para one\nline two", "para two", "last"]
    assert describe_source(str(f)) == "text file"


def _folder(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "b.txt").write_text("doc b\n\nstill doc b\n")
    (root / "a.md").write_text("doc a")
    (root / "sub" / "c.txt").write_text("doc c")
    (root / "empty.txt").write_text("  \n")
    (root / ".hidden.txt").write_text("hidden")
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (root / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    return root


def test_folder_reads_each_file_as_one_text_and_counts_binary(tmp_path):
    root = _folder(tmp_path / "corpus")
    with pytest.warns(UserWarning, match=r"skipped 2 file\(s\) that are binary or not valid UTF-8"):
        texts = load_texts(str(root))
    assert texts == ["doc a", "doc b\n\nstill doc b", "doc c"]  # sorted, sub/ after files of its parent
    assert describe_source(str(root)) == "folder (6 files)"  # hidden files are left out


def test_glob_matches_files_sorted(tmp_path):
    root = _folder(tmp_path / "corpus")
    # A glob's files are read like a folder's: one text per plain text file, in sorted order.
    assert _load(f"{root}/**/[bc].txt") == ["doc b\n\nstill doc b", "doc c"]
    with pytest.warns(UserWarning, match=r"skipped 1 file"):
        assert load_texts(f"{root}/*.txt") == ["doc b\n\nstill doc b"]  # latin1.txt skipped
    assert describe_source(f"{root}/**/[bc].txt") == "glob (2 files)"
    with pytest.raises(UserError, match="matches no files"):
        iter_texts(f"{root}/*.nothing")


def test_jsonl_json_csv_tsv_parquet(tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n")
    assert _load(jsonl) == ["first doc", "third doc"]
    as_list = tmp_path / "d.json"
    as_list.write_text(json.dumps(ROWS))
    assert _load(as_list) == ["first doc", "third doc"]
    lines_named_json = tmp_path / "lines.json"
    lines_named_json.write_text(jsonl.read_text())
    assert _load(lines_named_json) == ["first doc", "third doc"]
    long = "x" * 200_000  # beyond the csv module's default field size limit
    csv_file = tmp_path / "d.csv"
    csv_file.write_text(f'id,body\n1,"two\nlines, one comma"\n2,{long}\n3,\n', newline="")
    assert _load(csv_file, text_column="body") == ["two\nlines, one comma", long]
    tsv = tmp_path / "d.tsv"
    tsv.write_text("body\tid\nhello tab\t1\n")
    assert _load(tsv, text_column="body") == ["hello tab"]
    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "content": ["p1", None, "p3"]}), parquet)
    assert _load(parquet, text_column="content") == ["p1", "p3"]
    assert [describe_source(str(p)) for p in (jsonl, as_list, csv_file, parquet)] == [
        "jsonl file", "json file", "csv file", "parquet file"]


def test_save_to_disk_dataset_and_dataset_dict(tmp_path):
    ds = datasets.Dataset.from_dict({"text": ["one", "two", " "], "n": [1, 2, 3]})
    ds.save_to_disk(str(tmp_path / "single"))
    assert _load(tmp_path / "single") == ["one", "two"]
    dd = datasets.DatasetDict({"train": ds, "validation": datasets.Dataset.from_dict({"text": ["val"]})})
    dd.save_to_disk(str(tmp_path / "dict"))
    assert _load(tmp_path / "dict", split="validation") == ["val"]
    assert describe_source(str(tmp_path / "dict")) == "datasets folder (save_to_disk)"
    with pytest.raises(UserError, match="no split 'test'.*splits found: train, validation"):
        iter_texts(str(tmp_path / "dict"), split="test")


@pytest.mark.parametrize("kind", ["raw", "zstd"])
def test_mds_folder(kind):
    assert _load(MDS / kind) == EXPECTED
    assert describe_source(str(MDS / kind)) == f"MDS shards (10 shards, {kind})"
    with pytest.raises(UserError, match=r"no column 'input_ids' in the text \(str\) columns"):
        iter_texts(str(MDS / kind), text_column="input_ids")


def test_folder_holding_an_mds_subfolder_and_text(tmp_path):
    shutil.copytree(MDS / "zstd", tmp_path / "mix" / "b_shards")
    (tmp_path / "mix" / "a.txt").write_text("plain")
    assert _load(tmp_path / "mix") == ["plain", *EXPECTED]


def test_limit_and_laziness(tmp_path):
    assert _load(MDS / "raw", limit=3) == EXPECTED[:3]
    with pytest.raises(UserError, match="limit must be a positive"):
        iter_texts(str(MDS / "raw"), limit=0)


def test_missing_paths():
    for source in ["./nope.txt", "/no/such/folder", "data/nope/deeper", "corpus.jsonl", "has space"]:
        with pytest.raises(UserError, match="no such file or folder"):
            iter_texts(source)


def test_missing_column_names_the_columns_found(tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text(json.dumps({"body": "x", "id": 1}) + "\n")
    with pytest.raises(UserError, match=r"no column 'text'.*columns found: body, id.*--set data.text_column="):
        iter_texts(str(jsonl))
    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.table({"content": ["p"]}), parquet)
    with pytest.raises(UserError, match="columns found: content"):
        iter_texts(str(parquet))
    (tmp_path / "d.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="columns found: a, b"):
        iter_texts(str(tmp_path / "d.csv"))


def test_a_bad_file_deep_in_a_folder_fails_before_reading(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "fine"}) + "\n")
    (tmp_path / "z.jsonl").write_text(json.dumps({"body": "wrong column"}) + "\n")
    with pytest.raises(UserError, match="z.jsonl"):
        iter_texts(str(tmp_path))  # raises at the call, not after consuming a.jsonl


def test_non_text_values_and_invalid_json(tmp_path):
    (tmp_path / "n.jsonl").write_text(json.dumps({"text": 5}) + "\n")
    with pytest.raises(UserError, match="holds int, not text"):
        iter_texts(str(tmp_path / "n.jsonl"))
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: not valid JSON"):
        load_texts(str(tmp_path / "bad.jsonl"))


def test_empty_corpus_and_all_binary(tmp_path):
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(UserError, match="empty corpus"):
        iter_texts(str(tmp_path / "empty.txt"))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "a.bin").write_bytes(b"\x00\x01\x02")
    (tmp_path / "bin" / "b.txt").write_bytes(b"\xff\xfe bad utf-8")
    with pytest.raises(UserError, match=r"empty corpus.*2 binary or non-UTF-8 file\(s\) skipped"):
        iter_texts(str(tmp_path / "bin"))
    with pytest.raises(UserError, match="empty corpus"):
        iter_texts(str(tmp_path / "bin" / "a.bin"))


class _FakeStream:
    column_names = ["text", "url"]

    def __iter__(self):
        yield from [{"text": "hub one", "url": "u"}, {"text": "hub two", "url": "v"}]


def test_hub_name_goes_to_load_dataset(monkeypatch):
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **kw: calls.append((a, kw)) or _FakeStream())
    assert _load("someowner/somecorpus", split="validation") == ["hub one", "hub two"]
    assert calls == [(("someowner/somecorpus",), {"split": "validation", "streaming": True})]
    assert describe_source("someowner/somecorpus") == "hub dataset"
    with pytest.raises(UserError, match="columns found: text, url"):
        iter_texts("wikitext", text_column="body")


def test_unreachable_hub_is_a_user_error(monkeypatch):
    # Offline mode makes the real datasets code fail at once, as it does here without network.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="'someowner/somecorpus' is not a local file or folder.*hub"):
        iter_texts("someowner/somecorpus")


def test_fingerprint_is_stable_and_tracks_changes(tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    (root / "a.txt").write_text("hello")
    fp = source_fingerprint(str(root), "text", "train")
    assert fp == source_fingerprint(str(root), "text", "train") and len(fp) == 16
    assert fp != source_fingerprint(str(root), "body", "train")
    (root / "a.txt").write_text("hello, world")
    assert fp != source_fingerprint(str(root), "text", "train")
    hub = source_fingerprint("owner/name", "text", "train")
    assert hub == source_fingerprint("owner/name", "text", "train") != source_fingerprint("owner/other", "text", "train")
    assert source_fingerprint(str(MDS / "zstd"), "text", "train") != source_fingerprint(str(MDS / "raw"), "text", "train")
