"""When a rollout's reconcile loop is woken before its tick: a change it acts on, not its own status writes."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from modelrollout import controller, lanes, wakeups
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
        woken, _ = wakes.register(KEY)
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
        again, _ = wakes.register(KEY)
        wakes.forget(KEY, woken)
        wakes.wake(KEY)
        assert again.is_set()
        wakes.forget(KEY, again)
        wakes.wake(KEY)  # no loop: nothing to wake, no error

    asyncio.run(scenario())


DIGITS = controller.state_key("ml", "digits", "u1")


def test_a_reconcile_waits_for_the_watch_to_deliver_its_own_last_write() -> None:
    assert controller.behind("9", "10") and not controller.behind("10", "10") and not controller.behind("11", "10")
    assert not controller.behind("abc", "10")  # not an etcd revision: never held back
    controller._written.clear()
    controller._held.clear()
    controller._written[DIGITS] = ("u1", "10")
    assert not controller.caught_up("ml", "digits", body(resourceVersion="10"))  # nothing held back yet
    assert controller._write_fence(DIGITS, body(resourceVersion="9")) is controller.Fence.HOLD  # type: ignore[arg-type]
    assert not controller.caught_up("ml", "digits", body(resourceVersion="9"))
    assert controller.caught_up("ml", "digits", body(resourceVersion="10"))  # the loop is woken for this one
    assert controller._write_fence(DIGITS, body(resourceVersion="10")) is controller.Fence.GO  # type: ignore[arg-type]
    assert controller._write_fence(DIGITS, body(uid="u2", resourceVersion="3")) is controller.Fence.GO  # type: ignore[arg-type]
    # held back longer than FENCE_SECONDS (a write the watch never delivers): the decision is made from a copy
    # read from the API server, never from the stale one, until such a read succeeds
    controller._held[DIGITS] = time.monotonic() - controller.FENCE_SECONDS - 1
    for _ in range(2):
        assert controller._write_fence(DIGITS, body(resourceVersion="9")) is controller.Fence.READ  # type: ignore[arg-type]
    controller._written.clear()
    controller._held.clear()


def test_a_command_or_a_spec_change_is_urgent_and_a_pod_or_a_tick_is_routine() -> None:
    async def scenario() -> None:
        wakes = wakeups.Wakeups()
        woken, urgency = wakes.register(KEY)
        wakes.wake(KEY)  # an owned object, a pod
        assert woken.is_set() and not urgency.is_set()
        wakes.noticed(KEY, body(annotations={constants.ANNOTATION_COMMAND: "abort"}))
        assert urgency.is_set()
        # a rollout made again under the name has its own events: the old loop's never touch the new one's
        urgency.clear()
        _, again = wakes.register(KEY)
        wakes.wake(KEY, urgent=True)
        assert again.is_set() and not urgency.is_set()

    asyncio.run(scenario())


def test_an_urgent_reconciles_calls_never_queue_behind_routine_ones() -> None:
    async def scenario() -> None:
        release = threading.Event()
        blockers = 40  # far more routine calls than asyncio has worker threads, all blocked
        loop = asyncio.get_running_loop()
        routine = [loop.create_task(lanes.in_thread(release.wait, 30)) for _ in range(blockers)]
        await asyncio.sleep(0.05)
        try:
            with lanes.urgent(True):
                assert lanes.is_urgent()
                seen = await asyncio.wait_for(lanes.in_thread(lanes.is_urgent), timeout=5)
            assert seen  # the call sees the reconcile's urgency (the context is carried to the thread)
            assert not lanes.is_urgent()
            late = asyncio.ensure_future(lanes.in_thread(lambda: "routine"))
            await asyncio.sleep(0.05)
            assert not late.done()  # a routine call queues behind the blocked ones, as before
        finally:
            release.set()
        assert await late == "routine"
        await asyncio.gather(*routine)

    asyncio.run(scenario())


def test_a_deleted_rollout_leaves_no_trigger_and_a_loop_is_known_while_it_runs() -> None:
    wakes = wakeups.Wakeups()
    assert not wakes.looping(KEY)
    woken, _ = wakes.register(KEY)
    assert wakes.looping(KEY)
    wakes.noticed(KEY, body())
    woken.clear()
    wakes.gone(KEY)
    wakes.noticed(KEY, body())  # what was seen before the deletion is not kept: the same trigger is new again
    assert woken.is_set()
    wakes.forget(KEY, woken)
    assert not wakes.looping(KEY)


def test_a_gone_objects_loop_is_woken_and_ended_also_when_it_starts_after_the_deletion() -> None:
    wakes = wakeups.Wakeups()
    woken, _ = wakes.register(KEY, "u1")
    wakes.end("u2")  # another object of the name: this loop goes on
    assert not woken.is_set() and not wakes.ended("u1")
    wakes.end("u1")
    assert woken.is_set() and wakes.ended("u1")
    wakes.forget(KEY, woken, "u1")
    assert not wakes.ended("u1") and not wakes.looping(KEY)
    wakes.end("u3")  # deleted before its loop began
    late, _ = wakes.register(KEY, "u3")
    assert wakes.ended("u3")
    wakes.forget(KEY, late, "u3")


def test_a_loop_is_ended_when_another_object_of_its_name_registers() -> None:
    """Deleted while a watch was down: the listing after it shows no DELETED event, only the new object."""
    wakes = wakeups.Wakeups()
    old, _ = wakes.register(KEY, "u1")
    new, _ = wakes.register(KEY, "u2")
    assert old.is_set() and wakes.ended("u1") and not wakes.ended("u2")
    wakes.forget(KEY, old, "u1")
    assert wakes.looping(KEY) and not new.is_set()  # the new object's loop goes on
    wakes.forget(KEY, new, "u2")


def test_only_the_newest_ended_objects_without_a_loop_are_kept() -> None:
    wakes = wakeups.Wakeups()
    for n in range(wakeups.ENDED_KEPT + 5):
        wakes.end(f"u{n}")
    assert not wakes.ended("u0") and not wakes.ended("u4")
    assert wakes.ended("u5") and wakes.ended(f"u{wakeups.ENDED_KEPT + 4}")
