"""When a settled rollout needs no work: not while a command waits, the spec changed, or its owned objects
are due to be re-applied (or should now look different, as green scaled down after a rollback)."""

from __future__ import annotations

import dataclasses
import datetime
import time

import pytest

from modelrollout import controller
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import ModelRolloutStatus, Phase, StableStatus
from modelrollout.rollout.commands import Command, CommandName

SPEC = ModelRolloutSpec.model_validate(
    {
        "blue": {"model": {"uri": "file:///m/a.onnx", "version": "v1"}},
        "green": {"model": {"uri": "file:///m/b.onnx", "version": "v2"}},
        "traffic": {"steps": [{"weight": 50}, {"weight": 100}]},
    }
)
BODY = {"metadata": {"namespace": "default", "name": "r", "generation": 3}}


@pytest.fixture(autouse=True)
def clean() -> None:
    controller._ensured.clear()


CONFIRMED = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def settled(phase: Phase = Phase.PROMOTED, generation: int = 3) -> ModelRolloutStatus:
    return ModelRolloutStatus(phase=phase, observed_generation=generation, weights_confirmed_at=CONFIRMED)


def ensured_now(status: ModelRolloutStatus) -> None:
    controller._ensured["default/r"] = controller.Ensured(controller._owned(BODY, SPEC, status)[1], time.monotonic())


def test_a_settled_rollout_rests_once_its_objects_are_applied() -> None:
    status = settled()
    assert not controller._resting(BODY, SPEC, status, None)  # nothing applied yet (say, after a restart)
    ensured_now(status)
    assert controller._resting(BODY, SPEC, status, None)


def test_it_wakes_for_a_command_a_spec_change_or_time() -> None:
    status = settled()
    ensured_now(status)
    assert not controller._resting(BODY, SPEC, status, Command(name=CommandName.RETRY, id="c1"))
    assert not controller._resting(BODY, SPEC, settled(generation=2), None)
    controller._ensured["default/r"] = controller.Ensured(
        controller._ensured["default/r"].fingerprint, time.monotonic() - 61
    )
    assert not controller._resting(BODY, SPEC, status, None)


def test_a_settled_rollout_whose_weights_are_not_confirmed_yet_does_not_rest() -> None:
    status = settled().model_copy(update={"weights_confirmed_at": None})
    ensured_now(status)
    assert not controller._resting(BODY, SPEC, status, None)


def test_moving_phases_never_rest() -> None:
    for phase in (Phase.PENDING, Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTING, Phase.ROLLING_BACK):
        status = settled(phase)
        ensured_now(status)
        assert not controller._resting(BODY, SPEC, status, None)


def test_after_a_rollback_green_is_scaled_down_before_resting() -> None:
    rolling_back = settled(Phase.ROLLING_BACK)
    ensured_now(rolling_back)  # applied while rolling back: green still has its replicas
    assert not controller._resting(BODY, SPEC, settled(Phase.ROLLED_BACK), None)


def promoted_status(phase: Phase) -> ModelRolloutStatus:
    status = settled(phase)
    status.stable = StableStatus(
        model=SPEC.green.model,
        server=SPEC.server,
        revision="candidate",
        promoted_at=datetime.datetime.now(datetime.UTC),
    )
    return status


def test_after_a_promotion_blue_keeps_the_promoted_model_whatever_spec_blue_says() -> None:
    older_blue = SPEC.model_copy(update={"blue": SPEC.blue.model_copy(update={"model": SPEC.green.model})})
    for spec in (SPEC, older_blue):
        assert controller.stable_of(spec, promoted_status(Phase.PROMOTED)).model == SPEC.green.model
    assert controller.stable_of(SPEC, settled(Phase.PROMOTED)).model == SPEC.blue.model  # before any promotion


def test_after_a_promotion_green_is_scaled_down_before_resting() -> None:
    finalizing = promoted_status(Phase.FINALIZING)
    ensured_now(finalizing)  # applied while finalizing: green still has its replicas
    promoted = promoted_status(Phase.PROMOTED)
    assert controller._owned(BODY, SPEC, promoted)[0] == 0
    assert not controller._resting(BODY, SPEC, promoted, None)
    ensured_now(promoted)
    assert controller._resting(BODY, SPEC, promoted, None)


def test_a_promotion_changes_what_blue_must_run_so_the_objects_are_applied_again() -> None:
    before = settled(Phase.PROMOTED)  # blue ran spec.blue when the objects were last applied
    ensured_now(before)
    assert not controller._resting(BODY, SPEC, promoted_status(Phase.PROMOTED), None)


APPLIED = {
    ("Deployment", "r-blue"): ("uid-b", 1),
    ("Deployment", "r-green"): ("uid-g", 2),
    ("Deployment", "r-router"): ("uid-r", 1),
    ("Service", "r-router"): ("uid-s", 40),
    ("RoleBinding", "r-router"): ("uid-rb", 41),
    ("ConfigMap", "r-router-report"): ("uid-c", 0),
}


