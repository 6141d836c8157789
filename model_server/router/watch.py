"""Follow one ModelRollout through the Kubernetes API, apply its weights, and report them once applied.

The operator publishes the weights it wants in ``status.weights`` (``blue``, ``green`` and ``revision``,
raised each time the wanted weights change). The router applies them to its data plane as soon as the
watch event arrives, and only once the data plane confirms them does it write ``"<revision>/<green>"``
(routing.base.format_report) in its report, the ConfigMap ``<rollout>-router-report`` (routing.report; its
Role lets it patch that one object and read its own ModelRollout, nothing else), where revision is the one
that asked for that weight: the operator counts a weight as applied only when
both match what it asked for. So:

- a failed apply (nginx rejecting the config, a reload that never answers) reports nothing, is logged,
  and is retried with a short backoff until it succeeds, not only when the next watch event comes;
- after a failed apply the data plane's weights count as unknown, so the next attempt applies again even
  when the wanted weights went back to what was served before;
- a report is sent again whenever the reported revision differs from the wanted one, also when the weight
  is the same; the report is read back when the watch (re)starts, and one written for another rollout of the
  same name counts as none;
- the router starts at 100% blue and reports only after it applied what the status asks (an object
  without ``status.weights.revision``, written by an older operator, counts as revision 0).

When the API server is unreachable the router keeps the last weights it applied.

The data-plane guard (router.guard) overrides the wanted weights: after a trip the router serves 0% green,
reports ``"<revision>/0"`` (what it really serves) and the trip in the report's ``guard``, and
keeps green at 0% for that candidate in every phase that could give it traffic (Progressing, Paused,
Promoting), also for newer revisions the operator asked for before it read the trip (each reported as held),
until the operator acknowledges the trip in ``status.guardTrip``. The trip is restored from the report when
the router restarts, so it never returns to green on its own.
"""

from __future__ import annotations

import dataclasses
import enum
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from model_server.router import persisted
from model_server.router.guard import guard_of
from modelrollout.api import constants
from modelrollout.api.spec import GuardSpec
from modelrollout.routing.base import NOT_REPORTED, AppliedWeights
from modelrollout.routing.guard import ARMED_PHASES, HOLDING_PHASES, GuardTrip
from modelrollout.routing.report import latest_trip, legacy_trip, report_data, report_name, report_of, trip_of

log = structlog.get_logger(__name__)

RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 2.0


@dataclass(frozen=True)
class Wanted:
    """What the ModelRollout asks the router to serve."""

    revision: int
    green: int
    mirror: int
    phase: str = ""
    """``status.phase`` when these weights were asked for (the guard is armed only in some phases)."""
    green_revision: str = ""
    """``status.greenRevision``: the candidate these weights are for."""
    guard: GuardSpec = field(default_factory=GuardSpec)
    acknowledged: int = -1
    """``status.guardTrip.revision``: the latest trip the operator has read (-1: none)."""


@dataclass(frozen=True)
class Serving:
    """What the data plane confirmed it serves."""

    green: int
    mirror: int


def wanted_of(obj: dict[str, Any]) -> Wanted | None:
    """The weights a ModelRollout asks for; None while the operator has published none."""
    weights = (obj.get("status") or {}).get("weights") or {}
    green = weights.get("green")
    if not isinstance(green, int) or isinstance(green, bool):
        return None
    revision = weights.get("revision")
    status = obj.get("status") or {}
    mirror = (((obj.get("spec") or {}).get("traffic") or {}).get("mirror") or {}).get("percent", 0)
    acknowledged = (status.get("guardTrip") or {}).get("revision")
    return Wanted(
        revision=_integer(revision, 0),
        green=max(0, min(100, green)),
        mirror=max(0, min(100, int(mirror or 0))),
        phase=str(status.get("phase") or ""),
        green_revision=str(status.get("greenRevision") or ""),
        guard=guard_of(obj),
        acknowledged=_integer(acknowledged, -1),
    )


