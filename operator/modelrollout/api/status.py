"""Typed ModelRollout status: everything needed to resume after an operator restart.

Times are RFC 3339 strings in YAML and timezone-aware datetimes here.
"""

from __future__ import annotations

import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from modelrollout.api.spec import ModelRef, ServerSpec

HISTORY_LIMIT = 20


class Phase(StrEnum):
    PENDING = "Pending"
    """Waiting for the blue and green model servers to become ready."""
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTING = "Promoting"
    """All traffic is moving to green; once the router confirms, green's model becomes the stable one and
    blue is redeployed with it."""
    FINALIZING = "Finalizing"
    """Blue runs the promoted model: traffic moves back to blue, green is scaled down once confirmed."""
    PROMOTED = "Promoted"
    ROLLING_BACK = "RollingBack"
    """All traffic is moving back to blue; waiting for the router to confirm."""
    ROLLED_BACK = "RolledBack"
    ABORTED = "Aborted"
    FAILED = "Failed"
    """The spec cannot be rolled out (for example, no weights); fix the spec."""


TERMINAL_PHASES = frozenset({Phase.PROMOTED, Phase.ROLLED_BACK, Phase.ABORTED, Phase.FAILED})


class StatusModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Weights(StatusModel):
    blue: int = 100
    green: int = 0
    revision: int = 0
    """Raised by one each time the wanted weights change; the router reports it back with what it applied,
    so only a report for this revision confirms these weights."""


