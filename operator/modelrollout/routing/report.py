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
    """What the router writes (merged into the ConfigMap's data; a trip, once written, stays)."""
    data = {constants.REPORT_ROLLOUT_UID: uid, constants.REPORT_APPLIED: format_report(revision=revision, green=green)}
    if trip is not None:
        data[constants.REPORT_GUARD] = trip.to_json()
    return data
