"""The retrieval part of the suite: fine-tune a model into an embedder on MS MARCO triplets as
Ettin did (`retrieval_eval/train_st.py` of its release), then score it with the mteb package on
MTEB(eng, v2)'s retrieval tasks and report their average nDCG@10 (the paper's Table 3 column).

Training, as Ettin: `sentence-transformers/msmarco-co-condenser-margin-mse-sym-mnrl-mean-v1`,
config `triplet-hard` (query, positive, negative); 1,000 rows held out (`train_test_split`, seed
12) and the first 1.25M of the rest kept; CachedMultipleNegativesRankingLoss, scale 20,
mini-batch 256, batch 1,024, warmup ratio 0.05, one epoch, the no-duplicates batch sampler, bf16
where the GPU has it. Pooling: sentence-transformers' default for encoders (a plain checkpoint:
mean), the last token for decoders. Instead of MS MARCO, any pairs / triplets dataset (a hub id or
a file with anchor/query, positive and optional negative columns) or a BEIR folder's train qrels.

Scoring: mteb's own evaluation (`mteb_local.evaluate`) on `MTEB(eng, v2)`'s retrieval tasks, or
named mteb tasks, or local BEIR folders; with a mirror, task NAME is read from `DIR/NAME/` and
scored with NAME's own `ignore_identical_ids`.

Settings read (missing ones take the default): `data_dir`; `retrieval_train` (None: MS MARCO);
`mteb_tasks` (None: MTEB(eng, v2) retrieval); `lrs` ([1e-4]) and `seeds` (1: seed 0; an int n
is seeds 0..n-1, or a list); the budget flags `steps` (None: one epoch), `batch_size` (None:
1,024), `max_train` (None: 1.25M rows), `max_length` (None: the model's own)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from twinlm.errors import UserError
from twinlm.evaluate.mteb_local import evaluate, load_tasks
from twinlm.evaluate.retrieval import embedding_model, read_beir
from twinlm.evaluate.suite.base import DataNeed, SuiteRun
from twinlm.evaluate.suite.mirror import BUILDERS, MissingData, load_split, split_files

PART = "retrieval"
MSMARCO = ("sentence-transformers/msmarco-co-condenser-margin-mse-sym-mnrl-mean-v1", "triplet-hard", "train")
BENCHMARK = "MTEB(eng, v2)"
TASKS = {"mteb": BENCHMARK}
# Ettin's train_st.py.
SCALE, MINI_BATCH, BATCH, WARMUP_RATIO, HELD_OUT, HELD_OUT_SEED, TRAIN_ROWS = 20.0, 256, 1024, 0.05, 1_000, 12, 1_250_000
ANCHORS, POSITIVES, NEGATIVES = ("anchor", "query", "question"), ("positive", "pos", "document"), ("negative", "neg")


def _check(task: str) -> None:
    if task not in TASKS:
        raise UserError(f"retrieval:{task} is not a task; the part has one: {', '.join(TASKS)} (scored on {BENCHMARK})")


def _field(model, name: str, default=None):
    return model.get(name, default) if isinstance(model, dict) else getattr(model, name, default)


def _seeds(settings) -> list[int]:
    seeds = getattr(settings, "seeds", None) or 1
    return list(range(seeds)) if isinstance(seeds, int) else list(seeds)


def plan(task: str, model, settings) -> list[SuiteRun]:
    """One fine-tuning run per learning rate x seed."""
    _check(task)
    extra = tuple((k, str(getattr(settings, k))) for k in ("retrieval_train", "mteb_tasks", "steps", "batch_size",
                                                            "max_train", "max_length") if getattr(settings, k, None) is not None)
    return [SuiteRun(PART, task, _field(model, "name"), _field(model, "architecture"), lr=float(lr), seed=seed,
                     epochs=None if getattr(settings, "steps", None) else 1.0, extra=extra)
            for lr in getattr(settings, "lrs", None) or [1e-4] for seed in _seeds(settings)]


def mteb_task_names(settings) -> list[str]:
    named = getattr(settings, "mteb_tasks", None)
    if named:
        return [named] if isinstance(named, str) else list(named)
    import mteb

    return [t.metadata.name for t in mteb.get_benchmark(BENCHMARK).tasks if t.metadata.type == "Retrieval"]


def _task_folder(name: str, data_dir) -> Path | None:
    """A local BEIR folder for an mteb task: the name itself when it is a folder, else DIR/NAME/
    in the mirror (an error when a mirror is used and lacks it), else None (mteb's hub data)."""
    if Path(name).is_dir():
        return Path(name)
    if data_dir is None:
        return None
    folder = Path(data_dir) / name
    if not (folder / "corpus.jsonl").is_file():
        raise MissingData(f"mteb task {name} is not in the mirror: looked for a BEIR folder {folder}/ (corpus.jsonl, "
                          f"queries.jsonl, qrels/test.tsv); put it there, or name other tasks")
    return folder


def _train_source(settings):
    """("hub", (id, config, split)) | ("beir", folder) | ("file", path)."""
    source = getattr(settings, "retrieval_train", None)
    if source is None:
        return "hub", MSMARCO
    path = Path(source)
    if path.is_dir():
        if not (path / "qrels" / "train.tsv").is_file():
            raise UserError(f"retrieval_train {path}: a BEIR folder needs qrels/train.tsv to train on")
        return "beir", path
    if path.is_file():
        return "file", path
    if str(source).count("/") != 1:
        raise UserError(f"retrieval_train {source}: not a file, a BEIR folder nor a hub id (owner/name)")
    return "hub", (str(source), None, "train")


def needs(task: str, settings) -> list[DataNeed]:
    _check(task)
    data_dir = getattr(settings, "data_dir", None)
    kind, where = _train_source(settings)
    out = []
    if kind == "hub":
        out.append(DataNeed(where[0], where[1], where[2], split_files(*where, data_dir)))
    else:
        out.append(DataNeed(str(where), None, "train", [where]))
    for name in mteb_task_names(settings):
        folder = _task_folder(name, data_dir)
        out.append(DataNeed(f"mteb:{name}", None, "test", [folder] if folder else []))
    return out


def _columns(data, where: str):
    """The dataset reduced to (anchor, positive[, negative]) in that order, the order the loss reads."""
    names = data.column_names

    def pick(options):
        return next((c for c in options if c in names), None)

    chosen = [pick(ANCHORS), pick(POSITIVES), pick(NEGATIVES)]
    if chosen[0] is None or chosen[1] is None:
        raise UserError(f"{where}: a pairs/triplets dataset needs an anchor ({'/'.join(ANCHORS)}) and a positive "
                        f"({'/'.join(POSITIVES)}) column; it has {', '.join(names)}")
    chosen = [c for c in chosen if c]
    return data.select_columns(chosen)


def training_rows(settings):
    """The rows Ettin trained on: 1,000 held out (seed 12) when the set is large enough, the
    first `max_train` (1.25M) of the rest."""
    import datasets

    kind, where = _train_source(settings)
    if kind == "beir":
        data = datasets.Dataset.from_list(read_beir(where)["train_pairs"])
    elif kind == "file":
        if where.suffix not in BUILDERS:
            raise UserError(f"retrieval_train {where}: read as .parquet, .jsonl, .json or .csv")
        data = datasets.load_dataset(BUILDERS[where.suffix], data_files=[str(where)], split="train")
    else:
        data = load_split(*where, getattr(settings, "data_dir", None))
    data = _columns(data, str(where))
    if len(data) > 10 * HELD_OUT:
        data = data.train_test_split(test_size=HELD_OUT, seed=HELD_OUT_SEED)["train"]
    limit = getattr(settings, "max_train", None) or TRAIN_ROWS
    return data.select(range(min(limit, len(data))))


def finetune(path: str, twin: str, rows, lr: float, seed: int, settings):
    """(the fine-tuned SentenceTransformer, the logged training losses)."""
    import torch
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss
    from transformers import PrinterCallback, set_seed

    set_seed(seed)
    from transformers import AutoConfig

    # Without a budget cap, the model's own window, as Ettin left it.
    max_length = getattr(settings, "max_length", None) or AutoConfig.from_pretrained(path).max_position_embeddings
    model = embedding_model(path, twin, int(max_length), "auto")
    batch = int(getattr(settings, "batch_size", None) or BATCH)
    steps = getattr(settings, "steps", None)
    loss = CachedMultipleNegativesRankingLoss(model, scale=SCALE, mini_batch_size=min(MINI_BATCH, batch))
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        args = SentenceTransformerTrainingArguments(
            output_dir=tmp, num_train_epochs=1, max_steps=int(steps) if steps else -1, per_device_train_batch_size=batch,
            learning_rate=lr, warmup_ratio=WARMUP_RATIO, seed=seed, data_seed=seed, batch_sampler="no_duplicates",
            bf16=cuda and torch.cuda.is_bf16_supported(), save_strategy="no", report_to=[], logging_steps=1,
            disable_tqdm=True, use_cpu=not cuda, dataloader_num_workers=0)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=rows, loss=loss)
        trainer.remove_callback(PrinterCallback)  # one progress line per run is the suite's
        trainer.train()
    return model.eval(), [h["loss"] for h in trainer.state.log_history if "loss" in h]


