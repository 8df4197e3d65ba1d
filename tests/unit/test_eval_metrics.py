"""Seed summaries against hand-computed values (ranking metrics: test_retrieval_parity.py)."""

from __future__ import annotations

import pytest

from twinlm.evaluate.metrics import summarise


def test_summarise_uses_the_sample_standard_deviation():
    s = summarise([1.0, 2.0, 3.0])
    assert s["mean"] == pytest.approx(2.0) and s["std"] == pytest.approx(1.0) and s["seeds"] == [1.0, 2.0, 3.0]
    assert summarise([5.0])["std"] == 0.0
