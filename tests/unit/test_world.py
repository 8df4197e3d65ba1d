import re
from collections import Counter

import pytest

from twinlm.errors import UserError
from twinlm.world import vocab
from twinlm.world.generator import (
    MASK_SLOT,
    NLI_LABELS,
    WorldConfig,
    _claim,
    bias_examples,
    build_world,
    masked_fact_probes,
    multiple_choice,
    nli_examples,
    retrieval_pairs,
    retrieval_task,
    unlabeled_questions,
)


@pytest.fixture(scope="module")
def world():
    return build_world()


@pytest.fixture(scope="module")
def big_world():
    # Enough people (~700 per occupation) that empirical shares sit within a few points of the truth.
    return build_world(WorldConfig(num_people=20_000, seed=3))


@pytest.fixture(scope="module")
def heldout(world):
    return world.split()[1]


def _person_named_at_start(world, text):
    matches = [p for p in world.people if text.startswith(p.name + " ")]
    assert len(matches) == 1, text
    return matches[0]


def test_build_is_deterministic_and_depends_on_seed(world):
    again = build_world(WorldConfig())
    assert again == world
    assert again.documents() == world.documents()
    other = build_world(WorldConfig(seed=1))
    assert other.people != world.people
    assert other.documents() != world.documents()


def test_world_shape_and_lookups(world):
    assert len(world.people) == 2000
    assert len({p.name for p in world.people}) == len(world.people)
    assert [p.id for p in world.people] == list(range(2000))
    assert 30 <= len(world.cities) <= 60 and 10 <= len(world.countries) <= 15
    assert len(world.companies) >= 25 and len(world.occupations) >= 25
    assert world.country_of("Lyon") == "France"
    assert world.industry_of("Norvik Systems") == "software"
    with pytest.raises(UserError, match="unknown city 'Atlantis'"):
        world.country_of("Atlantis")
    with pytest.raises(UserError, match="unknown company"):
        world.industry_of("Acme")
    person = world.people[0]
    facts = world.facts(person)
    assert facts["country"] == world.country_of(person.birth_city)
    assert facts["industry"] == world.industry_of(person.employer)
    assert facts["occupation"] == person.occupation


def test_vocabulary_keeps_names_unambiguous():
    # A full name must select one biography; a surname that prefixes another would break that.
    for a in vocab.SURNAMES:
        assert not any(b != a and b.startswith(a) for b in vocab.SURNAMES), a
    cities = [c for names in vocab.CITIES.values() for c in names]
    assert all(" " not in c for c in cities + list(vocab.CITIES))
    assert not set(vocab.SURNAMES) & set(cities)


def test_split_is_disjoint_deterministic_and_sized(world):
    train, held = world.split()
    assert len(held) == round(0.1 * 2000)
    assert not {p.id for p in train} & {p.id for p in held}
    assert len(train) + len(held) == len(world.people)
    assert world.split() == (train, held)
    assert len(build_world(WorldConfig(num_people=300, heldout_fraction=0.25)).split()[1]) == 75


def test_biographies_state_every_fact_with_correct_pronouns(world):
    wrong_pronouns = {
        "he": r"\b(she|her|they|their|She|Her|They|Their)\b",
        "she": r"\b(he|his|they|their|He|His|They|Their)\b",
        "they": r"\b(he|his|she|her|He|His|She|Her)\b",
    }
    bad_agreement = {
        "they": r"\bThey (was|is|has|works|comes|earns)\b|\bthey (was|works)\b",
        "he": r"\bHe (were|are|have|work|come|earn)\b|\bhe (were|work)\b",
        "she": r"\bShe (were|are|have|work|come|earn)\b|\bshe (were|work)\b",
    }
    for person in world.people:
        variants = [world.biography(person, v) for v in range(4)]
        assert len(set(variants)) == 4
        for bio in variants:
            assert bio.startswith(person.name + " ")
            assert bio == world.biography(person, variants.index(bio))
            for attr, value in world.facts(person).items():
                assert value in bio, (attr, bio)
            assert f"{person.birth_city}, {world.country_of(person.birth_city)}" in bio
            assert not re.search(wrong_pronouns[person.pronoun], bio), bio
            assert not re.search(bad_agreement[person.pronoun], bio), bio


def test_variants_shuffle_sentence_order(world):
    def first_fact(bio, person):
        return min(("birth", bio.find(person.birth_date)), ("education", bio.find(person.university)),
                   ("work", bio.find(person.employer)), key=lambda kv: kv[1])[0]

    person = world.people[0]
    assert len({first_fact(world.biography(person, v), person) for v in range(4)}) >= 2


