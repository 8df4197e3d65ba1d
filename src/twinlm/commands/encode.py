"""`twinlm encode MODEL FILE --out DIR`: embed a corpus with a fine-tuned model."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from twinlm.commands.common import add_output_args
from twinlm.config import add_flags, from_flags
from twinlm.errors import UserError

HELP = """Embed every text of FILE with MODEL (a folder written by `twinlm finetune dense|sparse|...`).
FILE: a .txt file (one text per line) or a jsonl/json/csv/tsv/parquet table with a text column
(a BEIR corpus.jsonl works as is; `_id`/`id` give the ids). Writes DIR/vectors.safetensors
(dense: `embeddings` [n, dim]; sparse: COO `indices` [2, nnz], `values`, `shape`), DIR/ids.json
and DIR/meta.json (model, kind, count, dimensions, mean active dimensions for sparse models)."""


@dataclass
class EncodeSettings:
    text_column: str = field(default="text", metadata={"help": "text column of a table"})
    batch_size: int = field(default=32, metadata={"help": "texts per forward pass"})
    queries: bool = field(default=False, metadata={"help": "embed the texts as queries (asymmetric models)"})

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise UserError("--batch-size must be at least 1")


def register(sub) -> None:
    p = sub.add_parser("encode", help="embed a corpus with a fine-tuned model", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a fine-tuned model folder (dense or sparse)")
    p.add_argument("file", help="the texts to embed")
    add_flags(p, EncodeSettings)
    add_output_args(p, "vectors")
    p.set_defaults(func=run)


def run(args) -> int:
    from twinlm.finetune.kinds import KINDS, kinds_that
    from twinlm.finetune.search import load_model, model_kind, read_corpus, save_vectors
    from twinlm.outputs import check_out, publish, staging

    settings = from_flags(EncodeSettings, args)
    out = check_out(args.out, args.overwrite)
    kind = model_kind(args.model)
    if KINDS[kind].encode is None:
        raise UserError(f"{args.model} is a {kind} model; encode supports {', '.join(kinds_that('encode'))} models")
    ids, texts = read_corpus(args.file, settings.text_column)
    model = load_model(args.model, kind)
    vectors = KINDS[kind].encode(model, texts, batch_size=settings.batch_size, progress=True, query=settings.queries)
    tmp = staging(out)
    meta = save_vectors(tmp, kind, ids, vectors, {"model": str(args.model), "file": str(args.file),
                                                  "as_queries": settings.queries})
    publish(tmp, out)
    extra = f", {meta['active_dims_mean']:.1f} active dimensions per text on average" if kind == "sparse" else ""
    print(f"{meta['count']} texts -> {out}/vectors.safetensors ({kind}, {meta['dimensions']} dimensions{extra})")
    return 0
