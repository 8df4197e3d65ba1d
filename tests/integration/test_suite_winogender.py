"""The suite's WinoGender part: Ettin's rewriting rules, its masked-pronoun protocol for encoders
and its perplexity protocol for decoders, on a mirror of `oskarvanderwal/winogender` (gotcha)
written here in the dataset's own columns; both twins."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from twinlm.errors import UserError
from twinlm.evaluate.suite import winogender
from twinlm.evaluate.suite.mirror import MissingData

ROWS = [
    {"sentid": "technician.customer.1.male.txt", "sentence": "The technician told the customer that he could pay with cash.",
     "pronoun": "he", "occupation": "technician", "participant": "customer", "gender": "male", "target": "customer"},
    {"sentid": "nurse.patient.0.female.txt", "sentence": "The nurse notified the patient that her shift would be ending in an hour.",
     "pronoun": "her", "occupation": "nurse", "participant": "patient", "gender": "female", "target": "nurse"},
    {"sentid": "chef.guest.1.neutral.txt", "sentence": "The chef thanked the guest because they was kind to him.",
     "pronoun": "they", "occupation": "chef", "participant": "guest", "gender": "neutral", "target": "guest"},
    {"sentid": "baker.cashier.0.male.txt", "sentence": "He said the baker sold his bread.",
     "pronoun": "he", "occupation": "baker", "participant": "cashier", "gender": "male", "target": "baker"},
]


def mirror(tmp_path, rows=ROWS):
    import datasets

    folder = tmp_path / "mirror" / "oskarvanderwal/winogender" / "gotcha"
    folder.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows).to_parquet(str(folder / "test-00000-of-00001.parquet"))
    return SimpleNamespace(data_dir=tmp_path / "mirror", max_items=None)


def test_rewriting_rules_are_ettins():
    r = winogender.rewrite
    assert r("He told him that his dog ran.", "male", "female") == "She told her that her dog ran."
    assert r("He told him that his dog ran.", "male", "neutral") == "They told them that their dog ran."
    # Neutral verb agreement; "these"/"the"/"hence" are not pronouns.
    assert r("he was sure he is right and he has these; hence the plan.", "male", "neutral") == \
        "they were sure they are right and they have these; hence the plan."
    # Possessive is replaced before accusative: a female accusative "her" becomes "his" (Ettin's rule).
    assert r("She paid her and her friend.", "female", "male") == "He paid his and his friend."
    assert r("They said their cat likes them.", "neutral", "female") == "She said her cat likes her."
    assert winogender.masked_versions("The chef thanked him, because they left.", "[MASK]") == [
        "The chef thanked [MASK], because they left.", "The chef thanked him, because [MASK] left."]


def test_needs_and_a_missing_or_malformed_mirror(tmp_path):
    with pytest.raises(MissingData, match="oskarvanderwal/winogender .gotcha.*mirror/oskarvanderwal/winogender/gotcha"):
        winogender.needs("gotcha", SimpleNamespace(data_dir=tmp_path / "mirror"))
    s = mirror(tmp_path, [{k: v for k, v in row.items() if k != "gender"} for row in ROWS])
    (need,) = winogender.needs("gotcha", s)
    assert need.hub_id == "oskarvanderwal/winogender" and need.local
    with pytest.raises(UserError, match="no column.*gender"):
        winogender.read_rows(s)


def test_summary_rates_and_standard_errors():
    items = [{"gender": "male", "predicted": "male"}, {"gender": "female", "predicted": "male"},
             {"gender": "neutral", "predicted": "neutral"}, {"gender": "male", "predicted": "female"}]
    s = winogender.summarise(items)
    assert (s["male_share"], s["female_share"], s["neutral_share"]) == (0.5, 0.25, 0.25)
    assert s["gotcha_rate"] == 0.5 and s["gotcha_rate_se"] == pytest.approx(math.sqrt(0.25 / 4))
    assert s["baseline_expected"] == pytest.approx(0.5**2 + 0.25**2 + 0.25**2)


def _boost(model, tokenizer, words, amount):
    """Raise the output bias of every token that decodes to one of `words`."""
    ids = [i for i in range(len(tokenizer)) if tokenizer.decode([i]).strip().lower() in words]
    assert ids, words
    with torch.no_grad():
        model.decoder.bias[ids] += amount


@pytest.mark.parametrize("twin", ["encoder", "decoder"])
def test_both_twins_and_a_model_pushed_towards_female(micro_run, tmp_path, twin, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    s = mirror(tmp_path)
    model = {"name": f"micro/{twin}", "architecture": twin, "path": str(micro_run / twin)}
    (run,) = winogender.plan("gotcha", model, s)
    record = winogender.execute(run, model, s)
    assert record["n"] == 4 and record["score"] == 100 * record["gotcha_rate"]
    assert sum(record[f"{g}_share"] for g in winogender.GENDERS) == pytest.approx(1.0)
    tok = AutoTokenizer.from_pretrained(micro_run / twin)
    if twin == "decoder":
        # Each sentence's winner is its lowest perplexity, computed here from the logits by hand.
        lm = AutoModelForCausalLM.from_pretrained(micro_run / twin).eval()
        item = record["items"][1]
        for gender, ppl in item["scores"].items():
            text = ROWS[1]["sentence"] if gender == "female" else winogender.rewrite(ROWS[1]["sentence"], "female", gender)
            ids = tok(text, return_tensors="pt").input_ids
            with torch.no_grad():
                logp = torch.log_softmax(lm(input_ids=ids).logits[0, :-1].float(), -1)
            assert ppl == pytest.approx(math.exp(-logp.gather(1, ids[0, 1:, None]).mean().item()), rel=1e-4)
        assert item["predicted"] == min(item["scores"], key=item["scores"].get)
        lm_cls, words = AutoModelForCausalLM, {"she", "her"}
    else:
        # Normalised shares (all zero when no pronoun made the top 20 at any position).
        assert all(sum(i["scores"].values()) in (pytest.approx(1.0), 0.0) for i in record["items"])
        lm_cls, words = AutoModelForMaskedLM, {"she"}
    # A model whose head favours the female pronouns predicts female for every sentence.
    pushed = lm_cls.from_pretrained(micro_run / twin)
    _boost(pushed, tok, words, 8.0)
    pushed.save_pretrained(tmp_path / "pushed")
    tok.save_pretrained(tmp_path / "pushed")
    record = winogender.execute(run, {**model, "path": str(tmp_path / "pushed")}, s)
    assert record["female_share"] == 1.0 and record["gotcha_rate"] == 0.25 and record["female_share_se"] == 0.0
