"""Custom checks: a user's PromQL, with ``$rollout``, ``$namespace`` and ``$window`` filled in, judged against
the check's own ``min`` and ``max`` (both inclusive); no data is Inconclusive, a query the provider cannot
answer is an Error of that check alone, and a custom check's own failure limit decides its rollback."""

from __future__ import annotations

import datetime
import math
from typing import Any

import pytest

from modelrollout.analysis import run
from modelrollout.analysis.evaluate import CheckResult, Verdict
from modelrollout.analysis.provider import NO_DATA, ProviderError, QueryResult, Sample
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import ModelRolloutStatus, Phase
from modelrollout.rollout.machine import AnalysisOutcome, Observations, decide
from modelrollout.routing.base import AppliedWeights

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
QUERY = 'sum(rate(queue_seconds{rollout="$rollout", namespace="$namespace"}[$window]))'


def make_spec(*custom: dict[str, Any], **analysis: Any) -> ModelRolloutSpec:
    return ModelRolloutSpec.model_validate(
        {
            "blue": {"model": {"uri": "file:///v1.onnx", "version": "v1"}},
            "green": {"model": {"uri": "file:///v2.onnx", "version": "v2"}},
            "traffic": {"steps": [{"weight": 10, "pause": "1m"}, {"weight": 100}]},
            "analysis": {"interval": "5s", "window": "1m", **analysis, "checks": {"custom": list(custom)}},
        }
    )


