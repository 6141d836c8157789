"""Create, update and read the objects a ModelRollout owns (built by ``manifests``).

Every owned object is server-side applied (``api.apply``): what our manifests stop setting disappears from
the live object. Objects written by an earlier operator version (create + strategic-merge patch) have
their fields handed over to the apply field manager the first time, so stale fields go from them too.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import structlog
from kubernetes.client.exceptions import ApiException

from modelrollout.analysis.checks import PodHealth
from modelrollout.api import constants
from modelrollout.api.spec import ModelRef, ModelRolloutSpec, ServerSpec
from modelrollout.api.status import StableStatus
from modelrollout.k8s import api, manifests
from modelrollout.k8s.owned import LIVE, ObjectKey, OwnedObjects, pod_selector, versioned
from modelrollout.routing.base import RolloutRef

log = structlog.get_logger("modelrollout")


def _union(left: Mapping[str, Any], right: Mapping[str, Any]) -> dict[str, Any]:
    """The union of two managedFields field sets (FieldsV1: nested dicts, leaves are empty dicts)."""
    merged = dict(left)
    for key, value in right.items():
        merged[key] = _union(merged[key], value) if key in merged else value
    return merged


def _is_legacy(entry: Mapping[str, Any]) -> bool:
    return (
        entry.get("manager") in api.LEGACY_FIELD_MANAGERS
        and entry.get("operation") == "Update"
        and not entry.get("subresource")
    )


def handed_over(managed_fields: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]] | None:
    """``metadata.managedFields`` with the fields of the earlier operator's Update entries owned by our
    apply entry instead (as kubectl does when it upgrades client-side apply), or None when there is
    nothing to hand over. Once ours, fields the manifest no longer sets are removed by the next apply."""
    entries = [dict(entry) for entry in managed_fields]
    legacy = [entry for entry in entries if _is_legacy(entry)]
    if not legacy:
        return None
    fields: dict[str, Any] = {}
    for entry in legacy:
        fields = _union(fields, entry.get("fieldsV1") or {})
    ours = next(
        (e for e in entries if e.get("manager") == api.FIELD_MANAGER and e.get("operation") == "Apply"),
        None,
    )
    result = [entry for entry in entries if not _is_legacy(entry) and entry is not ours]
    base = ours or {
        "manager": api.FIELD_MANAGER,
        "operation": "Apply",
        "apiVersion": legacy[0].get("apiVersion"),
        "fieldsType": "FieldsV1",
        "time": legacy[0].get("time"),
    }
    result.append({**base, "fieldsV1": _union(base.get("fieldsV1") or {}, fields)})
    return result


def _json_pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


HANDOVER_ATTEMPTS = 5
"""Tries at handing an earlier operator's fields over, each on a fresh read (the object may change between)."""


