"""`--lm-eval` is lm-evaluation-harness itself: the decoder's per-item results are the harness's
own (HFLM run directly), the encoder class follows Ettin's protocol token by token, the world's
choice task scores like the harness, and a plain HF model gets only the benchmarks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from twinlm.cli import main
from twinlm.errors import UserError

TEST_DATA = Path(__file__).parents[1] / "data"

TASKS = ["world_facts.yaml", "world_yesno.yaml"]
NAMES = ["twinlm_world_facts", "twinlm_world_yesno"]


@pytest.fixture()
def task_dir(monkeypatch):
    folder = TEST_DATA / "lm_eval"
    monkeypatch.chdir(folder)  # lm-eval reads data_files relative to the current folder
    return folder


@pytest.fixture(scope="module")
def encoder(micro_run):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    return AutoModelForMaskedLM.from_pretrained(micro_run / "encoder").eval(), AutoTokenizer.from_pretrained(micro_run / "encoder")


def _direct(model, model_args, task_dir, **kwargs):
    """The harness run directly, as its users run it (per-item samples kept)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    import twinlm.evaluate.lm_eval_encoder  # noqa: F401  (registers twinlm-encoder)

    return lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=NAMES, log_samples=True,
                                   task_manager=TaskManager(include_path=str(task_dir), include_defaults=False), **kwargs)


def _per_item(out_dir, model_name, task):
    rows = (out_dir / "lm_eval" / model_name.replace("/", "__") / f"{task}.jsonl").read_text().splitlines()
    return {r["doc_id"]: r for r in map(json.loads, rows)}


def test_decoder_per_item_results_are_the_harness_own(micro_run, task_dir, tmp_path):
    from twinlm.evaluate.benchmarks import plan_lm_eval, run_lm_eval

    plan = plan_lm_eval(TASKS)
    assert plan.tasks == NAMES
    model = {"name": "micro/decoder", "architecture": "decoder", "path": str(micro_run / "decoder")}
    ours = run_lm_eval(model, plan, batch_size=8, out=tmp_path)["lm_eval"]
    direct = _direct("hf", f"pretrained={micro_run / 'decoder'},device=cpu", task_dir, batch_size=8)
    for task in NAMES:
        samples = direct["samples"][task]
        mine = _per_item(tmp_path, "micro/decoder", task)
        assert len(mine) == len(samples) == ours[task]["n"]
        for s in samples:
            row = mine[s["doc_id"]]
            for metric in s["metrics"]:
                assert row[metric] == s[metric], (task, s["doc_id"], metric)
            assert row["scores"] == pytest.approx([r[0] for r in s["filtered_resps"]], abs=1e-5)
        assert ours[task]["acc"] == direct["results"][task]["acc,none"]
    assert ours["twinlm_world_facts"]["acc_norm"] == direct["results"]["twinlm_world_facts"]["acc_norm,none"]
    # The normalised accuracy divides by characters: it must differ from the raw one somewhere.
    facts = _per_item(tmp_path, "micro/decoder", "twinlm_world_facts").values()
    assert any(r["acc"] != r["acc_norm"] for r in facts)


def _ettin_by_hand(model, tok, context, continuation, offset=0):
    """Ettin's protocol built token by token: [CLS] ctx cont[:p] [MASK] [MASK] [MASK] [SEP]."""
    ctx = [tok.cls_token_id] + tok(context, add_special_tokens=False).input_ids
    full = tok(continuation, add_special_tokens=False).input_ids + [tok.sep_token_id]
    per_token = []
    for p, target in enumerate(full):
        ids = ctx + full[:p] + [tok.mask_token_id] * 3 + [tok.sep_token_id]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, len(ctx) + p + offset]
        per_token.append(torch.log_softmax(logits, -1)[target].item())
    return per_token


