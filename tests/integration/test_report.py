"""The comparison report: winner table from hand-made results, and the HTML opens in headless
Chromium with a non-blank screenshot and every image loaded."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from twinlm.evaluate.metrics import summarise
from twinlm.evaluate.report import comparison_rows, write_report


def fake_results(run) -> dict:
    def task(primary, values, finetuned=True, **extra):
        out = {"primary": primary, "finetuned": finetuned, "metrics": {primary: summarise(values)}}
        return {**out, "best_lr": 1e-3} if finetuned else out

    res = {
        "settings": {"steps": 10, "batch_size": 8, "max_length": 64, "seeds": 3, "lrs": [1e-3], "pooling": "mean"},
        "missing": ["other/decoder"],
        "table": "metric ...",
        "models": {
            "run/encoder": {"name": "run/encoder", "architecture": "encoder", "path": "x", "run": str(run), "tasks": {
                "classification": task("accuracy", [0.80, 0.82, 0.84]),
                "retrieval": task("ndcg@10", [0.50, 0.51, 0.49]),
                "intrinsic": task("masked_accuracy", [0.4], finetuned=False)}},
            "run/decoder": {"name": "run/decoder", "architecture": "decoder", "path": "y", "run": str(run), "tasks": {
                "classification": task("accuracy", [0.70, 0.71, 0.72]),
                "retrieval": {**task("ndcg@10", [0.50, 0.52, 0.48]), "converged": False},
                "intrinsic": task("perplexity", [30.0], finetuned=False)}},
        },
    }
    # Benchmark results as `twinlm eval --lm-eval/--mteb` writes them.
    res["models"]["run/encoder"]["benchmarks"] = {"lm_eval": {"sciq": {"acc": 0.41, "acc_norm": 0.43, "n": 1000}},
                                                  "mteb": {"SciFact": {"ndcg_at_10": 0.612}}}
    res["models"]["run/decoder"]["benchmarks"] = {"lm_eval": {"sciq": {"acc": 0.57, "acc_norm": 0.55, "n": 1000}},
                                                  "mteb": {"SciFact": {"ndcg_at_10": 0.498}}}
    return res


@pytest.fixture
def report(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"twin": t, "phase": ph, "step": s, "global_step": s, "tokens": 512 * s, "loss": 6 - s / 4 - (t == "decoder")}
            for t in ("encoder", "decoder") for ph in ("pretrain", "decay") for s in range(1, 6)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "report"
    out.mkdir()
    return write_report(fake_results(run), out), out


def test_winners_gaps_and_missing_models_in_the_markdown(report, tmp_path):
    rows = {r["task"]: r for r in comparison_rows(fake_results(tmp_path / "run"))}
    assert rows["classification"]["winner"] == "encoder" and rows["classification"]["gap"] == pytest.approx(0.11)
    assert rows["classification"]["clear"] is True
    assert rows["retrieval"]["winner"] == "inconclusive"  # the decoder's fine-tuning never left the plateau
    assert rows["intrinsic"]["winner"] is None  # MLM accuracy vs perplexity: no winner
    assert rows["lm_eval/sciq"]["winner"] == "decoder" and rows["lm_eval/sciq"]["gap"] == pytest.approx(0.16)
    assert rows["mteb/SciFact"]["winner"] == "encoder"
    md = report[0]["markdown"].read_text()
    assert "**0.820 ± 0.020** ★" in md and "other/decoder" in md and "10 steps, batch 8" in md
    assert "0.500 ± 0.020 (not converged)" in md and "| Encoders win retrieval | **inconclusive** |" in md
    assert "| Decoders win generation (lm_eval/sciq) | **reproduced** |" in md
    assert "| Encoders win retrieval (mteb/SciFact) | **reproduced** |" in md
    assert "| lm_eval/sciq | acc | 0.410 ± 0.000 | **0.570 ± 0.000** ★ | decoder | 0.160 |" in md
    assert {p.name for p in report[1].glob("*.png")} == {"curves.png", "classification.png", "retrieval.png", "intrinsic.png"}


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    try:
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True, capture_output=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as err:
        pytest.skip(f"headless Chromium is not installed and `apt-get install -y chromium` failed: {err}")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("apt-get installed chromium but no chromium binary is on PATH")
    return found


def test_report_html_opens_in_headless_chromium(report, tmp_path):
    from PIL import Image

    html_path = report[0]["html"]
    text = html_path.read_text()
    assert "src=\"data:image/png;base64," in text and not re.search(r'src="(?!data:)', text)  # self-contained
    browser = _chromium()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,2000", html_path.as_uri()],
                   check=True, capture_output=True, timeout=120)
    image = Image.open(shot).convert("L")
    low, high = image.getextrema()
    assert high - low > 100  # ink on paper, not a blank page
    dom = subprocess.run([browser, *flags, "--virtual-time-budget=5000", "--dump-dom", html_path.as_uri()],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    assert 'data-images-ok="true"' in dom and 'data-images="4"' in dom, dom[:300]
    assert '<td class="nc">0.500 ± 0.020 (not converged)</td>' in dom  # greyed
    assert '<td class="yes"><b>reproduced</b></td>' in dom and "lm_eval/sciq" in dom
