"""`--mteb`: retrieval scored by the mteb package itself, on its own tasks (by name; their data
come from the hub) or on a local BEIR-layout folder (corpus.jsonl, queries.jsonl,
qrels/test.tsv), offline.

A local folder becomes an mteb retrieval task whose data are that folder, so everything else is
mteb's: its encoding of queries and documents (title and text), its search, pytrec_eval's
metrics with graded relevance, main score nDCG@10, and mteb's default of keeping a document whose
id equals the query's (its own tasks set `ignore_identical_ids` where their data need it)."""

from __future__ import annotations

import json
from pathlib import Path

from twinlm.errors import UserError
from twinlm.evaluate.retrieval import read_beir

# results.json names for mteb's scores.
METRICS = {"ndcg@10": "ndcg_at_10", "mrr@10": "mrr_at_10", "recall@100": "recall_at_100", "map@100": "map_at_100"}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def local_task(folder: str | Path):
    """An mteb retrieval task over a BEIR folder (validated with twinlm's reader first)."""
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata

    folder = Path(folder)
    collection = read_beir(folder)  # one-line errors for a malformed folder
    titled = {str(r["_id"]): {"title": r.get("title", "") or "", "text": r["text"]} for r in _rows(folder / "corpus.jsonl")}

    class LocalBeir(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name=folder.name, description=f"BEIR-layout folder {folder}", dataset={"path": str(folder), "revision": "local"},
            type="Retrieval", category="t2t", modalities=["text"], eval_splits=["test"], eval_langs=["eng-Latn"],
            main_score="ndcg_at_10")

        def load_data(self, **kwargs) -> None:
            if self.data_loaded:
                return
            # mteb's own v1 layout ({split: {id: ...}}), converted by mteb into its datasets.
            self.corpus = {"test": titled}
            self.queries = {"test": collection["queries"]}
            self.relevant_docs = {"test": collection["qrels"]}
            self.convert_v1_dataset_format_to_v2(None)
            self.data_loaded = True

    return LocalBeir()


def load_tasks(specs: list[str]) -> dict:
    """{name: mteb task} for folders and mteb task names; every name checked, and every task's
    data loaded, before any model is evaluated."""
    import mteb

    tasks = {}
    for spec in (s.strip() for s in specs if s.strip()):
        if Path(spec).is_dir():
            task = local_task(spec)
        else:
            try:
                task = mteb.get_task(spec)
            except Exception as err:
                raise UserError(f"--mteb {spec}: not a BEIR-layout folder nor an mteb task ({str(err).splitlines()[0]})") from None
            if task.metadata.type != "Retrieval":
                raise UserError(f"--mteb {spec}: twinlm runs mteb's retrieval tasks; {spec} is a {task.metadata.type} task")
        try:
            task.load_data()
        except UserError:
            raise
        except Exception as err:  # hub data without a network, most often
            raise UserError(f"--mteb {spec}: cannot load its data ({str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__})") from None
        tasks[task.metadata.name] = task
    return tasks


def evaluate(embedder, tasks: dict) -> dict:
    """{task: {"ndcg@10", "mrr@10", "recall@100", "map@100", "main_score", "n", "harness"}} from
    mteb.evaluate on a SentenceTransformer (no result cache written)."""
    import warnings

    import datasets
    import mteb

    datasets.disable_progress_bars()
    with warnings.catch_warnings():  # mteb 2.26 calls sentence-transformers 6's renamed methods
        warnings.simplefilter("ignore", FutureWarning)
        result = mteb.evaluate(embedder, tasks=list(tasks.values()), cache=None, show_progress_bar=False,
                               overwrite_strategy="always")
    out = {}
    for task_result in result.task_results:
        (scores,) = task_result.scores["test"]
        task = tasks[task_result.task_name]
        n = sum(len(splits["test"]["relevant_docs"]) for splits in task.dataset.values() if "test" in splits)
        out[task_result.task_name] = {**{k: float(scores[v]) for k, v in METRICS.items()},
                                      "main_score": float(scores["main_score"]), "main_metric": task.metadata.main_score,
                                      "n": n, "harness": f"mteb {mteb.__version__}"}
    return out
