"""The settings of `twinlm prepare` that decide a prepared folder's content.

A leaf of the standard library only: `twinlm prepare`'s flags are generated from this dataclass
when the CLI starts, so importing it must not pull in the tokenizer stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twinlm.errors import UserError


@dataclass
class PrepareSettings:
    """Everything that changes the prepared stores' content (part of the resume check). In the
    recipe form the recipe's data section and training.seed replace these defaults."""

    text_column: str = field(default="text", metadata={
        "help": "column holding the text in tabular sources; a recipe sets it as data.text_column"})
    split: str = field(default="train", metadata={
        "help": "split of a save_to_disk or hub dataset; a recipe sets it as data.split"})
    shard_tokens: int = field(default=2**27, metadata={"help": "tokens per shard file, at most"})
    unit_bytes: int | None = field(default=None, metadata={
        "help": "source bytes per unit of work (default: corpus size / 256, between 1 and 256 MiB)"})
    heldout_share: float = field(default=0.005, metadata={
        "help": "share of documents held out for evaluation; a recipe's data.heldout_share replaces the default"})
    heldout_max_documents: int = field(default=2000, metadata={
        "help": "at most this many held-out documents; a recipe's data.heldout_max_documents replaces the default"})
    heldout_max_tokens: int = field(default=2_000_000, metadata={
        "help": "held-out documents stop before this many tokens; a recipe's data.heldout_max_tokens replaces "
                "the default"})
    seed: int = field(default=42, metadata={
        "help": "seed of the held-out hash (twinlm.data.heldout); a recipe's training.seed replaces the default"})

    def check(self) -> None:
        if not 0.0 <= self.heldout_share < 1.0:
            raise UserError(f"--heldout-share must be in [0, 1), got {self.heldout_share}")
        if self.heldout_max_documents < 0 or self.heldout_max_tokens < 0:
            raise UserError("--heldout-max-documents and --heldout-max-tokens must be >= 0")
        if self.shard_tokens < 1:
            raise UserError(f"--shard-tokens must be >= 1, got {self.shard_tokens}")
        if self.unit_bytes is not None and self.unit_bytes < 1:
            raise UserError(f"--unit-bytes must be >= 1, got {self.unit_bytes}")


@dataclass
class PrepareJob:
    """How a prepare runs, not what it writes: the stores are the same for any value of these, so
    they are not part of the resume check."""

    workers: int | None = field(default=None, metadata={"min": 1, "help": "worker processes (default: all cores)"})
    shard: str | None = field(default=None, metadata={"metavar": "i/n", "help": (
        "prepare only units u with u % n == i (one machine of n); merge the n parts with --merge")})
    merge: list[str] | None = field(default=None, metadata={"nargs": "+", "metavar": "PART", "help": (
        "merge the part folders of a --shard i/n prepare")})
    progress: bool = field(default=True, metadata={"help": "a progress bar (the summary line is printed either way)"})
