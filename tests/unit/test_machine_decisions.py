"""What decide() says at each turn of a canary: the action, the reason (an Event's and a condition's reason)
and the message a user reads in ``kubectl describe``; and the boundaries of its deadlines and limits."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from modelrollout.analysis.evaluate import CheckResult, Verdict
from modelrollout.api.spec import ModelRef, ModelRolloutSpec, ServerSpec
from modelrollout.api.status import ModelRolloutStatus, Phase, StableStatus, Weights
from modelrollout.rollout.commands import Command, CommandName
from modelrollout.rollout.machine import (
    Action,
    AnalysisOutcome,
    Decision,
    Observations,
    Serving,
    decide,
    recover,
    reject,
)
from modelrollout.routing.base import NOT_REPORTED, AppliedWeights

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def make_spec(**analysis: Any) -> ModelRolloutSpec:
    return ModelRolloutSpec.model_validate(
        {
            "blue": {"model": {"uri": "file:///v1.onnx", "version": "v1"}},
            "green": {"model": {"uri": "file:///v2.onnx", "version": "v2"}},
            "traffic": {
                "steps": [{"weight": 10, "pause": "10s"}, {"weight": 50, "pause": "10s"}, {"weight": 100}],
                "confirmDeadline": "30s",
            },
            "analysis": {"interval": "5s", "progressDeadline": "60s", **analysis},
        }
    )


SPEC = make_spec()


def tick(
    status: ModelRolloutStatus,
    seconds: float,
    *results: CheckResult,
    spec: ModelRolloutSpec = SPEC,
    router: AppliedWeights | None = None,
    **observed: Any,
) -> Decision:
    """decide() at ``seconds``, the router confirming what ``status`` asks unless told otherwise."""
    observed = {"resources_ready": True, "blue_ready": True, **observed}
    if results:
        observed["analysis"] = AnalysisOutcome(at(seconds), list(results))
    report = AppliedWeights(status.weights.revision, status.weights.green) if router is None else router
    return decide(spec, status, Observations(router=report, **observed), at(seconds))


def check(verdict: Verdict, name: str = "errors", message: str = "") -> CheckResult:
    return CheckResult(name, verdict, message or f"{name} {verdict.value.lower()}", 1.0, 2.0)


def command(name: CommandName, command_id: str) -> Command:
    return Command(name=name, id=command_id, text=name.value)


def progressing(spec: ModelRolloutSpec = SPEC) -> ModelRolloutStatus:
    """Step 0 (10% green), its weights confirmed at T0."""
    status = tick(ModelRolloutStatus(), 0, spec=spec, resources_ready=False).status
    status = tick(status, 0, spec=spec).status
    status = tick(status, 0, spec=spec).status
    assert status.phase is Phase.PROGRESSING and status.weights_confirmed_at == T0
    return status


def said(decision: Decision) -> tuple[Action, str, str]:
    return decision.action, decision.reason, decision.message


# -- the way to the first step


def test_a_new_canary_waits_for_its_model_servers_then_starts_step_zero() -> None:
    created = tick(ModelRolloutStatus(), 0, resources_ready=False)
    assert said(created) == (
        Action.INITIALIZE,
        "Initialized",
        "canary created: waiting for the blue and green model servers",
    )
    waiting = tick(created.status, 1, resources_ready=False)
    assert said(waiting) == (
        Action.WAIT,
        "WaitingForModelServers",
        "waiting for the blue and green model servers to be ready",
    )
    started = tick(waiting.status, 2)
    assert said(started) == (Action.START, "ModelServersReady", "model servers ready: step 0 sends 10% to green")
    assert started.status.step_started_at == at(2)


def test_why_a_model_server_cannot_start_is_said_while_waiting_and_still_rolls_back_at_the_deadline() -> None:
    created = tick(ModelRolloutStatus(), 0, resources_ready=False).status
    why = "green: container fetch-model of pod digits-green-1: model not fetched: https://s/m.onnx: HTTP 404"
    waiting = tick(created, 30, resources_ready=False, start_failures=why)
    assert said(waiting) == (
        Action.WAIT,
        "ModelServerFailing",
        f"waiting for the blue and green model servers to be ready: {why}",
    )
    assert waiting.status.phase is Phase.PENDING
    late = tick(waiting.status, 61, resources_ready=False, start_failures=why)
    assert said(late) == (
        Action.ROLL_BACK,
        "ProgressDeadlineExceeded",
        f"rolling back: model servers not ready within the progress deadline: {why}",
    )


def test_model_servers_get_the_whole_progress_deadline_to_become_ready() -> None:
    created = tick(ModelRolloutStatus(), 0, resources_ready=False).status
    assert tick(created, 60, resources_ready=False).reason == "WaitingForModelServers"
    late = tick(created, 61, resources_ready=False)
    assert said(late) == (
        Action.ROLL_BACK,
        "ProgressDeadlineExceeded",
        "rolling back: model servers not ready within the progress deadline",
    )


# -- steps


def test_a_passed_step_says_what_the_next_one_sends_and_restarts_its_clock() -> None:
    status = progressing()
    pausing = tick(status, 5, check(Verdict.PASSED))
    assert said(pausing) == (Action.HOLD, "Pausing", "step 0: analysis passed; pausing 10s")
    advanced = tick(pausing.status, 10, check(Verdict.PASSED))
    assert said(advanced) == (
        Action.ADVANCE,
        "StepAdvanced",
        "step 0 passed analysis: errors Passed: errors passed; step 1 sends 50% to green",
    )
    assert advanced.status.step_started_at == at(10)


def test_after_the_last_step_all_traffic_moves_to_green() -> None:
    status, second = progressing(), 0
    while status.step_index < 2:
        second += 10
        status = tick(status, second, check(Verdict.PASSED)).status
        status = tick(status, second).status  # the router confirms the step
    done = tick(status, second + 1, check(Verdict.PASSED))  # the last step has no pause
    assert said(done) == (
        Action.PROMOTE,
        "StepsCompleted",
        "step 2 passed analysis: errors Passed: errors passed; all steps done: moving all traffic to green",
    )
    assert done.status.phase is Phase.PROMOTING


def test_an_unanswered_analysis_holds_the_step_and_says_why() -> None:
    error = tick(progressing(), 5, check(Verdict.ERROR, message="Prometheus unreachable"))
    assert said(error) == (Action.HOLD, "MetricsError", "step 0: errors Error: Prometheus unreachable")


def test_the_progress_deadline_counts_after_the_pause_and_is_reached_only_past_it() -> None:
    status = progressing()
    for second in range(5, 70, 5):
        status = tick(status, second, check(Verdict.INCONCLUSIVE)).status
    assert tick(status, 70, check(Verdict.INCONCLUSIVE)).reason == "AnalysisInconclusive"  # held exactly 60 s
    late = tick(status, 71, check(Verdict.INCONCLUSIVE))
    assert said(late) == (
        Action.ROLL_BACK,
        "ProgressDeadlineExceeded",
        "rolling back: step 0 undecided for 61s after its pause (deadline 60s): errors Inconclusive: "
        "errors inconclusive",
    )


def test_the_progress_deadline_can_pause_the_canary_instead() -> None:
    spec = make_spec(onDeadline="pause")
    paused = tick(progressing(spec), 71, check(Verdict.INCONCLUSIVE), spec=spec)
    assert said(paused) == (
        Action.PAUSE,
        "ProgressDeadlineExceeded",
        "step 0 undecided for 61s after its pause (deadline 60s): paused",
    )
    assert paused.status.phase is Phase.PAUSED
    again = tick(paused.status, 72, spec=spec)
    assert said(again) == (Action.HOLD, "Paused", "paused at step 0; resume or promote to continue")


def test_errors_roll_back_only_once_they_lasted_the_error_window() -> None:
    spec = make_spec(consecutiveErrorLimit=2)
    status = progressing(spec)
    first = tick(status, 5, check(Verdict.ERROR), spec=spec)
    assert first.action is Action.HOLD
    too_soon = tick(first.status, 9, check(Verdict.ERROR), spec=spec)  # 2 in a row, over 4 s < 1 interval
    assert too_soon.action is Action.HOLD
    rolled_back = tick(first.status, 10, check(Verdict.ERROR, message="down"), spec=spec)
    assert said(rolled_back) == (
        Action.ROLL_BACK,
        "MetricsUnavailable",
        "rolling back: metrics provider failed 2 analyses in a row (limit 2): errors Error: down",
    )


def test_exhausted_checks_are_named_with_their_count() -> None:
    spec = make_spec(failureLimit=1)
    failed = tick(progressing(spec), 5, check(Verdict.FAILED, "latency", "0.3s > 0.15s"), spec=spec)
    assert said(failed) == (
        Action.ROLL_BACK,
        "AnalysisFailed",
        "rolling back: latency: 0.3s > 0.15s (failed 1x this canary)",
    )
    two = tick(
        progressing(spec),
        5,
        check(Verdict.FAILED, "latency", "slow"),
        check(Verdict.FAILED, "errors", "failing"),
        spec=spec,
    )
    assert two.message == "rolling back: latency: slow (failed 1x this canary); errors: failing (failed 1x this canary)"


@pytest.mark.parametrize("name", ["latency", "latency-vs-blue", "errors", "accuracy", "health", "golden"])
def test_each_built_in_check_has_its_own_failure_limit(name: str) -> None:
    own = {"latency-vs-blue": "latency"}.get(name, name)
    spec = make_spec(failureLimit=3, checks={own: {"failureLimit": 1}})
    assert tick(progressing(spec), 5, check(Verdict.FAILED, name), spec=spec).action is Action.ROLL_BACK
    other = "errors" if own != "errors" else "latency"
    assert tick(progressing(spec), 5, check(Verdict.FAILED, other), spec=spec).action is Action.HOLD


def test_a_custom_check_has_its_own_failure_limit_and_others_the_rollouts() -> None:
    spec = make_spec(
        failureLimit=3,
        checks={
            "custom": [
                {"name": "queue", "query": "q", "max": 1, "failureLimit": 1},
                {"name": "cost", "query": "c", "max": 1},
            ]
        },
    )
    assert tick(progressing(spec), 5, check(Verdict.FAILED, "queue"), spec=spec).action is Action.ROLL_BACK
    assert tick(progressing(spec), 5, check(Verdict.FAILED, "cost"), spec=spec).action is Action.HOLD


def test_a_router_that_never_confirms_rolls_the_step_back_with_what_it_reports() -> None:
    status = progressing()
    advanced = tick(tick(status, 5, check(Verdict.PASSED)).status, 10, check(Verdict.PASSED)).status
    stale = AppliedWeights(advanced.weights.revision - 1, 10)
    waiting = tick(advanced, 40, router=stale)
    assert said(waiting) == (
        Action.HOLD,
        "WaitingForRouter",
        f"waiting 30s for the router to confirm revision {advanced.weights.revision} at 50% green "
        f"(it reports revision {advanced.weights.revision - 1} at 10% green)",
    )
    gone = tick(advanced, 41, router=NOT_REPORTED)
    assert said(gone) == (
        Action.ROLL_BACK,
        "RouterNotConfirming",
        f"rolling back: waiting 31s for the router to confirm revision {advanced.weights.revision} at 50% green "
        "(it reports nothing usable: no report from the router)",
    )
    assert not waiting.status.router_stalled  # exactly the deadline: not yet
    replicas = AppliedWeights(revision=None, green=None, note="router replica r-b has not reported")
    assert tick(advanced, 20, router=replicas).message.endswith(
        "(it reports nothing usable: router replica r-b has not reported)"
    )


# -- commands


def test_each_command_says_what_it_did() -> None:
    status = progressing()
    paused = tick(status, 1, command=command(CommandName.PAUSE, "p"))
    assert said(paused) == (Action.PAUSE, "PausedByUser", "paused by a user command at step 0")
    resumed = tick(paused.status, 2, command=command(CommandName.RESUME, "r"))
    assert said(resumed) == (Action.RESUME, "Resumed", "resumed by a user command at step 0")
    assert resumed.status.step_started_at == at(2)  # the step's pause counts again from the resume
    promoted = tick(resumed.status, 3, command=command(CommandName.PROMOTE, "one"))
    assert said(promoted) == (
        Action.ADVANCE,
        "StepAdvanced",
        "promoted one step by a user command; step 1 sends 50% to green",
    )
    assert promoted.status.step_started_at == at(3)
    full = tick(promoted.status, 4, command=command(CommandName.PROMOTE_FULL, "full"))
    assert said(full) == (Action.PROMOTE, "PromotedByUser", "fully promoted by a user command")
    aborted = tick(status, 5, command=command(CommandName.ABORT, "stop"))
    assert said(aborted) == (Action.ROLL_BACK, "Aborted", "rolling back: aborted by a user command")


def test_a_command_that_does_not_apply_is_ignored_with_the_phase() -> None:
    status = progressing()
    for name in (CommandName.RESUME, CommandName.RETRY):
        ignored = tick(status, 1, command=command(name, name.value))
        assert said(ignored) == (
            Action.IGNORE_COMMAND,
            "CommandIgnored",
            f"command {name.value} does not apply in phase Progressing",
        )
        assert ignored.status.phase is Phase.PROGRESSING


def test_retry_after_a_rollback_starts_the_canary_again() -> None:
    aborted = tick(progressing(), 1, command=command(CommandName.ABORT, "stop")).status
    rolled_back = tick(aborted, 2).status
    assert rolled_back.phase is Phase.ABORTED
    retried = tick(rolled_back, 3, command=command(CommandName.RETRY, "again"), resources_ready=False)
    assert said(retried) == (
        Action.RESTART,
        "Retried",
        "retried by a user command: the canary starts again from step 0",
    )
    assert retried.status.phase is Phase.PENDING and retried.status.started_at == at(3)
    assert retried.status.green_revision == rolled_back.green_revision
    assert (retried.status.step_index, retried.status.consecutive_errors, retried.status.analysis) == (0, 0, None)
    assert said(tick(rolled_back, 3, command=command(CommandName.RETRY, "again")))[0] is Action.RESTART


# -- settled phases, rejection


def test_a_settled_rollout_repeats_its_phase_and_last_message() -> None:
    aborted = tick(tick(progressing(), 1, command=command(CommandName.ABORT, "stop")).status, 2)
    assert said(aborted) == (Action.ROLLED_BACK, "Aborted", "all traffic on blue: rolled back (Aborted)")
    resting = tick(aborted.status, 3)
    assert said(resting) == (Action.WAIT, "Aborted", "all traffic on blue: rolled back (Aborted)")
    assert not resting.recorded  # quiet: nothing new in the history


def test_a_rejected_spec_says_the_problem_and_a_fixed_one_restarts() -> None:
    status = progressing()
    rejected = reject(status, "spec.green.model.uri: only file:// URIs", Observations(), at(1))
    assert said(rejected) == (
        Action.ROLL_BACK,
        "InvalidSpec",
        "rolling back: the spec cannot be rolled out: spec.green.model.uri: only file:// URIs",
    )
    assert rejected.status.invalid_spec == "spec.green.model.uri: only file:// URIs"
    assert status.invalid_spec == ""  # the input is never changed
    rolled_back = reject(
        rejected.status,
        "still bad",
        Observations(router=AppliedWeights(rejected.status.weights.revision, 0)),
        at(2),
    )
    assert said(rolled_back)[:2] == (Action.ROLLED_BACK, "RolledBack")
    fixed = tick(rolled_back.status, 3, resources_ready=False)
    assert said(fixed) == (Action.RESTART, "SpecFixed", "the spec is valid again: the canary starts from step 0")
    assert fixed.status.phase is Phase.PENDING and fixed.status.started_at == at(3)
    never_valid = reject(ModelRolloutStatus(), "bad", Observations(), at(0))
    assert said(never_valid) == (Action.WAIT, "InvalidSpec", "the spec cannot be rolled out: bad")


def test_decide_never_changes_the_status_it_is_given() -> None:
    status = progressing()
    before = status.model_dump()
    tick(status, 5, check(Verdict.FAILED))
    tick(status, 6, command=command(CommandName.ABORT, "stop"))
    reject(status, "bad", Observations(), at(7))
    assert status.model_dump() == before


def test_a_condition_keeps_its_transition_time_until_its_status_changes() -> None:
    status = progressing()

    def transition(decision: Decision, kind: str) -> datetime.datetime:
        [found] = [c for c in decision.status.conditions if c.type == kind]
        return found.last_transition_time

    held = tick(status, 5, check(Verdict.PASSED))
    assert transition(held, "Progressing") == T0  # True since the canary started
    aborted = tick(held.status, 6, command=command(CommandName.ABORT, "stop"))
    assert transition(aborted, "Degraded") == at(6)
    assert transition(aborted, "Progressing") == T0  # rolling back is progressing too
    assert transition(tick(aborted.status, 7, router=NOT_REPORTED), "Degraded") == at(6)


# -- a status recovered from the cluster


RECORDED = StableStatus(
    model=ModelRef(uri="file:///v2.onnx", version="v2"), server=ServerSpec(), revision="r2", promoted_at=at(-100)
)
HANDING_BACK = Serving(blue_runs_only_stable=False, blue_ready=False, green_runs_stable=True)


def recovered(status: ModelRolloutStatus | None = None, **kwargs: Any) -> ModelRolloutStatus:
    arguments: dict[str, Any] = {
        "recorded": RECORDED,
        "green_serves": None,
        "serving": HANDING_BACK,
        "router": NOT_REPORTED,
        "now": at(0),
        **kwargs,
    }
    return recover(status or ModelRolloutStatus(), **arguments)


@pytest.mark.parametrize(
    ("report", "weights"),
    [
        (AppliedWeights(7, 100), Weights(blue=0, green=100, revision=7)),
        (AppliedWeights(7, 40), Weights(blue=60, green=40, revision=7)),  # the router's weights, as they are
        (AppliedWeights(7, 0), Weights(blue=0, green=100, revision=8)),  # asked again under a newer revision
        (NOT_REPORTED, Weights(blue=0, green=100, revision=1)),
    ],
)
def test_a_lost_status_resumes_the_hand_back_at_the_routers_weights(report: AppliedWeights, weights: Weights) -> None:
    status = recovered(router=report)
    assert status.phase is Phase.FINALIZING
    assert status.stable == RECORDED and status.green_revision == "r2"
    assert status.weights == weights
    assert (status.weights_changed_at, status.weights_confirmed_at) == (at(0), None)
    assert status.message == "status recovered while v2 was handed back to blue"


@pytest.mark.parametrize(
    ("serving", "report", "handing_back"),
    [
        (Serving(blue_runs_only_stable=True, blue_ready=True, green_runs_stable=True), AppliedWeights(7, 40), False),
        (Serving(blue_runs_only_stable=True, blue_ready=False, green_runs_stable=True), AppliedWeights(7, 40), True),
        (Serving(blue_runs_only_stable=True, blue_ready=False, green_runs_stable=True), AppliedWeights(7, 0), False),
        (Serving(blue_runs_only_stable=True, blue_ready=False, green_runs_stable=True), NOT_REPORTED, False),
        (Serving(blue_runs_only_stable=False, blue_ready=True, green_runs_stable=False), AppliedWeights(7, 40), False),
        (Serving(blue_runs_only_stable=False, blue_ready=True, green_runs_stable=True), NOT_REPORTED, True),
    ],
)
def test_the_hand_back_resumes_only_while_green_serves_the_promoted_model_and_blue_cannot(
    serving: Serving, report: AppliedWeights, handing_back: bool
) -> None:
    status = recovered(serving=serving, router=report)
    assert status.stable == RECORDED
    assert (status.phase is Phase.FINALIZING) is handing_back


def test_a_record_of_the_first_blue_fills_a_lost_stable_model() -> None:
    first = RECORDED.model_copy(update={"promoted_at": None, "revision": ""})
    assert recovered(recorded=first).stable == first
    assert recovered(recorded=None).stable is None


def test_a_rollout_promoted_by_an_earlier_operator_hands_back_through_finalizing() -> None:
    model, server = ModelRef(uri="file:///v2.onnx", version="v2"), ServerSpec()
    promoted = ModelRolloutStatus(phase=Phase.PROMOTED, weights=Weights(blue=0, green=100, revision=4))
    status = recovered(promoted, recorded=None, green_serves=(model, server))
    assert status.phase is Phase.FINALIZING
    assert status.stable is not None and status.stable.model == model and status.stable.promoted_at == at(0)
    assert status.green_revision == status.stable.revision
    assert status.message == "promoted by an earlier operator version: blue is redeployed with v2"
    assert promoted.stable is None  # the input is never changed
    on_blue = promoted.model_copy(update={"weights": Weights(blue=100, green=0, revision=4)})
    assert recovered(on_blue, recorded=None, green_serves=(model, server)).stable is None
    rolled_back = promoted.model_copy(update={"phase": Phase.ROLLED_BACK})
    assert recovered(rolled_back, recorded=None, green_serves=(model, server)).stable is None


# -- promotion and the hand-back to blue


def test_a_promotion_hands_traffic_back_to_blue_once_blue_serves_the_promoted_model() -> None:
    promoting = tick(progressing(), 1, command=command(CommandName.PROMOTE_FULL, "full")).status
    unconfirmed = tick(promoting, 2, router=NOT_REPORTED)
    assert said(unconfirmed) == (
        Action.WAIT,
        "WaitingForRouter",
        f"waiting 1s for the router to confirm revision {promoting.weights.revision} at 100% green "
        "(it reports nothing usable: no report from the router)",
    )
    stable = tick(promoting, 3)
    assert said(stable) == (
        Action.FINALIZE,
        "GreenIsStable",
        "all traffic on green v2: it is the stable model now; blue is redeployed with it",
    )
    assert stable.status.stable is not None and stable.status.stable.promoted_at == at(3)
    waiting = tick(stable.status, 63, blue_ready=False)  # exactly the progress deadline after the promotion
    assert said(waiting) == (Action.WAIT, "WaitingForBlue", "blue is being redeployed with v2; green keeps all traffic")
    stuck = tick(stable.status, 64, blue_ready=False)
    assert said(stuck) == (
        Action.WAIT,
        "BlueNotReady",
        "blue has not served v2 for 61s (progressDeadline 60s); green keeps all traffic until it does",
    )
    back = tick(stuck.status, 65)
    assert said(back) == (Action.FINALIZE, "BlueServesStable", "blue serves v2: traffic moves back to blue")
    assert back.status.weights.green == 0
    routing = tick(back.status, 66, router=NOT_REPORTED)
    assert said(routing)[:2] == (Action.WAIT, "WaitingForRouter")
    done = tick(back.status, 67)
    assert said(done) == (Action.PROMOTED, "Promoted", "promoted: blue serves v2, the stable model")


def test_an_unconfirmed_promotion_rolls_back_past_the_confirm_deadline() -> None:
    promoting = tick(progressing(), 1, command=command(CommandName.PROMOTE_FULL, "full")).status
    assert tick(promoting, 31, router=NOT_REPORTED).reason == "WaitingForRouter"
    late = tick(promoting, 32, router=NOT_REPORTED)
    assert said(late) == (
        Action.ROLL_BACK,
        "RouterNotConfirming",
        f"rolling back: waiting 31s for the router to confirm revision {promoting.weights.revision} at 100% green "
        "(it reports nothing usable: no report from the router)",
    )


def test_a_hand_back_recovered_at_one_percent_still_moves_to_blue() -> None:
    status = recovered(router=AppliedWeights(7, 1))
    decision = decide(SPEC, status, Observations(router=AppliedWeights(7, 1), blue_ready=True), at(1))
    assert decision.reason == "BlueServesStable" and decision.status.weights.green == 0


# -- failures to reconcile, and summaries of analyses


def test_a_failed_reconcile_says_how_often_and_why() -> None:
    failing = tick(progressing(), 1, error="the API server refused the Deployment")
    assert said(failing) == (
        Action.HOLD,
        "ReconcileError",
        "reconcile failed (1x, retrying): the API server refused the Deployment",
    )


def test_the_summary_of_an_analysis_names_the_checks_of_the_verdict() -> None:
    both_down = tick(
        progressing(),
        5,
        check(Verdict.ERROR, "errors", "Prometheus unreachable"),
        check(Verdict.ERROR, "latency", "Prometheus unreachable"),
        check(Verdict.PASSED, "accuracy", "fine"),
    )
    assert both_down.message == "step 0: errors, latency Error: Prometheus unreachable"
    mixed = tick(
        progressing(),
        5,
        check(Verdict.FAILED, "errors", "0.02 > 0.005"),
        check(Verdict.FAILED, "latency", "0.3s > 0.15s"),
        check(Verdict.PASSED, "accuracy", "fine"),
    )
    assert mixed.message == "step 0: errors Failed: 0.02 > 0.005; latency Failed: 0.3s > 0.15s"
    different = tick(
        progressing(),
        5,
        check(Verdict.ERROR, "errors", "timeout"),
        check(Verdict.ERROR, "latency", "refused"),
    )
    assert different.message == "step 0: errors Error: timeout; latency Error: refused"


def test_a_check_not_measured_this_time_keeps_its_failures_and_says_so() -> None:
    failed = tick(progressing(), 5, check(Verdict.FAILED, "latency", "slow"), check(Verdict.PASSED, "errors")).status
    later = tick(failed, 10, check(Verdict.PASSED, "errors")).status
    assert later.analysis is not None
    [latency] = [c for c in later.analysis.checks if c.name == "latency"]
    assert (latency.verdict, latency.message, latency.failures) == ("Inconclusive", "not measured this time", 1)
