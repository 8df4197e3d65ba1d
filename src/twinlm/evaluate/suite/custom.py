"""The suite's `classification` part: any dataset with `text` (optionally `text_pair`) and
`label` columns (`--classification-data FILE_OR_HUB_ID`; `--nli-data`'s premise / hypothesis
are read as text / text_pair) fine-tuned and scored exactly like a GLUE task, with GLUE's sweep.
Integer or string labels: classification (accuracy, macro-F1); float labels: regression
(Spearman, Pearson). A file's rows with split "test" or "validation" are its evaluation split,
else its last tenth; a hub id's (or mirror's) splits are train and validation (or test)."""

from __future__ import annotations

from pathlib import Path

from twinlm.errors import UserError
from twinlm.evaluate.convergence import judge
from twinlm.evaluate.suite import glue, heads
from twinlm.evaluate.suite.base import DataNeed, SuiteRun, SuiteSettings
from twinlm.evaluate.suite.mirror import BUILDERS, count_rows, find, load_split

ALIASES = {"text": ("text", "sentence", "sentence1", "premise", "question1"),
           "text_pair": ("text_pair", "sentence2", "hypothesis", "question2")}
TASKS: dict = {}  # named by the user's data: see tasks()
AVERAGED = ()  # the user's datasets have no headline average


def tasks(settings: SuiteSettings | None) -> list[str]:
    return list(sources(settings))


def sources(settings: SuiteSettings | None) -> dict[str, str]:
    """{task name: file or hub id}: a file's stem, a hub id's last part."""
    out: dict[str, str] = {}
    for source in (settings.classification_data if settings else ()):
        name = Path(source).stem if Path(source).exists() else source.rstrip("/").rsplit("/", 1)[-1]
        out[name.replace(":", "_").replace(",", "_")] = source
    return out


def plan(task: str, model, settings: SuiteSettings) -> list[SuiteRun]:
    return [SuiteRun("classification", task, r.model, r.twin, r.lr, r.seed, r.epochs,
                     tuple((k, v) for k, v in r.extra if k != "start") + (("source", sources(settings)[task]),))
            for r in glue.plan("sst2", model, settings)]  # SST-2's sweep: a single-text task of 1-3 epochs


def _eval_split(source: str, settings: SuiteSettings) -> str:
    for split in ("validation", "test"):
        if find(source, None, split, settings.data_dir).local:
            return split
    return "validation"


def needs(task: str, settings: SuiteSettings):
    source = sources(settings)[task]
    if Path(source).exists():
        return [DataNeed(source, None, "train+test", [Path(source)], count_rows([Path(source)]))]
    return [find(source, None, split, settings.data_dir) for split in ("train", _eval_split(source, settings))]


def units(run: SuiteRun, settings: SuiteSettings) -> int:
    extra = dict(run.extra)
    if extra.get("steps"):
        return int(extra["steps"])
    rows = needs(run.task, settings)[0].rows or 1000
    return int(run.epochs * -(-rows // int(extra["batch_size"])))


def load(source: str, settings: SuiteSettings):
    """(train, eval) datasets with columns text[, text_pair], label."""
    import datasets

    path = Path(source)
    if path.exists():
        builder = BUILDERS.get(path.suffix)
        if builder is None:
            raise UserError(f"{source}: use a .parquet, .jsonl, .json or .csv file")
        data = datasets.load_dataset(builder, data_files=[str(path)], split="train")
        data = standard(data, source)
        if "split" in data.column_names:
            held = [s in ("test", "validation") for s in data["split"]]
            train = data.select([i for i, h in enumerate(held) if not h])
            test = data.select([i for i, h in enumerate(held) if h])
        else:
            cut = len(data) - max(1, len(data) // 10)
            train, test = data.select(range(cut)), data.select(range(cut, len(data)))
    else:
        train = standard(load_split(source, None, "train", settings.data_dir), source)
        test = standard(load_split(source, None, _eval_split(source, settings), settings.data_dir), source)
    if len(train) < 2 or len(test) < 1:
        raise UserError(f"{source}: needs training rows and held-out rows (found {len(train)} and {len(test)})")
    return train, test


def standard(data, source: str):
    """The dataset with text[, text_pair], label columns (renamed from their common aliases)."""
    for target, names in ALIASES.items():
        found = next((n for n in names if n in data.column_names), None)
        if found and found != target:
            data = data.rename_column(found, target)
    if "text" not in data.column_names or "label" not in data.column_names:
        raise UserError(f"{source} has columns {', '.join(data.column_names)}; it needs text (or premise/sentence), "
                        "label and optionally text_pair (or hypothesis)")
    return data


def execute(run: SuiteRun, model, settings: SuiteSettings) -> dict:
    import numpy as np
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score

    extra = dict(run.extra)
    train, test = load(extra["source"], settings)
    if settings.max_items:
        test = test.select(range(min(settings.max_items, len(test))))
    values = list(train["label"]) + list(test["label"])
    regression = any(isinstance(v, float) and not float(v).is_integer() for v in values)
    if not regression:
        names = sorted({str(v) for v in values}, key=lambda v: (not v.lstrip("-").isdigit(), int(v) if v.lstrip("-").isdigit() else 0, v))
        index = {n: i for i, n in enumerate(names)}
        train = train.map(lambda b: {"label": [index[str(v)] for v in b["label"]]}, batched=True)
        test = test.map(lambda b: {"label": [index[str(v)] for v in b["label"]]}, batched=True)
    labels = 1 if regression else len(names)
    columns = ("text", "text_pair") if "text_pair" in train.column_names else ("text",)
    net, tok = heads.load_head(model.path, model.architecture, labels, settings.pooling, seed=run.seed)
    length = int(extra["max_length"])
    losses, steps = heads.train(net, tok, train, columns, lr=run.lr, batch_size=int(extra["batch_size"]), seed=run.seed,
                                epochs=run.epochs, steps=int(extra["steps"] or 0) or None, max_length=length,
                                weight_decay=glue.G.trainer_weight_decay(run.lr), warmup=glue.G.WARMUP, adam=glue.G.ADAM)
    gold, pred = list(test["label"]), heads.predict(net, tok, test, columns, length)
    if regression:
        flat = np.ptp(np.asarray(pred, dtype=float)) == 0
        metrics = {"spearman": 0.0 if flat else 100 * float(spearmanr(gold, pred)[0]),
                   "pearson": 0.0 if flat else 100 * float(pearsonr(gold, pred)[0])}
        score = metrics["spearman"]
    else:
        metrics = {"accuracy": 100 * float(accuracy_score(gold, pred)),
                   "macro_f1": 100 * float(f1_score(gold, pred, average="macro", labels=list(range(labels)), zero_division=0))}
        score = metrics["accuracy"]
    verdict = judge(losses, heads.trivial_loss(list(train["label"]), labels))
    return {"score": score, "metrics": metrics, "steps": steps, "labels": "regression" if regression else names,
            "train_loss_first": losses[0] if losses else None, **verdict, "eval_rows": len(test)}