def test_ettin_scorer_equals_the_protocol_built_by_hand(encoder):
    from lm_eval.api.instance import Instance

    from twinlm.evaluate.lm_eval_encoder import EncoderLM
    from twinlm.evaluate.scoring import encoder_loglik, encoder_pair

    model, tok = encoder
    context, continuation = "Samuel Berg studied at", " Northgate University"
    hand = _ettin_by_hand(model, tok, context, continuation)
    assert len(hand) == len(tok(continuation, add_special_tokens=False).input_ids) + 1 > 2  # the end token too
    # One token by hand: "[CLS] ctx [MASK] [MASK] [MASK] [SEP]" scores it at the first mask, then
    # "[CLS] ctx token [MASK] [MASK] [MASK] [SEP]" scores the end token.
    first = tok(continuation, add_special_tokens=False).input_ids[:1]
    ctx = [tok.cls_token_id] + tok(context, add_special_tokens=False).input_ids
    masks = [tok.mask_token_id] * 3 + [tok.sep_token_id]
    with torch.no_grad():
        at_token = model(input_ids=torch.tensor([ctx + masks])).logits[0, len(ctx)].log_softmax(-1)[first[0]]
        at_end = model(input_ids=torch.tensor([ctx + first + masks])).logits[0, len(ctx) + 1].log_softmax(-1)[tok.sep_token_id]
    (lp_one, _, n_one), = encoder_loglik(model, tok, [(encoder_pair(tok, context, "")[0], first)], "ettin")
    assert n_one == 2 and lp_one == pytest.approx((at_token + at_end).item(), abs=1e-5)
    # The harness interface: the context's trailing space moves to the continuation, as in lm-eval.
    lm = EncoderLM(model, tokenizer=tok, scoring="ettin", device="cpu")
    reqs = [Instance("loglikelihood", {}, (c, x), 0) for c, x in [(context, continuation), (context + " ", continuation[1:])]]
    (lp, greedy), (lp_moved, _) = lm.loglikelihood(reqs)
    assert lp == pytest.approx(sum(hand), abs=1e-4) and lp_moved == pytest.approx(lp, abs=1e-5)
    assert isinstance(greedy, bool)
    pll = EncoderLM(model, tokenizer=tok, scoring="pll", device="cpu").loglikelihood(reqs[:1])[0][0]
    assert abs(pll - lp) > 1e-3


def test_mntp_offset_reads_the_logits_before_the_first_mask(encoder):
    from twinlm.evaluate.scoring import encoder_loglik, encoder_pair

    model, tok = encoder
    pair = encoder_pair(tok, "Casey Navarro was born in", " Marseille")
    (shifted, _, _), = encoder_loglik(model, tok, [pair], "ettin", prediction_offset=-1)
    assert shifted == pytest.approx(sum(_ettin_by_hand(model, tok, "Casey Navarro was born in", " Marseille", -1)), abs=1e-4)
    (plain, _, _), = encoder_loglik(model, tok, [pair], "ettin")
    assert abs(shifted - plain) > 1e-3


def test_registered_encoder_class_and_choice_task_score_like_the_harness(micro_run, encoder, task_dir, tmp_path):
    from twinlm.evaluate.benchmarks import plan_lm_eval, run_lm_eval
    from twinlm.evaluate.choice import ChoiceTask

    model, tok = encoder
    spec = {"name": "micro/encoder", "architecture": "encoder", "path": str(micro_run / "encoder")}
    ours = run_lm_eval(spec, plan_lm_eval(TASKS), "ettin", out=tmp_path)["lm_eval"]
    direct = _direct("twinlm-encoder", f"pretrained={micro_run / 'encoder'},scoring=ettin", task_dir)
    for task in NAMES:
        mine = _per_item(tmp_path, "micro/encoder", task)
        for s in direct["samples"][task]:
            assert mine[s["doc_id"]]["scores"] == pytest.approx([r[0] for r in s["filtered_resps"]], abs=1e-5)
        assert ours[task]["acc"] == direct["results"][task]["acc,none"]
    # The world's choice task on the same items: the same scorer and lm-eval's acc / acc_norm.
    docs = [json.loads(x) for x in (task_dir / "world_facts.jsonl").read_text().splitlines()]
    items = [{"context": d["question"], "choices": d["choices"], "answer": d["label"]} for d in docs]
    for scoring in ("ettin", "pll"):
        got = ChoiceTask(items, encoder_scoring=scoring).evaluate(model, tok, "encoder")
        if scoring == "ettin":
            assert got["accuracy"] == ours["twinlm_world_facts"]["acc"]
            assert got["accuracy_norm"] == ours["twinlm_world_facts"]["acc_norm"]
    scores = {s: ChoiceTask(items, encoder_scoring=s).scores(model, tok, "encoder", items[0]) for s in ("ettin", "pll")}
    assert [n for _, n in scores["ettin"]] == [n + 1 for _, n in scores["pll"]]  # ettin also scores [SEP]
    assert scores["ettin"] != scores["pll"]


