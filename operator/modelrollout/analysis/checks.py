"""The built-in checks as pure functions of what was measured per colour.

Names of the checks (used in status and failure limits): ``errors``, ``latency``, ``latency-vs-blue``,
``accuracy``, ``health``, ``golden``, and each custom check's own name.
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
    upstream_errors: float = 0.0
    """Requests the router sent to this colour that got no answer (the server never counted them)."""
    restarts: float = 0.0
    """Server processes of this colour that started again during the canary, as Prometheus saw them."""
    golden_accuracy: float | None = None
    """Accuracy on the colour's golden set (worst replica), None when none was scored."""


@dataclass(frozen=True)
class PodHealth:
    """How the pods of one colour and version fare, as Kubernetes reports them: evidence for the health check."""

    pods: int
    """Pods of the version that are neither terminating nor finished."""
    ready: int
    """Of those, the Ready ones."""
    restarts: int
    """Container restarts (init and sidecar containers included) summed over every pod of the version,
    terminating and finished ones included: a crash counts until its pod is gone."""


def built_in(
    checks: Checks,
    *,
    green: ColourMetrics,
    blue: ColourMetrics,
    blue_has_traffic: bool = True,
    pods: PodHealth | None = None,
    golden_set: bool = False,
) -> list[CheckResult]:
    """Every enabled built-in check. ``latency-vs-blue`` needs blue to have traffic (not at a 100% step);
    ``golden`` applies when green has a golden set."""
    results: list[CheckResult] = []
    if checks.errors.enabled:
        # Requests the router could not get answered are green's errors too: a dead green answers nothing.
        attempts = green.requests + green.upstream_errors
        failed = green.server_errors + green.upstream_errors
        rate = failed / attempts if attempts > 0 else None
        results.append(
            evaluate.at_most(
                "errors", rate, checks.errors.max_rate, samples=attempts, min_samples=checks.errors.min_requests
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
        if checks.latency.max_ratio_to_blue is not None and blue_has_traffic:
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
    if checks.health.enabled:
        results.append(health(checks, green=green, pods=pods))
    if checks.golden.enabled and golden_set:
        results.append(golden(checks, green=green, blue=blue))
    return results


def health(checks: Checks, *, green: ColourMetrics, pods: PodHealth | None) -> CheckResult:
    """Green's restarts (seen by Prometheus or Kubernetes, whichever saw more) and its pods' readiness."""
    limit = checks.health.max_restarts
    restarts = max(green.restarts, float(pods.restarts) if pods else 0.0)
    if restarts > limit:
        return CheckResult(
            "health",
            Verdict.FAILED,
            f"green restarted {restarts:.0f}x during the canary (at most {limit})",
            restarts,
            float(limit),
        )
    if pods is not None and pods.pods > 0 and pods.ready == 0:
        # Green has pods and none answers: dead, not starting up (a pod added by a scale-up or replacing an
        # evicted one while others serve does not count against it).
        return CheckResult("health", Verdict.FAILED, f"none of green's {pods.pods} pods is ready", restarts, limit)
    ready = f", {pods.ready}/{pods.pods} pods ready" if pods is not None else ""
    return CheckResult("health", Verdict.PASSED, f"{restarts:.0f} restarts{ready}", restarts, float(limit))


def golden(checks: Checks, *, green: ColourMetrics, blue: ColourMetrics) -> CheckResult:
    """Green's golden-set accuracy against blue's, minus the tolerance (exact: a fixed set, not a sample)."""
    tolerance = checks.golden.tolerance
    if green.golden_accuracy is None or blue.golden_accuracy is None:
        missing = "green" if green.golden_accuracy is None else "blue"
        return CheckResult("golden", Verdict.INCONCLUSIVE, f"no golden-set accuracy from {missing} yet")
    delta = green.golden_accuracy - blue.golden_accuracy
    verdict = Verdict.PASSED if delta >= -tolerance else Verdict.FAILED
    relation = ">=" if verdict is Verdict.PASSED else "<"
    return CheckResult(
        "golden",
        verdict,
        f"golden accuracy green {green.golden_accuracy:.4f} - blue {blue.golden_accuracy:.4f} = {delta:+.4f} "
        f"{relation} -{tolerance}",
        delta,
        -tolerance,
    )


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
