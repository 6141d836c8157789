"""The builtin router's report: what its data plane serves, and its guard's trip.

It lives in its own object, the ConfigMap ``<rollout>-router-report``, which the operator creates empty and
owns, and which the router alone writes: the router's Role lets it read its own ModelRollout and patch this
one ConfigMap, nothing else (never a ModelRollout's spec, status or annotations). Its data:

- ``applied``: ``"<revision>/<green>"`` once the data plane serves the weights asked for with that revision
  (routing.base.format_report);
- ``guard``: the trip as JSON when the guard sent green 0% (routing.guard);
- ``rollout-uid``: the ModelRollout it was written for. A report left by an earlier rollout of the same name
  (a kept router adopted again, a ConfigMap not yet garbage-collected) is no report, so it can never confirm
  the weights of the new one.

The operator reads it from a watch (handlers.router_reports), never with a request per reconcile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from modelrollout.api import constants
from modelrollout.routing.base import NOT_REPORTED, AppliedWeights, format_report, parse_report
from modelrollout.routing.guard import GuardTrip, parse_trip


def report_name(rollout: str) -> str:
    return f"{rollout}-router-report"


@dataclass(frozen=True)
class RouterReport:
    applied: AppliedWeights
    trip: GuardTrip | None


NO_REPORT = RouterReport(applied=NOT_REPORTED, trip=None)


def report_of(data: Mapping[str, str] | None, uid: str) -> RouterReport:
    """The report in a ConfigMap's ``data`` for the ModelRollout ``uid`` (a pure function): NO_REPORT without
    one, and nothing usable when it was written for another rollout."""
    if not data or not any(data.get(key) for key in (constants.REPORT_APPLIED, constants.REPORT_GUARD)):
        return NO_REPORT
    if data.get(constants.REPORT_ROLLOUT_UID) != uid:
        stale = AppliedWeights(revision=None, green=None, note="the router's report is for an earlier rollout")
        return RouterReport(applied=stale, trip=None)
    return RouterReport(
        applied=parse_report(data.get(constants.REPORT_APPLIED)), trip=parse_trip(data.get(constants.REPORT_GUARD))
    )


def report_data(*, uid: str, revision: int, green: int, trip: GuardTrip | None) -> dict[str, str]:
    """What the router writes, merged into the ConfigMap's data: every key, every time, so that nothing an
    earlier rollout of the same name wrote (a trip above all) survives under the new uid. ``guard`` is empty
    without a trip (the router keeps a trip of its rollout, restored after a restart, until it is gone)."""
    return {
        constants.REPORT_ROLLOUT_UID: uid,
        constants.REPORT_APPLIED: format_report(revision=revision, green=green),
        constants.REPORT_GUARD: trip.to_json() if trip is not None else "",
    }


LEGACY_GUARD_ANNOTATION = f"{constants.GROUP}/router-guard"
"""Where routers before the report ConfigMap wrote their trip, on the ModelRollout itself (so for its uid)."""


def legacy_trip(rollout: Mapping[str, object]) -> GuardTrip | None:
    """A trip an earlier router version wrote on the ModelRollout (``rollout``: its body): still honoured,
    so that an upgrade in the middle of a trip never gives green traffic back. Only trips are read there,
    never applied weights (anyone who may patch a ModelRollout could write those)."""
    metadata = rollout.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    return parse_trip(annotations.get(LEGACY_GUARD_ANNOTATION)) if isinstance(annotations, Mapping) else None


def latest_trip(*trips: GuardTrip | None) -> GuardTrip | None:
    """The trip that holds the newest weights revision (None without any)."""
    return max((trip for trip in trips if trip is not None), key=lambda trip: trip.revision, default=None)
