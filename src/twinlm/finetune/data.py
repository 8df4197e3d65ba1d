"""Fine-tuning data: tables from files or the hub, matched to a loss by column name; BEIR folders;
and the built-in world's retrieval and classification tasks.

sentence-transformers feeds a loss its input columns by position. twinlm never relies on the
order: each loss declares the columns it needs by name (`LossColumns`), the user may rename with
`--columns new=old`, and the table is reordered to the loss's order before training.
"""

from __future__ import annotations

import csv
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twinlm.errors import UserError
from twinlm.world.generator import WorldConfig, build_world, nli_examples, retrieval_pairs, retrieval_task

_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class LossColumns:
    """The columns a loss reads, by name, in the order it reads them.

    required: must be present. optional: used when present. repeat: a prefix that may occur any
    number of times after the required ones (`negative`, `negative_1`, `negative_2`, ...).
    label: the label/score column name, always last; None if the loss takes no label.
    """

    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    repeat: str | None = None
    label: str | None = None

    def describe(self) -> str:
        parts = list(self.required)
        parts += [f"{c} (optional)" for c in self.optional]
        if self.repeat:
            parts.append(f"{self.repeat}, {self.repeat}_1, ... (optional)")
        if self.label:
            parts.append(self.label)
        return ", ".join(parts)


