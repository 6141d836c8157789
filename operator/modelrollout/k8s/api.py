"""Calls to the Kubernetes API server: the only module of the operator that makes them.

A module-level client, configured once (``configure``), from a kubeconfig or in-cluster settings.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from modelrollout.api import constants

_api_client: Any = None


def configure(kubeconfig: str | None = None) -> None:
    global _api_client
    if kubeconfig:
        _api_client = config.new_client_from_config(kubeconfig)
    else:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        _api_client = client.ApiClient()


def _client() -> Any:
    if _api_client is None:
        configure()
    return _api_client


def custom() -> Any:
    return client.CustomObjectsApi(_client())


def apps() -> Any:
    return client.AppsV1Api(_client())


def core() -> Any:
    return client.CoreV1Api(_client())


def rbac() -> Any:
    return client.RbacAuthorizationV1Api(_client())


def owner_reference(rollout: Any) -> dict[str, Any]:
    """Makes an object part of a ModelRollout: it is deleted with it."""
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "name": rollout.name,
        "uid": rollout.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def get_custom(group: str, version: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = custom().get_namespaced_custom_object(group, version, namespace, plural, name)
        return found
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def create_custom(group: str, version: str, plural: str, namespace: str, body: dict[str, Any]) -> None:
    custom().create_namespaced_custom_object(group, version, namespace, plural, body)


def list_custom(group: str, version: str, plural: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
    """Objects matching ``label_selector``; none when the resource type is not installed."""
    try:
        found = custom().list_namespaced_custom_object(group, version, namespace, plural, label_selector=label_selector)
    except ApiException as error:
        if error.status == 404:
            return []
        raise
    items: list[dict[str, Any]] = found.get("items", [])
    return items


def patch_custom(group: str, version: str, plural: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
    custom().patch_namespaced_custom_object(group, version, namespace, plural, name, patch)
