"""`twinlm encode MODEL FILE --out DIR`: embed a corpus with a fine-tuned model."""

from __future__ import annotations

import argparse

from twinlm.commands.common import add_output_args

HELP = """Embed every text of FILE with MODEL (a folder written by `twinlm finetune dense|sparse|...`).
FILE: a .txt file (one text per line) or a jsonl/json/csv/tsv/parquet table with a text column
(a BEIR corpus.jsonl works as is; `_id`/`id` give the ids). Writes DIR/vectors.safetensors
(dense: `embeddings` [n, dim]; sparse: COO `indices` [2, nnz], `values`, `shape`), DIR/ids.json
and DIR/meta.json (model, kind, count, dimensions, mean active dimensions for sparse models)."""


def register(sub) -> None:
    p = sub.add_parser("encode", help="embed a corpus with a fine-tuned model", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a fine-tuned model folder (dense or sparse)")
    p.add_argument("file", help="the texts to embed")
    p.add_argument("--text-column", default="text", help="text column of a table (default: text)")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default: 32)")
    p.add_argument("--queries", action="store_true", help="embed the texts as queries (asymmetric models)")
    add_output_args(p, "vectors")
    p.set_defaults(func=run)


def run(args) -> int:
    from twinlm.errors import UserError
    from twinlm.finetune.kinds import KINDS, kinds_that
    from twinlm.finetune.search import load_model, model_kind, read_corpus, save_vectors
    from twinlm.outputs import check_out, publish, staging

    out = check_out(args.out, args.overwrite)
    kind = model_kind(args.model)
    if KINDS[kind].encode is None:
        raise UserError(f"{args.model} is a {kind} model; encode supports {', '.join(kinds_that('encode'))} models")
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    ids, texts = read_corpus(args.file, args.text_column)
    model = load_model(args.model, kind)
    vectors = KINDS[kind].encode(model, texts, batch_size=args.batch_size, progress=True, query=args.queries)
    tmp = staging(out)
    meta = save_vectors(tmp, kind, ids, vectors, {"model": str(args.model), "file": str(args.file),
                                                  "as_queries": bool(args.queries)})
    publish(tmp, out)
    extra = f", {meta['active_dims_mean']:.1f} active dimensions per text on average" if kind == "sparse" else ""
    print(f"{meta['count']} texts -> {out}/vectors.safetensors ({kind}, {meta['dimensions']} dimensions{extra})")
    return 0
