"""Small pure answers about the canary position: which step, which weight, is analysis due."""

from __future__ import annotations

import datetime

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
    """Whether the analysis should run now: in an analysed phase, an interval after the last one or
    at once after the step changed."""
    if status.phase not in ANALYSED_PHASES or status.green_revision != green_revision(spec):
        return False
    last = status.analysis
    if last is None or last.step_index != status.step_index:
        return True
    return (now - last.time).total_seconds() >= spec.analysis.interval


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