def test_documents_are_variant_major(world):
    docs = world.documents()
    n = len(world.people)
    assert len(docs) == 2 * n
    assert docs[5] == world.biography(world.people[5], 0)
    assert docs[n + 5] == world.biography(world.people[5], 1)
    few = world.people[:3]
    assert world.documents(few) == [world.biography(p, v) for v in range(2) for p in few]


def test_empirical_male_share_tracks_the_truth(big_world):
    counts = Counter((p.occupation, p.pronoun) for p in big_world.people)
    for occ, share in big_world.occupation_male_share.items():
        he, she = counts[occ, "he"], counts[occ, "she"]
        assert abs(he / (he + she) - share) < 0.08, (occ, he, she, share)
    they = sum(p.pronoun == "they" for p in big_world.people) / len(big_world.people)
    assert abs(they - 0.1) < 0.02
    shares = big_world.occupation_male_share
    assert shares["nurse"] == pytest.approx(0.5 + 0.8 * (0.1 - 0.5))
    assert shares["nurse"] < 0.3 < 0.7 < shares["engineer"]


def test_gender_skew_zero_gives_even_split_and_one_gives_builtin_shares():
    even = build_world(WorldConfig(num_people=10_000, gender_skew=0.0, they_share=0.0))
    assert set(even.occupation_male_share.values()) == {0.5}
    he = sum(p.pronoun == "he" for p in even.people) / len(even.people)
    assert abs(he - 0.5) < 0.03
    assert {p.pronoun for p in even.people} == {"he", "she"}
    full = build_world(WorldConfig(num_people=10, gender_skew=1.0))
    assert full.occupation_male_share == pytest.approx(vocab.OCCUPATIONS)


def test_retrieval_task_points_each_question_at_its_person(world, heldout):
    task = retrieval_task(world, heldout, seed=0)
    assert len(task["corpus"]) == len(task["queries"]) == len(heldout)
    assert retrieval_task(world, heldout, seed=0) == task
    assert retrieval_task(world, heldout, seed=1)["queries"] != task["queries"]
    names = {p.name: p for p in world.people}
    for qid, query in task["queries"].items():
        assert query.endswith("?")
        (name,) = [n for n in names if n in query]
        (doc_id,) = task["qrels"][qid]
        assert [d for d, text in task["corpus"].items() if name in text] == [doc_id]
        for value in world.facts(names[name]).values():
            assert value in task["corpus"][doc_id]
    # One question per fact type at least somewhere, phrased naturally.
    assert any(q.startswith("Where did ") and q.endswith(" study?") for q in task["queries"].values())


def test_retrieval_pairs_pair_a_question_with_that_persons_biography(world, heldout):
    pairs = retrieval_pairs(world, heldout, seed=0, per_person=2)
    assert len(pairs) == 2 * len(heldout)
    corpus_docs = set(world.documents(heldout))
    for pair in pairs:
        assert set(pair) == {"anchor", "positive"}
        assert pair["positive"] in corpus_docs
        assert pair["anchor"].endswith("?")
        person = _person_named_at_start(world, pair["positive"])
        assert person.name in pair["anchor"]
    with pytest.raises(UserError, match="per_person"):
        retrieval_pairs(world, heldout, per_person=0)


def test_unlabeled_questions_use_the_question_forms_with_vocabulary_names():
    questions = unlabeled_questions(300, seed=1)
    assert len(questions) == len(set(questions)) == 300
    assert questions == unlabeled_questions(300, seed=1) != unlabeled_questions(300, seed=2)
    forms = [form for fs in vocab.QUESTIONS.values() for form in fs]
    first = set(vocab.MALE_NAMES + vocab.FEMALE_NAMES + vocab.NEUTRAL_NAMES)
    used_forms = set()
    for question in questions:
        matches = [f for f in forms if re.fullmatch(re.escape(f).replace(r"\{name\}", r"(\w+) (\w+)"), question)]
        assert matches, question
        name = re.fullmatch(re.escape(matches[0]).replace(r"\{name\}", r"(\w+) (\w+)"), question).groups()
        assert name[0] in first and name[1] in vocab.SURNAMES
        used_forms.add(matches[0])
    assert len(used_forms) == len(forms)  # 300 draws reach every form
    assert unlabeled_questions(0) == []
    with pytest.raises(UserError, match="at most"):
        unlabeled_questions(10**9)


