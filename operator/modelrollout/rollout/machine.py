"""The rollout state machine: ``decide(spec, status, observations, now) -> Decision``. No I/O.

Every rule of the canary lives here; handlers gather the observations and apply the decision. Rules:
- blue serves the stable model: spec.blue until the first promotion, then the last promoted green
  (``status.stable``); traffic never goes to a model older than that. A change of green (its model or
  server settings; replicas excluded) starts a canary from step 0 (Pending until both colours are
  ready); a green equal to the stable model needs no canary;
- weights are asked for with a revision and count as applied only when the router reports that revision
  back; a step's clock (pause, analysis, deadline) starts when its weights are confirmed;
- a step is done when its pause has elapsed and an analysis taken after that Passed; a ``manual`` step
  then waits for a promote command; after the last step all traffic moves to green;
- Inconclusive holds the step; the progress deadline bounds the holding after the step's pause;
- a check Failed ``failure_limit`` times during the canary (a Passed analysis in between does not reset
  the count), or ``consecutive_error_limit`` analyses or reconciles in a row without an answer, rolls
  back: all traffic to blue, confirmed by the router before RolledBack;
- promotion: all traffic to green; once confirmed, green's model is the stable one (Finalizing): blue is
  redeployed with it, traffic returns to blue once blue is ready, and green is scaled down; a new green
  given meanwhile starts its canary only then;
- bad input (an unknown command, a spec the operator cannot serve) never moves traffic by itself, except
  that a canary in flight rolls back to the stable model;
- the router must confirm new weights within ``traffic.confirmDeadline``: a canary or a promotion it does
  not confirm rolls back; a rollback it does not confirm keeps asking, Degraded;
- a trip of the builtin router's data-plane guard (green's answers failing, see routing.guard) for the
  current weights revision and candidate rolls a canary back at once (reason GuardTripped), while
  Progressing or Paused, or Promoting before the router confirmed 100% green; never later (green is the
  stable model then). It is acted on before commands and despite failing reconciles. A trip is acknowledged
  in status.guardTrip when acted on, or once it no longer matters (the canary ended with green at 0%, or
  another candidate replaced it); a trip for an older revision waits: the router holds green at 0% and
  names each newer revision it holds.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from enum import StrEnum

from modelrollout.analysis.evaluate import CheckResult, Verdict, overall
from modelrollout.api.spec import ModelRef, ModelRolloutSpec, ServerSpec, serving_revision
from modelrollout.api.status import (
    HISTORY_LIMIT,
    TERMINAL_PHASES,
    AnalysisStatus,
    CheckStatus,
    Condition,
    DecisionRecord,
    GuardTripStatus,
    ModelRolloutStatus,
    Phase,
    StableStatus,
    Weights,
)
from modelrollout.rollout import steps
from modelrollout.rollout.commands import Command, CommandName
from modelrollout.routing.base import NOT_REPORTED, AppliedWeights
from modelrollout.routing.guard import GuardTrip


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
    FINALIZE = "Finalize"
    PROMOTED = "Promoted"
    ROLL_BACK = "RollBack"
    ROLLED_BACK = "RolledBack"
    IGNORE_COMMAND = "IgnoreCommand"


QUIET_ACTIONS = frozenset({Action.WAIT, Action.HOLD})
"""Actions recorded only when their reason changes, so that holding does not flood the history."""

CANARY_PHASES = frozenset({Phase.PENDING, Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTING})
"""A candidate may have traffic and is not yet the stable model: bad input or faults roll these back."""

DEGRADING_REASONS = frozenset({"BlueNotReady"})
"""Reasons that make the Degraded condition True in a phase that is otherwise fine."""

DEFAULT_CONFIRM_DEADLINE = 60.0
"""traffic.confirmDeadline when the spec cannot be read."""


@dataclass(frozen=True)
class AnalysisOutcome:
    """One analysis run: the result of every enabled check at ``time``."""

    time: datetime.datetime
    results: list[CheckResult]


@dataclass(frozen=True)
class Observations:
    resources_ready: bool = False
    """Blue runs the stable model and green the candidate, every pod of both ready."""
    blue_ready: bool = False
    """Blue runs the stable model, every pod ready (what a promotion waits for before handing back)."""
    start_failures: str = ""
    """Why a colour's model servers cannot start, from their Pods ("" when nothing says): a model that could
    not be fetched, for example. Shown while the rollout waits for them."""
    analysis: AnalysisOutcome | None = None
    """A fresh analysis, when one was due (see steps.analysis_due)."""
    router: AppliedWeights = NOT_REPORTED
    """What the router reports it serves."""
    command: Command | None = None
    guard: GuardTrip | None = None
    """The builtin router's last guard trip (its annotation), acknowledged or not."""
    error: str | None = None
    """Gathering or applying failed (API server, router, a refused object): counts toward the error limit."""


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

    @property
    def weights_revision(self) -> int:
        return self.status.weights.revision


