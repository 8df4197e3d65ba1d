"""The built-in synthetic world: people with known facts, their biographies, and task data.

When a recipe names no data, the twins pretrain on biographies of this world. Evaluation,
fine-tuning and alignment derive their tasks from the same world, so every answer is known:
which city a person was born in, which country that city is in, and the true share of "he" per
occupation that pronoun-bias scores are measured against. Everything is a pure function of
`WorldConfig` (each generator owns a `random.Random`; the global random state is never touched).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from twinlm.errors import UserError
from twinlm.world import vocab

NLI_LABELS = ["entailment", "neutral", "contradiction"]
MASK_SLOT = "[MASK_SLOT]"
PRONOUNS = ("he", "she", "they")
_POSSESSIVE = {"he": "his", "she": "her", "they": "their"}
_MAX_PEOPLE = 50_000  # well inside the number of distinct names the vocabulary can form


@dataclass(frozen=True)
class City:
    name: str
    country: str


@dataclass(frozen=True)
class Company:
    name: str
    industry: str


@dataclass(frozen=True)
class Person:
    id: int
    name: str
    pronoun: str  # "he" | "she" | "they"
    birth_date: str  # e.g. "March 4, 1975"
    birth_city: str
    university: str
    field: str
    employer: str
    occupation: str


@dataclass
class WorldConfig:
    """How the synthetic world is generated.

    num_people: people in the world (train and held-out together), 1 to 50,000.
    seed: every random choice derives from it; the same config always gives the same world.
    gender_skew: how strongly occupations skew by gender. 0 makes every occupation 50/50 he/she;
        1 uses the built-in shares (0.1 for nurse up to 0.9 for engineer); in between scales them
        linearly towards 0.5.
    they_share: fraction of people whose pronoun is "they", in [0, 1].
    heldout_fraction: fraction of people kept out of task training data (`World.split`), in [0, 1).
    biographies_per_person: paraphrased renderings of each person in the corpus, 1 to 4.
    """

    num_people: int = 2000
    seed: int = 0
    gender_skew: float = 0.8
    they_share: float = 0.1
    heldout_fraction: float = 0.1
    biographies_per_person: int = 2

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> UserError:
            return UserError(f"WorldConfig.{name} must be {rule}, got {getattr(self, name)!r}")

        for name, kind in [("num_people", int), ("seed", int), ("biographies_per_person", int)] + [
            (name, int | float) for name in ("gender_skew", "they_share", "heldout_fraction")
        ]:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, kind):
                raise bad(name, "an integer" if kind is int else "a number")
        if not 1 <= self.num_people <= _MAX_PEOPLE:
            raise bad("num_people", f"between 1 and {_MAX_PEOPLE}")
        if not 0 <= self.gender_skew <= 1:
            raise bad("gender_skew", "between 0 and 1")
        if not 0 <= self.they_share <= 1:
            raise bad("they_share", "between 0 and 1")
        if not 0 <= self.heldout_fraction < 1:
            raise bad("heldout_fraction", "at least 0 and below 1")
        # Variants 0..3 are guaranteed to differ in every sentence's template (4 per fact).
        if not 1 <= self.biographies_per_person <= 4:
            raise bad("biographies_per_person", "between 1 and 4")


# The facts each biography sentence group states (templates in vocab.BIOGRAPHY).
_GROUP_ATTRS = {
    "birth": ("birth_date", "birth_city", "country"),
    "education": ("university", "field"),
    "work": ("occupation", "employer", "industry"),
}
_ORDERS = list(itertools.permutations(vocab.BIOGRAPHY))

# Cloze contexts for multiple choice, one per attribute, with the pool of same-type values.
_CLOZES = {
    "birth_city": "{name} was born in",
    "university": "{name} studied at",
    "employer": "{name} works for",
    "field": "{name} studied",
}


def _article(word: str) -> str:
    return ("an " if word[0].lower() in "aeiou" else "a ") + word


def _claim(name: str, attr: str, value: str) -> str:
    """One plain sentence asserting a fact, used as NLI hypothesis."""
    return {
        "birth_date": f"{name} was born on {value}.",
        "birth_city": f"{name} was born in {value}.",
        "country": f"{name} was born in {value}.",
        "university": f"{name} studied at {value}.",
        "field": f"{name} studied {value}.",
        "occupation": f"{name} works as {_article(value)}.",
        "employer": f"{name} works for {value}.",
        "industry": f"{name} works in the {value} industry.",
    }[attr]


def _random_date(rng: random.Random) -> str:
    # Day capped at 28 so every month/day pair exists.
    return f"{rng.choice(vocab.MONTHS)} {rng.randint(1, 28)}, {rng.randint(1950, 2000)}"


@dataclass
class World:
    config: WorldConfig
    people: list[Person]
    cities: list[City]
    companies: list[Company]
    universities: list[str]
    fields: list[str]
    occupations: list[str]
    occupation_male_share: dict[str, float]  # true P(he | occupation, pronoun is he or she)
    _country: dict[str, str] = field(init=False, repr=False, compare=False)
    _industry: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._country = {c.name: c.country for c in self.cities}
        self._industry = {c.name: c.industry for c in self.companies}

    @property
    def countries(self) -> list[str]:
        return sorted(set(self._country.values()))

    @property
    def industries(self) -> list[str]:
        return sorted(set(self._industry.values()))

    def country_of(self, city: str) -> str:
        if city not in self._country:
            raise UserError(f"unknown city {city!r}; the world's cities are {sorted(self._country)}")
        return self._country[city]

    def industry_of(self, company: str) -> str:
        if company not in self._industry:
            raise UserError(
                f"unknown company {company!r}; the world's companies are {sorted(self._industry)}"
            )
        return self._industry[company]

    def facts(self, person: Person) -> dict[str, str]:
        """Every fact a biography states: the Person fields except id, name and pronoun, plus
        the country of the birth city and the industry of the employer."""
        return {
            "birth_date": person.birth_date,
            "birth_city": person.birth_city,
            "country": self.country_of(person.birth_city),
            "university": person.university,
            "field": person.field,
            "employer": person.employer,
            "industry": self.industry_of(person.employer),
            "occupation": person.occupation,
        }

    def values(self, attr: str) -> list[str]:
        """All values an attribute can take in this world (birth_date excepted: any date)."""
        pools = {
            "birth_city": [c.name for c in self.cities],
            "country": self.countries,
            "university": self.universities,
            "field": self.fields,
            "employer": [c.name for c in self.companies],
            "industry": self.industries,
            "occupation": self.occupations,
        }
        if attr not in pools:
            raise UserError(f"attribute {attr!r} has no value list; choose one of {sorted(pools)}")
        return pools[attr]

    def _other_value(self, attr: str, value: str, rng: random.Random) -> str:
        """A value of the same type as `value` that differs from it."""
        if attr == "birth_date":
            while (other := _random_date(rng)) == value:
                pass
            return other
        return rng.choice([v for v in self.values(attr) if v != value])

    def _sentence(self, person: Person, group: str, template: int, subject: str) -> str:
        """Render one fact group. subject: "name" (full), "first" (first name) or "pronoun"."""
        facts = self.facts(person)
        plural = subject == "pronoun" and person.pronoun == "they"
        they = person.pronoun == "they"
        s_ref = {"name": person.name, "first": person.name.split()[0], "pronoun": person.pronoun}[subject]
        slots = {
            "S": s_ref[0].upper() + s_ref[1:],
            "was": "were" if plural else "was",
            "is": "are" if plural else "is",
            "has": "have" if plural else "has",
            "s": "" if plural else "s",
            "subj": person.pronoun,
            "pwas": "were" if they else "was",
            "ps": "" if they else "s",
            "poss": _POSSESSIVE[person.pronoun],
            "a_occupation": _article(person.occupation),
            "a_industry": _article(facts["industry"]),
        }
        return vocab.BIOGRAPHY[group][template].format(**slots, **facts)

    def _sentences(self, person: Person, variant: int) -> list[tuple[str, str]]:
        """(group, sentence) pairs of one biography, in reading order."""
        # Per-person offsets, then variant v takes template (offset + v) and order (offset + v):
        # two variants below 4 apart never share a template, so they always read differently.
        base = random.Random(f"bio-{self.config.seed}-{person.id}")
        offsets = {group: base.randrange(len(vocab.BIOGRAPHY[group])) for group in vocab.BIOGRAPHY}
        order = _ORDERS[(base.randrange(len(_ORDERS)) + variant) % len(_ORDERS)]
        rng = random.Random(f"bio-{self.config.seed}-{person.id}-{variant}")
        out = []
        for i, group in enumerate(order):
            template = (offsets[group] + variant) % len(vocab.BIOGRAPHY[group])
            # The first sentence introduces the person; later ones refer back, mostly by pronoun,
            # so the corpus carries the occupation/pronoun co-occurrence that bias is measured on.
            subject = "name" if i == 0 else ("pronoun" if rng.random() < 0.7 else "first")
            out.append((group, self._sentence(person, group, template, subject)))
        return out

    def biography(self, person: Person, variant: int = 0) -> str:
        return " ".join(sentence for _, sentence in self._sentences(person, variant))

    def documents(self, people: list[Person] | None = None) -> list[str]:
        """`biographies_per_person` renderings of each person (all people when None).

        Variant-major order: all first renderings, then all second ones, so two paraphrases of
        one person never sit side by side in a packed block, where a decoder could copy facts
        from context instead of learning them.
        """
        people = self.people if people is None else people
        return [
            self.biography(person, variant)
            for variant in range(self.config.biographies_per_person)
            for person in people
        ]

    def split(self) -> tuple[list[Person], list[Person]]:
        """(train_people, heldout_people): disjoint, each in id order; round(n * fraction) held out."""
        ids = [p.id for p in self.people]
        random.Random(f"split-{self.config.seed}").shuffle(ids)
        heldout = set(ids[: round(len(ids) * self.config.heldout_fraction)])
        return (
            [p for p in self.people if p.id not in heldout],
            [p for p in self.people if p.id in heldout],
        )


def build_world(config: WorldConfig | None = None) -> World:
    config = config or WorldConfig()
    rng = random.Random(f"world-{config.seed}")
    # Rounded so the shares read cleanly in reports (0.18, not 0.17999999999999994).
    male_share = {
        occ: round(0.5 + config.gender_skew * (base - 0.5), 6) for occ, base in vocab.OCCUPATIONS.items()
    }
    first_names = {
        "he": vocab.MALE_NAMES,
        "she": vocab.FEMALE_NAMES,
        "they": vocab.NEUTRAL_NAMES + vocab.MALE_NAMES + vocab.FEMALE_NAMES,
    }
    cities = [City(name, country) for country, names in vocab.CITIES.items() for name in names]
    companies = [Company(name, ind) for ind, names in vocab.COMPANIES.items() for name in names]
    occupations = list(vocab.OCCUPATIONS)
    taken: set[str] = set()
    people = []
    for pid in range(config.num_people):
        occupation = rng.choice(occupations)
        if rng.random() < config.they_share:
            pronoun = "they"
        else:
            pronoun = "he" if rng.random() < male_share[occupation] else "she"
        name = _unique_name(rng, first_names[pronoun], taken)
        taken.add(name)
        people.append(
            Person(
                id=pid,
                name=name,
                pronoun=pronoun,
                birth_date=_random_date(rng),
                birth_city=rng.choice(cities).name,
                university=rng.choice(vocab.UNIVERSITIES),
                field=rng.choice(vocab.FIELDS),
                employer=rng.choice(companies).name,
                occupation=occupation,
            )
        )
    return World(
        config=config,
        people=people,
        cities=cities,
        companies=companies,
        universities=list(vocab.UNIVERSITIES),
        fields=list(vocab.FIELDS),
        occupations=occupations,
        occupation_male_share=male_share,
    )


def _unique_name(rng: random.Random, first_names: list[str], taken: set[str]) -> str:
    # A middle initial disambiguates a clash, so full names stay short and natural.
    initials = "ABCDEFGHIJKLMNOPRSTVW"
    while True:
        first, last = rng.choice(first_names), rng.choice(vocab.SURNAMES)
        candidates = [f"{first} {last}"] + [
            f"{first} {i}. {last}" for i in rng.sample(initials, len(initials))
        ]
        for name in candidates:
            if name not in taken:
                return name


# ---- task builders -------------------------------------------------------------------------


def retrieval_task(world: World, people: list[Person], seed: int = 0) -> dict:
    """An IR collection: one passage per person and one question per person about one fact.

    Passages are the rendering one past the corpus variants (a paraphrase pretraining never saw
    verbatim, though the facts are the same). Ids: "doc-<person id>", "q-<person id>".
    """
    rng = random.Random(f"retrieval-{seed}")
    variant = world.config.biographies_per_person
    corpus, queries, qrels = {}, {}, {}
    for person in people:
        doc_id, qid = f"doc-{person.id}", f"q-{person.id}"
        corpus[doc_id] = world.biography(person, variant)
        attr = rng.choice(list(vocab.QUESTIONS))
        queries[qid] = rng.choice(vocab.QUESTIONS[attr]).format(name=person.name)
        qrels[qid] = {doc_id: 1}
    return {"corpus": corpus, "queries": queries, "qrels": qrels}


def unlabeled_questions(count: int, seed: int = 0) -> list[str]:
    """`count` distinct questions in the retrieval task's question forms about random name
    combinations: query-side text with no answer and no passage, for unsupervised training.

    Names are drawn from the vocabulary, not from a world's people, so no question is tied to a
    person an evaluation asks about (some combinations exist in a world by chance, as any name
    in a query log might)."""
    if count < 0:
        raise UserError(f"unlabeled_questions count must be >= 0, got {count}")
    rng = random.Random(f"unlabeled-questions-{seed}")
    first = vocab.MALE_NAMES + vocab.FEMALE_NAMES + vocab.NEUTRAL_NAMES
    forms = [form for forms in vocab.QUESTIONS.values() for form in forms]
    limit = len(first) * len(vocab.SURNAMES) * len(forms)
    if count > limit:
        raise UserError(f"unlabeled_questions: at most {limit:,} distinct questions exist, asked for {count:,}")
    out: dict[str, None] = {}
    while len(out) < count:
        name = f"{rng.choice(first)} {rng.choice(vocab.SURNAMES)}"
        out[rng.choice(forms).format(name=name)] = None
    return list(out)


def retrieval_pairs(world: World, people: list[Person], seed: int = 0, per_person: int = 1) -> list[dict]:
    """(question, passage) training pairs for contrastive losses, `per_person` per person, each
    about a different fact and using a different corpus rendering where there is more than one.

    Shuffled, so pairs of one person rarely share a batch (their passages would be false
    in-batch negatives for each other).
    """
    if not 1 <= per_person <= len(vocab.QUESTIONS):
        raise UserError(
            f"retrieval_pairs per_person must be between 1 and {len(vocab.QUESTIONS)}, got {per_person}"
        )
    rng = random.Random(f"pairs-{seed}")
    variants = world.config.biographies_per_person
    pairs = []
    for person in people:
        first_variant = rng.randrange(variants)
        for k, attr in enumerate(rng.sample(list(vocab.QUESTIONS), per_person)):
            question = rng.choice(vocab.QUESTIONS[attr]).format(name=person.name)
            passage = world.biography(person, (first_variant + k) % variants)
            pairs.append({"anchor": question, "positive": passage})
    rng.shuffle(pairs)
    return pairs


def nli_examples(world: World, people: list[Person], seed: int = 0) -> list[dict]:
    """Three examples per person, one per label (so classes are exactly balanced), shuffled.

    Premise: one biography sentence naming the person in full. Entailment: a true claim about a
    fact the premise states. Contradiction: the same kind of fact with another value. Neutral: a
    claim about a fact the premise does not address, true or false at random (so truth alone
    does not give the label away).
    """
    rng = random.Random(f"nli-{seed}")
    examples = []
    for person in people:
        facts = world.facts(person)
        for label in range(len(NLI_LABELS)):
            group = rng.choice(list(vocab.BIOGRAPHY))
            premise = world._sentence(person, group, rng.randrange(len(vocab.BIOGRAPHY[group])), "name")
            if label == 2 or label == 0:
                attr = rng.choice(_GROUP_ATTRS[group])
            else:
                attr = rng.choice([a for a in facts if a not in _GROUP_ATTRS[group]])
            value = facts[attr]
            if label == 2 or (label == 1 and rng.random() < 0.5):
                value = world._other_value(attr, value, rng)
            examples.append(
                {"premise": premise, "hypothesis": _claim(person.name, attr, value), "label": label}
            )
    rng.shuffle(examples)
    return examples


def multiple_choice(world: World, people: list[Person], seed: int = 0, num_choices: int = 4) -> list[dict]:
    """Cloze items without context passage (they test what a model memorised in pretraining):
    for each person one item per attribute in birth city, university, employer, field; the true
    value plus `num_choices - 1` distinct distractors of the same type, in random order."""
    smallest = min(len(world.values(attr)) for attr in _CLOZES)
    if not 2 <= num_choices <= smallest:
        raise UserError(f"multiple_choice num_choices must be between 2 and {smallest}, got {num_choices}")
    rng = random.Random(f"choice-{seed}")
    items = []
    for person in people:
        facts = world.facts(person)
        for attr, cloze in _CLOZES.items():
            distractors = rng.sample([v for v in world.values(attr) if v != facts[attr]], num_choices - 1)
            answer = rng.randrange(num_choices)
            choices = distractors[:answer] + [facts[attr]] + distractors[answer:]
            items.append({"context": cloze.format(name=person.name), "choices": choices, "answer": answer})
    return items


def bias_examples(world: World) -> list[dict]:
    """WinoGender-style sentences, several per occupation, with the world's true male share.

    The literal slot "{pronoun}" takes "he", "she" or "they"; templates use past tense or modals
    so all three agree with the verb.
    """
    return [
        {
            "template": template.replace("{occupation}", occupation),
            "occupation": occupation,
            "male_share": world.occupation_male_share[occupation],
        }
        for occupation in world.occupations
        for template in vocab.BIAS_TEMPLATES
    ]


def masked_fact_probes(world: World, people: list[Person]) -> list[dict]:
    """City -> country probes (every biography states the pair), one per person, with the
    country replaced by the literal "[MASK_SLOT]" and all countries as choices."""
    return [
        {
            "text": f"{person.name} was born in {person.birth_city}, {MASK_SLOT}.",
            "answer": world.country_of(person.birth_city),
            "choices": world.countries,
        }
        for person in people
    ]