def _parse_claim(world, hypothesis, name):
    rest = hypothesis[len(name) + 1 : -1]
    patterns = [
        ("was born on ", "birth_date"), ("studied at ", "university"), ("works as ", "occupation"),
        ("works for ", "employer"), ("works in the ", "industry"), ("studied ", "field"),
        ("was born in ", "birth_city"),
    ]
    for prefix, attr in patterns:
        if rest.startswith(prefix):
            value = rest[len(prefix):]
            if attr == "occupation":
                value = value.split(" ", 1)[1]
            if attr == "industry":
                value = value.removesuffix(" industry")
            if attr == "birth_city" and value in world.countries:
                attr = "country"
            assert attr == "birth_date" or value in world.values(attr), hypothesis
            return attr, value
    raise AssertionError(hypothesis)


def test_nli_examples_are_balanced_and_correctly_labelled(world, heldout):
    examples = nli_examples(world, heldout, seed=0)
    assert NLI_LABELS == ["entailment", "neutral", "contradiction"]
    assert Counter(e["label"] for e in examples) == {0: len(heldout), 1: len(heldout), 2: len(heldout)}
    for e in examples:
        assert set(e) == {"premise", "hypothesis", "label"}
        person = _person_named_at_start(world, e["premise"])
        assert e["hypothesis"].startswith(person.name + " ")
        facts = world.facts(person)
        attr, value = _parse_claim(world, e["hypothesis"], person.name)
        assert e["hypothesis"] == _claim(person.name, attr, value)
        if e["label"] == 0:
            assert value == facts[attr] and value in e["premise"]
        elif e["label"] == 2:
            assert value != facts[attr] and facts[attr] in e["premise"]
        else:
            assert facts[attr] not in e["premise"]
    neutral_true = [e for e in examples if e["label"] == 1 and _claim_is_true(world, e)]
    assert 0.3 < len(neutral_true) / len(heldout) < 0.7


def _claim_is_true(world, example):
    person = _person_named_at_start(world, example["premise"])
    return example["hypothesis"] in {_claim(person.name, a, v) for a, v in world.facts(person).items()}


def test_multiple_choice_answer_is_the_true_value(world, heldout):
    items = multiple_choice(world, heldout, seed=0)
    pools = {attr: set(world.values(attr)) for attr in ("birth_city", "university", "employer", "field")}
    asked = Counter()
    for item in items:
        assert len(item["choices"]) == 4 and len(set(item["choices"])) == 4
        person = _person_named_at_start(world, item["context"])
        (attr,) = [a for a, pool in pools.items() if set(item["choices"]) <= pool]
        assert item["choices"][item["answer"]] == world.facts(person)[attr]
        asked[attr] += 1
    assert asked == {attr: len(heldout) for attr in pools}
    assert len({item["answer"] for item in items}) == 4
    six = multiple_choice(world, heldout[:5], num_choices=6)
    assert all(len(set(item["choices"])) == 6 for item in six)
    with pytest.raises(UserError, match="num_choices"):
        multiple_choice(world, heldout, num_choices=1)


def test_bias_examples_have_a_pronoun_slot_and_the_true_share(world):
    examples = bias_examples(world)
    per_occupation = Counter(e["occupation"] for e in examples)
    assert set(per_occupation) == set(world.occupations)
    assert min(per_occupation.values()) >= 3
    for e in examples:
        assert e["template"].count("{pronoun}") == 1
        assert e["occupation"] in e["template"]
        assert e["male_share"] == world.occupation_male_share[e["occupation"]]
        for pronoun in ("he", "she", "they"):
            filled = e["template"].replace("{pronoun}", pronoun)
            assert "{" not in filled and f" {pronoun} " in filled


def test_masked_fact_probes_ask_for_the_country_of_the_birth_city(world, heldout):
    probes = masked_fact_probes(world, heldout)
    assert len(probes) == len(heldout)
    for probe, person in zip(probes, heldout):
        assert probe["text"].count(MASK_SLOT) == 1 == probe["text"].count("[MASK_SLOT]")
        assert probe["text"].startswith(person.name) and person.birth_city in probe["text"]
        assert probe["answer"] == world.country_of(person.birth_city)
        assert probe["choices"] == sorted(set(probe["choices"])) == world.countries


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_people", 0),
        ("num_people", 2.5),
        ("num_people", True),
        ("num_people", 10**6),
        ("seed", "x"),
        ("gender_skew", 1.5),
        ("gender_skew", -0.1),
        ("they_share", 2),
        ("heldout_fraction", 1.0),
        ("heldout_fraction", "0.1"),
        ("biographies_per_person", 0),
        ("biographies_per_person", 5),
    ],
)
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(UserError, match=rf"WorldConfig\.{field} must be"):
        WorldConfig(**{field: value})