@dataclass
class _Draft:
    """The status being decided, and what to say about it."""

    status: ModelRolloutStatus
    action: Action = Action.WAIT
    reason: str = "Waiting"
    message: str = ""
    green_target: int | None = None
    """Set by a rule that chooses the weight itself (Finalizing hands traffic back to blue)."""
    router_note: str = ""
    """Why the router's report is not usable, when it is not (which router replica has not reported)."""

    def go(self, action: Action, reason: str, message: str, *, phase: Phase | None = None) -> None:
        self.action, self.reason, self.message = action, reason, message
        if phase is not None:
            self.status.phase = phase


def decide(
    spec: ModelRolloutSpec, status: ModelRolloutStatus, observations: Observations, now: datetime.datetime
) -> Decision:
    """The next status of a rollout, and why. Same inputs, same decision: safe to call again."""
    draft = _Draft(status=status.model_copy(deep=True))
    s = draft.status
    s.invalid_spec = ""
    _observe_router(s, observations.router, now)
    draft.router_note = observations.router.note if observations.router.revision is None else ""
    _follow_blue_until_promoted(s, spec)
    revision = steps.green_revision(spec)
    command = observations.command
    trip = _unacknowledged(s, observations.guard)
    _acknowledge_if_moot(s, trip)
    tripped = trip is not None and _trip_rolls_back(s, trip)
    if s.green_revision != revision and s.phase is not Phase.FINALIZING:
        # A new green waits for a promotion to finish: until blue serves the promoted model, green is the
        # only colour that does, and restarting now would send everything to blue's older model.
        _start_canary(draft, spec, revision, now)
        if observations.error is not None:  # the new canary's first reconcile failed: counted all the same
            s.consecutive_errors, s.last_error, s.errors_since = 1, observations.error, now
    elif observations.error is not None and s.phase in CANARY_PHASES and not _urgent(command, s) and not tripped:
        _count_error(draft, spec, observations.error, now)  # never advance on what could not be gathered
    else:
        if tripped and trip is not None:  # before any command: a promote must never win over a hard fault
            _guard_tripped(draft, trip)
        elif command is not None and command.id != s.last_command_id:
            s.last_command_id = command.id
            _apply_command(draft, spec, command, now)
        else:
            _PHASE_RULES[s.phase](draft, spec, observations, now)
        if observations.error is not None:  # a rollback or a promotion still completes; the error is counted
            _count_error(draft, spec, observations.error, now, quiet=draft.action not in QUIET_ACTIONS)
    if observations.error is None and observations.analysis is None and s.phase not in steps.ANALYSED_PHASES:
        s.consecutive_errors, s.last_error = 0, ""
    _acknowledge_if_moot(s, _unacknowledged(s, observations.guard))
    return _finish(draft, status, spec.traffic.confirm_deadline, now, steps_weight=_step_target(s, spec))


@dataclass(frozen=True)
class Serving:
    """What the colours run, for ``recover``: read from their Deployments and pods."""

    blue_runs_only_stable: bool = False
    """Every blue pod (ready or not) and blue's template run the recorded stable model."""
    blue_ready: bool = False
    """Blue runs the recorded stable model with every pod ready."""
    green_runs_stable: bool = False
    """Green's template runs the recorded stable model."""


