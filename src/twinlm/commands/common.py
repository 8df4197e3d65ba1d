"""Arguments shared by several subcommands."""

from __future__ import annotations

import argparse
import contextlib


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


@contextlib.contextmanager
def quiet_libraries():
    """Silence the libraries' own bars ("Map:", "Loading weights", "Computing widget examples")
    while the block runs: the evaluation prints one line per run with its ETA instead
    (runner.Progress). tqdm is restored on exit, so nothing else in the process loses its bars."""
    import warnings

    import datasets
    import tqdm.std
    from transformers.utils import logging

    hf_bars, ds_bars = logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    # sentence-transformers draws some bars with tqdm directly, with no switch to turn them off.
    loud = tqdm.std.tqdm.__init__

    def quiet(self, *a, **k):
        loud(self, *a, **{**k, "disable": True})

    tqdm.std.tqdm.__init__ = quiet
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            yield
    finally:
        tqdm.std.tqdm.__init__ = loud
        if hf_bars:
            logging.enable_progress_bar()
        if ds_bars:
            datasets.enable_progress_bars()


def add_align_args(p: argparse.ArgumentParser, settings: type, what: str) -> None:
    """MODEL, --data, --eval-data, --out, --overwrite, --resume, then one flag per field of the
    command's settings dataclass (`twinlm.config.add_flags`)."""
    from twinlm.config import add_flags

    p.add_argument("model", help="decoder folder or hub id")
    p.add_argument("--data", required=True, help="training rows (jsonl/json/csv/parquet file, save_to_disk folder or hub id)")
    p.add_argument("--eval-data", default=None,
                   help="held-out rows: loss (and, for rows that pair completions of a prompt, reward margin and "
                        "preference accuracy) before and after training")
    add_output_args(p, what)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from DIR/checkpoints")
    add_flags(p, settings)


def run_alignment(args, settings: type, train) -> tuple[dict, str]:
    """Run `train` (align.sft.sft or align.bco.bco) with the command's settings; (metrics, the
    held-out summary to print: empty without --eval-data)."""
    from twinlm.align.heldout import summary
    from twinlm.config import from_flags

    metrics = train(args.model, args.data, args.out, from_flags(settings, args), overwrite=args.overwrite,
                    resume=args.resume, eval_data=args.eval_data)
    return metrics, f"; {summary(metrics['before'], metrics['after'])}" if args.eval_data else ""
