"""Retrieval: fine-tune a model into a sentence-transformers embedding model with
CachedMultipleNegativesRankingLoss (scale 20, as Ettin; decoders pool the last token), then score
it with sentence-transformers' own InformationRetrievalEvaluator (the model's similarity, binary
relevance: a document is relevant when its qrels grade is > 0, ties broken by corpus id):
nDCG@10, MRR@10, Recall@100. `--mteb` scores with the mteb package instead (graded relevance,
pytrec_eval), see `mteb_local.py`.

Data: the built-in world (questions about held-out people against every person's passage), or a
BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/test.tsv; qrels/train.tsv, if present,
gives training pairs). MTEB retrieval tasks use the same layout."""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from twinlm.errors import UserError
from twinlm.evaluate.config import encoder_pooling
from twinlm.evaluate.convergence import in_batch_trivial


def _read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    if not path.is_file():
        raise UserError(f"{path} is missing; a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/test.tsv")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            row = json.loads(line)
            missing = [k for k in required if k not in row]
            if missing:
                raise UserError(f"{path} line {n} lacks field(s) {', '.join(missing)}")
            rows.append(row)
    return rows


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None or len(header) < 3:
            raise UserError(f"{path} must be tab-separated with columns query-id, corpus-id, score")
        if header[2].strip().lstrip("-").isdigit():  # no header row
            qrels.setdefault(header[0], {})[header[1]] = int(header[2])
        for row in reader:
            if len(row) >= 3:
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return qrels


def read_beir(folder: str | Path) -> dict:
    """{"corpus": {id: text}, "queries": {id: text}, "qrels": test qrels, "train_pairs": [...]}"""
    folder = Path(folder)
    corpus = {str(r["_id"]): (r.get("title", "") + " " + r["text"]).strip()
              for r in _read_jsonl(folder / "corpus.jsonl", ("_id", "text"))}
    queries = {str(r["_id"]): r["text"] for r in _read_jsonl(folder / "queries.jsonl", ("_id", "text"))}
    if not (folder / "qrels" / "test.tsv").is_file():
        raise UserError(f"{folder}/qrels/test.tsv is missing; a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/test.tsv")
    qrels = read_qrels(folder / "qrels" / "test.tsv")
    unknown = [q for q in qrels if q not in queries] + [d for rel in qrels.values() for d in rel if d not in corpus]
    if unknown:
        raise UserError(f"{folder}/qrels/test.tsv names ids missing from queries.jsonl/corpus.jsonl: {unknown[:5]}")
    train_pairs = []
    if (folder / "qrels" / "train.tsv").is_file():
        for q, rel in read_qrels(folder / "qrels" / "train.tsv").items():
            train_pairs += [{"anchor": queries[q], "positive": corpus[d]} for d, r in rel.items() if r > 0 and q in queries and d in corpus]
    return {"corpus": corpus, "queries": {q: queries[q] for q in qrels}, "qrels": qrels, "train_pairs": train_pairs}


# The evaluator's metrics kept in results.json, under the evaluator's own names.
ST_METRICS = ("ndcg@10", "mrr@10", "recall@100")


def st_retrieval_metrics(model, collection: dict, batch_size: int = 64) -> dict[str, float]:
    """nDCG@10, MRR@10 and Recall@100 as sentence-transformers' InformationRetrievalEvaluator
    computes them, on the model's own similarity function."""
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    relevant = {q: {d for d, r in rel.items() if r > 0} for q, rel in collection["qrels"].items()}
    evaluator = InformationRetrievalEvaluator(
        collection["queries"], collection["corpus"], relevant, mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=[1],
        precision_recall_at_k=[100], map_at_k=[100], batch_size=batch_size, write_csv=False, show_progress_bar=False)
    if not evaluator.queries_ids:
        return {name: 0.0 for name in ST_METRICS}
    scores = evaluator(model)
    function = model.similarity_fn_name or "cosine"
    return {name: float(scores[f"{function}_{name}"]) for name in ST_METRICS}


def embedding_model(path: str, architecture: str, max_length: int, pooling: str = "auto"):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    if pooling == "auto" and architecture == "encoder" and (Path(path) / "modules.json").is_file():
        model = SentenceTransformer(path)  # a sentence-transformers folder keeps its own pooling
        model.max_seq_length = max_length
        return model
    body = Transformer(path, max_seq_length=max_length)
    mode = "lasttoken" if architecture == "decoder" else encoder_pooling(pooling, path)
    return SentenceTransformer(modules=[body, Pooling(body.get_embedding_dimension(), pooling_mode=mode)])


class RetrievalTask:
    name = "retrieval"
    finetunes = True

    def __init__(self, collection: dict, train_pairs: list[dict], max_length: int = 128, pooling: str = "auto"):
        if not train_pairs:
            raise UserError("retrieval needs training pairs (qrels/train.tsv in a BEIR folder)")
        self.collection, self.train_pairs, self.max_length, self.pooling = collection, train_pairs, max_length, pooling

    def primary(self, architecture: str) -> str:
        return "ndcg@10"

    def trivial_loss(self, batch_size: int) -> float:
        """The in-batch contrastive loss of an embedder that learned nothing: ln(batch) (convergence.py)."""
        return in_batch_trivial(batch_size)

    @torch.no_grad()
    def evaluate(self, model, tokenizer=None, architecture: str = "", seed: int = 0) -> dict[str, float]:
        """`model` is a SentenceTransformer (tokenizer unused, kept for the common signature)."""
        return st_retrieval_metrics(model, self.collection)

    def finetune(self, path: str, architecture: str, seed: int, lr: float, steps: int, batch_size: int):
        from datasets import Dataset
        from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
        from sentence_transformers.sentence_transformer.losses import (
            CachedMultipleNegativesRankingLoss,
            MultipleNegativesRankingLoss,
        )
        from transformers import PrinterCallback, set_seed

        set_seed(seed)
        model = embedding_model(path, architecture, self.max_length, self.pooling)
        pairs = self.train_pairs
        rng = np.random.default_rng(seed)
        # Only as many pairs as the budget consumes, so every model sees the same ones per seed.
        take = rng.permutation(len(pairs))[: steps * batch_size]
        data = Dataset.from_list([pairs[i % len(pairs)] for i in take])
        if batch_size <= 32:  # one mini-batch: the cache would only add a second forward pass
            loss = MultipleNegativesRankingLoss(model, scale=20.0)
        else:
            loss = CachedMultipleNegativesRankingLoss(model, scale=20.0, mini_batch_size=32)
        with tempfile.TemporaryDirectory() as tmp:
            args = SentenceTransformerTrainingArguments(
                output_dir=tmp, max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=lr,
                warmup_steps=max(1, steps // 10), seed=seed, data_seed=seed, save_strategy="no", report_to=[],
                logging_steps=max(1, steps // 5), disable_tqdm=True, batch_sampler="no_duplicates",
                use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0)
            trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss)
            # Per-step lines would drown the one-line-per-run progress; the losses stay in log_history.
            trainer.remove_callback(PrinterCallback)
            trainer.train()
        self.last_loss = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        return model.eval()

    def run(self, path: str, architecture: str, seed: int, lr: float, steps: int, batch_size: int) -> dict[str, float]:
        model = self.finetune(path, architecture, seed, lr, steps, batch_size)
        out = self.evaluate(model)
        out["train_loss_first"], out["train_loss_last"] = float(self.last_loss[0]), float(self.last_loss[-1])
        return out
