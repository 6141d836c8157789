"""The accuracy gate: decides only with enough evidence, and stays valid when checked again and again."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelrollout.analysis.statistics import GateVerdict, Outcomes, accuracy_gate, difference_interval


def gate(green: Outcomes, blue: Outcomes) -> GateVerdict:
    return accuracy_gate(green, blue, tolerance=0.01, confidence=0.95, min_samples=1000).verdict


def test_too_few_samples_is_inconclusive_even_when_green_is_terrible() -> None:
    assert gate(Outcomes(correct=0, total=999), Outcomes(correct=999, total=999)) is GateVerdict.INCONCLUSIVE


def test_clearly_worse_green_fails() -> None:
    assert gate(Outcomes(correct=9400, total=10_000), Outcomes(correct=9700, total=10_000)) is GateVerdict.FAILED


def test_equal_green_passes_with_enough_samples() -> None:
    assert gate(Outcomes(correct=19_400, total=20_000), Outcomes(correct=19_400, total=20_000)) is GateVerdict.PASSED


def test_small_difference_with_few_samples_is_inconclusive() -> None:
    assert gate(Outcomes(correct=1930, total=2000), Outcomes(correct=1940, total=2000)) is GateVerdict.INCONCLUSIVE


def test_interval_narrows_with_more_samples() -> None:
    small = difference_interval(Outcomes(970, 1000), Outcomes(970, 1000), confidence=0.95)
    large = difference_interval(Outcomes(9700, 10_000), Outcomes(9700, 10_000), confidence=0.95)
    assert (large.upper - large.lower) < (small.upper - small.lower) / 2


@given(
    green=st.integers(min_value=0, max_value=5000),
    blue=st.integers(min_value=0, max_value=5000),
    n_green=st.integers(min_value=1, max_value=5000),
    n_blue=st.integers(min_value=1, max_value=5000),
)
def test_interval_contains_the_estimate(green: int, blue: int, n_green: int, n_blue: int) -> None:
    interval = difference_interval(
        Outcomes(min(green, n_green), n_green), Outcomes(min(blue, n_blue), n_blue), confidence=0.95
    )
    assert interval.lower <= interval.estimate <= interval.upper


@pytest.mark.parametrize("seed", [1, 2])
def test_peeking_every_interval_keeps_false_alarms_below_alpha(seed: int) -> None:
    """Equal models at the tolerance's edge, checked 40 times each: a fixed z-test would fail far more."""
    rng = random.Random(seed)
    runs, false_fails = 200, 0
    for _ in range(runs):
        g = b = n = 0
        for _ in range(40):
            for _ in range(250):
                g += rng.random() < 0.96  # exactly one point worse: Failed would be a false alarm
                b += rng.random() < 0.97
            n += 250
            if gate(Outcomes(g, n), Outcomes(b, n)) is GateVerdict.FAILED:
                false_fails += 1
                break
    assert false_fails / runs <= 0.05