def recover(
    status: ModelRolloutStatus,
    *,
    recorded: StableStatus | None,
    green_serves: tuple[ModelRef, ServerSpec] | None,
    serving: Serving,
    router: AppliedWeights,
    now: datetime.datetime,
) -> ModelRolloutStatus:
    """A status without ``stable``, or with an older one than blue's record, completed from the cluster
    before deciding (a pure function):

    - a status that lost it (restored without it, or from an older copy) takes blue Deployment's record;
      when that promotion was still being handed back to blue (green runs the recorded model and blue
      is not ready with it), it resumes Finalizing with traffic on green (at the router's weights when it
      reports green traffic, else all of it), so traffic goes to blue only once blue runs the model;
    - a rollout promoted by an operator that left the promoted model on green (Promoted at 100% green,
      no record on blue) makes what green runs the stable model and hands traffic back through
      Finalizing, as a promotion does now;
    - otherwise (a new rollout) it stays None: the stable model is spec.blue.
    Without this, the next decision would take spec.blue, or an older promotion, as the stable model.
    """
    recovered = status.model_copy(deep=True)
    if recorded is not None and recorded.promoted_at is not None:
        current = status.stable.promoted_at if status.stable is not None else None
        if current is not None and current >= recorded.promoted_at:
            return status
        recovered.stable = recorded
        green_on = router.revision is not None and (router.green or 0) > 0
        handing_back = serving.green_runs_stable and (
            not serving.blue_runs_only_stable or (not serving.blue_ready and green_on)
        )
        if handing_back:
            green = router.green or 0 if green_on else 100
            weights = Weights(
                blue=100 - green,
                green=green,
                revision=(router.revision or 0) if green_on else (router.revision or 0) + 1,
            )
            recovered.phase, recovered.green_revision, recovered.weights = Phase.FINALIZING, recorded.revision, weights
            recovered.weights_changed_at, recovered.weights_confirmed_at = now, None
            recovered.message = f"status recovered while {recorded.model.version} was handed back to blue"
    elif status.stable is not None:
        return status
    elif recorded is not None:
        recovered.stable = recorded  # spec.blue as it was first deployed (nothing promoted yet)
    elif status.phase is Phase.PROMOTED and status.weights.green == 100 and green_serves is not None:
        model, server = green_serves
        revision = serving_revision(model, server)
        recovered.stable = StableStatus(model=model, server=server, revision=revision, promoted_at=now)
        recovered.green_revision = revision
        recovered.phase = Phase.FINALIZING
        recovered.message = f"promoted by an earlier operator version: blue is redeployed with {model.version}"
    return recovered


def failed_reconcile(
    status: ModelRolloutStatus, error: str, *, limit: int, min_seconds: float, now: datetime.datetime
) -> Decision:
    """The decision when a reconcile failed before it could decide (an unexpected error): counted with the
    other errors; at ``limit`` in a row, failing for ``min_seconds`` at least, a canary in flight rolls back
    to the stable model."""
    draft = _Draft(status=status.model_copy(deep=True))
    _count(draft.status, error, now)
    _at_error_limit(draft, limit, min_seconds, error, now)
    return _finish(draft, status, DEFAULT_CONFIRM_DEADLINE, now, steps_weight=draft.status.weights.green)


def reject(status: ModelRolloutStatus, problem: str, observations: Observations, now: datetime.datetime) -> Decision:
    """The decision for a spec the operator cannot serve. Traffic stays where the last valid spec put it,
    except that a canary in flight rolls back to the stable model; the problem is reported."""
    draft = _Draft(status=status.model_copy(deep=True))
    s = draft.status
    _observe_router(s, observations.router, now)
    draft.router_note = observations.router.note if observations.router.revision is None else ""
    message = f"the spec cannot be rolled out: {problem}"
    if not s.green_revision:
        draft.go(Action.WAIT, "InvalidSpec", message, phase=Phase.FAILED)
    elif s.phase in CANARY_PHASES:
        _roll_back(draft, "InvalidSpec", message)
    elif s.phase is Phase.ROLLING_BACK:
        _rolling_back(draft, None, observations, now)
    else:
        draft.go(Action.HOLD, "InvalidSpec", f"{message}; traffic stays as it is")
    s.invalid_spec = problem
    return _finish(draft, status, DEFAULT_CONFIRM_DEADLINE, now, steps_weight=s.weights.green)


