"""Small pure answers about the canary position: which step, which weight, is analysis due."""

from __future__ import annotations

import datetime
import math

from modelrollout.api.spec import ModelRolloutSpec, Step, serving_revision
from modelrollout.api.status import ModelRolloutStatus, Phase

ANALYSED_PHASES = frozenset({Phase.PROGRESSING, Phase.PAUSED})


def step_weight(steps: list[Step], index: int) -> int:
    """Green weight at step ``index``: the last weight set at or before it (0 before any)."""
    for step in reversed(steps[: index + 1]):
        if step.weight is not None:
            return step.weight
    return 0


def green_revision(spec: ModelRolloutSpec) -> str:
    """What makes green a different candidate: its model and the server it runs in (replicas excluded:
    scaling is not a new candidate)."""
    return serving_revision(spec.green.model, spec.server)


def step_index(steps: list[Step], index: int) -> int:
    """``index`` within ``steps``: a list shortened mid-rollout leaves the canary at its last step."""
    return max(0, min(index, len(steps) - 1))


def analysis_due(spec: ModelRolloutSpec, status: ModelRolloutStatus, now: datetime.datetime) -> bool:
    """Whether the analysis should run now: in an analysed phase, at once after the step changed, and
    otherwise at ``next_round`` after the last one."""
    if status.phase not in ANALYSED_PHASES or status.green_revision != green_revision(spec):
        return False
    last = status.analysis
    if last is None or last.step_index != status.step_index:
        return True
    return now >= next_round(last.time, spec.analysis.interval)


def next_round(last: datetime.datetime, interval: float) -> datetime.datetime:
    """When the analysis round after one taken at ``last`` is due (a pure function): at the first multiple of
    ``interval`` seconds since the Unix epoch that is at least half an interval after ``last``; one interval
    after it in the steady state. Rollouts with the same interval so take their rounds in the same second,
    whenever each started, and share each query's answer (analysis.provider.SharedQueries): the queries per
    round do not grow with the number of rollouts. A round off that grid (a new step is analysed at once)
    is followed by one on it, half an interval to an interval and a half later."""
    earliest = last.timestamp() + interval / 2
    return datetime.datetime.fromtimestamp(math.ceil(earliest / interval) * interval, datetime.UTC)


def seconds_since(moment: datetime.datetime | None, now: datetime.datetime) -> float:
    return 0.0 if moment is None else max(0.0, (now - moment).total_seconds())


def evidence_window(spec: ModelRolloutSpec, status: ModelRolloutStatus, now: datetime.datetime) -> float:
    """Seconds of traffic the latency and error checks look at: ``analysis.window``, but never further back
    than the moment the current step's weights went live (nor the canary's start), so that a step passes
    on evidence of its own weight and a new green is not judged on the errors of the green before it."""
    moments = [t for t in (status.started_at, status.step_started_at, status.weights_confirmed_at) if t is not None]
    if not moments:
        return spec.analysis.window
    return max(1.0, min(spec.analysis.window, seconds_since(max(moments), now)))
