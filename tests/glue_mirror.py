"""Tiny GLUE mirrors in the hub layout (DIR/nyu-mll/glue/<task>/<split>-00000-of-00001.parquet),
written by the tests: a few rows per task, with the hub's own columns."""

from __future__ import annotations

import random
from pathlib import Path

COLUMNS = {"cola": ("sentence",), "sst2": ("sentence",), "mrpc": ("sentence1", "sentence2"),
           "stsb": ("sentence1", "sentence2"), "qqp": ("question1", "question2"), "mnli": ("premise", "hypothesis"),
           "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2")}
WORDS = "the a person lives in city works as teacher doctor likes music river old new".split()


def write_glue(root: Path, tasks=tuple(COLUMNS), rows: int = 16, eval_rows: int = 8, seed: int = 0) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    for task in tasks:
        splits = {"train": rows}
        splits.update({"validation_matched": eval_rows, "validation_mismatched": eval_rows} if task == "mnli"
                      else {"validation": eval_rows})
        folder = root / "nyu-mll" / "glue" / task
        folder.mkdir(parents=True, exist_ok=True)
        for split, n in splits.items():
            table = {c: [" ".join(rng.choices(WORDS, k=6)) for _ in range(n)] for c in COLUMNS[task]}
            if task == "stsb":
                table["label"] = [round(rng.uniform(0, 5), 2) for _ in range(n)]
            else:
                table["label"] = [i % (3 if task == "mnli" else 2) for i in range(n)]
            table["idx"] = list(range(n))
            pq.write_table(pa.table(table), folder / f"{split}-00000-of-00001.parquet")
    return root
