"""Real benchmarks when their data is at hand: lm-evaluation-harness multiple-choice tasks and
MTEB retrieval tasks, scored with twinlm's conventions (encoders by pseudo-log-likelihood).

Neither library is required: lm-eval and mteb install here, but every task of theirs downloads
its data from the hub, which this project cannot rely on. So the adapters read each library's own
task formats: an lm-eval task YAML (`dataset_path`, `dataset_kwargs.data_files`, `test_split`,
Jinja `doc_to_text` / `doc_to_choice` / `doc_to_target`, `target_delimiter`, output_type
multiple_choice), and MTEB/BEIR retrieval folders (corpus.jsonl, queries.jsonl, qrels/test.tsv).
Built-in names point at the real hub datasets and load when the hub is reachable."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from twinlm.errors import UserError

# The task definitions of lm-eval's own YAMLs for the Ettin generative suite (hub datasets).
LM_EVAL_TASKS = {
    "sciq": {"dataset_path": "allenai/sciq", "test_split": "test",
             "doc_to_text": "{{support.lstrip()}}\nQuestion: {{question}}\nAnswer:",
             "doc_to_choice": "{{[distractor1, distractor2, distractor3, correct_answer]}}", "doc_to_target": 3},
    "arc_easy": {"dataset_path": "allenai/ai2_arc", "dataset_name": "ARC-Easy", "test_split": "test",
                 "doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_choice": "{{choices.text}}",
                 "doc_to_target": "{{choices.label.index(answerKey)}}"},
    "arc_challenge": {"dataset_path": "allenai/ai2_arc", "dataset_name": "ARC-Challenge", "test_split": "test",
                      "doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_choice": "{{choices.text}}",
                      "doc_to_target": "{{choices.label.index(answerKey)}}"},
    "piqa": {"dataset_path": "baber/piqa", "test_split": "validation", "doc_to_text": "Question: {{goal}}\nAnswer:",
             "doc_to_choice": "{{[sol1, sol2]}}", "doc_to_target": "label"},
}
# MTEB retrieval tasks (BEIR layout on the hub).
MTEB_TASKS = {"SciFact": "mteb/scifact", "NFCorpus": "mteb/nfcorpus", "FiQA2018": "mteb/fiqa", "ArguAna": "mteb/arguana"}
_REQUIRED = ("doc_to_text", "doc_to_choice", "doc_to_target")


def _render(template, doc: dict):
    import jinja2

    if not isinstance(template, str):
        return template
    if template in doc:  # lm-eval allows naming a column directly
        return doc[template]
    return jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(template).render(**doc)


def to_items(spec: dict, docs: list[dict], where: str) -> list[dict]:
    """(context, choices, answer) items from an lm-eval task spec and its documents."""
    items = []
    for n, doc in enumerate(docs):
        try:
            context = str(_render(spec["doc_to_text"], doc))
            choices = _render(spec["doc_to_choice"], doc)
            choices = ast.literal_eval(choices) if isinstance(choices, str) else list(choices)
            target = _render(spec["doc_to_target"], doc)
        except Exception as err:  # a template naming a missing field, or one that renders garbage
            raise UserError(f"{where}: document {n} does not fit the task's templates ({err})") from None
        target = choices.index(target) if target in choices else int(target)
        items.append({"context": context, "choices": [str(c) for c in choices], "answer": target})
    return items


def load_lm_eval_tasks(names: list[str]) -> dict[str, dict]:
    """{task name: {"items", "delimiter"}} for built-in names or task YAML files."""
    tasks = {}
    for name in (n.strip() for n in names if n.strip()):
        path = Path(name)
        if path.is_file():
            spec = yaml.safe_load(path.read_text()) or {}
            label, base = spec.get("task", path.stem), path.parent
        elif name in LM_EVAL_TASKS:
            spec, label, base = LM_EVAL_TASKS[name], name, Path.cwd()
        else:
            raise UserError(f"unknown lm-eval task {name!r}; built in: {', '.join(LM_EVAL_TASKS)}, or a task YAML file")
        missing = [k for k in _REQUIRED if k not in spec]
        if missing or spec.get("output_type", "multiple_choice") != "multiple_choice":
            raise UserError(f"lm-eval task {name}: needs output_type multiple_choice and {', '.join(missing or _REQUIRED)}")
        split = spec.get("test_split") or spec.get("validation_split") or "test"
        tasks[label] = {"items": to_items(spec, _load_docs(spec, base, split, name), name),
                        "delimiter": spec.get("target_delimiter", " ")}
    return tasks


def _load_docs(spec: dict, base: Path, split: str, name: str) -> list[dict]:
    from datasets import load_dataset

    kwargs = dict(spec.get("dataset_kwargs") or {})
    if "data_files" in kwargs:  # local files are relative to the YAML, as in lm-eval's include_path
        files = kwargs["data_files"]
        files = {k: str(base / v) for k, v in files.items()} if isinstance(files, dict) else str(base / files)
        kwargs["data_files"] = files
    try:
        return list(load_dataset(spec["dataset_path"], spec.get("dataset_name"), split=split, **kwargs))
    except Exception as err:
        raise UserError(f"cannot load the data of lm-eval task {name} ({spec['dataset_path']}): {str(err).splitlines()[0]}") from None


def run_lm_eval(model: dict, tasks: dict[str, dict]) -> dict:
    from twinlm.evaluate.choice import ChoiceTask
    from twinlm.evaluate.models import ModelRef, load_scoring_model

    ref = ModelRef(model["name"], model["architecture"], model["path"], model.get("run"),
                   model.get("prediction_offset", 0))
    scorer, tok = load_scoring_model(ref)
    out = {}
    for name, task in tasks.items():
        metrics = ChoiceTask(task["items"], task["delimiter"]).evaluate(scorer, tok, ref.architecture,
                                                                        prediction_offset=ref.prediction_offset)
        out[f"lm-eval/{name}"] = {"acc": metrics["accuracy"], "acc_norm_per_token": metrics["accuracy_norm"],
                                  "items": len(task["items"])}
    return out


def load_mteb_tasks(names: list[str]) -> dict[str, dict]:
    """{task name: BEIR collection} from local folders, or MTEB names fetched from the hub."""
    from twinlm.evaluate.retrieval import read_beir

    tasks = {}
    for name in (n.strip() for n in names if n.strip()):
        if Path(name).is_dir():
            tasks[Path(name).name] = read_beir(name)
        elif name in MTEB_TASKS:
            tasks[name] = _hub_beir(MTEB_TASKS[name], name)
        else:
            raise UserError(f"unknown MTEB task {name!r}; built in: {', '.join(MTEB_TASKS)}, or a BEIR-layout folder")
    return tasks


def _hub_beir(repo: str, name: str) -> dict:
    from datasets import load_dataset

    try:
        corpus = {r["_id"]: (r.get("title", "") + " " + r["text"]).strip() for r in load_dataset(repo, "corpus", split="corpus")}
        queries = {r["_id"]: r["text"] for r in load_dataset(repo, "queries", split="queries")}
        qrels: dict[str, dict[str, int]] = {}
        for r in load_dataset(repo, "default", split="test"):
            qrels.setdefault(str(r["query-id"]), {})[str(r["corpus-id"])] = int(r["score"])
    except Exception as err:
        raise UserError(f"cannot load MTEB task {name} ({repo}): {str(err).splitlines()[0]}") from None
    return {"corpus": corpus, "queries": {q: queries[q] for q in qrels if q in queries}, "qrels": qrels}


def run_mteb(model: dict, tasks: dict[str, dict], cfg) -> dict:
    """Fine-tune the model into an embedding model on its default retrieval data (best learning
    rate found by the retrieval task, seed 0, same budget), then score every MTEB task."""
    from dataclasses import replace

    from twinlm.evaluate.models import ModelRef, world_for
    from twinlm.evaluate.retrieval import RetrievalTask
    from twinlm.evaluate.runner import build_tasks

    ref = ModelRef(model["name"], model["architecture"], model["path"], model.get("run"))
    base = build_tasks(replace(cfg, tasks=["retrieval"]), world_for(ref))["retrieval"]
    lr = model["tasks"].get("retrieval", {}).get("best_lr", cfg.lrs[0])
    embedder = base.finetune(ref.path, ref.architecture, 0, lr, cfg.steps, cfg.batch_size)
    return {f"mteb/{name}": RetrievalTask(coll, [{}], cfg.max_length).evaluate(embedder) for name, coll in tasks.items()}
