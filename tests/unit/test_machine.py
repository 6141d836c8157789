"""decide() and reject(): the canary's rules, table by table, and properties that hold for any sequence of inputs.

Tests named after an item of the rollout-safety issue are regressions: each fails on the machine before the
rewrite (7f4a82a), where a typo command crashed, a spec change after promotion sent traffic back to the old
blue, any report (or none) confirmed weights, and a Passed analysis reset the failure count.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelrollout.analysis.evaluate import CheckResult, Verdict
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import ModelRolloutStatus, Phase, without_nulls
from modelrollout.rollout import steps
from modelrollout.rollout.commands import Command, CommandName
from modelrollout.rollout.machine import (
    QUIET_ACTIONS,
    Action,
    AnalysisOutcome,
    Decision,
    Observations,
    Serving,
    decide,
    failed_reconcile,
    recover,
    reject,
)
from modelrollout.routing.base import NOT_REPORTED, AppliedWeights

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def make_spec(*, green: str = "v2", blue: str = "v1", replicas: int = 1, **overrides: Any) -> ModelRolloutSpec:
    traffic = {
        "steps": [{"weight": 10, "pause": "10s"}, {"weight": 50, "pause": "10s"}, {"weight": 100}],
        "confirmDeadline": "30s",
        **overrides.pop("traffic", {}),
    }
    return ModelRolloutSpec.model_validate(
        {
            "server": {"replicas": replicas},
            "blue": {"model": {"uri": f"file:///{blue}.onnx", "version": blue}},
            "green": {"model": {"uri": f"file:///{green}.onnx", "version": green}},
            "traffic": traffic,
            "analysis": {"interval": "5s", "progressDeadline": "60s", **overrides},
        }
    )


SPEC = make_spec()
LAST_STEP = len(SPEC.traffic.steps) - 1


def analysis(now: datetime.datetime, *verdicts: Verdict) -> AnalysisOutcome:
    names = ["errors", "latency", "accuracy"]
    return AnalysisOutcome(now, [CheckResult(names[i], v, f"{v} message", 1.0, 2.0) for i, v in enumerate(verdicts)])


def confirms(status: ModelRolloutStatus) -> AppliedWeights:
    """The router's report once it applied what ``status`` asks for."""
    return AppliedWeights(status.weights.revision, status.weights.green)


def tick(
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    seconds: float,
    *verdicts: Verdict,
    router: AppliedWeights | None = None,
    **observed: Any,
) -> Decision:
    """decide() at ``seconds``: an analysis of ``verdicts`` if any, the router confirming what ``status`` asks
    unless ``router`` says otherwise, both colours ready unless ``observed`` says otherwise."""
    observed = {"resources_ready": True, "blue_ready": True, **observed}
    if verdicts:
        observed["analysis"] = analysis(at(seconds), *verdicts)
    report = confirms(status) if router is None else router
    return decide(spec, status, Observations(router=report, **observed), at(seconds))


def command(name: CommandName | None, command_id: str, text: str = "") -> Command:
    return Command(name=name, id=command_id, text=text or (name.value if name else "typo"))


def progressing(spec: ModelRolloutSpec = SPEC) -> ModelRolloutStatus:
    """A rollout at step 0 (10% green), its weights confirmed at T0."""
    status = tick(spec, ModelRolloutStatus(), 0, resources_ready=False).status
    status = tick(spec, status, 0).status
    status = tick(spec, status, 0).status
    assert status.phase is Phase.PROGRESSING and status.weights_confirmed_at == T0
    return status


def promoting_by_user(spec: ModelRolloutSpec = SPEC) -> ModelRolloutStatus:
    """Promoting at T0+1s (all traffic asked for green, not yet confirmed)."""
    status = tick(spec, progressing(spec), 1, command=command(CommandName.PROMOTE_FULL, "full")).status
    assert status.phase is Phase.PROMOTING and status.weights.green == 100 and status.weights_confirmed_at is None
    return status


def promoted(spec: ModelRolloutSpec = SPEC) -> ModelRolloutStatus:
    """Green (v2) promoted: blue serves it, all traffic on blue, confirmed (T0+4s)."""
    status = promoting_by_user(spec)
    for second in (2, 3, 4):
        status = tick(spec, status, second).status
    assert status.phase is Phase.PROMOTED and status.weights.green == 0 and status.weights_confirmed_at is not None
    return status


def at_step(index: int, spec: ModelRolloutSpec = SPEC) -> tuple[ModelRolloutStatus, float]:
    """A healthy canary (an analysis every 5 s, all Passed) just advanced to step ``index``, and when."""
    status, second = progressing(spec), 0.0
    while status.step_index < index:
        second += 5
        status = tick(spec, status, second, Verdict.PASSED).status
        assert status.phase is Phase.PROGRESSING
    return status, second


def condition(status: ModelRolloutStatus, kind: str) -> tuple[str, str]:
    found = [(c.status, c.reason) for c in status.conditions if c.type == kind]
    assert len(found) == 1
    return found[0]


