"""`--suite`: SPEC parsing, GLUE's metrics and average, the sweep's selection, --dry-run, missing
data, --resume's refusal, the paper-layout tables. No model is trained here (see
tests/integration/test_suite.py for the runs)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from twinlm.cli import main
from twinlm.errors import UserError
from twinlm.evaluate.suite import glue_tasks as G
from twinlm.evaluate.suite import registry
from twinlm.evaluate.suite.base import SuiteSettings
from twinlm.evaluate.suite.results import default_select


def fake_model(folder: Path, arch: str) -> Path:
    """A model folder resolve() accepts (config.json + a complete safetensors file); never loaded here."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architectures": [arch], "model_type": "modernbert"}))
    header = json.dumps({"w": {"dtype": "F32", "shape": [1000, 10], "data_offsets": [0, 40000]}}).encode()
    weights = folder / "model.safetensors"
    weights.write_bytes(struct.pack("<Q", len(header)) + header)
    with weights.open("r+b") as f:  # complete (sparse zeros): resolve() refuses a truncated file
        f.truncate(8 + len(header) + 40000)
    return folder


@pytest.fixture()
def run_dir(tmp_path):
    fake_model(tmp_path / "run" / "encoder", "ModernBertForMaskedLM")
    fake_model(tmp_path / "run" / "decoder", "ModernBertDecoderForCausalLM")
    return tmp_path / "run"


def test_spec_parsing_orders_tasks_and_names_bad_ones(monkeypatch):
    assert registry.parse_spec("glue:sst2,glue:mnli") == {"glue": ["mnli", "sst2"]}  # MNLI first: others start from it
    assert registry.parse_spec("glue")["glue"] == list(G.TASKS)
    with pytest.raises(UserError, match="unknown task 'wnli' of suite part glue"):
        registry.parse_spec("glue:wnli")
    with pytest.raises(UserError, match="unknown suite part 'bleu'"):
        registry.parse_spec("bleu")
    monkeypatch.setitem(registry.PART_MODULES, "winogender", "twinlm.evaluate.suite.no_such_part")
    with pytest.raises(UserError, match="suite part 'winogender' is not available .*no_such_part"):
        registry.parse_spec("glue,winogender")


def test_selection_averages_seeds_and_picks_the_best_configuration():
    def record(lr, seed, select, score):
        return {"run": {"part": "glue", "task": "mnli", "lr": lr, "seed": seed, "epochs": 1, "extra": [["batch_size", "16"]]},
                "select": select, "score": score, "metrics": {"accuracy_matched": select}, "converged": True}

    chosen = default_select([record(1e-5, 42, 80, 79), record(1e-5, 43, 70, 69), record(3e-5, 42, 76, 75),
                             record(3e-5, 43, 76, 77)])
    assert chosen["chosen"]["lr"] == 3e-5  # mean 76 beats mean 75, though 1e-5 had the single best run
    assert chosen["score"] == 76 and chosen["seeds"] == 2 and chosen["std"] == pytest.approx(2 ** 0.5)
    assert chosen["configurations"] == 2 and chosen["runs"] == 4


