"""The data-plane guard: sub-second rollback for hard faults on green.

Every rollback that waits for Prometheus waits a scrape, an analysis interval and the failure limit, although
the router sees each failing answer as it happens. The guard counts green's answers to user requests (5xx,
timeouts and connection errors fail; mirrored copies never count) in 100 ms buckets over a short sliding
window (``spec.traffic.guard``), on both data planes: the Python proxy tells it each outcome, the nginx data
plane each access-log line. It trips when, over the newest part of the window holding at least
``minRequests`` requests or any longer part, the failed share is above ``maxErrorRate`` with 99% confidence
(the lower Wilson bound): random errors of a healthy green never get there, a green that fails everything
gets there after about ``minRequests`` requests, and older successes in the window do not hide a fault that
just began.

It is armed only while the data plane serves green weight for a canary that is Progressing or Paused (see
routing.guard.ARMED_PHASES). A trip is sticky: the router serves 0% green for that candidate until the
operator acknowledges the trip in its status (see router.watch).
"""

from __future__ import annotations

import datetime
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from modelrollout.api.spec import GuardSpec
from modelrollout.routing.guard import ARMED_PHASES, GuardTrip

BUCKET_SECONDS = 0.1
CONFIDENCE_Z = 2.3263478740408408
"""One-sided 99%: the guard trips only when the error share is above the limit with this confidence."""


def wilson_lower(errors: int, requests: int, z: float = CONFIDENCE_Z) -> float:
    """Lower bound of the Wilson score interval of ``errors / requests`` (0 without requests)."""
    if requests <= 0:
        return 0.0
    share = errors / requests
    z2 = z * z
    centre = share + z2 / (2 * requests)
    spread = z * math.sqrt(share * (1 - share) / requests + z2 / (4 * requests * requests))
    return max(0.0, (centre - spread) / (1 + z2 / requests))


def guard_of(obj: dict[str, Any]) -> GuardSpec:
    """``spec.traffic.guard`` of a ModelRollout (defaults when absent; the operator reports a spec it cannot
    read, and the router keeps the safe defaults meanwhile)."""
    traffic = (obj.get("spec") or {}).get("traffic") or {}
    try:
        return GuardSpec.model_validate(traffic.get("guard") or {})
    except ValidationError:
        return GuardSpec()


class ErrorWindow:
    """Green's requests and failures over the last ``window`` seconds, in buckets of BUCKET_SECONDS."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._size = max(1, round(window / BUCKET_SECONDS))
        self._buckets: deque[list[int]] = deque()
        """[bucket index, requests, errors], oldest first."""

    def record(self, *, failed: bool, now: float) -> None:
        index = math.floor(now / BUCKET_SECONDS)
        if self._buckets and self._buckets[-1][0] == index:
            bucket = self._buckets[-1]
        else:
            bucket = [index, 0, 0]
            self._buckets.append(bucket)
        bucket[1] += 1
        bucket[2] += failed
        self._expire(index)

    def _expire(self, index: int) -> None:
        oldest = index - self._size + 1
        while self._buckets and self._buckets[0][0] < oldest:
            self._buckets.popleft()

    def totals(self, now: float) -> tuple[int, int]:
        """(errors, requests) over the whole window."""
        self._expire(math.floor(now / BUCKET_SECONDS))
        return sum(b[2] for b in self._buckets), sum(b[1] for b in self._buckets)

    def over(self, *, min_requests: int, max_error_rate: float, now: float) -> tuple[int, int] | None:
        """The (errors, requests) of the shortest newest part of the window with at least ``min_requests``
        requests whose failed share is above ``max_error_rate`` with 99% confidence; None if no part is."""
        self._expire(math.floor(now / BUCKET_SECONDS))
        errors = requests = 0
        for bucket in reversed(self._buckets):
            requests += bucket[1]
            errors += bucket[2]
            if requests >= min_requests and wilson_lower(errors, requests) > max_error_rate:
                return errors, requests
        return None

    def clear(self) -> None:
        self._buckets.clear()


@dataclass(frozen=True)
class Armed:
    """What the data plane serves while the guard may trip."""

    revision: int
    green_revision: str
    settings: GuardSpec


def armed(*, revision: int, green: int, phase: str, green_revision: str, settings: GuardSpec) -> Armed | None:
    """The guard is armed while green has weight in a canary that is Progressing or Paused (a pure function)."""
    if not settings.enabled or green <= 0 or phase not in ARMED_PHASES:
        return None
    return Armed(revision=revision, green_revision=green_revision, settings=settings)


class Guard:
    """Counts green's outcomes and trips once per arming. Runs on the router's event loop: ``arm`` is called
    when the data plane serves new weights, ``outcome`` for every answer of a user request."""

    def __init__(
        self,
        *,
        on_trip: Callable[[GuardTrip], None],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self._on_trip = on_trip
        self._clock = clock
        self._wall = wall
        self.armed: Armed | None = None
        self.window = ErrorWindow(GuardSpec().window)

    def arm(self, armed: Armed | None) -> None:
        if armed is not None and armed.settings.window != self.window.window:
            self.window = ErrorWindow(armed.settings.window)
        if armed is not None and self.armed is not None and armed.green_revision != self.armed.green_revision:
            self.window.clear()  # another candidate: the last one's failures are not its own
        self.armed = armed

    def outcome(self, colour: str, *, failed: bool) -> None:
        """One answer to a user request (``failed``: 5xx, timed out, or no connection)."""
        if colour != "green":
            return
        now = self._clock()
        self.window.record(failed=failed, now=now)
        armed = self.armed
        if not failed or armed is None:
            return
        settings = armed.settings
        found = self.window.over(min_requests=settings.min_requests, max_error_rate=settings.max_error_rate, now=now)
        if found is None:
            return
        errors, requests = found
        self.armed = None  # one trip; green's weight goes to 0, which disarms it anyway
        self.window.clear()
        self._on_trip(
            GuardTrip(
                revision=armed.revision,
                green_revision=armed.green_revision,
                errors=errors,
                requests=requests,
                window=settings.window,
                max_error_rate=settings.max_error_rate,
                at=self._wall().isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            )
        )
