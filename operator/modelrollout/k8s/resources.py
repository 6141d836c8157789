"""Create, update and read the objects a ModelRollout owns (built by ``manifests``)."""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException

from modelrollout.api import constants
from modelrollout.api.spec import ModelRef, ModelRolloutSpec, ServerSpec
from modelrollout.k8s import api, manifests
from modelrollout.routing.base import RolloutRef


def _calls(kind: str) -> tuple[Any, Any, Any]:
    """(read, create, patch) of the API for one kind."""
    if kind == "Deployment":
        apps = api.apps()
        return apps.read_namespaced_deployment, apps.create_namespaced_deployment, apps.patch_namespaced_deployment
    if kind == "Service":
        core = api.core()
        return core.read_namespaced_service, core.create_namespaced_service, core.patch_namespaced_service
    if kind == "ServiceAccount":
        core = api.core()
        return (
            core.read_namespaced_service_account,
            core.create_namespaced_service_account,
            core.patch_namespaced_service_account,
        )
    rbac = api.rbac()
    return rbac.read_namespaced_role_binding, rbac.create_namespaced_role_binding, rbac.patch_namespaced_role_binding


def _apply(kind: str, body: dict[str, Any]) -> None:
    """Create, or replace the parts we own (labels, spec, subjects) of an existing object."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    read, create, patch = _calls(kind)
    try:
        read(name, namespace)
    except ApiException as error:
        if error.status != 404:
            raise
        try:
            create(namespace, body)
            return
        except ApiException as conflict:
            if conflict.status != 409:  # created meanwhile: fall through to the patch
                raise
    update: dict[str, Any] = {"metadata": {"labels": body["metadata"]["labels"]}}
    update.update({key: body[key] for key in ("spec", "subjects") if key in body})  # a roleRef cannot change
    patch(name, namespace, update)


def ensure(
    rollout: RolloutRef, spec: ModelRolloutSpec, *, stable: ModelRef, stable_server: ServerSpec, green_replicas: int
) -> None:
    """Every owned object as it should be (idempotent): blue serves ``stable``, green spec.green."""
    owner = api.owner_reference(rollout)
    for colour, model, server, replicas in (
        (constants.BLUE, stable, stable_server, spec.server.replicas),
        (constants.GREEN, spec.green.model, spec.server, green_replicas),
    ):
        _apply(
            "Deployment",
            manifests.model_deployment(
                rollout=rollout.name,
                namespace=rollout.namespace,
                colour=colour,
                model=model,
                server=server,
                owner=owner,
                replicas=replicas,
            ),
        )
        _apply(
            "Service", manifests.service(rollout=rollout.name, namespace=rollout.namespace, colour=colour, owner=owner)
        )
    if spec.traffic.provider == "builtin":
        name, namespace = rollout.name, rollout.namespace
        _apply("ServiceAccount", manifests.router_service_account(rollout=name, namespace=namespace, owner=owner))
        _apply("RoleBinding", manifests.router_role_binding(rollout=name, namespace=namespace, owner=owner))
        _apply(
            "Deployment",
            manifests.router_deployment(rollout=rollout.name, namespace=rollout.namespace, spec=spec, owner=owner),
        )
        _apply(
            "Service",
            manifests.service(rollout=rollout.name, namespace=rollout.namespace, colour="router", owner=owner),
        )


def available(rollout: RolloutRef, colour: str, *, version: str) -> bool:
    """The colour's Deployment runs ``version`` and all its replicas are updated and available."""
    try:
        deployment = api.apps().read_namespaced_deployment(f"{rollout.name}-{colour}", rollout.namespace)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    wanted = deployment.spec.replicas or 0
    status = deployment.status
    template_version = (deployment.spec.template.metadata.labels or {}).get(constants.LABEL_VERSION)
    return bool(
        template_version == version
        and (status.observed_generation or 0) >= (deployment.metadata.generation or 0)
        and (status.updated_replicas or 0) >= wanted
        and (status.available_replicas or 0) >= wanted
    )