def _score_as(task, name: str) -> None:
    """A mirror folder holding mteb task NAME's data is scored with that task's own setting for
    documents whose id equals the query's: mteb drops them in ArguAna, FEVERHardNegatives and
    FiQA2018 of MTEB(eng, v2) (`ignore_identical_ids`), and a generic local task would keep them.
    A folder named as no mteb task stays generic."""
    import mteb

    try:
        own = mteb.get_task(name)
    except Exception:  # not an mteb task name (a user's own folder in the mirror)
        return
    task.ignore_identical_ids = bool(own.ignore_identical_ids)


def load_eval_tasks(settings) -> dict:
    data_dir = getattr(settings, "data_dir", None)
    specs, mirrored = [], []
    for name in mteb_task_names(settings):
        folder = _task_folder(name, data_dir)
        specs.append(str(folder) if folder else name)
        if folder is not None and not Path(name).is_dir():
            mirrored.append(name)
    tasks = load_tasks(specs)
    for name in mirrored:
        _score_as(tasks[name], name)
    return tasks


def execute(run: SuiteRun, model, settings) -> dict:
    """{"score": mean nDCG@10 x 100 over the tasks, "tasks": mteb's scores per task, losses, ...}."""
    tasks = load_eval_tasks(settings)  # every task's data read before the long training
    rows = training_rows(settings)
    embedder, losses = finetune(str(_field(model, "path")), run.twin, rows, run.lr, run.seed, settings)
    scores = evaluate(embedder, tasks)
    main = [s["main_score"] for s in scores.values()]
    mode = embedder[1].pooling_mode
    pooling = mode if isinstance(mode, str) else "+".join(mode)
    return {"score": 100.0 * sum(main) / len(main), "metric": "mean nDCG@10", "tasks": scores, "n_tasks": len(main),
            "train_rows": len(rows), "train_loss_first": losses[0] if losses else None,
            "train_loss_last": losses[-1] if losses else None, "pooling": pooling,
            "batch_size": int(getattr(settings, "batch_size", None) or BATCH)}
