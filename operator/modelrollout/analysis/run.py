"""One analysis of one rollout: ask the provider, pick this rollout's series, evaluate every check."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from modelrollout.analysis import checks, evaluate, queries
from modelrollout.analysis.evaluate import CheckResult
from modelrollout.analysis.provider import MetricProvider, NoData, ProviderError, QueryResult, Sample, Samples
from modelrollout.api.constants import BLUE, GREEN
from modelrollout.api.spec import CustomCheck, ModelRolloutSpec
from modelrollout.rollout.machine import AnalysisOutcome


def _ours(result: QueryResult, *, namespace: str, rollout: str) -> Sequence[Sample]:
    if isinstance(result, NoData):
        return []
    if isinstance(result, Samples):
        return result.of(namespace=namespace, rollout=rollout)
    return [
        s for s in result if s.labels.get("rollout") == rollout and s.labels.get("namespace", namespace) == namespace
    ]


def _by_colour(samples: Sequence[Sample]) -> dict[str, float]:
    values: dict[str, float] = {}
    for sample in samples:
        colour = sample.labels.get("colour", "")
        values[colour] = values.get(colour, 0.0) + sample.value
    return values


async def measure(
    provider: MetricProvider,
    spec: ModelRolloutSpec,
    *,
    namespace: str,
    rollout: str,
    canary_age_seconds: float,
    stable_version: str | None = None,
    window_seconds: float | None = None,
) -> dict[str, checks.ColourMetrics]:
    """Per-colour metrics of one rollout (latency, errors and restarts over ``window_seconds``, default
    ``analysis.window``; accuracy over the canary); raises ProviderError when the provider cannot answer."""
    window = window_seconds or spec.analysis.window

    async def per_colour(template: str, window_seconds: float) -> Sequence[Sample]:
        answer = await provider.query(queries.render(template, window_seconds=window_seconds))
        return _ours(answer, namespace=namespace, rollout=rollout)

    requests = _by_colour(await per_colour(queries.REQUESTS, window))
    errors = _by_colour(await per_colour(queries.SERVER_ERRORS, window))
    p95 = _by_colour(await per_colour(queries.P95_LATENCY, window))
    upstream_errors = _by_colour(await per_colour(queries.UPSTREAM_ERRORS, window))
    outcomes = await per_colour(queries.LABELLED_OUTCOMES, queries.accuracy_window(canary_age_seconds))
    restarts = await per_colour(queries.RESTARTS, window)
    golden = await per_colour(queries.GOLDEN_ACCURACY, window)
    versions = {BLUE: stable_version or spec.blue.model.version, GREEN: spec.green.model.version}
    metrics = {}
    for colour in (BLUE, GREEN):

        def this_version(samples: Sequence[Sample], colour: str = colour) -> list[Sample]:
            version = versions[colour]
            return [
                o for o in samples if o.labels.get("colour") == colour and o.labels.get("version", version) == version
            ]

        mine = this_version(outcomes)
        golden_values = [g.value for g in this_version(golden)]
        metrics[colour] = checks.ColourMetrics(
            requests=requests.get(colour, 0.0),
            server_errors=errors.get(colour, 0.0),
            p95_seconds=p95.get(colour),
            correct=sum(o.value for o in mine if o.labels.get("outcome") == "correct"),
            labelled=sum(o.value for o in mine),
            upstream_errors=upstream_errors.get(colour, 0.0),
            restarts=sum(r.value for r in this_version(restarts)),
            golden_accuracy=min(golden_values) if golden_values else None,
        )
    return metrics


async def analyse(
    provider: MetricProvider,
    spec: ModelRolloutSpec,
    *,
    namespace: str,
    rollout: str,
    now: datetime.datetime,
    canary_age_seconds: float,
    blue_has_traffic: bool = True,
    pods: checks.PodHealth | None = None,
    stable_version: str | None = None,
    stable_golden_set: bool = True,
    window_seconds: float | None = None,
) -> AnalysisOutcome:
    """Every enabled check of ``spec`` for this rollout; provider failures become Error verdicts."""
    enabled = spec.analysis.checks
    golden_set = spec.green.model.golden_set is not None and stable_golden_set  # compared only when both have one
    try:
        metrics = await measure(
            provider,
            spec,
            namespace=namespace,
            rollout=rollout,
            canary_age_seconds=canary_age_seconds,
            stable_version=stable_version,
            window_seconds=window_seconds,
        )
    except ProviderError as error:
        names = [
            name
            for name, on in (
                ("errors", enabled.errors.enabled),
                ("latency", enabled.latency.enabled),
                ("accuracy", enabled.accuracy.enabled),
                ("health", enabled.health.enabled),
                ("golden", enabled.golden.enabled and golden_set),
            )
            if on
        ]
        return AnalysisOutcome(now, [evaluate.error(name, str(error)) for name in names])
    results = checks.built_in(
        enabled,
        green=metrics[GREEN],
        blue=metrics[BLUE],
        blue_has_traffic=blue_has_traffic,
        pods=pods,
        golden_set=golden_set,
    )
    results += [
        await _custom(
            provider, check, namespace=namespace, rollout=rollout, window_seconds=window_seconds or spec.analysis.window
        )
        for check in spec.analysis.checks.custom
    ]
    return AnalysisOutcome(now, results)


async def _custom(
    provider: MetricProvider, check: CustomCheck, *, namespace: str, rollout: str, window_seconds: float
) -> CheckResult:
    """A custom check over the step's evidence window (``$window``), as the built-in ones."""
    promql = queries.custom(check.query, namespace=namespace, rollout=rollout, window_seconds=window_seconds)
    try:
        answer = await provider.query(promql)
    except ProviderError as error:
        return evaluate.error(check.name, str(error))
    value = None if isinstance(answer, NoData) or not answer else answer[0].value
    if check.max is not None:
        result = evaluate.at_most(check.name, value, check.max, samples=1, min_samples=0)
        if result.verdict is not evaluate.Verdict.PASSED or check.min is None:
            return result
    assert check.min is not None
    return evaluate.at_least(check.name, value, check.min, samples=1, min_samples=0)
