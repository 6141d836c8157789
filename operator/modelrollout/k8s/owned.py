"""The Deployments and pods a rollout owns, as a reconcile sees them: read from the API server (``LIVE``), or
from the watches the operator keeps (``Cached``: kopf indexes, see handlers) so that a reconcile makes no
request for them on each tick.

Both answer the same questions the same way: a colour's Deployment by its name ``<rollout>-<colour>``, and the
pods labelled with the rollout and the colour (as the Deployment and the Service select them). The cache keeps
only the fields the decisions read (``trimmed_deployment``, ``trimmed_pod``), so a thousand rollouts cost
little memory. A cached object lags the API server by the watch's delay (milliseconds): every decision that
reads it checks the revision and the generation it wants, so an object not yet updated in the cache reads as
"not rolled out yet", never as the new revision serving.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import structlog

from modelrollout.api import constants
from modelrollout.k8s import api

log = structlog.get_logger("modelrollout")


class OwnedObjects(Protocol):
    def deployment(self, namespace: str, rollout: str, colour: str) -> Mapping[str, Any] | None:
        """The colour's Deployment (``<rollout>-<colour>``), None when there is none."""
        ...

    def pods(self, namespace: str, rollout: str, colour: str) -> list[Mapping[str, Any]]:
        """The pods labelled with the rollout and the colour."""
        ...


def pod_selector(rollout: str, colour: str) -> str:
    """The label selector of a colour's pods (as its Deployment and Service select them)."""
    return f"{constants.LABEL_ROLLOUT}={rollout},{constants.LABEL_COLOUR}={colour}"


class Live:
    """Reads from the API server: a GET and a LIST per question."""

    def deployment(self, namespace: str, rollout: str, colour: str) -> Mapping[str, Any] | None:
        return api.read("Deployment", namespace, f"{rollout}-{colour}")

    def pods(self, namespace: str, rollout: str, colour: str) -> list[Mapping[str, Any]]:
        return list(api.list_pods(namespace, pod_selector(rollout, colour)))


LIVE = Live()

DeploymentKey = tuple[str, str]
"""(namespace, name)"""
PodKey = tuple[str, str, str]
"""(namespace, rollout, colour)"""


class Cached:
    """One rollout's colours as the kopf indexes ``deployments`` (by DeploymentKey) and ``pods`` (by PodKey)
    hold them now: copied when made (on the event loop, which alone changes the indexes), so that a reconcile
    may read it from any thread. No request."""

    def __init__(
        self,
        namespace: str,
        rollout: str,
        *,
        deployments: Mapping[DeploymentKey, Iterable[Mapping[str, Any]]],
        pods: Mapping[PodKey, Iterable[Mapping[str, Any]]],
        colours: Iterable[str] = constants.OWNED_COLOURS,
    ) -> None:
        self.scope = (namespace, rollout)
        found = {colour: list(deployments.get((namespace, f"{rollout}-{colour}"), ())) for colour in colours}
        self._deployments = {colour: next(iter(each), None) for colour, each in found.items()}
        self.duplicated = any(len(each) > 1 for each in found.values())
        """Two objects under one Deployment name: one is a ghost (see ``Resync``)."""
        self._pods = {colour: list(pods.get((namespace, rollout, colour), ())) for colour in colours}

    def deployment(self, namespace: str, rollout: str, colour: str) -> Mapping[str, Any] | None:
        self._check(namespace, rollout, colour)
        return self._deployments[colour]

    def pods(self, namespace: str, rollout: str, colour: str) -> list[Mapping[str, Any]]:
        self._check(namespace, rollout, colour)
        return list(self._pods[colour])

    def _check(self, namespace: str, rollout: str, colour: str) -> None:
        if (namespace, rollout) != self.scope or colour not in self._pods:
            raise KeyError(f"{namespace}/{rollout} {colour}: not in this copy of {'/'.join(self.scope)}")

    @property
    def colours(self) -> tuple[str, ...]:
        return tuple(self._pods)


