"""The held-out rule: one rule for every path that splits a corpus, so the same corpus gives the
same held-out documents whether `twinlm prepare` split it (in parallel, across machines) or a
pretraining run tokenized it in one process.

A document is identified by (name, position): the stable name of its file or stream within the
source (`twinlm.data.sources.resolve.Unit.name`) and its position there (byte offset, row or
sample index). The hash of (seed, name, position) places it in [0, 1); documents below `share`
are candidates. The held-out split is the candidates with the smallest hashes, at most
`max_documents`, stopping before the first that would pass `max_tokens`; the other candidates
train after all, after the rest of the corpus, in source order. Never all of a corpus: at least
one document trains; and a corpus of two or more documents whose hashes picked none holds out
its lowest-hash document.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

WARN_SHARE = 0.05  # a held-out split above this share of the documents gets a warning


def heldout_hash(seed: int, name: str, position: int) -> float:
    """A document's place in [0, 1) for the held-out draw: depends on where it is in the source,
    never on which worker or machine read it."""
    digest = hashlib.blake2b(f"{seed}\0{name}\0{position}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


@dataclass
class Pick:
    """The outcome of the rule over a corpus's candidates (each list in hash order)."""

    held: list = field(default_factory=list)
    returned: list = field(default_factory=list)  # candidates that train after all
    lowest_training: bool = False  # hold out the lowest-hash training document instead


def pick_heldout(candidates: list[tuple[float, Any, int]], documents: int, share: float, max_documents: int,
                 max_tokens: int | None) -> Pick:
    """Apply the rule to the candidates `(hash, key, tokens)` of a corpus of `documents`
    documents (candidates included); `max_tokens` 0 or None: no token cap."""
    candidates = sorted(candidates, key=lambda c: (c[0], c[1]))
    take, budget = 0, max_tokens or float("inf")
    for _, _, tokens in candidates[:max_documents]:
        budget -= tokens
        if budget < 0:
            break
        take += 1
    pick = Pick(candidates[:take], candidates[take:])
    if documents - len(candidates) + len(pick.returned) == 0 and pick.held:  # never all of a corpus
        pick.returned.insert(0, pick.held.pop())
    if not pick.held and documents >= 2 and share > 0 and max_documents > 0:
        if pick.returned:  # the lowest-hash candidate, even past the token cap
            pick.held.append(pick.returned.pop(0))
        else:
            pick.lowest_training = True
    return pick


class StreamSplit:
    """The rule over a stream of `(name, position, item)` documents, for one process.

    `training(docs)` yields the training items: the non-candidates as they come, then the
    candidates that train after all, in source order. Once it is exhausted, `heldout` holds the
    held-out items in source order; `lowest` is the training index of the document the rule takes
    out of training (None when none), unless `hold_back` asked to keep that document back while
    streaming (it is then yielded last when it trains after all).

    Memory stays bounded by the caps: only the `max_documents` lowest-hash candidates so far are
    kept; a candidate pushed out of them can only train, and goes to `spill` (`add(item)`, then
    `spill[k]`, the k-th added; a list by default, a store on disk for token ids)."""

    def __init__(self, share: float, max_documents: int, max_tokens: int | None, seed: int,
                 size: Callable[[Any], int], spill=None):
        self.share, self.max_documents, self.max_tokens, self.seed = share, max_documents, max_tokens, seed
        self.size, self.spill = size, spill if spill is not None else ListSpill()
        self.heldout: list = []
        self.lowest: int | None = None
        self.documents = self.tokens = self.heldout_tokens = 0

    def training(self, docs: Iterable[tuple[str, int, Any]], hold_back: bool = False) -> Iterator[Any]:
        kept: list[tuple[float, int, int, Any]] = []  # max-heap of (-hash, -ordinal, tokens, item)
        spilled: list[tuple[int, int]] = []  # (ordinal, index in `spill`) of the candidates pushed out
        best: tuple[float, int, Any] | None = None  # (hash, training index, item) of the lowest training doc
        trained = 0
        for name, position, item in docs:
            h, n = heldout_hash(self.seed, name, position), self.size(item)
            ordinal = self.documents
            self.documents += 1
            self.tokens += n
            if h < self.share:
                heapq.heappush(kept, (-h, -ordinal, n, item))
                if len(kept) > self.max_documents:  # past the cap whatever comes later: it trains
                    _, out, _, out_item = heapq.heappop(kept)
                    spilled.append((-out, len(spilled)))
                    self.spill.add(out_item)
                continue
            if best is None or h < best[0]:
                if hold_back and best is not None:
                    yield best[2]  # superseded: it trains
                    trained += 1
                best = (h, trained, item)
                if hold_back:
                    continue
            yield item
            trained += 1
        # Spilled candidates count as training documents here: they all train.
        items = {-o: item for _, o, _, item in kept}
        pick = pick_heldout([(-h, -o, n) for h, o, n, _ in kept], self.documents, self.share, self.max_documents,
                            self.max_tokens)
        # Candidates that train after all, in source order: pushed-out ones (in the order they were
        # pushed out, not the source's) merged with the kept ones past the caps.
        back = sorted([(o, k, True) for o, k in spilled] + [(o, o, False) for _, o, _ in pick.returned])
        for _, k, from_spill in back:
            yield self.spill[k] if from_spill else items[k]
        self.heldout[:] = [items[ordinal] for _, ordinal, _ in sorted(pick.held, key=lambda c: c[1])]
        self.heldout_tokens = sum(tokens for _, _, tokens in pick.held)
        if pick.lowest_training and best is not None:
            self.heldout[:] = [best[2]]
            self.heldout_tokens = self.size(best[2])
            self.lowest = None if hold_back else best[1]
        elif hold_back and best is not None:
            yield best[2]

    def report(self, source: str) -> str:
        """One line: training and held-out documents and tokens; a warning above WARN_SHARE."""
        import warnings

        held = len(self.heldout)
        line = (f"data {source}: training {self.documents - held:,} documents, {self.tokens - self.heldout_tokens:,} "
                f"tokens; held-out {held:,} documents, {self.heldout_tokens:,} tokens")
        if self.documents and held / self.documents > WARN_SHARE:
            share = 100 * held / self.documents
            warnings.warn(f"{source}: {held} of {self.documents} documents ({share:.0f}%) are held out for "
                          "evaluation, more than 5%: the corpus is small; lower data.heldout_share or add data",
                          UserWarning, stacklevel=2)
            line += f" (warning: {share:.0f}% of the documents held out)"
        return line


class ListSpill(list):
    """Pushed-out candidates in memory (texts for a tokenizer)."""

    def add(self, item: Any) -> None:
        self.append(item)
