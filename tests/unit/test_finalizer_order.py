"""The finalizer never runs beside a reconcile of the same rollout: kopf calls it as soon as the deletion shows,
while the rollout's loop may still be in a reconcile that will write weights; it waits for that reconcile."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest
from kopf._cogs.aiokits import aioenums

from modelrollout import controller, handlers, metrics, wakeups
from modelrollout.k8s import deletion

KEY = controller.state_key("ml", "r", "u1")


def body(deleting: bool = False, uid: str = "u1") -> kopf.Body:
    metadata: dict[str, Any] = {"namespace": "ml", "name": "r", "uid": uid}
    if deleting:
        metadata["deletionTimestamp"] = "2026-11-24T10:00:00Z"
    return kopf.Body({"metadata": metadata, "spec": {}})  # type: ignore[typeddict-item]


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    happened: list[str] = []
    monkeypatch.setattr(handlers, "WAKEUPS", wakeups.Wakeups())  # no loop, and no object gone, of another test
    monkeypatch.setattr(handlers, "report_for", lambda kwargs, body: None)
    monkeypatch.setattr(handlers, "owned_view", lambda kwargs, body: None)
    monkeypatch.setattr(handlers, "deployed", lambda body: None)
    monkeypatch.setattr(handlers, "may_act", lambda: True)
    monkeypatch.setattr(controller, "forget", lambda namespace, name, uid: happened.append(f"forgotten {uid}"))
    monkeypatch.setattr(handlers.RESYNC, "forget", lambda namespace, name: happened.append("name forgotten"))
    monkeypatch.setattr(deletion, "finalize", lambda body, **_: happened.append("finalized"))
    return happened


async def test_the_finalizer_waits_for_the_reconcile_in_flight(
    monkeypatch: pytest.MonkeyPatch, events: list[str]
) -> None:
    release = asyncio.Event()

    async def reconcile(*_: Any, **__: Any) -> None:
        events.append("reconcile begun")
        await release.wait()  # a reconcile still writing what it decided
        events.append("reconcile wrote")

    monkeypatch.setattr(controller, "reconcile", reconcile)
    in_flight = asyncio.ensure_future(handlers.tick(body()))
    while "reconcile begun" not in events:
        await asyncio.sleep(0)
    finalizer = asyncio.ensure_future(handlers.deleted(body(deleting=True)))
    for _ in range(100):
        await asyncio.sleep(0)
    assert events == ["reconcile begun"]  # the finalizer has not moved traffic yet
    release.set()
    await asyncio.wait_for(asyncio.gather(in_flight, finalizer), timeout=10)
    assert events == ["reconcile begun", "reconcile wrote", "finalized", "forgotten u1", "name forgotten"]
    assert ("ml", "r") not in handlers.RECONCILING


async def test_no_reconcile_runs_once_the_deletion_shows(monkeypatch: pytest.MonkeyPatch, events: list[str]) -> None:
    async def reconcile(*_: Any, **__: Any) -> None:
        events.append("reconciled")

    monkeypatch.setattr(controller, "reconcile", reconcile)
    await handlers.tick(body())
    await handlers.tick(body(deleting=True))
    assert events == ["reconciled"]


async def steer_until_stopped(events: list[str], reason: kopf.DaemonStoppingReason, *, again: bool = False) -> None:
    """A rollout's loop, stopped by kopf for ``reason`` after its first reconcile; ``again``: another loop of the
    same name (an object made again under it) registered meanwhile."""
    setter: aioenums.FlagSetter[kopf.DaemonStoppingReason] = aioenums.FlagSetter()
    stopped = aioenums.AsyncFlagWaiter(setter)
    events.clear()
    loop = asyncio.ensure_future(handlers.steer(body(), stopped))
    while "reconciled" not in events:
        await asyncio.sleep(0)
    newer = handlers.WAKEUPS.register(("ml", "r"))[0] if again else None
    setter.set(reason)
    await asyncio.wait_for(loop, timeout=10)
    if newer is not None:
        handlers.WAKEUPS.forget(("ml", "r"), newer)


async def test_a_loop_stopped_by_the_deletion_forgets_the_rollout_after_its_last_reconcile(
    monkeypatch: pytest.MonkeyPatch, events: list[str]
) -> None:
    async def reconcile(*_: Any, **__: Any) -> None:
        events.append("reconciled")

    monkeypatch.setattr(controller, "reconcile", reconcile)
    await steer_until_stopped(events, kopf.DaemonStoppingReason.RESOURCE_DELETED)
    # also when no finalizer forgets it (taken off by hand)
    assert events == ["reconciled", "forgotten u1", "name forgotten"]
    await steer_until_stopped(events, kopf.DaemonStoppingReason.OPERATOR_EXITING)
    assert events == ["reconciled"]  # the next operator goes on from the status; nothing is lost either way
    await steer_until_stopped(events, kopf.DaemonStoppingReason.RESOURCE_DELETED, again=True)
    # what is kept by name is the new object's now; only what the old one's loop remembered goes
    assert events == ["reconciled", "forgotten u1"]


async def test_a_loop_kopf_does_not_stop_ends_at_the_deletion_and_forgets_the_rollout(
    monkeypatch: pytest.MonkeyPatch, events: list[str]
) -> None:
    """An object deleted with no finalizer on it: its DELETED event has no deletion timestamp, so kopf never
    stops its loop. The event ends it, and it forgets the rollout after its last reconcile."""
    reconciles = 0

    async def reconcile(*_: Any, **__: Any) -> None:
        nonlocal reconciles
        reconciles += 1
        events.append("reconciled")

    monkeypatch.setattr(controller, "reconcile", reconcile)
    monkeypatch.setattr(handlers, "TICK_SECONDS", 3600.0)  # only a wake-up ends its sleep
    never: aioenums.FlagSetter[kopf.DaemonStoppingReason] = aioenums.FlagSetter()
    loops = metrics.LOOPS._value.get()
    loop = asyncio.ensure_future(handlers.steer(body(), aioenums.AsyncFlagWaiter(never)))
    for _ in range(1000):
        if reconciles:
            break
        await asyncio.sleep(0)
    assert reconciles == 1 and metrics.LOOPS._value.get() == loops + 1
    await handlers.rollout_changed(body(), type="DELETED")
    await asyncio.wait_for(loop, timeout=5)  # woken at once (its tick is an hour): no reconcile after it
    assert reconciles == 1 and events[-2:] == ["forgotten u1", "name forgotten"]
    assert metrics.LOOPS._value.get() == loops


async def test_a_rollout_gone_from_the_watch_is_forgotten(events: list[str]) -> None:
    await handlers.rollout_changed(body(), type="DELETED")
    assert events == ["forgotten u1", "name forgotten"]
    await handlers.rollout_changed(body(), type="MODIFIED")
    assert events == ["forgotten u1", "name forgotten"]


async def test_a_late_deletion_of_an_object_leaves_what_a_new_one_of_the_name_keeps(events: list[str]) -> None:
    newer = handlers.WAKEUPS.register(("ml", "r"), "u2")[0]  # made again under the name, its loop running
    try:
        await handlers.rollout_changed(body(), type="DELETED")  # the old object's (u1) event, handled late
        assert events == ["forgotten u1"]  # what is kept by name is the new object's
        await handlers.deleted(body(deleting=True))  # its finalizer, ending late
        assert events == ["forgotten u1", "finalized", "forgotten u1"]
    finally:
        handlers.WAKEUPS.forget(("ml", "r"), newer)
    events.clear()
    await handlers.rollout_changed(body(), type="DELETED")
    assert events == ["forgotten u1", "name forgotten"]  # no other object's loop runs now


async def test_a_loop_at_rest_waits_for_a_wake_up_longer_than_a_tick(
    monkeypatch: pytest.MonkeyPatch, events: list[str]
) -> None:
    waits: list[float] = []
    setter: aioenums.FlagSetter[kopf.DaemonStoppingReason] = aioenums.FlagSetter()

    async def reconcile(*_: Any, **__: Any) -> None:
        resting = len(waits) == 1  # the second reconcile finds the rollout at rest
        (controller._at_rest.add if resting else controller._at_rest.discard)(KEY)

    async def sleep(event: asyncio.Event, seconds: float, stopped: Any) -> None:

        waits.append(seconds)
        if len(waits) == 3:
            setter.set(kopf.DaemonStoppingReason.OPERATOR_EXITING)

    monkeypatch.setattr(controller, "reconcile", reconcile)
    monkeypatch.setattr(handlers.WAKEUPS, "sleep", sleep)
    monkeypatch.setattr(handlers, "MIN_GAP_SECONDS", 0.0)
    await asyncio.wait_for(handlers.steer(body(), aioenums.AsyncFlagWaiter(setter)), timeout=10)
    assert waits == [handlers.TICK_SECONDS, handlers.REST_SECONDS, handlers.TICK_SECONDS]
    assert handlers.REST_SECONDS > handlers.TICK_SECONDS


async def test_a_rollout_at_rest_is_woken_by_any_change_someone_else_makes(events: list[str]) -> None:
    """Its status wiped or edited by hand changes no trigger (wakeups.trigger), but a rollout at rest writes
    nothing itself: any MODIFIED event is someone else's, and its loop looks at once, not in REST_SECONDS."""
    woken, _ = handlers.WAKEUPS.register(("ml", "r"), "u1")
    await handlers.rollout_changed(body(), type="MODIFIED")  # the first sight of its trigger wakes it anyway
    woken.clear()
    await handlers.rollout_changed(body(), type="MODIFIED")
    assert not woken.is_set()  # a moving rollout: its next tick comes within a second
    controller._at_rest.add(KEY)
    try:
        await handlers.rollout_changed(body(), type="MODIFIED")
        assert woken.is_set()
    finally:
        controller._at_rest.discard(KEY)
        handlers.WAKEUPS.forget(("ml", "r"), woken, "u1")