def merge_patch(stored: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies ``patch["status"]``: null removes a key."""
    if not isinstance(patch, dict):
        return patch
    result = dict(stored) if isinstance(stored, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def stored(previous: ModelRolloutStatus | None, decision: Decision) -> ModelRolloutStatus:
    """The status as read back after the controller wrote ``decision`` as a merge patch."""
    before = previous.to_api() if previous is not None else {}
    return ModelRolloutStatus.model_validate(merge_patch(without_nulls(before), decision.status.to_api()))


# --- the canary, step by step


def test_new_rollout_waits_for_model_servers_at_zero_weight() -> None:
    decision = tick(SPEC, ModelRolloutStatus(), 0, resources_ready=False)
    assert decision.action is Action.INITIALIZE
    assert decision.status.phase is Phase.PENDING and decision.green_weight == 0
    again = tick(SPEC, decision.status, 1, resources_ready=False)
    assert again.action is Action.WAIT and again.green_weight == 0


def test_ready_model_servers_start_step_zero_with_a_new_weights_revision() -> None:
    pending = tick(SPEC, ModelRolloutStatus(), 0, resources_ready=False).status
    started = tick(SPEC, pending, 1)
    assert started.action is Action.START and started.status.phase is Phase.PROGRESSING
    assert started.status.weights.green == 10 and started.status.weights.blue == 90
    assert started.weights_revision == pending.weights.revision + 1
    assert started.status.weights_confirmed_at is None


def test_step_advances_only_after_pause_and_a_passed_analysis_at_this_step() -> None:
    status = progressing()
    early = tick(SPEC, status, 5, Verdict.PASSED)
    assert early.action is Action.HOLD and early.status.step_index == 0 and "pausing" in early.message
    done = tick(SPEC, early.status, 10, Verdict.PASSED)
    assert done.action is Action.ADVANCE and done.status.step_index == 1 and done.green_weight == 50
    # the analysis taken at step 0 does not count for step 1
    held = tick(SPEC, done.status, 25)
    assert held.action is Action.HOLD and held.reason == "WaitingForAnalysis"


def test_item4_the_step_clock_starts_when_the_router_confirms() -> None:
    status = tick(SPEC, tick(SPEC, progressing(), 5, Verdict.PASSED).status, 10, Verdict.PASSED).status
    assert status.step_index == 1 and status.weights_confirmed_at is None
    stale = AppliedWeights(status.weights.revision - 1, 10)
    waiting = tick(SPEC, status, 20, Verdict.PASSED, router=stale)
    assert waiting.reason == "WaitingForRouter" and waiting.status.step_index == 1
    confirmed = tick(SPEC, waiting.status, 25).status
    assert confirmed.weights_confirmed_at == at(25)
    # 10 s after the step began but 5 s after confirmation: the pause is not over
    early = tick(SPEC, confirmed, 30, Verdict.PASSED)
    assert early.action is Action.HOLD and early.status.step_index == 1
    done = tick(SPEC, early.status, 35, Verdict.PASSED)
    assert done.action is Action.ADVANCE and done.status.step_index == 2


def test_inconclusive_holds_and_never_advances() -> None:
    status = progressing()
    for second in range(5, 70, 5):
        decision = tick(SPEC, status, second, Verdict.PASSED, Verdict.INCONCLUSIVE)
        assert decision.action is Action.HOLD and decision.status.step_index == 0
        status = decision.status
    assert decision.reason == "AnalysisInconclusive"


def test_progress_deadline_counts_holding_after_the_pause() -> None:
    status = progressing()
    # 65 s into a step with a 10 s pause has held 55 s: within the 60 s deadline
    held = tick(SPEC, status, 65, Verdict.INCONCLUSIVE)
    assert held.status.phase is Phase.PROGRESSING
    decision = tick(SPEC, held.status, 71, Verdict.INCONCLUSIVE)
    assert decision.status.phase is Phase.ROLLING_BACK
    assert decision.reason == "ProgressDeadlineExceeded" and decision.green_weight == 0


def test_progress_deadline_can_pause_instead() -> None:
    spec = make_spec(onDeadline="pause")
    decision = tick(spec, progressing(spec), 71, Verdict.INCONCLUSIVE)
    assert decision.status.phase is Phase.PAUSED and decision.green_weight == 10


def test_item7_a_pause_longer_than_the_progress_deadline_still_advances_a_healthy_canary() -> None:
    spec = make_spec(traffic={"steps": [{"weight": 10, "pause": "2m"}, {"weight": 100}]})
    status = progressing(spec)
    for second in range(5, 120, 5):
        decision = tick(spec, status, second, Verdict.PASSED)
        assert decision.status.phase is Phase.PROGRESSING and decision.status.step_index == 0, second
        status = decision.status
    done = tick(spec, status, 120, Verdict.PASSED)
    assert done.action is Action.ADVANCE and done.status.step_index == 1


def test_failures_up_to_the_limit_roll_back_with_values_and_thresholds() -> None:
    first = tick(SPEC, progressing(), 5, Verdict.FAILED)
    assert first.status.phase is Phase.PROGRESSING and first.reason == "AnalysisFailing"
    second = tick(SPEC, first.status, 10, Verdict.FAILED)
    assert second.status.phase is Phase.ROLLING_BACK and second.reason == "AnalysisFailed"
    assert second.green_weight == 0
    assert "errors" in second.message and "failed 2x" in second.message
    assert second.recorded and second.status.history[-1].reason == "AnalysisFailed"


def failures(status: ModelRolloutStatus) -> dict[str, int]:
    """How often each check failed during this canary, as status records it."""
    return {c.name: c.failures for c in status.analysis.checks} if status.analysis else {}


def test_item6_a_pass_between_failures_does_not_reset_the_count() -> None:
    # a pause of 5 minutes: the Passed analysis in between cannot advance the step, so only the count decides
    spec = make_spec(traffic={"steps": [{"weight": 10, "pause": "5m"}, {"weight": 100}]})
    failed = tick(spec, progressing(spec), 5, Verdict.FAILED).status
    assert failed.phase is Phase.PROGRESSING and failures(failed) == {"errors": 1}
    passed = tick(spec, failed, 10, Verdict.PASSED).status
    assert passed.phase is Phase.PROGRESSING and passed.step_index == 0
    assert passed.analysis is not None and passed.analysis.verdict == Verdict.PASSED
    assert failures(passed) == {"errors": 1}
    decision = tick(spec, passed, 15, Verdict.FAILED)
    assert failures(decision.status) == {"errors": 2} and decision.status.step_index == 0
    assert decision.status.phase is Phase.ROLLING_BACK and decision.reason == "AnalysisFailed"
    assert "failed 2x" in decision.message


def test_item6_alternating_failed_and_passed_is_rolled_back_never_promoted() -> None:
    # a failure limit of 8, and steps long enough for 15 analyses: the 8th failure comes at step 1
    spec = make_spec(
        failureLimit=8, traffic={"steps": [{"weight": 10, "pause": "40s"}, {"weight": 50, "pause": "40s"}]}
    )
    status = progressing(spec)
    phases = set()
    for n in range(1, 16):
        verdict = Verdict.FAILED if n % 2 else Verdict.PASSED
        status = tick(spec, status, 5 * n, verdict).status
        phases.add(status.phase)
    assert status.phase is Phase.ROLLING_BACK and status.rollback_reason == "AnalysisFailed"
    assert status.analysis is not None and status.analysis.checks[0].failures == 8
    assert not phases & {Phase.PROMOTING, Phase.FINALIZING, Phase.PROMOTED}
    assert tick(spec, status, 80).status.phase is Phase.ROLLED_BACK


def test_a_check_that_is_not_measured_keeps_its_failures() -> None:
    status = tick(SPEC, progressing(), 5, Verdict.FAILED).status
    unmeasured = AnalysisOutcome(at(10), [CheckResult("latency", Verdict.PASSED, "ok")])
    status = decide(
        SPEC, status, Observations(resources_ready=True, analysis=unmeasured, router=confirms(status)), at(10)
    ).status
    assert status.analysis is not None
    assert {c.name: c.failures for c in status.analysis.checks} == {"latency": 0, "errors": 1}
    assert tick(SPEC, status, 15, Verdict.FAILED).status.phase is Phase.ROLLING_BACK


def test_metrics_errors_hold_then_roll_back_at_the_limit() -> None:
    status = progressing()
    for second in (5, 10):
        decision = tick(SPEC, status, second, Verdict.ERROR)
        assert decision.status.phase is Phase.PROGRESSING and decision.green_weight == 10
        status = decision.status
    decision = tick(SPEC, status, 15, Verdict.ERROR)
    assert decision.status.phase is Phase.ROLLING_BACK and decision.reason == "MetricsUnavailable"


def test_last_step_passed_promotes_hands_back_to_blue_and_settles() -> None:
    status = progressing()
    second = 0
    while status.phase is Phase.PROGRESSING:
        second += 5
        status = tick(SPEC, status, second, Verdict.PASSED).status
    assert status.phase is Phase.PROMOTING and status.weights.green == 100
    assert status.analysis is not None and status.analysis.step_index == LAST_STEP
    finalizing = tick(SPEC, status, second + 1)
    assert finalizing.action is Action.FINALIZE and finalizing.status.phase is Phase.FINALIZING
    assert finalizing.status.stable is not None and finalizing.status.stable.model.version == "v2"
    back = tick(SPEC, finalizing.status, second + 2)
    assert back.status.phase is Phase.FINALIZING and back.green_weight == 0
    done = tick(SPEC, back.status, second + 3)
    assert done.status.phase is Phase.PROMOTED and done.action is Action.PROMOTED
    assert condition(done.status, "Ready")[0] == "True"


def test_manual_step_waits_for_promote() -> None:
    spec = make_spec(traffic={"steps": [{"weight": 20, "pause": "manual"}, {"weight": 100}]})
    status = progressing(spec)
    held = tick(spec, status, 100, Verdict.PASSED)
    assert held.reason == "WaitingForPromote" and held.status.step_index == 0
    stepped = tick(spec, held.status, 101, command=command(CommandName.PROMOTE, "a"))
    assert stepped.status.step_index == 1 and stepped.green_weight == 100


def test_commands_act_once() -> None:
    status = progressing()
    paused = tick(SPEC, status, 1, command=command(CommandName.PAUSE, "p1"))
    assert paused.status.phase is Phase.PAUSED
    resumed = tick(SPEC, paused.status, 2, command=command(CommandName.RESUME, "r1"))
    assert resumed.status.phase is Phase.PROGRESSING
    # the same resume again (same id) is not a new command
    again = tick(SPEC, resumed.status, 3, command=command(CommandName.RESUME, "r1"))
    assert again.action is not Action.IGNORE_COMMAND


def test_retry_after_rollback_starts_again() -> None:
    status = tick(SPEC, progressing(), 1, command=command(CommandName.ABORT, "1")).status
    status = tick(SPEC, status, 2).status
    assert status.phase is Phase.ABORTED
    retried = tick(SPEC, status, 3, command=command(CommandName.RETRY, "2"))
    assert retried.status.phase is Phase.PENDING and retried.status.step_index == 0
    assert retried.action is Action.RESTART and retried.reason == "Retried"


def test_changing_green_restarts_from_step_zero() -> None:
    status = tick(SPEC, tick(SPEC, progressing(), 5, Verdict.PASSED).status, 10, Verdict.PASSED).status
    assert status.step_index == 1
    decision = tick(make_spec(green="v3"), status, 11)
    assert decision.action is Action.RESTART and decision.status.phase is Phase.PENDING
    assert decision.green_weight == 0 and decision.status.analysis is None


def test_decide_is_idempotent() -> None:
    status = progressing()
    obs = Observations(resources_ready=True, analysis=analysis(at(10), Verdict.PASSED), router=confirms(status))
    assert decide(SPEC, status, obs, at(10)) == decide(SPEC, status, obs, at(10))


def test_holding_does_not_flood_the_history() -> None:
    status = progressing()
    for second in range(5, 50, 5):
        status = tick(SPEC, status, second, Verdict.INCONCLUSIVE).status
    assert sum(1 for h in status.history if h.reason == "AnalysisInconclusive") == 1


# --- item 2: bad input never moves traffic by itself


@pytest.mark.parametrize("when", ["mid-canary", "after promotion"])
def test_item2_a_typo_command_is_refused_and_changes_neither_phase_nor_weights(when: str) -> None:
    status = progressing() if when == "mid-canary" else promoted()
    decision = tick(SPEC, status, 10, command=command(None, "t1", "promot"))
    assert decision.action is Action.IGNORE_COMMAND and decision.reason == "UnknownCommand"
    assert decision.status.phase is status.phase and decision.status.weights == status.weights
    assert decision.recorded and "'promot'" in decision.message and "promote-full" in decision.message
    assert decision.status.last_command_id == "t1"  # refused once, not again every tick


def test_item2_an_unservable_spec_after_promotion_leaves_traffic_where_it_was() -> None:
    status = promoted()
    problem = "spec.green.model.uri: 's3://bucket/m.onnx' cannot be served"
    decision = reject(status, problem, Observations(router=confirms(status)), at(10))
    assert decision.status.phase is Phase.PROMOTED and decision.status.weights == status.weights
    assert decision.status.stable == status.stable
    assert decision.status.invalid_spec == problem and problem in decision.message
    assert condition(decision.status, "Degraded") == ("True", "InvalidSpec")
    assert decision.recorded and decision.reason == "InvalidSpec"
    fixed = tick(SPEC, decision.status, 11)
    assert fixed.status.phase is Phase.PROMOTED and fixed.status.invalid_spec == ""
    assert condition(fixed.status, "Degraded")[0] == "False"


def test_item2_an_unservable_spec_mid_canary_rolls_back_to_blue() -> None:
    status = tick(SPEC, progressing(), 10, Verdict.PASSED).status
    assert status.step_index == 1 and status.weights.green == 50
    decision = reject(
        status, "spec.server.runtime: 'tensorrt' is not valid", Observations(router=confirms(status)), at(11)
    )
    assert decision.status.phase is Phase.ROLLING_BACK and decision.green_weight == 0
    assert decision.status.invalid_spec and decision.status.rollback_reason == "InvalidSpec"
    rolled_back = reject(decision.status, "still broken", Observations(router=confirms(decision.status)), at(12))
    assert rolled_back.status.phase is Phase.ROLLED_BACK
    fixed = tick(SPEC, rolled_back.status, 13)
    assert fixed.status.phase is Phase.PENDING and fixed.reason == "SpecFixed" and fixed.green_weight == 0


def test_an_unservable_first_spec_fails_with_the_problem_and_sends_nothing_to_green() -> None:
    decision = reject(
        ModelRolloutStatus(), "spec.traffic.steps[1].weight: must be greater than 10", Observations(), at(0)
    )
    assert decision.status.phase is Phase.FAILED and decision.green_weight == 0
    assert "steps[1].weight" in decision.status.message
    assert condition(decision.status, "Degraded")[0] == "True"
    fixed = tick(SPEC, decision.status, 2, resources_ready=False)
    assert fixed.action is Action.INITIALIZE and fixed.status.phase is Phase.PENDING and fixed.green_weight == 0
    assert fixed.status.invalid_spec == ""


# --- item 3: after promotion, the promoted model is the stable one


def test_item3_promotion_hands_traffic_back_to_blue_only_once_blue_serves_the_promoted_model() -> None:
    status = promoting_by_user()
    finalizing = tick(SPEC, status, 2, blue_ready=False)
    assert finalizing.status.phase is Phase.FINALIZING and finalizing.green_weight == 100
    assert finalizing.status.stable is not None and finalizing.status.stable.model.version == "v2"
    assert finalizing.status.stable.revision == steps.green_revision(SPEC)
    waiting = finalizing.status
    for second in (3, 30, 300):
        decision = tick(SPEC, waiting, second, blue_ready=False)
        assert decision.status.phase is Phase.FINALIZING and decision.green_weight == 100
        # within progressDeadline (60 s) it waits; past it, it still waits (no way back), Degraded
        assert decision.reason == ("WaitingForBlue" if second < 60 else "BlueNotReady")
        assert condition(decision.status, "Degraded")[0] == ("False" if second < 60 else "True")
        waiting = decision.status
    back = tick(SPEC, waiting, 301)
    assert condition(back.status, "Degraded")[0] == "False"
    assert back.reason == "BlueServesStable" and back.green_weight == 0
    stale = AppliedWeights(waiting.weights.revision, 100)
    assert tick(SPEC, back.status, 302, router=stale).status.phase is Phase.FINALIZING
    assert tick(SPEC, back.status, 303).status.phase is Phase.PROMOTED


def test_item3_a_new_green_while_finalizing_waits_for_blue_to_serve_the_promoted_model() -> None:
    # Found by test_safety_model: v2 is promoted (the stable model) and has all traffic while blue is being
    # redeployed with it; a new green used to restart the canary at 0% green, so blue's v1 served everything.
    finalizing = tick(SPEC, promoting_by_user(), 2, blue_ready=False).status
    assert finalizing.phase is Phase.FINALIZING and finalizing.weights.green == 100
    decision = tick(make_spec(green="v3"), finalizing, 3, blue_ready=False, resources_ready=False)
    assert decision.green_weight == 100  # green (v2) keeps all traffic until blue serves v2


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(make_spec(replicas=3), id="replicas"),
        pytest.param(make_spec(blue="v0"), id="blue-edited-to-an-older-model"),
    ],
)
def test_item3_after_promotion_a_spec_edit_that_keeps_green_sends_nothing_to_an_older_model(
    edit: ModelRolloutSpec,
) -> None:
    status = promoted()
    decision = tick(edit, status, 10)
    assert decision.action is not Action.RESTART
    assert decision.status.phase is Phase.PROMOTED and decision.status.weights == status.weights
    assert decision.status.stable is not None and decision.status.stable.model.version == "v2"
    assert decision.status.green_revision == status.green_revision


def test_item3_a_new_green_canaries_against_the_promoted_model() -> None:
    status = promoted()
    decision = tick(make_spec(green="v3"), status, 10)
    assert decision.action is Action.RESTART and decision.status.phase is Phase.PENDING
    assert decision.status.stable is not None and decision.status.stable.model.version == "v2"


def test_item3_a_green_equal_to_the_stable_model_needs_no_canary() -> None:
    status = tick(make_spec(green="v3"), promoted(), 10).status
    assert status.phase is Phase.PENDING
    back = tick(SPEC, status, 11)
    assert back.status.phase is Phase.PROMOTED and back.reason == "GreenIsStable" and back.green_weight == 0


# --- item 4: weights count only when the router confirms them, for their revision


def test_item4_a_missing_router_report_never_confirms() -> None:
    status = tick(SPEC, progressing(), 1, command=command(CommandName.ABORT, "a")).status
    for second in (2, 10, 20):
        decision = tick(SPEC, status, second, router=NOT_REPORTED)
        assert decision.status.phase is Phase.ROLLING_BACK and decision.reason == "WaitingForRouter"
        status = decision.status
    promoting = promoting_by_user()
    assert tick(SPEC, promoting, 2, router=NOT_REPORTED).status.phase is Phase.PROMOTING


def test_item4_a_stale_report_of_the_same_weight_does_not_confirm_a_rollback() -> None:
    pending = tick(SPEC, ModelRolloutStatus(), 0, resources_ready=False).status
    old_zero = confirms(pending)  # the router applied 0% green at revision 0
    status = tick(SPEC, tick(SPEC, pending, 1).status, 2).status
    status = tick(SPEC, status, 3, command=command(CommandName.ABORT, "a")).status
    assert status.weights.green == 0 and status.weights.revision > old_zero.revision
    stale = tick(SPEC, status, 4, router=old_zero)
    assert stale.status.phase is Phase.ROLLING_BACK and stale.status.weights_confirmed_at is None
    assert tick(SPEC, stale.status, 5).status.phase is Phase.ABORTED


def test_item4_promote_full_is_refused_while_pending() -> None:
    pending = tick(SPEC, ModelRolloutStatus(), 0, resources_ready=False).status
    decision = tick(SPEC, pending, 1, resources_ready=False, command=command(CommandName.PROMOTE_FULL, "f"))
    assert decision.action is Action.IGNORE_COMMAND and decision.reason == "CommandIgnored"
    assert decision.status.phase is Phase.PENDING and decision.green_weight == 0


def test_item4_an_unconfirmed_step_rolls_back_at_the_confirm_deadline() -> None:
    status = tick(SPEC, progressing(), 10, Verdict.PASSED).status
    stale = AppliedWeights(status.weights.revision - 1, 10)
    waiting = tick(SPEC, status, 40, router=stale)
    assert waiting.status.phase is Phase.PROGRESSING and waiting.reason == "WaitingForRouter"
    decision = tick(SPEC, waiting.status, 41, router=stale)
    assert decision.status.phase is Phase.ROLLING_BACK and decision.reason == "RouterNotConfirming"


def test_item4_an_unconfirmed_promotion_rolls_back_at_the_confirm_deadline() -> None:
    status = promoting_by_user()
    stale = AppliedWeights(status.weights.revision - 1, 10)
    waiting = tick(SPEC, status, 31, router=stale)
    assert waiting.status.phase is Phase.PROMOTING
    decision = tick(SPEC, waiting.status, 32, router=stale)
    assert decision.status.phase is Phase.ROLLING_BACK and decision.reason == "RouterNotConfirming"
    assert decision.green_weight == 0 and decision.status.stable is not None
    assert decision.status.stable.promoted_at is None  # green never became the stable model


def test_item4_an_unconfirmed_rollback_keeps_asking_and_is_degraded() -> None:
    status = tick(SPEC, progressing(), 1, command=command(CommandName.ABORT, "a")).status
    stale = AppliedWeights(status.weights.revision - 1, 10)
    stalled = tick(SPEC, tick(SPEC, status, 20, router=stale).status, 40, router=stale)
    assert stalled.status.phase is Phase.ROLLING_BACK and stalled.green_weight == 0
    assert stalled.status.router_stalled
    assert condition(stalled.status, "Degraded") == ("True", "RouterNotConfirming")
    done = tick(SPEC, stalled.status, 41)
    assert done.status.phase is Phase.ABORTED and not done.status.router_stalled


# --- item 5: failures are states that count toward rolling back


def test_item5_a_failed_reconcile_is_recorded_and_counted() -> None:
    status = progressing()
    decision = tick(SPEC, status, 1, error="ApiException: (503) Service Unavailable")
    assert decision.action is Action.HOLD and decision.reason == "ReconcileError" and decision.recorded
    assert decision.status.consecutive_errors == 1 and "503" in decision.status.last_error
    assert decision.status.weights == status.weights
    assert condition(decision.status, "Degraded") == ("True", "ReconcileError")


def test_item5_failed_reconciles_roll_a_canary_back_at_the_limit_once_they_last_as_long_as_its_analyses() -> None:
    # limit 3, interval 5 s: three failing reconciles in a row, lasting as long as three analyses (10 s)
    status = progressing()
    for second in (1, 2, 3, 4, 10):  # a blip of a few seconds (a control-plane upgrade) is ridden out
        status = tick(SPEC, status, second, error="router unreachable").status
        assert status.phase is Phase.PROGRESSING and status.errors_since == at(1)
    decision = tick(SPEC, status, 11, error="router unreachable")
    assert decision.status.phase is Phase.ROLLING_BACK and decision.reason == "ReconcileFailed"
    assert decision.green_weight == 0
    assert "over 10s" in decision.message


def test_item5_a_blip_then_a_clean_tick_or_an_error_analysis_does_not_roll_back() -> None:
    # Found in review: errors at 2, 3 and 4 s, then a clean tick (or an analysis that errors) rolled back at once.
    status = progressing()
    for second in (2, 3, 4):
        status = tick(SPEC, status, second, error="API server timeout").status
    assert tick(SPEC, status, 5).status.phase is Phase.PROGRESSING
    assert tick(SPEC, status, 5, Verdict.ERROR).status.phase is Phase.PROGRESSING
    # the outage goes on: an erroring analysis once it has lasted 10 s rolls back
    assert tick(SPEC, status, 12, Verdict.ERROR).status.phase is Phase.ROLLING_BACK


def test_item5_an_answered_analysis_between_failed_reconciles_starts_the_count_again() -> None:
    status = tick(SPEC, progressing(), 1, error="router unreachable").status
    status = tick(SPEC, status, 2, Verdict.PASSED).status
    assert status.consecutive_errors == 0 and status.errors_since is None
    status = tick(SPEC, status, 20, error="router unreachable").status
    assert status.errors_since == at(20)


def test_item5_error_analyses_and_failed_reconciles_count_together() -> None:
    status = tick(SPEC, progressing(), 5, Verdict.ERROR).status
    status = tick(SPEC, status, 6, error="API server timeout").status
    assert status.consecutive_errors == 2 and status.phase is Phase.PROGRESSING
    decision = tick(SPEC, status, 15, Verdict.ERROR)
    assert decision.status.phase is Phase.ROLLING_BACK and decision.reason == "MetricsUnavailable"


def test_item5_a_failed_reconcile_that_starts_a_canary_is_counted() -> None:
    # Found by test_properties_over_any_sequence: the first reconcile of a new green (or of a new rollout)
    # failed, yet status showed no error and counted none (_start_canary won over _count_error).
    status = progressing()
    decision = tick(make_spec(green="v3"), status, 1, error="ApiException: (503) Service Unavailable")
    assert decision.status.phase is Phase.PENDING
    assert "503" in decision.status.last_error and decision.status.consecutive_errors == 1


def test_item5_a_failed_reconcile_after_promotion_never_moves_traffic() -> None:
    status = promoted()
    for second in range(10, 20):
        status = tick(SPEC, status, second, error="API server timeout").status
        assert status.phase is Phase.PROMOTED and status.weights.green == 0
    assert tick(SPEC, status, 30).status.last_error == ""


def test_item5_a_shortened_steps_list_mid_rollout_keeps_the_canary_at_its_last_step() -> None:
    status, second = at_step(2)
    shorter = make_spec(traffic={"steps": [{"weight": 10, "pause": "10s"}, {"weight": 50, "pause": "10s"}]})
    decision = tick(shorter, status, second + 1, Verdict.PASSED)
    assert decision.status.phase is Phase.PROGRESSING and decision.status.step_index == 1
    assert decision.green_weight == 50


# --- item 8: what is cleared in status is cleared on the object


def test_item8_to_api_writes_null_for_a_cleared_field_so_a_merge_patch_clears_it() -> None:
    failing = tick(SPEC, progressing(), 5, Verdict.FAILED).status
    restarted = tick(make_spec(green="v3"), failing, 6)
    assert restarted.status.analysis is None
    wanted = restarted.status.to_api()
    assert "analysis" in wanted and wanted["analysis"] is None
    assert stored(failing, restarted).analysis is None


def test_item8_a_restarted_canary_starts_with_zero_failure_counts() -> None:
    spec3 = make_spec(green="v3")
    failing = tick(SPEC, progressing(), 5, Verdict.FAILED)
    status = stored(None, failing)
    # written and read back as the controller does, through a merge patch
    for second, spec in ((6, spec3), (7, spec3), (8, spec3)):
        decision = tick(spec, status, second)
        status = stored(status, decision)
    assert status.phase is Phase.PROGRESSING and status.analysis is None
    decision = tick(spec3, status, 13, Verdict.FAILED)
    assert decision.status.phase is Phase.PROGRESSING
    assert decision.status.analysis is not None and decision.status.analysis.checks[0].failures == 1


def test_status_round_trips_through_the_api_shape() -> None:
    status = tick(SPEC, progressing(), 5, Verdict.FAILED).status
    api = status.to_api()
    assert api["stepIndex"] == 0 and api["weights"] == {"blue": 90, "green": 10, "revision": 1}
    assert api["analysis"]["checks"][0]["failures"] == 1
    assert ModelRolloutStatus.model_validate(api) == status
    assert ModelRolloutStatus.model_validate(without_nulls(api)) == status


# --- properties over any sequence of inputs

verdicts = st.sampled_from(list(Verdict))
reports = st.one_of(
    st.just("confirm"),
    st.just(None),
    st.tuples(st.integers(min_value=0, max_value=12), st.sampled_from([0, 10, 50, 100])),
)
events = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=40),  # seconds until this event
        st.booleans(),  # both colours ready
        st.booleans(),  # blue ready
        st.one_of(st.none(), st.lists(verdicts, min_size=1, max_size=3)),  # an analysis, or none
        reports,  # what the router reports
        st.one_of(st.none(), st.sampled_from([*CommandName, "typo"])),
        st.one_of(st.none(), st.just("API server timeout")),  # a failed reconcile
    ),
    max_size=40,
)
PROMOTE_COMMANDS = {CommandName.PROMOTE, CommandName.PROMOTE_FULL}


@settings(max_examples=300, deadline=None)
@given(events=events)
def test_properties_over_any_sequence(
    events: list[
        tuple[int, bool, bool, list[Verdict] | None, str | tuple[int, int] | None, CommandName | str | None, str | None]
    ],
) -> None:
    status = ModelRolloutStatus()
    now = 0.0
    for index, (gap, ready, blue_ready, verdict_list, report, name, error) in enumerate(events):
        now += gap
        router = (
            confirms(status)
            if report == "confirm"
            else NOT_REPORTED
            if report is None
            else AppliedWeights(report[0], report[1])
        )
        given_command = None if name is None else command(name if isinstance(name, CommandName) else None, str(index))
        obs = Observations(
            resources_ready=ready,
            blue_ready=blue_ready,
            analysis=analysis(at(now), *verdict_list) if verdict_list else None,
            router=router,
            command=given_command,
            error=error,
        )
        before = status
        decision = decide(SPEC, before, obs, at(now))
        after = decision.status
        # same inputs, same decision
        assert decision == decide(SPEC, before, obs, at(now))
        assert after.weights.blue + after.weights.green == 100 and 0 <= after.weights.green <= 100
        # a change of weights is a new revision, never confirmed by an older report
        if after.weights.green != before.weights.green:
            assert after.weights.revision > before.weights.revision and after.weights_confirmed_at is None
        if after.weights_confirmed_at == at(now) and before.weights_confirmed_at is None:
            assert router.confirms(revision=after.weights.revision, green=after.weights.green)
        if after.phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.ABORTED):
            assert after.weights.green == 0
        consumed = given_command is not None and after.last_command_id == given_command.id != before.last_command_id
        if consumed and given_command is not None and given_command.name is None:
            # (a router report ahead of the status raises the revision, never the weights)
            assert after.phase is before.phase
            assert (after.weights.blue, after.weights.green) == (before.weights.blue, before.weights.green)
            assert after.weights.revision == before.weights.revision or (
                router.revision is not None and after.weights.revision == router.revision + 1
            )
        if after.analysis and any(c.failures >= 2 for c in after.analysis.checks):
            assert after.phase not in (Phase.PROGRESSING, Phase.PAUSED)
        # promoted only by a user's promote or with a Passed analysis at the last step
        if after.phase is Phase.PROMOTING and before.phase is not Phase.PROMOTING:
            by_user = consumed and given_command is not None and given_command.name in PROMOTE_COMMANDS
            evidence = after.analysis is not None and after.analysis.step_index == LAST_STEP
            assert by_user or (evidence and after.analysis is not None and after.analysis.verdict == Verdict.PASSED)
        # green becomes the stable model only out of a confirmed promotion
        if after.stable != before.stable and after.stable is not None and after.stable.promoted_at is not None:
            assert before.phase is Phase.PROMOTING and before.weights.green == 100
            assert before.weights_confirmed_at is not None or router.confirms(
                revision=before.weights.revision, green=100
            )
        # every decision leaves a trace: the status says it, and all but holding is recorded (an Event)
        assert after.message == decision.message
        assert decision.recorded or decision.action in QUIET_ACTIONS
        if error is not None:
            assert after.last_error == error
        assert len(after.history) <= 20
        status = after


# --- a status without `stable`: lost, or written by an operator that kept the promoted model on green


def test_a_lost_status_takes_the_stable_model_recorded_on_blue() -> None:
    record = promoted().stable
    assert record is not None and record.model.version == "v2"
    recovered = recover(
        ModelRolloutStatus(),
        recorded=record,
        green_serves=None,
        serving=Serving(blue_runs_only_stable=True, blue_ready=True, green_runs_stable=False),
        router=NOT_REPORTED,
        now=at(50),
    )
    assert recovered.stable == record
    # spec.blue still says v1: the canary of v2 is not restarted, and nothing goes to the older v1 model
    decision = tick(SPEC, recovered, 50)
    assert decision.status.phase is Phase.PROMOTED and decision.reason == "GreenIsStable"
    assert decision.status.stable == record


def test_without_a_record_a_new_rollout_keeps_spec_blue_as_the_stable_model() -> None:
    recovered = recover(
        ModelRolloutStatus(),
        recorded=None,
        green_serves=(SPEC.green.model, SPEC.server),
        serving=Serving(blue_runs_only_stable=False, blue_ready=False, green_runs_stable=False),
        router=NOT_REPORTED,
        now=at(0),
    )
    assert recovered.stable is None
    assert tick(SPEC, recovered, 0).status.stable.model.version == "v1"  # type: ignore[union-attr]


def test_a_rollout_promoted_on_green_by_an_older_operator_hands_back_to_blue_with_the_promoted_model() -> None:
    # An older operator left promoted models on green: Promoted at 100% green, no stable, another hash.
    old = ModelRolloutStatus(phase=Phase.PROMOTED, weights={"blue": 0, "green": 100}, green_revision="old-hash")
    recovered = recover(
        old,
        recorded=None,
        green_serves=(SPEC.green.model, SPEC.server),
        serving=Serving(blue_runs_only_stable=True, blue_ready=True, green_runs_stable=False),
        router=NOT_REPORTED,
        now=at(0),
    )
    assert recovered.phase is Phase.FINALIZING and recovered.stable is not None
    assert recovered.stable.model.version == "v2" and recovered.green_revision == steps.green_revision(SPEC)
    waiting = tick(SPEC, recovered, 1, blue_ready=False)
    assert waiting.status.phase is Phase.FINALIZING and waiting.green_weight == 100  # never to blue's v1
    back = tick(SPEC, waiting.status, 2)
    assert back.green_weight == 0 and back.reason == "BlueServesStable"
    done = tick(SPEC, back.status, 3)
    assert done.status.phase is Phase.PROMOTED and done.status.stable.model.version == "v2"  # type: ignore[union-attr]


def test_a_status_that_has_stable_is_not_touched_by_recovery() -> None:
    status = promoted()
    other = make_spec(green="v9").green.model
    assert (
        recover(
            status,
            recorded=None,
            green_serves=(other, SPEC.server),
            serving=Serving(blue_runs_only_stable=True, blue_ready=True, green_runs_stable=False),
            router=NOT_REPORTED,
            now=at(9),
        )
        is status
    )


def test_a_router_report_newer_than_the_status_raises_the_revision_without_moving_traffic() -> None:
    status = promoted()
    ahead = AppliedWeights(status.weights.revision + 5, 0)
    decision = tick(SPEC, status, 10, router=ahead)
    assert decision.green_weight == 0 and decision.weights_revision == status.weights.revision + 6
    assert decision.status.weights_confirmed_at is None  # the old report never confirms the new revision
    assert tick(SPEC, decision.status, 11).status.weights_confirmed_at == at(11)


# --- errors: unexpected exceptions count toward the limit; an abort does not wait behind errors


def test_unexpected_reconcile_failures_roll_a_canary_back_at_the_error_limit() -> None:
    status = progressing()
    limit = SPEC.analysis.consecutive_error_limit
    for attempt in range(1, limit):
        decision = failed_reconcile(status, "KeyError: 'x'", limit=limit, min_seconds=15, now=at(attempt))
        assert decision.action is Action.HOLD and decision.green_weight == 10
        status = decision.status
    decision = failed_reconcile(status, "KeyError: 'x'", limit=limit, min_seconds=10, now=at(20))
    assert decision.action is Action.ROLL_BACK and decision.green_weight == 0
    assert decision.status.rollback_reason == "ReconcileFailed" and "KeyError" in decision.message


def test_unexpected_reconcile_failures_never_move_a_settled_rollout() -> None:
    status = promoted()
    for attempt in range(10):
        decision = failed_reconcile(status, "boom", limit=3, min_seconds=15, now=at(10 + 10 * attempt))
        assert decision.action is Action.HOLD and decision.green_weight == 0 and decision.status.phase is Phase.PROMOTED
        status = decision.status
    assert condition(status, "Degraded") == ("True", "ReconcileError")


@pytest.mark.parametrize("name", [CommandName.ABORT, CommandName.PAUSE])
def test_an_abort_or_pause_is_acted_on_while_reconciles_fail(name: CommandName) -> None:
    decision = tick(SPEC, progressing(), 1, error="API server refused", command=command(name, "now"))
    assert decision.status.last_command_id == "now"
    assert decision.status.phase is (Phase.ROLLING_BACK if name is CommandName.ABORT else Phase.PAUSED)


def test_a_promote_waits_until_reconciles_succeed_again() -> None:
    promote = command(CommandName.PROMOTE_FULL, "later")
    held = tick(SPEC, progressing(), 1, error="API server refused", command=promote)
    assert held.status.last_command_id != "later" and held.green_weight == 10
    assert tick(SPEC, held.status, 2, command=promote).status.phase is Phase.PROMOTING


def test_a_status_lost_while_a_promotion_hands_back_keeps_traffic_on_green_until_blue_runs_it() -> None:
    finalizing = tick(SPEC, promoting_by_user(), 2, blue_ready=False).status
    record = finalizing.stable
    assert finalizing.phase is Phase.FINALIZING and record is not None
    router = AppliedWeights(finalizing.weights.revision, 100)  # green (v2, the promoted model) has all traffic
    green_serves = (SPEC.green.model, SPEC.server)
    recovered = recover(
        ModelRolloutStatus(),
        recorded=record,
        green_serves=green_serves,
        serving=Serving(blue_runs_only_stable=False, blue_ready=False, green_runs_stable=True),
        router=router,
        now=at(9),
    )
    assert recovered.phase is Phase.FINALIZING and recovered.weights.green == 100
    held = tick(SPEC, recovered, 9, blue_ready=False, router=router)
    assert held.green_weight == 100 and held.status.phase is Phase.FINALIZING  # not back to blue's older v1
    back = tick(SPEC, held.status, 10, router=router)
    assert back.green_weight == 0 and back.reason == "BlueServesStable"
    # the same loss once green runs something else: blue runs the stable model, a canary starts against it
    other = make_spec(green="v3")
    lost = recover(
        ModelRolloutStatus(),
        recorded=record,
        green_serves=(other.green.model, other.server),
        serving=Serving(blue_runs_only_stable=True, blue_ready=True, green_runs_stable=False),
        router=router,
        now=at(9),
    )
    assert lost.phase is Phase.PENDING and lost.stable == record
    # the router's report lost too: green, the only colour that runs v2, gets all traffic at a new revision
    unknown = recover(
        ModelRolloutStatus(),
        recorded=record,
        green_serves=green_serves,
        serving=Serving(blue_runs_only_stable=False, blue_ready=False, green_runs_stable=True),
        router=NOT_REPORTED,
        now=at(9),
    )
    assert unknown.phase is Phase.FINALIZING and unknown.weights.green == 100 and unknown.weights.revision == 1


def test_a_canary_set_back_to_the_stable_model_hands_its_traffic_back_before_it_is_promoted() -> None:
    # v2 promoted; a canary of v3 runs at 10%; the user sets green back to v2 (the stable model)
    spec_v3 = make_spec(green="v3")
    canary = tick(spec_v3, promoted(), 10, resources_ready=False).status
    canary = tick(spec_v3, canary, 11).status
    canary = tick(spec_v3, canary, 11).status
    assert canary.phase is Phase.PROGRESSING and canary.weights.green == 10
    back = tick(SPEC, canary, 12, blue_ready=True)
    assert back.status.phase is Phase.FINALIZING and back.reason == "GreenIsStable"
    assert condition(back.status, "Ready")[0] == "False"  # not Promoted while green still has traffic
    handed = tick(SPEC, back.status, 13)
    assert handed.green_weight == 0 and handed.status.phase is Phase.FINALIZING
    assert tick(SPEC, handed.status, 14).status.phase is Phase.PROMOTED


def test_a_status_restored_from_an_older_copy_takes_the_later_promotion_recorded_on_blue() -> None:
    old = promoted()  # v2 promoted at T0+2s
    assert old.stable is not None and old.stable.promoted_at is not None
    later = old.stable.model_copy(
        update={
            "model": make_spec(green="v3").green.model,
            "promoted_at": old.stable.promoted_at + datetime.timedelta(hours=1),
        }
    )
    restored = recover(
        old,
        recorded=later,
        green_serves=None,
        serving=Serving(blue_runs_only_stable=True, blue_ready=True, green_runs_stable=False),
        router=NOT_REPORTED,
        now=at(9),
    )
    assert restored.stable == later
    # an older record changes nothing
    assert (
        recover(
            old,
            recorded=old.stable,
            green_serves=None,
            serving=Serving(blue_runs_only_stable=True, blue_ready=True, green_runs_stable=False),
            router=NOT_REPORTED,
            now=at(9),
        )
        is old
    )


def test_a_promotion_recorded_on_blue_but_not_in_status_resumes_the_hand_back_even_with_a_new_green() -> None:
    # Found in review: blue redeployed with v2 and its record written, the operator died before the status
    # said so (still Promoting), and the user then gave v3 as green: users must not land on blue's v1 pods.
    promoting = promoting_by_user()
    record = tick(SPEC, promoting, 2, blue_ready=False).status.stable
    assert record is not None and promoting.stable is not None and promoting.stable.promoted_at is None
    router = AppliedWeights(promoting.weights.revision, 100)
    mid_roll = Serving(blue_runs_only_stable=False, blue_ready=False, green_runs_stable=True)
    recovered = recover(promoting, recorded=record, green_serves=None, serving=mid_roll, router=router, now=at(3))
    assert recovered.phase is Phase.FINALIZING and recovered.stable == record and recovered.weights.green == 100
    decision = tick(make_spec(green="v3"), recovered, 4, blue_ready=False, resources_ready=False, router=router)
    assert decision.green_weight == 100  # v2 keeps all traffic until blue serves it


def test_green_set_back_to_the_stable_model_while_a_rollback_is_unconfirmed_waits_for_the_router() -> None:
    canary = tick(make_spec(green="v3"), promoted(), 10, resources_ready=False).status
    canary = tick(make_spec(green="v3"), canary, 11).status
    rolling_back = tick(make_spec(green="v3"), canary, 12, command=command(CommandName.ABORT, "stop")).status
    assert rolling_back.phase is Phase.ROLLING_BACK and rolling_back.weights_confirmed_at is None
    silent = AppliedWeights(canary.weights.revision, canary.weights.green)  # still 10% on v3
    back = tick(SPEC, rolling_back, 13, router=silent)
    assert back.status.phase is Phase.FINALIZING  # not Promoted (green scaled to 0) while the router lags
    assert tick(SPEC, back.status, 14).status.phase is Phase.PROMOTED
