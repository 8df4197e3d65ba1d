"""`twinlm search MODEL --corpus FILE --query "..."`: top-k retrieval with a fine-tuned model."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from twinlm.config import add_flags, from_flags
from twinlm.errors import UserError

HELP = """Embed the texts of --corpus with MODEL (dense, sparse or multi-vector) and print, for each
--query, the top-k texts with their scores (rank, score, id, text). With --reranker, the top-k
candidates are re-scored by a CrossEncoder reranker (retrieve then rerank).
--corpus: a .txt file (one text per line) or a jsonl/json/csv/tsv/parquet table with a text column."""


@dataclass
class SearchSettings:
    top_k: int = field(default=10, metadata={"short": "-k", "help": "results per query"})
    text_column: str = field(default="text", metadata={"help": "text column of a table corpus"})
    reranker: str | None = field(default=None, metadata={"help": "a CrossEncoder folder that re-scores the retrieved top-k"})

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise UserError("-k must be at least 1")


def register(sub) -> None:
    p = sub.add_parser("search", help="search a corpus with a fine-tuned model", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a fine-tuned retriever folder")
    p.add_argument("--corpus", required=True, help="the texts to search")
    p.add_argument("--query", action="append", required=True, help="a query (repeatable)")
    add_flags(p, SearchSettings)
    p.set_defaults(func=run)


def run(args) -> int:
    from twinlm.finetune import search as s
    from twinlm.finetune.kinds import KINDS

    settings = from_flags(SearchSettings, args)
    s.model_kind(args.model)
    if settings.reranker:
        if s.model_kind(settings.reranker) != "rerank":
            raise UserError(f"--reranker {settings.reranker} is not a CrossEncoder reranker")
    ids, texts = s.read_corpus(args.corpus, settings.text_column)
    results = s.search(args.model, texts, args.query, settings.top_k)
    if settings.reranker:
        results = KINDS["rerank"].rerank(settings.reranker, texts, args.query, results)
    for query, hits in zip(args.query, results):
        print(f"query: {query}")
        for rank, hit in enumerate(hits, 1):
            text = texts[hit.index].replace("\n", " ")
            print(f"{rank:3d}  {hit.score:9.4f}  {ids[hit.index]}  {text[:100]}{'...' if len(text) > 100 else ''}")
    return 0
