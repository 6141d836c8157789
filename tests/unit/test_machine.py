"""decide(): the canary's rules, table by table, and properties that hold for any sequence of inputs."""

from __future__ import annotations

import datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from modelrollout.analysis.evaluate import CheckResult, Verdict
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import ModelRolloutStatus, Phase
from modelrollout.rollout.commands import Command, CommandName
from modelrollout.rollout.machine import Action, AnalysisOutcome, Decision, Observations, decide

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def make_spec(**analysis: Any) -> ModelRolloutSpec:
    return ModelRolloutSpec.model_validate(
        {
            "blue": {"model": {"uri": "file:///b.onnx", "version": "v1"}},
            "green": {"model": {"uri": "file:///g.onnx", "version": "v2"}},
            "traffic": {"steps": [{"weight": 10, "pause": "10s"}, {"weight": 50, "pause": "10s"}, {"weight": 100}]},
            "analysis": {"interval": "5s", "progressDeadline": "60s", **analysis},
        }
    )


SPEC = make_spec()


def analysis(now: datetime.datetime, *verdicts: Verdict) -> AnalysisOutcome:
    names = ["errors", "latency", "accuracy"]
    return AnalysisOutcome(now, [CheckResult(names[i], v, f"{v} message", 1.0, 2.0) for i, v in enumerate(verdicts)])


def passed(now: datetime.datetime) -> Observations:
    return Observations(resources_ready=True, analysis=analysis(now, Verdict.PASSED, Verdict.PASSED))


def run(spec: ModelRolloutSpec, status: ModelRolloutStatus, obs: Observations, seconds: float) -> Decision:
    return decide(spec, status, obs, at(seconds))


def progressing() -> ModelRolloutStatus:
    """A rollout at step 0 (10% green) that started at T0."""
    status = run(SPEC, ModelRolloutStatus(), Observations(), 0).status
    return run(SPEC, status, Observations(resources_ready=True), 0).status


def test_new_rollout_waits_for_model_servers_at_zero_weight() -> None:
    decision = run(SPEC, ModelRolloutStatus(), Observations(), 0)
    assert decision.action is Action.INITIALIZE
    assert decision.status.phase is Phase.PENDING
    assert decision.green_weight == 0
    again = run(SPEC, decision.status, Observations(resources_ready=False), 1)
    assert again.action is Action.WAIT and again.green_weight == 0


def test_ready_model_servers_start_step_zero() -> None:
    status = progressing()
    assert status.phase is Phase.PROGRESSING and status.step_index == 0
    assert status.weights.green == 10 and status.weights.blue == 90


def test_step_advances_only_after_pause_and_a_passed_analysis_at_this_step() -> None:
    status = progressing()
    early = run(SPEC, status, passed(at(5)), 5)
    assert early.action is Action.HOLD and early.status.step_index == 0 and "pause" in early.message
    done = run(SPEC, early.status, passed(at(10)), 10)
    assert done.action is Action.ADVANCE and done.status.step_index == 1 and done.green_weight == 50
    # the analysis taken at step 0 does not count for step 1
    held = run(SPEC, done.status, Observations(resources_ready=True), 25)
    assert held.action is Action.HOLD and held.reason == "WaitingForAnalysis"


def test_inconclusive_holds_and_never_advances() -> None:
    status = progressing()
    for second in range(5, 60, 5):
        decision = run(
            SPEC, status, Observations(analysis=analysis(at(second), Verdict.PASSED, Verdict.INCONCLUSIVE)), second
        )
        assert decision.action is Action.HOLD and decision.status.step_index == 0
        status = decision.status
    assert decision.reason == "AnalysisInconclusive"


def test_progress_deadline_rolls_back_an_inconclusive_step() -> None:
    status = progressing()
    decision = run(SPEC, status, Observations(analysis=analysis(at(61), Verdict.INCONCLUSIVE)), 61)
    assert decision.status.phase is Phase.ROLLING_BACK
    assert decision.reason == "ProgressDeadlineExceeded" and decision.green_weight == 0


def test_progress_deadline_can_pause_instead() -> None:
    spec = make_spec(onDeadline="pause")
    status = progressing()
    decision = run(spec, status, Observations(analysis=analysis(at(61), Verdict.INCONCLUSIVE)), 61)
    assert decision.status.phase is Phase.PAUSED and decision.green_weight == 10