def test_with_the_watches_a_settled_rollout_rests_until_they_show_drift() -> None:
    status = settled()
    fingerprint = controller._owned(BODY, SPEC, status)[1]
    controller._ensured["default/r"] = controller.Ensured(fingerprint, time.monotonic() - 61, APPLIED)
    # a minute after the apply it still rests while the watches show what was applied, where without them it
    # would apply again every ENSURE_EVERY_SECONDS
    assert controller._resting(BODY, SPEC, status, None, APPLIED)
    assert not controller._resting(BODY, SPEC, status, None, None)
    # a Deployment scaled by hand (a later generation), blue's deleted, the router's made again, the router's
    # binding deleted or its Service edited: applied again
    for drifted in (
        {**APPLIED, ("Deployment", "r-green"): ("uid-g", 3)},
        {key: value for key, value in APPLIED.items() if key != ("Deployment", "r-blue")},
        {**APPLIED, ("Deployment", "r-router"): ("uid-r2", 1)},
        {key: value for key, value in APPLIED.items() if key != ("RoleBinding", "r-router")},
        {**APPLIED, ("Service", "r-router"): ("uid-s", 57)},
    ):
        assert not controller._resting(BODY, SPEC, status, None, drifted)
    # the router writing its report is no drift, nor is an object the watches show and the operator never applied
    assert controller._resting(BODY, SPEC, status, None, {**APPLIED, ("ConfigMap", "r-router-report"): ("uid-c", 0)})
    assert controller._resting(BODY, SPEC, status, None, {**APPLIED, ("Service", "r-extra"): ("uid-x", 99)})


def test_the_watch_lagging_behind_the_apply_is_not_drift() -> None:
    status = settled()
    fingerprint = controller._owned(BODY, SPEC, status)[1]
    controller._ensured["default/r"] = controller.Ensured(fingerprint, time.monotonic(), APPLIED)
    behind = {**APPLIED, ("Deployment", "r-blue"): ("uid-b", 0), ("Service", "r-router"): ("uid-s", 39)}
    del behind[("Deployment", "r-router")]  # made just now, not shown yet
    assert controller._resting(BODY, SPEC, status, None, behind)
    # still not shown after SETTLE_SECONDS: deleted (an earlier version is still the watch being behind)
    controller._ensured["default/r"] = dataclasses.replace(
        controller._ensured["default/r"], at=time.monotonic() - controller.SETTLE_SECONDS - 1
    )
    assert not controller._resting(BODY, SPEC, status, None, behind)
    assert controller._resting(BODY, SPEC, status, None, {**behind, ("Deployment", "r-router"): ("uid-r", 1)})


def test_with_the_watches_all_is_applied_again_after_the_long_period_or_a_relist() -> None:
    status = settled()
    fingerprint = controller._owned(BODY, SPEC, status)[1]
    long_ago = time.monotonic() - controller.ENSURE_WATCHED_EVERY_SECONDS - 1
    controller._ensured["default/r"] = controller.Ensured(fingerprint, long_ago, APPLIED)
    assert not controller._resting(BODY, SPEC, status, None, APPLIED)
    # a watch listed again after the apply: an object deleted meanwhile may still show as applied
    last = controller.Ensured(fingerprint, 100.0, APPLIED)
    assert not controller.ensure_due(last, fingerprint, APPLIED, now=110.0, relisted_at=90.0)
    assert controller.ensure_due(last, fingerprint, APPLIED, now=110.0, relisted_at=105.0)


# --- a round that repeats the stored analysis ------------------------------------------------------------------

STORED = {
    "phase": "Progressing",
    "message": "step 0: latency Inconclusive: no samples",
    "analysis": {"time": "2026-11-24T10:00:00Z", "verdict": "Inconclusive", "stepIndex": 0, "checks": []},
}


def test_a_round_that_only_repeats_the_stored_result_is_not_a_change() -> None:
    again = {**STORED, "analysis": {**STORED["analysis"], "time": "2026-11-24T10:00:05Z"}}  # type: ignore[dict-item]
    assert controller.repeats_stored_round(again, STORED)


@pytest.mark.parametrize(
    "changed",
    [
        {"message": "step 0: latency Inconclusive: 3 samples"},
        {"analysis": {"time": "2026-11-24T10:00:05Z", "verdict": "Passed", "stepIndex": 0, "checks": []}},
        {"analysis": {"time": "2026-11-24T10:00:05Z", "verdict": "Inconclusive", "stepIndex": 1, "checks": []}},
        {"phase": "Paused", "analysis": {**STORED["analysis"], "time": "2026-11-24T10:00:05Z"}},  # type: ignore[dict-item]
        {"analysis": STORED["analysis"]},  # the same round: unchanged, not a repeat
        {"analysis": None},
    ],
)
def test_a_round_that_changes_anything_else_is_written(changed: dict[str, object]) -> None:
    wanted = {key: value for key, value in {**STORED, **changed}.items() if value is not None}
    assert not controller.repeats_stored_round(wanted, STORED)
    assert not controller.repeats_stored_round(STORED, {key: v for key, v in STORED.items() if key != "analysis"})


def test_a_repeated_round_dates_the_analysis_only_while_the_stored_status_is_the_one_it_saw() -> None:
    stored = ModelRolloutStatus.model_validate(STORED)
    assert stored.analysis is not None
    later = stored.analysis.time + datetime.timedelta(seconds=5)
    body = {"metadata": {"uid": "u1", "resourceVersion": "7"}, "status": STORED}
    controller._repeated_rounds["default/r"] = ("u1", "7", later)
    seen = controller._with_repeated_round("default/r", body, stored)  # type: ignore[arg-type]
    assert seen.analysis is not None and seen.analysis.time == later
    assert stored.analysis.time < later  # the status read is not changed in place
    written = {"metadata": {"uid": "u1", "resourceVersion": "8"}, "status": STORED}  # any write: forgotten
    seen = controller._with_repeated_round("default/r", written, stored)  # type: ignore[arg-type]
    assert seen.analysis is not None and seen.analysis.time == stored.analysis.time
    assert "default/r" not in controller._repeated_rounds