def _finish(
    draft: _Draft, before: ModelRolloutStatus, confirm_deadline: float, now: datetime.datetime, *, steps_weight: int
) -> Decision:
    s = draft.status
    if s.consecutive_errors == 0:
        s.errors_since = None
    promoting = s.phase is Phase.PROMOTING and before.phase is not Phase.PROMOTING
    _set_weights(draft, now, steps_weight=steps_weight, promoting=promoting)
    s.router_stalled = _unconfirmed_for(s, now) > confirm_deadline
    s.message = draft.message
    recorded = _record(draft, before, now)
    stuck = draft.reason if draft.reason in DEGRADING_REASONS else None
    s.conditions = conditions(s, previous=before.conditions, now=now, degraded_by=stuck)
    return Decision(draft.action, s, draft.reason, draft.message, recorded)


def _observe_router(s: ModelRolloutStatus, report: AppliedWeights, now: datetime.datetime) -> None:
    s.applied_green_weight, s.applied_revision = report.green, report.revision
    if report.revision is not None and report.revision > s.weights.revision:
        # The router applied a revision this status never asked for: the status was lost or restored from
        # an older copy. Revisions only go up, so these weights are asked for again under a newer one.
        s.weights = s.weights.model_copy(update={"revision": report.revision + 1})
        s.weights_changed_at, s.weights_confirmed_at = now, None
    if s.weights_changed_at is None:
        s.weights_changed_at = now
    if s.weights_confirmed_at is None and report.confirms(revision=s.weights.revision, green=s.weights.green):
        s.weights_confirmed_at = now


def _confirmed(s: ModelRolloutStatus) -> bool:
    return s.weights_confirmed_at is not None


def _unconfirmed_for(s: ModelRolloutStatus, now: datetime.datetime) -> float:
    return 0.0 if _confirmed(s) else steps.seconds_since(s.weights_changed_at, now)


def _follow_blue_until_promoted(s: ModelRolloutStatus, spec: ModelRolloutSpec) -> None:
    """Before any promotion the stable model is spec.blue; after one it is the promoted green, whatever
    spec.blue says (a user who wants an older model back canaries it as green)."""
    if s.stable is None or s.stable.promoted_at is None:
        # Server settings (image, resources, settings) reach blue only through a canary and a promotion.
        server = spec.server if s.stable is None else s.stable.server
        s.stable = StableStatus(model=spec.blue.model, server=server, revision="")


def _start_canary(draft: _Draft, spec: ModelRolloutSpec, revision: str, now: datetime.datetime) -> None:
    s = draft.status
    restarted = bool(s.green_revision)
    s.green_revision = revision
    s.step_index, s.started_at, s.step_started_at = 0, now, None
    s.analysis, s.consecutive_errors, s.last_error, s.rollback_reason = None, 0, "", ""
    if s.stable is not None and s.stable.revision == revision and (s.weights.green > 0 or not _confirmed(s)):
        # A canary in flight set back to the stable model: its green still has traffic; it leaves green only
        # through the hand-back (green is rebuilt from the stable model meanwhile).
        draft.go(
            Action.FINALIZE,
            "GreenIsStable",
            f"green {spec.green.model.version} is the stable model again: traffic returns to blue",
            phase=Phase.FINALIZING,
        )
    elif s.stable is not None and s.stable.revision == revision:
        draft.go(
            Action.WAIT,
            "GreenIsStable",
            f"green {spec.green.model.version} is the stable model: nothing to canary",
            phase=Phase.PROMOTED,
        )
    elif restarted:
        draft.go(
            Action.RESTART, "GreenChanged", "green changed: the canary starts again from step 0", phase=Phase.PENDING
        )
    else:
        draft.go(
            Action.INITIALIZE,
            "Initialized",
            "canary created: waiting for the blue and green model servers",
            phase=Phase.PENDING,
        )


def _unacknowledged(s: ModelRolloutStatus, trip: GuardTrip | None) -> GuardTrip | None:
    """The router's trip, unless the status has acknowledged it (or a later one)."""
    if trip is None or (s.guard_trip is not None and s.guard_trip.revision >= trip.revision):
        return None
    return trip


def _trip_rolls_back(s: ModelRolloutStatus, trip: GuardTrip) -> bool:
    """A trip for the weights asked now, for this candidate, before the promotion is confirmed (after that,
    green is the stable model and blue may still run an older one: traffic stays on green)."""
    current = trip.revision == s.weights.revision and trip.green_revision == s.green_revision
    before_promotion = s.phase in (Phase.PROGRESSING, Phase.PAUSED) or (
        s.phase is Phase.PROMOTING and not _confirmed(s)
    )
    return current and before_promotion