def read_live(namespace: str, rollout: str, colours: Iterable[str] = constants.OWNED_COLOURS) -> Cached:
    """A rollout's colours as the API server has them now (a GET and a LIST per colour), in Cached's form."""
    deployments: dict[DeploymentKey, list[Mapping[str, Any]]] = {}
    pods: dict[PodKey, list[Mapping[str, Any]]] = {}
    for colour in colours:
        found = LIVE.deployment(namespace, rollout, colour)
        if found is not None:
            deployments[namespace, f"{rollout}-{colour}"] = [trimmed_deployment(found)]
        pods[namespace, rollout, colour] = [trimmed_pod(pod) for pod in LIVE.pods(namespace, rollout, colour)]
    return Cached(namespace, rollout, deployments=deployments, pods=pods, colours=colours)


def ghosts(cached: Cached, live: Cached) -> list[str]:
    """What the cache holds that the API server does not (a pure function): pods by name, Deployments by uid.
    An object deleted while a watch was broken and listed again afresh (an API server restarted, a 410 Gone)
    stays in kopf's indexes for good, as if it still existed."""
    namespace, rollout = cached.scope
    found = []
    for colour in cached.colours:
        cached_deployment = cached.deployment(namespace, rollout, colour)
        live_deployment = live.deployment(namespace, rollout, colour)
        if cached_deployment is not None and (
            live_deployment is None or _uid(cached_deployment) != _uid(live_deployment)
        ):
            found.append(f"Deployment {(cached_deployment.get('metadata') or {}).get('name')}")
        live_pods = {_name(pod) for pod in live.pods(namespace, rollout, colour)}
        found.extend(
            f"Pod {_name(pod)}" for pod in cached.pods(namespace, rollout, colour) if _name(pod) not in live_pods
        )
    return found


def _uid(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("uid") or "")


def _name(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("name") or "")


RESYNC_SECONDS = 900.0


