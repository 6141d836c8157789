"""When a rollout's reconcile loop runs: every tick (a second), and at once when the watches show something it acts
on has changed (a command, the spec, the router's report, an object the rollout owns), so that a user's abort or a
report confirming weights is acted on in the time a watch event takes, not at the next tick.

Of the ModelRollout itself only what a reconcile acts on besides its status counts (``trigger``): the operator's
own status writes do not wake its loop. Its applies of owned objects do (once, as the watch shows them), and so
does a burst of pod events; the loop runs at most once per handlers.MIN_GAP_SECONDS all the same.

A wake is *urgent* when a user asked for something (a command, a spec change, a new object) or a reconcile held
back for its own last write may go on: that reconcile goes ahead of the routine ones (ticks, reports, owned objects,
pods), which take turns through ``Turns``, so that a user's abort never queues behind the analysis rounds of every
other rollout (they tend to fall in the same second).

Used from the event loop only (kopf's async handlers); each rollout's loop is one task (handlers.steer), so a
rollout still has exactly one writer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Hashable, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any

from modelrollout.api import constants

Key = tuple[str, str]
"""(namespace, name) of a ModelRollout"""


def trigger(body: Mapping[str, Any]) -> Hashable:
    """What of a ModelRollout's own object a reconcile acts on besides its status (a pure function): the spec's
    generation, the command annotations, and the uid (an object made again under the name). The deletion
    timestamp counts too, though kopf stops the loop when it appears."""
    metadata = body.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    return (
        metadata.get("uid"),
        metadata.get("generation"),
        annotations.get(constants.ANNOTATION_COMMAND),
        annotations.get(constants.ANNOTATION_COMMAND_ID),
        metadata.get("deletionTimestamp"),
    )


class Wakeups:
    """One asyncio.Event per running reconcile loop, set by the watches when their rollout should look again."""

    def __init__(self) -> None:
        self._events: dict[Key, asyncio.Event] = {}
        self._triggers: dict[Key, Hashable] = {}
        self._urgent: dict[Key, asyncio.Event] = {}

    def register(self, key: Key) -> asyncio.Event:
        event = asyncio.Event()
        self._events[key] = event
        self._urgent[key] = asyncio.Event()
        return event

    def urgency(self, key: Key) -> asyncio.Event:
        """Set while the loop of ``key`` has been asked urgently to look again (Turns.turn clears it)."""
        return self._urgent[key]

    def forget(self, key: Key, event: asyncio.Event) -> None:
        """Only the loop that registered ``event``: a rollout made again under the name may have a new one."""
        if self._events.get(key) is event:
            del self._events[key]
            self._triggers.pop(key, None)
            self._urgent.pop(key, None)

    def wake(self, key: Key, *, urgent: bool = False) -> None:
        event = self._events.get(key)
        if event is not None:
            if urgent:
                self._urgent[key].set()
            event.set()

    def noticed(self, key: Key, body: Mapping[str, Any]) -> None:
        """A watch event of the rollout itself: wakes its loop when ``trigger`` changed since the last one."""
        now = trigger(body)
        if self._triggers.get(key) != now:
            self._triggers[key] = now
            self.wake(key, urgent=True)

    async def sleep(self, event: asyncio.Event, seconds: float, stopped: Awaitable[Any]) -> None:
        """Until ``event`` is set, ``stopped`` completes, or ``seconds`` have passed."""
        waiting = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stopped)]
        try:
            await asyncio.wait(waiting, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for each in waiting:
                each.cancel()


class Turns:
    """At most ``routine`` routine reconciles at a time (each holds a turn while it runs); an urgent one takes no
    turn. So the worker threads a reconcile's reads and writes run on (asyncio.to_thread) are never all queued
    behind routine work, and a user's command waits for at most ``routine`` reconciles in flight."""

    def __init__(self, routine: int) -> None:
        if routine < 1:
            raise ValueError(f"routine reconciles at a time must be at least 1, not {routine}")
        self.routine = routine
        self._slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}

    @asynccontextmanager
    async def turn(self, urgency: asyncio.Event) -> AsyncIterator[None]:
        """A reconcile's turn: at once when ``urgency`` is set (also while it waits), otherwise a free slot."""
        loop = asyncio.get_running_loop()  # a semaphore belongs to one event loop (tests run several)
        slots = self._slots.get(loop)
        if slots is None:
            self._slots = {loop: (slots := asyncio.Semaphore(self.routine))}
        held = False if urgency.is_set() else await _slot_or_urgency(slots, urgency)
        urgency.clear()
        try:
            yield
        finally:
            if held:
                slots.release()


async def _slot_or_urgency(slots: asyncio.Semaphore, urgency: asyncio.Event) -> bool:
    """Waits for a slot of ``slots`` or for ``urgency``, whichever comes first: True when a slot is held."""
    acquiring = asyncio.ensure_future(slots.acquire())
    hurried = asyncio.ensure_future(urgency.wait())
    try:
        await asyncio.wait((acquiring, hurried), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # stopped while waiting: nothing is kept
        hurried.cancel()
        acquiring.cancel()
        if acquiring.done() and not acquiring.cancelled():
            slots.release()
        raise
    hurried.cancel()
    if not acquiring.done():
        acquiring.cancel()
        with suppress(asyncio.CancelledError):
            await acquiring
    return acquiring.done() and not acquiring.cancelled()
