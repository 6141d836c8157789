"""The builtin router's guard trip, as the router reports it and the operator reads it.

When green's answers fail beyond ``spec.traffic.guard`` (see model_server.router.guard), the router sends
green nothing at once and writes, with its applied report, the annotation ``modelrollout.dev/router-guard``:
``{"revision": N, "greenRevision": "...", "errors": e, "requests": n, "window": "5s", "maxErrorRate": 0.5,
"at": "<RFC 3339>"}``. ``revision`` is the weights revision the router holds at 0% green (the one it tripped
on, or a newer one it refused while the trip stood); ``greenRevision`` is ``status.greenRevision`` then, so
that a trip never outlives the candidate it was about.

The operator acknowledges a trip by writing it into ``status.guardTrip`` (when it rolls back for it, or when
it no longer matters); until then the router keeps green at 0% for that candidate, also across restarts
of either (the trip lives in the annotation, the acknowledgement in the status).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from modelrollout.api.spec import format_duration, parse_duration

HOLDING_PHASES = frozenset({"Progressing", "Paused", "Promoting"})
"""Phases in which an unacknowledged trip keeps green at 0% (weights the operator asked for before it read
the trip). Never Finalizing or Promoted: green serves the stable model then, and blue may still run an
older one."""
ARMED_PHASES = frozenset({"Progressing", "Paused"})
"""Phases in which the guard may trip: a canary whose candidate is not the stable model yet. Not
Promoting: once the router confirms 100% green the operator may make green the stable model at any
moment, and sending users back to blue then could serve an older model."""


@dataclass(frozen=True)
class GuardTrip:
    revision: int
    """The weights revision held at 0% green."""
    green_revision: str
    """``status.greenRevision`` of the candidate that tripped the guard."""
    errors: int
    requests: int
    window: float
    """The guard's window in seconds (the errors and requests were counted in it, or in its newest part)."""
    max_error_rate: float
    at: str
    """When the guard tripped (RFC 3339, UTC)."""

    def describe(self) -> str:
        return (
            f"the router's guard saw {self.errors} of green's last {self.requests} requests fail within "
            f"{format_duration(self.window)} (maxErrorRate {self.max_error_rate:g}) at {self.at} and sent green 0%"
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "revision": self.revision,
                "greenRevision": self.green_revision,
                "errors": self.errors,
                "requests": self.requests,
                "window": format_duration(self.window),
                "maxErrorRate": self.max_error_rate,
                "at": self.at,
            },
            separators=(",", ":"),
        )


def parse_trip(text: str | None) -> GuardTrip | None:
    """The annotation's trip; None when absent or unreadable (never a reason to roll back by itself)."""
    if not text:
        return None
    try:
        data: Any = json.loads(text)
        return GuardTrip(
            revision=_int(data["revision"]),
            green_revision=str(data.get("greenRevision", "")),
            errors=_int(data["errors"]),
            requests=_int(data["requests"]),
            window=parse_duration(data.get("window", 0)),
            max_error_rate=float(data.get("maxErrorRate", 0)),
            at=str(data.get("at", "")),
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {value!r}")
    return value