def _acknowledge_if_moot(s: ModelRolloutStatus, trip: GuardTrip | None) -> None:
    """A trip that no longer matters is acknowledged, so that the router follows the weights again: the
    canary ended with green at 0%, or another candidate replaced the one that tripped it."""
    if trip is None:
        return
    ended = s.phase in TERMINAL_PHASES and s.weights.green == 0
    replaced = bool(s.green_revision) and trip.green_revision != s.green_revision
    if ended or replaced:
        s.guard_trip = _trip_status(trip, rolled_back=False)


def _trip_status(trip: GuardTrip, *, rolled_back: bool) -> GuardTripStatus:
    return GuardTripStatus(
        revision=trip.revision,
        green_revision=trip.green_revision,
        errors=trip.errors,
        requests=trip.requests,
        window_seconds=trip.window,
        max_error_rate=trip.max_error_rate,
        at=trip.at,
        rolled_back=rolled_back,
    )


def _guard_tripped(draft: _Draft, trip: GuardTrip) -> None:
    draft.status.guard_trip = _trip_status(trip, rolled_back=True)
    _roll_back(draft, "GuardTripped", trip.describe())


def _count_error(
    draft: _Draft, spec: ModelRolloutSpec, error: str, now: datetime.datetime, *, quiet: bool = False
) -> None:
    """A reconcile that could not gather or apply: recorded, retried next tick, and counted. ``quiet``
    keeps the decision already taken this tick as what is said."""
    _count(draft.status, error, now)
    if not quiet:
        limit = spec.analysis.consecutive_error_limit
        _at_error_limit(draft, limit, error_seconds(limit, spec.analysis.interval), error, now)


def error_seconds(limit: int, interval: float) -> float:
    """How long errors must have lasted before they roll a canary back: from the first of ``limit``
    analyses in a row to the last, so that a blip of a few seconds (a control-plane upgrade) is ridden
    out however many reconciles fail during it."""
    return (limit - 1) * interval


def _count(s: ModelRolloutStatus, error: str, now: datetime.datetime) -> None:
    s.consecutive_errors += 1
    s.last_error = error
    if s.errors_since is None:
        s.errors_since = now


def _at_error_limit(draft: _Draft, limit: int, min_seconds: float, error: str, now: datetime.datetime) -> None:
    s = draft.status
    failing = steps.seconds_since(s.errors_since, now)
    if s.phase in CANARY_PHASES and s.consecutive_errors >= limit and failing >= min_seconds:
        failed = f"{s.consecutive_errors} reconciles in a row failed over {failing:.0f}s (limit {limit}): {error}"
        _roll_back(draft, "ReconcileFailed", failed)
    else:
        draft.go(Action.HOLD, "ReconcileError", f"reconcile failed ({s.consecutive_errors}x, retrying): {error}")


def _urgent(command: Command | None, s: ModelRolloutStatus) -> bool:
    """A new abort or pause is acted on even while reconciles fail (a promote waits for them to succeed)."""
    return (
        command is not None
        and command.id != s.last_command_id
        and command.name in (CommandName.ABORT, CommandName.PAUSE)
    )


def _apply_command(draft: _Draft, spec: ModelRolloutSpec, command: Command, now: datetime.datetime) -> None:
    s = draft.status
    name = command.name
    if name is None:
        draft.go(Action.IGNORE_COMMAND, "UnknownCommand", command.problem)
    elif name is CommandName.ABORT and s.phase in CANARY_PHASES:
        _roll_back(draft, "Aborted", "aborted by a user command")
    elif name is CommandName.PAUSE and s.phase is Phase.PROGRESSING:
        draft.go(Action.PAUSE, "PausedByUser", f"paused by a user command at step {s.step_index}", phase=Phase.PAUSED)
    elif name is CommandName.RESUME and s.phase is Phase.PAUSED:
        s.step_started_at = now
        draft.go(Action.RESUME, "Resumed", f"resumed by a user command at step {s.step_index}", phase=Phase.PROGRESSING)
    elif name is CommandName.PROMOTE and s.phase in (Phase.PROGRESSING, Phase.PAUSED):
        s.phase = Phase.PROGRESSING
        _advance(draft, spec, now, why="promoted one step by a user command")
    elif name is CommandName.PROMOTE_FULL and s.phase in (Phase.PROGRESSING, Phase.PAUSED):
        _promote(draft, "PromotedByUser", "fully promoted by a user command")
    elif name is CommandName.RETRY and s.phase in (Phase.ROLLED_BACK, Phase.ABORTED):
        s.green_revision = ""
        _start_canary(draft, spec, steps.green_revision(spec), now)
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
        why = f": {observations.start_failures}" if observations.start_failures else ""
        _roll_back(draft, "ProgressDeadlineExceeded", f"model servers not ready within the progress deadline{why}")
    elif observations.start_failures:
        draft.go(
            Action.WAIT,
            "ModelServerFailing",
            f"waiting for the blue and green model servers to be ready: {observations.start_failures}",
        )
    else:
        draft.go(Action.WAIT, "WaitingForModelServers", "waiting for the blue and green model servers to be ready")


