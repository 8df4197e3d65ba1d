"""One held-out rule: a small share of a corpus by a hash of (seed, file, position), never most
of it, with caps; and the same documents held out whether `twinlm prepare` or a pretraining run's
own cache split the corpus."""

import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from twinlm.data.corpus import heldout_split, prepare_stores
from twinlm.data.heldout import StreamSplit, heldout_hash, pick_heldout
from twinlm.data.prepare.format import PrepareSettings
from twinlm.data.prepare.pipeline import prepare
from twinlm.data.store import TokenStore
from twinlm.data.tokenizer import for_twin, load_tokenizer, train_tokenizer
from twinlm.recipe import load_recipe

WORDS = "the quick brown fox jumps over a lazy dog while cats sleep in warm light".split()
PRETOKENIZED = Path(__file__).parents[1] / "data" / "mds-pretokenized" / "train"


def _split(n_docs, size=100, **data):
    recipe = load_recipe("micro", [f"data.{k}={v}" for k, v in data.items()])
    split = heldout_split(recipe, lambda _: size)
    train = list(split.training(("corpus.jsonl", k, k) for k in range(n_docs)))
    return split, split.heldout, train


def test_a_small_corpus_keeps_almost_everything_for_training():
    split, held, train = _split(233)  # the corpus that once lost 200 of its 233 documents
    assert 0 < len(held) <= 3 and sorted(held + train) == list(range(233))
    n = len(held)
    assert (f"training {233 - n} documents, {100 * (233 - n):,} tokens; held-out {n} documents, {100 * n} tokens"
            in split.report("c"))


def test_the_held_out_documents_are_the_lowest_hashes_under_the_caps():
    hashes = {k: heldout_hash(42, "corpus.jsonl", k) for k in range(20_000)}
    _, held, train = _split(10_000, size=1, heldout_share=0.01, heldout_max_documents=50)
    candidates = sorted((k for k, h in hashes.items() if k < 10_000 and h < 0.01), key=hashes.get)
    assert len(candidates) > 80 and held == sorted(candidates[:50])  # capped at 50, in source order
    assert train[-(len(candidates) - 50):] == sorted(candidates[50:])  # the rest train last, in source order
    _, held, train = _split(20_000, size=1000, heldout_max_tokens=50_000)
    assert len(held) == 50
    returned = [k for k in range(20_000) if hashes[k] < 0.005 and k not in held]
    assert returned and train[-len(returned):] == returned  # past the cap: trained last, in source order
    _, held, _ = _split(1000, heldout_share=0.1, heldout_max_documents=3)
    assert held == sorted(sorted(range(1000), key=hashes.get)[:3])


def test_more_than_five_percent_held_out_warns_and_never_all():
    split, held, train = _split(10)  # no hash below 0.5%: the lowest-hash document of ten
    assert held == [min(range(10), key=lambda k: heldout_hash(42, "corpus.jsonl", k))]
    assert train[split.lowest] == held[0]  # the caller drops it from the training store it wrote
    with pytest.warns(UserWarning, match="more than 5%"):
        assert "warning: 10%" in split.report("tiny")
    assert pick_heldout([(0.1, "a", 5), (0.2, "b", 5)], 2, 0.99, 10, None).returned == [(0.2, "b", 5)]
    assert pick_heldout([(0.1, "a", 5)], 1, 0.99, 10, None).held == []  # one document: it trains


def test_holding_back_gives_the_same_split_without_taking_a_document_back():
    def run(n, hold_back):
        split = StreamSplit(0.005, 2000, None, 42, lambda _: 1)
        train = list(split.training((("f", k, k) for k in range(n)), hold_back))
        return train, split.heldout, split.lowest

    train, held, lowest = run(50, False)
    assert held == [train[lowest]]  # the caller drops it from what it wrote
    again, held_back, none = run(50, True)
    assert held_back == held and none is None and sorted(again) == [k for k in train if k not in held]
    train, held, _ = run(2000, True)
    assert sorted(train + held) == list(range(2000)) and held and held[0] not in train


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory):
    rng = random.Random(1)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30))) for _ in range(300)]
    path = tmp_path_factory.mktemp("tok") / "tok"
    for_twin(train_tokenizer(texts, vocab_size=300, min_frequency=1), "encoder").save_pretrained(path)
    return path


def _corpus(root: Path, docs: int) -> Path:
    rng = random.Random(0)
    root.mkdir(parents=True)

    def text():
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30)))

    (root / "a.jsonl").write_text("".join(json.dumps({"text": text()}) + "\n" for _ in range(docs)))
    pq.write_table(pa.table({"text": [text() for _ in range(docs // 2)]}), root / "b.parquet", row_group_size=17)
    (root / "notes.txt").write_text("\n\n".join(text() for _ in range(docs // 4)))
    return root


def _docs(path: Path) -> list[list[int]]:
    store = TokenStore.open(path)
    out = []
    for i in range(len(store.shards)):
        offsets, tokens = store.document_offsets(i), np.asarray(store.shard_tokens(i))
        out += [tokens[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]
    return out


@pytest.mark.filterwarnings("ignore:.*held.out:UserWarning")  # small corpora: more than 5% held out
@pytest.mark.parametrize("docs, share", [(160, 0.1), (12, 0.005)])  # candidates; none (the lowest document)
def test_prepare_and_a_pretraining_cache_hold_out_the_same_documents(tmp_path, tok_path, docs, share):
    corpus = _corpus(tmp_path / "corpus", docs)
    tok = load_tokenizer(str(tok_path))
    settings = PrepareSettings(heldout_share=share, heldout_max_documents=5, unit_bytes=4000)
    prepare(str(corpus), tok, tmp_path / "P", settings, workers=1, progress=False)
    recipe = load_recipe("micro", [f"data.source={corpus}", f"tokenizer.name_or_path={tok_path}",
                                   f"data.heldout_share={share}", "data.heldout_max_documents=5"])
    train, heldout = prepare_stores(recipe, tok, tmp_path / "cache", str(corpus))
    held = _docs(heldout.path)
    assert held == _docs(tmp_path / "P" / "heldout") and 1 <= len(held) <= 5  # 160: candidates past the cap
    assert _docs(train.path) == _docs(tmp_path / "P" / "train")  # the same training stream, in the same order


@pytest.mark.filterwarnings("ignore:the held-out split is:UserWarning")
def test_pretokenized_sources_split_alike_by_both_paths(tmp_path, tok_path):
    tok = load_tokenizer(str(tok_path))
    prepare(str(PRETOKENIZED), tok, tmp_path / "P", PrepareSettings(heldout_share=0.1), workers=1, progress=False)
    recipe = load_recipe("micro", [f"data.source={PRETOKENIZED}", f"tokenizer.name_or_path={tok_path}",
                                   "data.heldout_share=0.1"])
    with pytest.warns(UserWarning, match="more than 5%"):
        train, heldout = prepare_stores(recipe, tok, tmp_path / "cache", str(PRETOKENIZED))
    assert _docs(heldout.path) == _docs(tmp_path / "P" / "heldout") and heldout.num_documents >= 1
    assert _docs(train.path) == _docs(tmp_path / "P" / "train")