class StableStatus(StatusModel):
    """The model blue serves: spec.blue until a promotion, then the promoted green. Traffic never goes to
    a model older than this one."""

    model: ModelRef
    server: ServerSpec
    """The server settings it runs with (replicas always follow spec.server.replicas)."""
    revision: str
    """The green revision it was promoted as ("" while it is the initial spec.blue)."""
    promoted_at: datetime.datetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_fields_only(cls, data: Any) -> Any:
        """A copy written by another operator version may carry fields this one does not know: they are
        left out rather than make the whole status (or blue's record) unreadable."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key, kind in (("model", ModelRef), ("server", ServerSpec)):
            value = data.get(key)
            if isinstance(value, dict):
                known = set(kind.model_fields) | {to_camel(name) for name in kind.model_fields}
                data[key] = {name: item for name, item in value.items() if name in known}
        return data


class CheckStatus(StatusModel):
    name: str
    verdict: str
    message: str = ""
    value: float | None = None
    threshold: float | None = None
    failures: int = 0
    """Failed verdicts of this check during the canary (a Passed one in between does not reset it)."""


class AnalysisStatus(StatusModel):
    time: datetime.datetime
    verdict: str
    step_index: int
    checks: list[CheckStatus] = Field(default_factory=list)


class DecisionRecord(StatusModel):
    time: datetime.datetime
    action: str
    phase: Phase
    step_index: int
    green_weight: int
    reason: str
    message: str


class Condition(StatusModel):
    type: str
    status: str
    reason: str
    message: str = ""
    last_transition_time: datetime.datetime


class GuardTripStatus(StatusModel):
    """A trip of the builtin router's data-plane guard that the operator has read (routing.guard): the
    router keeps green at 0% for this candidate until this revision is here."""

    revision: int
    """The weights revision the router held at 0% green."""
    green_revision: str = ""
    errors: int = 0
    requests: int = 0
    window_seconds: float = 0.0
    max_error_rate: float = 0.0
    at: str = ""
    """When the router tripped (its clock, RFC 3339)."""
    rolled_back: bool = False
    """True when the canary rolled back for it (reason GuardTripped); False when it no longer mattered (the
    canary had already ended, or another candidate had replaced it)."""


class ModelRolloutStatus(StatusModel):
    """Written by the operator; everything it needs to resume after a restart."""

    phase: Phase = Phase.PENDING
    """Where the rollout stands: Pending, Progressing, Paused, Promoting, Finalizing, Promoted, RollingBack,
    RolledBack, Aborted or Failed."""
    step_index: int = 0
    """The index of the current step in spec.traffic.steps (0 is the first)."""
    weights: Weights = Field(default_factory=Weights)
    """The weights the operator wants the router to apply: blue, green and their revision, raised on every
    change."""
    weights_changed_at: datetime.datetime | None = None
    """When the current weights revision was asked for."""
    applied_green_weight: int | None = None
    """The green weight the router reports as applied (null: not known)."""
    applied_revision: int | None = None
    """The weights revision the router reports as applied (null: no usable report)."""
    weights_confirmed_at: datetime.datetime | None = None
    """When the router first reported the current weights revision applied (null: not yet)."""
    router_stalled: bool = False
    """The router has not confirmed the current weights within spec.traffic.confirmDeadline."""
    stable: StableStatus | None = None
    """The model blue serves: spec.blue until a promotion, then the promoted green (its model, server settings
    and when it was promoted). Traffic never goes to a model older than this one."""
    invalid_spec: str = ""
    """Why the current spec cannot be rolled out ("" when it can): traffic stays where it was, except that a
    canary in flight rolls back."""
    started_at: datetime.datetime | None = None
    """When the canary of the current green revision started (analysis windows count from here)."""
    step_started_at: datetime.datetime | None = None
    """When the current step began (or was resumed): its pause counts from the later of this and
    weightsConfirmedAt."""
    green_revision: str = ""
    """Hash of spec.green when this canary started: a change restarts the canary."""
    observed_generation: int = 0
    """The metadata.generation of the spec this status was written for."""
    analysis: AnalysisStatus | None = None
    """The latest analysis result: its verdict, and each check's value, limit and evidence, with the time of a
    round that found it (a round that finds exactly the stored result is not written again; the operator's
    modelrollout_analysis_duration_seconds_count counts every round)."""
    consecutive_errors: int = 0
    """Consecutive reconciles or analyses that failed for lack of an answer (metrics provider, API server,
    router): at spec.analysis.consecutiveErrorLimit (reconciles: failing for at least that many analysis
    intervals) a canary in flight rolls back to the stable model."""
    errors_since: datetime.datetime | None = None
    """When the current run of consecutive errors began (null: no error now)."""
    last_error: str = ""
    """The latest failure to reconcile or analyse ("" after a success)."""
    last_command_id: str = ""
    """The modelrollout.dev/command-id of the last command carried out (a command with the same id is not
    carried out twice)."""
    rollback_reason: str = ""
    """Why the last rollback happened (AnalysisFailed, GuardTripped, ProgressDeadlineExceeded, Aborted, ...)."""
    guard_trip: GuardTripStatus | None = None
    """The last trip of the router's guard the operator has read (acknowledged: the router follows the
    weights again once it is here)."""
    history: list[DecisionRecord] = Field(default_factory=list)
    """The latest decisions (time, action, phase, step, weights, reason), newest last."""
    conditions: list[Condition] = Field(default_factory=list)
    """Kubernetes conditions: Ready (promoted), Progressing and Degraded, each with reason, message and last
    transition time."""
    message: str = ""
    """What is happening now, in a sentence (the Message column of kubectl get)."""

    def to_api(self) -> dict[str, Any]:
        """The camelCase dict to write. Fields that are None are written as null, so that a merge patch
        clears them instead of keeping their old value (inside lists, which are replaced whole, they are
        left out)."""
        return _with_nulls(self, self.model_dump(by_alias=True, mode="json", exclude_none=True))


def without_nulls(value: Any) -> Any:
    """What the API server keeps of a merge patch: the same dict with null fields removed."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def _with_nulls(model: BaseModel, dumped: dict[str, Any]) -> dict[str, Any]:
    for name, info in type(model).model_fields.items():
        key = info.alias or name
        value = getattr(model, name)
        if value is None:
            dumped[key] = None
        elif isinstance(value, BaseModel) and isinstance(dumped.get(key), dict):
            _with_nulls(value, dumped[key])
    return dumped
