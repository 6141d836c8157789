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

Several router replicas (a Deployment of two or more) each write their own entry: the same three keys with
``.<replica>`` appended, the replica being the router's Pod name (``MODELROUTER_REPLICA``, from the downward
API). A router without a name (one run as a process, or a router version before replicas) writes the bare keys.
The operator counts weights as applied only when every Ready router Pod reports them (``applied_by``), and a trip
in any entry for the rollout counts (``trip_of``).

The operator reads it from a watch (handlers.router_reports), never with a request per reconcile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from modelrollout.api import constants
from modelrollout.routing.base import NOT_REPORTED, AppliedWeights, RolloutRef, format_report, parse_report
from modelrollout.routing.guard import GuardTrip, parse_trip


def report_name(rollout: str) -> str:
    return f"{rollout}-router-report"


@dataclass(frozen=True)
class RouterReport:
    applied: AppliedWeights
    trip: GuardTrip | None


NO_REPORT = RouterReport(applied=NOT_REPORTED, trip=None)


REPORT_KEYS = (constants.REPORT_APPLIED, constants.REPORT_GUARD, constants.REPORT_ROLLOUT_UID)


def _key(key: str, replica: str) -> str:
    return f"{key}.{replica}" if replica else key


def report_of(data: Mapping[str, str] | None, uid: str, replica: str = "") -> RouterReport:
    """One router's entry in a ConfigMap's ``data`` for the ModelRollout ``uid`` (a pure function): the bare
    keys without ``replica``. NO_REPORT without one, and nothing usable when it was written for another
    rollout."""
    if not data or not any(data.get(_key(key, replica)) for key in (constants.REPORT_APPLIED, constants.REPORT_GUARD)):
        return NO_REPORT
    if data.get(_key(constants.REPORT_ROLLOUT_UID, replica)) != uid:
        stale = AppliedWeights(revision=None, green=None, note="the router's report is for an earlier rollout")
        return RouterReport(applied=stale, trip=None)
    return RouterReport(
        applied=parse_report(data.get(_key(constants.REPORT_APPLIED, replica))),
        trip=parse_trip(data.get(_key(constants.REPORT_GUARD, replica))),
    )


def replicas_in(data: Mapping[str, str] | None) -> list[str]:
    """The routers with an entry in ``data``: their replica names, ``""`` for the bare keys (a pure function)."""
    found: set[str] = set()
    for key in data or {}:
        for known in REPORT_KEYS:
            if key == known:
                found.add("")
            elif key.startswith(f"{known}.") and len(key) > len(known) + 1:
                found.add(key[len(known) + 1 :])
    return sorted(found)


def tripped(data: Mapping[str, str] | None) -> bool:
    """Whether any router's entry in ``data`` holds a trip (a pure function; of any rollout: a cheap test)."""
    return any(
        value and (key == constants.REPORT_GUARD or key.startswith(f"{constants.REPORT_GUARD}."))
        for key, value in (data or {}).items()
    )


def trip_of(data: Mapping[str, str] | None, uid: str) -> GuardTrip | None:
    """The latest trip any router wrote for the rollout ``uid`` (a pure function): a replica's trip holds the
    rollout even when that replica is gone, until the operator acknowledges it."""
    return latest_trip(*(report_of(data, uid, replica).trip for replica in replicas_in(data)))


def _reported(data: Mapping[str, str] | None, uid: str, replica: str) -> bool:
    return data is not None and data.get(_key(constants.REPORT_ROLLOUT_UID, replica)) == uid


def applied_by(data: Mapping[str, str] | None, uid: str, routers: Mapping[str, bool] | None) -> AppliedWeights:
    """The weights the routers serve, as the operator counts them (a pure function), from ``routers``: the router
    Pods that are not terminating nor finished, by name, with whether each is Ready. Counted are the Ready ones,
    which a Service sends traffic to: the weights every counted router reports; otherwise nothing usable, with a
    note naming the routers that have not reported or that differ. One that is not Ready is not waited for: it
    turns Ready again only once it serves what its rollout asks then (one of several replicas never turns Ready
    from its state file, see model_server.router). The bare entry (a router with no name) stands for the only
    counted Pod while no router wrote a named entry for this rollout. ``routers`` None (not known): every entry
    must agree."""
    named = [name for name in replicas_in(data) if name and _reported(data, uid, name)]
    if routers is None:
        names = replicas_in(data) or [""]
        entries = {name or "the router": report_of(data, uid, name).applied for name in names}
    else:
        counted = sorted(pod for pod, ready in routers.items() if ready)
        if not counted:
            return AppliedWeights(revision=None, green=None, note="no router Pod is ready")
        bare = report_of(data, uid).applied if len(counted) == 1 and not named else NOT_REPORTED
        entries = {pod: report_of(data, uid, pod).applied if pod in named else bare for pod in counted}
    missing = sorted(name for name, applied in entries.items() if applied.revision is None)
    reported = set(entries.values())
    if len(reported) == 1 and (not missing or routers is None):
        return next(iter(reported))  # all agree, or the one router there is says why it confirms nothing
    if missing:
        note = f"router replica {', '.join(missing)} has not reported"
    else:
        note = "router replicas differ: " + ", ".join(
            f"{name} {format_report(revision=applied.revision or 0, green=applied.green or 0)}"
            for name, applied in sorted(entries.items())
        )
    return AppliedWeights(revision=None, green=None, note=note)


def applied_for(rollout: RolloutRef) -> AppliedWeights:
    """What the builtin routers of ``rollout`` serve, from its report as last seen (applied_by)."""
    return applied_by(rollout.router_report, rollout.uid, None if rollout.routers is None else rollout.routers())


def report_data(*, uid: str, revision: int, green: int, trip: GuardTrip | None, replica: str = "") -> dict[str, str]:
    """What a router writes, merged into the ConfigMap's data: its every key, every time, so that nothing an
    earlier rollout of the same name wrote (a trip above all) survives under the new uid. ``guard`` is empty
    without a trip (the router keeps a trip of its rollout, restored after a restart, until it is gone)."""
    return {
        _key(constants.REPORT_ROLLOUT_UID, replica): uid,
        _key(constants.REPORT_APPLIED, replica): format_report(revision=revision, green=green),
        _key(constants.REPORT_GUARD, replica): trip.to_json() if trip is not None else "",
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