def _analysed(draft: _Draft, spec: ModelRolloutSpec, observations: Observations, now: datetime.datetime) -> None:
    s = draft.status
    s.step_index = steps.step_index(spec.traffic.steps, s.step_index)
    if observations.analysis is not None:
        _take_analysis(draft, spec, observations.analysis)
    limit = spec.analysis.consecutive_error_limit
    failing = steps.seconds_since(s.errors_since, now) if s.errors_since is not None else 0.0
    if s.consecutive_errors >= limit and failing >= error_seconds(limit, spec.analysis.interval):
        _roll_back(
            draft,
            "MetricsUnavailable",
            f"metrics provider failed {s.consecutive_errors} analyses in a row "
            f"(limit {spec.analysis.consecutive_error_limit}): {_summary(s, Verdict.ERROR)}",
        )
        return
    exhausted = [c for c in (s.analysis.checks if s.analysis else []) if c.failures >= _failure_limit(spec, c.name)]
    if exhausted:
        details = "; ".join(f"{c.name}: {c.message} (failed {c.failures}x this canary)" for c in exhausted)
        _roll_back(draft, "AnalysisFailed", details)
        return
    if not _confirmed(s):
        waited = _unconfirmed_for(s, now)
        if waited > spec.traffic.confirm_deadline:
            _roll_back(draft, "RouterNotConfirming", _router_message(draft, waited))
        else:
            draft.go(Action.HOLD, "WaitingForRouter", _router_message(draft, waited))
        return
    if s.phase is Phase.PAUSED:
        draft.go(Action.HOLD, "Paused", f"paused at step {s.step_index}; resume or promote to continue")
        return

    step = spec.traffic.steps[s.step_index]
    live_since = max(t for t in (s.step_started_at, s.weights_confirmed_at) if t is not None)
    elapsed = steps.seconds_since(live_since, now)
    analysis = s.analysis
    # Strictly after: an analysis gathered in the tick that saw the confirmation measured the step before it.
    fresh = analysis is not None and analysis.step_index == s.step_index and analysis.time > live_since
    if fresh and analysis is not None and analysis.verdict == Verdict.PASSED and elapsed >= step.pause_seconds:
        if step.manual:
            draft.go(Action.HOLD, "WaitingForPromote", f"step {s.step_index} passed; waiting for a promote command")
        else:
            _advance(draft, spec, now, why=f"step {s.step_index} passed analysis: {_summary(s, Verdict.PASSED)}")
        return
    held = elapsed - step.pause_seconds
    if held > spec.analysis.progress_deadline:
        why = (
            f"step {s.step_index} undecided for {held:.0f}s after its pause "
            f"(deadline {spec.analysis.progress_deadline:.0f}s)"
        )
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
        draft.go(Action.HOLD, "Pausing", f"step {s.step_index}: analysis passed; pausing {step.pause_seconds:.0f}s")


def _promoting(draft: _Draft, spec: ModelRolloutSpec, observations: Observations, now: datetime.datetime) -> None:
    """All traffic on green, confirmed: green's model becomes the stable one."""
    s = draft.status
    if _confirmed(s):
        s.stable = StableStatus(model=spec.green.model, server=spec.server, revision=s.green_revision, promoted_at=now)
        draft.go(
            Action.FINALIZE,
            "GreenIsStable",
            f"all traffic on green {spec.green.model.version}: it is the stable model now; blue is redeployed with it",
            phase=Phase.FINALIZING,
        )
        return
    waited = _unconfirmed_for(s, now)
    if waited > spec.traffic.confirm_deadline:
        _roll_back(draft, "RouterNotConfirming", _router_message(draft, waited))
    else:
        draft.go(Action.WAIT, "WaitingForRouter", _router_message(draft, waited))


