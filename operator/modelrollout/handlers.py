"""kopf handlers: each gathers nothing and decides nothing itself; it delegates to ``controller``.

One loop per ModelRollout (a kopf daemon, ``steer``) does every reconcile, so exactly one writer updates a
rollout's status at a time. It runs every tick (a second; REST_SECONDS for a settled rollout at rest), and at
once when a watch shows a command, a spec change, or a change in the router's report or the objects the rollout
owns (wakeups). A deletion stops the
loop; the finalizer (``deleted``) carries it out.

Run with: ``kopf run --standalone -A -m modelrollout.handlers`` (the Helm chart does this in-cluster). With
``MODELROLLOUT_LEADER_ELECTION=true`` several replicas may run: only the holder of a Lease reconciles, the others
wait in startup (k8s.leader).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import kopf
import structlog
from prometheus_client import start_http_server

from modelrollout import controller, kopf_readiness, lanes, metrics, wakeups
from modelrollout.api import constants
from modelrollout.k8s import api, deletion, leader, manifests, owned, resources
from modelrollout.routing import report
from modelrollout.routing.report import report_name

TICK_SECONDS = float(os.environ.get("MODELROLLOUT_TICK_SECONDS", "1.0"))
REST_SECONDS = float(os.environ.get("MODELROLLOUT_REST_SECONDS", "30.0"))
"""How long a resting rollout's loop (settled, its objects applied; controller.at_rest) waits for a wake-up
before it looks again: whatever it acts on wakes it at once (a command, a spec change, its objects, pods or
router report changed, a watch listing again), so only the periodic re-apply waits for time. At 1,000
rollouts a tick a second for each settled one was a core's worth of Python."""
STOP_WAIT_SECONDS = 10.0
MIN_GAP_SECONDS = 0.2
"""Between the starts of two reconciles of one rollout, however often its watches wake it."""
OWNED_FROM_API = os.environ.get("MODELROLLOUT_OWNED_READS", "watch") == "api"
"""``MODELROLLOUT_OWNED_READS=api``: read the colours' Deployments and pods from the API server on every tick
(what the operator did before its watches; for comparing the two, and for ruling the cache out)."""
RESYNC = owned.Resync()
kopf_readiness.apply()  # before kopf starts: its wait for the indexes, linear in the objects watched


LEADER_ELECTION = os.environ.get("MODELROLLOUT_LEADER_ELECTION", "").lower() in ("1", "true", "yes")
_elector: leader.Elector | None = None
_background: set[asyncio.Task[None]] = set()
"""Tasks of the operator's own that run as long as it does (the leader's heartbeat)."""


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=constants.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=constants.GROUP)
    settings.posting.level = 100  # kopf's own log lines are not Events; decisions post their own
    # the API server sends only the routers' reports, not every ConfigMap of the cluster (the index's label
    # filter below is client-side)
    settings.watching.label_selectors["", "v1", "configmaps"] = f"{constants.LABEL_COLOUR}={manifests.ROUTER}"
    # nor every Deployment and pod: only those of a rollout (the indexes below)
    settings.watching.label_selectors["apps", "v1", "deployments"] = constants.LABEL_ROLLOUT
    settings.watching.label_selectors["", "v1", "pods"] = constants.LABEL_ROLLOUT
    for kind in OWNED_KINDS:  # the rest of what the operator applies, to see it changed by someone else
        settings.watching.label_selectors[kind] = constants.LABEL_ROLLOUT
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # not a line per reconcile
    api.configure(os.environ.get("KUBECONFIG") or None)
    port = int(os.environ.get("MODELROLLOUT_METRICS_PORT", "8000"))
    if port:
        start_http_server(port, addr=os.environ.get("MODELROLLOUT_METRICS_HOST", "0.0.0.0"))  # noqa: S104
    structlog.get_logger("modelrollout").info("operator started", metrics_port=port, tick_seconds=TICK_SECONDS)
    if LEADER_ELECTION:
        # kopf starts no watch and no daemon before its startup handlers return: a standby waits here
        global _elector
        _elector = leader.Elector(
            name=os.environ.get("MODELROLLOUT_LEASE_NAME", "modelrollout-operator"),
            namespace=os.environ.get("MODELROLLOUT_LEASE_NAMESPACE") or os.environ.get("POD_NAMESPACE") or "default",
            identity=leader.default_identity(),
            timing=leader.Timing(lease_seconds=float(os.environ.get("MODELROLLOUT_LEASE_SECONDS", "15"))),
        )
        await _elector.acquire()
        controller.fence_with(_elector.fresh)
        _background.add(asyncio.get_running_loop().create_task(_elector.heartbeat()))
    metrics.LEADER.set(1)


