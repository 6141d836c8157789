"""When a settled rollout needs no work: not while a command waits, the spec changed, or its owned objects
are due to be re-applied (or should now look different, as green scaled down after a rollback)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import time
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from modelrollout import controller
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import AnalysisStatus, ModelRolloutStatus, Phase, StableStatus, without_nulls
from modelrollout.rollout import machine, steps
from modelrollout.rollout.commands import Command, CommandName
from modelrollout.routing.base import RolloutRef

SPEC = ModelRolloutSpec.model_validate(
    {
        "blue": {"model": {"uri": "file:///m/a.onnx", "version": "v1"}},
        "green": {"model": {"uri": "file:///m/b.onnx", "version": "v2"}},
        "traffic": {"steps": [{"weight": 50}, {"weight": 100}]},
    }
)
BODY = {"metadata": {"namespace": "default", "name": "r", "uid": "u1", "generation": 3}}
KEY = controller.state_key("default", "r", "u1")


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> None:
    controller._ensured.clear()
    # no object of these tests was seen deleted (handlers, once imported, asks its loops: another test's may)
    monkeypatch.setattr(controller, "_ended", lambda uid: False)


CONFIRMED = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def settled(phase: Phase = Phase.PROMOTED, generation: int = 3) -> ModelRolloutStatus:
    return ModelRolloutStatus(phase=phase, observed_generation=generation, weights_confirmed_at=CONFIRMED)


def ensured_now(status: ModelRolloutStatus) -> None:
    controller._ensured[KEY] = controller.Ensured(controller._owned(BODY, SPEC, status)[1], time.monotonic())


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
    controller._ensured[KEY] = controller.Ensured(controller._ensured[KEY].fingerprint, time.monotonic() - 61)
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
    controller._ensured[KEY] = controller.Ensured(fingerprint, time.monotonic() - 61, APPLIED)
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
    controller._ensured[KEY] = controller.Ensured(fingerprint, time.monotonic(), APPLIED)
    behind = {**APPLIED, ("Deployment", "r-blue"): ("uid-b", 0), ("Service", "r-router"): ("uid-s", 39)}
    del behind[("Deployment", "r-router")]  # made just now, not shown yet
    assert controller._resting(BODY, SPEC, status, None, behind)
    # still not shown after SETTLE_SECONDS: deleted (an earlier version is still the watch being behind)
    controller._ensured[KEY] = dataclasses.replace(
        controller._ensured[KEY], at=time.monotonic() - controller.SETTLE_SECONDS - 1
    )
    assert not controller._resting(BODY, SPEC, status, None, behind)
    assert controller._resting(BODY, SPEC, status, None, {**behind, ("Deployment", "r-router"): ("uid-r", 1)})


def test_with_the_watches_all_is_applied_again_after_the_long_period_or_a_relist() -> None:
    status = settled()
    fingerprint = controller._owned(BODY, SPEC, status)[1]
    long_ago = time.monotonic() - controller.ENSURE_WATCHED_EVERY_SECONDS - 1
    controller._ensured[KEY] = controller.Ensured(fingerprint, long_ago, APPLIED)
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


def test_a_first_analysis_is_not_a_repeat() -> None:
    assert not controller.repeats_stored_round(STORED, {key: v for key, v in STORED.items() if key != "analysis"})


T0 = datetime.datetime(2026, 11, 24, 10, 0, tzinfo=datetime.UTC)
FIVE = datetime.timedelta(seconds=5)


def held(at: datetime.datetime, message: str = "step 0: latency Inconclusive: no data") -> ModelRolloutStatus:
    """A rollout held at step 0 by an Inconclusive analysis taken at ``at``."""
    return ModelRolloutStatus(
        phase=Phase.PROGRESSING,
        green_revision=steps.green_revision(SPEC),
        message=message,
        observed_generation=3,
        analysis=AnalysisStatus(time=at, verdict="Inconclusive", step_index=0),
    )


def stored_body(version: str, status: ModelRolloutStatus, uid: str = "u1") -> dict[str, Any]:
    metadata = {"namespace": "default", "name": "r", "uid": uid, "resourceVersion": version, "generation": 3}
    return {"metadata": metadata, "status": without_nulls(status.to_api())}


def apply(body: dict[str, Any], status: ModelRolloutStatus, patched: list[dict[str, Any]]) -> None:
    ref = RolloutRef(namespace="default", name="r", uid=body["metadata"]["uid"], body=body)
    decision = machine.Decision(machine.Action.HOLD, status, "AnalysisInconclusive", status.message)
    assert asyncio.run(controller._apply(body, ref, decision, time.monotonic()))  # type: ignore[arg-type]


@pytest.fixture
def patched(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The status patches _apply sends (the API server's side is tested in tests/e2e/test_owned_objects.py)."""
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(controller, "_write_status", lambda ref, patch: sent.append(patch))
    monkeypatch.setattr(controller, "_repeated_rounds", {})
    return sent


