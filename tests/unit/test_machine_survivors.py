"""decide() where the mutation run found no test: the guard trip kept in status in full, a trip already
acknowledged, a trip during the hand-back, a progress deadline before any analysis, and the conditions of a
healthy canary."""

from __future__ import annotations

from modelrollout.analysis.evaluate import Verdict
from modelrollout.api.status import GuardTripStatus, ModelRolloutStatus, Phase, Weights
from modelrollout.rollout.commands import CommandName
from modelrollout.rollout.machine import Observations, Serving, recover, reject
from modelrollout.routing.base import NOT_REPORTED, AppliedWeights
from tests.unit.test_machine import (
    SPEC,
    at,
    command,
    condition,
    confirms,
    make_spec,
    progressing,
    promoted,
    promoting_by_user,
    tick,
)
from tests.unit.test_machine_guard import held, trip_for, tripped


def test_the_status_keeps_every_number_of_the_trip_it_rolled_back_for() -> None:
    status = progressing()
    trip = trip_for(status)
    kept = tripped(status, 3).status.guard_trip
    assert kept == GuardTripStatus(
        revision=trip.revision,
        green_revision=status.green_revision,
        errors=20,
        requests=20,
        window_seconds=5.0,
        max_error_rate=0.5,
        at="2026-01-01T00:00:03.250Z",
        rolled_back=True,
    )


def test_a_trip_the_status_already_acknowledged_is_not_acted_on() -> None:
    """The status holds the trip of this very revision (acknowledged, not rolled back for): the router
    follows the weights again, and the same annotation read again must not roll the canary back."""
    status = progressing()
    trip = trip_for(status)
    acknowledged = status.model_copy(
        update={"guard_trip": GuardTripStatus(revision=trip.revision, green_revision=trip.green_revision)}
    )
    decision = tick(SPEC, acknowledged, 3, guard=trip)
    assert decision.status.phase is Phase.PROGRESSING and decision.reason != "GuardTripped"
    assert decision.status.guard_trip == acknowledged.guard_trip


def test_a_trip_during_the_hand_back_moves_nothing_even_before_the_router_confirms() -> None:
    """Finalizing: green runs the promoted model and is the stable one; a trip (even for weights the router
    has not confirmed yet) must not send users to blue, which may still run an older model."""
    finalizing = tick(SPEC, promoting_by_user(), 2).status
    assert finalizing.phase is Phase.FINALIZING
    unconfirmed = finalizing.model_copy(update={"weights_confirmed_at": None})
    decision = tick(SPEC, unconfirmed, 3, blue_ready=False, router=held(unconfirmed), guard=trip_for(unconfirmed))
    assert decision.status.phase is Phase.FINALIZING and decision.reason != "GuardTripped"
    assert decision.status.weights.green == 100


def test_a_progress_deadline_before_any_analysis_says_there_was_none() -> None:
    decision = tick(SPEC, progressing(), 71)
    assert decision.reason == "ProgressDeadlineExceeded" and decision.status.phase is Phase.ROLLING_BACK
    assert decision.message.endswith("no analysis yet"), decision.message


def test_a_healthy_canary_is_progressing_and_not_degraded() -> None:
    status = progressing()
    assert condition(status, "Progressing") == ("True", "Progressing")
    assert condition(status, "Degraded") == ("False", "Progressing")
    failing = tick(SPEC, status, 1, error="ApiException: (503) Service Unavailable").status
    assert condition(failing, "Degraded") == ("True", "ReconcileError")


def test_a_settled_rollout_does_not_record_its_phase_again_after_an_ignored_command() -> None:
    """A command ignored while Promoted is in the history; the quiet ticks after it are not (no new
    record, no Event): the settled phase was recorded when it was reached."""
    ignored = tick(SPEC, promoted(), 5, command=command(CommandName.PAUSE, "p"))
    assert ignored.reason == "CommandIgnored" and ignored.recorded
    for second in (6, 60):
        quiet = tick(SPEC, ignored.status, second)
        assert quiet.status.phase is Phase.PROMOTED and quiet.reason == "Promoted"
        assert not quiet.recorded and quiet.status.history == ignored.status.history


def test_a_status_without_weights_changed_at_starts_the_router_clock_now() -> None:
    """A status written without weightsChangedAt (an older operator, a restored copy) counts the router's
    confirmation time from the first decision that reads it, so a router that never confirms is noticed."""
    status = tick(SPEC, progressing(), 10, Verdict.PASSED).status
    assert status.weights_confirmed_at is None and status.weights.green == 50
    older = status.model_copy(update={"weights_changed_at": None})
    decision = tick(SPEC, older, 12, router=AppliedWeights(status.weights.revision - 1, 10))
    assert decision.status.weights_changed_at == at(12)


def test_a_retried_canary_forgets_why_the_last_one_rolled_back() -> None:
    rolled = tick(SPEC, tripped(progressing(), 3).status, 4).status
    assert rolled.phase is Phase.ROLLED_BACK and rolled.rollback_reason == "GuardTripped"
    retried = tick(SPEC, rolled, 5, command=command(CommandName.RETRY, "r")).status
    assert retried.phase is Phase.PENDING and retried.rollback_reason == ""


def test_a_fixed_spec_restarts_the_same_candidate_once() -> None:
    status = tick(SPEC, progressing(), 10, Verdict.PASSED).status
    rolling = reject(
        status, "spec.server.runtime: 'tensorrt' is not valid", Observations(router=confirms(status)), at(11)
    )
    rolled = reject(rolling.status, "still broken", Observations(router=confirms(rolling.status)), at(12)).status
    fixed = tick(SPEC, rolled, 13)
    assert fixed.reason == "SpecFixed" and fixed.status.green_revision == status.green_revision
    after = tick(SPEC, fixed.status, 14)
    assert after.reason != "GreenChanged" and after.status.started_at == fixed.status.started_at