async def test_a_rollout_made_again_waits_for_the_reconcile_in_flight_of_the_one_deleted(
    monkeypatch: pytest.MonkeyPatch, events: list[str]
) -> None:
    """Deleted with no finalizer while a reconcile runs, and made again at once: what that reconcile writes is
    refused by the API server (the uid is its precondition), and the new object's first reconcile waits for it
    rather than run beside it (the lock is not dropped while held)."""
    release = asyncio.Event()

    async def reconcile(body: kopf.Body, *_: Any, **__: Any) -> None:
        uid = body["metadata"]["uid"]
        events.append(f"reconcile {uid} begun")
        if uid == "u1":
            await release.wait()
        events.append(f"reconcile {uid} done")

    monkeypatch.setattr(controller, "reconcile", reconcile)
    in_flight = asyncio.ensure_future(handlers.tick(body()))
    while "reconcile u1 begun" not in events:
        await asyncio.sleep(0)
    await handlers.rollout_changed(body(), type="DELETED")
    again = asyncio.ensure_future(handlers.tick(body(uid="u2")))
    for _ in range(100):
        await asyncio.sleep(0)
    assert events == ["reconcile u1 begun", "forgotten u1", "name forgotten"]
    release.set()
    await asyncio.wait_for(asyncio.gather(in_flight, again), timeout=10)
    assert events[3:] == ["reconcile u1 done", "reconcile u2 begun", "reconcile u2 done"]
    handlers.RECONCILING.pop(("ml", "r"), None)