def test_a_repeated_round_is_remembered_not_written_and_schedules_the_next_one(patched: list[dict[str, Any]]) -> None:
    body = stored_body("7", held(T0))
    apply(body, held(T0 + FIVE), patched)
    assert patched == []
    stored_time = body["status"]["analysis"]["time"]
    assert controller._repeated_rounds[KEY] == ("u1", "7", stored_time, T0 + FIVE)
    read = ModelRolloutStatus.model_validate(body["status"])
    seen = controller._with_repeated_round(KEY, body, read)
    now = T0 + datetime.timedelta(seconds=6)
    assert seen.analysis is not None and seen.analysis.time == T0 + FIVE
    assert not steps.analysis_due(SPEC, seen, now)  # the next round is an interval after the one not written
    assert steps.analysis_due(SPEC, read, now)  # (without the memory it would be due at once)
    assert read.analysis is not None and read.analysis.time == T0  # the status read is not changed in place
    # a round that finds something else is written, with its own time
    apply(body, held(T0 + datetime.timedelta(seconds=10), "step 0: latency Inconclusive: 3 samples"), patched)
    assert len(patched) == 1 and patched[0]["status"]["message"].endswith("3 samples")


@pytest.mark.parametrize(
    "other",
    [
        stored_body("8", held(T0)),  # written since (by anyone)
        stored_body("7", held(T0), uid="u2"),  # another rollout of the same name
        stored_body("7", held(T0 - datetime.timedelta(seconds=1))),  # another stored result, same version
    ],
)
def test_a_remembered_round_counts_only_for_the_status_it_saw(other: dict[str, Any], patched: list[Any]) -> None:
    stored_time = stored_body("7", held(T0))["status"]["analysis"]["time"]
    controller._repeated_rounds[KEY] = ("u1", "7", stored_time, T0 + FIVE)
    read = ModelRolloutStatus.model_validate(other["status"])
    seen = controller._with_repeated_round(KEY, other, read)
    assert seen.analysis == read.analysis
    assert KEY not in controller._repeated_rounds


def test_a_remembered_round_never_dates_the_analysis_back(patched: list[Any]) -> None:
    body = stored_body("7", held(T0))
    controller._repeated_rounds[KEY] = ("u1", "7", body["status"]["analysis"]["time"], T0 - FIVE)
    read = ModelRolloutStatus.model_validate(body["status"])
    seen = controller._with_repeated_round(KEY, body, read)
    assert seen.analysis is not None and seen.analysis.time == T0


def stored_settled(status: ModelRolloutStatus) -> dict[str, Any]:
    """The ModelRollout as the watch delivers it, with ``status``."""
    return {
        "metadata": {**BODY["metadata"], "uid": "u1", "resourceVersion": "7"},
        "spec": SPEC.to_api(),
        "status": without_nulls(status.to_api()),
    }


def test_a_reconcile_that_finds_the_rollout_resting_marks_it_at_rest_until_one_does_not() -> None:
    status = settled()
    body = stored_settled(status)
    shown: dict[tuple[str, str], tuple[str, int]] = {}
    fingerprint = controller._owned(BODY, SPEC, status)[1]
    controller._ensured[KEY] = controller.Ensured(fingerprint, time.monotonic() - 6, shown)  # settled
    asyncio.run(controller.reconcile(body, deployed=shown))  # type: ignore[arg-type]
    assert controller.at_rest("default", "r", "u1")
    body["metadata"]["annotations"] = {"modelrollout.dev/command": "retry"}  # a command waits: not at rest
    controller._ensured.clear()  # (no API server here: what it reads fails, and is counted, not raised)
    asyncio.run(controller.reconcile(body))  # type: ignore[arg-type]
    assert not controller.at_rest("default", "r", "u1")
    controller.forget("default", "r", "u1")


def test_no_rest_while_the_last_apply_settles_nor_without_the_watches() -> None:
    """An object deleted within SETTLE_SECONDS of the apply is not drift yet: the next tick must look again;
    and with the colours read from the API server (deployed None) no watch would wake the loop."""
    status = settled()
    body = stored_settled(status)
    shown: dict[tuple[str, str], tuple[str, int]] = {}
    fingerprint = controller._owned(BODY, SPEC, status)[1]
    controller._ensured[KEY] = controller.Ensured(fingerprint, time.monotonic(), shown)
    asyncio.run(controller.reconcile(body, deployed=shown))  # type: ignore[arg-type]
    assert not controller.at_rest("default", "r", "u1")  # applied a moment ago
    controller._ensured[KEY] = controller.Ensured(fingerprint, time.monotonic() - 6, shown)
    asyncio.run(controller.reconcile(body, deployed=None))  # type: ignore[arg-type]
    assert not controller.at_rest("default", "r", "u1")  # no watches
    controller._ensured[KEY] = controller.Ensured(fingerprint, time.monotonic() - 6, shown)
    asyncio.run(controller.reconcile(body, deployed=shown))  # type: ignore[arg-type]
    assert controller.at_rest("default", "r", "u1")
    controller.forget("default", "r", "u1")


