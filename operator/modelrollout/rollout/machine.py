"""The rollout state machine: ``decide(spec, status, observations, now) -> Decision``. No I/O.

Every rule of the canary lives here; handlers gather the observations and apply the decision. Rules:
- a new or changed green starts the canary from step 0 (Pending until both colours are ready);
- a step is done when its pause has elapsed and an analysis taken at this step (after it began) Passed;
  a ``manual`` step then waits for a promote command; after the last step all traffic moves to green;
- Inconclusive holds the step, never advances; the progress deadline bounds the holding;
- a check Failed ``failure_limit`` times in a row, or Prometheus unreachable ``consecutive_error_limit``
  times in a row, rolls back: all traffic to blue, confirmed by the router before RolledBack.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from enum import StrEnum

from modelrollout.analysis.evaluate import CheckResult, Verdict, overall
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import (
    HISTORY_LIMIT,
    TERMINAL_PHASES,
    AnalysisStatus,
    CheckStatus,
    Condition,
    DecisionRecord,
    ModelRolloutStatus,
    Phase,
    Weights,
)
from modelrollout.rollout import steps
from modelrollout.rollout.commands import Command, CommandName


class Action(StrEnum):
    INITIALIZE = "Initialize"
    RESTART = "Restart"
    WAIT = "Wait"
    START = "Start"
    HOLD = "Hold"
    ADVANCE = "Advance"
    PAUSE = "Pause"
    RESUME = "Resume"
    PROMOTE = "Promote"
    PROMOTED = "Promoted"
    ROLL_BACK = "RollBack"
    ROLLED_BACK = "RolledBack"
    IGNORE_COMMAND = "IgnoreCommand"


QUIET_ACTIONS = frozenset({Action.WAIT, Action.HOLD})
"""Actions recorded only when their reason changes, so that holding does not flood the history."""


@dataclass(frozen=True)
class AnalysisOutcome:
    """One analysis run: the result of every enabled check at ``time``."""

    time: datetime.datetime
    results: list[CheckResult]


@dataclass(frozen=True)
class Observations:
    resources_ready: bool = False
    """Both colours' model servers are available."""
    analysis: AnalysisOutcome | None = None
    """A fresh analysis, when one was due (see steps.analysis_due)."""
    router_green_weight: int | None = None
    """The green weight the router reports as applied; None when it cannot tell."""
    command: Command | None = None


@dataclass(frozen=True)
class Decision:
    action: Action
    status: ModelRolloutStatus
    reason: str
    """CamelCase reason, as in Kubernetes Events and conditions."""
    message: str
    recorded: bool = False
    """True when this decision was added to status.history (and deserves an Event)."""

    @property
    def green_weight(self) -> int:
        return self.status.weights.green


@dataclass
class _Draft:
    """The status being decided, and what to say about it."""

    status: ModelRolloutStatus
    action: Action = Action.WAIT
    reason: str = "Waiting"
    message: str = ""
    notes: list[str] = field(default_factory=list)

    def go(self, action: Action, reason: str, message: str, *, phase: Phase | None = None) -> None:
        self.action, self.reason, self.message = action, reason, message
        if phase is not None:
            self.status.phase = phase


def decide(
    spec: ModelRolloutSpec, status: ModelRolloutStatus, observations: Observations, now: datetime.datetime
) -> Decision:
    """The next status of a rollout, and why. Same inputs, same decision: safe to call again."""
    draft = _Draft(status=status.model_copy(deep=True))
    revision = steps.green_revision(spec)
    if draft.status.green_revision != revision:
        _start_canary(draft, revision, now, restarted=bool(status.green_revision))
    elif observations.command and observations.command.id != draft.status.last_command_id:
        draft.status.last_command_id = observations.command.id
        _apply_command(draft, spec, observations.command, now)
    else:
        _PHASE_RULES[draft.status.phase](draft, spec, observations, now)

    _set_weights(draft, spec)
    draft.status.applied_green_weight = observations.router_green_weight
    draft.status.message = draft.message
    recorded = _record(draft, status, now)
    draft.status.conditions = conditions(draft.status, previous=status.conditions, now=now)
    return Decision(draft.action, draft.status, draft.reason, draft.message, recorded)


def reject(status: ModelRolloutStatus, problem: str, now: datetime.datetime) -> Decision:
    """The decision for a spec that cannot be rolled out: Failed, all traffic on blue, the problem named."""
    draft = _Draft(status=status.model_copy(deep=True))
    draft.go(Action.ROLL_BACK if status.weights.green else Action.WAIT, "InvalidSpec", problem, phase=Phase.FAILED)
    draft.status.weights = Weights(blue=100, green=0)
    draft.status.message = problem
    recorded = _record(draft, status, now)
    draft.status.conditions = conditions(draft.status, previous=status.conditions, now=now)
    return Decision(draft.action, draft.status, draft.reason, draft.message, recorded)


