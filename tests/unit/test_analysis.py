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
    }


def test_no_traffic_is_inconclusive_not_failed() -> None:
    result = verdicts(checks.ColourMetrics())
    assert set(result.values()) == {Verdict.INCONCLUSIVE}


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
    only_errors = Checks.model_validate({"latency": {"enabled": False}, "accuracy": {"enabled": False}})
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
