"""`twinlm prepare` throughput: tokens/s with N workers against one worker, same corpus, same run.

The corpus is the King James Bible (public domain), as Debian's `bible-kjv-text` package ships
it, decoded with that package's own `bible` program (package `bible-kjv`); one document per
chapter (1,189), written `--repeat` times into one JSON-lines file (so the file is cut into byte
ranges, the path a large corpus takes). Get the two packages without installing them:

    mkdir /tmp/kjv && cd /tmp/kjv && apt-get download bible-kjv bible-kjv-text \\
        && for f in *.deb; do dpkg -x "$f" root; done
    python benchmarks/prepare_throughput.py --kjv-root /tmp/kjv/root [--workers N] [--repeat 8]

(or `apt-get install bible-kjv` and leave out --kjv-root). The tokenizer is a byte-level BPE of
8,192 ids trained on one copy of the corpus, unless --tokenizer names one. Both prepares use
the same unit layout; the script checks that their stores are equal, then prints tokens/s for
1 and N workers and the ratio, and the load average (other work on the machine lowers it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_VERSE = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$")


def kjv_chapters(root: Path | None) -> list[str]:
    """The Bible's chapters as texts, decoded by the package's `bible` program."""
    program = root / "usr/bin/bible" if root else Path(shutil.which("bible") or "/usr/bin/bible")
    data = root / "usr/lib" if root else Path("/usr/lib")
    if not program.is_file() or not (data / "bible.data").is_file():
        sys.exit(f"no `bible` program or bible.data under {root or '/usr'}; see this script's docstring")
    text = subprocess.run([str(program), "-p", str(data), "-f", "gen1:1-rev22:21"], capture_output=True,
                          text=True, check=True).stdout
    chapters: dict[tuple[str, str], list[str]] = {}
    for line in text.splitlines():
        if m := _VERSE.match(line):
            chapters.setdefault((m[1], m[2]), []).append(m[4])
    return [" ".join(verses) for verses in chapters.values()]


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed_prepare(corpus: Path, tokenizer, out: Path, workers: int) -> tuple[float, int, object, float]:
    """(wall seconds, tokens, summary, CPU seconds of this process and its workers)."""
    from twinlm.data.prepare.pipeline import PrepareSettings, prepare

    start, cpu = time.perf_counter(), _cpu_seconds()
    summary = prepare(str(corpus), tokenizer, out, PrepareSettings(), workers=workers, progress=False)
    seconds = time.perf_counter() - start
    return seconds, summary.train_tokens + summary.heldout_tokens, summary, _cpu_seconds() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kjv-root", type=Path, default=None,
                        help="folder where the two .deb packages were unpacked (default: installed ones)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="N (default: all cores)")
    parser.add_argument("--repeat", type=int, default=8, help="copies of the Bible in the corpus (default 8: ~35 MB)")
    parser.add_argument("--tokenizer", default=None, help="a tokenizer folder or hub id (default: train one)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import numpy as np

    from twinlm.data.store import TokenStore
    from twinlm.data.tokenizer import load_tokenizer, train_tokenizer

    chapters = kjv_chapters(args.kjv_root)
    with tempfile.TemporaryDirectory(prefix="prepare-bench-") as tmp:
        tmp = Path(tmp)
        corpus = tmp / "kjv.jsonl"
        with open(corpus, "w") as f:
            for _ in range(args.repeat):
                f.writelines(json.dumps({"text": c}) + "\n" for c in chapters)
        tok = load_tokenizer(args.tokenizer) if args.tokenizer else train_tokenizer(chapters, 8192)
        load_before = os.getloadavg()
        one = timed_prepare(corpus, tok, tmp / "one", 1)
        many = timed_prepare(corpus, tok, tmp / "many", args.workers)
        load_after = os.getloadavg()
        for split in ("train", "heldout"):
            a, b = TokenStore.open(tmp / "one" / split), TokenStore.open(tmp / "many" / split)
            if not np.array_equal(a.tokens[0:a.num_tokens], b.tokens[0:b.num_tokens]):
                sys.exit(f"the {split} stores differ between 1 and {args.workers} workers")
    rate1, rateN = one[1] / one[0], many[1] / many[0]
    print(f"corpus: KJV Bible x{args.repeat}, {len(chapters) * args.repeat:,} documents, {one[1]:,} tokens, "
          f"{one[2].units} units")
    # CPU seconds show how much of the machine the run really had (other users share the cores).
    for n, (secs, tokens, _, cpu) in ((1, one), (args.workers, many)):
        print(f"workers={n}: {secs:.2f} s, {tokens / secs:,.0f} tokens/s, {cpu:.1f} CPU s "
              f"({cpu / secs:.2f} cores busy, {tokens / cpu:,.0f} tokens per CPU second)")
    print(f"load average (1 min) before/after: {load_before[0]:.1f}/{load_after[0]:.1f} on {os.cpu_count()} cores")
    print(f"ratio={rateN / rate1:.2f} workers={args.workers} cpus={os.cpu_count()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