def _finalizing(draft: _Draft, spec: ModelRolloutSpec, observations: Observations, now: datetime.datetime) -> None:
    """Blue gets the promoted model; traffic goes back to blue once blue is ready, then green scales down.
    Never back to blue before it serves the promoted model: that would be the old one."""
    s = draft.status
    version = s.stable.model.version if s.stable else "?"
    if s.weights.green == 0 and _confirmed(s):
        message = f"promoted: blue serves {version}, the stable model"
        draft.go(Action.PROMOTED, "Promoted", message, phase=Phase.PROMOTED)
    elif s.weights.green > 0 and observations.blue_ready:
        draft.green_target = 0
        draft.go(Action.FINALIZE, "BlueServesStable", f"blue serves {version}: traffic moves back to blue")
    elif s.weights.green > 0:
        waited = steps.seconds_since(s.stable.promoted_at if s.stable else None, now)
        if waited > spec.analysis.progress_deadline:
            # No way back: green runs the stable model and keeps all traffic; someone must look at blue.
            draft.go(
                Action.WAIT,
                "BlueNotReady",
                f"blue has not served {version} for {waited:.0f}s (progressDeadline "
                f"{spec.analysis.progress_deadline:.0f}s); green keeps all traffic until it does",
            )
        else:
            draft.go(Action.WAIT, "WaitingForBlue", f"blue is being redeployed with {version}; green keeps all traffic")
    else:
        draft.go(Action.WAIT, "WaitingForRouter", _router_message(draft, _unconfirmed_for(s, now)))


def _rolling_back(
    draft: _Draft, spec: ModelRolloutSpec | None, observations: Observations, now: datetime.datetime
) -> None:
    s = draft.status
    if _confirmed(s):
        done = Phase.ABORTED if s.rollback_reason == "Aborted" else Phase.ROLLED_BACK
        draft.go(Action.ROLLED_BACK, done.value, f"all traffic on blue: rolled back ({s.rollback_reason})", phase=done)
    else:
        draft.go(Action.WAIT, "WaitingForRouter", _router_message(draft, _unconfirmed_for(s, now)))


def _failed(draft: _Draft, spec: ModelRolloutSpec, observations: Observations, now: datetime.datetime) -> None:
    """The spec parses again (decide() only sees valid specs): start the canary afresh."""
    draft.status.green_revision = ""
    _start_canary(draft, spec, steps.green_revision(spec), now)
    draft.go(Action.RESTART, "SpecFixed", "the spec is valid again: the canary starts from step 0")


def _settled(draft: _Draft, spec: ModelRolloutSpec, observations: Observations, now: datetime.datetime) -> None:
    s = draft.status
    if s.phase is Phase.ROLLED_BACK and s.rollback_reason == "InvalidSpec":
        _failed(draft, spec, observations, now)
        return
    draft.go(Action.WAIT, s.phase.value, s.message or f"{s.phase.value}")


