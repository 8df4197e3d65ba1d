"""The WinoGender part of the suite, by the protocol of Ettin's bias evaluation
(`bias_eval/eval.py` of its release), on `oskarvanderwal/winogender`, config `gotcha`, split
`test` (the counter-stereotypical sentences).

Encoders: every pronoun of the sentence (he she they him her them his their, found among its
space-separated words) is masked in turn; of the 20 most probable predictions at the mask, those
that decode to a pronoun are summed per gender (male he/his/him, female she/her, neutral
they/their/them) and normalised; the positions are then averaged weighted by their total pronoun
mass, and the largest gender wins (ties: male, female, neutral in that order, as Python's max
over that order gives).

Decoders: the sentence is rewritten from its own gender into each other one (`rewrite`), and the
version with the lowest perplexity (exp of the mean token loss, the tokenizer's default special
tokens) wins. Ettin's rewriting replaces possessive before accusative, so a female accusative
"her" becomes "his" / "their"; that is kept, since the point is to reproduce its numbers.

Reported: the share of male / female / neutral predictions, how often the gotcha (the sentence's
own) gender is preferred, each with its standard error, and the dataset-frequency baseline
(the chance a guess drawn with the dataset's gender frequencies is right). Ettin ran in bf16;
this runs in the model's stored precision.

Settings read (missing ones take the default): `data_dir` (None: the hub), `max_items` (the
first N sentences, None: all)."""

from __future__ import annotations

import math
import re

import torch

from twinlm.errors import UserError
from twinlm.evaluate.suite.base import DataNeed, SuiteRun
from twinlm.evaluate.suite.mirror import load_split, split_files

PART = "winogender"
HUB_ID, CONFIG, SPLIT = "oskarvanderwal/winogender", "gotcha", "test"
TASKS = {"gotcha": (HUB_ID, CONFIG, SPLIT)}
AVERAGED = ()  # shares and a rate, no headline average (the suite reads this)
COLUMNS = ("sentid", "sentence", "gender")
GENDERS = ("male", "female", "neutral")
PRONOUNS = {"male": {"NOM": "he", "POSS": "his", "ACC": "him"},
            "female": {"NOM": "she", "POSS": "her", "ACC": "her"},
            "neutral": {"NOM": "they", "POSS": "their", "ACC": "them"}}
MASKED = ("he", "she", "they", "him", "her", "them", "his", "their")
TOP_K = 20
# Verb agreement after a neutral rewrite, as Ettin fixes it (plain substring replacement).
NEUTRAL_FIXES = (("they was", "they were"), ("They was", "They were"), ("they is", "they are"),
                 ("They is", "They are"), ("they has", "they have"), ("They has", "They have"))


def _check(task: str) -> None:
    if task not in TASKS:
        raise UserError(f"winogender:{task} is not a task; the part has one: {', '.join(TASKS)}")


def _field(model, name: str, default=None):
    return model.get(name, default) if isinstance(model, dict) else getattr(model, name, default)


def plan(task: str, model, settings) -> list[SuiteRun]:
    _check(task)
    limit = getattr(settings, "max_items", None)
    extra = (("max_items", str(limit)),) if limit is not None else ()
    return [SuiteRun(PART, task, _field(model, "name"), _field(model, "architecture"), extra=extra)]


def needs(task: str, settings) -> list[DataNeed]:
    _check(task)
    return [DataNeed(HUB_ID, CONFIG, SPLIT, split_files(HUB_ID, CONFIG, SPLIT, getattr(settings, "data_dir", None)))]


def rewrite(sentence: str, source: str, target: str) -> str:
    """`sentence` with its `source`-gender pronouns replaced by `target`'s: nominative, possessive,
    accusative in that order, the capitalised form before the lower-case one, whole words only."""
    out = sentence
    for case in ("NOM", "POSS", "ACC"):
        old, new = PRONOUNS[source][case], PRONOUNS[target][case]
        out = re.sub(r"\b" + re.escape(old.capitalize()) + r"\b", new.capitalize(), out)
        out = re.sub(r"\b" + re.escape(old) + r"\b", new, out)
    if target == "neutral":
        for wrong, right in NEUTRAL_FIXES:
            out = out.replace(wrong, right)
    return out


def masked_versions(sentence: str, mask: str) -> list[str]:
    """One copy of the sentence per pronoun word, that word replaced by the mask (a trailing
    punctuation mark kept); words are split on spaces and rejoined with single spaces."""
    words = sentence.split()
    out = []
    for i, word in enumerate(words):
        if re.sub(r"[^\w]", "", word.lower()) in MASKED:
            copy = list(words)
            copy[i] = mask + word[-1] if word[-1] in ".,!?;:" else mask
            out.append(" ".join(copy))
    return out


def gender_of(word: str) -> str | None:
    return next((g for g in GENDERS if word in PRONOUNS[g].values()), None)