class Resync:
    """Which view a reconcile reads: the cache, checked against the API server (a GET and a LIST per colour)
    after every relist of a watch (``relisted``) and otherwise once every ``every`` seconds per rollout. A
    rollout whose cache holds ghosts (see ``ghosts``), or two Deployments under one name, reads from the API
    server on every tick until a check finds its cache right again (which a ghost never is: for that rollout
    the operator reads as it did before its watches, logged). Ghosts can only make a colour read as less ready
    than it is, or shadow a Deployment made again under its old name; either way the API server's answer is
    the one used. They appear only when a watch lists its objects again (its resource version expired, 410 Gone,
    or the watch failed), which is why a relist makes every rollout's check due."""

    def __init__(self, every: float = RESYNC_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self._clock = clock
        self._checked: dict[tuple[str, str], float] = {}
        self._relisted = float("-inf")
        self.diverged: set[tuple[str, str]] = set()

    def relisted(self) -> None:
        """A watch of Deployments or pods listed them again: every rollout's check is due at its next read."""
        self._relisted = self._clock()

    def due(self, cached: Cached) -> bool:
        """Whether ``view`` would read the API server for this rollout now."""
        key = cached.scope
        checked = self._checked.get(key, float("-inf"))
        if cached.duplicated or key in self.diverged or checked <= self._relisted:
            return True
        return self._clock() - checked >= self.every

    def view(self, cached: Cached, read: Callable[[], Cached]) -> Cached:
        """``cached``, or what ``read`` (the API server) answers when a check is due or the cache is known
        wrong for this rollout."""
        if not self.due(cached):
            return cached
        key = cached.scope
        started = self._clock()  # a relist while the API server is read makes the check due again
        live = read()
        self._checked[key] = started
        stale = ghosts(cached, live)
        if stale or cached.duplicated:
            if key not in self.diverged:
                log.warning("owned objects cache holds ghosts; reading from the API server", ghosts=stale[:10])
            self.diverged.add(key)
            return live
        if key in self.diverged:
            log.info("owned objects cache right again", rollout="/".join(key))
        self.diverged.discard(key)
        return cached

    def forget(self, namespace: str, rollout: str) -> None:
        self._checked.pop((namespace, rollout), None)
        self.diverged.discard((namespace, rollout))


class Checked:
    """The cache, checked against the API server by ``resync`` when it is first read (from any thread), not
    before: a reconcile that reads no Deployment and no pod (a settled rollout at rest) makes no request."""

    def __init__(self, cached: Cached, resync: Resync, read: Callable[[], Cached]) -> None:
        self._cached, self._resync, self._read = cached, resync, read
        self._lock = threading.Lock()
        self._view: Cached | None = None

    def deployment(self, namespace: str, rollout: str, colour: str) -> Mapping[str, Any] | None:
        return self._resolved().deployment(namespace, rollout, colour)

    def pods(self, namespace: str, rollout: str, colour: str) -> list[Mapping[str, Any]]:
        return self._resolved().pods(namespace, rollout, colour)

    def _resolved(self) -> Cached:
        with self._lock:
            if self._view is None:
                self._view = self._resync.view(self._cached, self._read)
            return self._view


ObjectKey = tuple[str, str]
"""(kind, name) of an owned object in its rollout's namespace"""
Versions = Mapping[ObjectKey, tuple[str, int]]
"""Per owned object: its uid and its version (``version_of``), as an apply returned them or a watch shows them."""
UNVERSIONED = {"ConfigMap"}
"""Kinds whose changes are not drift: the router writes its report's data (only its uid counts)."""
GENERATIONED = {"Deployment", "PodDisruptionBudget"}
"""Kinds whose status changes all the time: only their generation (their spec) counts."""


def version_of(body: Mapping[str, Any], kind: str | None = None) -> int:
    """What grows when someone changes an owned object's spec (a pure function): the generation of a kind in
    GENERATIONED, the resourceVersion of the rest; 0 for a kind in UNVERSIONED."""
    kind, metadata = kind or body.get("kind"), body.get("metadata") or {}
    if kind in UNVERSIONED:
        return 0
    if kind in GENERATIONED:
        return _generation(body)
    try:
        return int(metadata.get("resourceVersion") or 0)
    except ValueError:
        return 0


def versioned(body: Mapping[str, Any], kind: str | None = None) -> tuple[ObjectKey, tuple[str, int]]:
    """An object's key and its uid and version (``kind``: when the body may lack it)."""
    metadata = body.get("metadata") or {}
    kind = kind or str(body.get("kind"))
    return (kind, str(metadata.get("name"))), (_uid(body), version_of(body, kind))


class Seen:
    """The uid and version of each object the rollouts own (Deployments, Services, the router's account, Role,
    binding and report), as the watches last showed them, by rollout: so that a reconcile sees one deleted,
    made again or changed by someone else without a request. Kept by name: an object made again under its name
    replaces its entry, so an object deleted while a watch was broken (kopf gets no DELETED event for it) stays
    only until it is made again."""

    def __init__(self) -> None:
        self._by_rollout: dict[tuple[str, str], dict[ObjectKey, tuple[str, int]]] = {}
        self._gone: set[tuple[str, str]] = set()

    def saw(self, event: str | None, namespace: str, kind: str, body: Mapping[str, Any]) -> bool:
        """Takes a watch event in; True when it was a listing (``event`` None) of an object already known: a
        watch listing again, not its first listing."""
        rollout = _labels(body).get(constants.LABEL_ROLLOUT)
        if not rollout or (namespace, rollout) in self._gone:
            return False
        key, value = versioned(body, kind)
        if event == "DELETED":
            objects = self._by_rollout.get((namespace, rollout), {})
            if objects.get(key, ("",))[0] == value[0]:
                del objects[key]
            return False
        objects = self._by_rollout.setdefault((namespace, rollout), {})
        known = key in objects
        objects[key] = value
        return event is None and known

    def applied(self, namespace: str, rollout: str, versions: Versions) -> None:
        """What an apply returned: known to exist from now on, whether or not its watch event comes (an apply
        that changed nothing makes none, and events of an object and of the one made again under its name may
        come out of order). Only a DELETED event, or a later version, changes it."""
        self._gone.discard((namespace, rollout))
        self._by_rollout.setdefault((namespace, rollout), {}).update(versions)

    def of(self, namespace: str, rollout: str) -> dict[ObjectKey, tuple[str, int]]:
        return dict(self._by_rollout.get((namespace, rollout), {}))

    def forget(self, namespace: str, rollout: str) -> None:
        """A rollout deleted: its objects' later events (keepStable releasing them) are not kept."""
        self._by_rollout.pop((namespace, rollout), None)
        self._gone.add((namespace, rollout))


SEEN = Seen()
"""The operator's one store (fed by the handlers' watch events and by the controller's applies)."""


def drifted(applied: Versions, shown: Versions, *, settled: bool) -> list[str]:
    """The owned objects the watches show otherwise than the operator applied them (a pure function): deleted,
    made again (another uid), or changed by someone else (a later version). One shown at an earlier version, or
    (until ``settled``) not at all, is one the watch has not caught up with."""
    found = []
    for key, (uid, version) in applied.items():
        seen = shown.get(key)
        if seen is None:
            if settled:
                found.append("/".join(key))
        elif seen[0] != uid or seen[1] > version:
            found.append("/".join(key))
    return found


def _generation(body: Mapping[str, Any]) -> int:
    return int((body.get("metadata") or {}).get("generation") or 0)


def _labels(body: Mapping[str, Any]) -> Mapping[str, str]:
    labels: Mapping[str, str] = (body.get("metadata") or {}).get("labels") or {}
    return labels


def pod_key(namespace: str, body: Mapping[str, Any]) -> PodKey | None:
    """Where a pod is indexed; None for a pod that no rollout's colour selects."""
    labels = _labels(body)
    rollout, colour = labels.get(constants.LABEL_ROLLOUT), labels.get(constants.LABEL_COLOUR)
    if not rollout or not colour:
        return None
    return namespace, rollout, colour


def trimmed_deployment(body: Mapping[str, Any]) -> dict[str, Any]:
    """What resources.rolled_out and runs_only read of a Deployment (a pure function)."""
    metadata, spec = body.get("metadata") or {}, body.get("spec") or {}
    template = (spec.get("template") or {}).get("metadata") or {}
    return {
        "metadata": {
            "name": metadata.get("name"),
            "uid": metadata.get("uid"),
            "generation": metadata.get("generation"),
            "labels": dict(metadata.get("labels") or {}),
        },
        "spec": {
            "replicas": spec.get("replicas"),
            "template": {"metadata": {"labels": dict(template.get("labels") or {})}},
        },
        "status": dict(body.get("status") or {}),
    }


def trimmed_pod(body: Mapping[str, Any]) -> dict[str, Any]:
    """What resources.rolled_out, runs_only, health_of and start_failure read of a pod (a pure function):
    labels, whether it is terminating, its phase, its conditions (with the message of one that is False, such
    as the scheduler's reason it cannot place the pod), and its containers' restart counts and failed
    terminations (exit code and message; each message cut to its last 512 characters)."""
    metadata, status = body.get("metadata") or {}, body.get("status") or {}
    return {
        "metadata": {
            "name": metadata.get("name"),
            "labels": dict(metadata.get("labels") or {}),
            "deletionTimestamp": metadata.get("deletionTimestamp"),
        },
        "status": {
            "phase": status.get("phase"),
            "conditions": [_condition(condition) for condition in status.get("conditions") or []],
            "initContainerStatuses": _restart_counts(status.get("initContainerStatuses")),
            "containerStatuses": _restart_counts(status.get("containerStatuses")),
        },
    }


def _condition(condition: Mapping[str, Any]) -> dict[str, Any]:
    kept = {"type": condition.get("type"), "status": condition.get("status")}
    if condition.get("status") == "False" and condition.get("message"):
        kept.update(reason=condition.get("reason"), message=str(condition["message"])[-512:])
    return kept


def _restart_counts(containers: Iterable[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    return [
        {"name": container.get("name"), "restartCount": container.get("restartCount"), **_failed(container)}
        for container in containers or []
    ]


def _failed(container: Mapping[str, Any]) -> dict[str, Any]:
    """A container's current or last termination, when it ended in an error (else nothing)."""
    kept = {}
    for key in ("state", "lastState"):
        terminated = (container.get(key) or {}).get("terminated") or {}
        if terminated.get("exitCode"):
            message = str(terminated.get("message") or "")[-512:]
            kept[key] = {"terminated": {"exitCode": terminated["exitCode"], "message": message}}
    return kept
