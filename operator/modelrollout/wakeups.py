"""When a rollout's reconcile loop runs: every tick (a second), and at once when the watches show something it acts
on has changed (a command, the spec, the router's report, an object the rollout owns), so that a user's abort or a
report confirming weights is acted on in the time a watch event takes, not at the next tick.

Of the ModelRollout itself only what a reconcile acts on besides its status counts (``trigger``): the operator's
own status writes do not wake its loop. Its applies of owned objects do (once, as the watch shows them), and so
does a burst of pod events; the loop runs at most once per handlers.MIN_GAP_SECONDS all the same.

A wake is *urgent* when a user asked for something (a command, a spec change), a router reported a guard trip, or
a reconcile held back for its own last write may go on: that reconcile's blocking calls run on threads of their
own (lanes), never queued behind those of the routine ones (ticks, confirmations, owned objects, pods), so that a
user's abort does not wait for the analysis rounds of every other rollout (they tend to fall in the same second).

Used from the event loop only (kopf's async handlers); each rollout's loop is one task (handlers.steer), so a
rollout still has exactly one writer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Hashable, Mapping
from typing import Any

from modelrollout.api import constants

Key = tuple[str, str]
"""(namespace, name) of a ModelRollout"""
ENDED_KEPT = 10_000
"""How many uids of deleted objects are kept (the newest): of a loop kopf had stopped already, and of one not
started yet, kept in case it starts."""


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
        self._uids: dict[Key, str] = {}
        self._by_uid: dict[str, asyncio.Event] = {}
        self._ended: dict[str, None] = {}  # ordered: the oldest go first past ENDED_KEPT

    def register(self, key: Key, uid: str = "") -> tuple[asyncio.Event, asyncio.Event]:
        """A loop's two events: set when it should look again, and when that is urgent (the loop clears both);
        ``uid``: the object it reconciles. A name holds one object at a time: the loop of another object under
        the name is ended (``end``), also when no DELETED event came for it (deleted while a watch was down and
        listed again, which shows no DELETED event)."""
        earlier = self._uids.get(key)
        if uid and earlier and earlier != uid:
            self.end(earlier)
        event, urgency = asyncio.Event(), asyncio.Event()
        self._events[key] = event
        self._urgent[key] = urgency
        self._uids[key] = uid
        if uid:
            self._by_uid[uid] = event
        return event, urgency

    def forget(self, key: Key, event: asyncio.Event, uid: str = "") -> None:
        """Only the loop that registered ``event``: a rollout made again under the name may have a new one."""
        if self._by_uid.get(uid) is event:
            del self._by_uid[uid]
            self._ended.pop(uid, None)
        if self._events.get(key) is event:
            del self._events[key]
            self._triggers.pop(key, None)
            self._urgent.pop(key, None)
            self._uids.pop(key, None)

    def end(self, uid: str) -> None:
        """The object ``uid`` is gone: its loop, if one runs, wakes and ends (``ended``). kopf stops a loop only
        when the object it last saw has a deletion timestamp, which one deleted with no finalizer never had (its
        finalizer taken off before the deletion, or the object deleted before kopf added it): that loop would
        otherwise reconcile a gone object for good, beside the loop of one made again under its name. Kept also
        when no loop runs yet: kopf may start the loop of an object deleted at once after the deletion shows."""
        if not uid:
            return
        self._ended[uid] = None
        while len(self._ended) > ENDED_KEPT:
            del self._ended[next(iter(self._ended))]
        event = self._by_uid.get(uid)
        if event is not None:
            event.set()

    def ended(self, uid: str) -> bool:
        """Whether the loop of the object ``uid`` was ended (``end``)."""
        return uid in self._ended

    def looping(self, key: Key) -> bool:
        """Whether a reconcile loop of this rollout runs (is registered)."""
        return key in self._events

    def another_object(self, key: Key, uid: str) -> bool:
        """Whether the loop registered under the name reconciles another object than ``uid`` (one made again
        under the name): what is kept under the name is that object's, not the deleted one's."""
        return key in self._uids and self._uids[key] != uid

    def gone(self, key: Key) -> None:
        """The rollout was deleted: what it last triggered is not kept (its loop forgets its own events)."""
        self._triggers.pop(key, None)

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