def test_an_invalid_spec_while_the_router_has_not_confirmed_a_rollback_waits_for_it() -> None:
    status = tick(SPEC, progressing(), 10, Verdict.PASSED).status
    rolling = reject(
        status, "spec.server.runtime: 'tensorrt' is not valid", Observations(router=confirms(status)), at(11)
    )
    assert rolling.status.phase is Phase.ROLLING_BACK
    waiting = reject(rolling.status, "still broken", Observations(router=confirms(status)), at(20))
    assert waiting.status.phase is Phase.ROLLING_BACK and waiting.reason == "WaitingForRouter"


def test_a_hand_back_at_one_percent_green_waits_for_blue() -> None:
    """Finalizing with 1% of users still on green: they stay there until blue serves the promoted model."""
    finalizing = tick(SPEC, promoting_by_user(), 2, blue_ready=False).status
    at_one = finalizing.model_copy(update={"weights": Weights(blue=99, green=1, revision=finalizing.weights.revision)})
    decision = tick(SPEC, at_one, 3, blue_ready=False)
    assert decision.status.phase is Phase.FINALIZING and decision.reason == "WaitingForBlue"
    assert decision.green_weight == 1


def test_a_status_lost_while_handing_back_at_one_percent_keeps_the_routers_weights() -> None:
    finalizing = tick(SPEC, promoting_by_user(), 2, blue_ready=False).status
    router = AppliedWeights(finalizing.weights.revision, 1)
    recovered = recover(
        ModelRolloutStatus(),
        recorded=finalizing.stable,
        green_serves=(SPEC.green.model, SPEC.server),
        serving=Serving(blue_runs_only_stable=False, blue_ready=False, green_runs_stable=True),
        router=router,
        now=at(9),
    )
    assert recovered.phase is Phase.FINALIZING
    assert recovered.weights == Weights(blue=99, green=1, revision=finalizing.weights.revision)


def test_setting_green_back_to_the_stable_model_at_one_percent_hands_back_through_blue() -> None:
    """A canary at 1% whose green is set back to the stable model: that 1% of users leaves green through
    the hand-back, never by declaring the rollout promoted at once."""
    done = promoted()
    canary = tick(make_spec(green="v3"), done, 5).status
    canary = tick(make_spec(green="v3"), canary, 5).status
    assert canary.phase is Phase.PROGRESSING
    at_one = canary.model_copy(update={"weights": Weights(blue=99, green=1, revision=canary.weights.revision)})
    decision = tick(SPEC, at_one, 6)
    assert decision.reason == "GreenIsStable" and decision.status.phase is Phase.FINALIZING


def _restored_after_a_later_promotion(rolled: ModelRolloutStatus) -> ModelRolloutStatus:
    """An older copy of a rolled-back status restored after the same green was retried and promoted: blue's
    record names that green as the stable model."""
    record = promoted().stable
    assert record is not None and record.revision == rolled.green_revision
    restored = recover(
        rolled,
        recorded=record,
        green_serves=None,
        serving=Serving(blue_runs_only_stable=True, blue_ready=True, green_runs_stable=False),
        router=NOT_REPORTED,
        now=at(50),
    )
    assert restored.phase is Phase.ROLLED_BACK and restored.stable == record
    return restored


def test_a_retry_of_a_green_that_is_the_stable_model_by_now_does_not_canary_it_again() -> None:
    rolled = tick(SPEC, tripped(progressing(), 3).status, 4).status
    restored = _restored_after_a_later_promotion(rolled)
    decision = tick(SPEC, restored, 51, command=command(CommandName.RETRY, "r"))
    assert decision.status.phase is Phase.PROMOTED and decision.green_weight == 0


def test_a_fixed_spec_whose_green_is_the_stable_model_by_now_does_not_canary_it_again() -> None:
    status = tick(SPEC, progressing(), 10, Verdict.PASSED).status
    rolling = reject(status, "spec.server.runtime: 'x' is not valid", Observations(router=confirms(status)), at(11))
    rolled = reject(rolling.status, "still broken", Observations(router=confirms(rolling.status)), at(12)).status
    assert rolled.phase is Phase.ROLLED_BACK and rolled.rollback_reason == "InvalidSpec"
    decision = tick(SPEC, _restored_after_a_later_promotion(rolled), 51)
    assert decision.reason == "SpecFixed" and decision.status.phase is Phase.PROMOTED and decision.green_weight == 0


def test_a_retry_read_with_the_ended_canarys_trip_acknowledges_it_so_the_router_follows_the_retry() -> None:
    """The trip arrives only with the retry: it was about the canary that ended (aborted at 0% green), so it
    is acknowledged, or the router would keep the retried candidate at 0% and never confirm its steps."""
    status = progressing()
    trip = trip_for(status)
    rolling = tick(SPEC, status, 3, command=command(CommandName.ABORT, "a")).status
    ended = tick(SPEC, rolling, 4).status
    assert ended.phase is Phase.ABORTED and ended.guard_trip is None
    retried = tick(SPEC, ended, 5, command=command(CommandName.RETRY, "r"), guard=trip).status
    assert retried.phase is Phase.PENDING and retried.green_revision == trip.green_revision
    assert retried.guard_trip is not None and retried.guard_trip.revision == trip.revision
    assert not retried.guard_trip.rolled_back
