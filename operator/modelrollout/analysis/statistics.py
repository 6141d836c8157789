"""The statistical accuracy gate: is green's accuracy worse than blue's by more than a tolerance?

Method: an always-valid confidence sequence for the difference of two proportions, from the mixture
sequential probability ratio test (mSPRT) of Johari, Koomen, Pekelis and Walsh, "Always Valid Inference:
Continuous Monitoring of A/B Tests", Operations Research 70(3), 2022 (the method behind Optimizely's
sequential stats engine); see also Howard, Ramdas, McAuliffe and Sekhon, "Time-uniform, nonparametric,
nonasymptotic confidence sequences", Annals of Statistics 49(2), 2021, for the normal-mixture boundary.

With ``d = p_green - p_blue`` estimated by ``d_hat`` and its variance by
``V = p_g(1-p_g)/n_g + p_b(1-p_b)/n_b``, mixing the likelihood ratio over ``N(d0, tau^2)`` gives

    Lambda(d0) = sqrt(V / (V + tau^2)) * exp(tau^2 (d_hat - d0)^2 / (2 V (V + tau^2)))

and by Ville's inequality ``{d0 : Lambda(d0) < 1/alpha}`` covers the true ``d`` at every check at once
with probability at least ``1 - alpha``. So the interval can be looked at after every analysis interval
without inflating false alarms, unlike a fixed-sample z-test (peeking at which fails far more often).

The gate (a non-inferiority test with margin ``tolerance``):
- Failed when the whole interval lies below ``-tolerance`` (green is worse by more than the tolerance);
- Passed when the whole interval lies above ``-tolerance`` (green is not worse by more than it);
- Inconclusive otherwise, or with fewer than ``min_samples`` labelled outcomes for either colour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

DEFAULT_TAU = 0.01
"""Mixture scale: the size of difference the test is tuned to detect quickly (one accuracy point)."""

_CONTINUITY = 0.5
"""Added to successes and failures (Agresti-Caffo style) so that 100% accuracy has a non-zero variance."""


class GateVerdict(StrEnum):
    PASSED = "Passed"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"


@dataclass(frozen=True)
class Outcomes:
    """Labelled outcomes of one colour: how many predictions were checked, and how many were right."""

    correct: float
    total: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total > 0 else math.nan


@dataclass(frozen=True)
class Interval:
    lower: float
    upper: float
    estimate: float


@dataclass(frozen=True)
class GateResult:
    verdict: GateVerdict
    delta: Interval | None
    """Confidence sequence for green accuracy minus blue accuracy (None when there are too few samples)."""
    reason: str


def _smoothed(outcomes: Outcomes) -> tuple[float, float]:
    """(proportion, variance of the proportion) with a small continuity correction."""
    n = outcomes.total + 2 * _CONTINUITY
    p = (outcomes.correct + _CONTINUITY) / n
    return p, p * (1 - p) / n


def difference_interval(green: Outcomes, blue: Outcomes, *, confidence: float, tau: float = DEFAULT_TAU) -> Interval:
    """Always-valid confidence interval for ``accuracy(green) - accuracy(blue)`` at ``confidence``."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    p_green, var_green = _smoothed(green)
    p_blue, var_blue = _smoothed(blue)
    estimate = p_green - p_blue
    variance = var_green + var_blue
    tau2 = tau * tau
    alpha = 1 - confidence
    radius = math.sqrt(
        variance * (variance + tau2) / tau2 * (2 * math.log(1 / alpha) + math.log((variance + tau2) / variance))
    )
    return Interval(lower=estimate - radius, upper=estimate + radius, estimate=estimate)


def accuracy_gate(
    green: Outcomes, blue: Outcomes, *, tolerance: float, confidence: float, min_samples: int, tau: float = DEFAULT_TAU
) -> GateResult:
    """Passed / Failed / Inconclusive for "green is not worse than blue by more than ``tolerance``"."""
    if green.total < min_samples or blue.total < min_samples:
        return GateResult(
            GateVerdict.INCONCLUSIVE,
            None,
            f"too few labelled samples: green {green.total:.0f}, blue {blue.total:.0f}, need {min_samples} each",
        )
    interval = difference_interval(green, blue, confidence=confidence, tau=tau)
    span = f"delta {interval.estimate:+.4f} in [{interval.lower:+.4f}, {interval.upper:+.4f}] at {confidence:.0%}"
    if interval.upper < -tolerance:
        return GateResult(GateVerdict.FAILED, interval, f"green is worse than blue by more than {tolerance}: {span}")
    if interval.lower > -tolerance:
        return GateResult(
            GateVerdict.PASSED, interval, f"green is not worse than blue by more than {tolerance}: {span}"
        )
    return GateResult(GateVerdict.INCONCLUSIVE, interval, f"not yet decided against tolerance {tolerance}: {span}")
