"""The accuracy gate: decides only with enough evidence, and stays valid when checked again and again.

The simulations check what the method promises (see modelrollout.analysis.statistics): the interval misses
the true difference at any of the looks with probability at most alpha (type-I error), and a difference
the published mixture boundary should tell from the tolerance is told with power at least 1 - beta. Each
bound carries a binomial margin for the number of seeded runs (a one-sided 99.9% allowance), so that a
correct gate passes whatever the seed, and a gate that errs far more than promised does not.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelrollout.analysis.statistics import DEFAULT_TAU, GateVerdict, Outcomes, accuracy_gate, difference_interval

TOLERANCE = 0.01
MIN_SAMPLES = 1000
LOOK = 250
"""Labelled outcomes per colour between two analyses."""
NORMAL = NormalDist()
MARGIN_Z = NORMAL.inv_cdf(0.999)


def gate(green: Outcomes, blue: Outcomes, *, confidence: float = 0.95) -> GateVerdict:
    return accuracy_gate(green, blue, tolerance=TOLERANCE, confidence=confidence, min_samples=MIN_SAMPLES).verdict


def binomial_margin(rate: float, runs: int) -> float:
    return MARGIN_Z * math.sqrt(rate * (1 - rate) / runs)


def cumulative_outcomes(rng: np.random.Generator, accuracy: float, runs: int, looks: int) -> np.ndarray:
    """Correct answers so far at each look (runs x looks), ``LOOK`` new labelled outcomes per look."""
    return np.cumsum(rng.binomial(LOOK, accuracy, size=(runs, looks)), axis=1)


def test_too_few_samples_is_inconclusive_even_when_green_is_terrible() -> None:
    assert gate(Outcomes(correct=0, total=999), Outcomes(correct=999, total=999)) is GateVerdict.INCONCLUSIVE


def test_clearly_worse_green_fails() -> None:
    assert gate(Outcomes(correct=9400, total=10_000), Outcomes(correct=9700, total=10_000)) is GateVerdict.FAILED


def test_equal_green_passes_with_enough_samples() -> None:
    assert gate(Outcomes(correct=19_400, total=20_000), Outcomes(correct=19_400, total=20_000)) is GateVerdict.PASSED


def test_small_difference_with_few_samples_is_inconclusive() -> None:
    assert gate(Outcomes(correct=1930, total=2000), Outcomes(correct=1940, total=2000)) is GateVerdict.INCONCLUSIVE


@pytest.mark.parametrize("n", [1000, 10_000, 100_000, 1_000_000])
def test_the_price_of_looking_every_interval_is_less_than_twice_a_single_look(n: int) -> None:
    """No valid interval is narrower than the fixed-sample z-interval (it is exact for one look); the mixture
    tuned to one accuracy point pays less than twice that width over the sample sizes a canary sees."""
    interval = difference_interval(Outcomes(0.97 * n, n), Outcomes(0.97 * n, n), confidence=0.95)
    single_look = NORMAL.inv_cdf(0.975) * math.sqrt(2 * 0.97 * 0.03 / n)
    radius = (interval.upper - interval.lower) / 2
    assert single_look < radius < 2 * single_look


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


@pytest.mark.parametrize(
    ("green", "blue", "confidence"),
    [
        pytest.param(0.96, 0.97, 0.95, id="at-the-tolerance-95%"),
        pytest.param(0.96, 0.97, 0.80, id="at-the-tolerance-80%"),
        pytest.param(0.989, 0.999, 0.95, id="near-100%-accuracy-95%"),
    ],
)
def test_peeking_every_interval_misses_the_true_difference_at_most_alpha_of_the_time(
    green: float, blue: float, confidence: float
) -> None:
    """Green exactly one point worse (the tolerance's edge, where Failed and Passed are both wrong), looked at
    every 250 labelled outcomes per colour from 1000 to 10,000: the interval excludes the true difference at
    some look in at most alpha of the runs. The same looks at a fixed-sample z-interval miss far more often,
    so these looks are enough to show what peeking does to a test that is not sequential."""
    alpha, runs, looks = 1 - confidence, 4000, 40
    rng = np.random.default_rng(20260101)
    correct_green = cumulative_outcomes(rng, green, runs, looks)
    correct_blue = cumulative_outcomes(rng, blue, runs, looks)
    truth, first = green - blue, MIN_SAMPLES // LOOK - 1
    missed = 0
    for run_green, run_blue in zip(correct_green[:, first:].tolist(), correct_blue[:, first:].tolist(), strict=True):
        for look, (g, b) in enumerate(zip(run_green, run_blue, strict=True), start=first):
            n = LOOK * (look + 1)
            interval = difference_interval(Outcomes(g, n), Outcomes(b, n), confidence=confidence)
            if not interval.lower <= truth <= interval.upper:
                missed += 1
                break
    n = LOOK * np.arange(1, looks + 1)
    p_green, p_blue = correct_green / n, correct_blue / n
    z_radius = NORMAL.inv_cdf(1 - alpha / 2) * np.sqrt((p_green * (1 - p_green) + p_blue * (1 - p_blue)) / n)
    z_missed = int(np.any(np.abs(p_green - p_blue - truth)[:, first:] > z_radius[:, first:], axis=1).sum())
    assert missed / runs <= alpha + binomial_margin(alpha, runs), f"missed in {missed} of {runs} runs; alpha {alpha}"
    assert z_missed / runs > 2 * alpha, "the looks are too few to show the cost of peeking"


def power_sample_size(green: float, blue: float, verdict: GateVerdict, *, beta: float, confidence: float) -> int:
    """Labelled outcomes per colour (a whole number of looks) at which the published boundary
    (Johari et al. 2022, normal mixture with scale tau) gives ``verdict`` with probability 1 - beta at that
    look alone, under the normal approximation. Computed here from the paper, not from the module."""
    alpha, tau2, difference, n = 1 - confidence, DEFAULT_TAU**2, green - blue, LOOK
    while True:
        variance = (green * (1 - green) + blue * (1 - blue)) / n
        radius = math.sqrt(
            variance * (variance + tau2) / tau2 * (2 * math.log(1 / alpha) + math.log((variance + tau2) / variance))
        )
        # Passed needs lower > -tolerance; Failed needs upper < -tolerance
        margin = difference + TOLERANCE - radius if verdict is GateVerdict.PASSED else -TOLERANCE - difference - radius
        if n >= MIN_SAMPLES and NORMAL.cdf(margin / math.sqrt(variance)) >= 1 - beta:
            return n
        n += LOOK


@pytest.mark.parametrize(
    ("green", "blue", "verdict"),
    [
        pytest.param(0.97, 0.97, GateVerdict.PASSED, id="equal-passes"),
        pytest.param(0.99, 0.99, GateVerdict.PASSED, id="equal-at-99%-passes"),
        pytest.param(0.95, 0.97, GateVerdict.FAILED, id="two-points-worse-fails"),
    ],
)
def test_the_gate_decides_with_the_power_its_boundary_promises(green: float, blue: float, verdict: GateVerdict) -> None:
    """Power 1 - beta (beta 0.2): by the sample size at which the published boundary decides with that
    probability at one look, the gate, looked at every 250 outcomes, has decided rightly at least as often
    (earlier looks only add chances), and wrongly almost never."""
    beta, confidence, runs = 0.2, 0.95, 2000
    n_max = power_sample_size(green, blue, verdict, beta=beta, confidence=confidence)
    looks = n_max // LOOK
    rng = np.random.default_rng(20260102)
    correct_green = cumulative_outcomes(rng, green, runs, looks)
    correct_blue = cumulative_outcomes(rng, blue, runs, looks)
    right = wrong = 0
    first = MIN_SAMPLES // LOOK - 1
    for run_green, run_blue in zip(correct_green[:, first:].tolist(), correct_blue[:, first:].tolist(), strict=True):
        for look, (g, b) in enumerate(zip(run_green, run_blue, strict=True), start=first):
            n = LOOK * (look + 1)
            decided = gate(Outcomes(g, n), Outcomes(b, n))
            if decided is not GateVerdict.INCONCLUSIVE:
                right += decided is verdict
                wrong += decided is not verdict
                break
    assert right / runs >= 1 - beta - binomial_margin(beta, runs), f"{right} of {runs} by {n_max} per colour"
    alpha = 1 - confidence  # deciding the wrong way excludes the true difference
    assert wrong / runs <= alpha + binomial_margin(alpha, runs), f"{wrong} of {runs} runs decided the wrong way"