def test_failures_up_to_the_limit_roll_back_with_values_and_thresholds() -> None:
    status = progressing()
    first = run(SPEC, status, Observations(analysis=analysis(at(5), Verdict.FAILED)), 5)
    assert first.status.phase is Phase.PROGRESSING and first.reason == "AnalysisFailing"
    second = run(SPEC, first.status, Observations(analysis=analysis(at(10), Verdict.FAILED)), 10)
    assert second.status.phase is Phase.ROLLING_BACK and second.reason == "AnalysisFailed"
    assert second.green_weight == 0
    assert "errors" in second.message and "failed 2x" in second.message
    assert second.recorded and second.status.history[-1].reason == "AnalysisFailed"


def test_a_pass_between_failures_resets_the_count() -> None:
    status = progressing()
    for second, verdict in ((5, Verdict.FAILED), (10, Verdict.PASSED), (15, Verdict.FAILED)):
        status = run(SPEC, status, Observations(analysis=analysis(at(second), verdict)), second).status
        assert status.phase in (Phase.PROGRESSING,)


def test_rollback_completes_only_when_the_router_confirms_blue() -> None:
    status = progressing()
    status = run(SPEC, status, Observations(command=Command(CommandName.ABORT, "1")), 1).status
    assert status.phase is Phase.ROLLING_BACK
    waiting = run(SPEC, status, Observations(router_green_weight=10), 2)
    assert waiting.action is Action.WAIT and waiting.status.phase is Phase.ROLLING_BACK
    done = run(SPEC, waiting.status, Observations(router_green_weight=0), 3)
    assert done.status.phase is Phase.ABORTED and done.green_weight == 0


def test_metrics_errors_hold_then_roll_back_at_the_limit() -> None:
    status = progressing()
    for second in (5, 10):
        decision = run(SPEC, status, Observations(analysis=analysis(at(second), Verdict.ERROR)), second)
        assert decision.status.phase is Phase.PROGRESSING and decision.green_weight == 10
        status = decision.status
    decision = run(SPEC, status, Observations(analysis=analysis(at(15), Verdict.ERROR)), 15)
    assert decision.status.phase is Phase.ROLLING_BACK and decision.reason == "MetricsUnavailable"


def test_last_step_passed_promotes_after_router_confirms() -> None:
    status = progressing()
    for second in (10, 20, 30):
        status = run(SPEC, status, passed(at(second)), second).status
    assert status.phase is Phase.PROMOTING and status.weights.green == 100
    done = run(SPEC, status, Observations(router_green_weight=100), 31)
    assert done.status.phase is Phase.PROMOTED
    assert [c.status for c in done.status.conditions if c.type == "Ready"] == ["True"]


def test_manual_step_waits_for_promote() -> None:
    spec = ModelRolloutSpec.model_validate(
        {**SPEC.to_api(), "traffic": {"steps": [{"weight": 20, "pause": "manual"}, {"weight": 100}]}}
    )
    status = run(spec, ModelRolloutStatus(), Observations(), 0).status
    status = run(spec, status, Observations(resources_ready=True), 0).status
    held = run(spec, status, passed(at(100)), 100)
    assert held.reason == "WaitingForPromote" and held.status.step_index == 0
    promoted = run(spec, held.status, Observations(command=Command(CommandName.PROMOTE, "a")), 101)
    assert promoted.status.step_index == 1 and promoted.green_weight == 100


def test_commands_act_once() -> None:
    status = progressing()
    paused = run(SPEC, status, Observations(command=Command(CommandName.PAUSE, "p1")), 1)
    assert paused.status.phase is Phase.PAUSED
    resumed = run(SPEC, paused.status, Observations(command=Command(CommandName.RESUME, "r1")), 2)
    assert resumed.status.phase is Phase.PROGRESSING
    # the same resume again (same id) is not a new command
    again = run(SPEC, resumed.status, Observations(command=Command(CommandName.RESUME, "r1")), 3)
    assert again.action is not Action.IGNORE_COMMAND


def test_retry_after_rollback_starts_again() -> None:
    status = progressing()
    status = run(SPEC, status, Observations(command=Command(CommandName.ABORT, "1")), 1).status
    status = run(SPEC, status, Observations(router_green_weight=0), 2).status
    retried = run(SPEC, status, Observations(command=Command(CommandName.RETRY, "2")), 3)
    assert retried.status.phase is Phase.PENDING and retried.status.step_index == 0


