"""Hard-negative mining: negatives are never the positives, options are honoured, bad input is refused."""

from __future__ import annotations

import datasets
import pytest

from twinlm.errors import UserError
from twinlm.finetune.mining import check_negatives, mine, negatives_of
from twinlm.finetune.recipe import MiningSection


@pytest.fixture(scope="module")
def dense(micro_run):
    from twinlm.finetune.mining import load_dense

    return load_dense(str(micro_run / "encoder"))  # mean pooling over the micro twin


@pytest.fixture(scope="module")
def pairs(micro_world):
    from twinlm.world.generator import retrieval_pairs

    train, _ = micro_world.split()
    return datasets.Dataset.from_list(retrieval_pairs(micro_world, train[:40], per_person=1))


@pytest.mark.parametrize("fmt", ["n-tuple", "triplet", "labeled-pair", "labeled-list"])
def test_mined_negatives_are_not_positives(dense, pairs, fmt):
    section = MiningSection(num_negatives=2, range_max=10)
    mined = mine(pairs, dense, section, fmt, verbose=False)
    positive_of = dict(zip(pairs["anchor"], pairs["positive"]))
    found = 0
    for row in mined:
        for negative in negatives_of(row, fmt):
            assert negative != positive_of[row["anchor"]]
            assert negative in set(pairs["positive"])  # drawn from the corpus (the positives)
            found += 1
    assert found >= len(pairs)  # at least one negative per pair (most get two)
    if fmt == "n-tuple":
        assert mined.column_names == ["anchor", "positive", "negative_1", "negative_2"]


def test_range_and_sampling_options(dense, pairs):
    top = mine(pairs, dense, MiningSection(num_negatives=1, range_max=5), "triplet", verbose=False)
    skipped = mine(pairs, dense, MiningSection(num_negatives=1, range_min=3, range_max=8), "triplet", verbose=False)
    # Skipping the 3 most similar texts changes which negative is picked for most anchors.
    first = dict(zip(top["anchor"], top["negative"]))
    changed = sum(first.get(a) != n for a, n in zip(skipped["anchor"], skipped["negative"]))
    assert changed >= len(skipped) // 2
    rnd = mine(pairs, dense, MiningSection(num_negatives=1, range_max=20, sampling_strategy="random"), "triplet",
               verbose=False)
    assert len(rnd) == len(pairs)


def test_check_negatives_catches_a_positive():
    table = datasets.Dataset.from_list([{"anchor": "q", "positive": "p"}])
    poisoned = datasets.Dataset.from_list([{"anchor": "q", "positive": "p", "negative_1": "p"}])
    with pytest.raises(RuntimeError, match="positive as a negative"):
        check_negatives(table, poisoned, "n-tuple")


def test_bad_mining_input(dense):
    with pytest.raises(UserError, match="needs columns anchor, positive"):
        mine(datasets.Dataset.from_list([{"question": "q", "answer": "a"}] * 3), dense, MiningSection())
    with pytest.raises(UserError, match="valid: top, random"):
        MiningSection(sampling_strategy="best")
    with pytest.raises(UserError, match="range_min < range_max"):
        MiningSection(range_min=5, range_max=5)
