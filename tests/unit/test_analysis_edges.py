"""Analysis at its edges: verdicts exactly at a threshold or a sample minimum, the messages and values a user
reads in status.analysis, Prometheus answers of every shape, and shared queries over time and failures."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from modelrollout.analysis import checks, evaluate, provider, queries
from modelrollout.analysis.evaluate import CheckResult, Verdict
from modelrollout.analysis.prometheus import parse_response
from modelrollout.analysis.provider import NO_DATA, ProviderError, QueryResult, Sample, SharedQueries
from modelrollout.api.spec import Checks

CHECKS = Checks()


def test_at_most_and_at_least_pass_at_the_threshold_and_say_so() -> None:
    assert evaluate.at_most("latency", 0.15, 0.15, samples=20, min_samples=20, unit="s") == CheckResult(
        "latency", Verdict.PASSED, "0.15s <= 0.15s", 0.15, 0.15
    )
    assert evaluate.at_most("latency", 0.2, 0.15, samples=20, min_samples=20, unit="s") == CheckResult(
        "latency", Verdict.FAILED, "0.2s > 0.15s", 0.2, 0.15
    )
    assert evaluate.at_least("queue", 5.0, 5.0, samples=1, min_samples=1) == CheckResult(
        "queue", Verdict.PASSED, "5 >= 5", 5.0, 5.0
    )
    assert evaluate.at_least("queue", 4.0, 5.0, samples=1, min_samples=1) == CheckResult(
        "queue", Verdict.FAILED, "4 < 5", 4.0, 5.0
    )


def test_too_little_data_is_inconclusive_and_says_what_is_missing() -> None:
    assert evaluate.at_least("queue", None, 5.0, samples=9, min_samples=1) == CheckResult(
        "queue", Verdict.INCONCLUSIVE, "no data", None, 5.0
    )
    assert evaluate.at_most("errors", math.nan, 0.1, samples=50, min_samples=20).verdict is Verdict.INCONCLUSIVE
    assert evaluate.at_least("queue", 9.0, 5.0, samples=19, min_samples=20) == CheckResult(
        "queue", Verdict.INCONCLUSIVE, "19 samples, need 20", 9.0, 5.0
    )


def test_an_error_is_not_a_verdict_on_the_model() -> None:
    assert evaluate.error("latency", "Prometheus unreachable") == CheckResult(
        "latency", Verdict.ERROR, "Prometheus unreachable"
    )


def result(name: str, green: checks.ColourMetrics, blue: checks.ColourMetrics, **options: Any) -> CheckResult:
    [found] = [
        r for r in checks.built_in(options.pop("checks", CHECKS), green=green, blue=blue, **options) if r.name == name
    ]
    return found


def test_one_failed_request_of_one_is_a_full_error_rate() -> None:
    lone = Checks.model_validate({"errors": {"minRequests": 1}})
    errors = result("errors", checks.ColourMetrics(requests=1, server_errors=1), checks.ColourMetrics(), checks=lone)
    assert (errors.verdict, errors.value) == (Verdict.FAILED, 1.0)


def test_latency_messages_carry_their_units() -> None:
    green = checks.ColourMetrics(requests=100, p95_seconds=0.05)
    blue = checks.ColourMetrics(requests=100, p95_seconds=0.02)
    assert result("latency", green, blue).message == "0.05s <= 0.15s"
    assert result("latency-vs-blue", green, blue).message == "2.5x > 1.5x"


def test_no_ratio_to_blue_without_blues_latency() -> None:
    green = checks.ColourMetrics(requests=100, p95_seconds=0.05)
    ratio = result("latency-vs-blue", green, checks.ColourMetrics(requests=100))
    assert (ratio.verdict, ratio.value) == (Verdict.INCONCLUSIVE, None)
    no_floor = Checks.model_validate({"latency": {"ratioFloorSeconds": 0}})
    instant_blue = checks.ColourMetrics(requests=100, p95_seconds=0.0)
    ratio = result("latency-vs-blue", green, instant_blue, checks=no_floor)
    assert (ratio.verdict, ratio.value) == (Verdict.INCONCLUSIVE, None)


def test_health_reports_restarts_and_readiness() -> None:
    green = checks.ColourMetrics()
    assert checks.health(CHECKS, green=green, pods=None) == CheckResult(
        "health", Verdict.PASSED, "0 restarts", 0.0, 0.0
    )
    ready = checks.health(CHECKS, green=green, pods=checks.PodHealth(pods=2, ready=1, restarts=0))
    assert ready == CheckResult("health", Verdict.PASSED, "0 restarts, 1/2 pods ready", 0.0, 0.0)
    tolerant = Checks.model_validate({"health": {"maxRestarts": 2}})
    restarted = checks.health(tolerant, green=checks.ColourMetrics(restarts=3), pods=None)
    assert restarted == CheckResult(
        "health", Verdict.FAILED, "green restarted 3x during the canary (at most 2)", 3.0, 2.0
    )


def test_a_single_pod_that_is_not_ready_fails_health_but_no_pods_yet_does_not() -> None:
    dead = checks.health(CHECKS, green=checks.ColourMetrics(), pods=checks.PodHealth(pods=1, ready=0, restarts=0))
    assert dead == CheckResult("health", Verdict.FAILED, "none of green's 1 pods is ready", 0.0, 0)
    scaled_to_zero = checks.health(
        CHECKS, green=checks.ColourMetrics(), pods=checks.PodHealth(pods=0, ready=0, restarts=0)
    )
    assert scaled_to_zero.verdict is Verdict.PASSED


def test_golden_passes_exactly_at_the_tolerance_and_reports_the_difference() -> None:
    blue = checks.ColourMetrics(golden_accuracy=0.5)
    tolerant = Checks.model_validate({"golden": {"tolerance": 0.0625}})
    at_tolerance = checks.golden(tolerant, green=checks.ColourMetrics(golden_accuracy=0.4375), blue=blue)
    assert at_tolerance == CheckResult(
        "golden", Verdict.PASSED, "golden accuracy green 0.4375 - blue 0.5000 = -0.0625 >= -0.0625", -0.0625, -0.0625
    )
    worse = checks.golden(CHECKS, green=checks.ColourMetrics(golden_accuracy=0.25), blue=blue)
    assert worse == CheckResult(
        "golden", Verdict.FAILED, "golden accuracy green 0.2500 - blue 0.5000 = -0.2500 < -0.01", -0.25, -0.01
    )


def test_golden_says_which_colour_has_not_scored_yet() -> None:
    scored = checks.ColourMetrics(golden_accuracy=0.9)
    assert checks.golden(CHECKS, green=checks.ColourMetrics(), blue=scored) == CheckResult(
        "golden", Verdict.INCONCLUSIVE, "no golden-set accuracy from green yet"
    )
    assert checks.golden(CHECKS, green=scored, blue=checks.ColourMetrics()).message == (
        "no golden-set accuracy from blue yet"
    )


def test_accuracy_reports_the_estimated_difference_against_the_tolerance() -> None:
    green = checks.ColourMetrics(correct=9000, labelled=10_000)
    blue = checks.ColourMetrics(correct=9700, labelled=10_000)
    accuracy = checks.accuracy(CHECKS, green=green, blue=blue)
    assert accuracy.verdict is Verdict.FAILED
    assert accuracy.value == pytest.approx(-0.07, abs=1e-3)
    assert accuracy.threshold == -0.01
    assert accuracy.message.startswith("green is worse than blue by more than 0.01: delta -0.0700")
    too_few = checks.accuracy(CHECKS, green=checks.ColourMetrics(), blue=blue)
    assert (too_few.verdict, too_few.value, too_few.threshold) == (Verdict.INCONCLUSIVE, None, -0.01)
    assert too_few.message.startswith("too few labelled samples")


# -- Prometheus answers ---------------------------------------------------------------------------------------


def test_a_refused_query_names_the_error_type_and_message() -> None:
    with pytest.raises(ProviderError) as refused:
        parse_response({"status": "error", "errorType": "bad_data", "error": "1:5: parse error"})
    assert str(refused.value) == "query failed: bad_data 1:5: parse error"
    with pytest.raises(ProviderError) as bare:
        parse_response({"status": "error", "error": "timeout"})
    assert str(bare.value) == "query failed:  timeout"
    with pytest.raises(ProviderError) as unknown:
        parse_response({"status": "weird"})
    assert str(unknown.value) == "query failed:  {'status': 'weird'}"


def test_answers_of_other_shapes() -> None:
    assert parse_response({"status": "success", "data": {"resultType": "scalar", "result": [0, "2.5"]}}) == [
        Sample({}, 2.5)
    ]
    unlabelled = {"status": "success", "data": {"resultType": "vector", "result": [{"value": [0, "3"]}]}}
    assert parse_response(unlabelled) == [Sample({}, 3.0)]
    with pytest.raises(ProviderError) as matrix:
        parse_response({"status": "success", "data": {"resultType": "matrix", "result": []}})
    assert str(matrix.value) == "unsupported result type 'matrix': analysis queries must return an instant vector"
    with pytest.raises(ProviderError, match="unsupported result type None"):
        parse_response({"status": "success"})


def test_no_data_reads_as_such() -> None:
    assert repr(NO_DATA) == "NO_DATA"


# -- shared queries -----------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class Answering:
    def __init__(self, *, failing: bool = False) -> None:
        self.asked = 0
        self.failing = failing

    async def query(self, promql: str) -> QueryResult:
        self.asked += 1
        await asyncio.sleep(0)
        if self.failing:
            raise ProviderError("unreachable")
        return [Sample({}, float(self.asked))]

    async def is_online(self) -> bool:
        return not self.failing


async def test_an_answer_is_shared_for_one_second_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(provider, "time", clock)
    answering = Answering()
    shared = SharedQueries(answering)
    assert shared.sent == 0
    assert await shared.query("q") == [Sample({}, 1.0)]
    clock.now += 0.999
    assert await shared.query("q") == [Sample({}, 1.0)]
    clock.now += 0.001  # exactly the ttl: asked again
    assert await shared.query("q") == [Sample({}, 2.0)]
    assert (answering.asked, shared.sent) == (2, 2)
    assert await shared.is_online()


async def test_a_failed_query_fails_every_waiter_and_is_asked_again() -> None:
    failing = Answering(failing=True)
    shared = SharedQueries(failing, ttl=60)
    outcomes = await asyncio.gather(shared.query("q"), shared.query("q"), return_exceptions=True)
    assert [type(o) for o in outcomes] == [ProviderError, ProviderError]
    assert failing.asked == 1
    with pytest.raises(ProviderError, match="unreachable"):
        await shared.query("q")  # not cached: asked again
    assert failing.asked == 2 and shared.sent == 2
    assert not await shared.is_online()


# -- query windows ------------------------------------------------------------------------------------------


def test_windows_are_whole_seconds_of_at_least_one() -> None:
    assert queries.promql_duration(0.2) == "1s"
    assert queries.promql_duration(1.2) == "2s"
    assert queries.accuracy_window(queries.SHORTEST_ACCURACY_WINDOW) == queries.SHORTEST_ACCURACY_WINDOW
    assert queries.accuracy_window(queries.SHORTEST_ACCURACY_WINDOW + 1) == 2 * queries.SHORTEST_ACCURACY_WINDOW