def _start_canary(draft: _Draft, revision: str, now: datetime.datetime, *, restarted: bool) -> None:
    s = draft.status
    s.green_revision = revision
    s.phase, s.step_index, s.started_at, s.step_started_at = Phase.PENDING, 0, now, None
    s.analysis, s.consecutive_errors, s.rollback_reason = None, 0, ""
    if restarted:
        draft.go(Action.RESTART, "GreenChanged", "green changed: the canary starts again from step 0")
    else:
        draft.go(Action.INITIALIZE, "Initialized", "canary created: waiting for the blue and green model servers")


def _apply_command(draft: _Draft, spec: ModelRolloutSpec, command: Command, now: datetime.datetime) -> None:
    s = draft.status
    active = s.phase in (Phase.PENDING, Phase.PROGRESSING, Phase.PAUSED)
    name = command.name
    if name is CommandName.ABORT and s.phase not in TERMINAL_PHASES | {Phase.ROLLING_BACK}:
        _roll_back(draft, "Aborted", "aborted by a user command")
    elif name is CommandName.PAUSE and s.phase is Phase.PROGRESSING:
        draft.go(Action.PAUSE, "PausedByUser", f"paused by a user command at step {s.step_index}", phase=Phase.PAUSED)
    elif name is CommandName.RESUME and s.phase is Phase.PAUSED:
        s.step_started_at = now
        draft.go(Action.RESUME, "Resumed", f"resumed by a user command at step {s.step_index}", phase=Phase.PROGRESSING)
    elif name is CommandName.PROMOTE and s.phase in (Phase.PROGRESSING, Phase.PAUSED):
        s.phase = Phase.PROGRESSING
        _advance(draft, spec, now, why="promoted one step by a user command")
    elif name is CommandName.PROMOTE_FULL and active:
        _promote(draft, "PromotedByUser", "fully promoted by a user command")
    elif name is CommandName.RETRY and s.phase in (Phase.ROLLED_BACK, Phase.ABORTED):
        _start_canary(draft, s.green_revision, now, restarted=True)
        draft.go(Action.RESTART, "Retried", "retried by a user command: the canary starts again from step 0")
    else:
        draft.go(Action.IGNORE_COMMAND, "CommandIgnored", f"command {name.value} does not apply in phase {s.phase}")


def _pending(draft: _Draft, spec: ModelRolloutSpec, observations: Observations, now: datetime.datetime) -> None:
    s = draft.status
    if observations.resources_ready:
        s.phase, s.step_index, s.step_started_at = Phase.PROGRESSING, 0, now
        weight = steps.step_weight(spec.traffic.steps, 0)
        draft.go(Action.START, "ModelServersReady", f"model servers ready: step 0 sends {weight}% to green")
    elif steps.seconds_since(s.started_at, now) > spec.analysis.progress_deadline:
        _roll_back(draft, "ProgressDeadlineExceeded", "model servers not ready within the progress deadline")
    else:
        draft.go(Action.WAIT, "WaitingForModelServers", "waiting for the blue and green model servers to be ready")


