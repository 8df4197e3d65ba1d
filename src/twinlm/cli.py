"""The `twinlm` command. Each subcommand lives in `twinlm/commands/<name>.py` and exposes
`register(subparsers)`; heavy imports happen inside the command so `--help` stays instant."""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from twinlm.commands import (
    bco,
    compare,
    convert,
    demo,
    encode,
    finetune,
    generate,
    plan,
    prepare,
    pretrain,
    search,
    sft,
)
from twinlm.commands import eval as eval_command
from twinlm.errors import UserError

# Explicit list, in the order `twinlm --help` shows them.
COMMANDS = [pretrain, prepare, plan, eval_command, compare, convert, demo, finetune, encode, search, sft, bco, generate]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twinlm",
        description="Train twin encoder/decoder language models on one recipe, compare them, convert them, "
        "and turn them into retrievers, rerankers, classifiers and chat models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def library_output_off() -> None:
    """A command speaks first and last: no library bar ("Loading weights", "Generating train
    split", "Writing model shards") or developer-facing deprecation notice before its own
    output or its one-line error. Training bars (the Trainer's) stay. Set in the environment
    before the libraries are imported; a user's own setting of these variables wins."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' and the hub's bars
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", message=".*pin_memory.*no accelerator is found")


def main(argv: list[str] | None = None) -> int:
    library_output_off()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except UserError as err:
        print(f"twinlm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"twinlm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
