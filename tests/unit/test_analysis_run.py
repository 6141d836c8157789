"""One analysis of one rollout against a fake provider: which series count for which colour and version, over
which window, and how provider failures and custom checks become verdicts."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from modelrollout.analysis import checks, queries, run
from modelrollout.analysis.evaluate import Verdict
from modelrollout.analysis.provider import NO_DATA, ProviderError, QueryResult, Sample
from modelrollout.api.spec import ModelRolloutSpec

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
WINDOW = 60.0


def make_spec(*, golden: bool = False, checks_: dict[str, Any] | None = None) -> ModelRolloutSpec:
    green: dict[str, Any] = {"uri": "file:///v2.onnx", "version": "v2"}
    if golden:
        green["goldenSet"] = "file:///golden.json"
    return ModelRolloutSpec.model_validate(
        {
            "blue": {"model": {"uri": "file:///v1.onnx", "version": "v1"}},
            "green": {"model": green},
            "analysis": {"window": f"{WINDOW:.0f}s", "checks": checks_ or {}},
        }
    )


def ours(colour: str, value: float, **labels: str) -> Sample:
    return Sample({"namespace": "ml", "rollout": "digits", "colour": colour, **labels}, value)


class FakeProvider:
    """Answers rendered queries from a table; anything else is NO_DATA. Records what it was asked."""

    def __init__(self, answers: dict[str, QueryResult] | None = None, *, failing: str | None = None) -> None:
        self.answers = answers or {}
        self.failing = failing
        self.asked: list[str] = []

    async def query(self, promql: str) -> QueryResult:
        self.asked.append(promql)
        if self.failing is not None and self.failing in promql:
            raise ProviderError(f"Prometheus refused {promql[:20]}")
        return self.answers.get(promql, NO_DATA)

    async def is_online(self) -> bool:
        return True


def at(template: str, window: float = WINDOW) -> str:
    return queries.render(template, window_seconds=window)


def healthy_answers(window: float = WINDOW, canary_age: float = 0.0) -> dict[str, QueryResult]:
    """Both colours serving well: enough traffic and outcomes for every built-in check to pass."""
    outcomes = queries.accuracy_window(canary_age)
    return {
        at(queries.REQUESTS, window): [ours("blue", 1000), ours("green", 1000)],
        at(queries.SERVER_ERRORS, window): [ours("green", 0)],
        at(queries.P95_LATENCY, window): [ours("blue", 0.02), ours("green", 0.02)],
        at(queries.LABELLED_OUTCOMES, outcomes): [
            ours("blue", 9700, version="v1", outcome="correct"),
            ours("blue", 300, version="v1", outcome="incorrect"),
            ours("green", 9700, version="v2", outcome="correct"),
            ours("green", 300, version="v2", outcome="incorrect"),
        ],
    }


async def measure(provider: FakeProvider, spec: ModelRolloutSpec | None = None, **kwargs: Any) -> Any:
    return await run.measure(
        provider, spec or make_spec(), namespace="ml", rollout="digits", canary_age_seconds=0.0, **kwargs
    )


async def test_each_colour_sums_its_own_series_and_ignores_other_rollouts_and_namespaces() -> None:
    provider = FakeProvider(
        {
            at(queries.REQUESTS): [
                ours("green", 30),
                ours("green", 12),  # a second series of green (another router replica)
                ours("blue", 100),
                Sample({"namespace": "ml", "rollout": "other", "colour": "green"}, 1000),
                Sample({"namespace": "prod", "rollout": "digits", "colour": "green"}, 1000),
                Sample({"rollout": "digits", "colour": "green"}, 8),  # no namespace label: a single-namespace setup
            ],
            at(queries.SERVER_ERRORS): [ours("green", 2)],
            at(queries.UPSTREAM_ERRORS): [ours("green", 3), ours("blue", 1)],
            at(queries.P95_LATENCY): [ours("green", 0.25)],
        }
    )
    metrics = await measure(provider)
    assert metrics["green"].requests == 50
    assert metrics["blue"].requests == 100
    assert (metrics["green"].server_errors, metrics["blue"].server_errors) == (2, 0)
    assert (metrics["green"].upstream_errors, metrics["blue"].upstream_errors) == (3, 1)
    assert metrics["green"].p95_seconds == 0.25
    assert metrics["blue"].p95_seconds is None  # no latency is not zero latency


async def test_no_data_everywhere_is_no_traffic() -> None:
    metrics = await measure(FakeProvider())
    assert metrics["green"] == checks.ColourMetrics()
    assert metrics["blue"] == checks.ColourMetrics()


async def test_latency_and_errors_use_the_evidence_window_and_accuracy_the_whole_canary() -> None:
    provider = FakeProvider()
    await run.measure(
        provider, make_spec(), namespace="ml", rollout="digits", canary_age_seconds=1000.0, window_seconds=15.0
    )
    assert at(queries.REQUESTS, 15.0) in provider.asked
    assert at(queries.SERVER_ERRORS, 15.0) in provider.asked
    assert at(queries.P95_LATENCY, 15.0) in provider.asked
    assert at(queries.UPSTREAM_ERRORS, 15.0) in provider.asked
    assert at(queries.RESTARTS, 15.0) in provider.asked
    assert at(queries.LABELLED_OUTCOMES, queries.accuracy_window(1000.0)) in provider.asked
    assert queries.accuracy_window(1000.0) > 1000.0
    default = FakeProvider()
    await measure(default)
    assert at(queries.REQUESTS, WINDOW) in default.asked


async def test_outcomes_restarts_and_golden_count_only_for_each_colours_version() -> None:
    outcomes = queries.accuracy_window(0.0)
    provider = FakeProvider(
        {
            at(queries.LABELLED_OUTCOMES, outcomes): [
                ours("green", 90, version="v2", outcome="correct"),
                ours("green", 10, version="v2", outcome="incorrect"),
                ours("green", 500, version="v0", outcome="correct"),  # an earlier green's outcomes
                ours("blue", 70, version="v1", outcome="correct"),
                ours("blue", 30, version="v1", outcome="incorrect"),
                ours("blue", 999, version="v2", outcome="correct"),  # labelled blue, another version
            ],
            at(queries.RESTARTS): [
                ours("green", 2, version="v2"),
                ours("green", 1, version="v2"),
                ours("green", 5, version="v0"),
                ours("blue", 1, version="v1"),
            ],
            at(queries.GOLDEN_ACCURACY): [
                ours("green", 0.97, version="v2"),
                ours("green", 0.95, version="v2"),  # the worst replica counts
                ours("green", 0.10, version="v0"),
                ours("blue", 0.96, version="v1"),
            ],
        }
    )
    metrics = await measure(provider)
    green, blue = metrics["green"], metrics["blue"]
    assert (green.correct, green.labelled) == (90, 100)
    assert (blue.correct, blue.labelled) == (70, 100)
    assert (green.restarts, blue.restarts) == (3, 1)
    assert (green.golden_accuracy, blue.golden_accuracy) == (0.95, 0.96)


async def test_blue_is_measured_as_the_stable_version_once_one_was_promoted() -> None:
    outcomes = queries.accuracy_window(0.0)
    provider = FakeProvider(
        {
            at(queries.LABELLED_OUTCOMES, outcomes): [
                ours("blue", 80, version="v1", outcome="correct"),
                ours("blue", 60, version="v1.5", outcome="correct"),
                ours("blue", 40, version="v1.5", outcome="incorrect"),
            ],
        }
    )
    blue = (await measure(provider, stable_version="v1.5"))["blue"]
    assert (blue.correct, blue.labelled) == (60, 100)


async def test_series_without_a_version_label_count_for_the_colour() -> None:
    """Older model servers export no version label: their series count as the colour's current version."""
    provider = FakeProvider({at(queries.RESTARTS): [ours("green", 2)]})
    assert (await measure(provider))["green"].restarts == 2