def load_table(source: str, split: str = "train", max_rows: int | None = None):
    """A `datasets.Dataset` from a json/jsonl/csv/tsv/parquet file, a save_to_disk folder or a hub name."""
    import datasets

    path = Path(source).expanduser()
    try:
        if path.is_file():
            builder = _FILE_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise UserError(
                    f"{source}: unsupported file type {path.suffix!r}; use {', '.join(sorted(_FILE_BUILDERS))} "
                    "or a save_to_disk folder"
                )
            kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
            table = datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
        elif path.is_dir():
            if not ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
                raise UserError(f"{source}: a folder must be written by datasets' save_to_disk")
            table = datasets.load_from_disk(str(path))
            if isinstance(table, datasets.DatasetDict):
                if split not in table:
                    raise UserError(f"{source}: no split {split!r}; splits: {', '.join(table)}")
                table = table[split]
        elif source.startswith((".", "/", "~")) or path.suffix.lower() in _FILE_BUILDERS:
            raise UserError(f"no such file or folder: {source!r}")
        else:
            table = datasets.load_dataset(source, split=split)
    except UserError:
        raise
    except Exception as err:  # the datasets library raises many types for unreadable input
        raise UserError(f"cannot read {source!r}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    if max_rows is not None:
        table = table.select(range(min(max_rows, len(table))))
    if len(table) == 0:
        raise UserError(f"dataset {source!r} (split {split}) has no rows")
    return table


def match_columns(table, needs: LossColumns, mapping: dict[str, str], loss: str, where: str = "dataset"):
    """Rename by `mapping` (new=old), check the loss's columns by name, drop extras (with a notice)
    and order the columns as the loss reads them."""
    if len(table) == 0:
        raise UserError(f"{where} has no rows")
    found = list(table.column_names)
    missing_old = [old for old in mapping.values() if old not in found]
    if missing_old:
        raise UserError(f"--columns names {', '.join(missing_old)}, but {where} has columns: {', '.join(found)}")
    renames = {old: new for new, old in mapping.items() if old != new}
    clash = [new for old, new in renames.items() if new in found and new not in renames]
    if clash:
        raise UserError(f"--columns would create duplicate column(s) {', '.join(clash)} in {where}")
    if renames:
        table = table.rename_columns(renames)
    present = list(table.column_names)
    wanted = list(needs.required) + ([needs.label] if needs.label else [])
    missing = [c for c in wanted if c not in present]
    if missing:
        raise UserError(
            f"{loss} needs columns {needs.describe()}; {where} has columns {', '.join(present)} "
            f"(missing {', '.join(missing)}; rename with --columns NEW=OLD)"
        )
    order = list(needs.required) + [c for c in needs.optional if c in present]
    if needs.repeat:
        order += sorted(
            (c for c in present if c == needs.repeat or c.startswith(needs.repeat + "_")),
            key=lambda c: (c != needs.repeat, len(c), c),
        )
    if needs.label:
        order.append(needs.label)
    extra = [c for c in present if c not in order]
    if extra:
        print(f"note: {where}: {loss} does not use column(s) {', '.join(extra)}; dropped", file=sys.stderr)
        table = table.remove_columns(extra)
    return table.select_columns(order)


def training_table(recipe, needs: LossColumns, loss: str, world=None, spec=None):
    """The training rows of a recipe (or of one of its `datasets` entries), matched to `needs`.
    `world` is a zero-argument function giving the built-in world, called only when needed."""
    source = spec.source if spec else recipe.train_data
    split = spec.split if spec else recipe.split
    mapping = spec.columns if spec else recipe.columns
    max_rows = spec.max_rows if spec else recipe.max_rows
    where = f"dataset {spec.name!r}" if spec else "the training data"
    if source:
        table = load_table(source, split, max_rows)
        where = f"{source!r}"
    else:
        table = world_table(world(), needs, seed=recipe.training.seed)
        if max_rows is not None:
            table = table.select(range(min(max_rows, len(table))))
    return match_columns(table, needs, mapping, loss, where)


def retrieval_eval_task(recipe, world=None) -> dict[str, dict]:
    """The recipe's BEIR evaluation folder, or the world's held-out questions."""
    return load_beir(recipe.eval_data) if recipe.eval_data else world_retrieval_eval(world())


# ---- evaluation data ---------------------------------------------------------------------------


def load_beir(folder: str | Path, split: str = "test") -> dict[str, dict]:
    """A BEIR folder: corpus.jsonl (_id, title?, text), queries.jsonl (_id, text),
    qrels/<split>.tsv (query-id, corpus-id, score; header line). Relevant = score > 0."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise UserError(f"evaluation folder {str(folder)!r} does not exist")
    files = {"corpus": root / "corpus.jsonl", "queries": root / "queries.jsonl", "qrels": root / "qrels" / f"{split}.tsv"}
    for what, path in files.items():
        if not path.is_file():
            raise UserError(f"evaluation folder {folder} has no {path.relative_to(root)} ({what}); BEIR layout: "
                            f"corpus.jsonl, queries.jsonl, qrels/{split}.tsv")
    corpus = {}
    for row in _jsonl(files["corpus"]):
        title = (row.get("title") or "").strip()
        corpus[str(row["_id"])] = f"{title} {row['text']}".strip() if title else row["text"]
    queries = {str(row["_id"]): row["text"] for row in _jsonl(files["queries"])}
    qrels: dict[str, dict[str, int]] = {}
    with files["qrels"].open(newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        for i, row in enumerate(reader):
            if i == 0 and not row[-1].strip().lstrip("-").isdigit():
                continue  # header
            if len(row) < 3:
                raise UserError(f"{files['qrels']} line {i + 1}: expected query-id, corpus-id, score")
            qid, did, score = row[0], row[1], int(row[-1])
            if score > 0:
                qrels.setdefault(qid, {})[did] = score
    qrels = {q: d for q, d in qrels.items() if q in queries}
    if not corpus or not qrels:
        raise UserError(f"evaluation folder {folder} has an empty corpus or no relevant query-document pairs")
    return {"corpus": corpus, "queries": {q: queries[q] for q in qrels}, "qrels": qrels}


def write_beir(task: dict[str, dict], folder: str | Path, split: str = "test") -> Path:
    """Write an IR task dict in BEIR layout (the inverse of `load_beir`)."""
    root = Path(folder)
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with (root / "corpus.jsonl").open("w") as f:
        for did, text in task["corpus"].items():
            f.write(json.dumps({"_id": did, "title": "", "text": text}) + "\n")
    with (root / "queries.jsonl").open("w") as f:
        for qid, text in task["queries"].items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with (root / "qrels" / f"{split}.tsv").open("w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in task["qrels"].items():
            for did, score in docs.items():
                f.write(f"{qid}\t{did}\t{score}\n")
    return root


def _jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open() as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise UserError(f"{path} line {n} is not valid JSON") from None
    return rows


# ---- the built-in world ------------------------------------------------------------------------


def world_for(settings, base_model: str, heldout: float | None = None):
    """The world a base model was pretrained on (its twinlm.yaml), unless `settings` names one.
    `heldout` changes only which people are kept for evaluation, not the world itself."""
    from dataclasses import asdict

    import yaml

    if settings is None:
        card = Path(base_model) / "twinlm.yaml"
        world = (yaml.safe_load(card.read_text()) or {}).get("data", {}).get("world") if card.is_file() else None
        config = dict(world or {})
    else:
        config = asdict(settings)
    if heldout is not None:
        config["heldout_fraction"] = heldout
    return build_world(WorldConfig(**config))


def recipe_world(recipe):
    """A zero-argument function giving the recipe's world (built once, on first call): every kind
    reads the world through it, so `world_heldout` means the same split for all of them."""
    from functools import cache

    return cache(lambda: world_for(recipe.world, recipe.base_model, recipe.world_heldout))


def world_retrieval_rows(world, seed: int = 0, per_person: int = 4) -> list[dict[str, str]]:
    """(anchor, positive, negative) rows from the train people: a question, a rendering of the
    person's biography and another train person's biography."""
    train_people, _ = world.split()
    pairs = retrieval_pairs(world, train_people, seed=seed, per_person=per_person)
    rng = random.Random(f"negatives-{seed}")
    passages = [p["positive"] for p in pairs]
    rows = []
    for pair in pairs:
        negative = rng.choice(passages)
        while negative == pair["positive"] and len(set(passages)) > 1:
            negative = rng.choice(passages)
        rows.append({"anchor": pair["anchor"], "positive": pair["positive"], "negative": negative})
    return rows


def world_table(world, needs: LossColumns, seed: int = 0):
    """World training rows shaped for a loss: triplets for retrieval losses, labelled pairs
    (sentence1, sentence2, label/score in {0, 1}) for pair losses."""
    import datasets

    rows = world_retrieval_rows(world, seed)
    if set(needs.required) <= {"anchor", "positive", "negative"}:
        return datasets.Dataset.from_list(rows)
    if set(needs.required) <= {"query", "positive", "negative"}:
        return datasets.Dataset.from_list([{"query": r["anchor"], **r} for r in rows]).remove_columns("anchor")
    if needs.required == ("text",):
        texts = sorted({t for r in rows for t in (r["anchor"], r["positive"])})
        random.Random(f"texts-{seed}").shuffle(texts)
        return datasets.Dataset.from_list([{"text": t} for t in texts])
    if set(needs.required) == {"sentence1", "sentence2"} and needs.label:
        paired = []
        for r in rows:
            paired.append({"sentence1": r["anchor"], "sentence2": r["positive"], needs.label: 1.0})
            paired.append({"sentence1": r["anchor"], "sentence2": r["negative"], needs.label: 0.0})
        random.Random(f"pairs-{seed}").shuffle(paired)
        if needs.label == "label":
            paired = [{**p, "label": int(p["label"])} for p in paired]
        return datasets.Dataset.from_list(paired)
    raise UserError(
        f"the built-in world has no training data for a loss that needs {needs.describe()}; pass --data FILE"
    )


def world_retrieval_eval(world) -> dict[str, dict]:
    """Held-out people's questions against every person's unseen rendering (BEIR-like dicts)."""
    _, heldout = world.split()
    task = retrieval_task(world, world.people)
    keep = {f"q-{p.id}" for p in heldout}
    return {
        "corpus": task["corpus"],
        "queries": {q: t for q, t in task["queries"].items() if q in keep},
        "qrels": {q: d for q, d in task["qrels"].items() if q in keep},
    }


def world_nli(world, seed: int = 0):
    """(train, eval) NLI tables (sentence1, sentence2, label) from the train and held-out people."""
    import datasets

    train_people, heldout = world.split()

    def table(people, s):
        rows = nli_examples(world, people, seed=s)
        return datasets.Dataset.from_list(
            [{"sentence1": r["premise"], "sentence2": r["hypothesis"], "label": r["label"]} for r in rows]
        )

    return table(train_people, seed), table(heldout, seed + 1)