def test_dry_run_lists_every_run_of_ettins_sweep_with_data_and_cost(run_dir, tmp_path, capsys, glue_mirror):
    mirror = glue_mirror(tmp_path / "mirror", tasks=("sst2", "stsb"))
    assert main(["eval", str(run_dir), "--suite", "glue:sst2,glue:stsb", "--data-dir", str(mirror), "--dry-run",
                 "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    sweep = 6 * 4 * 3 + 6 * 4 * 5  # lr x batch x epochs: SST-2 1-3 epochs, STS-B 2-15
    assert f"{2 * sweep} run(s) for 2 model(s)" in out
    runs = [line for line in out.splitlines() if "  glue:" in line and "lr=" in line]
    assert len(runs) == 2 * sweep
    assert any("glue:stsb  lr=3e-05 seed=42 epochs=15" in r and "batch_size=128" in r for r in runs)
    assert f"nyu-mll/glue (sst2) train: {mirror}/nyu-mll/glue/sst2 (1 file(s), 16 rows)" in out
    assert "cost: glue:" in out and "FLOPs" in out
    assert not (tmp_path / "out").exists()  # nothing was run or written


def test_missing_data_is_one_line_before_any_work_or_a_skip(run_dir, tmp_path, capsys, glue_mirror):
    mirror = glue_mirror(tmp_path / "mirror", tasks=("sst2",))
    args = ["eval", str(run_dir), "--suite", "glue:sst2,glue:cola", "--data-dir", str(mirror), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "nyu-mll/glue (cola) split 'train'" in err and f"{mirror}/nyu-mll/glue/cola/train-*.parquet" in err
    assert not (tmp_path / "o").exists()
    assert main(args + ["--skip-missing", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "skipped: glue:cola needs nyu-mll/glue (cola)" in out and "glue:cola  lr=" not in out


def test_resume_refuses_a_changed_setting(tmp_path):
    from twinlm.evaluate.suite.runner import STATE, open_out

    out = open_out(tmp_path / "o", SuiteSettings(steps=5, lrs=(1e-4,)), overwrite=False, resume=False)
    assert open_out(out, SuiteSettings(steps=5, lrs=(1e-4,), data_dir=tmp_path), False, True) == out  # data may move
    with pytest.raises(UserError, match=r"setting lrs changed \(\[0.0001\] when .* started, \[0.001\] now\)"):
        open_out(out, SuiteSettings(steps=5, lrs=(1e-3,)), False, True)
    with pytest.raises(UserError, match="pass --resume"):
        open_out(out, SuiteSettings(steps=5), False, False)
    # A suite started by an older protocol is not continued with runs of the new one.
    state = json.loads((out / STATE).read_text())
    state["settings"].pop("protocol")
    (out / STATE).write_text(json.dumps(state))
    with pytest.raises(UserError, match=r"setting protocol changed \(None when .* started, 2 now\)"):
        open_out(out, SuiteSettings(steps=5, lrs=(1e-4,)), False, True)


def test_tables_put_twins_side_by_side_with_the_papers_reference_rows():
    from twinlm.evaluate.suite.tables import markdown

    def model(name, arch, path, glue_avg=None, gen_avg=None):
        task = {"score": 90.0, "std": 0.0, "seeds": 1, "converged": True}
        return {"name": name, "architecture": arch, "path": path, "run": None,
                "suite": {"glue": {"tasks": {"sst2": task, "mnli": task}, "average": glue_avg},
                          "generative": {"tasks": {"piqa": {**task, "score": 60.0}}, "average": gen_avg}}}

    results = {"suite": {"spec": {"glue": ["mnli", "sst2"], "generative": ["piqa"]}, "settings": {}, "skipped": []},
               "models": {m["name"]: m for m in (
                   model("jhu-clsp/ettin-decoder-150m", "decoder", "jhu-clsp/ettin-decoder-150m", gen_avg=47.0),
                   model("jhu-clsp/ettin-encoder-150m", "encoder", "jhu-clsp/ettin-encoder-150m", glue_avg=88.0))}}
    text = "\n".join(markdown(results))
    enc = text[text.index("### Encoder"):text.index("### Generative")]
    rows = [r for r in enc.splitlines() if r.startswith("| jhu") or r.startswith("| ↳")]
    assert rows[0].startswith("| jhu-clsp/ettin-encoder-150m | encoder |")  # encoder first, its twin next
    assert rows[1].startswith("| ↳ paper: ettin-encoder-150m |") and "| 45.7 | 95.8 | 89.2 | 88.9 |" in rows[1]
    assert rows[2].startswith("| jhu-clsp/ettin-decoder-150m | decoder |")
    dec = text[text.index("### Generative"):]
    assert "| ↳ paper: ettin-decoder-150m |" in dec and dec.count("| 46.2 |") == 1
    assert "| 60.0 |" in dec and "| 47.0 |" in dec


def test_no_chart_puts_two_metrics_on_one_axis(monkeypatch):
    from twinlm.evaluate import report

    figs = []
    monkeypatch.setattr(report, "_png", lambda fig: figs.append(fig) or b"")
    one = {"mean": 0.5, "std": 0.0, "seeds": [0.5]}
    results = {"models": {
        "e": {"name": "e", "architecture": "encoder", "run": None,
              "tasks": {"intrinsic": {"primary": "masked_accuracy", "metrics": {"masked_accuracy": one}}}},
        "d": {"name": "d", "architecture": "decoder", "run": None,
              "tasks": {"intrinsic": {"primary": "perplexity", "metrics": {"perplexity": {**one, "mean": 40.0}}}}}}}
    report.charts(results)
    (fig,) = figs
    assert sorted(ax.get_ylabel() for ax in fig.axes) == ["masked_accuracy", "perplexity"]


def test_a_glue_record_says_ettins_cadence_the_best_step_and_that_the_last_evaluation_counts():
    assert G.EVAL_EVERY == {"mnli": 2300, "qqp": 2000, "qnli": 1000, "sst2": 500, "cola": 250, "stsb": 200,
                            "mrpc": 100, "rte": 100}  # bert24 src/evals/glue_jobs.py
    assert G.TASKS["cola"].eval_every == 250
    rec = G.protocol(250, [(250, 40.0), (500, 55.0), (750, 55.0), (800, 50.0)])
    assert rec == {"eval_every": 250, "evals": [[250, 40.0], [500, 55.0], [750, 55.0], [800, 50.0]], "best_step": 500,
                   "scored_step": 800, "early_stopping": False, "stopped_at": None}


def test_generative_metrics_and_bos_are_the_ones_ettins_numbers_were_made_with():
    """acc_norm / acc / exact_match per task (checked on the paper's Pythia-410m row against
    EleutherAI/pythia's own harness results, see generative.py) and add_bos_token=True for both
    twins (Ettin's docs/decoder-eval.md and docs/encoder-generative-eval.md)."""
    from twinlm.evaluate.suite import generative

    assert {t: s.metric for t, s in generative.TASKS.items()} == {
        "arc_challenge": "acc_norm", "hellaswag": "acc_norm", "lambada": "acc", "openbookqa": "acc_norm",
        "piqa": "acc_norm", "sciq": "acc_norm", "siqa": "acc", "triviaqa": "exact_match", "winogrande": "acc",
        "wsc": "acc"}
    assert generative.ADD_BOS_TOKEN is True


def test_glue_weight_decay_decays_as_ettins_decoupled_adamw_did():
    """Composer's DecoupledAdamW (Ettin's) multiplies a weight by 1 - 8e-6 x lr_t/lr_peak per step;
    the Trainer's torch AdamW, given trainer_weight_decay(lr), must do the same (a zero gradient
    isolates the decay)."""
    import torch

    for lr in (1e-5, 8e-5, 3e-4):
        w = torch.nn.Parameter(torch.ones(4))
        opt = torch.optim.AdamW([w], lr=lr, weight_decay=G.trainer_weight_decay(lr))
        w.grad = torch.zeros(4)
        opt.step()
        assert torch.allclose(w.detach(), torch.full((4,), 1 - G.WEIGHT_DECAY), rtol=0, atol=1e-9)