def test_plain_model_gets_only_the_benchmarks_and_bad_tasks_fail_first(micro_run, task_dir, tmp_path, capsys):
    plain = tmp_path / "plain-decoder"
    shutil.copytree(micro_run / "decoder", plain, ignore=shutil.ignore_patterns("phases", "work", "twinlm.yaml"))
    out = tmp_path / "res"
    assert main(["eval", str(plain), "--lm-eval", "world_facts.yaml", "--lm-eval-limit", "6", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    model = results["models"]["plain-decoder"]
    assert model["tasks"] == {}  # no world task ran
    facts = model["benchmarks"]["lm_eval"]["twinlm_world_facts"]
    assert facts["n"] == 6 and 0 <= facts["acc"] <= 1 and 0 <= facts["acc_norm"] <= 1 and facts["model"] == "hf"
    assert len(_per_item(out, "plain-decoder", "twinlm_world_facts")) == 6
    assert "lm_eval/twinlm_world_facts/acc" in printed and "no twinlm recipe" in printed
    assert main(["eval", str(plain), "--lm-eval", str(task_dir / "world_facts.jsonl"), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert "must be a task YAML file" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow  # indexes the harness's whole task registry (~15 s)
def test_a_misspelt_harness_task_name_fails_in_one_line_with_suggestions(tmp_path, capsys, micro_run):
    assert main(["eval", str(micro_run / "decoder"), "--lm-eval", "arc_easyy", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a task YAML path nor a task of lm-evaluation-harness; did you mean arc_easy" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "bad").exists()


def test_local_task_with_missing_data_fails_in_one_line(tmp_path, monkeypatch):
    from twinlm.evaluate.benchmarks import plan_lm_eval

    (tmp_path / "t.yaml").write_text("task: twinlm_missing\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
                                     "    test: nowhere.jsonl\ntest_split: test\noutput_type: multiple_choice\n"
                                     "doc_to_text: q\ndoc_to_choice: c\ndoc_to_target: a\n")
    monkeypatch.chdir(tmp_path.parent)
    with pytest.raises(UserError, match="cannot load the data of twinlm_missing"):
        plan_lm_eval([str(tmp_path / "t.yaml")])


def test_encoder_generation_and_rolling_follow_the_same_protocol(encoder):
    from lm_eval.api.instance import Instance

    from twinlm.evaluate.lm_eval_encoder import EncoderLM

    model, tok = encoder
    lm = EncoderLM(model, tokenizer=tok, device="cpu")
    context = "Nadia Greco was born in"
    (text,) = lm.generate_until([Instance("generate_until", {}, (context, {"until": ["\n"], "max_gen_toks": 3}), 0)])
    ids = [tok.cls_token_id] + tok(context, add_special_tokens=False).input_ids
    start = len(ids)
    for _ in range(3):  # greedy by hand: the first of three masks before [SEP] gives the next token
        row = torch.tensor([ids + [tok.mask_token_id] * 3 + [tok.sep_token_id]])
        with torch.no_grad():
            token = int(model(input_ids=row).logits[0, len(ids)].argmax())
        if token == tok.sep_token_id:
            break
        ids.append(token)
    assert text == tok.decode(ids[start:], skip_special_tokens=True).split("\n")[0]
    (rolling,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (context,), 0)])
    assert rolling == pytest.approx(sum(_ettin_by_hand(model, tok, "", context)), abs=1e-4)
