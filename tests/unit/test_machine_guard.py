"""decide() and the router's data-plane guard: which trips roll a canary back (reason GuardTripped, the
router's numbers in the message), which wait, which are only acknowledged, and that none ever promotes."""

from __future__ import annotations

import dataclasses

import pytest

from modelrollout import controller
from modelrollout.analysis.evaluate import Verdict
from modelrollout.api import constants
from modelrollout.api.status import TERMINAL_PHASES, ModelRolloutStatus, Phase
from modelrollout.rollout.commands import CommandName
from modelrollout.rollout.machine import Action, Decision, conditions
from modelrollout.routing.base import AppliedWeights, RolloutRef
from modelrollout.routing.guard import GuardTrip
from tests.unit.test_machine import SPEC, at, command, make_spec, progressing, promoted, promoting_by_user, tick


def trip_for(status: ModelRolloutStatus, **changes: object) -> GuardTrip:
    """The router's trip for the weights ``status`` asks for now."""
    trip = GuardTrip(
        revision=status.weights.revision,
        green_revision=status.green_revision,
        errors=20,
        requests=20,
        window=5.0,
        max_error_rate=0.5,
        at="2026-01-01T00:00:03.250Z",
    )
    return dataclasses.replace(trip, **changes)  # type: ignore[arg-type]


def held(status: ModelRolloutStatus) -> AppliedWeights:
    """What a tripped router reports: the revision asked for, at 0% green."""
    return AppliedWeights(status.weights.revision, 0)


def tripped(status: ModelRolloutStatus, seconds: float, **observed: object) -> Decision:
    return tick(SPEC, status, seconds, router=held(status), guard=trip_for(status), **observed)


def test_a_trip_for_the_current_weights_rolls_back_with_the_routers_numbers() -> None:
    status = progressing()
    decision = tripped(status, 3)
    assert decision.action is Action.ROLL_BACK and decision.reason == "GuardTripped" and decision.recorded
    s = decision.status
    assert s.phase is Phase.ROLLING_BACK and s.rollback_reason == "GuardTripped"
    assert s.weights.green == 0 and s.weights.revision == status.weights.revision + 1
    assert "20 of green's last 20 requests fail within 5s (maxErrorRate 0.5)" in decision.message
    assert s.history[-1].reason == "GuardTripped" and s.history[-1].message == decision.message
    degraded = next(c for c in s.conditions if c.type == "Degraded")
    assert degraded.status == "True" and "20 of green's last 20" in degraded.message
    assert s.guard_trip is not None and s.guard_trip.revision == status.weights.revision and s.guard_trip.rolled_back
    assert (s.guard_trip.errors, s.guard_trip.requests, s.guard_trip.window_seconds) == (20, 20, 5.0)
    assert "GuardTripped" in controller.WARNING_REASONS
    # the router applies the rollback's 0% (it serves 0% already) and confirms it: RolledBack
    done = tick(SPEC, s, 4, guard=trip_for(status)).status
    assert done.phase is Phase.ROLLED_BACK and done.weights.green == 0


def test_a_paused_canary_rolls_back_too() -> None:
    status = tick(SPEC, progressing(), 1, command=command(CommandName.PAUSE, "p")).status
    assert status.phase is Phase.PAUSED
    decision = tripped(status, 2)
    assert decision.reason == "GuardTripped" and decision.status.phase is Phase.ROLLING_BACK


def test_the_trip_wins_over_a_promote_command_and_over_failing_reconciles() -> None:
    status = progressing()
    decision = tripped(status, 3, command=command(CommandName.PROMOTE_FULL, "full"))
    assert decision.reason == "GuardTripped" and decision.status.phase is Phase.ROLLING_BACK
    decision = tripped(status, 3, error="ApiException: (503) Service Unavailable")
    assert decision.reason == "GuardTripped" and decision.status.phase is Phase.ROLLING_BACK


