"""Did a fine-tuning run train at all? A score from a run whose loss never left the trivial
predictor's plateau says nothing about the model, so no winner is declared from it.

The rule (recorded beside every fine-tuned score in results.json):

    final loss  = the mean training loss over the last fifth of the steps (the Trainer's last
                  logging window: the tasks log every steps // 5 steps);
    trivial loss = the loss of a predictor that learned nothing about the inputs:
                   classification: the entropy of the training labels' class prior (ln 3 for
                   three balanced classes), the cross-entropy of always predicting the prior;
                   in-batch contrastive (retrieval, MultipleNegativesRankingLoss): ln(batch), the
                   cross-entropy of a uniform choice among the batch's candidate documents;
    converged   = final loss < CONVERGED_FRACTION x trivial loss.

Why a fraction and not "below the first loss": a run can end lower than it started and still
sit on the plateau near the trivial loss, scoring next to nothing; the runs that learn end far
below it (the run that motivated this rule is in docs/results.md)."""

from __future__ import annotations

import math
from collections import Counter

# A run must end at least 25% below the trivial loss to count as trained.
CONVERGED_FRACTION = 0.75
RULE = (f"final training loss (mean over the last fifth of the steps) < {CONVERGED_FRACTION:g} x the "
        "trivial predictor's loss (classification: entropy of the class prior; in-batch contrastive: ln(batch))")


def prior_entropy(labels: list[int]) -> float:
    """Cross-entropy (nats) of always predicting the labels' own class frequencies."""
    counts = Counter(labels)
    n = sum(counts.values())
    return -sum(c / n * math.log(c / n) for c in counts.values()) if n else float("nan")


def in_batch_trivial(batch_size: int, negatives_per_query: int = 0) -> float:
    """ln(number of candidates per query): every positive and hard negative in the batch."""
    return math.log(batch_size * (1 + negatives_per_query))


def final_loss(losses: list[float]) -> float:
    """The last logged training loss: the Trainer logs the mean over each logging window."""
    return float(losses[-1]) if losses else float("nan")


def judge(losses: list[float], trivial: float) -> dict:
    """{"converged", "final_loss", "trivial_loss"} for one run (NaN or missing losses: not converged)."""
    last = final_loss(losses)
    converged = math.isfinite(last) and math.isfinite(trivial) and last < CONVERGED_FRACTION * trivial
    return {"converged": bool(converged), "final_loss": round(last, 6), "trivial_loss": round(trivial, 6)}
