"""Pure analysis: built-in checks from per-colour metrics, query rendering, response parsing, sharing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from modelrollout.analysis import checks, evaluate, queries
from modelrollout.analysis.evaluate import Verdict
from modelrollout.analysis.prometheus import parse_response
from modelrollout.analysis.provider import NO_DATA, ProviderError, QueryResult, Sample, SharedQueries
from modelrollout.api.spec import Checks

CHECKS = Checks()
HEALTHY = checks.ColourMetrics(requests=1000, server_errors=0, p95_seconds=0.02, correct=9700, labelled=10_000)


def verdicts(green: checks.ColourMetrics, blue: checks.ColourMetrics = HEALTHY) -> dict[str, Verdict]:
    return {r.name: r.verdict for r in checks.built_in(CHECKS, green=green, blue=blue)}


def test_a_healthy_green_passes_every_check() -> None:
    assert verdicts(HEALTHY) == {
        "errors": Verdict.PASSED,
        "latency": Verdict.PASSED,
        "latency-vs-blue": Verdict.PASSED,
        "accuracy": Verdict.PASSED,
        "health": Verdict.PASSED,
    }


def test_no_traffic_is_inconclusive_not_failed() -> None:
    result = verdicts(checks.ColourMetrics())
    assert result.pop("health") is Verdict.PASSED  # nothing restarted
    assert set(result.values()) == {Verdict.INCONCLUSIVE}


def test_a_dead_green_fails_errors_on_the_routers_upstream_errors() -> None:
    """A green that died answers nothing: its own counters stand still while the router's 502s pile up."""
    dead = checks.ColourMetrics(requests=0, server_errors=0, upstream_errors=40)
    [errors] = [r for r in checks.built_in(CHECKS, green=dead, blue=HEALTHY) if r.name == "errors"]
    assert errors.verdict is Verdict.FAILED and errors.value == 1.0
    flaky = checks.ColourMetrics(requests=990, server_errors=0, upstream_errors=10, p95_seconds=0.02)
    [errors] = [r for r in checks.built_in(CHECKS, green=flaky, blue=HEALTHY) if r.name == "errors"]
    assert errors.verdict is Verdict.FAILED and errors.value == pytest.approx(0.01)


def test_green_restarts_fail_health_with_the_count() -> None:
    crashed = checks.ColourMetrics(requests=1000, p95_seconds=0.02, correct=9700, labelled=10_000, restarts=2)
    [health] = [r for r in checks.built_in(CHECKS, green=crashed, blue=HEALTHY) if r.name == "health"]
    assert health.verdict is Verdict.FAILED and "restarted 2x" in health.message
    pods = checks.PodHealth(pods=2, ready=2, restarts=3)
    [health] = [r for r in checks.built_in(CHECKS, green=HEALTHY, blue=HEALTHY, pods=pods) if r.name == "health"]
    assert health.verdict is Verdict.FAILED and health.value == 3
    tolerant = Checks.model_validate({"health": {"maxRestarts": 3}})
    [health] = [r for r in checks.built_in(tolerant, green=HEALTHY, blue=HEALTHY, pods=pods) if r.name == "health"]
    assert health.verdict is Verdict.PASSED


def health_with(pods: checks.PodHealth) -> evaluate.CheckResult:
    return next(r for r in checks.built_in(CHECKS, green=HEALTHY, blue=HEALTHY, pods=pods) if r.name == "health")


def test_a_green_with_no_ready_pod_fails_health() -> None:
    dead = health_with(checks.PodHealth(pods=3, ready=0, restarts=0))
    assert dead.verdict is Verdict.FAILED and "none of green's 3 pods is ready" in dead.message


def test_a_green_pod_starting_beside_ready_ones_does_not_fail_health() -> None:
    """A scale-up mid-canary or a pod replacing an evicted one must not roll a healthy canary back."""
    assert health_with(checks.PodHealth(pods=3, ready=2, restarts=0)).verdict is Verdict.PASSED


def test_a_bake_step_at_full_weight_does_not_compare_with_an_idle_blue() -> None:
    idle_blue = checks.ColourMetrics()
    result = {
        r.name: r.verdict
        for r in checks.built_in(CHECKS, green=HEALTHY, blue=idle_blue, blue_has_traffic=False)
        if r.name.startswith("latency")
    }
    assert result == {"latency": Verdict.PASSED}


def test_golden_sets_compared_exactly_when_green_has_one() -> None:
    def golden(green: float | None, blue: float | None) -> evaluate.CheckResult:
        results = checks.built_in(
            CHECKS,
            green=checks.ColourMetrics(golden_accuracy=green),
            blue=checks.ColourMetrics(golden_accuracy=blue),
            golden_set=True,
        )
        return next(r for r in results if r.name == "golden")

    assert golden(0.97, 0.975).verdict is Verdict.PASSED
    assert golden(0.95, 0.975).verdict is Verdict.FAILED
    assert golden(None, 0.975).verdict is Verdict.INCONCLUSIVE
    assert "golden" not in verdicts(HEALTHY)  # no golden set on green: no golden check


