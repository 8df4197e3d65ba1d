"""The suite's retrieval part: MS MARCO-style triplets from a mirror written here in the hub
dataset's layout and columns, Ettin's loss and sampler, then mteb on a local BEIR folder named as
an mteb task in the mirror; both twins, each pooled as Ettin pooled it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from twinlm.errors import UserError

pytest.importorskip("mteb")

from twinlm.evaluate.suite import retrieval  # noqa: E402
from twinlm.evaluate.suite.mirror import MissingData  # noqa: E402

BEIR = Path(__file__).parents[1] / "data" / "beir_tiny"


def write_mirror(root: Path) -> Path:
    """Triplets (query, positive, negative) built from the tiny BEIR folder's test qrels, in the
    layout of the MS MARCO set Ettin used, and the BEIR folder as the mirror's mteb task `Tiny`."""
    import datasets

    from twinlm.evaluate.retrieval import read_beir

    beir = read_beir(BEIR)
    ids = sorted(beir["corpus"])
    rows = []
    for q, rel in sorted(beir["qrels"].items()):
        doc = next(iter(rel))
        rows.append({"query": beir["queries"][q], "positive": beir["corpus"][doc],
                     "negative": beir["corpus"][ids[(ids.index(doc) + 7) % len(ids)]]})
    hub, config, split = retrieval.MSMARCO
    folder = root / hub / config
    folder.mkdir(parents=True)
    datasets.Dataset.from_list(rows).to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    shutil.copytree(BEIR, root / "Tiny")
    return root


def settings(tmp_path, **kw):
    base = dict(data_dir=tmp_path / "mirror", mteb_tasks=["Tiny"], lrs=[1e-3], seeds=1, steps=4, batch_size=8,
                max_length=64)
    return SimpleNamespace(**{**base, **kw})


def test_plan_and_needs(tmp_path):
    s = settings(tmp_path, lrs=[1e-4, 3e-4], seeds=2)
    runs = retrieval.plan("mteb", {"name": "m/encoder", "architecture": "encoder"}, s)
    assert [(r.lr, r.seed) for r in runs] == [(1e-4, 0), (1e-4, 1), (3e-4, 0), (3e-4, 1)]
    assert len({r.key for r in runs}) == 4
    with pytest.raises(MissingData, match="msmarco-co-condenser.*triplet-hard"):
        retrieval.needs("mteb", s)
    write_mirror(tmp_path / "mirror")
    train, tiny = retrieval.needs("mteb", s)
    assert (train.hub_id, train.config, train.split) == retrieval.MSMARCO and train.local
    assert tiny.local == [tmp_path / "mirror" / "Tiny"]
    with pytest.raises(MissingData, match="mteb task ArguAna is not in the mirror.*mirror/ArguAna/"):
        retrieval.needs("mteb", settings(tmp_path, mteb_tasks=["ArguAna"]))
    with pytest.raises(UserError, match="needs an anchor"):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps({"text": "a", "label": 1}) + "\n")
        retrieval.training_rows(settings(tmp_path, retrieval_train=str(bad)))


@pytest.mark.parametrize("twin", ["decoder", "encoder"])
def test_finetune_on_triplets_then_mteb(micro_run, tmp_path, twin):
    write_mirror(tmp_path / "mirror")
    s = settings(tmp_path)
    model = {"name": f"micro/{twin}", "architecture": twin, "path": str(micro_run / twin)}
    (run,) = retrieval.plan("mteb", model, s)
    record = retrieval.execute(run, model, s)
    assert record["pooling"] == ("lasttoken" if twin == "decoder" else "mean")
    assert record["train_rows"] == 30 and record["n_tasks"] == 1
    assert record["score"] == pytest.approx(100 * record["tasks"]["Tiny"]["main_score"])
    assert record["tasks"]["Tiny"]["harness"].startswith("mteb")
    assert record["train_loss_last"] < record["train_loss_first"]


def test_a_mirrored_mteb_task_keeps_its_own_identical_id_rule(tmp_path):
    """ArguAna, FEVERHardNegatives and FiQA2018 drop a document whose id equals the query's; read
    from the mirror they must too (else their scores differ from mteb's own on the same data),
    while a folder named as no mteb task stays mteb's default (keep them)."""
    for name in ("FiQA2018", "ArguAna", "SCIDOCS", "Tiny"):
        shutil.copytree(BEIR, tmp_path / "mirror" / name)
    tasks = retrieval.load_eval_tasks(settings(tmp_path, mteb_tasks=["FiQA2018", "ArguAna", "SCIDOCS", "Tiny"]))
    assert {n: t.ignore_identical_ids for n, t in tasks.items()} == {
        "FiQA2018": True, "ArguAna": True, "SCIDOCS": False, "Tiny": False}
    folder = retrieval.load_eval_tasks(settings(tmp_path, data_dir=None, mteb_tasks=[str(tmp_path / "mirror" / "ArguAna")]))
    assert folder["ArguAna"].ignore_identical_ids is False  # a folder given by path is not a claim to be ArguAna