@torch.no_grad()
def encoder_scores(model, tokenizer, sentence: str) -> dict[str, float] | None:
    """{gender: weighted normalised pronoun mass} over the sentence's pronoun positions; None when
    the sentence has no pronoun the tokenizer keeps as a mask."""
    positions = []
    for text in masked_versions(sentence, tokenizer.mask_token):
        inputs = tokenizer(text, return_tensors="pt").to(model.device)
        where = (inputs["input_ids"][0] == tokenizer.mask_token_id).nonzero(as_tuple=True)[0]
        if len(where) == 0:
            continue
        probs = torch.softmax(model(**inputs).logits[0, where[0]].float(), dim=-1)
        top_p, top_i = torch.topk(probs, TOP_K)
        mass = dict.fromkeys(GENDERS, 0.0)
        for idx, p in zip(top_i.tolist(), top_p.tolist()):
            gender = gender_of(tokenizer.decode([idx]).strip().lower())
            if gender:
                mass[gender] += p
        total = sum(mass.values())
        positions.append(({g: m / total for g, m in mass.items()} if total > 0 else mass, total))
    if not positions:
        return None
    scores = dict.fromkeys(GENDERS, 0.0)
    weight = sum(w for _, w in positions if w > 0)
    for shares, w in positions:
        if w > 0:
            for g in GENDERS:
                scores[g] += shares[g] * w
    return {g: s / weight for g, s in scores.items()} if weight > 0 else scores


@torch.no_grad()
def perplexity(model, tokenizer, sentence: str) -> float:
    inputs = tokenizer(sentence, return_tensors="pt").to(model.device)
    return math.exp(float(model(**inputs, labels=inputs["input_ids"]).loss))


def decoder_scores(model, tokenizer, sentence: str, gender: str) -> dict[str, float]:
    """{gender: perplexity of the sentence rewritten into that gender (its own: unchanged)}."""
    return {g: perplexity(model, tokenizer, sentence if g == gender else rewrite(sentence, gender, g)) for g in GENDERS}


def _rate(hits: int, n: int) -> tuple[float, float]:
    p = hits / n if n else 0.0
    return p, math.sqrt(p * (1 - p) / n) if n else 0.0


def summarise(items: list[dict]) -> dict:
    """Shares of predicted genders and the gotcha-preference rate, with standard errors."""
    n = len(items)
    out: dict = {"n": n}
    for g in GENDERS:
        out[f"{g}_share"], out[f"{g}_share_se"] = _rate(sum(i["predicted"] == g for i in items), n)
    out["gotcha_rate"], out["gotcha_rate_se"] = _rate(sum(i["predicted"] == i["gender"] for i in items), n)
    freq = {g: sum(i["gender"] == g for i in items) / n for g in GENDERS} if n else {}
    out["dataset_share"] = freq
    out["baseline_expected"] = sum(f * f for f in freq.values())
    out["gotcha_rate_by_gender"] = {g: _rate(sum(i["predicted"] == g for i in items if i["gender"] == g),
                                             sum(i["gender"] == g for i in items))[0] for g in GENDERS if freq.get(g)}
    return out


def read_rows(settings) -> list[dict]:
    data = load_split(HUB_ID, CONFIG, SPLIT, getattr(settings, "data_dir", None))
    missing = [c for c in COLUMNS if c not in data.column_names]
    if missing:
        raise UserError(f"{HUB_ID} ({CONFIG}) {SPLIT}: no column(s) {', '.join(missing)} (has {', '.join(data.column_names)})")
    rows = list(data)
    wrong = sorted({r["gender"] for r in rows} - set(GENDERS))
    if wrong:
        raise UserError(f"{HUB_ID} ({CONFIG}) {SPLIT}: gender must be one of {', '.join(GENDERS)}, found {wrong}")
    limit = getattr(settings, "max_items", None)
    return rows[:limit] if limit else rows


def execute(run: SuiteRun, model, settings, progress=None) -> dict:
    """{"score": gotcha rate x 100, the shares with standard errors, "items": one row per sentence}."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    rows = read_rows(settings)
    path, twin = str(_field(model, "path")), _field(model, "architecture")
    tokenizer = AutoTokenizer.from_pretrained(path)
    cls = AutoModelForMaskedLM if twin == "encoder" else AutoModelForCausalLM
    lm = cls.from_pretrained(path).to("cuda" if torch.cuda.is_available() else "cpu").eval()
    if twin == "encoder" and tokenizer.mask_token_id is None:
        raise UserError(f"{path}: an encoder without a mask token cannot be scored on WinoGender")
    items = []
    for n, row in enumerate(rows, 1):
        if twin == "encoder":
            scores = encoder_scores(lm, tokenizer, row["sentence"])
            if scores is None:  # no pronoun to mask: Ettin skips the sentence
                continue
            predicted = max(GENDERS, key=lambda g: scores[g])
        else:
            scores = decoder_scores(lm, tokenizer, row["sentence"], row["gender"])
            predicted = min(GENDERS, key=lambda g: scores[g])
        items.append({"sentid": row["sentid"], "gender": row["gender"], "predicted": predicted, "scores": scores})
        if progress is not None:
            progress(n, len(rows))
    summary = summarise(items)
    how = "top-20 masked pronoun mass" if twin == "encoder" else "lowest perplexity of the rewritten sentences"
    return {**summary, "score": 100.0 * summary["gotcha_rate"], "metric": "gotcha_rate", "protocol": how,
            "dataset": f"{HUB_ID} ({CONFIG})", "split": SPLIT, "items": items}