async def test_analyse_runs_every_enabled_check_on_the_measured_metrics() -> None:
    outcome = await run.analyse(
        FakeProvider(healthy_answers()), make_spec(), namespace="ml", rollout="digits", now=NOW, canary_age_seconds=0
    )
    assert outcome.time == NOW
    assert {r.name: r.verdict for r in outcome.results} == {
        "errors": Verdict.PASSED,
        "latency": Verdict.PASSED,
        "latency-vs-blue": Verdict.PASSED,
        "accuracy": Verdict.PASSED,
        "health": Verdict.PASSED,
    }


async def test_analyse_passes_on_what_it_was_told() -> None:
    """The evidence window, blue's traffic, green's pods and blue's version reach the checks."""
    answers = healthy_answers(window=20.0)
    answers[at(queries.P95_LATENCY, 20.0)] = [ours("blue", 0.02), ours("green", 0.1)]  # 5x blue
    outcome = await run.analyse(
        FakeProvider(answers),
        make_spec(),
        namespace="ml",
        rollout="digits",
        now=NOW,
        canary_age_seconds=0,
        window_seconds=20.0,
        blue_has_traffic=False,
        pods=checks.PodHealth(pods=2, ready=0, restarts=0),
    )
    verdicts = {r.name: r.verdict for r in outcome.results}
    assert "latency-vs-blue" not in verdicts  # blue idle: no comparison
    assert verdicts["latency"] is Verdict.PASSED  # measured over the 20 s window
    assert verdicts["health"] is Verdict.FAILED  # no green pod ready
    with_blue = await run.analyse(
        FakeProvider(answers),
        make_spec(),
        namespace="ml",
        rollout="digits",
        now=NOW,
        canary_age_seconds=0,
        window_seconds=20.0,
    )
    assert {r.name: r.verdict for r in with_blue.results}["latency-vs-blue"] is Verdict.FAILED