def test_the_trip_wins_over_a_passing_analysis_at_the_last_step() -> None:
    status = progressing()
    for second, _ in ((11, 1), (22, 2)):
        status = tick(SPEC, status, second, Verdict.PASSED).status
        status = tick(SPEC, status, second + 0.5).status
    assert status.step_index == 2 and status.phase is Phase.PROGRESSING
    decision = tripped(status, 40, analysis=None)
    passing = tick(SPEC, status, 40, Verdict.PASSED, router=held(status), guard=trip_for(status))
    assert decision.reason == passing.reason == "GuardTripped"
    assert passing.status.phase is Phase.ROLLING_BACK and passing.status.stable == status.stable


def test_a_trip_while_promoting_before_the_router_confirmed_rolls_back() -> None:
    """A held router never confirms 100% green, so the promotion has not completed: blue still runs the
    stable model and rolling back is safe."""
    status = promoting_by_user()
    decision = tripped(status, 2)
    assert decision.reason == "GuardTripped" and decision.status.phase is Phase.ROLLING_BACK
    assert decision.status.stable == status.stable


def test_a_trip_after_the_promotion_was_confirmed_moves_nothing() -> None:
    """Once 100% green is confirmed green is the stable model: sending users to blue could serve an older
    model, so a trip (which a correct router never reports then) changes nothing."""
    status = promoting_by_user()
    finalizing = tick(SPEC, status, 2).status
    assert finalizing.phase is Phase.FINALIZING
    decision = tick(SPEC, finalizing, 3, blue_ready=False, guard=trip_for(finalizing))
    assert decision.status.phase is Phase.FINALIZING and decision.status.weights.green == 100
    assert decision.reason != "GuardTripped" and decision.status.guard_trip is None


def test_a_trip_for_an_older_revision_waits_for_the_router_to_name_the_current_one() -> None:
    """The operator advanced before it read the trip: the router holds the new weights at 0% too and names
    their revision; only then does the canary roll back, and never for the stale trip alone."""
    status = progressing()
    old = trip_for(status)
    advanced = tick(SPEC, status, 11, Verdict.PASSED).status
    assert advanced.step_index == 1 and advanced.weights.revision == status.weights.revision + 1
    waiting = tick(SPEC, advanced, 12, router=AppliedWeights(status.weights.revision, 0), guard=old)
    assert waiting.status.phase is Phase.PROGRESSING and waiting.status.guard_trip is None
    assert waiting.reason == "WaitingForRouter"
    decision = tick(SPEC, waiting.status, 12.5, router=held(advanced), guard=trip_for(advanced))
    assert decision.reason == "GuardTripped"


def test_a_trip_for_another_candidate_is_acknowledged_without_acting() -> None:
    status = progressing()
    decision = tick(SPEC, status, 3, guard=trip_for(status, green_revision="someone-else"))
    assert decision.status.phase is Phase.PROGRESSING and decision.reason != "GuardTripped"
    assert decision.status.guard_trip is not None and not decision.status.guard_trip.rolled_back


def test_a_new_green_acknowledges_the_last_candidates_trip() -> None:
    status = progressing()
    trip = trip_for(status)
    decision = tick(make_spec(green="v3"), status, 3, router=held(status), guard=trip)
    assert decision.status.phase is Phase.PENDING and decision.status.weights.green == 0
    assert decision.status.guard_trip is not None and decision.status.guard_trip.revision == trip.revision


def test_a_trip_that_raced_another_rollback_is_acknowledged_once_it_ended() -> None:
    status = progressing()
    trip = trip_for(status)
    rolling = tick(SPEC, status, 3, command=command(CommandName.ABORT, "a")).status
    assert rolling.phase is Phase.ROLLING_BACK
    ended = tick(SPEC, rolling, 4, guard=trip).status
    assert ended.phase in TERMINAL_PHASES and ended.rollback_reason == "Aborted"
    assert ended.guard_trip is not None and not ended.guard_trip.rolled_back
    # a retry then canaries the same green again, and the router follows (the trip is acknowledged)
    retried = tick(SPEC, ended, 5, command=command(CommandName.RETRY, "r"), guard=trip).status
    assert retried.phase is Phase.PENDING and retried.guard_trip == ended.guard_trip