def may_act() -> bool:
    """Without leader election always; with it, only while this replica's Lease is fresh (k8s.leader)."""
    return controller.may_act()


@kopf.on.cleanup()
def hand_back(**_: Any) -> None:
    """A clean stop hands the Lease back, so that a standby takes over at once."""
    metrics.LEADER.set(0)
    if _elector is not None:
        _elector.release()


@kopf.index("", "v1", "configmaps", labels={constants.LABEL_COLOUR: manifests.ROUTER})
def router_reports(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[tuple[str, str], Any]:
    """The builtin routers' reports (routing.report), kept current by a watch: no request per tick. kopf
    hands the index to the handlers below as their ``router_reports`` argument."""
    return {(namespace or "", name): dict(body.get("data") or {})}


def report_for(handler_kwargs: dict[str, Any], body: kopf.Body) -> dict[str, str] | None:
    """This rollout's router report as last seen, or None."""
    reports: kopf.Index[tuple[str, str], dict[str, str]] = handler_kwargs["router_reports"]
    key = (body["metadata"]["namespace"], report_name(body["metadata"]["name"]))
    return next(iter(reports.get(key, [])), None)


@kopf.index("apps", "v1", "deployments", labels={constants.LABEL_ROLLOUT: kopf.PRESENT})
def owned_deployments(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[owned.DeploymentKey, Any]:
    """The rollouts' Deployments, kept current by a watch (only the fields decisions read): a reconcile reads
    none of them from the API server."""
    return {(namespace or "", name): owned.trimmed_deployment(body)}


@kopf.index("", "v1", "pods", labels={constants.LABEL_ROLLOUT: kopf.PRESENT})
def owned_pods(namespace: str | None, body: kopf.Body, **_: Any) -> dict[owned.PodKey, Any]:
    """The rollouts' pods by rollout and colour, kept current by a watch (only the fields decisions read). A
    pod no colour selects any more is indexed nowhere (an empty dict, not None: kopf keeps an object's
    earlier entries when its index function returns None)."""
    key = owned.pod_key(namespace or "", body)
    return {} if key is None else {key: owned.trimmed_pod(body)}


def owned_for(handler_kwargs: dict[str, Any], body: kopf.Body) -> owned.Cached:
    """This rollout's Deployments and pods as the watches hold them now (a copy)."""
    return owned.Cached(
        body["metadata"]["namespace"],
        body["metadata"]["name"],
        deployments=handler_kwargs["owned_deployments"],
        pods=handler_kwargs["owned_pods"],
    )


def owned_view(handler_kwargs: dict[str, Any], body: kopf.Body) -> owned.OwnedObjects:
    """What a reconcile reads the colours from: the watches' copy, checked against the API server now and
    then (owned.Resync) when it is first read, or the API server on every tick with
    MODELROLLOUT_OWNED_READS=api."""
    if OWNED_FROM_API:
        return owned.LIVE
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    return owned.Checked(owned_for(handler_kwargs, body), RESYNC, lambda: owned.read_live(namespace, name))


def deployed(body: kopf.Body) -> owned.Versions | None:
    """What the watches show of this rollout's owned objects (owned.Seen), for the controller to see one
    changed by someone else without a request; None when the colours are read from the API server."""
    if OWNED_FROM_API:
        return None
    return owned.SEEN.of(body["metadata"]["namespace"], body["metadata"]["name"])


WAKEUPS = wakeups.Wakeups()
RECONCILING: dict[wakeups.Key, asyncio.Lock] = {}
"""Per rollout: held by its reconcile while it runs, and by its finalizer. kopf sets a deleted rollout's loop to
stop and calls the finalizer at once, without waiting for a reconcile in flight: one that moves the weights
after the finalizer asked the router for 100% blue could leave the kept router sending users to the candidate
being deleted. The finalizer waits for it (bounded by the API request timeout), then the loop stops."""


controller.objects_with(lambda uid: WAKEUPS.ended(uid), lambda uid: WAKEUPS.end(uid))


def reconciling(key: wakeups.Key) -> asyncio.Lock:
    return RECONCILING.setdefault(key, asyncio.Lock())


def _key(body: kopf.Body) -> wakeups.Key:
    return body["metadata"]["namespace"], body["metadata"]["name"]


@kopf.daemon(
    constants.GROUP,
    constants.VERSION,
    constants.PLURAL,
    backoff=TICK_SECONDS,
    cancellation_backoff=STOP_WAIT_SECONDS,  # a stop lets a reconcile in flight finish; never cancelled mid-write
)
async def steer(body: kopf.Body, stopped: kopf.DaemonStopped, **kwargs: Any) -> None:
    """A rollout's reconcile loop, one task per rollout (its only writer): every TICK_SECONDS, and at once when
    the watches below show something it acts on has changed (wakeups). ``body`` is kopf's live copy of the
    object, the latest the watch delivered."""
    key, uid = _key(body), body["metadata"].get("uid", "")
    woken, urgency = WAKEUPS.register(key, uid)
    metrics.LOOPS.inc()
    try:
        while not stopped and not WAKEUPS.ended(uid):
            woken.clear()
            urgent = urgency.is_set()
            urgency.clear()
            begun = asyncio.get_running_loop().time()
            reconciled = False
            try:
                with lanes.urgent(urgent):
                    reconciled = await tick(body, **kwargs)
            except Exception as error:  # noqa: BLE001 - reconcile records its own failures; this is a bug's trace
                structlog.get_logger("modelrollout").error("reconcile loop failed", error=repr(error)[:500])
            # a tick skipped (not the leader at that moment) leaves the last rest mark, which says nothing of now
            resting = reconciled and controller.at_rest(*key, uid) and may_act()
            await WAKEUPS.sleep(woken, REST_SECONDS if resting else TICK_SECONDS, stopped.wait())
            rest = MIN_GAP_SECONDS - (asyncio.get_running_loop().time() - begun)
            if rest > 0 and not stopped and not WAKEUPS.ended(uid):  # a burst of watch events: one reconcile
                await asyncio.sleep(rest)  # per MIN_GAP_SECONDS
    finally:
        deleted = WAKEUPS.ended(uid) or (
            stopped.reason is not None and kopf.DaemonStoppingReason.RESOURCE_DELETED in stopped.reason
        )
        WAKEUPS.forget(key, woken, uid)
        metrics.LOOPS.dec()
        if deleted:  # after its last reconcile: nothing that one remembered outlives the rollout
            forget(key, uid)


async def tick(body: kopf.Body, **kwargs: Any) -> bool:
    """One reconcile of the rollout; False when none ran (this replica may not act, or the rollout is being
    deleted)."""
    async with reconciling(_key(body)):
        if not may_act() or (body.get("metadata") or {}).get("deletionTimestamp"):
            return False  # a rollout being deleted is its finalizer's alone
        await controller.reconcile(body, report_for(kwargs, body), owned_view(kwargs, body), deployed=deployed(body))
        return True


@kopf.on.event(constants.GROUP, constants.VERSION, constants.PLURAL)
async def rollout_changed(body: kopf.Body, type: str | None, **_: Any) -> None:
    """A command or a spec change is acted on at once, and a reconcile held back until the watch delivered the
    operator's own last write goes on as soon as it has (not at every status write). A rollout gone is
    forgotten, also when its finalizer never finished (taken off by hand, or by another operator)."""
    key = _key(body)
    if type == "DELETED":
        WAKEUPS.end(body["metadata"].get("uid", ""))  # its loop ends, also when kopf does not stop it
        forget_deleted(body)
        return
    WAKEUPS.noticed(key, body)
    if type in (None, "MODIFIED") and controller.at_rest(*key, body["metadata"].get("uid", "")):
        WAKEUPS.wake(key)  # a rollout at rest writes nothing: someone else changed it (its status, say), or
        # the watch listed it again (a change made while the watch was down shows no MODIFIED event)
    if controller.caught_up(*key, body):
        WAKEUPS.wake(key, urgent=True)  # the reconcile held back may carry a command: it goes first


OWNED_KINDS = (
    ("apps", "v1", "deployments"),
    ("", "v1", "services"),
    ("", "v1", "serviceaccounts"),
    ("rbac.authorization.k8s.io", "v1", "roles"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings"),
    ("policy", "v1", "poddisruptionbudgets"),
)
"""What resources.ensure applies besides the router's report (watched with the reports)."""


@kopf.on.event("", "v1", "configmaps", labels={constants.LABEL_COLOUR: manifests.ROUTER})
@kopf.on.event("apps", "v1", "deployments", labels={constants.LABEL_ROLLOUT: kopf.PRESENT})
@kopf.on.event("", "v1", "services", labels={constants.LABEL_ROLLOUT: kopf.PRESENT})
@kopf.on.event("", "v1", "serviceaccounts", labels={constants.LABEL_ROLLOUT: kopf.PRESENT})
@kopf.on.event("rbac.authorization.k8s.io", "v1", "roles", labels={constants.LABEL_ROLLOUT: kopf.PRESENT})
@kopf.on.event("rbac.authorization.k8s.io", "v1", "rolebindings", labels={constants.LABEL_ROLLOUT: kopf.PRESENT})
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels={constants.LABEL_ROLLOUT: kopf.PRESENT})
async def owned_changed(
    namespace: str | None,
    labels: kopf.Labels,
    body: kopf.Body,
    resource: kopf.Resource,
    type: str | None,
    **_: Any,
) -> None:
    """An object a rollout owns changed (kopf calls this after the indexes above took the change in): the
    controller sees it in owned.SEEN, and the rollout's loop looks again now. A watch listing again (not its first
    listing) may leave objects deleted meanwhile showing as they were (see controller.relisted)."""
    if owned.SEEN.saw(type, namespace or "", resource.kind or str(body.get("kind") or ""), body):
        RESYNC.relisted()
        controller.relisted()
    # a router's guard tripped: acted on as urgently as a command (a confirmation is routine)
    tripped = resource.plural == "configmaps" and type is not None and report.tripped(body.get("data"))
    WAKEUPS.wake((namespace or "", labels.get(constants.LABEL_ROLLOUT, "")), urgent=tripped)


@kopf.on.event("", "v1", "pods", labels={constants.LABEL_ROLLOUT: kopf.PRESENT})
async def pod_changed(namespace: str | None, labels: kopf.Labels, type: str | None, **_: Any) -> None:
    """A rollout's pod changed: its loop looks again now. A listing: its copy is checked (owned.Resync)."""
    if type is None:
        RESYNC.relisted()
    WAKEUPS.wake((namespace or "", labels.get(constants.LABEL_ROLLOUT, "")))


@kopf.on.delete(constants.GROUP, constants.VERSION, constants.PLURAL)
async def deleted(body: kopf.Body, **kwargs: Any) -> None:
    """The finalizer: the object goes once spec.deletionPolicy is carried out (k8s.deletion); kopf calls
    again while it raises kopf.TemporaryError (waiting for the router to confirm 100% blue). The report and the
    copy of the router's Pods are taken here, on the event loop (which alone changes kopf's indexes); the
    finalizer's requests run on a worker thread."""

    if not may_act():
        raise kopf.TemporaryError("not the leader now: the lease was not renewed in time", delay=TICK_SECONDS)

    def post(kind: str, reason: str, message: str) -> None:
        kopf.event(body, type=kind, reason=reason, message=message[:1000])

    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    view = owned_view(kwargs, body)
    async with reconciling(_key(body)):  # after a reconcile in flight has written what it decided
        with lanes.urgent(True):  # a deletion moves traffic: never queued behind routine reconciles
            await lanes.in_thread(
                deletion.finalize,
                body,
                post=post,
                router_report=report_for(kwargs, body),
                routers=lambda: resources.live_pods(view.pods(namespace, name, manifests.ROUTER)),
            )
    forget_deleted(body)


def forget_deleted(body: kopf.Body) -> None:
    """The deleted object is forgotten (see forget)."""
    forget(_key(body), body["metadata"].get("uid", ""))


def forget(key: wakeups.Key, uid: str) -> None:
    """What this operator keeps in memory of the object ``uid``, dropped once it is gone (its finalizer done, or
    the object deleted without it). Idempotent: a finalized rollout is forgotten again at its DELETED event.
    What is kept by name (the cache checks, the owned objects seen) stays while a loop runs for another object
    made again under the name: it is that object's."""
    controller.forget(*key, uid)
    if WAKEUPS.another_object(key, uid):
        return
    lock = RECONCILING.get(key)
    if lock is not None and not lock.locked():  # one held is a reconcile in flight: dropped after it, by its loop
        RECONCILING.pop(key, None)
    WAKEUPS.gone(key)
    RESYNC.forget(*key)
    owned.SEEN.forget(*key)
