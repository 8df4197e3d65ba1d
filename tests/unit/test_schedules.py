"""Per-phase LR schedules at their boundaries (ETTIN-FACTS §2)."""

from __future__ import annotations

import math

import pytest

from twinlm.recipe import load_recipe
from twinlm.train.schedules import lr_multiplier, warmup_steps_for


def test_pretrain_warms_up_then_stays_constant():
    phase = load_recipe("nano").phases[0]
    steps, warm = 100, 10
    assert lr_multiplier(phase, 0, steps, warm) == pytest.approx(0.1)
    assert lr_multiplier(phase, warm - 1, steps, warm) == pytest.approx(1.0)
    assert lr_multiplier(phase, warm, steps, warm) == 1.0
    assert lr_multiplier(phase, steps - 1, steps, warm) == 1.0


def test_extension_and_decay_follow_one_minus_sqrt_and_join_up():
    _, ext, dec = load_recipe("nano").phases
    T = 50
    assert lr_multiplier(ext, 0, T, 0) == 1.0
    assert lr_multiplier(ext, T - 1, T, 0) == pytest.approx(0.5)
    mid = (T - 1) // 4
    assert lr_multiplier(ext, mid, T, 0) == pytest.approx(1.0 - 0.5 * math.sqrt(mid / (T - 1)))
    # The decay phase starts where the extension phase ended and ends at 0.02 x peak.
    assert lr_multiplier(dec, 0, T, 0) == pytest.approx(lr_multiplier(ext, T - 1, T, 0))
    assert lr_multiplier(dec, T - 1, T, 0) == pytest.approx(0.02)
    values = [lr_multiplier(dec, t, T, 0) for t in range(T)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_warmup_linear_for_cross_objective_training():
    from twinlm.recipe import Phase

    p = Phase(lr_schedule="warmup_linear", lr_start=1.0, lr_end=0.02, tokens=1000)
    assert lr_multiplier(p, 4, 100, 5) == pytest.approx(1.0)
    assert lr_multiplier(p, 99, 100, 5) == pytest.approx(0.02)


def test_warmup_steps_from_tokens():
    phase = load_recipe("nano").phases[0]
    assert warmup_steps_for(phase, 32 * 128) == math.ceil(phase.warmup_tokens / 4096)