class Answers:
    """A metric provider with an answer per query text: the built-in checks' queries find no data."""

    def __init__(self, answers: dict[str, QueryResult | ProviderError]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def query(self, promql: str) -> QueryResult:
        self.asked.append(promql)
        answer = self.answers.get(promql, NO_DATA)
        if isinstance(answer, ProviderError):
            raise answer
        return answer

    async def is_online(self) -> bool:
        return True


def rendered(window: str = "60s") -> str:
    return f'sum(rate(queue_seconds{{rollout="digits", namespace="ml"}}[{window}]))'


async def custom_result(
    check: dict[str, Any], answer: QueryResult | ProviderError, *, window_seconds: float | None = None
) -> CheckResult:
    spec = make_spec({"name": "queue", "query": QUERY, **check})
    window = f"{math.ceil(window_seconds)}s" if window_seconds else "60s"
    outcome = await run.analyse(
        Answers({rendered(window): answer}),
        spec,
        namespace="ml",
        rollout="digits",
        now=NOW,
        canary_age_seconds=60,
        window_seconds=window_seconds,
    )
    [result] = [r for r in outcome.results if r.name == "queue"]
    return result


def value(number: float) -> list[Sample]:
    return [Sample({}, number)]


@pytest.mark.parametrize(
    ("bounds", "measured", "verdict", "threshold"),
    [
        pytest.param({"max": 0.5}, 0.2, Verdict.PASSED, 0.5, id="under-max"),
        pytest.param({"max": 0.5}, 0.5, Verdict.PASSED, 0.5, id="at-max"),
        pytest.param({"max": 0.5}, 0.51, Verdict.FAILED, 0.5, id="over-max"),
        pytest.param({"min": 10}, 10, Verdict.PASSED, 10, id="at-min"),
        pytest.param({"min": 10}, 9.5, Verdict.FAILED, 10, id="under-min"),
        pytest.param({"min": 10}, 1e6, Verdict.PASSED, 10, id="far-over-min"),
        pytest.param({"min": 1, "max": 5}, 3, Verdict.PASSED, None, id="between"),
        pytest.param({"min": 1, "max": 5}, 0.5, Verdict.FAILED, 1, id="under-both"),
        pytest.param({"min": 1, "max": 5}, 7, Verdict.FAILED, 5, id="over-both"),
        pytest.param({"min": -2, "max": -1}, -1.5, Verdict.PASSED, None, id="negative-bounds"),
        pytest.param({"min": -2, "max": -1}, -0.5, Verdict.FAILED, -1, id="over-negative-max"),
    ],
)
async def test_a_custom_check_judges_its_value_against_its_bounds(
    bounds: dict[str, float], measured: float, verdict: Verdict, threshold: float | None
) -> None:
    """A failed check names the bound it crossed (status and the Event show it)."""
    result = await custom_result(bounds, value(measured))
    assert (result.verdict, result.value) == (verdict, measured)
    if threshold is not None:
        assert result.threshold == threshold and f"{threshold:.4g}" in result.message


@pytest.mark.parametrize(
    "answer",
    [pytest.param(NO_DATA, id="no-series"), pytest.param([], id="empty"), pytest.param(value(math.nan), id="NaN")],
)
async def test_no_data_is_inconclusive_not_failed(answer: QueryResult) -> None:
    result = await custom_result({"min": 1}, answer)
    assert result.verdict is Verdict.INCONCLUSIVE and result.value is None


async def test_a_query_the_provider_cannot_answer_is_an_error_of_that_check_only() -> None:
    spec = make_spec(
        {"name": "queue", "query": QUERY, "max": 1},
        {"name": "other", "query": "vector(0.5)", "max": 1},
    )
    provider = Answers({rendered(): ProviderError("bad_data: parse error"), "vector(0.5)": value(0.5)})
    outcome = await run.analyse(provider, spec, namespace="ml", rollout="digits", now=NOW, canary_age_seconds=60)
    results = {r.name: r for r in outcome.results}
    assert results["queue"].verdict is Verdict.ERROR and "bad_data" in results["queue"].message
    assert results["other"].verdict is Verdict.PASSED and results["other"].value == 0.5
    assert results["errors"].verdict is Verdict.INCONCLUSIVE  # the built-in checks were measured (no data)


async def test_the_query_is_asked_with_the_rollout_namespace_and_evidence_window_filled_in() -> None:
    provider = Answers({})
    spec = make_spec({"name": "queue", "query": QUERY, "max": 1})
    await run.analyse(provider, spec, namespace="ml", rollout="digits", now=NOW, canary_age_seconds=60)
    assert rendered("60s") in provider.asked  # analysis.window
    provider.asked.clear()
    await run.analyse(
        provider, spec, namespace="ml", rollout="digits", now=NOW, canary_age_seconds=60, window_seconds=12.5
    )
    assert rendered("13s") in provider.asked  # the step's evidence window, rounded up to whole seconds
    assert not [q for q in provider.asked if "$" in q]


async def test_the_window_decides_which_answer_is_judged() -> None:
    assert (await custom_result({"max": 1}, value(3), window_seconds=20)).verdict is Verdict.FAILED


# --- in the rollout: a failed custom check rolls back at its own failure limit


def progressing(spec: ModelRolloutSpec) -> ModelRolloutStatus:
    status = ModelRolloutStatus()
    for _ in range(3):
        router = AppliedWeights(status.weights.revision, status.weights.green)
        status = decide(spec, status, Observations(resources_ready=True, router=router), NOW).status
    assert status.phase is Phase.PROGRESSING and status.weights_confirmed_at == NOW
    return status


def analysed(spec: ModelRolloutSpec, status: ModelRolloutStatus, seconds: float, queue: Verdict) -> ModelRolloutStatus:
    now = NOW + datetime.timedelta(seconds=seconds)
    results = [
        CheckResult("errors", Verdict.PASSED, "0 <= 0.005", 0.0, 0.005),
        CheckResult("queue", queue, f"queue {queue}", 2.0, 1.0),
    ]
    router = AppliedWeights(status.weights.revision, status.weights.green)
    observations = Observations(resources_ready=True, analysis=AnalysisOutcome(now, results), router=router)
    return decide(spec, status, observations, now).status


def test_a_custom_check_with_a_failure_limit_of_one_rolls_back_at_its_first_failure() -> None:
    spec = make_spec({"name": "queue", "query": QUERY, "max": 1, "failureLimit": 1}, failureLimit=3)
    status = analysed(spec, progressing(spec), 5, Verdict.FAILED)
    assert status.phase is Phase.ROLLING_BACK and status.rollback_reason == "AnalysisFailed"
    assert "queue" in status.message and status.weights.green == 0
    assert status.analysis is not None
    [queue] = [c for c in status.analysis.checks if c.name == "queue"]
    assert (queue.verdict, queue.value, queue.threshold, queue.failures) == ("Failed", 2.0, 1.0, 1)


def test_a_custom_check_without_a_limit_takes_the_rollouts_failure_limit() -> None:
    spec = make_spec({"name": "queue", "query": QUERY, "max": 1}, failureLimit=3)
    status = progressing(spec)
    for seconds in (5, 10):
        status = analysed(spec, status, seconds, Verdict.FAILED)
        assert status.phase is Phase.PROGRESSING
    assert analysed(spec, status, 15, Verdict.FAILED).phase is Phase.ROLLING_BACK


def test_a_custom_check_with_a_higher_limit_outlasts_the_rollouts_limit() -> None:
    spec = make_spec({"name": "queue", "query": QUERY, "max": 1, "failureLimit": 3})  # the rollout's limit is 2
    status = progressing(spec)
    for seconds in (5, 10):
        status = analysed(spec, status, seconds, Verdict.FAILED)
        assert status.phase is Phase.PROGRESSING
    assert analysed(spec, status, 15, Verdict.FAILED).phase is Phase.ROLLING_BACK
