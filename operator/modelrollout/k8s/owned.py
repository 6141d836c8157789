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

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from modelrollout.api import constants
from modelrollout.k8s import api


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
        colours: Iterable[str] = constants.COLOURS,
    ) -> None:
        self._scope = (namespace, rollout)
        self._deployments = {
            colour: next(iter(deployments.get((namespace, f"{rollout}-{colour}"), ())), None) for colour in colours
        }
        self._pods = {colour: list(pods.get((namespace, rollout, colour), ())) for colour in colours}

    def deployment(self, namespace: str, rollout: str, colour: str) -> Mapping[str, Any] | None:
        self._check(namespace, rollout, colour)
        return self._deployments[colour]

    def pods(self, namespace: str, rollout: str, colour: str) -> list[Mapping[str, Any]]:
        self._check(namespace, rollout, colour)
        return list(self._pods[colour])

    def _check(self, namespace: str, rollout: str, colour: str) -> None:
        if (namespace, rollout) != self._scope or colour not in self._pods:
            raise KeyError(f"{namespace}/{rollout} {colour}: not in this copy of {'/'.join(self._scope)}")


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
    """What resources.rolled_out, runs_only and health_of read of a pod (a pure function): labels, whether it
    is terminating, its phase, its Ready condition and its containers' restart counts."""
    metadata, status = body.get("metadata") or {}, body.get("status") or {}
    return {
        "metadata": {
            "name": metadata.get("name"),
            "labels": dict(metadata.get("labels") or {}),
            "deletionTimestamp": metadata.get("deletionTimestamp"),
        },
        "status": {
            "phase": status.get("phase"),
            "conditions": [
                {"type": condition.get("type"), "status": condition.get("status")}
                for condition in status.get("conditions") or []
            ],
            "initContainerStatuses": _restart_counts(status.get("initContainerStatuses")),
            "containerStatuses": _restart_counts(status.get("containerStatuses")),
        },
    }


def _restart_counts(containers: Iterable[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    return [{"restartCount": container.get("restartCount")} for container in containers or []]
