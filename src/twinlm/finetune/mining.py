"""Hard-negative mining with a dense model, on sentence-transformers' `mine_hard_negatives`.

For each (anchor, positive) pair the dense model ranks a corpus (by default every positive of the
table) and picks negatives among the most similar texts that are not a positive of that anchor:
`num_negatives` of them, from ranks `range_min`..`range_max`, below the positive's score by an
absolute or relative margin and under `max_score`, the top ones or a random sample
(`sampling_strategy`). Skipping the very top ranks (`range_min`) and keeping a margin guard against
false negatives: unlabelled texts that answer the question too.
"""

from __future__ import annotations

from twinlm.errors import UserError
from twinlm.finetune.recipe import MiningSection

FORMATS = ("triplet", "n-tuple", "labeled-pair", "labeled-list")


def load_dense(name_or_path: str):
    """A SentenceTransformer to mine with (a folder, e.g. `twinlm finetune dense` output, or a hub id)."""
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(str(name_or_path))
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load the mining model {name_or_path!r}: {str(err).splitlines()[0]}") from None


def mine(table, model, section: MiningSection, output_format: str = "n-tuple", corpus: list[str] | None = None,
         verbose: bool = True):
    """Mined rows from a table with `anchor` and `positive` columns.

    Formats: triplet (anchor, positive, negative; one row per negative), n-tuple (anchor, positive,
    negative_1..n), labeled-pair (anchor, positive, label: the positive with label 1 and each negative
    in the `positive` column with label 0), labeled-list (anchor, positive: [pos, negs...], labels)."""
    from sentence_transformers.util import mine_hard_negatives

    if output_format not in FORMATS:
        raise UserError(f"mining output format {output_format!r}; valid: {', '.join(FORMATS)}")
    missing = [c for c in ("anchor", "positive") if c not in table.column_names]
    if missing:
        raise UserError(f"mining needs columns anchor, positive; the data has {', '.join(table.column_names)} "
                        "(rename with --columns anchor=OLD)")
    table = table.select_columns(["anchor", "positive"])
    if len(table) < 2:
        raise UserError("mining needs at least 2 (anchor, positive) pairs")
    mined = mine_hard_negatives(
        table, model, anchor_column_name="anchor", positive_column_name="positive", corpus=corpus,
        range_min=section.range_min, range_max=section.range_max, max_score=section.max_score,
        absolute_margin=section.absolute_margin, relative_margin=section.relative_margin,
        num_negatives=section.num_negatives, sampling_strategy=section.sampling_strategy,
        output_format=output_format, batch_size=section.batch_size, use_faiss=section.use_faiss, verbose=verbose,
    )
    if len(mined) == 0:
        raise UserError("mining found no negative that passes the filters; widen range_max or lower the margin")
    check_negatives(table, mined, output_format)
    return mined


def positives_by_anchor(table) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for anchor, positive in zip(table["anchor"], table["positive"]):
        out.setdefault(anchor, set()).add(positive)
    return out


def negatives_of(row: dict, output_format: str) -> list[str]:
    if output_format == "triplet":
        return [row["negative"]]
    if output_format == "n-tuple":
        return [v for k, v in row.items() if k.startswith("negative")]
    if output_format == "labeled-pair":
        return [row["positive"]] if row["label"] == 0 else []
    return [doc for doc, label in zip(row["positive"], row["labels"]) if label == 0]


def check_negatives(pairs, mined, output_format: str) -> None:
    """A mined negative must never be a labelled positive of its anchor (else training is poisoned)."""
    positives = positives_by_anchor(pairs)
    for row in mined:
        bad = [n for n in negatives_of(row, output_format) if n in positives.get(row["anchor"], set())]
        if bad:
            raise RuntimeError(f"mining returned a positive as a negative for anchor {row['anchor']!r}")
