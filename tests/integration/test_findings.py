"""The report's line per Ettin finding, from hand-made results: reproduced, not reproduced, and
inconclusive when a run did not converge or the spreads overlap; benchmarks bear on findings too."""

from __future__ import annotations

from twinlm.evaluate.metrics import summarise
from twinlm.evaluate.report import findings, render_markdown


def task(primary, values, finetuned=True, converged=True, n=None):
    out = {"primary": primary, "finetuned": finetuned, "metrics": {primary: summarise(values)}}
    if finetuned:
        out.update(best_lr=1e-3, converged=converged,
                   budget={"steps": 150, "batch_size": 32, "lrs": [1e-3], "seeds": len(values)})
    else:
        out["n"] = n
    return out


def model(name, arch, origin="native", **tasks):
    return {"name": name, "architecture": arch, "path": name, "run": None, "origin": origin, "tasks": tasks}


def results(*models, **extra):
    return {"settings": {"steps": 150, "batch_size": 32, "seeds": 3, "lrs": [1e-3]},
            "models": {m["name"]: m for m in models}, **extra}


def verdicts(res) -> dict[str, dict]:
    return {f["finding"]: f for f in findings(res)}


def test_reproduced_not_reproduced_and_inconclusive_findings():
    enc = model("enc", "encoder",
                classification=task("accuracy", [0.80, 0.82, 0.84]),      # clear encoder win
                retrieval=task("ndcg@10", [0.50, 0.55, 0.45]),            # overlaps the decoder's spread
                choice=task("accuracy", [0.60], finetuned=False, n=400),  # beats the decoder: not reproduced
                bias=task("neutral_pct", [20.0], finetuned=False, n=100))
    dec = model("dec", "decoder",
                classification=task("accuracy", [0.70, 0.71, 0.72]),
                retrieval=task("ndcg@10", [0.48, 0.52, 0.50]),
                choice=task("accuracy", [0.40], finetuned=False, n=400),
                bias=task("neutral_pct", [19.0], finetuned=False, n=100))
    v = verdicts(results(enc, dec))
    cls = v["Encoders win classification"]
    assert cls["verdict"] == "reproduced" and cls["gap"] == "+0.110" and "3 seeds" in cls["spread"]
    assert "150 steps × batch 32" in cls["budget"]
    assert v["Encoders win retrieval"]["verdict"] == "inconclusive"
    assert "within the spread" in v["Encoders win retrieval"]["detail"]
    gen = v["Decoders win generation"]
    assert gen["verdict"] == "not reproduced" and gen["gap"] == "-0.200" and "400 items" in gen["spread"]
    # 20% vs 19% neutral over 100 items: one point, far inside the binomial standard errors (~4 points each).
    assert v["Encoders choose the neutral pronoun more often"]["verdict"] == "inconclusive"
    assert v["Cross-objective models trail native ones"]["verdict"] == "inconclusive"
    assert "not measured" in v["Cross-objective models trail native ones"]["detail"]


def test_a_run_that_did_not_converge_makes_the_finding_inconclusive_whatever_the_gap():
    enc = model("enc", "encoder", retrieval=task("ndcg@10", [0.005, 0.004, 0.006], converged=False))
    dec = model("dec", "decoder", retrieval=task("ndcg@10", [0.176, 0.17, 0.18]))
    line = verdicts(results(enc, dec))["Encoders win retrieval"]
    assert line["verdict"] == "inconclusive" and "enc did not converge" in line["detail"]
    md = render_markdown(results(enc, dec), {})
    assert "(not converged)" in md and "inconclusive (encoder fine-tuning did not converge)" in md
    retrieval_row = next(line for line in md.splitlines() if line.startswith("| retrieval |"))
    assert "★" not in retrieval_row  # no winner starred from a run that never trained


