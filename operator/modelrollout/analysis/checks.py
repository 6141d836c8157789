"""The built-in checks as pure functions of what was measured per colour.

Names of the checks (used in status and failure limits): ``errors``, ``latency``, ``latency-vs-blue``,
``accuracy``, and each custom check's own name.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelrollout.analysis import evaluate, statistics
from modelrollout.analysis.evaluate import CheckResult, Verdict
from modelrollout.api.spec import Checks


@dataclass(frozen=True)
class ColourMetrics:
    """What Prometheus says about one colour over the analysis window (accuracy: over the canary)."""

    requests: float = 0.0
    server_errors: float = 0.0
    p95_seconds: float | None = None
    correct: float = 0.0
    labelled: float = 0.0


def built_in(checks: Checks, *, green: ColourMetrics, blue: ColourMetrics) -> list[CheckResult]:
    results: list[CheckResult] = []
    if checks.errors.enabled:
        rate = green.server_errors / green.requests if green.requests > 0 else None
        results.append(
            evaluate.at_most(
                "errors", rate, checks.errors.max_rate, samples=green.requests, min_samples=checks.errors.min_requests
            )
        )
    if checks.latency.enabled:
        results.append(
            evaluate.at_most(
                "latency",
                green.p95_seconds,
                checks.latency.p95_max_seconds,
                samples=green.requests,
                min_samples=checks.latency.min_requests,
                unit="s",
            )
        )
        if checks.latency.max_ratio_to_blue is not None:
            # Blue counts as at least the floor: jitter of a few milliseconds must not fail a fast model.
            blue_p95 = max(blue.p95_seconds, checks.latency.ratio_floor_seconds) if blue.p95_seconds is not None else 0
            ratio = green.p95_seconds / blue_p95 if green.p95_seconds is not None and blue_p95 > 0 else None
            results.append(
                evaluate.at_most(
                    "latency-vs-blue",
                    ratio,
                    checks.latency.max_ratio_to_blue,
                    samples=min(green.requests, blue.requests),
                    min_samples=checks.latency.min_requests,
                    unit="x",
                )
            )
    if checks.accuracy.enabled:
        results.append(accuracy(checks, green=green, blue=blue))
    return results


def accuracy(checks: Checks, *, green: ColourMetrics, blue: ColourMetrics) -> CheckResult:
    config = checks.accuracy
    gate = statistics.accuracy_gate(
        statistics.Outcomes(green.correct, green.labelled),
        statistics.Outcomes(blue.correct, blue.labelled),
        tolerance=config.tolerance,
        confidence=config.confidence,
        min_samples=config.min_samples,
    )
    verdict = {
        statistics.GateVerdict.PASSED: Verdict.PASSED,
        statistics.GateVerdict.FAILED: Verdict.FAILED,
        statistics.GateVerdict.INCONCLUSIVE: Verdict.INCONCLUSIVE,
    }[gate.verdict]
    value = gate.delta.estimate if gate.delta else None
    return CheckResult("accuracy", verdict, gate.reason, value, -config.tolerance)