def test_what_the_operator_remembers_of_an_object_is_not_that_of_one_made_again_under_its_name() -> None:
    """A reconcile in flight when its rollout is deleted (with no finalizer) may finish after a new object of
    the name has its own loop: what it leaves (an apply, a failure, a write fence) is the old object's alone."""
    status = settled()
    ensured_now(status)  # the old object's (u1) objects applied
    again = {"metadata": {**BODY["metadata"], "uid": "u2"}}
    assert controller._resting(BODY, SPEC, status, None)
    assert not controller._resting(again, SPEC, status, None)  # nothing applied for the new object yet
    controller._ensured[controller.state_key("default", "r", "u2")] = controller._ensured[KEY]
    controller._failures[KEY] = "writing status: refused"
    controller.forget("default", "r", "u1")  # the old object forgotten: the new one keeps its own
    assert KEY not in controller._ensured and KEY not in controller._failures
    assert controller._resting(again, SPEC, status, None)
    controller.forget("default", "r", "u2")


def test_a_reconcile_of_an_object_seen_deleted_writes_nothing(
    patched: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its loop ends at the DELETED event, but a reconcile may already be on its way: nothing it would apply,
    write or route may reach an object made again under the name."""
    ended: set[str] = set()
    monkeypatch.setattr(controller, "_ended", ended.__contains__)
    status = settled().model_copy(update={"weights_confirmed_at": None})  # not resting: it would write
    body = stored_settled(status)
    asyncio.run(controller.reconcile(body, deployed={}))  # type: ignore[arg-type]
    assert patched, "the reconcile of an object not ended writes its status"
    patched.clear()
    ended.add("u1")
    asyncio.run(controller.reconcile(body, deployed={}))  # type: ignore[arg-type]
    assert patched == []
    controller.forget("default", "r", "u1")


@pytest.mark.parametrize(
    ("read_again", "ends"),
    [
        (None, True),  # gone: deleted while the watch was down (no DELETED event)
        ({"metadata": {"uid": "u2"}}, True),  # another object holds the name now
        ({"metadata": {"uid": "u1"}}, False),  # a 404 for an object that is there (an API server's caches)
    ],
)
def test_a_status_write_answered_not_found_ends_the_loop_only_when_the_rollout_is_gone(
    monkeypatch: pytest.MonkeyPatch, read_again: dict[str, Any] | None, ends: bool
) -> None:
    ended: list[str] = []
    monkeypatch.setattr(controller, "_end", ended.append)
    monkeypatch.setattr(controller.kopf, "event", lambda *_, **__: None)  # no operator here to post it
    monkeypatch.setattr(controller.api, "get_custom", lambda *_: read_again)

    def not_found(ref: Any, patch: Any) -> None:
        raise ApiException(status=404, reason="Not Found")

    monkeypatch.setattr(controller, "_write_status", not_found)
    body = stored_body("7", held(T0))
    ref = RolloutRef(namespace="default", name="r", uid="u1", body=body)
    decision = machine.Decision(machine.Action.HOLD, held(T0, "something else"), "AnalysisInconclusive", "x")
    assert not asyncio.run(controller._apply(body, ref, decision, time.monotonic()))  # type: ignore[arg-type]
    assert ended == (["u1"] if ends else [])
    controller.forget("default", "r", "u1")


def test_a_promotion_of_an_object_seen_deleted_applies_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blue is redeployed with a promoted model before the status says so; not for an object seen deleted
    meanwhile (an apply with its ownerReference would hand the objects of one made again to the collector)."""
    applied: list[Any] = []
    monkeypatch.setattr(controller.resources, "ensure", lambda *args, **kwargs: applied.append(args) or {})
    status = held(T0)
    promoted = status.model_copy(
        update={
            "stable": StableStatus(model=SPEC.green.model, server=SPEC.server, revision="r2", promoted_at=T0),
        }
    )
    decision = machine.Decision(machine.Action.PROMOTE, promoted, "Promoted", "promoted")
    body = stored_body("7", status)
    ref = RolloutRef(namespace="default", name="r", uid="u1", body=body)
    assert asyncio.run(controller._record_promotion(body, ref, SPEC, status, decision))  # type: ignore[arg-type]
    assert len(applied) == 1
    monkeypatch.setattr(controller, "_ended", {"u1"}.__contains__)
    assert not asyncio.run(controller._record_promotion(body, ref, SPEC, status, decision))  # type: ignore[arg-type]
    assert len(applied) == 1


def test_status_fields_this_version_does_not_know_are_kept(patched: list[dict[str, Any]]) -> None:
    """Written by a newer operator (a downgrade, replicas of two versions during an upgrade) or by a tool: the
    status is written whole, with them as they were, and they alone never make a write."""
    body = stored_body("7", held(T0))
    body["status"]["futureField"] = {"kept": True}
    apply(body, held(T0), patched)  # the same status: nothing written
    assert patched == []
    apply(body, held(T0, "step 0: latency Inconclusive: 3 samples"), patched)
    assert patched[0]["status"]["futureField"] == {"kept": True}
    assert patched[0]["status"]["message"].endswith("3 samples")
