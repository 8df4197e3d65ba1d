"""`twinlm prepare`: the stores equal a one-process tokenization, whatever the workers, units or
machines; held-out draw; errors before work; no overwriting."""

import json
import os
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from twinlm.cli import main
from twinlm.data.prepare.format import PrepareSettings, is_prepared
from twinlm.data.prepare.pipeline import merge, parse_shard, prepare
from twinlm.data.sources.pieces import read_piece, source_pieces
from twinlm.data.sources.text import iter_texts
from twinlm.data.store import TokenStore
from twinlm.data.tokenizer import document_ids, load_tokenizer, train_tokenizer
from twinlm.errors import UserError

WORDS = "the quick brown fox jumps over a lazy dog while cats sleep in warm light ünï γ".split()


def _text(rng, lo=3, hi=40):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory):
    rng = random.Random(1)
    path = tmp_path_factory.mktemp("tok") / "tok"
    train_tokenizer([_text(rng) for _ in range(500)], vocab_size=300, min_frequency=1).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tok(tok_path):
    return load_tokenizer(str(tok_path))


def make_corpus(root: Path, docs: int = 300) -> Path:
    """A folder with every kind of file prepare splits: a large jsonl (byte ranges), a parquet
    file with several row groups, a csv, small text files (one document each)."""
    rng = random.Random(0)
    root.mkdir(parents=True)
    (root / "a.jsonl").write_text("".join(json.dumps({"text": _text(rng), "n": i}) + "\n" for i in range(docs)))
    pq.write_table(pa.table({"text": [_text(rng) for _ in range(docs // 2)]}), root / "b.parquet", row_group_size=17)
    (root / "c.csv").write_text("id,text\n" + "".join(f'{i},"{_text(rng)}"\n' for i in range(20)))
    (root / "d").mkdir()
    for i in range(12):
        (root / "d" / f"{i:02d}.txt").write_text(_text(rng, 50, 200) + "\n\nsecond paragraph, same document")
    return root


def flat(store_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(all token ids, global document start offsets + end) of a store."""
    store = TokenStore.open(store_path)
    starts, base = [], 0
    for i, shard in enumerate(store.shards):
        starts.append(np.asarray(store.document_offsets(i))[:-1] + base)
        base += int(shard["num_tokens"])
    offsets = np.concatenate([*starts, [base]]) if starts else np.array([0])
    return np.asarray(store.tokens[0:store.num_tokens]), offsets


def docs_of(store_path: Path) -> list[list[int]]:
    tokens, offsets = flat(store_path)
    return [tokens[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]


def run(source, tok, out, **kw):
    settings = PrepareSettings(**{k: kw.pop(k) for k in list(kw) if k in PrepareSettings.__dataclass_fields__})
    return prepare(str(source), tok, out, settings, progress=False, **kw)


def test_pieces_read_exactly_what_iter_texts_reads(tmp_path):
    rng = random.Random(3)
    text = "\ufeff" + "".join(_text(rng, 1, 9).replace("a ", "a\r").replace("o ", "o\n")
                              + rng.choice(["\n\n", "\n \n", "\r\n\r\n", "\n\n\n"]) for _ in range(300))
    (tmp_path / "p.txt").write_text(text, encoding="utf-8", newline="")
    for piece_bytes in (1, 5, 64, 999, 1 << 30):  # cuts anywhere: inside characters, lines, paragraphs
        pieces = source_pieces(str(tmp_path / "p.txt"), piece_bytes=piece_bytes)
        assert [t for p in pieces for _, t, _ in read_piece(p)] == list(iter_texts(str(tmp_path / "p.txt")))


def test_a_bad_file_mid_way_keeps_what_iter_texts_keeps(tmp_path, tok):
    paras = [f"paragraph {i} of a long file" for i in range(300)]
    paras[200] = "a NUL \0 makes the rest of the file unreadable"
    (tmp_path / "big.txt").write_text("\n\n".join(paras))
    with pytest.warns(UserWarning):
        expected = document_ids(tok, list(iter_texts(str(tmp_path / "big.txt"))))
    with pytest.warns(UserWarning, match=r"skipped the rest of 1 file\(s\) that are binary"):
        s = run(tmp_path / "big.txt", tok, tmp_path / "P", unit_bytes=400, heldout_share=0.0, workers=1)
    assert s.units > 10 and docs_of(tmp_path / "P" / "train") == expected and len(expected) == 200


def test_workers_and_units_do_not_change_the_stores(tmp_path, tok):
    corpus = make_corpus(tmp_path / "corpus")
    one = run(corpus, tok, tmp_path / "w1", workers=1, unit_bytes=2000, heldout_share=0.05)
    two = run(corpus, tok, tmp_path / "w2", workers=2, unit_bytes=2000, heldout_share=0.05)
    assert one.units == two.units > 4  # really cut into many units
    for split in ("train", "heldout"):
        a, b = flat(tmp_path / "w1" / split), flat(tmp_path / "w2" / split)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert TokenStore.open(tmp_path / "w1" / "train").num_documents == one.train_documents
    # Every document of the one-process tokenization is in exactly one split, in source order.
    reference = document_ids(tok, list(iter_texts(str(corpus))))
    train, held = docs_of(tmp_path / "w1" / "train"), docs_of(tmp_path / "w1" / "heldout")
    assert sorted(train + held) == sorted(reference)
    held_set = {tuple(d) for d in held}
    assert train == [d for d in reference if tuple(d) not in held_set]
    assert 0 < len(held) < 0.15 * len(reference)
    # Other unit sizes: same documents, same held-out choice (the hash follows the source position).
    run(corpus, tok, tmp_path / "big", workers=1, unit_bytes=1 << 30, heldout_share=0.05)
    assert docs_of(tmp_path / "big" / "heldout") == held and docs_of(tmp_path / "big" / "train") == train
    meta = json.loads((tmp_path / "w1" / "prepare.json").read_text())
    assert meta["complete"] and meta["train"]["documents"] == len(train)
    assert is_prepared(tmp_path / "w1") and not (tmp_path / "w1" / ".units").exists()
    assert load_tokenizer(str(tmp_path / "w1" / "tokenizer")).get_vocab() == tok.get_vocab()


def test_shards_roll_over_and_merge_equals_one_machine(tmp_path, tok):
    corpus = make_corpus(tmp_path / "corpus")
    kw = dict(unit_bytes=3000, shard_tokens=500, heldout_share=0.1, heldout_max_documents=5)
    whole = run(corpus, tok, tmp_path / "whole", workers=2, **kw)
    assert whole.shards > whole.units  # units wrote several shards each
    assert whole.heldout_documents == 5  # the cap binds; the other candidates went back to training
    elsewhere = tmp_path / "machine-b" / "corpus"  # another machine: same files, another path and mtime
    shutil.copytree(corpus, elsewhere)
    for f in elsewhere.rglob("*"):
        os.utime(f, (1e9, 1e9))
    parts = []
    for i in range(3):
        part = run(elsewhere if i == 1 else corpus, tok, tmp_path / f"part{i}", workers=1, shard=(i, 3), **kw)
        assert not part.complete and not is_prepared(tmp_path / f"part{i}")
        parts.append(tmp_path / f"part{i}")
    with pytest.raises(UserError, match=r"parts 2/3 are missing"):
        merge(parts[:2], tmp_path / "merged")
    merged = merge(parts, tmp_path / "merged")
    assert (merged.train_documents, merged.heldout_documents) == (whole.train_documents, whole.heldout_documents)
    for split in ("train", "heldout"):
        a, b = flat(tmp_path / "whole" / split), flat(tmp_path / "merged" / split)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    # Hard links, not copies: the part's shard file and the merged one are the same inode.
    first = TokenStore.open(tmp_path / "merged" / "train").shards[0]["tokens"]
    part_file = tmp_path / "part0" / ".units" / "u000000" / "shard-000000.bin"
    assert (tmp_path / "merged" / "train" / first).stat().st_ino == part_file.stat().st_ino
    assert is_prepared(tmp_path / "merged")
    with pytest.raises(UserError, match="exists; pass --overwrite to replace it"):
        merge(parts, tmp_path / "merged")
    with pytest.raises(UserError, match="is a complete prepared folder, not a part"):
        merge([tmp_path / "whole"], tmp_path / "again")


def test_heldout_never_takes_a_small_corpus(tmp_path, tok):
    (tmp_path / "one.txt").write_text("a single document")
    with pytest.warns(UserWarning, match="held-out split is empty"):
        s = run(tmp_path / "one.txt", tok, tmp_path / "p1", heldout_share=0.99)
    assert (s.train_documents, s.heldout_documents) == (1, 0)
    (tmp_path / "few.txt").write_text("\n\n".join(f"document {w}" for w in WORDS[:10]))
    with pytest.warns(UserWarning, match=r"held-out split is 1 of 10 documents \(10%\)"):
        s = run(tmp_path / "few.txt", tok, tmp_path / "p2")  # 0.5% of 10: the lowest hash is held out
    assert (s.train_documents, s.heldout_documents) == (9, 1)
    with pytest.warns(UserWarning, match="9 of 10 documents"):
        s = run(tmp_path / "few.txt", tok, tmp_path / "p3", heldout_share=0.999)
    assert s.train_documents == 1  # at least one document trains
    with pytest.warns(UserWarning, match="1 of 10 documents"):  # a token cap below every document
        s = run(tmp_path / "few.txt", tok, tmp_path / "p3b", heldout_share=0.999, heldout_max_tokens=1)
    assert (s.train_documents, s.heldout_documents) == (9, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = run(make_corpus(tmp_path / "big", docs=2000), tok, tmp_path / "p4", unit_bytes=20_000)
    assert 0 < s.heldout_documents < 0.02 * (s.train_documents + s.heldout_documents)


def test_errors_before_work_and_no_overwrite(tmp_path, tok, tok_path, capsys):
    (tmp_path / "rows.jsonl").write_text(json.dumps({"id": 1, "body": "x"}) + "\n")
    with pytest.raises(UserError, match=r"neither a token-ids column 'input_ids' nor a text column 'text'; columns found: id, body; name the text "
                       r"column with --text-column NAME"):
        run(tmp_path / "rows.jsonl", tok, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError, match="no such file or folder"):
        run(tmp_path / "missing.txt", tok, tmp_path / "out")
    for spec in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(UserError, match="--shard"):
            parse_shard(spec)
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(WORDS))
    assert main(["prepare", str(corpus), "--tokenizer", str(tmp_path / "no-tok"), "--out", str(tmp_path / "o")]) == 2
    assert "cannot load tokenizer" in capsys.readouterr().err and not (tmp_path / "o").exists()
    args = ["prepare", str(corpus), "--tokenizer", str(tok_path), "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(args) == 0
    before = (tmp_path / "o" / "train" / "index.json").read_text()
    assert main(args) == 2
    assert "already holds a complete prepared corpus; pass --overwrite" in capsys.readouterr().err
    assert main(["prepare", str(tmp_path / "o"), "--tokenizer", str(tok_path), "--out", str(tmp_path / "o2")]) == 2
    assert "is a twinlm prepared folder already" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--heldout-share", "0.3"]) == 0
    assert (tmp_path / "o" / "train" / "index.json").read_text() != before
    assert "prepared" in capsys.readouterr().out


def test_unfinished_prepare_with_another_tokenizer_is_refused(tmp_path, tok):
    corpus = make_corpus(tmp_path / "corpus")
    run(corpus, tok, tmp_path / "part", shard=(0, 2), unit_bytes=3000)  # unfinished as a whole
    other = train_tokenizer([_text(random.Random(9)) for _ in range(200)], vocab_size=280, min_frequency=1)
    with pytest.raises(UserError, match=r"unfinished prepare of a different job: tokenizer"):
        run(corpus, other, tmp_path / "part", shard=(0, 2), unit_bytes=3000)
    with pytest.raises(UserError, match=r"unit_bytes \(3000 there, 4000 now\)"):
        run(corpus, tok, tmp_path / "part", shard=(0, 2), unit_bytes=4000)
    units = sorted((tmp_path / "part" / ".progress").iterdir())
    assert units  # the refusals left the earlier work alone
    s = run(corpus, other, tmp_path / "part", shard=(0, 2), unit_bytes=3000, overwrite=True)
    assert s.units_done_now == s.units


def test_help_explains_the_three_forms(capsys):
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    out = capsys.readouterr().out
    assert "--tokenizer" in out and "--merge" in out and "--shard" in out and "resum" in out.lower()


MDS = Path(__file__).parents[1] / "data" / "mds"


def _source_kinds(tmp_path: Path) -> dict[str, tuple[str, dict]]:
    import datasets

    rng = random.Random(5)
    rows = [{"text": _text(rng), "id": i} for i in range(40)]
    (tmp_path / "l.json").write_text(json.dumps(rows))
    (tmp_path / "t.tsv").write_text("id\tbody\n" + "".join(f"{r['id']}\t{r['text']}\n" for r in rows))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:5]), "validation": datasets.Dataset.from_list(rows)}
                         ).save_to_disk(str(tmp_path / "disk"))
    (tmp_path / "txt").mkdir()
    for i in range(6):
        (tmp_path / "txt" / f"{i}.txt").write_text(_text(rng))
    return {"mds raw": (str(MDS / "raw"), {}), "mds zstd": (str(MDS / "zstd"), {}), "json list": (str(tmp_path / "l.json"), {}),
            "tsv": (str(tmp_path / "t.tsv"), {"text_column": "body"}),
            "save_to_disk": (str(tmp_path / "disk"), {"split": "validation"}), "glob": (f"{tmp_path}/txt/[1-4].txt", {})}


def test_every_text_format_prepares_to_its_texts(tmp_path, tok):
    for kind, (source, kw) in _source_kinds(tmp_path).items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no held-out asked for: no warning about its absence
            s = run(source, tok, tmp_path / kind.replace(" ", "_"), heldout_share=0.0, unit_bytes=1500, workers=1, **kw)
        expected = document_ids(tok, list(iter_texts(source, **kw)))
        assert docs_of(tmp_path / kind.replace(" ", "_") / "train") == expected, kind
        assert s.train_documents == len(expected) > 0


def test_hub_dataset_streams_through_one_unit(tmp_path, tok, monkeypatch):
    import datasets

    class Stream:
        column_names = ["text", "url"]

        def __iter__(self):
            yield from ({"text": f"hub document {i} " + WORDS[i % len(WORDS)], "url": "u"} for i in range(30))

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **kw: Stream())
    s = run("someowner/corpus", tok, tmp_path / "hub", workers=1)
    assert s.units == 1 and s.train_documents + s.heldout_documents == 30


def test_hub_dataset_with_several_files_is_cut_into_one_unit_each(tmp_path, tok, monkeypatch):
    import datasets

    files = []
    for i in range(3):
        files.append(tmp_path / f"part{i}.jsonl")
        files[-1].write_text("".join(json.dumps({"text": f"file {i} row {j} " + WORDS[j]}) + "\n" for j in range(9)))
    real = datasets.load_dataset("json", data_files=[str(f) for f in files], split="train", streaming=True)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **kw: real)  # a streamed dataset of 3 files
    s = run("someowner/corpus", tok, tmp_path / "hub", workers=1, heldout_share=0.0)
    assert s.units == 3
    assert docs_of(tmp_path / "hub" / "train") == document_ids(tok, list(iter_texts("someowner/corpus")))


def test_recipe_form_takes_source_tokenizer_and_seed_from_the_recipe(tmp_path, tok_path, capsys):
    corpus = make_corpus(tmp_path / "corpus")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\ndata:\n  source: {corpus}\ntokenizer:\n  name_or_path: {tok_path}\n"
                      "training:\n  seed: 7\n")
    assert main(["prepare", str(recipe), "--out", str(tmp_path / "P"), "--no-progress", "--workers", "1"]) == 0
    meta = json.loads((tmp_path / "P" / "prepare.json").read_text())
    assert meta["complete"] and meta["settings"]["seed"] == 7 and meta["tokenizer"]["name_or_path"] == str(tok_path)
    assert meta["source"]["source"] == str(corpus)
    # Without a tokenizer in the recipe, one is trained on the corpus and kept with the stores.
    recipe.write_text(f"name: r\ndata:\n  source: {corpus}\ntokenizer:\n  vocab_size: 280\n  min_frequency: 1\n")
    assert main(["prepare", str(recipe), "--out", str(tmp_path / "T"), "--no-progress", "--workers", "1"]) == 0
    assert len(load_tokenizer(str(tmp_path / "T" / "tokenizer"))) == 280
    assert main(["prepare", "micro", "--out", str(tmp_path / "W")]) == 2
    assert "built-in world" in capsys.readouterr().err
    # The recipe names its text column and split; the flags are refused, not silently ignored.
    assert main(["prepare", str(recipe), "--out", str(tmp_path / "X"), "--split", "validation"]) == 2
    assert "set the text column and split in it" in capsys.readouterr().err and not (tmp_path / "X").exists()
    # Another source with the recipe's tokenizer and settings: SOURCE --recipe RECIPE.
    other = tmp_path / "other.txt"
    other.write_text("\n\n".join(WORDS))
    assert main(["prepare", str(other), "--recipe", str(recipe), "--out", str(tmp_path / "O"), "--no-progress",
                 "--heldout-share", "0.5", "--heldout-max-tokens", "12"]) == 0
    meta = json.loads((tmp_path / "O" / "prepare.json").read_text())
    assert meta["source"]["source"] == str(other) and meta["tokenizer"]["vocab_size"] == 280
    assert 0 < meta["heldout"]["tokens"] <= 12 and meta["train"]["documents"] + meta["heldout"]["documents"] == len(WORDS)


def test_one_progress_bar_with_total(tmp_path, tok, capsys):
    corpus = make_corpus(tmp_path / "corpus")
    prepare(str(corpus), tok, tmp_path / "P", PrepareSettings(unit_bytes=3000), workers=1, progress=True)
    err = capsys.readouterr().err
    lines = {line.split(":")[0].strip() for line in err.replace("\r", "\n").splitlines() if "%|" in line}
    assert lines == {"preparing"}  # one bar, no library bars beside it
    assert "100%" in err and "tokens/s" in err


def test_pretokenized_streams_are_copied_as_they_are(tmp_path, tok):
    """Runs once data-core's reader (and its fixture copy) is merged; skipped before."""
    pretokenized = pytest.importorskip("twinlm.data.sources.ids")
    source = Path(__file__).parents[1] / "data" / "mds-pretokenized" / "train"
    if not source.is_dir():
        pytest.skip("tests/data/mds-pretokenized is not in this tree")
    expected = [d.tolist() for d in pretokenized.iter_token_documents(str(source))]
    one = run(source, tok, tmp_path / "w1", workers=1, heldout_share=0.1)
    run(source, tok, tmp_path / "w2", workers=2, heldout_share=0.1)
    assert one.units == 2  # one unit per leaf stream
    train, held = docs_of(tmp_path / "w1" / "train"), docs_of(tmp_path / "w1" / "heldout")
    assert sorted(train + held) == sorted(expected) and held  # ids unchanged, no framing added
    assert train == [d for d in expected if d not in held]
    assert (train, held) == (docs_of(tmp_path / "w2" / "train"), docs_of(tmp_path / "w2" / "heldout"))
    assert json.loads((tmp_path / "w1" / "prepare.json").read_text())["source"]["kind"] == "tokens"