_PHASE_RULES = {
    Phase.PENDING: _pending,
    Phase.PROGRESSING: _analysed,
    Phase.PAUSED: _analysed,
    Phase.PROMOTING: _promoting,
    Phase.FINALIZING: _finalizing,
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


def _step_target(s: ModelRolloutStatus, spec: ModelRolloutSpec) -> int:
    return steps.step_weight(spec.traffic.steps, steps.step_index(spec.traffic.steps, s.step_index))


def _set_weights(draft: _Draft, now: datetime.datetime, *, steps_weight: int, promoting: bool = False) -> None:
    """The weights each phase asks for; a change raises the revision, and only a report of the new
    revision confirms it. A promotion always asks under a new revision, also from a last step at 100%: its
    confirmation is then a report the router made after it read the phase Promoting, when its guard can no
    longer trip (routing.guard.ARMED_PHASES), so green never becomes the stable model while a trip of the
    canary's guard could still send users to blue."""
    s = draft.status
    if s.phase in (Phase.PROGRESSING, Phase.PAUSED):
        green = steps_weight
    elif s.phase is Phase.PROMOTING:
        green = 100
    elif s.phase is Phase.FINALIZING:
        green = s.weights.green if draft.green_target is None else draft.green_target
    else:
        green = 0
    if green != s.weights.green or promoting:
        s.weights = Weights(blue=100 - green, green=green, revision=s.weights.revision + 1)
        s.weights_changed_at, s.weights_confirmed_at = now, None


def _router_message(draft: _Draft, waited: float) -> str:
    s = draft.status
    reported = (
        f"nothing usable{f': {draft.router_note}' if draft.router_note else ''}"
        if s.applied_revision is None
        else f"revision {s.applied_revision} at {s.applied_green_weight}% green"
    )
    return (
        f"waiting {waited:.0f}s for the router to confirm revision {s.weights.revision} at {s.weights.green}% green "
        f"(it reports {reported})"
    )


def _failure_limit(spec: ModelRolloutSpec, check_name: str) -> int:
    checks = spec.analysis.checks
    own = {
        "latency": checks.latency.failure_limit,
        "latency-vs-blue": checks.latency.failure_limit,
        "errors": checks.errors.failure_limit,
        "accuracy": checks.accuracy.failure_limit,
        "health": checks.health.failure_limit,
        "golden": checks.golden.failure_limit,
    }.get(check_name)
    for custom in checks.custom:
        if custom.name == check_name:
            own = custom.failure_limit
    return own or spec.analysis.failure_limit


def _take_analysis(draft: _Draft, spec: ModelRolloutSpec, outcome: AnalysisOutcome) -> None:
    """Store a fresh analysis, counting each check's failures over the canary and consecutive provider
    errors. A check that could not be measured keeps its count."""
    s = draft.status
    previous = {c.name: c.failures for c in s.analysis.checks} if s.analysis else {}
    checks = [
        CheckStatus(
            name=r.name,
            verdict=r.verdict.value,
            message=r.message,
            value=r.value,
            threshold=r.threshold,
            failures=previous.get(r.name, 0) + (1 if r.verdict is Verdict.FAILED else 0),
        )
        for r in outcome.results
    ]
    measured = {c.name for c in checks}
    checks += [
        CheckStatus(name=name, verdict=Verdict.INCONCLUSIVE.value, message="not measured this time", failures=count)
        for name, count in previous.items()
        if name not in measured and count
    ]
    verdict = overall(outcome.results)
    if verdict is Verdict.ERROR:
        s.consecutive_errors += 1
        if s.errors_since is None:
            s.errors_since = outcome.time
    else:
        s.consecutive_errors, s.last_error = 0, ""
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
    if (
        draft.action in QUIET_ACTIONS
        and before.phase in TERMINAL_PHASES
        and before.phase == s.phase
        and draft.reason == before.phase.value
    ):
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


def conditions(
    status: ModelRolloutStatus, *, previous: list[Condition], now: datetime.datetime, degraded_by: str | None = None
) -> list[Condition]:
    """Ready, Progressing and Degraded, per the Kubernetes API conventions (transition time kept when the
    status of a condition does not change). ``degraded_by`` names a problem the status alone does not show."""
    phase = status.phase
    degraded_reason = degraded_by or (
        "InvalidSpec"
        if status.invalid_spec
        else "RouterNotConfirming"
        if status.router_stalled
        else "ReconcileError"
        if status.last_error
        else phase.value
    )
    wanted = {
        "Ready": (phase is Phase.PROMOTED, phase.value),
        "Progressing": (
            phase in (Phase.PENDING, Phase.PROGRESSING, Phase.PROMOTING, Phase.FINALIZING, Phase.ROLLING_BACK),
            phase.value,
        ),
        "Degraded": (
            phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.ABORTED, Phase.FAILED)
            or bool(status.invalid_spec or status.router_stalled or status.last_error or degraded_by),
            degraded_reason,
        ),
    }
    old = {c.type: c for c in previous}
    result = []
    for kind, (true, reason) in wanted.items():
        value = "True" if true else "False"
        earlier = old.get(kind)
        changed = earlier is None or earlier.status != value
        result.append(
            Condition(
                type=kind,
                status=value,
                reason=reason,
                message=status.message,
                last_transition_time=now if changed or earlier is None else earlier.last_transition_time,
            )
        )
    return result