def _analysed(draft: _Draft, spec: ModelRolloutSpec, observations: Observations, now: datetime.datetime) -> None:
    s = draft.status
    if observations.analysis is not None:
        _take_analysis(draft, spec, observations.analysis)
    if s.consecutive_errors >= spec.analysis.consecutive_error_limit:
        _roll_back(
            draft,
            "MetricsUnavailable",
            f"metrics provider failed {s.consecutive_errors} analyses in a row "
            f"(limit {spec.analysis.consecutive_error_limit}): {_summary(s, Verdict.ERROR)}",
        )
        return
    exhausted = [c for c in (s.analysis.checks if s.analysis else []) if c.failures >= _failure_limit(spec, c.name)]
    if exhausted:
        details = "; ".join(f"{c.name}: {c.message} (failed {c.failures}x)" for c in exhausted)
        _roll_back(draft, "AnalysisFailed", details)
        return
    if s.phase is Phase.PAUSED:
        draft.go(Action.HOLD, "Paused", f"paused at step {s.step_index}; resume or promote to continue")
        return

    step = spec.traffic.steps[s.step_index]
    elapsed = steps.seconds_since(s.step_started_at, now)
    analysis = s.analysis
    fresh = (
        analysis is not None
        and analysis.step_index == s.step_index
        and (s.step_started_at is None or analysis.time >= s.step_started_at)
    )
    if fresh and analysis is not None and analysis.verdict == Verdict.PASSED and elapsed >= step.pause_seconds:
        if step.manual:
            draft.go(Action.HOLD, "WaitingForPromote", f"step {s.step_index} passed; waiting for a promote command")
        else:
            _advance(draft, spec, now, why=f"step {s.step_index} passed analysis: {_summary(s, Verdict.PASSED)}")
        return
    if elapsed > spec.analysis.progress_deadline:
        why = f"step {s.step_index} undecided for {elapsed:.0f}s (deadline {spec.analysis.progress_deadline:.0f}s)"
        if spec.analysis.on_deadline == "pause":
            draft.go(Action.PAUSE, "ProgressDeadlineExceeded", f"{why}: paused", phase=Phase.PAUSED)
        else:
            _roll_back(draft, "ProgressDeadlineExceeded", f"{why}: {_summary(s, Verdict.INCONCLUSIVE)}")
        return
    if not fresh or analysis is None:
        draft.go(Action.HOLD, "WaitingForAnalysis", f"step {s.step_index}: waiting for an analysis at this step")
    elif analysis.verdict == Verdict.FAILED:
        draft.go(Action.HOLD, "AnalysisFailing", f"step {s.step_index}: {_summary(s, Verdict.FAILED)}")
    elif analysis.verdict == Verdict.ERROR:
        draft.go(Action.HOLD, "MetricsError", f"step {s.step_index}: {_summary(s, Verdict.ERROR)}")
    elif analysis.verdict == Verdict.INCONCLUSIVE:
        draft.go(Action.HOLD, "AnalysisInconclusive", f"step {s.step_index}: {_summary(s, Verdict.INCONCLUSIVE)}")
    else:
        remaining = step.pause_seconds - elapsed
        draft.go(Action.HOLD, "Pausing", f"step {s.step_index}: analysis passed, {remaining:.0f}s of pause left")


def _promoting(draft: _Draft, spec: ModelRolloutSpec, observations: Observations, now: datetime.datetime) -> None:
    _confirm(
        draft,
        observations,
        target=100,
        done=Phase.PROMOTED,
        action=Action.PROMOTED,
        message="all traffic on green: promoted",
    )


def _rolling_back(draft: _Draft, spec: ModelRolloutSpec, observations: Observations, now: datetime.datetime) -> None:
    aborted = draft.status.rollback_reason == "Aborted"
    _confirm(
        draft,
        observations,
        target=0,
        done=Phase.ABORTED if aborted else Phase.ROLLED_BACK,
        action=Action.ROLLED_BACK,
        message=f"all traffic on blue: rolled back ({draft.status.rollback_reason})",
    )


def _confirm(
    draft: _Draft, observations: Observations, *, target: int, done: Phase, action: Action, message: str
) -> None:
    applied = observations.router_green_weight
    if applied is None or applied == target:
        draft.go(action, done.value, message + ("" if applied is not None else " (router cannot confirm)"), phase=done)
    else:
        draft.go(
            Action.WAIT, "WaitingForRouter", f"waiting for the router to apply {target}% green (it reports {applied}%)"
        )


def _failed(draft: _Draft, spec: ModelRolloutSpec, observations: Observations, now: datetime.datetime) -> None:
    """The spec parses again (decide() only sees valid specs): start the canary afresh."""
    _start_canary(draft, steps.green_revision(spec), now, restarted=True)
    draft.go(Action.RESTART, "SpecFixed", "the spec is valid again: the canary starts from step 0")


def _settled(draft: _Draft, spec: ModelRolloutSpec, observations: Observations, now: datetime.datetime) -> None:
    s = draft.status
    draft.go(Action.WAIT, s.phase.value, s.message or f"{s.phase.value}")


_PHASE_RULES = {
    Phase.PENDING: _pending,
    Phase.PROGRESSING: _analysed,
    Phase.PAUSED: _analysed,
    Phase.PROMOTING: _promoting,
    Phase.ROLLING_BACK: _rolling_back,
    Phase.PROMOTED: _settled,
    Phase.ROLLED_BACK: _settled,
    Phase.ABORTED: _settled,
    Phase.FAILED: _failed,
}


def _advance(draft: _Draft, spec: ModelRolloutSpec, now: datetime.datetime, *, why: str) -> None:
    s = draft.status
    if s.step_index + 1 >= len(spec.traffic.steps):
        _promote(draft, "StepsCompleted", f"{why}; all steps done: moving all traffic to green")
        return
    s.step_index += 1
    s.step_started_at = now
    weight = steps.step_weight(spec.traffic.steps, s.step_index)
    draft.go(Action.ADVANCE, "StepAdvanced", f"{why}; step {s.step_index} sends {weight}% to green")


