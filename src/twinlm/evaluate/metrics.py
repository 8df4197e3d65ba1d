"""Mean/std summaries over seeds. (Ranking metrics come from the libraries that define them:
sentence-transformers' InformationRetrievalEvaluator and mteb, see retrieval.py and mteb_local.py.)"""

from __future__ import annotations

import statistics


def summarise(values: list[float]) -> dict:
    """{"mean", "std", "seeds"}; std is the sample standard deviation (0 for a single seed)."""
    clean = [float(v) for v in values]
    return {
        "mean": statistics.fmean(clean) if clean else float("nan"),
        "std": statistics.stdev(clean) if len(clean) > 1 else 0.0,
        "seeds": clean,
    }