def test_changing_green_restarts_from_step_zero() -> None:
    status = progressing()
    status = run(SPEC, status, passed(at(10)), 10).status
    assert status.step_index == 1
    changed = ModelRolloutSpec.model_validate(
        {**SPEC.to_api(), "green": {"model": {"uri": "file:///g3.onnx", "version": "v3"}}}
    )
    decision = run(changed, status, Observations(resources_ready=True), 11)
    assert decision.action is Action.RESTART and decision.status.phase is Phase.PENDING
    assert decision.green_weight == 0


def test_decide_is_idempotent() -> None:
    status = progressing()
    obs = passed(at(10))
    assert run(SPEC, status, obs, 10) == run(SPEC, status, obs, 10)


def test_holding_does_not_flood_the_history() -> None:
    status = progressing()
    for second in range(5, 50, 5):
        status = run(SPEC, status, Observations(analysis=analysis(at(second), Verdict.INCONCLUSIVE)), second).status
    assert sum(1 for h in status.history if h.reason == "AnalysisInconclusive") == 1


verdicts = st.sampled_from(list(Verdict))
events = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=20),  # seconds until this event
        st.booleans(),  # resources ready
        st.one_of(st.none(), st.lists(verdicts, min_size=1, max_size=3)),  # an analysis, or none
        st.one_of(st.none(), st.integers(min_value=0, max_value=100)),  # what the router reports
        st.one_of(st.none(), st.sampled_from(list(CommandName))),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(events=events)
def test_properties_over_any_sequence(
    events: list[tuple[int, bool, list[Verdict] | None, int | None, CommandName | None]],
) -> None:
    status = ModelRolloutStatus()
    now = 0.0
    last_passed_step: int | None = None
    for index, (gap, ready, verdict_list, router, command) in enumerate(events):
        now += gap
        obs = Observations(
            resources_ready=ready,
            analysis=analysis(at(now), *verdict_list) if verdict_list else None,
            router_green_weight=router,
            command=Command(command, str(index)) if command else None,
        )
        before = status
        decision = run(SPEC, before, obs, now)
        after = decision.status
        # repeated calls with the same inputs give the same decision
        assert decision == run(SPEC, before, obs, now)
        # weights always add up and stay in range
        assert after.weights.blue + after.weights.green == 100
        # while progressing without a user command, weights never decrease
        if before.phase is Phase.PROGRESSING and after.phase is Phase.PROGRESSING and command is None:
            assert after.weights.green >= before.weights.green
        # any rollback means 100% blue
        if after.phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.ABORTED):
            assert after.weights.green == 0
        # a check that failed its limit never leaves the rollout progressing
        if after.analysis and any(c.failures >= 2 for c in after.analysis.checks):
            assert after.phase not in (Phase.PROGRESSING, Phase.PAUSED)
        if after.analysis and after.analysis.verdict == Verdict.PASSED:
            last_passed_step = after.analysis.step_index
        # never promote (without a user's promote-full) unless the last step passed an analysis
        if after.phase is Phase.PROMOTING and before.phase is not Phase.PROMOTING and command is None:
            assert last_passed_step == len(SPEC.traffic.steps) - 1
        assert len(after.history) <= 20
        status = after


def test_an_invalid_spec_fails_with_the_problem_and_sends_nothing_to_green() -> None:
    from modelrollout.rollout.machine import reject

    status = progressing()
    decision = reject(status, "spec.traffic.steps[1].weight: must be greater than 10", at(1))
    assert decision.status.phase is Phase.FAILED and decision.green_weight == 0
    assert "steps[1].weight" in decision.status.message
    assert [c.status for c in decision.status.conditions if c.type == "Degraded"] == ["True"]
    fixed = run(SPEC, decision.status, Observations(), 2)
    assert fixed.action is Action.RESTART and fixed.status.phase is Phase.PENDING


def test_status_round_trips_through_the_api_shape() -> None:
    status = run(SPEC, progressing(), Observations(analysis=analysis(at(5), Verdict.FAILED)), 5).status
    api = status.to_api()
    assert api["stepIndex"] == 0 and api["weights"] == {"blue": 90, "green": 10}
    assert api["analysis"]["checks"][0]["failures"] == 1
    assert ModelRolloutStatus.model_validate(api) == status