async def test_golden_sets_are_compared_only_when_both_models_have_one() -> None:
    answers = healthy_answers()
    answers[at(queries.GOLDEN_ACCURACY)] = [ours("green", 0.90, version="v2"), ours("blue", 0.96, version="v1")]

    async def golden(spec: ModelRolloutSpec, stable_golden_set: bool = True) -> Verdict | None:
        outcome = await run.analyse(
            FakeProvider(answers),
            spec,
            namespace="ml",
            rollout="digits",
            now=NOW,
            canary_age_seconds=0,
            stable_golden_set=stable_golden_set,
        )
        return {r.name: r.verdict for r in outcome.results}.get("golden")

    assert await golden(make_spec(golden=True)) is Verdict.FAILED
    assert await golden(make_spec(golden=False)) is None
    assert await golden(make_spec(golden=True), stable_golden_set=False) is None


@pytest.mark.parametrize(
    ("golden", "stable_golden_set", "disabled", "expected"),
    [
        (False, True, {}, {"errors", "latency", "accuracy", "health"}),
        (True, True, {}, {"errors", "latency", "accuracy", "health", "golden"}),
        (True, False, {}, {"errors", "latency", "accuracy", "health"}),
        (True, True, {"golden": {"enabled": False}}, {"errors", "latency", "accuracy", "health"}),
        (False, True, {"errors": {"enabled": False}}, {"latency", "accuracy", "health"}),
        (False, True, {"latency": {"enabled": False}}, {"errors", "accuracy", "health"}),
        (False, True, {"accuracy": {"enabled": False}}, {"errors", "latency", "health"}),
        (False, True, {"health": {"enabled": False}}, {"errors", "latency", "accuracy"}),
    ],
)
async def test_a_provider_that_cannot_answer_is_an_error_on_every_enabled_check(
    golden: bool, stable_golden_set: bool, disabled: dict[str, Any], expected: set[str]
) -> None:
    outcome = await run.analyse(
        FakeProvider(failing="modelserver_requests_total"),
        make_spec(golden=golden, checks_=disabled),
        namespace="ml",
        rollout="digits",
        now=NOW,
        canary_age_seconds=0,
        stable_golden_set=stable_golden_set,
    )
    assert outcome.time == NOW
    assert {r.name for r in outcome.results} == expected
    assert {r.verdict for r in outcome.results} == {Verdict.ERROR}
    assert all("Prometheus refused" in r.message for r in outcome.results)


def custom(**check: Any) -> ModelRolloutSpec:
    return make_spec(checks_={"custom": [{"name": "queue", "query": 'q{rollout="$rollout"}[$window]', **check}]})