def test_cross_objective_models_and_benchmarks_get_their_own_lines():
    enc = model("enc", "encoder", classification=task("accuracy", [0.80, 0.81, 0.82]),
                intrinsic=task("masked_accuracy", [0.50], finetuned=False, n=5000))
    dec = model("dec", "decoder", classification=task("accuracy", [0.60, 0.61, 0.62]),
                intrinsic=task("perplexity", [20.0], finetuned=False, n=5000))
    d2e = model("d2e", "encoder", origin="cross", classification=task("accuracy", [0.70, 0.71, 0.72]),
                intrinsic=task("masked_accuracy", [0.40], finetuned=False, n=5000))
    e2d = model("e2d", "decoder", origin="cross", classification=task("accuracy", [0.60, 0.62, 0.64]),
                intrinsic=task("perplexity", [15.0], finetuned=False))
    enc["benchmarks"] = {"lm_eval": {"sciq": {"acc": 0.50, "acc_norm": 0.52, "n": 1000}},
                         "mteb": {"SciFact": {"ndcg_at_10": 0.40}}}
    dec["benchmarks"] = {"lm_eval": {"sciq": {"acc": 0.70, "acc_stderr": 0.0145, "acc_norm": 0.71, "n": 1000,
                                              "harness": "lm-eval 0.4.13"}},
                         "mteb": {"SciFact": {"ndcg_at_10": 0.30}}}
    v = verdicts(results(enc, dec, d2e, e2d))
    # The native twins are compared; the converted models do not stand in for them.
    assert v["Encoders win classification"]["gap"] == "+0.200"
    d2e_line = v["Cross-objective models trail native ones (d2e vs native encoder)"]
    assert d2e_line["verdict"] == "reproduced" and "classification +0.100" in d2e_line["gap"]
    # e2d: lower perplexity than the native decoder (native loses intrinsic), classification a tie within spread.
    e2d_line = v["Cross-objective models trail native ones (e2d vs native decoder)"]
    assert e2d_line["verdict"] == "not reproduced" and "intrinsic -5.000" in e2d_line["gap"]
    assert "classification: native inconclusive (the gap is within the spread)" in e2d_line["detail"]
    assert v["Decoders win generation (lm_eval/sciq)"]["verdict"] == "reproduced"
    assert v["Decoders win generation (lm_eval/sciq)"]["gap"] == "+0.200"
    # The harness's own stderr for the decoder, the binomial one over n for the encoder (no stderr given).
    assert v["Decoders win generation (lm_eval/sciq)"]["spread"].startswith(f"±{0.0145 + (0.25 / 1000) ** 0.5:.3f}")
    # One MTEB run, no spread: decided on the gap, and said so.
    mteb = v["Encoders win retrieval (mteb/SciFact)"]
    assert mteb["verdict"] == "reproduced" and "one run" in mteb["spread"]
    assert "Decoders win generation" not in v  # no world choice task here: the benchmark line stands alone


def test_several_pretraining_runs_pair_each_runs_twins_and_spread_the_gap_over_runs():
    def run(name, enc_cls, dec_cls, enc_ret, dec_ret, converged=True):
        enc = model(f"{name}/encoder", "encoder", classification=task("accuracy", [enc_cls - 0.001, enc_cls + 0.001]),
                    retrieval=task("ndcg@10", [enc_ret - 0.001, enc_ret + 0.001], converged=converged))
        dec = model(f"{name}/decoder", "decoder", classification=task("accuracy", [dec_cls - 0.001, dec_cls + 0.001]),
                    retrieval=task("ndcg@10", [dec_ret - 0.001, dec_ret + 0.001]))
        enc["run"] = dec["run"] = f"/runs/{name}"
        return enc, dec

    # Within each run the seeds agree closely; between runs the classification gap changes sign.
    three = [*run("r1", 0.70, 0.65, 0.40, 0.30), *run("r2", 0.62, 0.66, 0.42, 0.30), *run("r3", 0.66, 0.65, 0.41, 0.30)]
    v = verdicts(results(*three))
    cls = v["Encoders win classification"]
    assert cls["verdict"] == "inconclusive" and "over pretraining runs" in cls["detail"]
    assert "r1 +0.050, r2 -0.040, r3 +0.010" in cls["detail"] and cls["gap"] == "+0.007"
    assert "std over 3 pretraining runs" in cls["spread"]
    ret = v["Encoders win retrieval"]
    assert ret["verdict"] == "reproduced" and ret["gap"] == "+0.110" and ret["spread"] == "±0.010 (std over 3 pretraining runs)"
    # Best encoder against best decoder over all runs would have picked r1's encoder and called it.
    best = verdicts(results(three[0], three[3]))["Encoders win classification"]
    assert best["verdict"] == "reproduced"

    # A run whose fine-tuning did not converge makes the pooled finding inconclusive, naming it.
    stuck = [*run("r1", 0.70, 0.65, 0.40, 0.30), *run("r2", 0.70, 0.65, 0.40, 0.30, converged=False)]
    line = verdicts(results(*stuck))["Encoders win retrieval"]
    assert line["verdict"] == "inconclusive" and "r2/encoder did not converge" in line["detail"]
