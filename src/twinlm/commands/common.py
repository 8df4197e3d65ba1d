"""Arguments shared by several subcommands."""

from __future__ import annotations

import argparse


def add_recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="a recipe file, or the name of a shipped recipe (nano, micro, ettin-17m ... ettin-1b)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a recipe field, e.g. --set training.lr=1e-3 --set phases.decay.tokens=2e6 "
        "(repeatable; phases are addressed by name or index)",
    )


def add_output_args(p: argparse.ArgumentParser, what: str = "results") -> None:
    p.add_argument("--out", required=True, help=f"output folder for the {what}")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