def _integer(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def uid_of(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


def holding(wanted: Wanted, trip: GuardTrip | None) -> bool:
    """Whether a trip keeps green at 0% against these wanted weights (a pure function): it does until the
    operator acknowledged it, for the candidate that tripped it, in the phases that give green traffic."""
    return (
        trip is not None
        and wanted.acknowledged < trip.revision
        and wanted.green > 0
        and wanted.phase in HOLDING_PHASES
        and wanted.green_revision == trip.green_revision
    )


def target(wanted: Wanted, trip: GuardTrip | None) -> tuple[Wanted, GuardTrip | None]:
    """What to serve and which trip to report (a pure function): while a trip holds, 0% green, and the trip
    names the newest revision it holds, so that the operator sees it for the weights it asks for now."""
    if trip is None or not holding(wanted, trip):
        return wanted, trip
    if wanted.revision > trip.revision:
        trip = dataclasses.replace(trip, revision=wanted.revision)
    return dataclasses.replace(wanted, green=0), trip


class Action(enum.Enum):
    NOTHING = "nothing"
    APPLY = "apply"
    REPORT = "report"


def next_action(
    wanted: Wanted | None,
    serving: Serving | None,
    reported: AppliedWeights,
    *,
    trip: GuardTrip | None = None,
    reported_trip: GuardTrip | None = None,
) -> Action:
    """What to do next (a pure function): apply until the data plane serves the wanted weights (``wanted``
    as ``target`` made it), then report them with the revision that asked for them, and the trip."""
    if wanted is None:
        return Action.NOTHING
    if serving != Serving(green=wanted.green, mirror=wanted.mirror):
        return Action.APPLY
    if not reported.confirms(revision=wanted.revision, green=wanted.green):
        return Action.REPORT
    if trip is not None and trip != reported_trip:
        return Action.REPORT
    return Action.NOTHING


class WeightsFollower:
    """The bookkeeping between the watch (what is wanted), the report (what was reported), the data plane
    (what it serves) and the guard (a trip holds green at 0%). ``observe`` and ``restart`` are called
    from the watch, ``tripped`` from the guard; ``run`` (its own thread) applies, reports, and retries with a
    backoff until both succeeded.

    ``apply(wanted)`` returns once the data plane serves ``wanted`` and raises when it does not; it may return
    the Serving it applied instead (a trip that came meanwhile makes it serve 0% green). ``report(uid,
    wanted, trip)`` writes the report for the rollout ``uid``, with the guard's trip when there is one.
    ``remember(rollout, report)``, when given, keeps what the data plane serves after each confirmed apply
    (router.persisted): the ModelRollout it was applied for and the report that says so.
    """

    def __init__(
        self,
        *,
        apply: Callable[[Wanted], Serving | None],
        report: Callable[[str, Wanted, GuardTrip | None], None],
        remember: Callable[[dict[str, Any], dict[str, str]], None] | None = None,
        replica: str = "",
    ) -> None:
        self.replica = replica
        """This router's name among the rollout's routers (its Pod's): the entry of the report it writes and
        reads back (routing.report); empty for a router that runs alone (the bare keys)."""
        self._apply = apply
        self._report = report
        self._remember = remember
        self.seen: dict[str, Any] = {}
        """The ModelRollout ``wanted`` comes from."""
        self._kept: tuple[Any, ...] | None = None
        """What was last remembered (see ``_keep``)."""
        self._changed = threading.Condition()
        self._generation = 0
        self.wanted: Wanted | None = None
        self.uid = ""
        """The uid of the ModelRollout followed (a report is for it only)."""
        self.reported: AppliedWeights = NOT_REPORTED
        self.reported_trip: GuardTrip | None = None
        self.trip: GuardTrip | None = None
        """The guard's last trip (restored from the report after a restart)."""
        self.serving: Serving | None = None
        """None until the first apply succeeds, and again after a failed one: unknown, so apply again."""
        self.failures = 0
        """Consecutive failed attempts (apply or report)."""

    def observe(self, obj: dict[str, Any]) -> None:
        """The ModelRollout as the watch saw it. Another uid is another rollout of the same name: nothing
        was reported for it, and an earlier rollout's trip does not hold it."""
        with self._changed:
            self._observe(obj)
            self._generation += 1
            self._changed.notify_all()

    def restart(self, obj: dict[str, Any], report: Mapping[str, str] | None) -> None:
        """What the watch (re)starts from: the ModelRollout and the report read back just before (``data``
        of the ConfigMap), taken in one step, so that weights are never applied before a trip in the report
        (or one an earlier router version wrote on the ModelRollout) is restored: a restarted router never
        returns to green on its own. A trip another replica of the router wrote holds this one too."""
        with self._changed:
            self._observe(obj)
            read = report_of(report, self.uid, self.replica)
            self.reported, self.reported_trip = read.applied, read.trip
            self.trip = latest_trip(self.trip, trip_of(report, self.uid), legacy_trip(obj))
            self._generation += 1
            self._changed.notify_all()

    def _observe(self, obj: dict[str, Any]) -> None:
        self.seen = obj
        self.wanted = wanted_of(obj)
        uid = uid_of(obj)
        if uid != self.uid:
            self.uid = uid
            self.reported, self.reported_trip, self.trip = NOT_REPORTED, None, None

    def tripped(self, trip: GuardTrip) -> bool:
        """The guard tripped (called from the data plane's thread): True when the trip stands, and the data
        plane is to serve 0% green now. It stands only while the latest object seen still asks green weight
        for that candidate in a phase that arms the guard: a report of newer weights is always written after
        their object was seen, so once the operator could count a promotion as confirmed (Promoting, then
        green the stable model) no trip can stand any more, even one the data plane was arming for before."""
        with self._changed:
            wanted = self.wanted
            if (
                wanted is None
                or not wanted.guard.enabled
                or wanted.green <= 0
                or wanted.phase not in ARMED_PHASES
                or wanted.green_revision != trip.green_revision
            ):
                return False
            self.trip = trip
            self._generation += 1
            self._changed.notify_all()
            return True

    def holds(self, wanted: Wanted) -> bool:
        """Whether the current trip keeps green at 0% against ``wanted`` (for the data plane's apply)."""
        with self._changed:
            return holding(wanted, self.trip)

    def step(self) -> bool:
        """Apply and report what is wanted now; True when settled, False when something failed."""
        while True:
            with self._changed:
                wanted, reported, reported_trip, trip = self.wanted, self.reported, self.reported_trip, self.trip
                uid, seen = self.uid, self.seen
            if wanted is None:
                self.failures = 0
                return True
            goal, goal_trip = target(wanted, trip)
            action = next_action(goal, self.serving, reported, trip=goal_trip, reported_trip=reported_trip)
            if action is Action.NOTHING:
                self.failures = 0
                if self.serving is not None:
                    self._keep(seen, uid, goal.revision, self.serving)
                return True
            try:
                if action is Action.APPLY:
                    begun = time.monotonic()
                    self.serving = None
                    served = self._apply(goal)
                    self.serving = served or Serving(green=goal.green, mirror=goal.mirror)
                    log.info(
                        "weights applied",
                        revision=goal.revision,
                        green=self.serving.green,
                        mirror=self.serving.mirror,
                        held_by_guard=goal.green != wanted.green or self.serving.green != goal.green,
                        seconds=round(time.monotonic() - begun, 3),
                    )
                    self._keep(seen, uid, goal.revision, self.serving)
                else:
                    begun = time.monotonic()
                    self._report(uid, goal, goal_trip)
                    with self._changed:
                        if self.reported is reported and self.uid == uid:  # no newer report read meanwhile
                            self.reported = AppliedWeights(revision=goal.revision, green=goal.green)
                            self.reported_trip = goal_trip
                        if self.trip is trip:
                            self.trip = goal_trip
                    log.info(
                        "applied weights reported",
                        revision=goal.revision,
                        green=goal.green,
                        guard_trip=goal_trip.revision if goal_trip is not None else None,
                        seconds=round(time.monotonic() - begun, 3),
                    )
            except Exception as error:  # noqa: BLE001 - any failure: report nothing, retry
                self.failures += 1
                log.warning(
                    f"weights not {'applied' if action is Action.APPLY else 'reported'}; retrying",
                    revision=goal.revision,
                    green=goal.green,
                    failures=self.failures,
                    error=f"{type(error).__name__}: {error}",
                )
                return False

    def _keep(self, seen: dict[str, Any], uid: str, revision: int, serving: Serving) -> None:
        """Remember what the data plane serves now, for the rollout ``seen``, with the latest trip (taken now:
        one that came during an apply is kept too), whenever any of it changed since it was last kept. A
        failure is logged (``remember`` removes what it could not replace: a restart then starts at 100%
        blue, never at older weights); the weights are served all the same."""
        if self._remember is None:
            return
        with self._changed:
            trip = self.trip
        resource_version = (seen.get("metadata") or {}).get("resourceVersion")
        key = (uid, resource_version, revision, serving, trip)
        if key == self._kept:
            return
        try:
            self._remember(
                seen, report_data(uid=uid, revision=revision, green=serving.green, trip=trip, replica=self.replica)
            )
            self._kept = key
        except Exception as error:  # noqa: BLE001 - serving goes on; only a restart without the API loses it
            self._kept = None
            log.warning("served weights not remembered", error=f"{type(error).__name__}: {error}")

    def run(self, stop: threading.Event) -> None:
        """Until ``stop``: settle, then wait for a change. After a failure, retry after a backoff (0.5 s
        doubling to RETRY_MAX_SECONDS), or at once when new weights arrive."""
        backoff = RETRY_FIRST_SECONDS
        while not stop.is_set():
            with self._changed:
                seen = self._generation
            if self.step():
                backoff = RETRY_FIRST_SECONDS
                self._wait_for_change(seen, stop, timeout=5.0)
            else:
                self._wait_for_change(seen, stop, timeout=backoff)
                backoff = min(backoff * 2, RETRY_MAX_SECONDS)

    def _wait_for_change(self, seen: int, stop: threading.Event, *, timeout: float) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._generation != seen or stop.is_set(), timeout=timeout)

    def forget_serving(self) -> None:
        """What the data plane serves is unknown again (nginx was started again, from a config whose reload
        may never have been confirmed): apply what is wanted once more."""
        with self._changed:
            self.serving = None
            self._generation += 1
            self._changed.notify_all()

    def wake(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()


class RolloutWatcher:
    """Watches the ModelRollout (one thread) and drives a WeightsFollower (another thread)."""

    def __init__(
        self,
        *,
        namespace: str,
        name: str,
        kubeconfig: str | None,
        apply: Callable[[Wanted], Serving | None],
        state_file: Path | None = None,
        on_unreachable: Callable[[], None] | None = None,
        replica: str = "",
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.state_file = state_file
        self.on_unreachable = on_unreachable
        """Called when a read of the rollout fails (the router then serves what it remembered)."""
        self._api_client = config.new_client_from_config(kubeconfig) if kubeconfig else _in_cluster_client()
        self._api = client.CustomObjectsApi(self._api_client)
        self._core = client.CoreV1Api(self._api_client)
        self.follower = WeightsFollower(
            apply=apply,
            report=self._report,
            remember=self._remember if state_file is not None else None,
            replica=replica,
        )
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch, name="rollout-watch", daemon=True),
            threading.Thread(target=self.follower.run, args=(self._stop,), name="rollout-apply", daemon=True),
        ]

    def start(self, remembered: persisted.Remembered | None = None) -> None:
        """Start following; from ``remembered`` (what the state file kept) until the API server answers."""
        if remembered is not None:
            self.follower.restart(remembered.rollout, remembered.report)
        for thread in self._threads:
            thread.start()

    def _remember(self, rollout: dict[str, Any], report: dict[str, str]) -> None:
        assert self.state_file is not None
        persisted.save(self.state_file, namespace=self.namespace, name=self.name, rollout=rollout, report=report)

    def stop(self) -> None:
        self._stop.set()
        self.follower.wake()

    def _watch(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._follow()
                backoff = 0.5
            except Exception as error:  # noqa: BLE001 - any API failure: keep the last weights, retry
                log.warning("watch interrupted; keeping the last weights", error=f"{type(error).__name__}: {error}")
                if self.on_unreachable is not None:
                    self.on_unreachable()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _follow(self) -> None:
        try:
            current = self._api.get_namespaced_custom_object(
                constants.GROUP, constants.VERSION, self.namespace, constants.PLURAL, self.name
            )
        except ApiException as error:
            if error.status != 404:
                raise
            # The ModelRollout was deleted, and its deletion moved all traffic to blue, the stable model, which
            # stays serving: so does this router (also when it restarts later), until a rollout appears again.
            self.follower.restart(ROLLOUT_GONE, gone_report(self.follower.replica))
            self._stop.wait(GONE_RECHECK_SECONDS)
            return
        self.follower.restart(current, self._read_report())  # a failed read raises: nothing is applied
        stream = watch.Watch()
        for event in stream.stream(
            self._api.list_namespaced_custom_object,
            constants.GROUP,
            constants.VERSION,
            self.namespace,
            constants.PLURAL,
            field_selector=f"metadata.name={self.name}",
            resource_version=current["metadata"]["resourceVersion"],
            timeout_seconds=60,
            _request_timeout=70,
        ):
            if self._stop.is_set():
                stream.stop()
                return
            if event["type"] in ("ADDED", "MODIFIED"):
                self.follower.observe(event["object"])

    def _read_report(self) -> dict[str, str] | None:
        """The report's data; None while the operator has not created it. Any other failure raises (the
        watch is retried, the last weights kept: a restarted router must not forget a trip it cannot read)."""
        try:
            found = self._core.read_namespaced_config_map(report_name(self.name), self.namespace, _request_timeout=10)
        except ApiException as error:
            if error.status != 404:
                raise
            return None
        return dict(found.data or {})

    def _report(self, uid: str, wanted: Wanted, trip: GuardTrip | None) -> None:
        """Merged into the report's data: the weights served and for which rollout, the trip if any. The
        operator creates the ConfigMap; until it exists this fails (404) and is retried."""
        data = report_data(
            uid=uid, revision=wanted.revision, green=wanted.green, trip=trip, replica=self.follower.replica
        )
        self._core.patch_namespaced_config_map(
            report_name(self.name),
            self.namespace,
            {"data": data},
            field_manager=constants.ROUTER_FIELD_MANAGER,
            _request_timeout=10,
        )


GONE_RECHECK_SECONDS = 5.0
ROLLOUT_GONE: dict[str, Any] = {"status": {"weights": {"blue": 100, "green": 0, "revision": -1}}}
"""What a router follows once its ModelRollout is gone: all traffic to blue, nothing left to report."""


def gone_report(replica: str) -> dict[str, str]:
    """What counts as reported by router ``replica`` once its rollout is gone (ROLLOUT_GONE has no uid): so that
    nothing is written."""
    return report_data(uid="", revision=-1, green=0, trip=None, replica=replica)


def _in_cluster_client() -> client.ApiClient:
    config.load_incluster_config()
    return client.ApiClient()
