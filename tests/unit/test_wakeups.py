"""When a rollout's reconcile loop is woken before its tick: a change it acts on, not its own status writes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from modelrollout import controller, wakeups
from modelrollout.api import constants

KEY = ("ml", "digits")


def body(**changes: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"uid": "u1", "generation": 3, "resourceVersion": "10", "annotations": {}}
    metadata.update(changes)
    return {"metadata": metadata, "status": {"phase": "Progressing"}}


def test_a_status_write_is_no_trigger_and_a_command_a_spec_change_a_deletion_or_a_new_object_are() -> None:
    seen = wakeups.trigger(body())
    assert wakeups.trigger({**body(resourceVersion="11"), "status": {"phase": "Paused"}}) == seen
    for changed in (
        body(annotations={constants.ANNOTATION_COMMAND: "abort"}),
        body(annotations={constants.ANNOTATION_COMMAND: "abort", constants.ANNOTATION_COMMAND_ID: "2"}),
        body(generation=4),
        body(deletionTimestamp="2026-11-24T00:00:00Z"),
        body(uid="u2"),
    ):
        assert wakeups.trigger(changed) != seen


def test_a_loop_is_woken_by_a_trigger_it_has_not_seen_and_its_sleep_ends_then() -> None:
    async def scenario() -> None:
        wakes = wakeups.Wakeups()
        woken = wakes.register(KEY)
        wakes.noticed(KEY, body())
        assert woken.is_set()  # the first look at the object
        woken.clear()
        wakes.noticed(KEY, body(resourceVersion="11"))  # its own status write
        assert not woken.is_set()
        begun = time.monotonic()
        await wakes.sleep(woken, 0.05, asyncio.sleep(3600))
        assert time.monotonic() - begun >= 0.04  # nothing woke it: the tick
        asyncio.get_running_loop().call_later(0.01, wakes.noticed, KEY, body(generation=4))
        await wakes.sleep(woken, 30, asyncio.sleep(3600))
        assert woken.is_set() and time.monotonic() - begun < 10
        # a loop that ended forgets only its own event: the next object of that name keeps its own
        again = wakes.register(KEY)
        wakes.forget(KEY, woken)
        wakes.wake(KEY)
        assert again.is_set()
        wakes.forget(KEY, again)
        wakes.wake(KEY)  # no loop: nothing to wake, no error

    asyncio.run(scenario())


def test_a_reconcile_waits_for_the_watch_to_deliver_its_own_last_write() -> None:
    assert controller.behind("9", "10") and not controller.behind("10", "10") and not controller.behind("11", "10")
    assert not controller.behind("abc", "10")  # not an etcd revision: never held back
    controller._written.clear()
    controller._held.clear()
    controller._written["ml/digits"] = ("u1", "10")
    assert not controller.caught_up("ml", "digits", body(resourceVersion="10"))  # nothing held back yet
    assert controller._write_fence("ml/digits", body(resourceVersion="9")) is controller.Fence.HOLD  # type: ignore[arg-type]
    assert not controller.caught_up("ml", "digits", body(resourceVersion="9"))
    assert controller.caught_up("ml", "digits", body(resourceVersion="10"))  # the loop is woken for this one
    assert controller._write_fence("ml/digits", body(resourceVersion="10")) is controller.Fence.GO  # type: ignore[arg-type]
    assert controller._write_fence("ml/digits", body(uid="u2", resourceVersion="3")) is controller.Fence.GO  # type: ignore[arg-type]
    # held back longer than FENCE_SECONDS (a write the watch never delivers): the decision is made from a copy
    # read from the API server, never from the stale one, until such a read succeeds
    controller._held["ml/digits"] = time.monotonic() - controller.FENCE_SECONDS - 1
    for _ in range(2):
        assert controller._write_fence("ml/digits", body(resourceVersion="9")) is controller.Fence.READ  # type: ignore[arg-type]
    controller._written.clear()
    controller._held.clear()


def test_a_command_or_a_spec_change_is_urgent_and_a_report_or_a_tick_is_routine() -> None:
    async def scenario() -> None:
        wakes = wakeups.Wakeups()
        wakes.register(KEY)
        wakes.wake(KEY)  # the router's report, an owned object, a pod
        assert not wakes.urgency(KEY).is_set()
        wakes.noticed(KEY, body(annotations={constants.ANNOTATION_COMMAND: "abort"}))
        assert wakes.urgency(KEY).is_set()

    asyncio.run(scenario())


def test_routine_reconciles_take_turns_and_an_urgent_one_never_waits_for_one() -> None:
    async def scenario() -> None:
        turns = wakeups.Turns(1)
        calm, hurry = asyncio.Event(), asyncio.Event()
        entered: list[str] = []

        async def reconcile(name: str, urgency: asyncio.Event, hold: asyncio.Event) -> None:
            async with turns.turn(urgency):
                entered.append(name)
                await hold.wait()

        release_first = asyncio.Event()
        first = asyncio.create_task(reconcile("first", asyncio.Event(), release_first))
        await asyncio.sleep(0.01)
        waiting = asyncio.create_task(reconcile("waiting", calm, asyncio.Event()))
        hurry.set()
        urgent = asyncio.create_task(reconcile("urgent", hurry, asyncio.Event()))
        await asyncio.sleep(0.01)
        assert entered == ["first", "urgent"]  # the routine one waits for the only turn; the urgent one does not
        assert not hurry.is_set()  # the urgency was taken
        calm.set()  # a command arrives for the one waiting: it stops waiting for a turn
        await asyncio.sleep(0.01)
        assert entered == ["first", "urgent", "waiting"]
        # a routine reconcile stopped while it waits keeps no turn: the next one gets the turn freed by the first
        stopped = asyncio.create_task(reconcile("stopped", asyncio.Event(), asyncio.Event()))
        await asyncio.sleep(0.01)
        stopped.cancel()
        later = asyncio.create_task(reconcile("later", asyncio.Event(), asyncio.Event()))
        release_first.set()
        await asyncio.sleep(0.01)
        assert entered[-1] == "later" and "stopped" not in entered
        for task in (waiting, urgent, later):
            task.cancel()
        await asyncio.gather(first, waiting, urgent, stopped, later, return_exceptions=True)

    asyncio.run(scenario())


def test_turns_need_at_least_one_routine_slot() -> None:
    try:
        wakeups.Turns(0)
    except ValueError as error:
        assert "at least 1" in str(error)
    else:
        raise AssertionError("Turns(0) was accepted")