async def test_a_tick_skipped_while_not_the_leader_leaves_no_rest(
    monkeypatch: pytest.MonkeyPatch, events: list[str]
) -> None:
    """The rest mark is the last reconcile's: a tick skipped because this replica may not act at that moment
    (a late lease renewal) used up the wake-up, so the loop looks again at the next tick, not REST_SECONDS later."""
    waits: list[float] = []
    setter: aioenums.FlagSetter[kopf.DaemonStoppingReason] = aioenums.FlagSetter()
    acts = iter([True, True, False, True])  # tick, steer; tick (skipped), steer

    async def reconcile(*_: Any, **__: Any) -> None:
        controller._at_rest.add(KEY)

    async def sleep(event: asyncio.Event, seconds: float, stopped: Any) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            setter.set(kopf.DaemonStoppingReason.OPERATOR_EXITING)

    monkeypatch.setattr(controller, "reconcile", reconcile)
    monkeypatch.setattr(handlers, "may_act", lambda: next(acts))
    monkeypatch.setattr(handlers.WAKEUPS, "sleep", sleep)
    monkeypatch.setattr(handlers, "MIN_GAP_SECONDS", 0.0)
    try:
        await asyncio.wait_for(handlers.steer(body(), aioenums.AsyncFlagWaiter(setter)), timeout=10)
    finally:
        controller._at_rest.discard(KEY)
    assert waits == [handlers.REST_SECONDS, handlers.TICK_SECONDS]


async def test_a_rollout_at_rest_listed_again_looks_at_once(events: list[str]) -> None:
    """A change made while the watch of rollouts was down shows as a listing (no MODIFIED event)."""
    woken, _ = handlers.WAKEUPS.register(("ml", "r"), "u1")
    await handlers.rollout_changed(body(), type=None)
    woken.clear()
    controller._at_rest.add(KEY)
    try:
        await handlers.rollout_changed(body(), type=None)
        assert woken.is_set()
    finally:
        controller._at_rest.discard(KEY)
        handlers.WAKEUPS.forget(("ml", "r"), woken, "u1")
