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


def add_schedule_args(p: argparse.ArgumentParser, lr: float, batch_size: int = 8) -> None:
    """--lr, --epochs, --max-steps, --batch-size, --seed: the Trainer schedule the alignment commands share."""
    p.add_argument("--lr", type=float, default=lr, help=f"learning rate (default {lr:g})")
    p.add_argument("--epochs", type=float, default=1.0, help="passes over the data (default 1)")
    p.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (overrides --epochs)")
    p.add_argument("--batch-size", type=int, default=batch_size, help=f"rows per device step (default {batch_size})")
    p.add_argument("--seed", type=int, default=42, help="training seed (default 42)")