def _promote(draft: _Draft, reason: str, message: str) -> None:
    draft.go(Action.PROMOTE, reason, message, phase=Phase.PROMOTING)


def _roll_back(draft: _Draft, reason: str, message: str) -> None:
    draft.status.rollback_reason = reason
    draft.go(Action.ROLL_BACK, reason, f"rolling back: {message}", phase=Phase.ROLLING_BACK)


def _set_weights(draft: _Draft, spec: ModelRolloutSpec) -> None:
    s = draft.status
    if s.phase in (Phase.PROGRESSING, Phase.PAUSED):
        green = steps.step_weight(spec.traffic.steps, s.step_index)
    elif s.phase in (Phase.PROMOTING, Phase.PROMOTED):
        green = 100
    else:
        green = 0
    s.weights = Weights(blue=100 - green, green=green)


def _failure_limit(spec: ModelRolloutSpec, check_name: str) -> int:
    checks = spec.analysis.checks
    own = {
        "latency": checks.latency.failure_limit,
        "latency-vs-blue": checks.latency.failure_limit,
        "errors": checks.errors.failure_limit,
        "accuracy": checks.accuracy.failure_limit,
    }.get(check_name)
    for custom in checks.custom:
        if custom.name == check_name:
            own = custom.failure_limit
    return own or spec.analysis.failure_limit


def _take_analysis(draft: _Draft, spec: ModelRolloutSpec, outcome: AnalysisOutcome) -> None:
    """Store a fresh analysis, counting consecutive failures per check and consecutive provider errors."""
    s = draft.status
    same_step = s.analysis is not None and s.analysis.step_index == s.step_index
    previous = {c.name: c.failures for c in s.analysis.checks} if s.analysis and same_step else {}
    checks = [
        CheckStatus(
            name=r.name,
            verdict=r.verdict.value,
            message=r.message,
            value=r.value,
            threshold=r.threshold,
            failures=previous.get(r.name, 0) + 1 if r.verdict is Verdict.FAILED else 0,
        )
        for r in outcome.results
    ]
    verdict = overall(outcome.results)
    s.consecutive_errors = s.consecutive_errors + 1 if verdict is Verdict.ERROR else 0
    s.analysis = AnalysisStatus(time=outcome.time, verdict=verdict.value, step_index=s.step_index, checks=checks)


def _summary(status: ModelRolloutStatus, verdict: Verdict) -> str:
    checks = status.analysis.checks if status.analysis else []
    relevant = [c for c in checks if c.verdict == verdict.value] or checks
    if relevant and len({c.message for c in relevant}) == 1 and verdict is Verdict.ERROR:
        return f"{', '.join(c.name for c in relevant)} {verdict.value}: {relevant[0].message}"
    return "; ".join(f"{c.name} {c.verdict}: {c.message}" for c in relevant) or "no analysis yet"


def _record(draft: _Draft, before: ModelRolloutStatus, now: datetime.datetime) -> bool:
    s = draft.status
    last = s.history[-1] if s.history else None
    if (
        draft.action in QUIET_ACTIONS
        and last is not None
        and last.reason == draft.reason
        and (last.step_index == s.step_index)
    ):
        return False
    if draft.action in QUIET_ACTIONS and before.phase in TERMINAL_PHASES and before.phase == s.phase:
        return False
    s.history = [
        *s.history,
        DecisionRecord(
            time=now,
            action=draft.action.value,
            phase=s.phase,
            step_index=s.step_index,
            green_weight=s.weights.green,
            reason=draft.reason,
            message=draft.message,
        ),
    ][-HISTORY_LIMIT:]
    return True


def conditions(status: ModelRolloutStatus, *, previous: list[Condition], now: datetime.datetime) -> list[Condition]:
    """Ready, Progressing and Degraded, per the Kubernetes API conventions (transition time kept when the
    status of a condition does not change)."""
    phase = status.phase
    wanted = {
        "Ready": phase is Phase.PROMOTED,
        "Progressing": phase in (Phase.PENDING, Phase.PROGRESSING, Phase.PROMOTING, Phase.ROLLING_BACK),
        "Degraded": phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.ABORTED, Phase.FAILED),
    }
    old = {c.type: c for c in previous}
    result = []
    for kind, true in wanted.items():
        value = "True" if true else "False"
        earlier = old.get(kind)
        changed = earlier is None or earlier.status != value
        result.append(
            Condition(
                type=kind,
                status=value,
                reason=phase.value,
                message=status.message,
                last_transition_time=now if changed or earlier is None else earlier.last_transition_time,
            )
        )
    return result
