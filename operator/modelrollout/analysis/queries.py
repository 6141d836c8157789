"""PromQL templates of the built-in checks, over the model server's metrics contract.

Every template is grouped by (namespace, rollout, colour): one answer serves every rollout whose window
is the same, so the queries an interval sends do not grow with the number of rollouts.
"""

from __future__ import annotations

import math

# Feedback calls are not inference: they count neither as requests nor towards latency.
REQUESTS = 'sum by (namespace, rollout, colour) (increase(modelserver_requests_total{endpoint!="feedback"}[{window}]))'
SERVER_ERRORS = (
    "sum by (namespace, rollout, colour) "
    '(increase(modelserver_requests_total{endpoint!="feedback", code_class="5xx"}[{window}]))'
)
P95_LATENCY = (
    "histogram_quantile(0.95, sum by (namespace, rollout, colour, le) "
    '(rate(modelserver_request_duration_seconds_bucket{endpoint!="feedback"}[{window}])))'
)
UPSTREAM_ERRORS = "sum by (namespace, rollout, colour) (increase(modelrouter_upstream_errors_total[{window}]))"
"""Requests the router could not get answered (connection refused or reset, 502/504): a dead or crashing
colour's failures, which its own counters never see."""
RESTARTS = "sum by (namespace, rollout, colour) (changes(modelserver_start_time_seconds[{window}]))"
"""Model-server processes that started again within the window (crashes, OOM kills, failed liveness)."""
LABELLED_OUTCOMES = (
    "sum by (namespace, rollout, colour, version, outcome) "
    '(increase(modelserver_labelled_outcomes_total{source="feedback"}[{window}]))'
)
"""Feedback only: each labelled outcome is a new sample. Golden-set outcomes re-score the same items, so
they are compared by the golden check instead of counted as evidence here."""
GOLDEN_ACCURACY = "min by (namespace, rollout, colour, version) (modelserver_golden_accuracy_ratio)"
"""Each colour's accuracy on its golden set (the worst replica): a fixed set, so an exact comparison."""

SHORTEST_ACCURACY_WINDOW = 300.0
LONGEST_ACCURACY_WINDOW = 7 * 24 * 3600.0


def promql_duration(seconds: float) -> str:
    return f"{max(1, math.ceil(seconds))}s"


def render(template: str, *, window_seconds: float) -> str:
    return template.replace("{window}", promql_duration(window_seconds))


def accuracy_window(canary_age_seconds: float) -> float:
    """A window covering the whole canary so far, rounded up to a power of two times five minutes.

    Rounding lets rollouts of similar age share one query; the extra older samples it takes in belong
    to the same model versions (the query keeps the version label), so they are the same evidence.
    """
    window = SHORTEST_ACCURACY_WINDOW
    while window < canary_age_seconds and window < LONGEST_ACCURACY_WINDOW:
        window *= 2
    return window


def custom(query: str, *, namespace: str, rollout: str, window_seconds: float) -> str:
    """A user's PromQL with ``$namespace``, ``$rollout`` and ``$window`` substituted."""
    return (
        query.replace("$namespace", namespace)
        .replace("$rollout", rollout)
        .replace("$window", promql_duration(window_seconds))
    )