async def custom_result(spec: ModelRolloutSpec, answer: QueryResult | None, **kwargs: Any) -> Any:
    answers = healthy_answers(window=kwargs.get("window_seconds", WINDOW))
    query = queries.custom(
        spec.analysis.checks.custom[0].query,
        namespace="ml",
        rollout="digits",
        window_seconds=kwargs.get("window_seconds", WINDOW),
    )
    if answer is not None:
        answers[query] = answer
    provider = FakeProvider(answers, failing=kwargs.pop("failing", None))
    outcome = await run.analyse(
        provider, spec, namespace="ml", rollout="digits", now=NOW, canary_age_seconds=0, **kwargs
    )
    [result] = [r for r in outcome.results if r.name == "queue"]
    return result


@pytest.mark.parametrize(
    ("bounds", "value", "verdict"),
    [
        ({"max": 10}, 10.0, Verdict.PASSED),
        ({"max": 10}, 11.0, Verdict.FAILED),
        ({"min": 5}, 5.0, Verdict.PASSED),
        ({"min": 5}, 4.0, Verdict.FAILED),
        ({"min": 5, "max": 10}, 7.0, Verdict.PASSED),
        ({"min": 5, "max": 10}, 4.0, Verdict.FAILED),
        ({"min": 5, "max": 10}, 11.0, Verdict.FAILED),
    ],
)
async def test_a_custom_check_holds_its_value_within_its_bounds(
    bounds: dict[str, float], value: float, verdict: Verdict
) -> None:
    result = await custom_result(custom(**bounds), [Sample({}, value)])
    assert result.verdict is verdict
    assert result.value == value


async def test_a_custom_check_failing_its_maximum_names_the_maximum() -> None:
    result = await custom_result(custom(min=5, max=10), [Sample({}, 11.0)])
    assert result.threshold == 10


async def test_a_custom_check_without_data_is_inconclusive_and_one_that_cannot_be_asked_is_an_error() -> None:
    assert (await custom_result(custom(max=10), None)).verdict is Verdict.INCONCLUSIVE
    assert (await custom_result(custom(max=10), [])).verdict is Verdict.INCONCLUSIVE
    assert (await custom_result(custom(min=1, max=10), None)).verdict is Verdict.INCONCLUSIVE
    failed = await custom_result(custom(max=10), None, failing="q{")
    assert failed.verdict is Verdict.ERROR
    assert "Prometheus refused" in failed.message


async def test_a_custom_check_reads_the_steps_evidence_window() -> None:
    result = await custom_result(custom(max=10), [Sample({}, 3.0)], window_seconds=20.0)
    assert result.verdict is Verdict.PASSED  # answered at q{rollout="digits"}[20s], not at the 60 s window


async def test_analyse_compares_golden_sets_unless_told_the_stable_model_has_none() -> None:
    answers = healthy_answers()
    answers[at(queries.GOLDEN_ACCURACY)] = [ours("green", 0.96, version="v2"), ours("blue", 0.96, version="v1")]
    outcome = await run.analyse(
        FakeProvider(answers), make_spec(golden=True), namespace="ml", rollout="digits", now=NOW, canary_age_seconds=0
    )
    assert {r.name: r.verdict for r in outcome.results}["golden"] is Verdict.PASSED


async def test_analyse_compares_green_with_the_stable_version_on_blue() -> None:
    answers = healthy_answers()
    answers[at(queries.LABELLED_OUTCOMES, queries.accuracy_window(0))] = [
        ours("green", 9000, version="v2", outcome="correct"),
        ours("green", 1000, version="v2", outcome="incorrect"),
        ours("blue", 9700, version="v1.5", outcome="correct"),
        ours("blue", 300, version="v1.5", outcome="incorrect"),
        ours("blue", 5000, version="v1", outcome="correct"),  # spec.blue's model, no longer served
        ours("blue", 5000, version="v1", outcome="incorrect"),
    ]
    outcome = await run.analyse(
        FakeProvider(answers),
        make_spec(),
        namespace="ml",
        rollout="digits",
        now=NOW,
        canary_age_seconds=0,
        stable_version="v1.5",
    )
    assert {r.name: r.verdict for r in outcome.results}["accuracy"] is Verdict.FAILED
