"""Typed ModelRollout status: everything needed to resume after an operator restart.

Times are RFC 3339 strings in YAML and timezone-aware datetimes here.
"""

from __future__ import annotations

import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

HISTORY_LIMIT = 20


class Phase(StrEnum):
    PENDING = "Pending"
    """Waiting for the blue and green model servers to become ready."""
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTING = "Promoting"
    """All traffic is moving to green; waiting for the router to confirm."""
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


class CheckStatus(StatusModel):
    name: str
    verdict: str
    message: str = ""
    value: float | None = None
    threshold: float | None = None
    failures: int = 0
    """Consecutive Failed verdicts of this check."""


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


class ModelRolloutStatus(StatusModel):
    phase: Phase = Phase.PENDING
    step_index: int = 0
    weights: Weights = Field(default_factory=Weights)
    """The weights the operator wants the router to apply."""
    applied_green_weight: int | None = None
    """The green weight the router reports as applied (None: not known)."""
    started_at: datetime.datetime | None = None
    """When the canary of the current green revision started (analysis windows count from here)."""
    step_started_at: datetime.datetime | None = None
    green_revision: str = ""
    """Hash of spec.green when this canary started: a change restarts the canary."""
    observed_generation: int = 0
    analysis: AnalysisStatus | None = None
    consecutive_errors: int = 0
    last_command_id: str = ""
    rollback_reason: str = ""
    history: list[DecisionRecord] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    message: str = ""

    def to_api(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json", exclude_none=True)