def test_an_acknowledged_trip_is_not_acted_on_again() -> None:
    status = progressing()
    rolled = tick(SPEC, tripped(status, 3).status, 4, guard=trip_for(status)).status
    retried = tick(SPEC, rolled, 5, command=command(CommandName.RETRY, "r"), guard=trip_for(status)).status
    live = tick(SPEC, tick(SPEC, retried, 6, guard=trip_for(status)).status, 7, guard=trip_for(status))
    assert live.status.phase is Phase.PROGRESSING and live.reason != "GuardTripped"


def test_a_lost_status_after_a_trip_rolls_back_without_giving_green_traffic() -> None:
    """The status is lost after the router tripped at revision r: the operator asks again under r+1 (0%
    green while Pending), the router keeps holding the candidate and names the revision that gives green
    traffic again, and the canary rolls back for the trip without green serving a request."""
    status = progressing()
    trip = trip_for(status)
    lost = tick(SPEC, ModelRolloutStatus(), 10, router=held(status), guard=trip)
    assert lost.status.weights.revision == status.weights.revision + 1 and lost.status.guard_trip is None
    s = lost.status
    for second in (11, 12):
        s = tick(SPEC, s, second, guard=trip).status
    assert s.phase is Phase.PROGRESSING and s.weights.green == 10 and s.guard_trip is None
    decision = tick(SPEC, s, 13, router=held(s), guard=trip_for(s, errors=trip.errors))
    assert decision.reason == "GuardTripped" and decision.status.phase is Phase.ROLLING_BACK


def test_the_settled_rollback_after_a_trip_stays_at_zero_percent() -> None:
    """A router restarted after the rollback reads the status (RolledBack, 0% green): nothing to hold, and
    nothing in the status moves green back."""
    status = progressing()
    done = tick(SPEC, tripped(status, 3).status, 4, guard=trip_for(status)).status
    for second in (5, 60, 600):
        again = tick(SPEC, done, second, guard=trip_for(status))
        assert again.status.phase is Phase.ROLLED_BACK and again.status.weights.green == 0


def test_the_gateway_api_provider_has_no_guard() -> None:
    report = {constants.REPORT_ROLLOUT_UID: "u1", constants.REPORT_GUARD: trip_for(progressing()).to_json()}
    ref = RolloutRef(namespace="default", name="digits", uid="u1", body={}, router_report=report)
    assert controller.guard_trip(ref, SPEC) is not None
    gateway = make_spec(traffic={"provider": "gateway-api"})
    assert controller.guard_trip(ref, gateway) is None
    # a trip left by an earlier rollout of the same name holds nothing back
    assert controller.guard_trip(dataclasses.replace(ref, uid="u2"), SPEC) is None


@pytest.mark.parametrize("phase", [Phase.PROMOTED, Phase.ROLLED_BACK])
def test_conditions_after_a_guard_rollback_are_unaffected_by_later_trips(phase: Phase) -> None:
    status = promoted() if phase is Phase.PROMOTED else tick(SPEC, tripped(progressing(), 3).status, 4).status
    decision = tick(SPEC, status, 9, guard=trip_for(status, revision=status.weights.revision))
    assert decision.status.phase is phase
    assert decision.status.conditions == conditions(decision.status, previous=status.conditions, now=at(9))


def test_a_promotion_from_a_last_step_at_100_percent_asks_under_a_new_revision() -> None:
    """The router's report of the last step (100% green) does not confirm the promotion: the router must
    report again after it read Promoting, when its guard no longer trips."""
    status = progressing()
    for second in (11, 22):
        status = tick(SPEC, status, second, Verdict.PASSED).status
        status = tick(SPEC, status, second + 0.5).status
    assert status.step_index == 2 and status.weights.green == 100 and status.weights_confirmed_at is not None
    last_step = AppliedWeights(status.weights.revision, 100)
    promoting = tick(SPEC, status, 33, Verdict.PASSED, router=last_step).status
    assert promoting.phase is Phase.PROMOTING and promoting.weights.green == 100
    assert promoting.weights.revision == status.weights.revision + 1 and promoting.weights_confirmed_at is None
    still = tick(SPEC, promoting, 34, router=last_step).status
    assert still.phase is Phase.PROMOTING and still.stable == status.stable
    assert tick(SPEC, still, 35).status.phase is Phase.FINALIZING
