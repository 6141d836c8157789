"""Pure evaluation: a measured value and its threshold in, a verdict out.

Too little data is Inconclusive, never Failed: a canary that has seen no traffic is not a bad canary.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    PASSED = "Passed"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check in one analysis: what was measured, against what, and the verdict."""

    name: str
    verdict: Verdict
    message: str
    value: float | None = None
    threshold: float | None = None


def at_most(
    name: str, value: float | None, threshold: float, *, samples: float, min_samples: float, unit: str = ""
) -> CheckResult:
    """Passed when ``value <= threshold``; Inconclusive with no value or fewer than ``min_samples``."""
    return _compare(name, value, threshold, samples=samples, min_samples=min_samples, unit=unit, upper=True)


def at_least(
    name: str, value: float | None, threshold: float, *, samples: float, min_samples: float, unit: str = ""
) -> CheckResult:
    """Passed when ``value >= threshold``; Inconclusive with no value or fewer than ``min_samples``."""
    return _compare(name, value, threshold, samples=samples, min_samples=min_samples, unit=unit, upper=False)


def _compare(
    name: str, value: float | None, threshold: float, *, samples: float, min_samples: float, unit: str, upper: bool
) -> CheckResult:
    if value is None or math.isnan(value):
        return CheckResult(name, Verdict.INCONCLUSIVE, "no data", None, threshold)
    if samples < min_samples:
        return CheckResult(
            name, Verdict.INCONCLUSIVE, f"{samples:.0f} samples, need {min_samples:.0f}", value, threshold
        )
    ok = value <= threshold if upper else value >= threshold
    relation = ("<=" if ok else ">") if upper else (">=" if ok else "<")
    verdict = Verdict.PASSED if ok else Verdict.FAILED
    return CheckResult(name, verdict, f"{value:.4g}{unit} {relation} {threshold:.4g}{unit}", value, threshold)


def error(name: str, message: str) -> CheckResult:
    """The metric provider could not answer (unreachable, bad query): not a verdict on the model."""
    return CheckResult(name, Verdict.ERROR, message)


def overall(results: Iterable[CheckResult]) -> Verdict:
    """Error beats Failed beats Inconclusive beats Passed; no checks at all is Passed."""
    verdicts = {r.verdict for r in results}
    for verdict in (Verdict.ERROR, Verdict.FAILED, Verdict.INCONCLUSIVE):
        if verdict in verdicts:
            return verdict
    return Verdict.PASSED
