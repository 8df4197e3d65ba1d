"""LLM2Vec ablations on a twinlm decoder: the shipped `llm2vec-cpu` recipe with each variant's
`--set` changes, scored by world retrieval nDCG@10 (cosine) over several question draws, beside
the same decoder used causally (mean and last-token pooling) in the same run.

One question per person is drawn at random (its fact and wording), so a single draw of 200 people
moves by about +-0.01; the mean of `--draws` draws is the figure to compare. Usage:

    python benchmarks/llm2vec_ablation.py DECODER [--people 200] [--draws 3] \\
        --variant "" --variant "simcse_extra=null" --variant "mntp_steps=0" [--json out.json]

Each variant is a space-separated list of recipe key=value pairs ("" is the shipped recipe).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def score(model, world, people: int, draws: int) -> list[float]:
    """nDCG@10 for each of `draws` question draws (the task's seed), as `convert llm2vec` scores it."""
    from twinlm.convert.embed_eval import world_retrieval_ndcg

    return [world_retrieval_ndcg(model, world, people, seed=seed) for seed in range(draws)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("decoder", help="a twinlm decoder folder (with its twinlm.yaml)")
    parser.add_argument("--variant", action="append", default=None,
                        help='space-separated recipe overrides, e.g. "simcse_batch=64 mntp_steps=0" (repeatable)')
    parser.add_argument("--people", type=int, default=200, help="people in the retrieval task (default 200)")
    parser.add_argument("--draws", type=int, default=3, help="question draws to average (default 3)")
    parser.add_argument("--recipe", default="llm2vec-cpu", help="base llm2vec recipe (default llm2vec-cpu)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    from sentence_transformers import SentenceTransformer

    from twinlm.convert.llm2vec import llm2vec, load_llm2vec_config
    from twinlm.convert.simcse import embedding_model
    from twinlm.data.corpus import world_of
    from twinlm.errors import UserError
    from twinlm.recipe import load_recipe

    decoder = Path(args.decoder)
    if not (decoder / "twinlm.yaml").is_file():
        print(f"error: {decoder} has no twinlm.yaml (a twinlm decoder folder is needed for its world)", file=sys.stderr)
        return 2
    variants = args.variant if args.variant is not None else [""]
    try:  # every variant's settings are checked before the first one trains
        configs = [load_llm2vec_config(args.recipe, v.split()) for v in variants]
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    world = world_of(load_recipe(str(decoder / "twinlm.yaml")))
    rows = []
    for pooling in ("mean", "lasttoken"):
        causal = embedding_model(decoder, pooling=pooling).eval()
        draws = score(causal, world, args.people, args.draws)
        rows.append({"model": f"causal {pooling}", "draws": draws, "mean": sum(draws) / len(draws)})
        print(f"causal {pooling:<9} nDCG@10 {rows[-1]['mean']:.3f} ({', '.join(f'{x:.3f}' for x in draws)})", flush=True)
    for variant, cfg in zip(variants, configs):
        start = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            llm2vec(decoder, Path(tmp) / "l2v", cfg)
            model = SentenceTransformer(str(Path(tmp) / "l2v"), device="cpu")
            draws = score(model, world, args.people, args.draws)
        rows.append({"model": f"llm2vec {variant or '(shipped)'}", "draws": draws, "mean": sum(draws) / len(draws),
                     "seconds": round(time.time() - start)})
        print(f"llm2vec {variant or '(shipped)'}: nDCG@10 {rows[-1]['mean']:.3f} "
              f"({', '.join(f'{x:.3f}' for x in draws)}) in {rows[-1]['seconds']} s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"decoder": str(decoder), "people": args.people, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