def _apply(body: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply; returns the live object."""
    kind, namespace, name = body["kind"], body["metadata"]["namespace"], body["metadata"]["name"]
    live = api.apply(body)
    for attempt in range(1, HANDOVER_ATTEMPTS + 1):
        migrated = handed_over(live["metadata"].get("managedFields") or [])
        if migrated is None:
            break
        try:
            api.patch(
                kind,
                namespace,
                name,
                [
                    {"op": "test", "path": "/metadata/resourceVersion", "value": live["metadata"]["resourceVersion"]},
                    {"op": "replace", "path": "/metadata/managedFields", "value": migrated},
                ],
            )
        except ApiException as error:
            # 422: the test failed, the object changed since it was read (a controller writing its status)
            if error.status != 422 or attempt == HANDOVER_ATTEMPTS:
                raise
        live = api.apply(body)
    if manifests.LABEL_ORPHANED in (live["metadata"].get("labels") or {}):
        # kept by an earlier rollout of this name and adopted again: no longer orphaned
        path = f"/metadata/labels/{_json_pointer(manifests.LABEL_ORPHANED)}"
        live = api.patch(kind, namespace, name, [{"op": "remove", "path": path}])
    return live


def _apply_binding(body: dict[str, Any]) -> dict[str, Any]:
    """Apply a RoleBinding. Its roleRef cannot change: one bound to another role (an earlier operator bound
    the router to a ClusterRole that let it patch any ModelRollout) is deleted and made again."""
    live = api.read("RoleBinding", body["metadata"]["namespace"], body["metadata"]["name"])
    if live is not None and live.get("roleRef") != body["roleRef"]:
        api.delete("RoleBinding", body["metadata"]["namespace"], body["metadata"]["name"])
    return _apply(body)


class StaleStable(ValueError):
    """Blue records a later promotion than the stable model it was to be applied with."""


def refuse_older(live_blue: dict[str, Any] | None, stable: StableStatus) -> None:
    """Raise StaleStable when blue's record names a later promotion than ``stable`` (a pure function):
    the durable copy never goes backwards (a status restored from an older copy must not redeploy blue
    with an older model and erase the record of the newer one)."""
    recorded = manifests.recorded_stable(live_blue)
    if recorded is None or recorded.promoted_at is None:
        return
    if stable.promoted_at is None or stable.promoted_at < recorded.promoted_at:
        raise StaleStable(
            f"blue records {recorded.model.version} promoted at {recorded.promoted_at.isoformat()}, later than "
            f"the stable model {stable.model.version} it was to run: blue is left as it is"
        )


def ensure(
    rollout: RolloutRef,
    spec: ModelRolloutSpec,
    *,
    stable: StableStatus,
    green_replicas: int,
    replace_green: bool = True,
    router_image: str = "",
    router_replicas: int = 1,
) -> dict[ObjectKey, tuple[str, int]]:
    """Every owned object as it should be (idempotent): blue serves ``stable`` (and records it, see
    manifests.ANNOTATION_STABLE), green spec.green. Without ``replace_green`` green's Deployment is left
    as it is (it may still have traffic). The router runs ``router_image``, or else the stable model's
    server image, ``router_replicas`` of it. Returns the uid and version of each object applied
    (owned.Versions), which the watches should show from now on."""
    owner = api.owner_reference(rollout)
    name, namespace = rollout.name, rollout.namespace
    refuse_older(api.read("Deployment", namespace, f"{name}-{constants.BLUE}"), stable)
    colours: list[tuple[str, ModelRef, ServerSpec, int, dict[str, str] | None]] = [
        (constants.BLUE, stable.model, stable.server, spec.server.replicas, manifests.stable_annotation(stable))
    ]
    if replace_green:
        colours.append((constants.GREEN, spec.green.model, spec.server, green_replicas, None))
    # before the Deployments: their Pods read the feedback token from it
    if api.read("Secret", namespace, manifests.feedback_secret_name(name)) is None:
        api.create_secret(
            manifests.feedback_secret(rollout=name, namespace=namespace, owner=owner, token=secrets.token_urlsafe(32))
        )
    applied: dict[ObjectKey, tuple[str, int]] = {}

    def apply(body: dict[str, Any], applier: Callable[[dict[str, Any]], dict[str, Any]] = _apply) -> None:
        key, version = versioned(applier(body), body["kind"])
        applied[key] = version

    for colour, model, server, replicas, extra in colours:
        apply(
            manifests.model_deployment(
                rollout=name,
                namespace=namespace,
                colour=colour,
                model=model,
                server=server,
                owner=owner,
                replicas=replicas,
                annotations=extra,
            )
        )
    for colour in constants.COLOURS:
        apply(manifests.service(rollout=name, namespace=namespace, colour=colour, owner=owner))
    if spec.traffic.provider == "builtin":
        apply(manifests.router_service_account(rollout=name, namespace=namespace, owner=owner))
        apply(manifests.router_report(rollout=name, namespace=namespace, owner=owner))
        apply(manifests.router_role(rollout=name, namespace=namespace, owner=owner))
        apply(manifests.router_role_binding(rollout=name, namespace=namespace, owner=owner), _apply_binding)
        image = router_image or stable.server.image
        apply(
            manifests.router_deployment(
                rollout=name, namespace=namespace, spec=spec, owner=owner, image=image, replicas=router_replicas
            )
        )
        apply(manifests.service(rollout=name, namespace=namespace, colour=manifests.ROUTER, owner=owner))
        try:  # a convenience: an operator without the rights to it (or a quota) still rolls out
            apply(manifests.router_disruption_budget(rollout=name, namespace=namespace, owner=owner))
        except ApiException as error:
            if error.status not in (403, 404, 422):  # refused (rights, quota, admission), not a passing failure
                raise
            log.warning(
                "router disruption budget not applied",
                rollout=f"{namespace}/{name}",
                error=f"{error.status} {error.reason}",
            )
    return applied


selector = pod_selector


def _labels(pod: Mapping[str, Any]) -> Mapping[str, str]:
    labels: Mapping[str, str] = (pod.get("metadata") or {}).get("labels") or {}
    return labels


def _terminating(pod: Mapping[str, Any]) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def _finished(pod: Mapping[str, Any]) -> bool:
    """Succeeded or Failed (an evicted pod stays listed like this): it serves nothing and never will."""
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _restarts(pod: Mapping[str, Any]) -> int:
    status = pod.get("status") or {}
    containers = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    return sum(int(container.get("restartCount") or 0) for container in containers)


def start_failure(pods: Iterable[Mapping[str, Any]], *, revision: str) -> str:
    """Why the pods of ``revision`` cannot start (a pure function): the scheduler's reason for a pod it cannot
    place (a model's claim that does not exist or is not bound, say), else the termination message of an init
    or server container that exited with an error, such as the fetch of a model that failed ("" when none did,
    or none said why). The first pod's, by name, so it does not flicker."""
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name") or "")):
        if _labels(pod).get(constants.LABEL_REVISION) != revision or _terminating(pod) or _ready(pod):
            continue
        status = pod.get("status") or {}
        name = (pod.get("metadata") or {}).get("name")
        for condition in status.get("conditions") or []:
            message = str(condition.get("message") or "").strip()
            scheduled = condition.get("type") == "PodScheduled" and condition.get("status") == "False"
            if scheduled and message and condition.get("reason") != "SchedulingGated":
                return f"pod {name} is not scheduled: {message[-512:]}"
        for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
            for state in (container.get("state") or {}, container.get("lastState") or {}):
                terminated = state.get("terminated") or {}
                message = str(terminated.get("message") or "").strip()
                if terminated.get("exitCode") and message:
                    return f"container {container.get('name')} of pod {name}: {message[-512:]}"
    return ""


def live_pods(pods: Iterable[Mapping[str, Any]]) -> dict[str, bool]:
    """The pods that serve, or may serve once their container is back (a pure function): not terminating and
    not finished, by name, with whether each is Ready (a Service sends it traffic now)."""
    return {str(pod["metadata"]["name"]): _ready(pod) for pod in pods if not _terminating(pod) and not _finished(pod)}


def rolled_out(
    deployment: Mapping[str, Any] | None, pods: Iterable[Mapping[str, Any]], *, version: str, revision: str
) -> bool:
    """Whether a colour serves ``version`` as ``revision`` (its model and server settings) and nothing else
    (a pure function of the colour's Deployment and its pods): the Deployment's template runs it and all
    its replicas are updated and available, and every pod of the colour that is not finished carries it,
    is Ready and is not terminating, so no pod of an older version or settings can still answer."""
    if deployment is None:
        return False
    spec, status, metadata = deployment.get("spec") or {}, deployment.get("status") or {}, deployment["metadata"]
    wanted = spec.get("replicas")
    wanted = 1 if wanted is None else wanted
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    deployment_ready = bool(
        template_labels.get(constants.LABEL_VERSION) == version
        and template_labels.get(constants.LABEL_REVISION) == revision
        and (status.get("observedGeneration") or 0) >= (metadata.get("generation") or 0)
        and (status.get("updatedReplicas") or 0) >= wanted
        and (status.get("availableReplicas") or 0) >= wanted
    )
    return deployment_ready and all(
        _labels(pod).get(constants.LABEL_VERSION) == version
        and _labels(pod).get(constants.LABEL_REVISION) == revision
        and _ready(pod)
        and not _terminating(pod)
        for pod in pods
        if not _finished(pod)
    )


def runs_only(deployment: Mapping[str, Any] | None, pods: Iterable[Mapping[str, Any]], *, revision: str) -> bool:
    """Whether a colour runs ``revision`` and nothing else, ready or not (a pure function): its template
    and every pod that is not finished carry it. Weaker than ``rolled_out``: a crashed or slow pod of the
    right revision counts."""
    if deployment is None:
        return False
    template_labels = (((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels")
    return (template_labels or {}).get(constants.LABEL_REVISION) == revision and all(
        _labels(pod).get(constants.LABEL_REVISION) == revision for pod in pods if not _finished(pod)
    )


def running_only(rollout: RolloutRef, colour: str, *, revision: str) -> bool:
    """See ``runs_only``."""
    deployment = api.read("Deployment", rollout.namespace, f"{rollout.name}-{colour}")
    if deployment is None:
        return False
    return runs_only(deployment, api.list_pods(rollout.namespace, selector(rollout.name, colour)), revision=revision)


def available(rollout: RolloutRef, colour: str, *, version: str, revision: str, owned: OwnedObjects = LIVE) -> bool:
    """The colour serves ``version`` as ``revision`` only, on all its replicas (see ``rolled_out``), as
    ``owned`` sees it (the API server, or the operator's watches)."""
    deployment = owned.deployment(rollout.namespace, rollout.name, colour)
    if deployment is None:
        return False
    return rolled_out(
        deployment, owned.pods(rollout.namespace, rollout.name, colour), version=version, revision=revision
    )


def health_of(pods: Iterable[Mapping[str, Any]], *, revision: str) -> PodHealth:
    """PodHealth of the pods that run ``revision`` (a pure function of the colour's pod list): a pod of
    the same version with other server settings is another candidate's."""
    own = [pod for pod in pods if _labels(pod).get(constants.LABEL_REVISION) == revision]
    live = [pod for pod in own if not _terminating(pod) and not _finished(pod)]
    return PodHealth(
        pods=len(live),
        ready=sum(1 for pod in live if _ready(pod)),
        restarts=sum(_restarts(pod) for pod in own),
    )


def pod_health(rollout: RolloutRef, colour: str, *, revision: str, owned: OwnedObjects = LIVE) -> PodHealth:
    """PodHealth of the colour's pods of ``revision``, as ``owned`` sees them."""
    return health_of(owned.pods(rollout.namespace, rollout.name, colour), revision=revision)


def failing_to_start(rollout: RolloutRef, colour: str, revision: str, owned: OwnedObjects = LIVE) -> str:
    """See ``start_failure``, for the colour's pods as ``owned`` sees them."""
    return start_failure(owned.pods(rollout.namespace, rollout.name, colour), revision=revision)


def deployment(rollout: RolloutRef, colour: str) -> dict[str, Any] | None:
    """A colour's Deployment as it is now (None when there is none)."""
    return api.read("Deployment", rollout.namespace, f"{rollout.name}-{colour}")
