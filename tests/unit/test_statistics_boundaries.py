"""The accuracy gate at its edges: the interval's ends, the smoothing, and verdicts exactly at a boundary.

The module docstring of modelrollout.analysis.statistics states the method; these tests check the interval
against that statement (the mixture likelihood ratio reaches exactly 1/alpha at both ends) rather than
against the code's own closed form.
"""

from __future__ import annotations

import math

import pytest

from modelrollout.analysis.statistics import GateVerdict, Outcomes, accuracy_gate, difference_interval


def _smoothed(outcomes: Outcomes) -> tuple[float, float]:
    """Agresti-Caffo: half a success and half a failure added to each colour."""
    p = (outcomes.correct + 0.5) / (outcomes.total + 1)
    return p, p * (1 - p) / (outcomes.total + 1)


def _likelihood_ratio(green: Outcomes, blue: Outcomes, d0: float, tau: float) -> float:
    """Lambda(d0) of the module docstring: the mixture likelihood ratio against the difference d0."""
    p_green, v_green = _smoothed(green)
    p_blue, v_blue = _smoothed(blue)
    d_hat, v = p_green - p_blue, v_green + v_blue
    return math.sqrt(v / (v + tau**2)) * math.exp(tau**2 * (d_hat - d0) ** 2 / (2 * v * (v + tau**2)))


@pytest.mark.parametrize(
    ("green", "blue", "confidence", "tau"),
    [
        (Outcomes(900, 1000), Outcomes(880, 1000), 0.95, 0.01),
        (Outcomes(10, 10), Outcomes(10, 10), 0.95, 0.01),
        (Outcomes(3, 40), Outcomes(35, 40), 0.8, 0.05),
        (Outcomes(0, 0), Outcomes(7, 12), 0.99, 0.01),
    ],
)
def test_the_interval_ends_where_the_mixture_likelihood_ratio_reaches_one_over_alpha(
    green: Outcomes, blue: Outcomes, confidence: float, tau: float
) -> None:
    interval = difference_interval(green, blue, confidence=confidence, tau=tau)
    alpha = 1 - confidence
    assert interval.estimate == pytest.approx(_smoothed(green)[0] - _smoothed(blue)[0])
    for end in (interval.lower, interval.upper):
        assert _likelihood_ratio(green, blue, end, tau) == pytest.approx(1 / alpha, rel=1e-9)


def test_perfect_accuracy_on_both_sides_still_has_a_non_empty_interval() -> None:
    interval = difference_interval(Outcomes(50, 50), Outcomes(50, 50), confidence=0.95)
    assert interval.estimate == 0
    assert interval.lower < 0 < interval.upper


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5, -0.2])
def test_a_confidence_outside_zero_one_is_refused_with_the_value(confidence: float) -> None:
    with pytest.raises(ValueError, match=rf"confidence must be in \(0, 1\), got {confidence}"):
        difference_interval(Outcomes(5, 10), Outcomes(5, 10), confidence=confidence)


def test_exactly_min_samples_on_each_side_is_enough_to_decide() -> None:
    green, blue = Outcomes(10, 10), Outcomes(10, 10)
    for g, b in ((green, blue), (Outcomes(10, 11), blue), (green, Outcomes(10, 11))):
        result = accuracy_gate(g, b, tolerance=0.5, confidence=0.95, min_samples=10)
        assert result.delta is not None, result.reason
        assert not result.reason.startswith("too few")


def test_one_sample_short_on_either_side_is_inconclusive_without_an_interval() -> None:
    for g, b in ((Outcomes(9, 9), Outcomes(10, 10)), (Outcomes(10, 10), Outcomes(9, 9))):
        result = accuracy_gate(g, b, tolerance=0.5, confidence=0.95, min_samples=10)
        assert result.verdict is GateVerdict.INCONCLUSIVE
        assert result.delta is None


def test_the_gate_uses_the_mixture_scale_it_is_given() -> None:
    green, blue = Outcomes(450, 500), Outcomes(440, 500)
    for tau in (0.001, 0.2):
        result = accuracy_gate(green, blue, tolerance=0.05, confidence=0.95, min_samples=10, tau=tau)
        assert result.delta == difference_interval(green, blue, confidence=0.95, tau=tau)


def test_an_interval_whose_upper_end_touches_minus_tolerance_is_not_a_failure() -> None:
    """Failed needs the whole interval strictly below -tolerance; -tolerance itself is still in it."""
    green, blue = Outcomes(100, 1000), Outcomes(900, 1000)
    upper = difference_interval(green, blue, confidence=0.95).upper
    assert upper < 0
    result = accuracy_gate(green, blue, tolerance=-upper, confidence=0.95, min_samples=10)
    assert result.verdict is GateVerdict.INCONCLUSIVE
    assert result.delta is not None
    assert result.delta.upper == upper
    assert accuracy_gate(green, blue, tolerance=-upper * 0.99, confidence=0.95, min_samples=10).verdict is (
        GateVerdict.FAILED
    )


def test_an_interval_whose_lower_end_touches_minus_tolerance_is_not_a_pass() -> None:
    """Passed needs the whole interval strictly above -tolerance."""
    green, blue = Outcomes(880, 1000), Outcomes(900, 1000)
    lower = difference_interval(green, blue, confidence=0.95).lower
    assert lower < 0
    result = accuracy_gate(green, blue, tolerance=-lower, confidence=0.95, min_samples=10)
    assert result.verdict is GateVerdict.INCONCLUSIVE
    assert accuracy_gate(green, blue, tolerance=-lower * 1.01, confidence=0.95, min_samples=10).verdict is (
        GateVerdict.PASSED
    )


def test_a_pass_and_an_inconclusive_keep_their_interval_and_say_why() -> None:
    green, blue = Outcomes(900, 1000), Outcomes(900, 1000)
    interval = difference_interval(green, blue, confidence=0.95)
    passed = accuracy_gate(green, blue, tolerance=0.1, confidence=0.95, min_samples=10)
    assert passed.verdict is GateVerdict.PASSED
    assert passed.delta == interval
    assert passed.reason.startswith("green is not worse than blue by more than 0.1: delta +0.0000 in [")
    undecided = accuracy_gate(green, blue, tolerance=0.0, confidence=0.95, min_samples=10)
    assert undecided.verdict is GateVerdict.INCONCLUSIVE
    assert undecided.delta == interval
    assert undecided.reason.startswith("not yet decided against tolerance 0.0: delta +0.0000 in [")