def test_error_rate_above_the_limit_fails_with_value_and_threshold() -> None:
    green = checks.ColourMetrics(requests=1000, server_errors=10, p95_seconds=0.02)
    [errors] = [r for r in checks.built_in(CHECKS, green=green, blue=HEALTHY) if r.name == "errors"]
    assert errors.verdict is Verdict.FAILED
    assert errors.value == pytest.approx(0.01) and errors.threshold == 0.005
    assert "0.01 > 0.005" in errors.message


def test_slow_green_fails_absolute_and_relative_latency() -> None:
    result = verdicts(checks.ColourMetrics(requests=1000, p95_seconds=0.4, correct=9700, labelled=10_000))
    assert result["latency"] is Verdict.FAILED and result["latency-vs-blue"] is Verdict.FAILED


def test_latency_ratio_compares_with_blue() -> None:
    slow_blue = checks.ColourMetrics(requests=1000, p95_seconds=0.1)
    green = checks.ColourMetrics(requests=1000, p95_seconds=0.12)
    assert verdicts(green, slow_blue)["latency-vs-blue"] is Verdict.PASSED


def test_less_accurate_green_fails_accuracy() -> None:
    green = checks.ColourMetrics(requests=1000, p95_seconds=0.02, correct=9000, labelled=10_000)
    assert verdicts(green)["accuracy"] is Verdict.FAILED


def test_disabled_checks_are_not_run() -> None:
    only_errors = Checks.model_validate(
        {"latency": {"enabled": False}, "accuracy": {"enabled": False}, "health": {"enabled": False}}
    )
    assert [r.name for r in checks.built_in(only_errors, green=HEALTHY, blue=HEALTHY)] == ["errors"]


def test_overall_verdict_precedence() -> None:
    def result(v: Verdict) -> evaluate.CheckResult:
        return evaluate.CheckResult("x", v, "")

    assert evaluate.overall([result(Verdict.PASSED), result(Verdict.INCONCLUSIVE)]) is Verdict.INCONCLUSIVE
    assert evaluate.overall([result(Verdict.FAILED), result(Verdict.INCONCLUSIVE)]) is Verdict.FAILED
    assert evaluate.overall([result(Verdict.FAILED), result(Verdict.ERROR)]) is Verdict.ERROR
    assert evaluate.overall([]) is Verdict.PASSED


def test_templates_render_a_promql_window() -> None:
    rendered = queries.render(queries.REQUESTS, window_seconds=60)
    assert "[60s]" in rendered and "{window}" not in rendered
    assert "sum by (namespace, rollout, colour)" in rendered


@pytest.mark.parametrize(("age", "window"), [(0, 300), (299, 300), (301, 600), (1000, 1200), (10**9, 604_800 * 1.0)])
def test_accuracy_window_covers_the_canary(age: float, window: float) -> None:
    assert queries.accuracy_window(age) >= min(age, queries.LONGEST_ACCURACY_WINDOW)
    assert queries.accuracy_window(age) == pytest.approx(window, rel=0.2)


def test_custom_query_substitution() -> None:
    text = queries.custom(
        'up{rollout="$rollout", namespace="$namespace"}[$window]', namespace="ml", rollout="digits", window_seconds=30
    )
    assert text == 'up{rollout="digits", namespace="ml"}[30s]'


def vector(*values: tuple[dict[str, str], str]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": m, "value": [0, v]} for m, v in values]},
    }


def test_parse_vector_and_no_data() -> None:
    assert parse_response(vector(({"colour": "green"}, "0.5"))) == [Sample({"colour": "green"}, 0.5)]
    assert parse_response(vector()) is NO_DATA
    assert parse_response({"status": "success", "data": {"resultType": "scalar", "result": [0, "NaN"]}}) is NO_DATA


def test_parse_error_is_a_provider_error() -> None:
    with pytest.raises(ProviderError, match="bad_data"):
        parse_response({"status": "error", "errorType": "bad_data", "error": "parse error"})


class CountingProvider:
    """A provider that answers from a dict; counts what it is asked (a unit test of the sharing logic)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def query(self, promql: str) -> QueryResult:
        self.asked.append(promql)
        await asyncio.sleep(0.01)
        return [Sample({"rollout": "a"}, 1.0)]

    async def is_online(self) -> bool:
        return True


async def test_shared_queries_ask_once_for_many_rollouts() -> None:
    counting = CountingProvider()
    shared = SharedQueries(counting, ttl=60)
    answers = await asyncio.gather(*(shared.query("q1") for _ in range(100)), shared.query("q2"))
    assert len(answers) == 101
    assert sorted(counting.asked) == ["q1", "q2"]


def test_latency_ratio_ignores_jitter_below_the_floor() -> None:
    fast_blue = checks.ColourMetrics(requests=1000, p95_seconds=0.002)
    jittery_green = checks.ColourMetrics(requests=1000, p95_seconds=0.004)  # 2x blue, but 4 ms
    assert verdicts(jittery_green, fast_blue)["latency-vs-blue"] is Verdict.PASSED
    slow_green = checks.ColourMetrics(requests=1000, p95_seconds=0.03)
    assert verdicts(slow_green, fast_blue)["latency-vs-blue"] is Verdict.FAILED
